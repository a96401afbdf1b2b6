"""Host (backends/libvirt/host.py): one URI that hangs never delays another.

A TCP listener on 127.0.0.1 accepts and never speaks, so ``libvirt.open`` of a
``qemu+tcp`` URI to it hangs in libvirt's handshake.  While a thread is stuck
there, Host.get of libvirt's test driver and calls on it answer from the main
thread at once; closing the listener ends the stuck connect with a
HypervisorConnectionError.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from virtlib.backends.libvirt.host import Host
from virtlib.errors import HypervisorConnectionError

PROMPT = 2.0  # seconds: what "at once" means on a loaded 2-core machine


class SilentListener:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.connected = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)
            self.connected.set()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes accept(): later connects are refused
        self.sock.close()
        self._thread.join(5)
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentListener]:
    listener = SilentListener()
    yield listener
    listener.close()


def test_a_hanging_uri_does_not_delay_another(silent: SilentListener) -> None:
    hanging = f"qemu+tcp://127.0.0.1:{silent.port}/system"
    outcome: list[BaseException | Host] = []

    def connect() -> None:
        try:
            outcome.append(Host.get(hanging))
        except BaseException as exc:
            outcome.append(exc)

    stuck = threading.Thread(target=connect, daemon=True)
    stuck.start()
    try:
        assert silent.connected.wait(10), "libvirt never connected to the listener"
        time.sleep(0.2)
        assert stuck.is_alive() and not outcome, "the silent URI answered?"

        started = time.monotonic()
        other = Host.get("test:///default")
        assert other.hypervisor_kind() == "test"
        assert [g.name for g in other.guests()] == ["test"]
        assert other.lookup("test").state().name == "running"
        assert time.monotonic() - started < PROMPT
        # a second caller of the hanging URI waits for the first; others still do not
        waiter = threading.Thread(target=connect, daemon=True)
        waiter.start()
        time.sleep(0.1)
        started = time.monotonic()
        assert Host.get("test:///default").versions()[0] > 0
        assert time.monotonic() - started < PROMPT
    finally:
        silent.close()  # the stuck handshake ends now
    stuck.join(30)
    assert not stuck.is_alive(), "the connect did not end when the peer went away"
    waiter.join(30)
    assert len(outcome) == 2
    assert all(isinstance(o, HypervisorConnectionError) for o in outcome), outcome
    Host.discard(hanging)
