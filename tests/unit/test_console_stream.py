"""backends/libvirt/console.py's DomainConsole against a fake libvirt stream.

The fake stream hands out what a test queued (bytes, -2 for "would block",
b"" for end of stream, or an exception) and records every call, so the
callbacks libvirt's event loop would run are driven by hand.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
import pytest

from virtlib.backends.libvirt.console import DomainConsole
from virtlib.errors import RemoteError, VMNotSupportedError
from virtlib.sessions.buffer import ConsoleBuffer

READABLE = libvirt.VIR_STREAM_EVENT_READABLE
ERROR = libvirt.VIR_STREAM_EVENT_ERROR
HANGUP = libvirt.VIR_STREAM_EVENT_HANGUP


def libvirt_error(text: str = "stream broke") -> libvirt.libvirtError:
    exc = libvirt.libvirtError(text)
    exc.err = (libvirt.VIR_ERR_RPC, libvirt.VIR_FROM_STREAMS, text, 2, None, None, None, 0, 0)
    return exc


class FakeStream:
    def __init__(self) -> None:
        self.incoming: collections.deque[Any] = collections.deque()
        self.sent: list[bytes] = []
        self.send_results: collections.deque[int] = collections.deque()
        self.callback: Callable[[Any, int, object], None] | None = None
        self.calls: list[str] = []
        self.published_at_register: bool | None = None
        self.console: DomainConsole | None = None
        self.fail_register = False

    def recv(self, size: int) -> Any:
        self.calls.append("recv")
        if "abort" in self.calls or "finish" in self.calls:
            raise libvirt_error("stream is closed")
        item = self.incoming.popleft() if self.incoming else -2
        if isinstance(item, BaseException):
            raise item
        return item

    def send(self, data: bytes) -> int:
        result = self.send_results.popleft() if self.send_results else len(data)
        if result > 0:
            self.sent.append(data[:result])
        return result

    def eventAddCallback(self, events: int, callback: Any, opaque: object) -> None:
        self.calls.append("add")
        assert self.console is not None
        self.published_at_register = self.console.attached
        if self.fail_register:
            raise libvirt_error("cannot add callback")
        self.callback = callback

    def eventRemoveCallback(self) -> None:
        self.calls.append("remove")
        self.callback = None

    def abort(self) -> None:
        self.calls.append("abort")

    def finish(self) -> None:
        self.calls.append("finish")

    def fire(self, events: int) -> None:
        assert self.callback is not None, "no callback registered"
        self.callback(self, events, None)


class FakeHost:
    uri = "qemu:///system"

    def __init__(self, console: DomainConsole) -> None:
        self.console = console
        self.streams: list[FakeStream] = []

    def new_stream(self) -> FakeStream:
        stream = FakeStream()
        stream.console = self.console
        self.streams.append(stream)
        return stream


class FakeGuest:
    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.opened: list[FakeStream] = []

    def open_console(self, stream: FakeStream, overrides: Any = None) -> None:
        if self.error is not None:
            raise self.error
        self.opened.append(stream)


@pytest.fixture
def console(tmp_path: Path) -> DomainConsole:
    return DomainConsole(ConsoleBuffer(tmp_path / "serial.log"), "vm1")


def attach(console: DomainConsole, guest: FakeGuest | None = None) -> FakeStream:
    host = FakeHost(console)
    console.attach(host, guest or FakeGuest())  # type: ignore[arg-type]
    return host.streams[-1]


def test_data_is_appended_until_the_stream_would_block(
    console: DomainConsole, tmp_path: Path
) -> None:
    stream = attach(console)
    assert stream.published_at_register is True, "callback registered before the stream"
    stream.incoming.extend([b"Linux version", b" 6.1\r\n", -2, b"later"])
    stream.fire(READABLE)
    assert console.buffer.get_output() == "Linux version 6.1\r\n"
    assert list(stream.incoming) == [b"later"], "read past 'would block'"
    stream.fire(READABLE)
    assert console.buffer.get_output().endswith("later")
    assert console.attached
    assert (tmp_path / "serial.log").read_bytes() == b"Linux version 6.1\r\nlater"


def test_end_of_stream_finishes_it(console: DomainConsole) -> None:
    stream = attach(console)
    stream.incoming.extend([b"bye\r\n", b""])
    stream.fire(READABLE)
    assert not console.attached and console.buffer.closed
    assert stream.calls[-2:] == ["remove", "finish"] and "abort" not in stream.calls
    assert console.buffer.get_output() == "bye\r\n"


@pytest.mark.parametrize("event", [ERROR, HANGUP], ids=["error", "hangup"])
def test_error_and_hangup_events_abort_it(console: DomainConsole, event: int) -> None:
    stream = attach(console)
    stream.fire(event)
    assert not console.attached and console.buffer.closed
    assert stream.calls[-2:] == ["remove", "abort"]


def test_readable_and_hangup_together_keep_the_last_data(console: DomainConsole) -> None:
    stream = attach(console)
    stream.incoming.extend([b"last words", -2])
    stream.fire(READABLE | HANGUP)
    assert console.buffer.get_output() == "last words"
    assert not console.attached and stream.calls[-1] == "abort"


def test_recv_raising_aborts_it(console: DomainConsole) -> None:
    stream = attach(console)
    stream.incoming.extend([b"partial", libvirt_error()])
    stream.fire(READABLE)
    assert console.buffer.get_output() == "partial"
    assert not console.attached and stream.calls[-2:] == ["remove", "abort"]


def test_detach_removes_the_callback_and_aborts(console: DomainConsole) -> None:
    stream = attach(console)
    console.detach()
    assert stream.callback is None and stream.calls[-2:] == ["remove", "abort"]
    assert not console.attached and console.buffer.closed
    console.detach()  # twice is harmless
    assert stream.calls.count("abort") == 1


def test_a_late_callback_of_a_detached_stream_changes_nothing(console: DomainConsole) -> None:
    stream = attach(console)
    callback = stream.callback
    console.detach()
    assert callback is not None
    callback(stream, READABLE | ERROR, None)  # the loop had it queued already
    assert stream.calls.count("abort") == 1 and stream.calls.count("remove") == 1
    assert console.buffer.get_output() == ""


def test_attach_again_replaces_the_old_stream(console: DomainConsole) -> None:
    host = FakeHost(console)
    guest = FakeGuest()
    console.attach(host, guest)  # type: ignore[arg-type]
    console.attach(host, guest)  # type: ignore[arg-type]
    first, second = host.streams
    assert first.calls[-2:] == ["remove", "abort"]
    assert second.callback is not None and console.attached
    assert not console.buffer.closed, "the buffer reopens for the new stream"


def test_a_console_that_cannot_be_opened_leaves_no_stream(console: DomainConsole) -> None:
    host = FakeHost(console)
    unsupported = VMNotSupportedError("serial console", "libvirt", "no consoles")
    with pytest.raises(VMNotSupportedError):
        console.attach(host, FakeGuest(unsupported))  # type: ignore[arg-type]
    (stream,) = host.streams
    assert "abort" in stream.calls and not console.attached


def test_a_callback_that_cannot_be_added_leaves_no_stream(console: DomainConsole) -> None:
    host = FakeHost(console)
    host_stream = FakeStream()
    host_stream.console = console
    host_stream.fail_register = True
    host.new_stream = lambda: host_stream  # type: ignore[method-assign]
    with pytest.raises(Exception, match="cannot add callback"):
        console.attach(host, FakeGuest())  # type: ignore[arg-type]
    assert not console.attached and "abort" in host_stream.calls


def test_send_retries_while_the_stream_would_block(console: DomainConsole) -> None:
    stream = attach(console)
    stream.send_results.extend([-2, 0, 3])
    console.send(b"root\n", timeout=2)
    assert b"".join(stream.sent) == b"root\n"


def test_send_on_a_detached_console_gives_up_at_its_deadline(console: DomainConsole) -> None:
    attach(console)
    console.detach()
    with pytest.raises(RemoteError):
        console.send(b"x", timeout=0.1)
