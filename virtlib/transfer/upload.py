"""Host -> guest: walk the host tree first, then send it with every request pipelined.

The walk follows symbolic links (like ``scp -r``) and refuses, before anything
is sent, what cannot be copied faithfully: a link that points nowhere, a
directory link that leads back into the tree (a loop), and files that are not
regular files or directories (FIFOs, sockets, devices).

Sending: directories level by level (one round trip per level), then files.
Up to :data:`FILES_AHEAD` files are opened ahead, and each file's writes, its
mode (``FSETSTAT``, exact whatever the guest's umask) and its close go out
without waiting; replies are checked in order as the byte budget needs room.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from virtlib.errors import TransferError
from virtlib.transfer import sftp as fx
from virtlib.transfer.job import BUDGET, FILES_AHEAD, Job


@dataclass(frozen=True)
class HostFile:
    source: Path
    rel: str  # "" for the top of the copy
    size: int
    mode: int


@dataclass(frozen=True)
class HostDir:
    rel: str
    mode: int


@dataclass
class HostTree:
    """What a copy to the guest will send, found before connecting."""

    dirs: list[HostDir]
    files: list[HostFile]

    @property
    def is_dir(self) -> bool:
        return bool(self.dirs)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file or directory"


def walk(source: Path, label: str) -> HostTree:
    """The files and directories under ``source``, links followed.

    :raises TransferError: a dangling link, a link loop, a special file or an
        unreadable directory (nothing has been copied yet).
    """
    try:
        top = source.stat()
    except FileNotFoundError:
        raise TransferError(
            f"{label}: no such file or directory on the host", str(source)
        ) from None
    except OSError as exc:
        raise TransferError(f"{label}: cannot read ({exc.strerror})", str(source)) from None
    tree = HostTree([], [])
    if stat.S_ISREG(top.st_mode):
        tree.files.append(HostFile(source, "", top.st_size, stat.S_IMODE(top.st_mode)))
    elif stat.S_ISDIR(top.st_mode):
        _walk_dir(source, "", top, frozenset({(top.st_dev, top.st_ino)}), tree, label)
    else:
        raise TransferError(f"{label}: refusing to copy {_kind(top.st_mode)}", str(source))
    return tree


def _walk_dir(
    path: Path,
    rel: str,
    st: os.stat_result,
    ancestors: frozenset[tuple[int, int]],
    tree: HostTree,
    label: str,
) -> None:
    tree.dirs.append(HostDir(rel, stat.S_IMODE(st.st_mode)))
    try:
        names = sorted(entry.name for entry in os.scandir(path))
    except OSError as exc:
        raise TransferError(
            f"{label}: cannot read the directory ({exc.strerror})", str(path)
        ) from None
    for name in names:
        child = path / name
        child_rel = posixpath.join(rel, name) if rel else name
        try:
            cst = child.stat()
        except FileNotFoundError:
            raise TransferError(
                f"{label}: refusing to copy a symbolic link that points nowhere", str(child)
            ) from None
        except OSError as exc:
            raise TransferError(f"{label}: cannot read ({exc.strerror})", str(child)) from None
        if stat.S_ISDIR(cst.st_mode):
            key = (cst.st_dev, cst.st_ino)
            if key in ancestors:
                raise TransferError(
                    f"{label}: refusing to copy a symbolic link loop (it leads back to "
                    f"a directory being copied)",
                    str(child),
                )
            _walk_dir(child, child_rel, cst, ancestors | {key}, tree, label)
        elif stat.S_ISREG(cst.st_mode):
            tree.files.append(HostFile(child, child_rel, cst.st_size, stat.S_IMODE(cst.st_mode)))
        else:
            raise TransferError(f"{label}: refusing to copy {_kind(cst.st_mode)}", str(child))


def _remote(dest: str, rel: str) -> str:
    return posixpath.join(dest, rel) if rel else dest


def send(job: Job, tree: HostTree, dest: str) -> None:
    """Create ``tree`` at ``dest`` on the guest (directories merge with existing ones)."""
    job.meter.plan(tree.size, len(tree.files))
    _make_dirs(job, tree.dirs, dest)
    _send_files(job, tree.files, dest)


def _make_dirs(job: Job, dirs: list[HostDir], dest: str) -> None:
    sftp = job.sftp
    levels: dict[int, list[HostDir]] = {}
    for d in dirs:
        levels.setdefault(d.rel.count("/") + 1 if d.rel else 0, []).append(d)
    for depth in sorted(levels):
        made = [
            (d, sftp.mkdir(_remote(dest, d.rel), fx.Attrs(permissions=d.mode)))
            for d in levels[depth]
        ]
        failed: list[tuple[HostDir, fx.SftpStatusError, fx.Request]] = []
        for d, req in made:
            try:
                sftp.check(req)
            except fx.SftpStatusError as exc:
                failed.append((d, exc, sftp.stat(_remote(dest, d.rel))))
        for d, refusal, probe in failed:  # an existing directory is fine: the copy merges into it
            try:
                if sftp.attrs(probe).is_dir:
                    continue
            except fx.SftpStatusError:
                pass
            raise job.error(
                "cannot create the directory on the guest", _remote(dest, d.rel), refusal
            )


class _Sent:
    """A request whose reply is still to be checked, and what it was for."""

    __slots__ = ("file", "kind", "req")

    def __init__(self, file: HostFile, kind: str, req: fx.Request) -> None:
        self.file, self.kind, self.req = file, kind, req


def _send_files(job: Job, files: list[HostFile], dest: str) -> None:
    sftp = job.sftp
    opening: deque[tuple[HostFile, fx.Request]] = deque()
    sent: deque[_Sent] = deque()
    in_flight = 0

    def retire() -> None:
        nonlocal in_flight
        item = sent.popleft()
        try:
            sftp.check(item.req)
        except fx.SftpStatusError as exc:
            what = "cannot set the mode of" if item.kind == "mode" else "cannot write"
            raise job.error(
                f"{what} the file on the guest", _remote(dest, item.file.rel), exc
            ) from None
        if item.kind == "write":
            in_flight -= item.req.size
            job.meter.add(item.req.size)
        elif item.kind == "close":
            job.meter.file_done(
                f"{item.file.source} -> {_remote(dest, item.file.rel)}", item.file.size
            )

    def start(file: HostFile, req: fx.Request) -> None:
        nonlocal in_flight
        path = _remote(dest, file.rel)
        try:
            handle = sftp.handle(req)
        except fx.SftpStatusError as exc:
            raise job.error("cannot create the file on the guest", path, exc) from None
        try:
            with file.source.open("rb") as local:
                offset = 0
                while chunk := local.read(sftp.write_size):
                    while sent and in_flight + len(chunk) > BUDGET:
                        retire()
                    sent.append(_Sent(file, "write", sftp.write(handle, offset, chunk)))
                    in_flight += len(chunk)
                    offset += len(chunk)
        except OSError as exc:
            raise job.error("cannot read the file on the host", str(file.source), exc) from None
        sent.append(_Sent(file, "mode", sftp.fsetstat(handle, fx.Attrs(permissions=file.mode))))
        sent.append(_Sent(file, "close", sftp.close_handle(handle)))

    flags = fx.O_WRITE | fx.O_CREAT | fx.O_TRUNC
    for file in files:
        opening.append(
            (file, sftp.open(_remote(dest, file.rel), flags, fx.Attrs(permissions=file.mode)))
        )
        if len(opening) >= FILES_AHEAD:
            start(*opening.popleft())
        while len(sent) > 4 * FILES_AHEAD:
            retire()
    while opening:
        start(*opening.popleft())
    while sent:
        retire()
