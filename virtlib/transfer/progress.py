"""Progress of a copy: bytes and files done, rate; logged at INFO and shown to a watcher.

A watcher is a callable installed for the calls made inside ``with watching(callback):``
(a context variable, so threads and nested code see their own); it receives a
:class:`TransferProgress` snapshot now and then (at most every 0.1 s, and once
at the end).  ``verbose=True`` on a copy logs a line at INFO every 2 seconds
and a summary at the end (and each file at DEBUG).  The CLI's ``virtlib cp``
draws its bar from a watcher.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

log = logging.getLogger("virtlib.transfer")

_WATCHER: contextvars.ContextVar[Callable[[TransferProgress], None] | None] = (
    contextvars.ContextVar("virtlib_transfer_watcher", default=None)
)
_WATCH_EVERY = 0.1
_LOG_EVERY = 2.0


@dataclass(frozen=True)
class TransferProgress:
    """Where a copy stands; ``total_bytes`` is what the walk found before copying."""

    label: str
    done_bytes: int
    total_bytes: int
    done_files: int
    total_files: int
    elapsed: float
    finished: bool = False

    @property
    def fraction(self) -> float:
        if self.total_bytes:
            return min(self.done_bytes / self.total_bytes, 1.0)
        return 1.0 if self.finished or not self.total_files else self.done_files / self.total_files

    @property
    def rate(self) -> float:
        """Bytes per second so far."""
        return self.done_bytes / self.elapsed if self.elapsed > 0 else 0.0

    def text(self) -> str:
        """``8.0 MiB of 16.0 MiB, 7.9 MiB/s (3 of 300 files)``."""
        files = f" ({self.done_files} of {self.total_files} files)" if self.total_files > 1 else ""
        return (
            f"{human_bytes(self.done_bytes)} of {human_bytes(self.total_bytes)}, "
            f"{human_bytes(self.rate)}/s{files}"
        )


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


@contextlib.contextmanager
def watching(callback: Callable[[TransferProgress], None]) -> Iterator[None]:
    """Send the progress of copies made inside this block to ``callback``."""
    token = _WATCHER.set(callback)
    try:
        yield
    finally:
        _WATCHER.reset(token)


class Meter:
    """Counts one copy's progress and reports it (log lines, the watcher)."""

    def __init__(self, label: str, verbose: bool) -> None:
        self.label = label
        self.verbose = verbose
        self.watcher = _WATCHER.get()
        self.started = time.monotonic()
        self.total_bytes = 0
        self.total_files = 0
        self.done_bytes = 0
        self.done_files = 0
        self._watched = 0.0
        self._logged = self.started

    def plan(self, total_bytes: int, total_files: int) -> None:
        self.total_bytes, self.total_files = total_bytes, total_files
        if self.verbose:
            log.info(
                "%s: %s in %d file(s)", self.label, human_bytes(total_bytes), max(total_files, 0)
            )

    def snapshot(self, finished: bool = False) -> TransferProgress:
        return TransferProgress(
            self.label,
            self.done_bytes,
            max(self.total_bytes, self.done_bytes),
            self.done_files,
            self.total_files,
            time.monotonic() - self.started,
            finished,
        )

    def add(self, nbytes: int = 0, files: int = 0) -> None:
        self.done_bytes += nbytes
        self.done_files += files
        now = time.monotonic()
        if self.watcher is not None and now - self._watched >= _WATCH_EVERY:
            self._watched = now
            self.watcher(self.snapshot())
        if self.verbose and now - self._logged >= _LOG_EVERY:
            self._logged = now
            log.info("%s: %s", self.label, self.snapshot().text())

    def file_done(self, what: str, size: int) -> None:
        """One more file complete (logged at DEBUG with ``verbose``)."""
        if self.verbose:
            log.debug("%s: copied %s (%d bytes)", self.label, what, size)
        self.add(files=1)

    def finish(self) -> None:
        final = self.snapshot(finished=True)
        if self.watcher is not None:
            self.watcher(final)
        if self.verbose:
            log.info(
                "%s: copied %s in %.2f s (%s/s)",
                self.label,
                human_bytes(final.done_bytes),
                final.elapsed,
                human_bytes(final.rate),
            )
