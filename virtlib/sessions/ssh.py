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
    client = paramiko.SSHClient()
    if quiet:
        client.set_log_channel(RETRY_LOG_CHANNEL)
    if known_hosts.exists():
        client.load_host_keys(str(known_hosts))
    if host_key_policy == "accept-new":
        client.set_missing_host_key_policy(AcceptNewHostKeyPolicy(known_hosts))
    else:
        client.set_missing_host_key_policy(StrictHostKeyPolicy())
    target = f"{username}@{host}:{port}"
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
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise LoginHostKeyError(
            f"SSH host key of {host}:{port} changed (known_hosts {known_hosts}): {exc}"
        ) from None
    except UnknownHostKey as exc:
        client.close()
        raise LoginHostKeyError(f"SSH to {target}: {exc} ({known_hosts})") from None
    except paramiko.AuthenticationException as exc:
        # paramiko raises this class for refusals, but also for a slow server (its
        # auth_timeout) and for a connection that died mid-authentication: tell them apart.
        transport = client.get_transport()
        alive = transport is not None and transport.is_active()
        slow = time.monotonic() - started >= timeout
        client.close()
        if not alive:
            raise LoginProcessTerminatedError(None, f"SSH to {target}: {exc}") from None
        if slow:
            raise LoginTimeoutError(f"SSH to {target}: {exc}", timeout) from None
        raise LoginAuthenticationError(f"SSH authentication failed for {target}: {exc}") from None
    except TimeoutError as exc:
        client.close()
        raise LoginTimeoutError(f"SSH to {target}: {exc}", timeout) from None
    except (paramiko.SSHException, EOFError) as exc:
        client.close()
        if "banner" in str(exc).lower():  # paramiko has no class of its own for it
            raise LoginBannerTimeoutError(f"SSH to {target}: {exc}", banner_timeout) from None
        raise LoginError(f"SSH to {target} failed: {exc}") from None
    except OSError as exc:
        client.close()
        raise LoginProcessTerminatedError(None, f"SSH to {target}: {exc}") from None
    return client


def open_shell(client: paramiko.SSHClient) -> Any:
    """An interactive shell channel on a wide PTY (long commands do not wrap)."""
    return client.invoke_shell(term="dumb", width=4096, height=1000)
