"""An SSH server with an SFTP subsystem on 127.0.0.1, serving a directory (paramiko).

virtlib's copies run OpenSSH's real ``ssh`` client against it, so a unit test
covers the whole path (argv, askpass, host keys, the SFTP client, the walk and
the pipelines) without a guest.  Paths the client sends are absolute guest
paths; the server maps ``/x`` to ``<root>/x``.  Knobs: ``readonly`` names a
guest directory where writes are refused; ``cut_after`` closes the connection
once that many file bytes moved; ``stall_after`` stops answering instead.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path
from typing import Any

import paramiko

USERNAME = "root"
PASSWORD = "pw-for-tests"
HOST = "127.0.0.1"


class _Auth(paramiko.ServerInterface):
    def get_allowed_auths(self, username: str) -> str:
        return "password"

    def check_auth_password(self, username: str, password: str) -> int:
        if username == USERNAME and password == PASSWORD:
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED


class _Handle(paramiko.SFTPHandle):
    def __init__(self, server: FakeSftpServer, path: Path, flags: int) -> None:
        super().__init__(flags)
        self.server = server
        self.path = path

    def stat(self) -> Any:
        return paramiko.SFTPAttributes.from_stat(os.fstat(self.fileno))

    def chattr(self, attr: paramiko.SFTPAttributes) -> int:
        if attr.st_mode is not None:
            os.fchmod(self.fileno, attr.st_mode & 0o7777)
        return paramiko.SFTP_OK

    def read(self, offset: int, length: int) -> Any:
        self.server.moved(length)
        return os.pread(self.fileno, length, offset)

    def write(self, offset: int, data: bytes) -> int:
        self.server.moved(len(data))
        os.pwrite(self.fileno, data, offset)
        return paramiko.SFTP_OK

    def close(self) -> None:
        os.close(self.fileno)


class _Files(paramiko.SFTPServerInterface):
    def __init__(self, server: paramiko.ServerInterface, *, fake: FakeSftpServer) -> None:
        super().__init__(server)
        self.fake = fake

    def _local(self, path: str) -> Path:
        return self.fake.root / path.lstrip("/")

    def _refused(self, path: str) -> bool:
        ro = self.fake.readonly
        return ro is not None and (path == ro or path.startswith(ro.rstrip("/") + "/"))

    def open(self, path: str, flags: int, attr: paramiko.SFTPAttributes) -> Any:
        writing = flags & (os.O_WRONLY | os.O_RDWR)
        if writing and self._refused(path):
            return paramiko.SFTP_PERMISSION_DENIED
        mode = attr.st_mode & 0o7777 if attr.st_mode is not None else 0o666
        try:
            fd = os.open(self._local(path), flags | os.O_CLOEXEC, mode)
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)
        handle = _Handle(self.fake, self._local(path), flags)
        handle.fileno = fd
        return handle

    def list_folder(self, path: str) -> Any:
        local = self._local(path)
        try:
            names = os.listdir(local)
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)
        out = []
        for name in names:
            attr = paramiko.SFTPAttributes.from_stat(os.lstat(local / name))
            attr.filename = name
            out.append(attr)
        return out

    def stat(self, path: str) -> Any:
        try:
            return paramiko.SFTPAttributes.from_stat(os.stat(self._local(path)))
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)

    def lstat(self, path: str) -> Any:
        try:
            return paramiko.SFTPAttributes.from_stat(os.lstat(self._local(path)))
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)

    def mkdir(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        if self._refused(path):
            return paramiko.SFTP_PERMISSION_DENIED
        try:
            os.mkdir(self._local(path))
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)
        return paramiko.SFTP_OK

    def chattr(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        if attr.st_mode is not None:
            os.chmod(self._local(path), attr.st_mode & 0o7777)
        return paramiko.SFTP_OK

    def canonicalize(self, path: str) -> str:
        real = os.path.realpath(self._local(path))
        root = os.path.realpath(self.fake.root)
        return "/" + os.path.relpath(real, root).removeprefix(".")


class FakeSftpServer:
    """Accepts SSH connections on 127.0.0.1 and serves ``root`` over SFTP."""

    def __init__(self, root: Path, host_key: paramiko.PKey) -> None:
        self.root = root
        self.host_key = host_key
        self.readonly: str | None = None
        self.cut_after: int | None = None
        self.stall_after: int | None = None
        self.release = threading.Event()
        self.bytes_moved = 0
        self._lock = threading.Lock()
        self.transports: list[paramiko.Transport] = []
        self._listener = socket.create_server((HOST, 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def moved(self, count: int) -> None:
        """Called for each read or write: cut or stall once past the limits."""
        with self._lock:
            self.bytes_moved += count
            moved = self.bytes_moved
        if self.cut_after is not None and moved > self.cut_after:
            for transport in self.transports:
                transport.close()
        if self.stall_after is not None and moved > self.stall_after:
            self.release.wait(20)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        transport = paramiko.Transport(conn)
        self.transports.append(transport)
        transport.add_server_key(self.host_key)
        transport.set_subsystem_handler("sftp", paramiko.SFTPServer, _Files, fake=self)
        with contextlib.suppress(paramiko.SSHException, EOFError, OSError):
            transport.start_server(server=_Auth())

    def close(self) -> None:
        self.release.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for transport in self.transports:
            transport.close()


class SilentServer:
    """Accepts TCP connections and never says a word (a guest whose sshd is not up)."""

    def __init__(self) -> None:
        self._listener = socket.create_server((HOST, 0))
        self.port: int = self._listener.getsockname()[1]
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._conns.append(conn)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for conn in self._conns:
            conn.close()
