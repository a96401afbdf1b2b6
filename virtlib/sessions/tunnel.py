"""Reaching a guest through its hypervisor host: SSH to the host, a channel to the guest's port.

A guest on user-mode networking is reached through ports QEMU forwards to
127.0.0.1 *of the host that runs it*.  For a VM on a remote libvirt host those
ports are on that host's loopback, which this machine cannot reach; but when the
libvirt URI goes over SSH (``qemu+ssh://``, ``qemu+libssh://``,
``qemu+libssh2://``), the same SSH server is there, and a ``direct-tcpip``
channel through it reaches ``127.0.0.1:<port>`` of that host.  The channel is
then the socket of the guest's own SSH session (paramiko over paramiko) or, for
``nc``, the stream itself.  Other remote transports (``qemu+tcp``, ``qemu+tls``)
have no such path: :class:`GuestRouteError` says what is needed.

The SSH connection to a host is made once per process and shared by every
channel to its guests (it is reopened when it died).  It follows the URI:
``user@host:port``, ``keyfile`` and ``known_hosts`` (libvirt's own parameters;
``known_hosts_verify=auto`` accepts a new key into that file, as libvirt does);
without them OpenSSH's defaults apply (``~/.ssh/config`` for ``qemu+ssh``, the
user's keys and agent, ``~/.ssh/known_hosts`` and ``/etc/ssh/ssh_known_hosts``).
The host key is always checked: an unknown or changed key is refused.
"""

from __future__ import annotations

import atexit
import contextlib
import getpass
import logging
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from virtlib.errors import (
    LoginAuthenticationError,
    LoginError,
    LoginHostKeyError,
    LoginProcessTerminatedError,
    LoginTimeoutError,
    VMAddressError,
    VMParamsError,
)
from virtlib.sessions.ssh import AcceptNewHostKeyPolicy, StrictHostKeyPolicy, UnknownHostKey

log = logging.getLogger(__name__)

#: libvirt transports that are SSH: their host runs an SSH server we may use too.
SSH_TRANSPORTS = ("ssh", "libssh", "libssh2")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "")
SYSTEM_KNOWN_HOSTS = Path("/etc/ssh/ssh_known_hosts")
KEEPALIVE_S = 15
CONNECT_TIMEOUT = 30.0


class GuestRouteError(VMAddressError):
    """The guest's address is on a remote host's loopback and the URI offers no way there."""


@dataclass(frozen=True)
class JumpHost:
    """The SSH server of a hypervisor host, as the VM's libvirt URI names it."""

    uri: str
    hostname: str
    port: int = 22
    username: str = ""
    keyfile: Path | None = None
    known_hosts: Path | None = None
    accept_new: bool = False

    @property
    def label(self) -> str:
        return f"{self.username}@{self.hostname}:{self.port}"

    @classmethod
    def of(cls, uri: str, vm: str = "") -> JumpHost | None:
        """The host to go through for guests of ``uri``; None when they are on this machine.

        :raises GuestRouteError: a remote URI whose transport is not SSH.
        :raises VMParamsError: ``known_hosts_verify=ignore`` (host keys are always checked).
        """
        parts = urllib.parse.urlsplit(uri)
        if (parts.hostname or "") in LOOPBACK_NAMES:
            return None
        transport = parts.scheme.partition("+")[2] or "tls"  # libvirt's default for a host
        if transport not in SSH_TRANSPORTS:
            raise GuestRouteError(
                f"VM {vm!r} runs on {uri}: its forwarded ports are on 127.0.0.1 of "
                f"{parts.hostname}, and the {transport!r} transport gives no way there. Use an "
                f"SSH URI for that host (qemu+ssh://, qemu+libssh2://: guests are reached "
                f"through the same SSH server), or a NIC on a network this machine reaches "
                f"(nettype = bridge)"
            )
        query = dict(urllib.parse.parse_qsl(parts.query))
        verify = query.get("known_hosts_verify", "normal")
        if verify not in ("normal", "auto"):
            raise VMParamsError(
                f"VM {vm!r}: URI {uri}: known_hosts_verify={verify!r} is not followed for "
                "reaching guests: virtlib checks host keys (normal, or auto to accept new ones)"
            )
        hostname, port, user = parts.hostname or "", parts.port, parts.username
        keyfile, known = query.get("keyfile"), query.get("known_hosts")
        if transport == "ssh":  # OpenSSH's ssh: its user configuration applies
            found = _ssh_config(hostname)
            hostname = found.get("hostname", hostname)
            port = port or _int(found.get("port"))
            user = user or found.get("user")
            keyfile = keyfile or _first(found.get("identityfile"))
            known = known or _first(found.get("userknownhostsfile"))
        return cls(
            uri=uri,
            hostname=hostname,
            port=port or 22,
            username=user or getpass.getuser(),
            keyfile=Path(keyfile).expanduser() if keyfile else None,
            known_hosts=Path(known).expanduser() if known else None,
            accept_new=verify == "auto",
        )


def _ssh_config(hostname: str) -> dict[str, Any]:
    path = Path("~/.ssh/config").expanduser()
    if not path.is_file():
        return {}
    return dict(paramiko.SSHConfig.from_path(str(path)).lookup(hostname))


def _first(value: object) -> str | None:
    if isinstance(value, list):
        return str(value[0]) if value else None
    return str(value) if value else None


def _int(value: object) -> int | None:
    return int(str(value)) if value else None


@dataclass(frozen=True)
class Route:
    """Where a guest port is: ``host:port``, reached directly or through ``via``."""

    host: str
    port: int
    via: JumpHost | None = None

    def open(self, timeout: float) -> Any:
        """A socket-like channel to ``host:port`` through ``via`` (None when direct).

        :raises LoginError: (subclasses) the hypervisor host refused or did not answer,
            or nothing listens at the guest's port there.
        """
        if self.via is None:
            return None
        return open_channel(self.via, self.host, self.port, timeout)


def route(uri: str, host: str, port: int, vm: str = "") -> Route:
    """How to reach guest address ``host:port`` of a VM on ``uri``: through the hypervisor
    host when the address is on that host's loopback (see the module docstring)."""
    if not _is_loopback(host):
        return Route(host, port)
    return Route(host, port, JumpHost.of(uri, vm))


def _is_loopback(host: str) -> bool:
    return host in LOOPBACK_NAMES or host.startswith("127.")


# --- OpenSSH through the host (file copies run OpenSSH's ssh) -------------------------------
def proxy_argv(jump: JumpHost, host: str, port: int, timeout: float) -> list[str]:
    """OpenSSH's ``ssh -W host:port`` through ``jump``: the ProxyCommand of a copy's ssh.

    The same host, user, key and host-key checks as the shared connection; keys only
    (``BatchMode``: it never asks for a password, nor reads the copy's askpass).
    """
    if jump.known_hosts is not None:
        known = {"UserKnownHostsFile": str(jump.known_hosts), "GlobalKnownHostsFile": "/dev/null"}
    else:
        known = {}  # OpenSSH's own: ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts
    strict = "accept-new" if jump.accept_new and jump.known_hosts is not None else "yes"
    keys = {"IdentitiesOnly": "yes", "IdentityAgent": "none"} if jump.keyfile else {}
    options = {
        **known,
        **keys,
        "StrictHostKeyChecking": strict,
        "BatchMode": "yes",
        "ConnectTimeout": str(max(1, round(min(timeout, CONNECT_TIMEOUT)))),
        "ServerAliveInterval": str(KEEPALIVE_S),
        "ControlMaster": "no",
        "ControlPath": "none",
        "LogLevel": "ERROR",
    }
    argv = ["ssh", "-F", "/dev/null", "-T", "-x", "-a"]
    for key, value in options.items():
        argv += ["-o", f"{key}={value}"]
    if jump.keyfile is not None:
        argv += ["-i", str(jump.keyfile)]
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return [*argv, "-p", str(jump.port), "-l", jump.username, "-W", target, "--", jump.hostname]


def ensure_reachable(jump: JumpHost, timeout: float) -> None:
    """Connect to ``jump`` (once per process) so that a refused or unknown host fails here
    with a clear LoginError, before a copy's ssh would say less."""
    _client(jump, timeout)


# --- the shared SSH connections to hypervisor hosts ------------------------------------------
_clients: dict[JumpHost, paramiko.SSHClient] = {}
_locks: dict[JumpHost, threading.Lock] = {}
_registry_lock = threading.Lock()


def open_channel(jump: JumpHost, host: str, port: int, timeout: float) -> Any:
    """A ``direct-tcpip`` channel to ``host:port`` as seen from ``jump``."""
    transport = _client(jump, timeout).get_transport()
    if transport is None:  # pragma: no cover - _client returns connected clients only
        raise LoginProcessTerminatedError(None, f"SSH to {jump.label}: no transport")
    try:
        return transport.open_channel(
            "direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=timeout
        )
    except paramiko.ChannelException as exc:
        raise LoginProcessTerminatedError(
            None, f"{jump.label} cannot reach {host}:{port}: {exc.text}"
        ) from None
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise LoginProcessTerminatedError(
            None, f"channel to {host}:{port} through {jump.label}: {exc}"
        ) from None


def _client(jump: JumpHost, timeout: float) -> paramiko.SSHClient:
    """The connected client for ``jump``, made (or remade, when its connection died) once."""
    with _registry_lock:
        lock = _locks.setdefault(jump, threading.Lock())
    with lock:
        client = _clients.get(jump)
        transport = client.get_transport() if client is not None else None
        if client is not None and transport is not None and transport.is_active():
            return client
        if client is not None:
            client.close()
        client = _connect(jump, min(timeout, CONNECT_TIMEOUT))
        _clients[jump] = client
        return client


def _connect(jump: JumpHost, timeout: float) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    if jump.known_hosts is not None:
        if jump.known_hosts.exists():
            client.load_host_keys(str(jump.known_hosts))
    else:
        with contextlib.suppress(OSError):
            client.load_system_host_keys()  # ~/.ssh/known_hosts
        if SYSTEM_KNOWN_HOSTS.is_file():
            client.load_system_host_keys(str(SYSTEM_KNOWN_HOSTS))
    if jump.accept_new and jump.known_hosts is not None:
        client.set_missing_host_key_policy(AcceptNewHostKeyPolicy(jump.known_hosts))
    else:
        client.set_missing_host_key_policy(StrictHostKeyPolicy())
    keyed = jump.keyfile is not None
    try:
        client.connect(
            jump.hostname,
            port=jump.port,
            username=jump.username,
            key_filename=str(jump.keyfile) if keyed else None,
            look_for_keys=not keyed,
            allow_agent=not keyed,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
    except Exception as exc:
        client.close()
        raise _login_error(jump, exc) from None
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(KEEPALIVE_S)
    log.debug("SSH to hypervisor host %s (for %s)", jump.label, jump.uri)
    return client


def _login_error(jump: JumpHost, exc: Exception) -> LoginError:
    known = jump.known_hosts or "~/.ssh/known_hosts"
    where = f"SSH to hypervisor host {jump.label} (from {jump.uri})"
    if isinstance(exc, paramiko.BadHostKeyException):
        return LoginHostKeyError(f"{where}: its host key changed (known_hosts {known})")
    if isinstance(exc, UnknownHostKey):
        return LoginHostKeyError(f"{where}: its host key is not in {known}")
    if isinstance(exc, paramiko.AuthenticationException):
        return LoginAuthenticationError(f"{where}: authentication failed: {exc}")
    if isinstance(exc, TimeoutError):
        return LoginTimeoutError(f"{where}: {exc}")
    return LoginProcessTerminatedError(None, f"{where}: {exc}")


def forget(uri: str) -> None:
    """Close the connection to the host of ``uri`` (it is going away on purpose)."""
    with _registry_lock:
        jumps = [jump for jump in _clients if jump.uri == uri]
    for jump in jumps:
        client = _clients.pop(jump, None)
        if client is not None:
            client.close()


@atexit.register
def _close_all() -> None:
    for client in list(_clients.values()):
        client.close()
    _clients.clear()
