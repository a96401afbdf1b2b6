"""Copying files and directories to and from the guest over SFTP (paramiko)."""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import paramiko

from virtlib.errors import TransferError
from virtlib.sessions import ssh

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """Where and how to connect for a transfer."""

    host: str
    port: int
    username: str
    password: str = field(repr=False)
    known_hosts: Path
    host_key_policy: str
    timeout: float


def _open(target: Target) -> tuple[paramiko.SSHClient, paramiko.SFTPClient]:
    client = ssh.connect(
        target.host,
        target.port,
        target.username,
        target.password,
        min(target.timeout, 30),
        target.known_hosts,
        target.host_key_policy,
    )
    try:
        sftp = client.open_sftp()
    except (paramiko.SSHException, OSError) as exc:
        client.close()
        raise TransferError(f"cannot start SFTP on {target.host}:{target.port}: {exc}") from None
    channel = sftp.get_channel()
    if channel is not None:
        channel.settimeout(target.timeout)
    return client, sftp


def _remote_isdir(sftp: paramiko.SFTPClient, path: str) -> bool | None:
    """True/False for an existing directory/file, None when the path does not exist."""
    try:
        mode = sftp.stat(path).st_mode
    except FileNotFoundError:
        return None
    return stat.S_ISDIR(mode or 0)


def copy_files_to(target: Target, host_path: str, guest_path: str, verbose: bool = False) -> None:
    """Copy a file or a directory tree to the guest (like ``scp -r``).

    :raises TransferError: the host path does not exist, or the guest refused a write.
    """
    source = Path(host_path)
    if not source.exists():
        raise TransferError("no such file or directory on the host", host_path)
    client, sftp = _open(target)
    try:
        dest = guest_path
        if _remote_isdir(sftp, guest_path):
            dest = str(PurePosixPath(guest_path) / source.name)
        if source.is_dir():
            _put_tree(sftp, source, dest, verbose)
        else:
            _put_file(sftp, source, dest, verbose)
    finally:
        sftp.close()
        client.close()


def _put_file(sftp: paramiko.SFTPClient, source: Path, dest: str, verbose: bool) -> None:
    try:
        sftp.put(str(source), dest)
        sftp.chmod(dest, stat.S_IMODE(source.stat().st_mode))
    except OSError as exc:
        raise TransferError(f"cannot write {dest} on the guest: {exc}", dest) from None
    if verbose:
        log.debug("copied %s -> guest:%s (%d bytes)", source, dest, source.stat().st_size)


def _put_tree(sftp: paramiko.SFTPClient, source: Path, dest: str, verbose: bool) -> None:
    for root, dirs, files in os.walk(source):
        rel = Path(root).relative_to(source)
        remote_root = str(PurePosixPath(dest) / rel.as_posix()) if str(rel) != "." else dest
        if _remote_isdir(sftp, remote_root) is None:
            try:
                sftp.mkdir(remote_root)
            except OSError as exc:
                raise TransferError(
                    f"cannot create {remote_root} on the guest: {exc}", remote_root
                ) from None
        for name in sorted(files):
            _put_file(sftp, Path(root) / name, str(PurePosixPath(remote_root) / name), verbose)
        dirs.sort()


def copy_files_from(target: Target, guest_path: str, host_path: str, verbose: bool = False) -> None:
    """Copy a file or a directory tree from the guest.

    :raises TransferError: the guest path does not exist, or the host path cannot be written.
    """
    client, sftp = _open(target)
    try:
        kind = _remote_isdir(sftp, guest_path)
        if kind is None:
            raise TransferError("no such file or directory on the guest", guest_path)
        dest = Path(host_path)
        if dest.is_dir():
            dest = dest / PurePosixPath(guest_path).name
        if kind:
            _get_tree(sftp, guest_path, dest, verbose)
        else:
            _get_file(sftp, guest_path, dest, verbose)
    finally:
        sftp.close()
        client.close()


def _get_file(sftp: paramiko.SFTPClient, source: str, dest: Path, verbose: bool) -> None:
    try:
        sftp.get(source, str(dest))
        mode = sftp.stat(source).st_mode
        if mode is not None:
            dest.chmod(stat.S_IMODE(mode))
    except OSError as exc:
        dest.unlink(missing_ok=True)
        raise TransferError(f"cannot copy guest:{source} to {dest}: {exc}", source) from None
    if verbose:
        log.debug("copied guest:%s -> %s (%d bytes)", source, dest, dest.stat().st_size)


def _get_tree(sftp: paramiko.SFTPClient, source: str, dest: Path, verbose: bool) -> None:
    try:
        dest.mkdir(exist_ok=True)
    except OSError as exc:
        raise TransferError(f"cannot create {dest}: {exc}", str(dest)) from None
    for entry in sorted(sftp.listdir_attr(source), key=lambda e: e.filename):
        child = str(PurePosixPath(source) / entry.filename)
        if stat.S_ISDIR(entry.st_mode or 0):
            _get_tree(sftp, child, dest / entry.filename, verbose)
        else:
            _get_file(sftp, child, dest / entry.filename, verbose)
