"""A small JSON table shared by virtlib processes, guarded by ``fcntl.flock``.

MAC addresses and forwarded host ports are reserved here so parallel test
processes never hand out the same one; each reservation is keyed by the VM's
unique instance id and freed when the VM is destroyed.

Partitions: by default every process of the host shares one table per pool
(one lock).  A process that knows it is worker ``index`` of ``count`` (a
pytest-xdist worker; see :mod:`virtlib.pytest_plugin`) may declare a
:class:`Partition` with :func:`set_partition` or ``VIRTLIB_PARTITION=<index>/<count>``:
its pools then use their own table file, MACs ``52:54:00:<index>:xx:xx`` and
their own slice of the port range, so workers never wait for each other's lock
and never hand out the same MAC or port.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from virtlib.errors import VMParamsError
from virtlib.workdir import private_base

ENV_PARTITION = "VIRTLIB_PARTITION"
MAX_PARTITIONS = 256  # the partition's index is one byte of its MAC addresses


@dataclass(frozen=True)
class Partition:
    """Worker ``index`` of ``count``; ``Partition(0, 1)`` (:data:`WHOLE`) is no partition."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_PARTITIONS or not 0 <= self.index < self.count:
            raise VMParamsError(
                f"partition {self.index}/{self.count}: need 0 <= index < count <= {MAX_PARTITIONS}"
            )

    @property
    def whole(self) -> bool:
        return self.count == 1

    def filename(self, filename: str) -> str:
        """The table file of this partition: ``mac-pool.json`` -> ``mac-pool.p3.json``.

        Keyed by the index alone: two runs with the same index share (and lock) one file,
        and their MACs share the same index byte.
        """
        if self.whole:
            return filename
        stem, dot, ext = filename.rpartition(".")
        return f"{stem}.p{self.index}{dot}{ext}" if dot else f"{filename}.p{self.index}"

    def slice(self, low: int, high: int) -> tuple[int, int]:
        """This partition's share of ``low..high`` (inclusive; disjoint from the others')."""
        span = high - low + 1
        if span < self.count:
            raise VMParamsError(f"range {low}-{high} is too small for {self.count} partitions")
        start = low + self.index * span // self.count
        end = low + (self.index + 1) * span // self.count - 1
        return start, end

    @classmethod
    def parse(cls, text: str) -> Partition:
        """``"<index>/<count>"``, e.g. ``"1/4"``."""
        index, slash, count = text.strip().partition("/")
        try:
            if not slash:
                raise ValueError(text)
            return cls(int(index), int(count))
        except ValueError:
            raise VMParamsError(f"{ENV_PARTITION}={text!r} is not <index>/<count>") from None


WHOLE = Partition(0, 1)
_partition: Partition | None = None


def set_partition(index: int, count: int) -> Partition:
    """Make this process worker ``index`` of ``count`` for every pool made afterwards."""
    global _partition  # noqa: PLW0603 - one setting per process, by design
    _partition = Partition(index, count)
    return _partition


def clear_partition() -> None:
    """Forget :func:`set_partition` (``VIRTLIB_PARTITION`` applies again, if set)."""
    global _partition  # noqa: PLW0603
    _partition = None


def current_partition() -> Partition:
    """The partition set in this process, else ``$VIRTLIB_PARTITION``, else :data:`WHOLE`."""
    if _partition is not None:
        return _partition
    text = os.environ.get(ENV_PARTITION, "")
    return Partition.parse(text) if text.strip() else WHOLE


class ReservationTable:
    """``with table.locked() as rows:`` reads, lets you change, and writes back the table.

    Without ``path`` the table is ``filename`` in the private run directory, renamed for
    ``partition`` (default: :func:`current_partition`); an explicit ``path`` is used as given.
    """

    def __init__(
        self, filename: str, path: Path | None = None, partition: Partition | None = None
    ) -> None:
        self.partition = partition or current_partition()
        self.path = path or private_base() / self.partition.filename(filename)

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
