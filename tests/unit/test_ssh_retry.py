"""A retried SSH attempt on a forward nobody answers behind: short, and quiet below WARNING."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtlib.errors import LoginError
from virtlib.sessions import ssh


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A listener that accepts connections and never says a word (like a user-net forward
    to a guest that is down)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_banner_wait_is_bounded_and_retries_log_nothing_above_debug(
    silent_port: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    started = time.monotonic()
    with pytest.raises(LoginError):
        ssh.connect(
            "127.0.0.1",
            silent_port,
            "root",
            "pw",
            timeout=10,
            known_hosts=tmp_path / "known_hosts",
            banner_timeout=0.5,
            quiet=True,
        )
    assert time.monotonic() - started < 5  # the banner wait, not the 10 s timeout
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []
