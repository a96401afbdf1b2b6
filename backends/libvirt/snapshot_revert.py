"""Going back to a snapshot: in the running QEMU when possible, else in a new one.

- **In place** (internal snapshots, the domain running on the images that hold it):
  pause, ``loadvm`` through libvirt-qemu's monitor passthrough, run again.  QEMU and
  its console stay; about 0.1 s for the bundled guest.  libvirt's own revert
  (virDomainRevertToSnapshot) stops QEMU and starts a new one for every revert, which
  here costs 2-3 s, mostly waiting for the old QEMU to be reaped (see bench/README.md).
- **libvirt's** (external snapshots, libvirt >= 9.7): virDomainRevertToSnapshot; the
  overlays libvirt makes are read back from the live domain and owned by the VM.
- **Restart** (external snapshots before 9.7, or a domain that is gone -- a guest that
  panicked or powered off): every disk gets a new overlay over the image that was active
  when the snapshot was taken (or, internal, the image holding it), the domain XML is
  designed from the VM's state with those disks (never edited), and the VM is restored
  from the snapshot's memory file (``Host.restore``), or started paused and ``loadvm``'d
  (internal), or booted from the disks (disk-only).  The running VM is first *saved*
  to a private file rather than destroyed, so a start that fails brings it back as it
  was.  libvirt gets the snapshot records back afterwards (it forgets a transient
  domain's on stop).

After a revert the console is attached (in place it never left), the VM's state (disks,
owned files, current snapshot) is replaced whole, and the guest's clock is set through
the guest agent where one answers (best effort).
"""

from __future__ import annotations

import contextlib
import logging
import uuid as uuidlib
from pathlib import Path
from typing import TYPE_CHECKING

from virtlib.backends.libvirt import domxml, storage
from virtlib.backends.libvirt.host import Host, is_local_uri
from virtlib.backends.libvirt.snapshots import (
    EXTERNAL_REVERT_VERSION,
    OVERLAY_FORMAT,
    give_records_to_libvirt,
    memory_dir,
    new_overlay_path,
    running_disks,
    state_of,
    with_disks,
    write_state,
)
from virtlib.errors import ImageError, VMError, VMSnapshotRevertError
from virtlib.images import create_overlay
from virtlib.snapshot import PAUSED, RUNNING, Snapshot
from virtlib.state import VMState

if TYPE_CHECKING:
    from virtlib.backends.libvirt.domain import LibvirtVM
    from virtlib.backends.libvirt.guest import Guest, Refusal

log = logging.getLogger(__name__)

AGENT_PING_TIMEOUT = 1.0  # a revert does not wait long for a guest agent that is not there


def revert(vm: LibvirtVM, name: str) -> None:
    """Bring the VM back to snapshot ``name`` (see the module docstring).

    :raises VMSnapshotNotFoundError: no such snapshot.
    :raises VMSnapshotRevertError: it failed; the VM runs as it did before (or, if it was
        not running, is still not running).
    """
    state = state_of(vm, name)
    snap = state.snapshot_tree.get(name)
    domain = vm.guest_state()
    alive = domain is not None and domain.alive and not domain.crashed
    if snap.internal and alive and _runs_on_its_images(vm, state, snap):
        _in_place(vm, state, snap)
    elif snap.external and alive and _libvirt_reverts_external(vm, snap):
        _by_libvirt(vm, state, snap)
    else:
        _restart(vm, state, snap, alive)
    vm.stop_reason = ""
    vm.note_on_console(f"reverted to snapshot {name!r}")
    vm._scan_for_crashes_from_now()
    if snap.state == RUNNING and snap.memory:
        sync_clock(vm)
    log.info("%s: reverted to snapshot %r", vm.name, name)


def _failed(vm: LibvirtVM, name: str, how: str = "the VM runs as before") -> Refusal:
    return lambda text: VMSnapshotRevertError(vm.name, name, f"{text}; {how}")


def _runs_on_its_images(vm: LibvirtVM, state: VMState, snap: Snapshot) -> bool:
    active = {d.name: d.path for d in running_disks(vm.guest(), state)[0]}
    return bool(snap.disks) and all(active.get(d.name) == d.path for d in snap.disks)


def _libvirt_reverts_external(vm: LibvirtVM, snap: Snapshot) -> bool:
    if vm.host.versions()[0] < EXTERNAL_REVERT_VERSION:
        return False
    return snap.name in vm.guest().snapshot_names()


def _loadvm(vm: LibvirtVM, guest: Guest, snap: Snapshot, how: str) -> None:
    """``loadvm`` in a paused QEMU; QEMU's answer is empty unless something went wrong."""
    answer = guest.monitor_command(f"loadvm {snap.name}", _failed(vm, snap.name, how)).strip()
    if "error" in answer.lower():
        raise VMSnapshotRevertError(vm.name, snap.name, f"QEMU: {answer}; {how}")
    if answer:
        log.debug("%s: loadvm %s: %s", vm.name, snap.name, answer)


def _in_place(vm: LibvirtVM, state: VMState, snap: Snapshot) -> None:
    guest = vm.guest()
    was_paused = guest.state().paused
    if not was_paused:
        guest.suspend()
    done = False
    try:
        _loadvm(vm, guest, snap, "the VM runs as before")
        done = True
    finally:  # running again if the snapshot ran, or if the loadvm failed on a running VM
        if (done and snap.state == RUNNING) or (not done and not was_paused):
            guest.resume()
    new = state.with_snapshots(state.snapshot_tree.reverted_to(snap.name), state.owned_files)
    write_state(vm, new, guest)
    try:  # libvirt's own record again, now marked current
        guest.snapshot_redefine(guest.snapshot_xml(snap.name), True, _failed(vm, snap.name))
    except VMError as exc:  # only libvirt's idea of "current" is stale
        log.debug("%s: libvirt's current snapshot not updated: %s", vm.name, exc)


def _by_libvirt(vm: LibvirtVM, state: VMState, snap: Snapshot) -> None:
    guest = vm.guest()
    guest.snapshot_revert(snap.name, snap.state == PAUSED, _failed(vm, snap.name))
    files = {d.name: (d.path, d.format) for d in running_disks(guest, state)[0] if d.writable}
    known = set(state.owned_files) | {d.path for s in state.snapshots for d in s.disks}
    made = tuple(path for path, _ in files.values() if path not in known)
    tree = state.snapshot_tree.reverted_to(snap.name)
    new = with_disks(state, files, tree, (*state.owned_files, *made))
    vm.moved_to(new, guest)  # QEMU was restarted: a new console
    write_state(vm, new, guest)


def _restart(vm: LibvirtVM, state: VMState, snap: Snapshot, alive: bool) -> None:
    host = vm.host
    how = "the VM runs as before" if alive else "the VM is still not running"
    overlays: list[tuple[str, str, str]] = []  # (new overlay, its backing, backing format)
    if snap.external:
        if not is_local_uri(vm.uri):
            raise VMSnapshotRevertError(
                vm.name, snap.name, f"libvirt {_version(host)} on {vm.uri} cannot revert "
                "external snapshots (9.7 can) and virtlib makes the overlays on this machine "
                f"only; {how}"
            )  # fmt: skip
        overlays = [(new_overlay_path(d.path, "revert", snap.name), d.path, d.format)
                    for d in snap.disks]  # fmt: skip
        files = {d.name: (o[0], OVERLAY_FORMAT) for d, o in zip(snap.disks, overlays, strict=True)}
    else:
        files = {d.name: (d.path, d.format) for d in snap.disks}
    tree = state.snapshot_tree.reverted_to(snap.name)
    target = with_disks(state, files, tree, (*state.owned_files, *(o[0] for o in overlays)))
    try:
        for overlay, backing, fmt in overlays:
            create_overlay(backing, overlay, fmt, OVERLAY_FORMAT)
        xml = domxml.render(vm.design(target))
    except (ImageError, VMError) as exc:
        storage.remove_files(host, [o[0] for o in overlays])
        raise VMSnapshotRevertError(vm.name, snap.name, f"{exc}; {how}") from exc
    was_running = alive and not vm.is_paused()
    safety = None
    if alive:
        safety = _stop(vm)
    else:
        _remove_leftover(host, state)
    try:
        guest = _start(vm, host, target, xml, snap)
    except Exception as exc:
        storage.remove_files(host, [o[0] for o in overlays])
        _give_back(vm, host, state, safety, was_running)
        raise VMSnapshotRevertError(vm.name, snap.name, f"{exc}; {how}") from exc
    finally:
        if safety is not None:
            Path(safety).unlink(missing_ok=True)
    give_records_to_libvirt(vm, guest)
    if snap.state == RUNNING:
        guest.resume()


def _version(host: Host) -> str:
    number = host.versions()[0]
    return f"{number // 1_000_000}.{number // 1000 % 1000}"


def _stop(vm: LibvirtVM) -> str | None:
    """Stop the running domain, saving it to a private file first (on this machine) so a
    failed revert can bring it back; the file's path, or None when it was destroyed."""
    guest = vm.guest()
    vm.detach_console_for_restart()
    if is_local_uri(vm.uri):
        label = f"{vm.name}-{vm.instance}-before-revert-{uuidlib.uuid4().hex[:6]}"
        path = str(memory_dir() / label)
        try:
            guest.save(path)
            return path
        except VMError as exc:  # a crashed or odd domain: nothing worth keeping
            Path(path).unlink(missing_ok=True)
            log.debug("%s: not saved before the revert (%s); destroying it", vm.name, exc)
    guest.remove()
    return None


def _remove_leftover(host: Host, state: VMState) -> None:
    """A domain that is there but does not run (a crashed guest kept by on_crash) goes."""
    with contextlib.suppress(VMError):
        host.lookup(state.uuid).remove()


def _start(vm: LibvirtVM, host: Host, target: VMState, xml: str, snap: Snapshot) -> Guest:
    """The domain of ``target``, paused, in the snapshot's state; the VM follows it."""
    if snap.external and snap.memory:
        host.restore(snap.memory_file, vm.name, xml)
        guest = host.lookup(target.uuid)
    else:
        guest = host.create_guest(xml, paused=True)
    try:
        vm.moved_to(target, guest)
        if snap.internal:
            _loadvm(vm, guest, snap, "")
    except BaseException:
        guest.remove()
        raise
    return guest


def _give_back(
    vm: LibvirtVM, host: Host, state: VMState, safety: str | None, was_running: bool
) -> None:
    """After a failed start: the VM as it was (restored from ``safety``), or not running."""
    with contextlib.suppress(VMError):
        host.lookup(state.uuid).remove()
    vm.replace_state(state)
    if safety is None:
        return
    try:
        host.restore(safety, vm.name, None)
        guest = host.lookup(state.uuid)
        vm.moved_to(state, guest)
        give_records_to_libvirt(vm, guest)
        if was_running:
            guest.resume()
    except VMError as exc:
        log.error("%s: could not bring the VM back after a failed revert: %s", vm.name, exc)


def sync_clock(vm: LibvirtVM) -> None:
    """Set the guest's clock from the host's through its agent, if one answers at once."""
    try:
        agent = vm.guest_agent()
        agent.ping(AGENT_PING_TIMEOUT)
        agent.sync_time()
    except VMError as exc:
        log.debug("%s: clock not set after the revert (no guest agent answered): %s",
                  vm.name, exc)  # fmt: skip
