"""A console's output, kept whole: appended by the reader, read by any number of cursors.

The libvirt console reader appends what the guest prints; sessions read from
their own cursor, so nothing is lost when nobody is reading and
``get_output()`` always has everything since the console was attached.
Everything is also written to the serial log file as it arrives.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import BinaryIO


class ConsoleBuffer:
    """Thread-safe append-only byte buffer with a log file and end-of-stream flag."""

    def __init__(self, log_path: Path | None = None) -> None:
        self._data = bytearray()
        self._cond = threading.Condition()
        self._closed = False
        self._log: BinaryIO | None = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(log_path, "ab", buffering=0)  # noqa: SIM115 - lives as long as we do

    def append(self, data: bytes) -> None:
        if not data:
            return
        with self._cond:
            self._data += data
            if self._log is not None:
                self._log.write(data)
            self._cond.notify_all()

    def mark(self, text: str) -> None:
        """Write a virtlib note (e.g. "console re-attached") into the log and output."""
        self.append(f"\n[virtlib] {text}\n".encode())

    @property
    def size(self) -> int:
        with self._cond:
            return len(self._data)

    def read(self, cursor: int, size: int, timeout: float | None) -> bytes | None:
        """Up to ``size`` bytes after ``cursor``; waits up to ``timeout`` for some.

        Returns ``b""`` when there is no data before the timeout and ``None``
        at end of stream (closed and fully read).
        """
        with self._cond:
            if len(self._data) <= cursor and not self._closed:
                self._cond.wait_for(lambda: len(self._data) > cursor or self._closed, timeout)
            if len(self._data) > cursor:
                return bytes(self._data[cursor : cursor + size])
            return None if self._closed else b""

    def get_output(self) -> str:
        with self._cond:
            return self._data.decode("utf-8", errors="replace")

    def close(self) -> None:
        """End of stream: readers get what is left, then EOF (the log stays open for reopen())."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def release(self) -> None:
        """End of stream for good: close the log file too."""
        with self._cond:
            self._closed = True
            if self._log is not None:
                self._log.close()
                self._log = None
            self._cond.notify_all()

    def reopen(self) -> None:
        """A new stream continues the same output (after reboot, restore, migration)."""
        with self._cond:
            self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed
