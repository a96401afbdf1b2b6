"""The SSH transport of copies: OpenSSH's ``ssh`` client running the ``sftp`` subsystem.

Why OpenSSH and not paramiko (which virtlib's shell sessions use): on a TCG
guest the guest's CPU is the bottleneck of a copy, and what it spends depends
on the client.  paramiko offers no chacha20-poly1305, so with dropbear it
negotiates aes128-ctr + hmac-sha2-256, which costs the emulated guest ~45 %
more CPU per byte; and its packetizer answers each window adjust with a small
packet (dropbear opens a 24 KiB window and re-opens it per packet), so the
guest handles three packets where OpenSSH sends one full one.  asyncssh has
the cipher but sends an SSH_MSG_IGNORE before every packet and splits windows
at write boundaries.  The measurements are in bench/README.md.  ``ssh`` with
virtlib's own pipelined SFTP on its pipes moves the same bytes as OpenSSH's
``sftp`` with the same packets.

Host keys follow the VM's policy through OpenSSH's own options, on the VM's
own known_hosts file (the one paramiko sessions use; the formats are the
same): ``strict`` is ``StrictHostKeyChecking=yes``, ``accept-new`` is
``StrictHostKeyChecking=accept-new`` (a new host is recorded, a changed key is
refused).  No user or system ssh configuration applies (``-F /dev/null``, no
global known_hosts, no agent, no keys).

The password reaches ssh through ``SSH_ASKPASS``: a two-line script in a
private directory reads one line from a FIFO next to it, which this process
fills; the password is never on a command line, in the environment or in a
file.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from virtlib.errors import (
    LoginAuthenticationError,
    LoginError,
    LoginHostKeyError,
    LoginProcessTerminatedError,
    LoginTimeoutError,
)
from virtlib.transfer.sftp import SftpClient, SftpConnectionError

HOST_KEY_POLICIES = {"strict": "yes", "accept-new": "accept-new"}
SERVER_ALIVE_INTERVAL = 5  # seconds between ssh's keepalives to a silent server
SERVER_ALIVE_COUNT = 3  # unanswered keepalives before ssh gives up
_STDERR_MAX = 16384


@dataclass(frozen=True)
class Endpoint:
    """Where to connect and how to trust the guest."""

    host: str
    port: int
    username: str
    password: str = field(repr=False)
    known_hosts: Path
    host_key_policy: str
    login_timeout: float
    #: A ProxyCommand's argv: reach host:port through it (the VM's hypervisor host).
    proxy: tuple[str, ...] = ()


def ssh_binary() -> str:
    """The path of OpenSSH's ``ssh``; LoginError when it is not installed."""
    path = shutil.which("ssh")
    if path is None:
        raise LoginError("file copies need OpenSSH's ssh client: install openssh-client")
    return path


def ssh_argv(endpoint: Endpoint) -> list[str]:
    """The ssh command line for ``endpoint`` (no password in it)."""
    policy = HOST_KEY_POLICIES.get(endpoint.host_key_policy)
    if policy is None:
        raise LoginError(
            f"unknown host key policy {endpoint.host_key_policy!r} "
            f"(known: {', '.join(HOST_KEY_POLICIES)})"
        )
    options = {
        "UserKnownHostsFile": str(endpoint.known_hosts),
        "GlobalKnownHostsFile": "/dev/null",
        "StrictHostKeyChecking": policy,
        "HashKnownHosts": "no",
        "UpdateHostKeys": "no",
        "CheckHostIP": "no",
        "PreferredAuthentications": "password,keyboard-interactive",
        "PubkeyAuthentication": "no",
        "IdentityAgent": "none",
        "NumberOfPasswordPrompts": "1",
        "ConnectTimeout": str(max(1, round(endpoint.login_timeout))),
        "ServerAliveInterval": str(SERVER_ALIVE_INTERVAL),
        "ServerAliveCountMax": str(SERVER_ALIVE_COUNT),
        "ControlMaster": "no",
        "ControlPath": "none",
        "LogLevel": "ERROR",
    }
    if endpoint.proxy:  # run by ssh through /bin/sh; "%" would be one of ssh's tokens
        options["ProxyCommand"] = shlex.join(endpoint.proxy).replace("%", "%%")
    argv = [ssh_binary(), "-F", "/dev/null", "-T", "-x", "-a", "-e", "none"]
    for key, value in options.items():
        argv += ["-o", f"{key}={value}"]
    argv += ["-p", str(endpoint.port), "-l", endpoint.username, "-s", "--", endpoint.host, "sftp"]
    return argv


class SshSftp:
    """An ``ssh -s sftp`` process and the SFTP client on its pipes.

    Use as a context manager: ``with SshSftp.start(endpoint, ...) as conn:
    conn.sftp.request(...)``.  Leaving it closes the pipes and waits briefly for
    ssh; an error while inside kills ssh at once.
    """

    def __init__(self, proc: subprocess.Popen[bytes], sftp: SftpClient, label: str) -> None:
        self.proc = proc
        self.sftp = sftp
        self.label = label
        self.stderr = bytearray()

    @classmethod
    def start(
        cls, endpoint: Endpoint, stall_timeout: float, deadline: float, label: str
    ) -> SshSftp:
        """Run ssh, log in and finish the SFTP handshake.

        :raises LoginError: (a subclass where the cause is known) the guest was not
            reached, refused the password, or its host key is not trusted.
        """
        argv = ssh_argv(endpoint)
        endpoint.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        endpoint.known_hosts.touch(mode=0o600, exist_ok=True)
        secrets = Path(tempfile.mkdtemp(prefix="virtlib-askpass-"))
        try:
            fifo = secrets / "password"
            os.mkfifo(fifo, 0o600)
            askpass = secrets / "askpass"
            askpass.write_text(
                f"#!/bin/sh\nIFS= read -r line < {shlex.quote(str(fifo))} && "
                'printf "%s\\n" "$line"\n'
            )
            askpass.chmod(0o700)
            # Opened read-write: never blocks, and the line waits in the FIFO for the reader.
            feed = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
            try:
                os.write(feed, endpoint.password.encode() + b"\n")
                env = {k: v for k, v in os.environ.items() if not k.startswith("SSH_")}
                env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY="")
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=env,
                    start_new_session=True,  # no terminal: the password comes from askpass
                )
                return cls._handshake(proc, endpoint, stall_timeout, deadline, label)
            finally:
                os.close(feed)
        finally:
            shutil.rmtree(secrets, ignore_errors=True)

    @classmethod
    def _handshake(
        cls,
        proc: subprocess.Popen[bytes],
        endpoint: Endpoint,
        stall_timeout: float,
        deadline: float,
        label: str,
    ) -> SshSftp:
        if proc.stdin is None or proc.stdout is None or proc.stderr is None:
            raise LoginError(f"{label}: ssh started without pipes")
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            os.set_blocking(stream.fileno(), False)
        login_deadline = min(deadline, time.monotonic() + endpoint.login_timeout)
        sftp = SftpClient(
            proc.stdin.fileno(),
            proc.stdout.fileno(),
            stall_timeout=endpoint.login_timeout,
            deadline=login_deadline,
            other_fds=(proc.stderr.fileno(),),
        )
        conn = cls(proc, sftp, label)
        sftp.on_other = conn.drain_stderr
        try:
            sftp.handshake()
        except SftpConnectionError:
            waited_out = proc.poll() is None  # still running: it never got there in time
            conn.kill()
            raise conn.login_error(endpoint, waited_out) from None
        except BaseException:
            conn.kill()
            raise
        sftp.stall_timeout = stall_timeout
        sftp.deadline = deadline
        return conn

    def drain_stderr(self, fd: int) -> None:
        with contextlib.suppress(BlockingIOError):
            data = os.read(fd, 4096)
            if not data:  # ssh is exiting; its stdout will tell the client
                self.sftp.unwatch(fd)
            elif len(self.stderr) < _STDERR_MAX:
                self.stderr += data

    def stderr_text(self) -> str:
        """What ssh said on stderr (read to the end once it exited)."""
        if self.proc.stderr is not None and self.proc.poll() is not None:
            with contextlib.suppress(OSError, ValueError):
                os.set_blocking(self.proc.stderr.fileno(), True)
                self.stderr += self.proc.stderr.read(_STDERR_MAX) or b""
        return self.stderr.decode("utf-8", "replace").strip()

    def login_error(self, endpoint: Endpoint, waited_out: bool) -> LoginError:
        """The LoginError for an ssh that ended (or was killed) before SFTP started."""
        target = f"{endpoint.username}@{endpoint.host}:{endpoint.port}"
        status = None if waited_out else self.proc.returncode
        where = f"SSH to {target} ({self.label})"
        return classify_login_failure(self.stderr_text(), status, where, endpoint)

    def kill(self) -> None:
        """End ssh now (its whole session) and reap it."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._close_pipes()

    def close(self, timeout: float = 5) -> None:
        """End the SFTP session cleanly (EOF to the server), then reap ssh."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._close_pipes()

    def _close_pipes(self) -> None:
        self.sftp.close()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def __enter__(self) -> SshSftp:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.close()
        else:
            self.kill()


def classify_login_failure(
    said: str, status: int | None, where: str, endpoint: Endpoint
) -> LoginError:
    """Map what ssh printed before giving up to the LoginError family.

    OpenSSH has no error codes beyond exit status 255; its messages for these
    cases have been the same for decades, and ``LogLevel=ERROR`` keeps the rest out.
    """
    text = said.lower()
    if "host identification has changed" in text or "host key for" in text:
        return LoginHostKeyError(
            f"{where}: the SSH host key changed (known_hosts {endpoint.known_hosts})", said
        )
    if "host key verification failed" in text or "host key is known" in text:
        return LoginHostKeyError(
            f"{where}: the host key is not in {endpoint.known_hosts} "
            f"(policy {endpoint.host_key_policy})",
            said,
        )
    if "permission denied" in text:
        return LoginAuthenticationError(f"{where}: authentication failed", said)
    if status is None or "timed out" in text or "not responding" in text:
        return LoginTimeoutError(f"{where}: {said or 'no SFTP session'}", endpoint.login_timeout)
    return LoginProcessTerminatedError(status, f"{where}: {said or 'ssh ended'}")
