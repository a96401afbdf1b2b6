"""Disks across migration: share them, copy them, or copy only their overlays.

``migration_storage`` says what to do with the guest's writable disks:

- ``shared``: the destination reaches the same file (NFS, a cluster filesystem, or the
  same machine): nothing is copied.  The disks belong to QEMU's user and libvirt does not
  relabel them (see the designer), so neither host hands them back to root while the
  other's QEMU writes them;
- ``copy``: every writable disk is copied during the migration
  (``VIR_MIGRATE_NON_SHARED_DISK``) into an image virtlib creates on the destination
  first (libvirt's storage API, so a remote host works too);
- ``copy-incremental``: only the top overlay is copied (``VIR_MIGRATE_NON_SHARED_INC``);
  the destination's overlay is created over the same backing file, which must be there.

Without the param a guest with a writable disk is refused with an error that names it.
On a destination on this machine (it shares the filesystem) the copy gets a new file
name next to the original; on another host it keeps the path.  Copies are virtlib's
files: they go with the VM.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import libvirt

from virtlib import media
from virtlib.backends.libvirt.host import Host, is_local_uri
from virtlib.errors import VMError, VMMigrateFailedError
from virtlib.images import image_info
from virtlib.spec import DiskSpec, VMSpec
from virtlib.state import VMState

if TYPE_CHECKING:
    from virtlib.backends.libvirt.domain import LibvirtVM

log = logging.getLogger(__name__)

COPY_FLAGS = {
    "copy": libvirt.VIR_MIGRATE_NON_SHARED_DISK,
    "copy-incremental": libvirt.VIR_MIGRATE_NON_SHARED_INC,
}
# libvirt cannot tell storage shared between two daemons of one machine (or a filesystem it
# does not know) from local storage; the user said it is shared.
SHARED_FLAGS = libvirt.VIR_MIGRATE_UNSAFE


@dataclass
class StoragePlan:
    """What a migration does with the disks."""

    flags: int = 0
    targets: list[str] = field(default_factory=list)  # VIR_MIGRATE_PARAM_MIGRATE_DISKS
    params: dict[str, str] = field(default_factory=dict)  # the disks' params on the destination
    created: list[str] = field(default_factory=list)  # files made on the destination
    replaced: list[str] = field(default_factory=list)  # virtlib's copies the VM leaves behind


def check(vm_name: str, spec: VMSpec, mode: str) -> None:
    """Refuse a writable local disk without ``migration_storage`` (naming the disk), and
    shared storage the VM was not created for (its disks were labelled at create time)."""
    writable = spec.writable_disks()
    if writable and mode == "shared" and spec.migration_storage != "shared":
        raise VMMigrateFailedError(
            f"cannot migrate {vm_name!r} with migration_storage = shared: set it before "
            "create() (shared disks belong to QEMU's user and are not relabelled); copy and "
            "copy-incremental can be chosen at migration time"
        )
    if writable and not mode:
        disk = writable[0]
        raise VMMigrateFailedError(
            f"cannot migrate {vm_name!r}: disk {disk.name!r} ({disk.path}) is writable and "
            "not on shared storage; set migration_storage = shared (the destination reaches "
            "the same file), copy (copy the disks) or copy-incremental (copy only overlays)"
        )


def plan(vm: LibvirtVM, state: VMState, dest: Host, local: bool, mode: str) -> StoragePlan:
    """Create the destination's images (for copy modes) and say how to migrate the disks;
    ``mode`` is ``migration_storage`` as the params say at migration time.

    :raises VMMigrateFailedError: no migration_storage, a raw device to copy, an
        incremental copy of a disk without a backing file, or an image that cannot be made.
    """
    spec = state.spec
    check(vm.name, spec, mode)
    if not spec.writable_disks():
        return StoragePlan()
    if mode == "shared":
        return StoragePlan(flags=SHARED_FLAGS)
    result = StoragePlan(flags=COPY_FLAGS[mode])
    targets = {d.source: d.target for d in vm.design(state, check_resources=False).disks}
    overlays = media.planned(spec, state.instance).overlays
    try:
        for disk in spec.writable_disks():
            overlay = overlays.get(disk.name) if disk.snapshot else None
            source = (overlay.path, overlay.format) if overlay else (disk.path, disk.format)
            _plan_disk(vm.name, disk, source, mode, dest, local, targets, result)
    except BaseException:
        remove_files(dest, result.created)
        raise
    result.replaced = [f for f in state.owned_files if f in targets]
    return result


def _plan_disk(
    vm_name: str,
    disk: DiskSpec,
    source: tuple[Path, str],
    mode: str,
    dest: Host,
    local: bool,
    targets: dict[str, str],
    result: StoragePlan,
) -> None:
    """Make the destination image of one disk.  ``source`` is the file the guest writes
    (its private overlay with ``image_snapshot``): that is what is copied, and on the
    destination the copy is the disk itself (an overlay over the same base for
    copy-incremental), so the destination's params name it with ``image_snapshot = no``."""
    path, fmt = source
    if disk.raw_device:
        raise VMMigrateFailedError(
            f"cannot copy disk {disk.name!r} of {vm_name!r}: {disk.path} is a raw device; "
            "use migration_storage = shared"
        )
    info = image_info(path)
    backing: tuple[str, str] | None = None
    if mode == "copy-incremental":
        backing_file = info.get("full-backing-filename") or info.get("backing-filename")
        if not backing_file:
            raise VMMigrateFailedError(
                f"migration_storage = copy-incremental copies only overlays, and disk "
                f"{disk.name!r} of {vm_name!r} ({path}) has no backing file: use copy"
            )
        backing = (str(backing_file), str(info.get("backing-filename-format") or "raw"))
    suffix = f".{fmt}"
    new_path = path
    if local:  # the same filesystem: a new file next to the original
        stem = path.name.removesuffix(suffix).split(".virtlib-")[0]
        new_path = path.with_name(f"{stem}.virtlib-{uuid.uuid4().hex[:8]}{suffix}")
    try:
        dest.create_volume(str(new_path), fmt, int(info["virtual-size"]), backing)
    except VMError as exc:
        raise VMMigrateFailedError(
            f"cannot create the destination image of disk {disk.name!r} of {vm_name!r} "
            f"({new_path}): {exc}"
        ) from exc
    result.created.append(str(new_path))
    result.targets.append(targets[str(path)])
    result.params[f"image_name_{disk.name}"] = str(new_path).removesuffix(suffix)
    result.params[f"image_format_{disk.name}"] = fmt
    if disk.snapshot:
        result.params[f"image_snapshot_{disk.name}"] = "no"


def remove_files(host: Host, paths: list[str] | tuple[str, ...]) -> None:
    """Remove files virtlib made for a VM on ``host`` (best effort, logged)."""
    for path in paths:
        try:
            if is_local_uri(host.uri):
                Path(path).unlink(missing_ok=True)
            else:
                host.delete_volume(path)
        except (OSError, VMError) as exc:
            log.warning("cannot remove %s on %s: %s", path, host.uri, exc)


def share_with_qemu(host: Host, spec: VMSpec) -> None:
    """``migration_storage = shared``: give the writable disk images to QEMU's user (local
    hosts; on shared storage they stay so, whichever host's QEMU opens them)."""
    if spec.migration_storage != "shared" or not is_local_uri(host.uri):
        return
    owner = host.qemu_user()
    if owner is None:
        return
    for disk in spec.writable_disks():
        if not disk.raw_device and disk.path.exists():
            os.chown(disk.path, *owner)
