"""SSH with paramiko: connections with an explicit host-key policy, and shell sessions.

Host keys are never accepted blindly.  Two policies exist:

- ``strict``: the key must already be in the known_hosts file;
- ``accept-new``: a host not in the file is trusted on first use and recorded
  there; a *changed* key is refused.  virtlib uses it with a per-VM
  known_hosts file that it creates empty for each VM it starts, so it only ever
  trusts the guest it just booted, never a host it did not make.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko

from virtlib.errors import (
    LoginAuthenticationError,
    LoginBannerTimeoutError,
    LoginError,
    LoginHostKeyError,
    LoginProcessTerminatedError,
    LoginTimeoutError,
)

log = logging.getLogger(__name__)
HOST_KEY_POLICIES = ("strict", "accept-new")


class UnknownHostKey(paramiko.SSHException):
    """Raised by the strict policy (mapped to LoginHostKeyError)."""


class StrictHostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Only keys already in known_hosts are trusted."""

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise UnknownHostKey(
            f"{key.get_name()} host key of {hostname} is not in known_hosts (policy strict)"
        )


class AcceptNewHostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Trust on first use, recorded in one known_hosts file (OpenSSH's ``accept-new``)."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        log.info(
            "accepting new %s host key of %s (policy accept-new, file %s)",
            key.get_name(),
            hostname,
            self.known_hosts,
        )
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        self.known_hosts.touch(mode=0o600, exist_ok=True)
        client.save_host_keys(str(self.known_hosts))


class _Demote(logging.Filter):
    """Everything paramiko says about a retried attempt is DEBUG: a guest still booting
    makes it log tracebacks ("Error reading SSH protocol banner") for a normal retry."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not logging.getLogger(RETRY_LOG_CHANNEL).isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


#: paramiko's log channel for attempts that will be retried (quiet below WARNING).
RETRY_LOG_CHANNEL = "virtlib.sessions.ssh.retry"
logging.getLogger(RETRY_LOG_CHANNEL).addFilter(_Demote())


@dataclass(frozen=True)
class Target:
    """Whom an SSH login is for, and how its host key is checked."""

    host: str
    port: int
    username: str
    password: str = field(repr=False)
    known_hosts: Path
    host_key_policy: str = "accept-new"


def connect(
    host: str,
    port: int,
    username: str,
    password: str,
    timeout: float,
    known_hosts: Path,
    host_key_policy: str = "accept-new",
    banner_timeout: float | None = None,
    quiet: bool = False,
    sock: Any = None,
) -> paramiko.SSHClient:
    """An authenticated SSHClient; errors mapped to the LoginError family.

    ``banner_timeout`` (default ``timeout``) bounds the wait for the server's first
    line: a port forwarded by QEMU's user network accepts a connection even while
    the guest is down, so a retrying caller keeps it short.  ``quiet`` sends
    paramiko's own messages to DEBUG (for attempts that will be retried).  ``sock``
    is an open socket-like object to run over instead of connecting to ``host:port``
    (a channel through the VM's hypervisor host, :mod:`virtlib.sessions.tunnel`);
    ``host:port`` still names the guest for its host key.
    """
    if host_key_policy not in HOST_KEY_POLICIES:
        raise LoginError(f"unknown host key policy {host_key_policy!r}")
    client = _new_client(known_hosts, host_key_policy, quiet)
    started = time.monotonic()
    try:
        client.connect(
            host,
            port=port,
            username=username,
            password=password,
            timeout=timeout,
            banner_timeout=timeout if banner_timeout is None else min(banner_timeout, timeout),
            auth_timeout=timeout,
            look_for_keys=False,
            allow_agent=False,
            sock=sock,
        )
    except (paramiko.SSHException, EOFError, OSError) as exc:
        slow = time.monotonic() - started >= timeout
        transport = client.get_transport()
        alive = transport is not None and transport.is_active()
        client.close()
        target = Target(host, port, username, password, known_hosts, host_key_policy)
        raise _login_error(exc, target, timeout, banner_timeout, alive, slow) from None
    return client


def _new_client(known_hosts: Path, host_key_policy: str, quiet: bool) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    if quiet:
        client.set_log_channel(RETRY_LOG_CHANNEL)
    if known_hosts.exists():
        client.load_host_keys(str(known_hosts))
    if host_key_policy == "accept-new":
        client.set_missing_host_key_policy(AcceptNewHostKeyPolicy(known_hosts))
    else:
        client.set_missing_host_key_policy(StrictHostKeyPolicy())
    return client


def _login_error(
    exc: BaseException,
    target: Target,
    timeout: float,
    banner_timeout: float | None,
    alive: bool,
    slow: bool,
) -> LoginError:
    """The LoginError for what ``connect`` met; ``alive``: the transport still was,
    ``slow``: the whole timeout had passed."""
    where = f"{target.username}@{target.host}:{target.port}"
    if isinstance(exc, paramiko.BadHostKeyException):
        return LoginHostKeyError(
            f"SSH host key of {target.host}:{target.port} changed "
            f"(known_hosts {target.known_hosts}): {exc}"
        )
    if isinstance(exc, UnknownHostKey):
        return LoginHostKeyError(f"SSH to {where}: {exc} ({target.known_hosts})")
    if isinstance(exc, paramiko.AuthenticationException):
        # paramiko raises this class for refusals, but also for a slow server (its
        # auth_timeout) and for a connection that died mid-authentication: tell them apart.
        if not alive:
            return LoginProcessTerminatedError(None, f"SSH to {where}: {exc}")
        if slow:
            return LoginTimeoutError(f"SSH to {where}: {exc}", timeout)
        return LoginAuthenticationError(f"SSH authentication failed for {where}: {exc}")
    if isinstance(exc, TimeoutError):
        return LoginTimeoutError(f"SSH to {where}: {exc}", timeout)
    if isinstance(exc, (paramiko.SSHException, EOFError)):
        if "banner" in str(exc).lower():  # paramiko has no class of its own for it
            return LoginBannerTimeoutError(f"SSH to {where}: {exc}", banner_timeout)
        return LoginError(f"SSH to {where} failed: {exc}")
    return LoginProcessTerminatedError(None, f"SSH to {where}: {exc}")


def open_shell(client: paramiko.SSHClient) -> Any:
    """An interactive shell channel on a wide PTY (long commands do not wrap)."""
    return client.invoke_shell(term="dumb", width=4096, height=1000)
