"""Snapshots of libvirt domains: taken through libvirt's snapshot API, recorded in the VM's state.

Which kind (:func:`create`):

- **internal** (``kind="internal"``, or ``"auto"`` when every writable disk is qcow2):
  libvirt's internal snapshot, memory and disks inside the qcow2 images.  An internal
  snapshot of a running VM always holds its memory (libvirt's rule);
- **external**: the writable disks are frozen and continue in new qcow2 overlays next
  to them; with ``memory`` the RAM and device state go to a file in virtlib's private
  0700 directory (``<private base>/snapshots``; libvirtd writes it as root).  A
  diskless guest (the bundled one) takes this kind with memory only.  ``memory=False``
  or ``disk_only=True`` on a running VM is an external disk-only snapshot.

Who does what, by libvirt version (``virConnectGetLibVersion``):

- create: libvirt, always (virDomainSnapshotCreateXML, XML from :mod:`.snapshot_xml`);
- revert internal: virtlib, on every version: ``loadvm`` in the running QEMU (through
  libvirt-qemu's monitor passthrough) when the domain runs on the snapshot's images;
  else a new QEMU started paused from the VM's design, then ``loadvm``.  libvirt's own
  revert always restarts QEMU, which costs a whole domain stop and start (see
  :mod:`.snapshot_revert`);
- revert external: libvirt from 9.7 (``EXTERNAL_REVERT_VERSION``); before, virtlib;
- delete internal: libvirt (``delvm``) while the domain runs, ``qemu-img snapshot -d``
  when it does not;
- delete external: libvirt from 9.0 (``EXTERNAL_DELETE_VERSION``: it merges the
  overlay back) for a leaf snapshot whose overlays are the VM's active disks; else (and
  for memory-only snapshots, which libvirt 9.0 fails to delete) virtlib drops libvirt's
  record and the memory file, and the overlays stay in the VM's disk chain until
  destroy().  libvirt never removes a memory file: virtlib does.

virtlib's record (:class:`virtlib.snapshot.Snapshot` values in the VM's
:class:`~virtlib.state.VMState`, kept in the domain's metadata) is what the VM has:
libvirt forgets the snapshots of a transient domain when its QEMU stops, so after
virtlib restarted it the records are given back to libvirt (REDEFINE).  Every file
made for a snapshot is in ``owned_files``; destroy() removes them and calls
:func:`after_stop`, which folds external overlays back into images that outlive the
VM and deletes internal snapshots from them, so nothing is left.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid as uuidlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from virtlib import snapshot as core
from virtlib.backends.libvirt import domxml, metadata, snapshot_xml, storage
from virtlib.backends.libvirt.host import is_local_uri
from virtlib.errors import (
    ImageError,
    VMError,
    VMSnapshotError,
    VMSnapshotKindError,
    VMSnapshotNotFoundError,
)
from virtlib.registry import image_tool
from virtlib.snapshot import Snapshot, SnapshotDisk, SnapshotTree
from virtlib.spec import VMSpec
from virtlib.state import VMState
from virtlib.workdir import private_base

if TYPE_CHECKING:
    from virtlib.backends.libvirt.domain import LibvirtVM
    from virtlib.backends.libvirt.guest import Guest

log = logging.getLogger(__name__)

EXTERNAL_DELETE_VERSION = 9_000_000
EXTERNAL_REVERT_VERSION = 9_007_000
MEMORY_DIR = "snapshots"
OVERLAY_FORMAT = "qcow2"


# --- the VM's disks now --------------------------------------------------------------------
@dataclass(frozen=True)
class ActiveDisk:
    """A disk of the VM in domain XML (the live domain's or a designed one): the file QEMU
    writes to."""

    name: str  # its name in params (``images``)
    target: str  # libvirt's (vda)
    path: str
    format: str
    writable: bool
    block: bool


def disks_in(spec: VMSpec, xml: str) -> tuple[list[ActiveDisk], list[str]]:
    """The VM's disks (by their names in params) and every disk and CD-ROM target, from
    domain XML: the designer writes the disks in the order of ``images``, then CD-ROMs."""
    elements = snapshot_xml.disk_elements(xml)
    drives = [e for e in elements if e.device == "disk"]
    disks = [
        ActiveDisk(d.name, e.target, e.source, e.format, writable=not e.readonly, block=e.block)
        for d, e in zip(spec.disks, drives, strict=False)
    ]
    return disks, [e.target for e in elements]


def running_disks(guest: Guest, state: VMState) -> tuple[list[ActiveDisk], list[str]]:
    """The running domain's disks: what QEMU has open now (one call, no design)."""
    return disks_in(state.spec, guest.xml())


def designed_disks(vm: LibvirtVM, state: VMState) -> list[ActiveDisk]:
    """The disks a domain designed from ``state`` would have (the domain may be gone)."""
    return disks_in(state.spec, domxml.render(vm.design(state, check_resources=False)))[0]


def point_disk(params: dict[str, str], disk: str, path: str, fmt: str = OVERLAY_FORMAT) -> None:
    """Make disk ``disk`` of ``params`` use the image ``path`` (a file virtlib made, or the
    one a snapshot lives in): nothing to create, remove or put an overlay over."""
    suffix = f".{fmt}"
    if not path.endswith(suffix):  # image_name gets the format appended: it must be there
        raise VMError(f"disk {disk!r}: {path} cannot be named by image_name (no {suffix})")
    params[f"image_name_{disk}"] = path[: -len(suffix)]
    params[f"image_format_{disk}"] = fmt
    for key in ("image_raw_device", "image_snapshot", "create_image", "remove_image"):
        params[f"{key}_{disk}"] = "no"


def with_disks(
    state: VMState, files: Mapping[str, tuple[str, str]], tree: SnapshotTree, owned: tuple[str, ...]
) -> VMState:
    """``state`` whose disks use ``files`` (disk name -> (path, format)), holding ``tree``
    and owning ``owned``.  A disk that ``remove_image`` would have removed at destroy and
    that the VM no longer uses directly is owned instead, so it still goes with the VM."""
    params = dict(state.params)
    extra: list[str] = []
    for disk in state.spec.disks:
        if disk.name not in files:
            continue
        path, fmt = files[disk.name]
        if disk.remove and not disk.raw_device and str(disk.path) != path:
            extra.append(str(disk.path))
        point_disk(params, disk.name, path, fmt)
    owned_all = tuple(dict.fromkeys((*owned, *extra)))
    return VMState.designed(
        state.spec.name,
        params,
        state.root_dir,
        instance=state.instance,
        uri=state.uri,
        uuid=state.uuid,
        allocations=state.allocations,
        partition=state.partition,
        accel=state.accel,
        owned_files=owned_all,
        snapshots=tree.snapshots,
        current_snapshot=tree.current,
    )


def state_at(state: VMState, snap: Snapshot) -> VMState:
    """The VM's state as it was when ``snap`` was taken (its disks then), without records."""
    files = {d.name: (d.path, d.format) for d in snap.disks}
    return with_disks(state, files, SnapshotTree(), state.owned_files)


def state_of(vm: LibvirtVM, name: str) -> VMState:
    """The VM's state, for an operation on its snapshot ``name``.

    :raises VMSnapshotNotFoundError: the VM has no state (not created, or destroyed), so
        no snapshots either.
    """
    if vm.state is None:
        raise VMSnapshotNotFoundError(vm.name, str(name))
    return vm.state


# --- records in libvirt and in the domain's metadata ----------------------------------------
def write_state(vm: LibvirtVM, state: VMState, guest: Guest | None = None) -> None:
    """``state`` becomes the VM's, in this process and in the running domain's metadata."""
    vm.replace_state(state)
    if guest is None and vm.is_alive():
        guest = vm.guest()
    if guest is not None:
        guest.set_metadata(metadata.element(state), "virtlib", domxml.VIRTLIB_NS)


def redefine_xml(vm: LibvirtVM, state: VMState, snap: Snapshot) -> str:
    """libvirt's record of ``snap`` (for REDEFINE): what libvirt wrote when it took it,
    with the domain designed from the VM's state then."""
    then = state_at(state, snap)
    domain = domxml.render(vm.design(then, check_resources=False))
    disks_then, targets = disks_in(then.spec, domain)
    names = {d.target: d.name for d in disks_then}
    kept = {d.name for d in snap.disks}
    disks = []
    for target in targets:
        name = names.get(target, "")
        if name not in kept:
            disks.append(snapshot_xml.DiskSnapshotConfig(target, snapshot_xml.NO))
        elif snap.internal:
            disks.append(snapshot_xml.DiskSnapshotConfig(target, snapshot_xml.INTERNAL))
        else:
            overlay = overlay_of(snap, name)
            disks.append(snapshot_xml.DiskSnapshotConfig(target, snapshot_xml.EXTERNAL, overlay))
    memory = snapshot_xml.NO
    if snap.memory:
        memory = snapshot_xml.INTERNAL if snap.internal else snapshot_xml.EXTERNAL
    config = snapshot_xml.SnapshotConfig(
        name=snap.name,
        description=snap.description,
        memory=memory,
        memory_file=snap.memory_file,
        disks=tuple(disks),
        state=snap.state if snap.memory else "disk-snapshot",
        created=int(snap.created),
        parent=snap.parent or "",
        domain=domain,
    )
    return snapshot_xml.render(config)


def give_records_to_libvirt(vm: LibvirtVM, guest: Guest) -> None:
    """After a restart of QEMU: libvirt gets back the records of every snapshot (parents
    first), the current one marked current.  A record libvirt refuses is logged: virtlib's
    own record still serves revert and delete."""
    state = vm.state
    if state is None or not state.snapshots:
        return
    tree = state.snapshot_tree
    known = set(guest.snapshot_names())
    for snap in tree.ancestry():
        if snap.name in known and snap.name != tree.current:
            continue
        try:
            xml = redefine_xml(vm, state, snap)
            guest.snapshot_redefine(xml, snap.name == tree.current, _refusal(vm, snap.name))
        except VMError as exc:
            log.warning("%s: libvirt did not take the record of snapshot %r: %s",
                        vm.name, snap.name, exc)  # fmt: skip


def overlay_of(snap: Snapshot, disk: str) -> str:
    """The overlay disk ``disk`` continued in after external snapshot ``snap``."""
    return next((d.overlay for d in snap.overlays if d.disk == disk), "")


# --- create -----------------------------------------------------------------------------------
def memory_dir() -> Path:
    """Where memory files go: ``<private base>/snapshots``, 0700 (they hold guest RAM)."""
    directory = private_base() / MEMORY_DIR
    directory.mkdir(mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    return directory


def new_overlay_path(image: str, label: str, snapshot: str) -> str:
    """A new file name next to ``image``: ``<stem>.<label>-<snapshot>-<random>.qcow2``."""
    path = Path(image)
    stem = path.name.split(".")[0]
    return str(path.with_name(f"{stem}.{label}-{snapshot}-{uuidlib.uuid4().hex[:6]}.qcow2"))


def _refusal(vm: LibvirtVM, name: str) -> Callable[[str], VMError]:
    return lambda text: VMSnapshotKindError(vm.name, name, f"libvirt refused: {text}")


def _failure(vm: LibvirtVM, name: str) -> Callable[[str], VMError]:
    return lambda text: VMSnapshotError(vm.name, name, f"libvirt failed: {text}")


def create(
    vm: LibvirtVM,
    name: str,
    memory: bool = True,
    disk_only: bool = False,
    description: str = "",
    kind: str = "auto",
) -> Snapshot:
    """Take a snapshot of the running VM (see the module docstring for the kinds).

    :raises VMSnapshotError: a bad or taken name, a bad ``kind``, or libvirt failed.
    :raises VMSnapshotKindError: the VM cannot take that kind (it is not running, has no
        qcow2 disk for an internal one, nothing to snapshot, ...).
    """
    if vm.state is None:
        raise VMSnapshotKindError(vm.name, str(name), "the VM is not running (create() it first)")
    state = vm.state
    tree = state.snapshot_tree
    core.check_name(vm.name, name, tree.names())
    core.check_kind(vm.name, name, kind)
    if not isinstance(description, str):
        raise VMSnapshotError(vm.name, name, f"parameter 'description' must be a string, "
                              f"not {description!r}")  # fmt: skip
    guest = _running_guest(vm, name)
    paused = guest.state().paused
    disks, targets = running_disks(guest, state)
    with_memory = memory and not disk_only
    chosen = _choose_kind(vm, name, kind, with_memory, disks, tree)
    record = Snapshot(
        name=name,
        kind=chosen,
        memory=with_memory,
        description=description,
        created=time.time(),
        parent=tree.current or None,
        state=core.PAUSED if paused else core.RUNNING,
        disks=tuple(
            SnapshotDisk(d.name, d.path, d.format, survives=_survives(state, d))
            for d in disks
            if d.writable
        ),
    )
    if chosen == core.INTERNAL:
        return _create_internal(vm, state, guest, record, targets, disks)
    return _create_external(vm, state, guest, record, targets, disks)


def _survives(state: VMState, disk: ActiveDisk) -> bool:
    """Whether the image ``disk`` writes to outlives the VM: the disk's own image from params
    (not a per-VM overlay over it), not removed with the VM, not a file virtlib made."""
    spec = next((d for d in state.spec.disks if d.name == disk.name), None)
    if spec is None or spec.remove or spec.raw_device:
        return False
    return disk.path == str(spec.path) and disk.path not in state.owned_files


def _running_guest(vm: LibvirtVM, name: str) -> Guest:
    if not vm.is_alive():
        raise VMSnapshotKindError(
            vm.name, name, "the VM is not running (its domain is transient: a VM that is "
            "not running has nothing to snapshot; create() it first)"
        )  # fmt: skip
    return vm.guest()


def _choose_kind(
    vm: LibvirtVM,
    name: str,
    kind: str,
    with_memory: bool,
    disks: list[ActiveDisk],
    tree: SnapshotTree,
) -> str:
    writable = [d for d in disks if d.writable]
    why_not_internal = ""
    if not with_memory:
        why_not_internal = (
            "an internal snapshot of a running VM holds its memory (libvirt's rule); "
            "memory=False or disk_only=True makes an external disk-only snapshot"
        )
    elif not writable:
        why_not_internal = (
            "the VM has no writable disk to hold an internal snapshot; a diskless guest's "
            "memory goes into an external snapshot (kind='external' or 'auto')"
        )
    else:
        odd = [d for d in writable if d.format != "qcow2" or d.block]
        if odd:
            disk = odd[0]
            what = "a raw device" if disk.block else disk.format
            why_not_internal = (
                f"disk {disk.name!r} ({disk.path}) is {what}; internal snapshots live in "
                "qcow2 images (take an external one)"
            )
    if kind == core.INTERNAL and why_not_internal:
        raise VMSnapshotKindError(vm.name, name, why_not_internal)
    chosen = core.INTERNAL if kind == core.INTERNAL or not why_not_internal else core.EXTERNAL
    if kind == core.EXTERNAL:
        chosen = core.EXTERNAL
    if chosen == core.EXTERNAL:
        _check_external(vm, name, with_memory, writable, tree)
    return chosen


def _check_external(
    vm: LibvirtVM, name: str, with_memory: bool, writable: list[ActiveDisk], tree: SnapshotTree
) -> None:
    if not writable and not with_memory:
        raise VMSnapshotKindError(
            vm.name, name, "nothing to snapshot: the VM has no writable disk and memory=False"
        )
    if with_memory and not is_local_uri(vm.uri):
        raise VMSnapshotKindError(
            vm.name, name, f"external memory snapshots are written on this machine, and "
            f"{vm.uri} is another one (take an internal snapshot)"
        )  # fmt: skip
    paths = {d.path for d in writable}
    holding = [s.name for s in tree.snapshots if s.internal and paths & {d.path for d in s.disks}]
    if holding:
        raise VMSnapshotKindError(
            vm.name, name, f"the disk images hold internal snapshots ({', '.join(holding)}); "
            "an external snapshot would freeze them for good: delete those first, or take "
            "an internal snapshot"
        )  # fmt: skip


def _create_internal(
    vm: LibvirtVM,
    state: VMState,
    guest: Guest,
    record: Snapshot,
    targets: list[str],
    disks: list[ActiveDisk],
) -> Snapshot:
    writable = {d.target for d in disks if d.writable}
    config = snapshot_xml.SnapshotConfig(
        name=record.name,
        description=record.description,
        memory=snapshot_xml.INTERNAL,
        disks=tuple(
            snapshot_xml.DiskSnapshotConfig(
                t, snapshot_xml.INTERNAL if t in writable else snapshot_xml.NO
            )
            for t in targets
        ),
    )
    guest.snapshot_create(snapshot_xml.render(config), False, _refusal(vm, record.name))
    tree = state.snapshot_tree.added(record)
    write_state(vm, state.with_snapshots(tree, state.owned_files), guest)
    log.info("%s: internal snapshot %r taken", vm.name, record.name)
    return record


def _create_external(
    vm: LibvirtVM,
    state: VMState,
    guest: Guest,
    record: Snapshot,
    targets: list[str],
    disks: list[ActiveDisk],
) -> Snapshot:
    writable = [d for d in disks if d.writable]
    memory_file = ""
    if record.memory:
        memory_file = str(memory_dir() / f"{vm.name}-{state.instance}-{record.name}.mem")
    overlays = {d.target: new_overlay_path(d.path, "snap", record.name) for d in writable}
    made = [f for f in (memory_file, *overlays.values()) if f]
    config = snapshot_xml.SnapshotConfig(
        name=record.name,
        description=record.description,
        memory=snapshot_xml.EXTERNAL if record.memory else snapshot_xml.NO,
        memory_file=memory_file,
        disks=tuple(
            snapshot_xml.DiskSnapshotConfig(t, snapshot_xml.EXTERNAL, overlays[t])
            if t in overlays
            else snapshot_xml.DiskSnapshotConfig(t, snapshot_xml.NO)
            for t in targets
        ),
    )
    try:
        guest.snapshot_create(
            snapshot_xml.render(config), not record.memory, _refusal(vm, record.name)
        )
    except BaseException:
        storage.remove_files(vm.host, [f for f in made if _exists(vm, f)])
        raise
    snap = dataclasses.replace(
        record,
        memory_file=memory_file,
        files=tuple(made),
        overlays=tuple(core.SnapshotOverlay(d.name, overlays[d.target]) for d in writable),
    )
    tree = state.snapshot_tree.added(snap)
    files = {d.name: (overlays[d.target], OVERLAY_FORMAT) for d in writable}
    write_state(vm, with_disks(state, files, tree, (*state.owned_files, *made)), guest)
    log.info("%s: external snapshot %r taken (%s)", vm.name, record.name,
             _what(record, writable))  # fmt: skip
    return snap


def _what(record: Snapshot, writable: list[ActiveDisk]) -> str:
    if not record.memory:
        return "disks only"
    return "memory and disks" if writable else "memory only"


def _exists(vm: LibvirtVM, path: str) -> bool:
    return not is_local_uri(vm.uri) or Path(path).exists()


# --- listing -------------------------------------------------------------------------------
def listing(vm: LibvirtVM) -> list[Snapshot]:
    """The VM's snapshots, oldest first (none before create())."""
    if vm.state is None:
        return []
    return sorted(vm.state.snapshots, key=lambda s: s.created)


def current(vm: LibvirtVM) -> Snapshot | None:
    return vm.state.snapshot_tree.current_snapshot() if vm.state is not None else None


# --- delete -------------------------------------------------------------------------------
def delete(vm: LibvirtVM, name: str, children: bool = False) -> None:
    """Delete snapshot ``name`` (and, with ``children``, every snapshot below it, first).

    Without ``children`` the snapshots below it stay and hang from its parent.

    :raises VMSnapshotNotFoundError: no such snapshot.
    :raises VMSnapshotError: libvirt or qemu-img failed (the snapshot is kept).
    """
    state = state_of(vm, name)
    tree = state.snapshot_tree
    tree.get(name)
    below = tree.descendants(name) if children else []
    for snap in [*below, tree.get(name)]:
        _delete_one(vm, snap.name)


def _delete_one(vm: LibvirtVM, name: str) -> None:
    state = state_of(vm, name)
    tree = state.snapshot_tree
    snap = tree.get(name)
    alive = vm.is_alive()
    guest = vm.guest() if alive else None
    known = set(guest.snapshot_names()) if guest is not None else set()
    if snap.internal:
        _delete_internal(vm, guest, snap, name in known)
        write_state(vm, state.with_snapshots(tree.without(name), state.owned_files), guest)
    elif guest is not None and name in known and _native_delete_applies(vm, guest, state, snap):
        _delete_external_natively(vm, state, guest, snap)
    else:
        if guest is not None and name in known:
            guest.snapshot_delete(name, True, _failure(vm, name))
        gone = [snap.memory_file] if snap.memory_file else []
        storage.remove_files(vm.host, gone)
        owned = tuple(f for f in state.owned_files if f not in gone)
        write_state(vm, state.with_snapshots(tree.without(name), owned), guest)
    log.info("%s: snapshot %r deleted", vm.name, name)


def _delete_internal(vm: LibvirtVM, guest: Guest | None, snap: Snapshot, known: bool) -> None:
    if guest is not None:
        if known:
            guest.snapshot_delete(snap.name, False, _failure(vm, snap.name))
        else:  # libvirt lost its record (a restart it was not told of): QEMU deletes it
            answer = guest.monitor_command(f"delvm {snap.name}", _failure(vm, snap.name))
            if answer.strip():
                raise VMSnapshotError(vm.name, snap.name, f"QEMU: {answer.strip()}")
        return
    for disk in snap.disks:
        delete_internal_offline(vm, disk.path, snap.name)


def delete_internal_offline(vm: LibvirtVM, path: str, name: str) -> None:
    """``qemu-img snapshot -d`` on an image no QEMU has open (this machine only)."""
    if not is_local_uri(vm.uri):
        raise VMSnapshotError(vm.name, name, f"the VM is not running and {vm.uri} is another "
                              "machine: its images cannot be changed from here")  # fmt: skip
    try:
        image_tool().delete_snapshot(Path(path), name)
    except (ImageError, VMError) as exc:
        raise VMSnapshotError(vm.name, name, f"cannot delete it from {path}: {exc}") from exc


def _native_delete_applies(vm: LibvirtVM, guest: Guest, state: VMState, snap: Snapshot) -> bool:
    """libvirt can merge it away: a version that deletes external snapshots, a leaf whose
    overlays are the disks the VM writes to now."""
    if not snap.overlays or state.snapshot_tree.children(snap.name):
        return False
    if vm.host.versions()[0] < EXTERNAL_DELETE_VERSION:
        return False
    active = {d.name: d.path for d in running_disks(guest, state)[0]}
    return all(active.get(o.disk) == o.overlay for o in snap.overlays)


def _delete_external_natively(vm: LibvirtVM, state: VMState, guest: Guest, snap: Snapshot) -> None:
    """libvirt commits the overlays into the images below them and removes them; the VM's
    disks are then those images again (read back from the live domain)."""
    guest.snapshot_delete(snap.name, False, _failure(vm, snap.name))
    files = {d.name: (d.path, d.format) for d in running_disks(guest, state)[0] if d.writable}
    storage.remove_files(vm.host, [snap.memory_file] if snap.memory_file else [])
    gone = {f for f in snap.files if not _exists(vm, f)} | {snap.memory_file}
    owned = tuple(f for f in state.owned_files if f not in gone)
    tree = state.snapshot_tree.without(snap.name)
    write_state(vm, with_disks(state, files, tree, owned), guest)


# --- destroy ----------------------------------------------------------------------------------
def after_stop(vm: LibvirtVM, state: VMState) -> None:
    """The domain is gone for good (destroy): leave the images that outlive the VM as if no
    snapshot had been taken -- internal snapshots deleted from them, the data of external
    overlays over them written back (``qemu-img commit``).  Best effort, logged: destroy()
    goes on.  Overlays and memory files are owned files, which destroy() removes next."""
    if not state.snapshots:
        return
    kept = _kept_images(vm, state)
    for snap in state.snapshots:
        if not snap.internal:
            continue
        for disk in snap.disks:
            if disk.path in kept:
                try:
                    delete_internal_offline(vm, disk.path, snap.name)
                except VMSnapshotError as exc:
                    log.warning("%s: %s", vm.name, exc)
    active = {d.name: d.path for d in designed_disks_quiet(vm, state)}
    for spec_disk in state.spec.disks:
        base = _original_image(state, spec_disk.name)
        top = active.get(spec_disk.name, "")
        if base and base in kept and top and top != base:
            try:
                image_tool().commit(Path(top), Path(base))
            except (ImageError, VMError) as exc:
                log.warning("%s: cannot write the data of %s back into %s: %s",
                            vm.name, top, base, exc)  # fmt: skip


def designed_disks_quiet(vm: LibvirtVM, state: VMState) -> list[ActiveDisk]:
    try:
        return designed_disks(vm, state)
    except VMError as exc:
        log.warning("%s: cannot tell the VM's disks: %s", vm.name, exc)
        return []


def _original_image(state: VMState, disk: str) -> str:
    """The image disk ``disk`` used before its first external snapshot (the oldest record)."""
    for snap in sorted(state.snapshots, key=lambda s: s.created):
        for item in snap.disks:
            if item.name == disk and snap.external:
                return item.path
    return ""


def _kept_images(vm: LibvirtVM, state: VMState) -> set[str]:
    """Images the VM's snapshots touched that outlive destroy() (on this machine)."""
    if not is_local_uri(vm.uri):
        return set()
    paths = {d.path for s in state.snapshots for d in s.disks if d.survives}
    return {p for p in paths if p not in state.owned_files and Path(p).exists()}


__all__ = [
    "EXTERNAL_DELETE_VERSION",
    "EXTERNAL_REVERT_VERSION",
    "VMSnapshotNotFoundError",
    "after_stop",
    "create",
    "current",
    "delete",
    "listing",
]
