"""Per-VM media: copy-on-write overlays over shared base images, and the cloud-init seed.

:func:`prepare` makes what one VM writes to and nobody else reads: a qcow2 overlay for
each disk with ``image_snapshot = yes`` (its backing file and format written explicitly
into it, so nothing is ever probed) and the NoCloud seed ISO when ``cloudinit = yes``.
They live in the VM's private media directory, ``<private base>-media/<name>-<instance>``
(beside the private base of :mod:`virtlib.workdir`, which stays closed to QEMU).  The
path follows from the VM's name and instance id alone, so :func:`planned` tells any
process (one that adopts the VM, one that compares designs) where they are, and they stay
while the VM runs even when the process that made them is gone.  :func:`remove` deletes
them.  The base images are opened read-only through the overlays and never written, so
one base serves any number of VMs at once (avocado-vt's ``image_snapshot``).

libvirt's QEMU runs as its own user (``libvirt-qemu`` on Debian, ``qemu`` on Fedora):
libvirt hands it the overlay and the seed (it changes their owner while the VM runs),
but QEMU must also be able to walk to them.  The directories stay closed to everyone
else: the media base and each media directory get that user's group with search
permission only (mode 0710), never read permission.  Base images are not relabelled
by libvirt (they are shared): they must be readable by QEMU as they are, e.g.
world-readable like virtlib's own.

Backend-neutral: nothing here knows libvirt; a backend maps :class:`PreparedMedia` to
its own disk definitions.
"""

from __future__ import annotations

import grp
import logging
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

from virtlib import cloudinit
from virtlib.errors import VMError, VMImageMissingError, VMParamsError
from virtlib.images import create_overlay
from virtlib.spec import VMSpec
from virtlib.workdir import default_base, private_base, safe_name

log = logging.getLogger(__name__)

MEDIA_BASE_SUFFIX = "-media"
SEED_FILE = "cloudinit-seed.iso"
OVERLAY_FORMAT = "qcow2"
QEMU_GROUPS = ("libvirt-qemu", "qemu")
"""The group of libvirt's QEMU user on Debian and on Fedora/RHEL."""


@dataclass(frozen=True)
class Overlay:
    """A disk's private overlay: QEMU opens ``path``; writes never reach ``base``."""

    disk: str
    path: Path
    base: Path
    base_format: str
    format: str = OVERLAY_FORMAT


@dataclass(frozen=True)
class PreparedMedia:
    """What :func:`prepare` made for one VM (nothing when ``directory`` is None)."""

    directory: Path | None = None
    overlays: dict[str, Overlay] = field(default_factory=dict)
    """Disk name -> its overlay."""
    seed: Path | None = None
    """The cloud-init seed ISO (attach it as a read-only CD-ROM)."""


def media_base(base: Path | None = None) -> Path:
    """``<private base>-media`` (made like the private base: ours, a directory, closed)."""
    private = base or default_base()
    return private_base(private.with_name(private.name + MEDIA_BASE_SUFFIX))


def media_dir(name: str, instance: str, base: Path | None = None) -> Path:
    """The media directory of the VM ``name`` with ``instance`` (it may not exist);
    ``base`` is the private base it goes beside (default: virtlib.workdir's)."""
    return media_base(base) / f"{safe_name(name)}-{instance}"


def planned(spec: VMSpec, instance: str, base: Path | None = None) -> PreparedMedia:
    """What :func:`prepare` makes (or made) for ``spec`` and ``instance``; nothing is made
    (but the media base, when it is missing)."""
    if not needed(spec):
        return PreparedMedia()
    directory = media_dir(spec.name, instance, base)
    overlays = {
        disk.name: Overlay(
            disk.name,
            directory / f"{disk.name}.overlay.{OVERLAY_FORMAT}",
            disk.path.resolve(),
            disk.format,
        )
        for disk in spec.disks
        if disk.snapshot
    }
    seed = directory / SEED_FILE if spec.cloudinit.enabled else None
    return PreparedMedia(directory, overlays, seed)


def needed(spec: VMSpec) -> bool:
    """Whether ``spec`` asks for anything :func:`prepare` makes."""
    return spec.cloudinit.enabled or any(disk.snapshot for disk in spec.disks)


def qemu_group() -> int | None:
    """The gid of libvirt's QEMU user's group, when we are root and it exists."""
    if os.geteuid() != 0:
        return None  # an unprivileged libvirt runs QEMU as this very user
    for name in QEMU_GROUPS:
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            continue
    return None


def _open_for_qemu(directory: Path, gid: int) -> None:
    """Let QEMU's group search ``directory`` (ours, 0700) without listing or reading it."""
    info = directory.stat()
    if info.st_gid != gid:
        os.chown(directory, -1, gid)
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077 != 0o010:
        os.chmod(directory, (mode & 0o700) | 0o010)  # noqa: S103 - search only, QEMU's group


def _check_reachable(spec: VMSpec, path: Path, gid: int) -> None:
    """Every directory above ``path`` must be searchable by QEMU (others, or its group)."""
    for directory in path.parents:
        info = directory.stat()
        mode = info.st_mode
        group_ok = info.st_gid == gid and mode & stat.S_IXGRP
        if not (mode & stat.S_IXOTH or group_ok):
            raise VMError(
                f"VM {spec.name!r}: libvirt's QEMU cannot reach {path}: {directory} is not "
                "searchable by it (set VIRTLIB_RUN_DIR to a directory under one it can "
                "search, e.g. /var/tmp)"
            )


def _check_base(spec: VMSpec, disk: str, base: Path, gid: int | None) -> None:
    """The base must exist and be readable by QEMU without relabelling."""
    if not base.is_file():
        raise VMImageMissingError(str(base))
    if gid is None:
        return
    info = base.stat()
    readable = info.st_mode & stat.S_IROTH or (info.st_gid == gid and info.st_mode & stat.S_IRGRP)
    if not readable:
        raise VMParamsError(
            f"VM {spec.name!r}: disk {disk!r} has 'image_snapshot = yes' but its image "
            f"{str(base)!r} is not readable by libvirt's QEMU; shared base images are not "
            "relabelled: make it world-readable (chmod o+r) on a path QEMU can search"
        )
    for directory in base.parents:
        if not directory.stat().st_mode & stat.S_IXOTH:
            raise VMParamsError(
                f"VM {spec.name!r}: disk {disk!r}: libvirt's QEMU cannot reach "
                f"{str(base)!r} ({directory} is not searchable by others)"
            )


def prepare(spec: VMSpec, instance: str, base: Path | None = None) -> PreparedMedia:
    """Make the overlays and the seed ``spec`` asks for (see :func:`planned`).

    ``instance`` is the VM's unique id (also the seed's instance id, so each VM runs
    cloud-init's first boot).  On any failure everything made so far is removed.

    :raises VMImageMissingError: a base image does not exist.
    :raises VMParamsError: a base image QEMU cannot read; a file named in params.
    :raises ImageError: qemu-img failed.
    :raises CloudInitSeedError: the seed could not be written.
    """
    plan = planned(spec, instance, base)
    if plan.directory is None:
        return plan
    gid = qemu_group()
    for overlay in plan.overlays.values():
        _check_base(spec, overlay.disk, overlay.base, gid)
    directory = plan.directory
    shutil.rmtree(directory, ignore_errors=True)  # a leftover of this very VM object
    directory.mkdir(mode=0o700)
    try:
        if gid is not None:  # else QEMU runs as this very user
            for path in (directory.parent, directory):
                _open_for_qemu(path, gid)
            _check_reachable(spec, directory / SEED_FILE, gid)
        for overlay in plan.overlays.values():
            create_overlay(overlay.base, overlay.path, overlay.base_format, overlay.format)
            os.chmod(overlay.path, 0o600)
            log.debug("%s: disk %s writes to %s", spec.name, overlay.disk, overlay.path)
        if plan.seed is not None:
            cloudinit.write_seed_iso(cloudinit.build_seed(spec, instance), plan.seed)
        return plan
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def directory_for(spec: VMSpec, instance: str, base: Path | None = None) -> Path:
    """The VM's media directory, made (as :func:`prepare` makes it) when it is missing:
    where the images made for hotplugged disks go, removed with the VM."""
    directory = media_dir(spec.name, instance, base)
    if directory.is_dir():
        return directory
    directory.mkdir(mode=0o700)
    gid = qemu_group()
    if gid is not None:
        for path in (directory.parent, directory):
            _open_for_qemu(path, gid)
        _check_reachable(spec, directory / SEED_FILE, gid)
    return directory


def remove(name: str, instance: str, base: Path | None = None) -> None:
    """Remove the media of the VM ``name`` with ``instance`` (overlays, seed); the base
    images are untouched.  Nothing there is fine."""
    shutil.rmtree(media_dir(name, instance, base), ignore_errors=True)


def cleanup(media: PreparedMedia | None) -> None:
    """Remove what :func:`prepare` returned."""
    if media is not None and media.directory is not None:
        shutil.rmtree(media.directory, ignore_errors=True)
