"""Copying files and directory trees to and from a guest over SFTP.

The copy runs virtlib's own pipelined SFTP client (:mod:`.sftp`) on the pipes
of OpenSSH's ``ssh -s sftp`` (:mod:`.sshproc`: why OpenSSH, host keys, the
password), one connection per copy.  :mod:`.upload` and :mod:`.download`
walk the tree first (so nothing is copied when something cannot be) and then
keep many requests in flight; :mod:`.progress` reports how far it got.

What gets copied:

- a file to a file path, or into a directory that exists (keeping its name);
- a directory tree, recursively (like ``scp -r``), merging into directories
  that exist; file modes are copied exactly (not filtered by the umask);
- symbolic links are followed: a link to a file is copied as a file with the
  target's content and mode, a link to a directory as that directory.  A link
  that points nowhere, a directory link that leads back into the tree being
  copied (a loop), and FIFOs, sockets and devices are refused with
  :class:`~virtlib.errors.TransferError` before anything is copied.

A guest on a remote hypervisor host (a VM on an SSH libvirt URI) is reached through
that host: the copy's ssh gets ``ssh -W`` to the host as its ProxyCommand
(:func:`virtlib.sessions.tunnel.proxy_argv`), so both hops are OpenSSH.

Failures: :class:`~virtlib.errors.LoginError` (or a subclass) when the guest
cannot be reached or refuses the login or its host key is not trusted;
:class:`~virtlib.errors.TransferError` naming the VM and the path otherwise,
including a copy cut short (the guest rebooted, or said nothing for the
target's ``timeout`` seconds: a stall timeout, so a long copy that moves
never times out).  A failed copy from the guest
removes the host files it had started.
"""

from __future__ import annotations

import math
import posixpath
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from virtlib.errors import TransferError
from virtlib.sessions import tunnel
from virtlib.sessions.tunnel import JumpHost
from virtlib.transfer import download, upload
from virtlib.transfer.job import Job
from virtlib.transfer.progress import Meter, TransferProgress, watching
from virtlib.transfer.sftp import SftpConnectionError, SftpStatusError
from virtlib.transfer.sshproc import Endpoint, SshSftp

__all__ = ["Target", "TransferProgress", "copy_files_from", "copy_files_to", "watching"]

LOGIN_TIMEOUT = 30.0  # at most this long to log in, whatever the copy's timeout


@dataclass(frozen=True)
class Target:
    """Where and how to connect for a transfer.

    ``timeout``: seconds the copy may stall (no answer from the guest) before it
    fails; logging in gets at most :data:`LOGIN_TIMEOUT` of it.  ``vm`` names
    the VM in messages.
    """

    host: str
    port: int
    username: str
    password: str = field(repr=False)
    known_hosts: Path
    host_key_policy: str
    timeout: float
    vm: str = ""
    #: ``host:port`` is on this hypervisor host's loopback: the copy's ssh goes through it.
    via: JumpHost | None = None

    @property
    def label(self) -> str:
        return f"VM {self.vm}" if self.vm else f"guest {self.host}:{self.port}"


def _connect(target: Target) -> SshSftp:
    login_timeout = min(target.timeout, LOGIN_TIMEOUT)
    proxy: tuple[str, ...] = ()
    if target.via is not None:
        tunnel.ensure_reachable(target.via, login_timeout)
        proxy = tuple(tunnel.proxy_argv(target.via, target.host, target.port, login_timeout))
    endpoint = Endpoint(
        target.host,
        target.port,
        target.username,
        target.password,
        target.known_hosts,
        target.host_key_policy,
        login_timeout,
        proxy,
    )
    return SshSftp.start(endpoint, target.timeout, math.inf, target.label)


def _interrupted(
    conn: SshSftp, target: Target, exc: SftpConnectionError, path: str
) -> TransferError:
    conn.kill()
    said = conn.stderr_text()
    detail = f" (ssh: {said})" if said else ""
    return TransferError(f"{target.label}: the copy was interrupted: {exc}{detail}", path)


def copy_files_to(target: Target, host_path: str, guest_path: str, verbose: bool = False) -> None:
    """Copy a file or a directory tree to the guest (like ``scp -r``).

    :param verbose: log progress (bytes, rate) at INFO.
    :raises TransferError: the host path does not exist or cannot be copied (see the
        module's docstring), the guest refused a write, or the copy was cut short.
    :raises LoginError: the guest cannot be reached or logged into.
    """
    source = Path(host_path)
    tree = upload.walk(source, target.label)
    meter = Meter(f"{target.label}: {host_path} -> {guest_path}", verbose)
    with _connect(target) as conn:
        job = Job(conn.sftp, target.label, meter)
        try:
            dest = guest_path
            if _remote_is_dir(job, guest_path):
                dest = posixpath.join(guest_path, source.name or source.resolve().name)
            upload.send(job, tree, dest)
            conn.sftp.flush()
        except SftpConnectionError as exc:
            raise _interrupted(conn, target, exc, guest_path) from None
    meter.finish()


def copy_files_from(target: Target, guest_path: str, host_path: str, verbose: bool = False) -> None:
    """Copy a file or a directory tree from the guest.

    :param verbose: log progress (bytes, rate) at INFO.
    :raises TransferError: the guest path does not exist or cannot be copied (see the
        module's docstring), a host path cannot be written, or the copy was cut short.
    :raises LoginError: the guest cannot be reached or logged into.
    """
    meter = Meter(f"{target.label}: {guest_path} -> {host_path}", verbose)
    with _connect(target) as conn:
        job = Job(conn.sftp, target.label, meter)
        try:
            tree = download.walk(job, guest_path)
            dest = Path(host_path)
            if dest.is_dir():
                dest = dest / (PurePosixPath(guest_path).name or "root")
            download.fetch(job, tree, dest)
        except SftpConnectionError as exc:
            raise _interrupted(conn, target, exc, guest_path) from None
    meter.finish()


def _remote_is_dir(job: Job, path: str) -> bool:
    try:
        return job.sftp.attrs(job.sftp.stat(path)).is_dir
    except SftpStatusError:
        return False
