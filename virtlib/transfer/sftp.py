"""An SFTP version 3 client (draft-ietf-secsh-filexfer-02) over a pair of pipes.

Requests are pipelined: :meth:`SftpClient.request` queues a request and
returns at once, :meth:`SftpClient.wait` pumps the pipes until that request's
reply is in.  Callers keep many requests in flight, which is what makes copies
fast over a link with latency; the transport under the pipes (OpenSSH's ``ssh
-s sftp``, see :mod:`virtlib.transfer.sshproc`) does the cryptography.

Outgoing requests are queued as memoryviews and written as the pipe takes
them (file data is never concatenated into the packet), so the transport
always has a long stream to cut into full SSH packets.
"""

from __future__ import annotations

import itertools
import os
import selectors
import stat
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

# Packet types.
INIT, VERSION = 1, 2
OPEN, CLOSE, READ, WRITE, LSTAT, FSTAT, SETSTAT, FSETSTAT = 3, 4, 5, 6, 7, 8, 9, 10
OPENDIR, READDIR, REMOVE, MKDIR, RMDIR, REALPATH, STAT = 11, 12, 13, 14, 15, 16, 17
EXTENDED = 200
STATUS, HANDLE, DATA, NAME, ATTRS, EXTENDED_REPLY = 101, 102, 103, 104, 105, 201

# OPEN flags.
O_READ, O_WRITE, O_CREAT, O_TRUNC = 0x01, 0x02, 0x08, 0x10

# Status codes.
OK, EOF, NO_SUCH_FILE, PERMISSION_DENIED, FAILURE = 0, 1, 2, 3, 4
STATUS_NAMES = {
    0: "ok",
    1: "end of file",
    2: "no such file",
    3: "permission denied",
    4: "failure",
    5: "bad message",
    6: "no connection",
    7: "connection lost",
    8: "operation unsupported",
}

_ATTR_SIZE, _ATTR_UIDGID, _ATTR_PERMISSIONS, _ATTR_ACMODTIME = 0x1, 0x2, 0x4, 0x8
_ATTR_EXTENDED = 0x80000000
DEFAULT_CHUNK = 32768  # every server takes requests of this size (the draft's minimum)
MAX_CHUNK = 255 * 1024  # OpenSSH's sftp-server takes messages up to 256 KiB
_READ_SIZE = 1 << 20


class SftpStatusError(Exception):
    """The server answered a request with an error status."""

    def __init__(self, code: int, text: str) -> None:
        self.code = code
        self.text = text
        reason = STATUS_NAMES.get(code, f"status {code}")
        detail = text if text and text.lower() != reason else ""
        super().__init__(f"{reason} ({detail})" if detail else reason)


class SftpConnectionError(Exception):
    """The pipes closed, or the server stopped answering."""


@dataclass(frozen=True)
class Attrs:
    """File attributes; None where the server did not say."""

    size: int | None = None
    permissions: int | None = None
    mtime: int | None = None

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.permissions or 0)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.permissions or 0)

    @property
    def is_regular(self) -> bool:
        return stat.S_ISREG(self.permissions or 0)

    def pack(self) -> bytes:
        flags, body = 0, b""
        if self.size is not None:
            flags |= _ATTR_SIZE
            body += struct.pack(">Q", self.size)
        if self.permissions is not None:
            flags |= _ATTR_PERMISSIONS
            body += struct.pack(">I", self.permissions)
        return struct.pack(">I", flags) + body


class _Reader:
    """Reads the fields of one reply."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def u32(self) -> int:
        (value,) = struct.unpack_from(">I", self.data, self.pos)
        self.pos += 4
        return int(value)

    def u64(self) -> int:
        (value,) = struct.unpack_from(">Q", self.data, self.pos)
        self.pos += 8
        return int(value)

    def string(self) -> bytes:
        size = self.u32()
        value = self.data[self.pos : self.pos + size]
        if len(value) != size:
            raise SftpConnectionError("malformed SFTP reply (string past the end)")
        self.pos += size
        return value

    def attrs(self) -> Attrs:
        flags = self.u32()
        size = self.u64() if flags & _ATTR_SIZE else None
        if flags & _ATTR_UIDGID:
            self.pos += 8
        permissions = self.u32() if flags & _ATTR_PERMISSIONS else None
        mtime = None
        if flags & _ATTR_ACMODTIME:
            self.pos += 4
            mtime = self.u32()
        if flags & _ATTR_EXTENDED:
            for _ in range(self.u32() * 2):
                self.string()
        return Attrs(size, permissions, mtime)


def _string(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def encode_path(path: str) -> bytes:
    """Paths travel as UTF-8; undecodable host names survive (surrogateescape)."""
    return path.encode("utf-8", "surrogateescape")


class Request:
    """One request in flight; ``reply`` is (type, reader) once the server answered."""

    __slots__ = ("kind", "reply", "rid", "size")

    def __init__(self, rid: int, kind: int, size: int) -> None:
        self.rid = rid
        self.kind = kind
        self.size = size  # payload bytes (writes) or requested bytes (reads), for budgets
        self.reply: tuple[int, _Reader] | None = None


class SftpClient:
    """A pipelined SFTP v3 client on the pipes of a transport.

    ``wfd``/``rfd`` are the non-blocking ends we write requests to and read
    replies from.  ``on_other`` is called with every other readable fd in
    ``other_fds`` (the transport's stderr).  No reply for ``stall_timeout``
    seconds while requests are in flight raises :class:`SftpConnectionError`,
    and so does passing ``deadline`` (a ``time.monotonic()`` value).
    """

    def __init__(
        self,
        wfd: int,
        rfd: int,
        *,
        stall_timeout: float,
        deadline: float,
        other_fds: tuple[int, ...] = (),
        on_other: Callable[[int], None] | None = None,
    ) -> None:
        self._wfd, self._rfd = wfd, rfd
        self._out: deque[memoryview] = deque()
        self._out_bytes = 0
        self._in = bytearray()
        self._pending: dict[int, Request] = {}
        self._next_id = 1
        self.stall_timeout = stall_timeout
        self.deadline = deadline
        self.on_other = on_other
        self._selector = selectors.DefaultSelector()
        self._selector.register(rfd, selectors.EVENT_READ)
        for fd in other_fds:
            self._selector.register(fd, selectors.EVENT_READ)
        self._writing = False
        self.version: int | None = None
        self.extensions: dict[bytes, bytes] = {}
        self.write_size = DEFAULT_CHUNK
        self.read_size = DEFAULT_CHUNK
        self.received = 0  # bytes of replies, for progress while waiting

    def close(self) -> None:
        self._selector.close()

    def unwatch(self, fd: int) -> None:
        """Stop watching one of ``other_fds`` (it reached end of file)."""
        self._selector.unregister(fd)

    # --- wire -------------------------------------------------------------------------
    def _queue(self, *parts: bytes | memoryview) -> None:
        for part in parts:
            if len(part):
                self._out.append(memoryview(part).cast("B"))
                self._out_bytes += len(part)

    def request(self, kind: int, *fields: bytes | memoryview, size: int = 0) -> Request:
        """Queue a request whose payload is ``fields`` (already encoded); returns it."""
        rid = self._next_id
        self._next_id = (rid + 1) & 0xFFFFFFFF or 1
        length = 5 + sum(len(f) for f in fields)
        self._queue(struct.pack(">IBI", length, kind, rid), *fields)
        req = Request(rid, kind, size)
        self._pending[rid] = req
        return req

    def handshake(self) -> None:
        """INIT/VERSION, then the server's limits when it has OpenSSH's extension."""
        self._queue(struct.pack(">IBI", 5, INIT, 3))
        while self.version is None:
            self._pump()
        if b"limits@openssh.com" in self.extensions:
            reader = self.expect(
                self.request(EXTENDED, _string(b"limits@openssh.com")), EXTENDED_REPLY
            )
            reader.u64()  # max packet length
            max_read, max_write = reader.u64(), reader.u64()
            self.read_size = min(max_read or DEFAULT_CHUNK, MAX_CHUNK)
            self.write_size = min(max_write or DEFAULT_CHUNK, MAX_CHUNK)

    def _pump(self) -> None:
        """One round of I/O: write what the pipe takes, read what came, parse replies."""
        want_write = bool(self._out)
        if want_write != self._writing:
            if want_write:
                self._selector.register(self._wfd, selectors.EVENT_WRITE)
            else:
                self._selector.unregister(self._wfd)
            self._writing = want_write
        now = time.monotonic()
        if now >= self.deadline:
            raise SftpConnectionError("the deadline passed")
        events = self._selector.select(min(self.stall_timeout, self.deadline - now))
        if not events:
            if time.monotonic() >= self.deadline:
                raise SftpConnectionError("the deadline passed")
            raise SftpConnectionError(f"no answer from the guest for {self.stall_timeout:g} s")
        for key, _mask in events:
            if key.fd == self._wfd:
                self._write()
            elif key.fd == self._rfd:
                self._read()
            elif self.on_other is not None:
                self.on_other(key.fd)

    def _write(self) -> None:
        try:
            written = os.writev(self._wfd, list(itertools.islice(self._out, 64)))
        except BlockingIOError:
            return
        except BrokenPipeError:
            raise SftpConnectionError("the connection closed") from None
        self._out_bytes -= written
        while written:
            head = self._out[0]
            if len(head) <= written:
                written -= len(head)
                self._out.popleft()
            else:
                self._out[0] = head[written:]
                written = 0

    def _read(self) -> None:
        try:
            data = os.read(self._rfd, _READ_SIZE)
        except BlockingIOError:
            return
        if not data:
            raise SftpConnectionError("the connection closed")
        self.received += len(data)
        self._in += data
        buf, pos, end = self._in, 0, len(self._in)
        while end - pos >= 5:
            (length,) = struct.unpack_from(">I", buf, pos)
            if end - pos - 4 < length:
                break
            packet = bytes(buf[pos + 4 : pos + 4 + length])
            pos += 4 + length
            self._dispatch(packet)
        del buf[:pos]

    def _dispatch(self, packet: bytes) -> None:
        kind = packet[0]
        if kind == VERSION:
            reader = _Reader(packet, 1)
            self.version = reader.u32()
            while reader.pos < len(packet):
                name = reader.string()
                self.extensions[name] = reader.string()
            return
        (rid,) = struct.unpack_from(">I", packet, 1)
        req = self._pending.pop(rid, None)
        if req is None:
            raise SftpConnectionError(f"SFTP reply to unknown request {rid}")
        req.reply = (kind, _Reader(packet, 5))

    # --- waiting for replies ------------------------------------------------------------
    def wait(self, req: Request) -> tuple[int, _Reader]:
        """Pump until ``req`` has its reply; returns (type, reader)."""
        while req.reply is None:
            self._pump()
        return req.reply

    def expect(self, req: Request, kind: int) -> _Reader:
        """The reply of ``req``, which must be of type ``kind`` (a STATUS raises)."""
        got, reader = self.wait(req)
        if got == kind:
            return reader
        if got == STATUS:
            code = reader.u32()
            raise SftpStatusError(code, reader.string().decode("utf-8", "replace"))
        raise SftpConnectionError(f"unexpected SFTP reply {got} to request {req.kind}")

    def check(self, req: Request) -> None:
        """Wait for ``req`` and require an OK status."""
        reader = self.expect(req, STATUS)
        code = reader.u32()
        if code != OK:
            raise SftpStatusError(code, reader.string().decode("utf-8", "replace"))

    def flush(self) -> None:
        """Write everything queued (without waiting for replies)."""
        while self._out:
            self._pump()

    # --- requests -------------------------------------------------------------------------
    def open(self, path: str, flags: int, attrs: Attrs = Attrs()) -> Request:
        return self.request(
            OPEN, _string(encode_path(path)), struct.pack(">I", flags), attrs.pack()
        )

    def handle(self, req: Request) -> bytes:
        return self.expect(req, HANDLE).string()

    def close_handle(self, handle: bytes) -> Request:
        return self.request(CLOSE, _string(handle))

    def write(self, handle: bytes, offset: int, data: bytes | memoryview) -> Request:
        head = _string(handle) + struct.pack(">QI", offset, len(data))
        return self.request(WRITE, head, data, size=len(data))

    def read(self, handle: bytes, offset: int, length: int) -> Request:
        return self.request(READ, _string(handle), struct.pack(">QI", offset, length), size=length)

    def data(self, req: Request) -> bytes | None:
        """The bytes a READ returned; None at end of file."""
        got, reader = self.wait(req)
        if got == STATUS:
            code = reader.u32()
            if code == EOF:
                return None
            raise SftpStatusError(code, reader.string().decode("utf-8", "replace"))
        if got != DATA:
            raise SftpConnectionError(f"unexpected SFTP reply {got} to a read")
        return reader.string()

    def stat(self, path: str, follow: bool = True) -> Request:
        return self.request(STAT if follow else LSTAT, _string(encode_path(path)))

    def fsetstat(self, handle: bytes, attrs: Attrs) -> Request:
        return self.request(FSETSTAT, _string(handle), attrs.pack())

    def attrs(self, req: Request) -> Attrs:
        return self.expect(req, ATTRS).attrs()

    def mkdir(self, path: str, attrs: Attrs = Attrs()) -> Request:
        return self.request(MKDIR, _string(encode_path(path)), attrs.pack())

    def realpath(self, path: str) -> Request:
        return self.request(REALPATH, _string(encode_path(path)))

    def name(self, req: Request) -> str:
        reader = self.expect(req, NAME)
        reader.u32()
        return reader.string().decode("utf-8", "surrogateescape")

    def opendir(self, path: str) -> Request:
        return self.request(OPENDIR, _string(encode_path(path)))

    def readdir(self, handle: bytes) -> Request:
        return self.request(READDIR, _string(handle))

    def names(self, req: Request) -> list[tuple[str, Attrs]] | None:
        """The entries of a READDIR reply; None at the end of the directory."""
        got, reader = self.wait(req)
        if got == STATUS:
            code = reader.u32()
            if code == EOF:
                return None
            raise SftpStatusError(code, reader.string().decode("utf-8", "replace"))
        if got != NAME:
            raise SftpConnectionError(f"unexpected SFTP reply {got} to readdir")
        entries = []
        for _ in range(reader.u32()):
            filename = reader.string().decode("utf-8", "surrogateescape")
            reader.string()  # longname
            entries.append((filename, reader.attrs()))
        return entries
