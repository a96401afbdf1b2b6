"""ssh.connect and remote_login("ssh") against a paramiko SSH server on 127.0.0.1.

The server authenticates with a password, has an in-memory host key and runs
the fake guest's shell (tests/unit/fake_guest.py) on the channel of a "shell"
request.  Host key policies: "strict" (the key must be known) and
"accept-new" (trust on first use, recorded; a changed key is refused).
"""

from __future__ import annotations

import contextlib
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from fake_guest import PASSWORD, PROMPT_RE, USERNAME, FakeGuest, on_channel

from virtlib.errors import (
    LoginAuthenticationError,
    LoginError,
    LoginHostKeyError,
    LoginProcessTerminatedError,
    LoginTimeoutError,
    ShellCmdError,
    ShellProcessTerminatedError,
)
from virtlib.sessions import remote_login, ssh
from virtlib.sessions.transport import ChannelSpawn

HOST = "127.0.0.1"


class _Interface(paramiko.ServerInterface):
    """Password auth for one user; a session channel with a pty and a shell."""

    def __init__(self, server: FakeSSHServer, conn: socket.socket) -> None:
        self.server = server
        self.conn = conn
        self.shell_requested = threading.Event()

    def get_allowed_auths(self, username: str) -> str:
        return "password"

    def check_auth_password(self, username: str, password: str) -> int:
        if self.server.auth_mode == "slow":  # a busy guest: answers after the client gave up
            self.server.release_auth.wait(5)
        elif self.server.auth_mode == "drop":  # sshd restarting during boot: connection gone
            with contextlib.suppress(OSError):
                self.conn.shutdown(socket.SHUT_RDWR)
            return paramiko.AUTH_FAILED
        if username == USERNAME and password == PASSWORD:
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_pty_request(self, *args: Any) -> bool:
        return True

    def check_channel_shell_request(self, channel: Any) -> bool:
        self.shell_requested.set()
        return True


class FakeSSHServer:
    """Accepts connections on 127.0.0.1 and runs a fake guest shell on each."""

    def __init__(self, host_key: paramiko.PKey, guest_state: str = "shell") -> None:
        self.host_key = host_key  # may be swapped: the next connection uses the new key
        self.guest_state = guest_state
        self.auth_mode = "normal"  # "slow": wait for release_auth; "drop": close the connection
        self.release_auth = threading.Event()
        self.guests: list[FakeGuest] = []
        self.transports: list[paramiko.Transport] = []
        self._listener = socket.create_server((HOST, 0))
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

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
        interface = _Interface(self, conn)
        try:
            transport.start_server(server=interface)
        except (paramiko.SSHException, EOFError, OSError):
            return
        channel = transport.accept(timeout=5)
        if channel is None or not interface.shell_requested.wait(5):
            return
        self.guests.append(on_channel(channel, state=self.guest_state))

    def close(self) -> None:
        self.release_auth.set()
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(timeout=2)
        for guest in self.guests:
            guest.stop()
        for transport in self.transports:
            transport.close()


@pytest.fixture(scope="module")
def host_keys() -> tuple[paramiko.PKey, paramiko.PKey]:
    """Two different host keys (ECDSA: generated in milliseconds)."""
    return paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()


@pytest.fixture
def server(host_keys: tuple[paramiko.PKey, paramiko.PKey]) -> Iterator[FakeSSHServer]:
    srv = FakeSSHServer(host_keys[0])
    yield srv
    srv.close()


@pytest.fixture
def known_hosts(tmp_path: Path) -> Path:
    """An empty per-VM known_hosts file, as virtlib makes it (0600)."""
    path = tmp_path / "vm" / "known_hosts"
    path.parent.mkdir()
    path.touch(mode=0o600)
    return path


def _entry(port: int) -> str:
    return f"[{HOST}]:{port}"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _connect(port: int, known_hosts: Path, policy: str, password: str = PASSWORD) -> Any:
    return ssh.connect(HOST, port, USERNAME, password, 3, known_hosts, policy)


# --- host key policies -----------------------------------------------------------------


def test_strict_with_empty_known_hosts_is_refused(server: FakeSSHServer, known_hosts: Path) -> None:
    # An untrusted host key is final (wait_for_login does not retry it).
    with pytest.raises(LoginHostKeyError) as info:
        _connect(server.port, known_hosts, "strict")
    assert "not in known_hosts" in str(info.value)
    assert known_hosts.read_text() == ""


def test_strict_without_known_hosts_file_is_refused(server: FakeSSHServer, tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "known_hosts"
    with pytest.raises(LoginError):
        _connect(server.port, missing, "strict")
    assert not missing.exists()


def test_strict_with_the_key_known_connects(server: FakeSSHServer, known_hosts: Path) -> None:
    keys = paramiko.HostKeys()
    keys.add(_entry(server.port), server.host_key.get_name(), server.host_key)
    keys.save(str(known_hosts))
    client = _connect(server.port, known_hosts, "strict")
    try:
        transport = client.get_transport()
        assert transport is not None and transport.is_authenticated()
    finally:
        client.close()


def test_accept_new_records_the_key_0600(server: FakeSSHServer, known_hosts: Path) -> None:
    client = _connect(server.port, known_hosts, "accept-new")
    client.close()
    keys = paramiko.HostKeys(str(known_hosts))
    recorded = keys.lookup(_entry(server.port))
    assert recorded is not None
    assert recorded[server.host_key.get_name()] == server.host_key
    assert _mode(known_hosts) == 0o600


def test_accept_new_creates_a_missing_file_0600(server: FakeSSHServer, tmp_path: Path) -> None:
    path = tmp_path / "new-vm" / "known_hosts"
    _connect(server.port, path, "accept-new").close()
    assert _entry(server.port) in path.read_text()
    assert _mode(path) == 0o600


def test_accept_new_then_a_changed_key_is_refused(
    server: FakeSSHServer, known_hosts: Path, host_keys: tuple[paramiko.PKey, paramiko.PKey]
) -> None:
    _connect(server.port, known_hosts, "accept-new").close()
    recorded = known_hosts.read_text()
    server.host_key = host_keys[1]  # same host:port, different key
    with pytest.raises(LoginAuthenticationError, match="changed"):
        _connect(server.port, known_hosts, "accept-new")
    assert known_hosts.read_text() == recorded  # the new key was not written


def test_accept_new_then_the_same_key_connects_again(
    server: FakeSSHServer, known_hosts: Path
) -> None:
    _connect(server.port, known_hosts, "accept-new").close()
    recorded = known_hosts.read_text()
    _connect(server.port, known_hosts, "strict").close()  # now known: strict is enough
    _connect(server.port, known_hosts, "accept-new").close()
    assert known_hosts.read_text() == recorded


def test_wrong_password_is_an_authentication_error(
    server: FakeSSHServer, known_hosts: Path
) -> None:
    start = time.monotonic()
    with pytest.raises(LoginAuthenticationError, match="authentication failed"):
        _connect(server.port, known_hosts, "accept-new", password="wrong")
    assert time.monotonic() - start < 1.5


def test_slow_authentication_is_a_timeout_not_a_refusal(
    server: FakeSSHServer, known_hosts: Path
) -> None:
    server.auth_mode = "slow"
    start = time.monotonic()
    with pytest.raises(LoginError) as info:
        ssh.connect(HOST, server.port, USERNAME, PASSWORD, 0.3, known_hosts)
    assert time.monotonic() - start < 1.5
    assert not isinstance(info.value, LoginAuthenticationError)
    assert isinstance(info.value, LoginTimeoutError)


def test_connection_lost_during_authentication_is_not_a_refusal(
    server: FakeSSHServer, known_hosts: Path
) -> None:
    server.auth_mode = "drop"
    with pytest.raises(LoginError) as info:
        _connect(server.port, known_hosts, "accept-new")
    assert not isinstance(info.value, LoginAuthenticationError)


def test_nothing_listening_fails_quickly(known_hosts: Path) -> None:
    probe = socket.create_server((HOST, 0))
    port = probe.getsockname()[1]
    probe.close()
    start = time.monotonic()
    with pytest.raises(LoginError) as info:
        _connect(port, known_hosts, "accept-new")
    assert time.monotonic() - start < 1
    assert isinstance(info.value, LoginProcessTerminatedError)


def test_a_server_that_never_speaks_ssh_fails_within_the_timeout(known_hosts: Path) -> None:
    silent = socket.create_server((HOST, 0))
    try:
        start = time.monotonic()
        with pytest.raises(LoginError):
            ssh.connect(HOST, silent.getsockname()[1], USERNAME, PASSWORD, 0.3, known_hosts)
        assert time.monotonic() - start < 1.5
    finally:
        silent.close()


def test_unknown_host_key_policy(known_hosts: Path) -> None:
    with pytest.raises(LoginError, match="unknown host key policy"):
        ssh.connect(HOST, 1, USERNAME, PASSWORD, 1, known_hosts, "yolo")


# --- remote_login("ssh") and ChannelSpawn ----------------------------------------------


def _login(port: int, known_hosts: Path, **kwargs: Any) -> Any:
    return remote_login(
        "ssh",
        HOST,
        port,
        USERNAME,
        kwargs.pop("password", PASSWORD),
        PROMPT_RE,
        timeout=3,
        known_hosts=known_hosts,
        **kwargs,
    )


def test_remote_login_ssh_gives_a_working_shell_session(
    server: FakeSSHServer, known_hosts: Path
) -> None:
    session = _login(server.port, known_hosts)
    try:
        assert isinstance(session.spawn, ChannelSpawn)
        assert session.is_alive()
        assert session.cmd("uname -r") == "6.6.0-virtlib\n"
        assert session.cmd_status_output("(exit 3)") == (3, "")
        with pytest.raises(ShellCmdError) as info:
            session.cmd("false")
        assert info.value.status == 1
        sync, *commands = server.guests[0].commands
        assert sync.startswith("echo virtlib-sync-")  # virtlib gets in step after the login
        assert commands == [
            "uname -r",
            "echo $?",
            "(exit 3)",
            "echo $?",
            "false",
            "echo $?",
        ]
    finally:
        session.close()
    assert not session.is_alive()
    assert session.spawn.owner.get_transport() is None  # the SSH client is closed too
    session.close()  # twice is fine


def test_remote_login_ssh_writes_the_session_log(
    server: FakeSSHServer, known_hosts: Path, tmp_path: Path
) -> None:
    log = tmp_path / "ssh.log"
    session = _login(server.port, known_hosts, log_file=log)
    try:
        session.cmd("cat /etc/os-release")
    finally:
        session.close()
        session.spawn.logfile_read.close()  # see test_sessions: nothing else closes it
    assert "VERSION_ID=1.0" in log.read_text()


def test_remote_login_ssh_wrong_password(server: FakeSSHServer, known_hosts: Path) -> None:
    with pytest.raises(LoginAuthenticationError):
        _login(server.port, known_hosts, password="wrong")
    assert server.guests == []


def test_remote_login_ssh_strict_unknown_host(server: FakeSSHServer, known_hosts: Path) -> None:
    with pytest.raises(LoginError):
        _login(server.port, known_hosts, host_key_policy="strict")


def test_ssh_shell_exit_ends_the_channel(server: FakeSSHServer, known_hosts: Path) -> None:
    session = _login(server.port, known_hosts)
    try:
        with pytest.raises(ShellProcessTerminatedError) as info:
            session.cmd_output("exit", timeout=2)
        assert "logout" in info.value.output
        assert not session.is_alive()
        assert session.spawn.exit_status() == 0
    finally:
        session.close()


def test_channel_spawn_read_timeout_and_send_after_close(
    server: FakeSSHServer, known_hosts: Path
) -> None:
    session = _login(server.port, known_hosts)
    spawn = session.spawn
    try:
        start = time.monotonic()
        assert session.read_nonblocking(0.05) == ""  # nothing pending: a quiet timeout
        assert time.monotonic() - start < 1
        assert spawn.exit_status() is None
    finally:
        session.close()
    with pytest.raises(OSError, match="closed"):
        spawn.send("true\n")
