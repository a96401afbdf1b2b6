"""The guest side of the in-memory backend: a shell over a directory, and an SSH/SFTP server.

:class:`MemoryGuest` is the fake getty/login/shell of ``tests/unit/fake_guest.py``
with the commands the contract suite runs (``cat`` and ``echo ... > file``
on the guest's files, ``hostname``, the memory and CPU queries, ``reboot``,
``poweroff``, ``virtlib-oops``); it pauses with its machine.  :class:`GuestSSHServer`
is a paramiko server on 127.0.0.1 that authenticates the guest's root
password, runs a MemoryGuest shell on each "shell" channel and serves the
guest's files over SFTP (paths never leave the guest's root directory).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import paramiko
from fake_guest import HOSTNAME, FakeGuest
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_SUCCEEDED,
)
from paramiko.sftp import SFTP_OK

from virtlib.guest import recipe

OOPS = (
    "BUG: kernel NULL pointer dereference, address: 0000000000000000\r\n"
    "Oops: 0002 [#1] SMP NOPTI\r\n"
    "RIP: 0010:virtlib_oops_trigger+0x11/0x20\r\n"
    "---[ end trace 0000000000000000 ]---\r\n"
)


class Machine(Protocol):
    """What a guest asks of the machine it runs on (the in-memory backend's Machine)."""

    root: Path
    mem_mib: int
    cpus: int
    boot_id: str
    running: threading.Event

    def request(self, action: str) -> None:
        """ "reboot" or "poweroff", asked by the guest's shell."""


class MemoryGuest(FakeGuest):
    """The fake shell with a file system (the machine's root directory) and power commands."""

    def __init__(self, machine: Machine, write: Callable[[bytes], None], **kwargs: Any) -> None:
        kwargs.setdefault("password", recipe.DEFAULT_PASSWORD)
        super().__init__(write, kwargs.pop("close", None), **kwargs)
        self.machine = machine

    def _line(self, line: str) -> None:
        self.machine.running.wait()  # a paused machine runs nothing
        if self.state == "shell" and line.strip() in ("reboot", "poweroff"):
            self.emit(f"{line}\r\n")
            self.machine.request(line.strip())
            return
        super()._line(line)

    def _run_command(self, cmd: str) -> tuple[str, int]:
        words = shlex.split(cmd) if cmd.count("'") % 2 == 0 else cmd.split()
        if words[:1] == ["hostname"]:
            return f"{HOSTNAME}\r\n", 0
        if cmd == "grep MemTotal /proc/meminfo":
            return f"MemTotal:       {self.machine.mem_mib * 1024 - 20480} kB\r\n", 0
        if cmd == "grep -c ^processor /proc/cpuinfo":
            return f"{self.machine.cpus}\r\n", 0
        if cmd == "cat /proc/sys/kernel/random/boot_id":
            return f"{self.machine.boot_id}\r\n", 0
        if words[:1] == ["virtlib-oops"]:
            return OOPS, 0
        if words[:1] == ["echo"] and ">" in words:
            at = words.index(">")
            return self._write_file(" ".join(words[1:at]) + "\n", words[at + 1 :])
        if words[:1] == ["cat"] and len(words) == 2:
            return self._cat(words[1])
        return super()._run_command(cmd)

    def _path(self, guest_path: str) -> Path:
        return guest_file(self.machine.root, guest_path)

    def _cat(self, guest_path: str) -> tuple[str, int]:
        try:
            text = self._path(guest_path).read_text()
        except (OSError, PermissionError):
            return f"cat: can't open '{guest_path}': No such file or directory\r\n", 1
        return text.replace("\n", "\r\n"), 0

    def _write_file(self, text: str, target: list[str]) -> tuple[str, int]:
        if len(target) != 1:
            return "-sh: syntax error\r\n", 2
        try:
            path = self._path(target[0])
            path.write_text(text)
        except (OSError, PermissionError):
            return f"-sh: can't create {target[0]}: nonexistent directory\r\n", 1
        return "", 0


def guest_file(root: Path, guest_path: str) -> Path:
    """The host path of ``guest_path`` inside the guest's ``root``.

    :raises PermissionError: the path would leave the root (``..``, symlinks).
    """
    path = (root / guest_path.lstrip("/")).resolve()
    if path != root.resolve() and root.resolve() not in path.parents:
        raise PermissionError(errno.EACCES, "outside the guest", guest_path)
    return path


# --- SSH and SFTP ---------------------------------------------------------------------------
class _Auth(paramiko.ServerInterface):
    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password
        self.shell = threading.Event()

    def get_allowed_auths(self, username: str) -> str:
        return "password"

    def check_auth_password(self, username: str, password: str) -> int:
        ok = (username, password) == (self.username, self.password)
        return AUTH_SUCCESSFUL if ok else AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return OPEN_SUCCEEDED
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_pty_request(self, *args: Any) -> bool:
        return True

    def check_channel_shell_request(self, channel: Any) -> bool:
        self.shell.set()
        return True


def _sftp_errors(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except OSError as exc:
        return paramiko.SFTPServer.convert_errno(exc.errno or errno.EACCES)


class _Handle(paramiko.SFTPHandle):
    """An open guest file: paramiko's default read/write use ``readfile``/``writefile``."""

    filename: str
    readfile: Any
    writefile: Any

    def stat(self) -> Any:
        return _sftp_errors(
            lambda: paramiko.SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))
        )

    def chattr(self, attr: paramiko.SFTPAttributes) -> int:  # FSETSTAT: the file's mode
        def change() -> None:
            if attr.st_mode is not None:
                os.fchmod(self.readfile.fileno(), attr.st_mode & 0o7777)

        return int(_sftp_errors(change) or SFTP_OK)


class _Files(paramiko.SFTPServerInterface):
    """SFTP over the guest's root directory (paramiko's stub server, confined to the root)."""

    root: Path

    def _host(self, path: str) -> str:
        return str(guest_file(self.root, path))

    def canonicalize(self, path: str) -> str:
        return "/" + str(Path("/", path).resolve()).lstrip("/")

    def list_folder(self, path: str) -> Any:
        def listing() -> list[paramiko.SFTPAttributes]:
            folder = self._host(path)
            return [
                paramiko.SFTPAttributes.from_stat(os.lstat(os.path.join(folder, name)), name)
                for name in os.listdir(folder)
            ]

        return _sftp_errors(listing)

    def stat(self, path: str) -> Any:
        return _sftp_errors(lambda: paramiko.SFTPAttributes.from_stat(os.stat(self._host(path))))

    def lstat(self, path: str) -> Any:
        return _sftp_errors(lambda: paramiko.SFTPAttributes.from_stat(os.lstat(self._host(path))))

    def open(self, path: str, flags: int, attr: paramiko.SFTPAttributes) -> Any:
        def opened() -> paramiko.SFTPHandle:
            fd = os.open(self._host(path), flags | getattr(os, "O_BINARY", 0), 0o644)
            mode = "rb" if not flags & (os.O_WRONLY | os.O_RDWR) else "r+b"
            if flags & os.O_WRONLY:
                mode = "ab" if flags & os.O_APPEND else "wb"
            handle = _Handle(flags)
            handle.filename = self._host(path)
            handle.readfile = handle.writefile = os.fdopen(fd, mode)
            return handle

        return _sftp_errors(opened)

    def remove(self, path: str) -> int:
        return int(_sftp_errors(lambda: os.remove(self._host(path))) or SFTP_OK)

    def mkdir(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        return int(_sftp_errors(lambda: os.mkdir(self._host(path))) or SFTP_OK)

    def chattr(self, path: str, attr: paramiko.SFTPAttributes) -> int:
        def change() -> None:
            if attr.st_mode is not None:
                os.chmod(self._host(path), attr.st_mode & 0o7777)

        return int(_sftp_errors(change) or SFTP_OK)


class GuestSSHServer:
    """An SSH server for one machine on 127.0.0.1:``port`` (the VM's forwarded SSH port).

    It listens from create() on, like QEMU's user network, but until :meth:`up`
    every connection is closed at once (the guest's sshd is not running yet).
    """

    def __init__(self, machine: Machine, port: int, username: str, password: str) -> None:
        self.machine = machine
        self.username = username
        self.password = password
        self.host_key = paramiko.ECDSAKey.generate()
        self.guests: list[FakeGuest] = []
        self._transports: list[paramiko.Transport] = []
        self._up = threading.Event()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port = port
        self._thread = threading.Thread(target=self._accept, name="memory-sshd", daemon=True)
        self._thread.start()

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.host_key.get_name()} {self.host_key.get_base64()}\n"

    def up(self) -> None:
        self._up.set()

    def down(self) -> None:
        """The guest's sshd stops (reboot): open sessions end, new ones are refused until up()."""
        self._up.clear()
        self._end_sessions()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            if not self._up.is_set() or not self.machine.running.is_set():
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        transport = paramiko.Transport(conn)
        with self._lock:
            self._transports.append(transport)
        transport.add_server_key(self.host_key)
        files = type("GuestFiles", (_Files,), {"root": self.machine.root})
        transport.set_subsystem_handler("sftp", paramiko.SFTPServer, files)
        auth = _Auth(self.username, self.password)
        try:
            transport.start_server(server=auth)
        except (paramiko.SSHException, EOFError, OSError):
            return
        channel = transport.accept(timeout=10)
        if channel is None or not auth.shell.wait(2):
            return  # an SFTP session: the subsystem handler serves it

        def close() -> None:
            with contextlib.suppress(EOFError, OSError, paramiko.SSHException):  # client gone
                channel.send_exit_status(0)
                channel.close()

        guest = MemoryGuest(self.machine, channel.sendall, close=close, state="shell").start()
        with self._lock:
            self.guests.append(guest)
        while True:  # this thread feeds the shell what the client types
            try:
                data = channel.recv(65536)
            except OSError:
                return
            if not data:
                return
            guest.feed(data)

    def _end_sessions(self) -> None:
        with self._lock:
            guests, self.guests = self.guests, []
            transports, self._transports = self._transports, []
        for guest in guests:
            guest.end()
            guest.stop()
        for transport in transports:
            transport.close()

    def close(self) -> None:
        self._up.clear()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=2)
        self._end_sessions()
