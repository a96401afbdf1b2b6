"""Snapshots on the real libvirtd: internal and external, with and without memory.

Each kind is created, listed, reverted (a file written after the snapshot is gone, one
written before is there, a process started before runs again) and deleted, on the
bundled guest (no disk: its memory goes into an external snapshot) and on a guest with
a qcow2 disk; afterwards destroy() leaves no file and no libvirt record.  Bad input gets
the right VMSnapshotError and leaves the VM as it was.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from functional_support import VMFactory

import virtlib
from virtlib.backends.libvirt.snapshots import memory_dir
from virtlib.waiting import wait_for

BEFORE, AFTER = "/root/written-before", "/root/written-after"
PROCESS = "sleep 4343"


def serial(vm: virtlib.BaseVM) -> virtlib.ShellSession:
    return vm.wait_for_serial_login(timeout=120)


def before(vm: virtlib.BaseVM, disk_text: str = "") -> None:
    console = serial(vm)
    console.cmd(f"echo before > {BEFORE}; ({PROCESS} &)")
    if disk_text:
        console.cmd(f"printf {disk_text} > /dev/vda; sync")


def after(vm: virtlib.BaseVM, disk_text: str = "") -> None:
    console = serial(vm)
    console.cmd(f"echo after > {AFTER}; pkill -f '{PROCESS}' || killall sleep")
    if disk_text:
        console.cmd(f"printf {disk_text} > /dev/vda; sync")


def disk_says(vm: virtlib.BaseVM) -> str:
    return serial(vm).cmd("head -c 6 /dev/vda; echo").strip()


def assert_back_at_snapshot(vm: virtlib.BaseVM, memory: bool = True) -> None:
    console = serial(vm)
    if memory:
        assert console.cmd(f"cat {BEFORE}").strip() == "before"
        assert PROCESS in console.cmd_output("ps"), "the process did not come back"
    assert console.cmd_status(f"test -e {AFTER}") != 0, "a file written after is there"
    ssh = vm.wait_for_login(timeout=60)
    try:
        assert ssh.cmd("echo ssh").strip() == "ssh"
    finally:
        ssh.close()


def libvirt_snapshots(vm: virtlib.BaseVM) -> list[str]:
    conn = libvirt.open(vm.uri)
    try:
        dom = conn.lookupByName(vm.name)
        return sorted(s.getName() for s in dom.listAllSnapshots())
    except libvirt.libvirtError:
        return []
    finally:
        conn.close()


def files_of(vm: virtlib.BaseVM) -> list[str]:
    return [f for s in vm.list_snapshots() for f in s.files]


@pytest.fixture
def disk_vm(vm_factory: VMFactory, qemu_dir: Path) -> Iterator[virtlib.BaseVM]:
    """The bundled guest with a 64 MiB qcow2 disk (vda) that virtlib makes and removes."""
    yield vm_factory(
        "snapdisk",
        guest="bundled",
        images="d1",
        image_name_d1=str(qemu_dir / "d1"),
        image_size_d1="64M",
        create_image_d1="yes",
        remove_image_d1="yes",
    )


def test_bundled_guest_snapshots_its_memory(vm_factory: VMFactory) -> None:
    vm = vm_factory("snapmem")
    before(vm)
    snap = vm.create_snapshot("first", description="a fresh guest")
    assert (snap.kind, snap.memory, snap.disks, snap.parent) == ("external", True, (), None)
    assert snap.memory_file in snap.files
    memory = Path(snap.memory_file)
    assert memory.parent == memory_dir()
    assert stat.S_IMODE(memory.parent.stat().st_mode) == 0o700
    assert memory.stat().st_uid == os.getuid() and not memory.stat().st_mode & 0o077
    assert vm.list_snapshots() == [snap] and vm.current_snapshot() == snap
    assert libvirt_snapshots(vm) == ["first"]
    after(vm)

    vm.revert_snapshot("first")
    assert_back_at_snapshot(vm)
    assert libvirt_snapshots(vm) == ["first"]  # libvirt got its record back

    vm.delete_snapshot("first")
    assert vm.list_snapshots() == [] and vm.current_snapshot() is None
    assert not memory.exists() and libvirt_snapshots(vm) == []
    kept = vm.create_snapshot("kept-until-destroy")
    vm.destroy(gracefully=False)
    assert not Path(kept.memory_file).exists()


def test_internal_snapshots_revert_in_place_and_delete(disk_vm: virtlib.BaseVM) -> None:
    vm = disk_vm
    before(vm, "first_")
    first = vm.create_snapshot("first")
    assert (first.kind, first.memory, first.files) == ("internal", True, ())
    assert [d.name for d in first.disks] == ["d1"]
    after(vm, "second")
    second = vm.create_snapshot("second", description="after")
    assert second.parent == "first" and vm.current_snapshot() == second

    vm.revert_snapshot("first")
    assert_back_at_snapshot(vm)
    assert disk_says(vm) == "first_"
    assert vm.current_snapshot() == first
    vm.revert_snapshot("second")
    assert disk_says(vm) == "second"
    assert serial(vm).cmd(f"cat {AFTER}").strip() == "after"

    vm.delete_snapshot("first")  # its child stays, now a root
    assert [(s.name, s.parent) for s in vm.list_snapshots()] == [("second", None)]
    assert libvirt_snapshots(vm) == ["second"]
    third = vm.create_snapshot("third")
    assert third.parent == "second"
    vm.delete_snapshot("second", children=True)
    assert vm.list_snapshots() == [] and libvirt_snapshots(vm) == []


def test_external_snapshots_with_and_without_memory(vm_factory: VMFactory, qemu_dir: Path) -> None:
    image = qemu_dir / "kept.qcow2"
    virtlib.create_image({"image_name": str(image.with_suffix("")), "image_size": "64M"}, qemu_dir)
    vm = vm_factory("snapext", guest="bundled", images="d1", image_name_d1=str(image)[:-6])
    before(vm, "first_")
    full = vm.create_snapshot("full", kind="external")
    assert (full.kind, full.memory) == ("external", True)
    overlay = Path(full.overlays[0].overlay)
    assert overlay.parent == qemu_dir and overlay.exists()
    after(vm, "second")
    disks = vm.create_snapshot("disks", disk_only=True)
    assert (disks.kind, disks.memory, disks.parent) == ("external", False, "full")
    serial(vm).cmd("printf third_ > /dev/vda; sync")

    vm.revert_snapshot("full")
    assert_back_at_snapshot(vm)
    assert disk_says(vm) == "first_"
    vm.revert_snapshot("disks")  # no memory: the guest boots from the disks as they were
    assert disk_says(vm) == "second"
    assert PROCESS not in serial(vm).cmd_output("ps")

    serial(vm).sendline("poweroff -f")  # a guest that is gone comes back too
    assert wait_for(vm.is_dead, 30)
    vm.revert_snapshot("full")
    assert_back_at_snapshot(vm)
    assert disk_says(vm) == "first_"

    vm.delete_snapshot("disks")
    assert [s.name for s in vm.list_snapshots()] == ["full"]
    serial(vm).cmd("printf latest > /dev/vda; sync")
    made = set(vm.state.owned_files) if vm.state else set()
    assert made and all(Path(f).exists() for f in made)
    vm.destroy(gracefully=False)
    assert sorted(p.name for p in qemu_dir.iterdir()) == ["kept.qcow2"]
    assert not any(Path(f).exists() for f in made)
    # The kept image has what the guest wrote last, as if there had been no snapshot.
    again = vm_factory("snapext2", guest="bundled", images="d1", image_name_d1=str(image)[:-6])
    assert disk_says(again) == "latest"


def test_native_delete_of_an_external_snapshot_merges_it_back(disk_vm: virtlib.BaseVM) -> None:
    vm = disk_vm
    original = vm.spec.disks[0].path
    before(vm, "first_")
    snap = vm.create_snapshot("ext", disk_only=True)
    assert vm.spec.disks[0].path != original
    after(vm, "second")
    vm.delete_snapshot("ext")
    assert vm.list_snapshots() == [] and libvirt_snapshots(vm) == []
    assert vm.spec.disks[0].path == original  # the overlay was merged into the disk
    assert not Path(snap.overlays[0].overlay).exists()
    assert disk_says(vm) == "second"


def test_bad_input_gets_the_right_error_and_changes_nothing(
    vm_factory: VMFactory, disk_vm: virtlib.BaseVM
) -> None:
    diskless = vm_factory("snapbad")
    before(diskless)
    for bad in ("", ".hidden", "a b", "../escape", "x" * 65, 7):
        with pytest.raises(virtlib.VMSnapshotError, match="parameter 'name'") as info:
            diskless.create_snapshot(bad)  # type: ignore[arg-type]
        assert info.value.vm == diskless.name
    with pytest.raises(virtlib.VMSnapshotKindError, match="no writable disk"):
        diskless.create_snapshot("inside", kind="internal")
    with pytest.raises(virtlib.VMSnapshotKindError, match="nothing to snapshot"):
        diskless.create_snapshot("nothing", memory=False)
    with pytest.raises(virtlib.VMSnapshotError, match="parameter 'kind'"):
        diskless.create_snapshot("odd", kind="sideways")
    with pytest.raises(virtlib.VMSnapshotNotFoundError, match="none"):
        diskless.revert_snapshot("never-taken")
    with pytest.raises(virtlib.VMSnapshotNotFoundError):
        diskless.delete_snapshot("never-taken")
    assert diskless.list_snapshots() == [] and libvirt_snapshots(diskless) == []
    assert not list(memory_dir().glob(f"{diskless.name}-*"))
    assert PROCESS in serial(diskless).cmd_output("ps")  # the VM runs as it did

    disk_vm.create_snapshot("inside")
    with pytest.raises(virtlib.VMSnapshotError, match="already"):
        disk_vm.create_snapshot("inside")
    with pytest.raises(virtlib.VMSnapshotKindError, match="hold internal snapshots"):
        disk_vm.create_snapshot("outside", kind="external")
    with pytest.raises(virtlib.VMSnapshotKindError, match="holds its memory"):
        disk_vm.create_snapshot("no-memory", kind="internal", memory=False)
    with pytest.raises(virtlib.VMSnapshotNotFoundError, match="'inside'"):
        disk_vm.revert_snapshot("Inside")
    assert [s.name for s in disk_vm.list_snapshots()] == ["inside"]
    assert serial(disk_vm).cmd("echo alive").strip() == "alive"

    stopped = vm_factory("snapoff", start=False)
    with pytest.raises(virtlib.VMSnapshotKindError, match="not running"):
        stopped.create_snapshot("early")
    assert stopped.list_snapshots() == []


def test_an_adopting_process_sees_the_snapshots_and_destroy_removes_them(
    vm_factory: VMFactory,
) -> None:
    vm = vm_factory("snapadopt")
    before(vm)
    snap = vm.create_snapshot("shared")
    other = virtlib.backend_class("libvirt").adopt(
        vm.name, {"password": "virtlib", "connect_uri": vm.uri}, attach_console=True
    )
    assert other.list_snapshots() == [snap] and other.current_snapshot() == snap
    after(other)
    other.revert_snapshot("shared")
    assert_back_at_snapshot(other)
    other.destroy(gracefully=False)
    assert not Path(snap.memory_file).exists()
    assert not list(memory_dir().glob(f"{vm.name}-*"))


def test_save_and_restore_keep_the_snapshots(disk_vm: virtlib.BaseVM, tmp_path: Path) -> None:
    vm = disk_vm
    before(vm, "first_")
    vm.create_snapshot("kept")
    saved = tmp_path / "vm.state"
    vm.save_to_file(str(saved))
    vm.restore_from_file(str(saved))  # libvirt forgot the snapshot with the stopped QEMU
    assert libvirt_snapshots(vm) == ["kept"] and [s.name for s in vm.list_snapshots()] == ["kept"]
    after(vm, "second")
    vm.revert_snapshot("kept")
    assert_back_at_snapshot(vm)
    assert disk_says(vm) == "first_"
