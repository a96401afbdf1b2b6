"""A small JSON table shared by every virtlib process, guarded by ``fcntl.flock``.

MAC addresses and forwarded host ports are reserved here so parallel test
processes never hand out the same one; each reservation is keyed by the VM's
unique instance id and freed when the VM is destroyed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from virtlib.workdir import private_base


class ReservationTable:
    """``with table.locked() as rows:`` reads, lets you change, and writes back the table."""

    def __init__(self, filename: str, path: Path | None = None) -> None:
        self.path = path or private_base() / filename

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, str]]:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        with os.fdopen(fd, "r+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            text = handle.read()
            rows: dict[str, str] = json.loads(text) if text.strip() else {}
            before = dict(rows)
            yield rows
            if rows != before:
                handle.seek(0)
                handle.truncate()
                json.dump(rows, handle, indent=0, sort_keys=True)

    def free(self, instance: str) -> list[str]:
        """Drop every row of one VM (keys ``<instance>/...``); return the freed values."""
        with self.locked() as rows:
            keys = [k for k in rows if k.split("/", 1)[0] == instance]
            return [rows.pop(k) for k in keys]

    def rows(self) -> dict[str, str]:
        with self.locked() as rows:
            return dict(rows)
