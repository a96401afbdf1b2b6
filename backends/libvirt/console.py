"""The serial console through virDomainOpenConsole, read by the libvirt event loop.

:class:`DomainConsole` keeps one nonblocking stream: its readable callback
(on the event-loop thread, where nothing may block) appends what arrives to a
ConsoleBuffer; "no data yet" (-2), end of stream (b"") and hang-up/error
events are handled; detaching removes the callback and finishes (or aborts)
the stream so no descriptor leaks.  The stream is published before its
callback is registered, so the first callback always finds it.

:class:`SerialConsole` is a VM's whole serial line: the buffer (the complete
output since the first byte, also written to the serial log), the stream
that fills it, and the ShellSession that talks to it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import libvirt

from virtlib.backends.libvirt.errors import ErrorFactory, message, translated
from virtlib.errors import RemoteError, VMError, VMNotSupportedError
from virtlib.sessions.buffer import ConsoleBuffer
from virtlib.sessions.shell import ShellSession
from virtlib.sessions.transport import BufferSpawn
from virtlib.spec import LoginSpec
from virtlib.waiting import Deadline, backoff, sleep_within

if TYPE_CHECKING:
    from virtlib.backends.libvirt.guest import Guest
    from virtlib.backends.libvirt.host import Host

log = logging.getLogger(__name__)

_WOULD_BLOCK = -2
_READ_SIZE = 65536
STREAM_EVENTS = (
    libvirt.VIR_STREAM_EVENT_READABLE
    | libvirt.VIR_STREAM_EVENT_ERROR
    | libvirt.VIR_STREAM_EVENT_HANGUP
)


class DomainConsole:
    """Attach/detach the first console of a domain to a ConsoleBuffer."""

    def __init__(self, buffer: ConsoleBuffer, name: str) -> None:
        self.buffer = buffer
        self.name = name
        self._stream: Any = None
        self._lock = threading.Lock()
        self._attached = threading.Condition(self._lock)

    def attach(self, host: Host, guest: Guest) -> None:
        """Open the console (taking it over from any other client) and start reading.

        :raises VMNotSupportedError: the driver has no consoles.
        """
        self.detach()
        stream = host.new_stream()
        unsupported: dict[int, ErrorFactory] = {
            libvirt.VIR_ERR_NO_SUPPORT: lambda e: VMNotSupportedError(
                "serial console", "libvirt", f"{host.uri}: {message(e)}"
            )
        }
        try:
            guest.open_console(stream, unsupported)
        except BaseException:
            _close_stream(stream, abort=True)
            raise
        self.buffer.reopen()
        with self._lock:  # published first: the first callback must find it
            self._stream = stream
        try:
            with translated("watch the console of", host.uri, self.name):
                stream.eventAddCallback(STREAM_EVENTS, self._on_event, None)
        except BaseException:
            self._end(stream, abort=True)
            raise
        with self._lock:
            self._attached.notify_all()

    def _on_event(self, stream: Any, events: int, _opaque: object) -> None:
        """On the event-loop thread: drain what is there, never wait."""
        if events & libvirt.VIR_STREAM_EVENT_READABLE:
            while True:
                try:
                    data = stream.recv(_READ_SIZE)
                except libvirt.libvirtError:
                    self._end(stream, abort=True)
                    return
                if data == _WOULD_BLOCK:
                    break
                if not data:
                    self._end(stream, abort=False)
                    return
                self.buffer.append(data)
        if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
            self._end(stream, abort=True)

    def _end(self, stream: Any, abort: bool) -> None:
        with self._lock:
            if self._stream is not stream:
                return
            self._stream = None
        _close_stream(stream, abort)
        self.buffer.close()
        log.debug("console of %s: end of stream", self.name)

    @property
    def attached(self) -> bool:
        with self._lock:
            return self._stream is not None

    def send(self, data: bytes, timeout: float = 10.0) -> None:
        """Write to the console, retrying while the stream would block.

        When the stream broke (libvirtd restarting), waits until the console is
        re-attached, within ``timeout``.
        """
        deadline = Deadline(timeout)
        view = memoryview(data)
        delays = backoff(0.001, 0.05)
        while view:
            stream = self._wait_attached(deadline)
            try:
                sent = stream.send(bytes(view))
            except libvirt.libvirtError as exc:
                log.debug("console of %s: send failed (%s); waiting for re-attach", self.name, exc)
                self._end(stream, abort=True)
                continue
            if sent in (_WOULD_BLOCK, 0):
                if deadline.expired():
                    raise RemoteError(f"the console of {self.name} accepts no input")
                sleep_within(next(delays), deadline)
                continue
            view = view[sent:]

    def _wait_attached(self, deadline: Deadline) -> Any:
        with self._lock:
            self._attached.wait_for(lambda: self._stream is not None, deadline.remaining())
            if self._stream is None:
                raise RemoteError(f"the console of {self.name} is not attached")
            return self._stream

    def detach(self) -> None:
        """Stop reading and close the stream (the buffer keeps the output)."""
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            _close_stream(stream, abort=True)
            self.buffer.close()


class SerialConsole:
    """A VM's serial line: buffer + stream + the ShellSession on it (see the module)."""

    def __init__(self, name: str, log_path: Path, login: LoginSpec) -> None:
        self.buffer = ConsoleBuffer(log_path)
        self.stream = DomainConsole(self.buffer, name)
        spawn = BufferSpawn(self.buffer, self.stream.send, name=f"{name} console")
        self.session = ShellSession(
            spawn,
            prompt=login.shell_prompt,
            linesep=login.linesep,
            status_test_command=login.status_test_command,
            output_source=self.buffer.get_output,
        )
        self._attached_once = False

    def attach(self, host: Host, guest: Guest) -> None:
        if self._attached_once:
            self.buffer.mark("console re-attached")
        self.stream.attach(host, guest)
        self._attached_once = True

    def detach(self) -> None:
        self.stream.detach()

    def release(self) -> None:
        """Detach and close the serial log for good."""
        self.stream.detach()
        self.buffer.release()


def attach_serial(
    serial: SerialConsole | None,
    name: str,
    log_path: Path,
    login: LoginSpec,
    host: Host,
    guest: Guest,
) -> SerialConsole | None:
    """Attach ``serial`` (made when None) to ``guest``; None when the driver has no console.

    A console made here and not attached is released again (its log closed).
    """
    made = serial is None
    line = serial or SerialConsole(name, log_path, login)
    try:
        line.attach(host, guest)
    except VMNotSupportedError as exc:
        log.warning("%s: %s; no serial console", name, exc)
        line.release()
        return None
    except VMError:
        if made:
            line.release()
        raise
    return line


def _close_stream(stream: Any, abort: bool) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        stream.eventRemoveCallback()
    with contextlib.suppress(libvirt.libvirtError):
        if abort:
            stream.abort()
        else:
            stream.finish()
