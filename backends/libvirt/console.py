"""The serial console through virDomainOpenConsole, read by the libvirt event loop.

A nonblocking stream's readable callback appends everything to a
ConsoleBuffer (kept whole, written to the serial log); "no data yet" (-2),
end of stream (b"") and hang-up/error events are handled; detaching removes
the callback and finishes (or aborts) the stream so no descriptor leaks.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import libvirt

from virtlib.backends.libvirt.errors import ErrorFactory, message, translated
from virtlib.errors import RemoteError, VMNotSupportedError
from virtlib.sessions.buffer import ConsoleBuffer
from virtlib.waiting import Deadline, backoff, sleep_within

log = logging.getLogger(__name__)

_WOULD_BLOCK = -2
_READ_SIZE = 65536


class DomainConsole:
    """Attach/detach the first console of a domain to a ConsoleBuffer."""

    def __init__(self, buffer: ConsoleBuffer, name: str) -> None:
        self.buffer = buffer
        self.name = name
        self._stream: Any = None
        self._lock = threading.Lock()
        self._attached = threading.Condition(self._lock)

    def attach(self, conn: libvirt.virConnect, dom: libvirt.virDomain) -> None:
        """Open the console (taking it over from any other client) and start reading."""
        self.detach()
        stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        try:
            unsupported: dict[int, ErrorFactory] = {
                libvirt.VIR_ERR_NO_SUPPORT: lambda e: VMNotSupportedError(
                    "serial console", "libvirt", f"{conn.getURI()}: {message(e)}"
                )
            }
            with translated("open the console of", conn.getURI(), self.name, unsupported):
                dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
            events = (
                libvirt.VIR_STREAM_EVENT_READABLE
                | libvirt.VIR_STREAM_EVENT_ERROR
                | libvirt.VIR_STREAM_EVENT_HANGUP
            )
            stream.eventAddCallback(events, self._on_event, None)
        except BaseException:
            _close_stream(stream, abort=True)
            raise
        self.buffer.reopen()
        with self._lock:
            self._stream = stream
            self._attached.notify_all()

    def _on_event(self, stream: Any, events: int, _opaque: object) -> None:
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
                with self._lock:
                    if self._stream is stream:
                        self._stream = None
                _close_stream(stream, abort=True)
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


def _close_stream(stream: Any, abort: bool) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        stream.eventRemoveCallback()
    with contextlib.suppress(libvirt.libvirtError):
        if abort:
            stream.abort()
        else:
            stream.finish()
