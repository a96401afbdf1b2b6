"""Guest -> host: walk the guest tree first, then fetch it with every request pipelined.

The walk follows symbolic links like :mod:`virtlib.transfer.upload` does on
the host, with the same refusals (a link that points nowhere, a directory
link back into the tree, special files), all before a host file is written.
The guest's SFTP has no inode numbers, so loops are found by real path
(``REALPATH`` of each directory link against the directories above it).

Fetching: up to :data:`FILES_AHEAD` files are opened ahead; each file's reads
cover its size at once (within the byte budget) plus one read at the end that
catches a file that grew; short reads are re-requested.  Data is written at
its offset as it comes.  A failed copy removes the host files it had started.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from virtlib.transfer import sftp as fx
from virtlib.transfer.job import BUDGET, FILES_AHEAD, Job


@dataclass(frozen=True)
class GuestFile:
    source: str
    rel: str
    size: int
    mode: int


@dataclass
class GuestTree:
    dirs: list[tuple[str, int]] = field(default_factory=list)  # (rel, mode), parents first
    files: list[GuestFile] = field(default_factory=list)

    @property
    def is_dir(self) -> bool:
        return bool(self.dirs)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class _Dir:
    path: str
    rel: str
    real: str  # its real path on the guest, for loop checks


def _inside(real: str, ancestor: str) -> bool:
    return real == ancestor or real.startswith(ancestor.rstrip("/") + "/")


def walk(job: Job, source: str) -> GuestTree:
    """The files and directories under ``source`` on the guest, links followed.

    :raises TransferError: no such path, a dangling link, a loop, a special file.
    """
    sftp = job.sftp
    probe = sftp.stat(source)
    try:
        top = sftp.attrs(probe)
    except fx.SftpStatusError as exc:
        if exc.code == fx.NO_SUCH_FILE:
            raise job.error("no such file or directory on the guest", source) from None
        raise job.error("cannot read on the guest", source, exc) from None
    tree = GuestTree()
    if top.is_regular:
        tree.files.append(GuestFile(source, "", top.size or 0, (top.permissions or 0) & 0o7777))
        return tree
    if not top.is_dir:
        raise job.error("refusing to copy a file that is not a regular file or directory", source)
    root = _Dir(source, "", sftp.name(sftp.realpath(source)))
    tree.dirs.append(("", (top.permissions or 0) & 0o7777))
    level = [root]
    while level:
        opened = [(d, sftp.opendir(d.path)) for d in level]
        level = []
        for d, req in opened:
            level += _list(job, d, req, tree)
    return tree


def _list(job: Job, d: _Dir, req: fx.Request, tree: GuestTree) -> list[_Dir]:
    """Read one directory into ``tree``; returns its subdirectories."""
    sftp = job.sftp
    try:
        handle = sftp.handle(req)
        entries: list[tuple[str, fx.Attrs]] = []
        while (batch := sftp.names(sftp.readdir(handle))) is not None:
            entries += batch
    except fx.SftpStatusError as exc:
        raise job.error("cannot read the directory on the guest", d.path, exc) from None
    closing = sftp.close_handle(handle)
    subdirs: list[_Dir] = []
    links: list[tuple[str, str, fx.Request, fx.Request]] = []
    for name, attrs in sorted(entries, key=lambda e: e[0]):
        if name in (".", ".."):
            continue
        path = posixpath.join(d.path, name)
        rel = posixpath.join(d.rel, name) if d.rel else name
        if attrs.is_link:
            links.append((path, rel, sftp.stat(path), sftp.realpath(path)))
        else:
            _add(job, tree, subdirs, d, path, rel, attrs, posixpath.join(d.real, name))
    for path, rel, stat_req, real_req in links:
        try:
            attrs = sftp.attrs(stat_req)
            real = sftp.name(real_req)
        except fx.SftpStatusError as exc:
            if exc.code == fx.NO_SUCH_FILE:
                raise job.error(
                    "refusing to copy a symbolic link that points nowhere", path
                ) from None
            raise job.error("cannot read on the guest", path, exc) from None
        _add(job, tree, subdirs, d, path, rel, attrs, real)
    with contextlib.suppress(fx.SftpStatusError):
        sftp.check(closing)
    return subdirs


def _add(
    job: Job,
    tree: GuestTree,
    subdirs: list[_Dir],
    parent: _Dir,
    path: str,
    rel: str,
    attrs: fx.Attrs,
    real: str,
) -> None:
    mode = (attrs.permissions or 0) & 0o7777
    if attrs.is_dir:
        if _inside(parent.real, real):
            raise job.error(
                "refusing to copy a symbolic link loop (it leads back to a directory being copied)",
                path,
            )
        tree.dirs.append((rel, mode))
        subdirs.append(_Dir(path, rel, real))
    elif attrs.is_regular:
        tree.files.append(GuestFile(path, rel, attrs.size or 0, mode))
    else:
        raise job.error("refusing to copy a file that is not a regular file or directory", path)


class _Sink:
    """A host file being written."""

    __slots__ = ("fd", "file", "finished", "handle", "outstanding", "path")

    def __init__(self, file: GuestFile, path: Path, fd: int, handle: bytes) -> None:
        self.file, self.path, self.fd, self.handle = file, path, fd, handle
        self.outstanding = 0
        self.finished = False


def fetch(job: Job, tree: GuestTree, dest: Path) -> None:
    """Write ``tree`` at ``dest`` on the host; on failure remove the files it started."""
    job.meter.plan(tree.size, len(tree.files))
    for rel, _mode in tree.dirs:
        path = dest / rel if rel else dest
        try:
            path.mkdir(exist_ok=True)
        except OSError as exc:
            raise job.error("cannot create the directory on the host", str(path), exc) from None
    sinks: list[_Sink] = []
    try:
        _fetch_files(job, tree.files, dest, sinks)
    except BaseException:
        for sink in sinks:
            if not sink.finished:
                with contextlib.suppress(OSError):
                    os.close(sink.fd)
                sink.path.unlink(missing_ok=True)
        raise


def _fetch_files(job: Job, files: list[GuestFile], dest: Path, sinks: list[_Sink]) -> None:
    fetcher = _Fetcher(job, dest, sinks)
    opening: deque[tuple[GuestFile, fx.Request]] = deque()
    for file in files:
        opening.append((file, job.sftp.open(file.source, fx.O_READ)))
        if len(opening) >= FILES_AHEAD:
            fetcher.start(*opening.popleft())
    while opening:
        fetcher.start(*opening.popleft())
    fetcher.drain()


class _Fetcher:
    """The reads in flight, and what to do with each reply."""

    def __init__(self, job: Job, dest: Path, sinks: list[_Sink]) -> None:
        self.job, self.sftp, self.dest, self.sinks = job, job.sftp, dest, sinks
        self.reads: deque[tuple[_Sink, fx.Request, int, int]] = deque()
        self.closing: list[fx.Request] = []
        self.in_flight = 0

    def start(self, file: GuestFile, req: fx.Request) -> None:
        """The file is open on the guest: create the host file, ask for all its bytes."""
        try:
            handle = self.sftp.handle(req)
        except fx.SftpStatusError as exc:
            raise self.job.error("cannot read the file on the guest", file.source, exc) from None
        path = self.dest / file.rel if file.rel else self.dest
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise self.job.error("cannot write the file on the host", str(path), exc) from None
        sink = _Sink(file, path, fd, handle)
        self.sinks.append(sink)
        offset = 0
        while offset < file.size:
            length = min(self.sftp.read_size, file.size - offset)
            while self.reads and self.in_flight + length > BUDGET:
                self.retire()
            self.ask(sink, offset, length)
            offset += length
        self.ask(sink, file.size, self.sftp.read_size)  # end of file expected here

    def ask(self, sink: _Sink, offset: int, length: int) -> None:
        self.reads.append((sink, self.sftp.read(sink.handle, offset, length), offset, length))
        sink.outstanding += 1
        self.in_flight += length

    def retire(self) -> None:
        """Take the oldest read's reply: write its data, ask again where it fell short."""
        sink, req, offset, length = self.reads.popleft()
        self.in_flight -= length
        sink.outstanding -= 1
        try:
            data = self.sftp.data(req)
        except fx.SftpStatusError as exc:
            raise self.job.error(
                "cannot read the file on the guest", sink.file.source, exc
            ) from None
        if data:
            try:
                os.pwrite(sink.fd, data, offset)
            except OSError as exc:
                raise self.job.error(
                    "cannot write the file on the host", str(sink.path), exc
                ) from None
            self.job.meter.add(len(data))
            if len(data) < length:  # a short read: ask for the rest
                self.ask(sink, offset + len(data), length - len(data))
            elif offset >= sink.file.size:  # the file grew since the walk: read on
                self.ask(sink, offset + len(data), self.sftp.read_size)
        if sink.outstanding == 0:
            self.finish(sink)

    def finish(self, sink: _Sink) -> None:
        self.closing.append(self.sftp.close_handle(sink.handle))
        try:
            os.fchmod(sink.fd, sink.file.mode)
        except OSError as exc:
            raise self.job.error(
                "cannot set the mode of the host file", str(sink.path), exc
            ) from None
        finally:
            os.close(sink.fd)
        sink.finished = True
        self.job.meter.file_done(f"{sink.file.source} -> {sink.path}", sink.file.size)

    def drain(self) -> None:
        while self.reads:
            self.retire()
        for req in self.closing:
            with contextlib.suppress(fx.SftpStatusError):
                self.sftp.check(req)
