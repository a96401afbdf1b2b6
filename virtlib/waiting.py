"""Waiting without fixed sleeps: deadlines, short back-off, retries that keep the last error."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


class Deadline:
    """A point in monotonic time; ``remaining()`` never goes below zero."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.end = time.monotonic() + timeout

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.end


def backoff(initial: float = 0.02, maximum: float = 0.5, factor: float = 2.0) -> Iterator[float]:
    """Delays that start short and grow to ``maximum``: 0.02, 0.04, ... 0.5, 0.5, ..."""
    delay = initial
    while True:
        yield delay
        delay = min(maximum, delay * factor)


def sleep_within(delay: float, deadline: Deadline) -> None:
    """Sleep ``delay`` seconds, but not past the deadline."""
    time.sleep(min(delay, deadline.remaining()))


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    initial: float = 0.02,
    maximum: float = 0.5,
) -> T | None:
    """Call ``predicate`` with back-off until it returns something truthy (None at the deadline)."""
    deadline = Deadline(timeout)
    for delay in backoff(initial, maximum):
        result = predicate()
        if result:
            return result
        if deadline.expired():
            return None
        sleep_within(delay, deadline)
    raise AssertionError("unreachable")  # pragma: no cover


def retry(
    attempt: Callable[[], T],
    timeout: float,
    retry_on: tuple[type[BaseException], ...],
    fatal: tuple[type[BaseException], ...] = (),
    give_up: Callable[[], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    initial: float = 0.1,
    maximum: float = 1.0,
) -> T:
    """Call ``attempt`` until it succeeds; at the deadline the last error propagates.

    Errors in ``fatal`` (e.g. a refused password) propagate at once.
    ``give_up`` runs before every retry and may raise to stop early (for
    instance when the VM died, retrying a login is pointless).  ``on_error``
    sees every error that leads to a retry (for logging).
    """
    deadline = Deadline(timeout)
    for delay in backoff(initial, maximum):
        try:
            return attempt()
        except retry_on as exc:
            if deadline.expired() or isinstance(exc, fatal):
                raise
            if on_error is not None:
                on_error(exc)
            if give_up is not None:
                give_up()
        sleep_within(delay, deadline)
    raise AssertionError("unreachable")  # pragma: no cover
