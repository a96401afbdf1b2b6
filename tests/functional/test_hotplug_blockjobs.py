"""Block jobs on the real libvirtd while the bundled guest writes: commit, copy, pull.

The disk is a qcow2 overlay over a base image holding a known pattern.  A writer in the
guest numbers 64 KiB blocks as fast as it can (each one fsynced) while the job runs,
slowed by ``bandwidth`` so that it lasts seconds; afterwards every block the guest wrote,
and the base's pattern, are read back in the guest and from the image the disk ended on.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import libvirt
import pytest
from functional_support import VMFactory
from lxml import etree

import virtlib
from virtlib.images import create_overlay

BLOCK = 64 * 1024
FIRST = 256  # the writer's blocks start at 16 MiB
LIMIT = 300  # ... and end before 16 MiB + 300 * 64 KiB
WRITER = (
    "rm -f /tmp/stop; i=0; "
    f"while [ ! -e /tmp/stop ] && [ $i -lt {LIMIT} ]; do "
    f"printf 'block-%08d' $i | dd of=/dev/vda bs={BLOCK} seek=$(({FIRST}+i)) conv=sync,fsync "
    "2>/dev/null; i=$((i+1)); echo $i > /tmp/count; done"
)


def qemu_io(image: Path, command: str, fmt: str = "qcow2") -> str:
    argv = ["qemu-io", "-f", fmt, "-c", command, str(image)]
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def serial(vm: virtlib.BaseVM) -> virtlib.ShellSession:
    return vm.wait_for_serial_login(timeout=120)


@pytest.fixture
def chain(qemu_dir: Path) -> tuple[Path, Path]:
    """base.qcow2 (64 MiB, 0x5a in its first MiB) under top.qcow2 (4 MiB of 0xa5 at 4 MiB)."""
    base, top = qemu_dir / "base.qcow2", qemu_dir / "top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    qemu_io(base, "write -P 0x5a 0 1M")
    create_overlay(base, top, "qcow2")
    qemu_io(top, "write -P 0xa5 4M 4M")
    for path in (base, top):
        path.chmod(0o666)
    return base, top


def start_writer(vm: virtlib.BaseVM) -> None:
    serial(vm).cmd(f"({WRITER}) >/dev/null 2>&1 &")


def written(vm: virtlib.BaseVM) -> int:
    out = serial(vm).cmd("cat /tmp/count 2>/dev/null || echo 0")
    return int(out.strip() or 0)


def stop_writer(vm: virtlib.BaseVM) -> int:
    console = serial(vm)
    console.cmd("touch /tmp/stop; while pgrep -f 'block-%08d' >/dev/null; do sleep 0.1; done")
    return written(vm)


def check_in_guest(vm: virtlib.BaseVM, count: int) -> None:
    """The guest reads the base's pattern, the overlay's, and the blocks it wrote."""
    console = serial(vm)
    console.cmd("echo 3 > /proc/sys/vm/drop_caches")
    for fill, skip, length in ((0x5A, 0, 1), (0xA5, 4, 4)):
        read = f"dd if=/dev/vda bs=1M skip={skip} count={length} 2>/dev/null | md5sum"
        expected = hashlib.md5(bytes([fill]) * (length << 20)).hexdigest()  # noqa: S324
        assert console.cmd(read).split()[0] == expected
    for i in sorted({0, count // 2, count - 1} if count else set()):
        read = f"dd if=/dev/vda bs={BLOCK} skip={FIRST + i} count=1 2>/dev/null | head -c 14"
        got = console.cmd(f"{read}; echo").strip()
        assert got == f"block-{i:08d}", (i, got[:20])


def check_image(image: Path, count: int) -> None:
    """The blocks and the base's pattern are in ``image`` (qemu-io reads the whole chain)."""
    assert "Pattern verification failed" not in qemu_io(image, "read -P 0x5a 0 1M")
    assert "Pattern verification failed" not in qemu_io(image, "read -P 0xa5 4M 4M")
    raw = image.with_suffix(".raw")
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True)
    with raw.open("rb") as data:
        for i in range(count):
            data.seek((FIRST + i) * BLOCK)
            assert data.read(14) == f"block-{i:08d}".encode(), i
    raw.unlink()


def disk_sources(vm: virtlib.BaseVM) -> list[str]:
    """Every file of the running domain's disks, their backing chains included."""
    conn = libvirt.open(vm.uri)
    try:
        root = etree.fromstring(conn.lookupByName(vm.name).XMLDesc(0).encode())
    finally:
        conn.close()
    return [str(f) for f in root.xpath("devices/disk//source/@file")]


def test_active_commit_with_pivot_while_the_guest_writes(
    vm_factory: VMFactory, chain: tuple[Path, Path]
) -> None:
    base, top = chain
    vm = vm_factory("hpcommit")
    disk = vm.attach_disk(path=str(top))
    assert disk.target == "vda"
    start_writer(vm)
    seen: list[virtlib.BlockJobProgress] = []
    before = written(vm)
    after = vm.block_commit(disk, bandwidth=1, progress=seen.append)
    during = written(vm)
    count = stop_writer(vm)
    assert after.path == str(base) and vm.disks() == [after]
    assert seen and seen[0].job == "active commit"
    assert during > before, "the guest wrote nothing while the job ran"
    assert str(top) not in disk_sources(vm)
    check_in_guest(vm, count)
    vm.detach_disk(after)
    check_image(base, count)


def test_copy_with_pivot_while_the_guest_writes(
    vm_factory: VMFactory, chain: tuple[Path, Path], qemu_dir: Path
) -> None:
    _base, top = chain
    dest = qemu_dir / "copy.qcow2"
    vm = vm_factory("hpcopy")
    disk = vm.attach_disk(path=str(top))
    start_writer(vm)
    seen: list[virtlib.BlockJobProgress] = []
    before = written(vm)
    after = vm.block_copy(disk, str(dest), bandwidth=2, progress=seen.append)
    during = written(vm)
    count = stop_writer(vm)
    assert after.path == str(dest) and seen and seen[-1].job == "copy"
    assert during > before, "the guest wrote nothing while the job ran"
    assert str(top) not in disk_sources(vm)
    check_in_guest(vm, count)
    vm.detach_disk(after)
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(dest)], check=True, capture_output=True, text=True
    ).stdout
    assert "backing-filename" not in info  # a full copy: the whole chain in one image
    check_image(dest, count)


def test_pull_makes_the_overlay_whole(vm_factory: VMFactory, chain: tuple[Path, Path]) -> None:
    base, top = chain
    vm = vm_factory("hppull")
    disk = vm.attach_disk(path=str(top))
    after = vm.block_pull(disk)
    assert after.path == str(top)
    assert str(base) not in disk_sources(vm)  # libvirt's chain ends at the overlay
    check_in_guest(vm, 0)
    vm.detach_disk(after)
    base.unlink()  # the overlay needs it no more
    assert "Pattern verification failed" not in qemu_io(top, "read -P 0x5a 0 1M")


def test_bad_block_job_input_and_an_aborted_job(
    vm_factory: VMFactory, chain: tuple[Path, Path], qemu_dir: Path
) -> None:
    _base, top = chain
    vm = vm_factory("hpjobbad")
    disk = vm.attach_disk(path=str(top))
    with pytest.raises(virtlib.VMDeviceNotFoundError):
        vm.block_commit("vdz")
    with pytest.raises(virtlib.VMDeviceParamsError) as info:
        vm.block_copy(disk, str(top))
    assert (info.value.param, info.value.value) == ("dest", str(top))
    with pytest.raises(virtlib.VMDeviceParamsError) as info:
        vm.block_commit(disk, base="/nonexistent/base.qcow2")
    assert info.value.param == "base"
    with pytest.raises(virtlib.VMDeviceParamsError):
        vm.block_copy(disk, str(qemu_dir / "copy.qcow2"), bandwidth=-1)

    dest = qemu_dir / "aborted.qcow2"
    with pytest.raises(virtlib.VMBlockJobError) as job:
        vm.block_copy(disk, str(dest), bandwidth=1, progress=lambda p: False)
    assert job.value.vm == vm.name and "aborted" in str(job.value)
    assert not dest.exists()  # the copy's file went with the job
    assert vm.disks()[0].path == str(top)
    assert str(top) in disk_sources(vm)
    check_in_guest(vm, 0)


def test_commit_of_an_external_snapshot_chain(vm_factory: VMFactory, qemu_dir: Path) -> None:
    """A disk-only external snapshot's overlay committed back into the disk's own image."""
    vm = vm_factory(
        "hpsnapcommit", guest="bundled", images="d1", image_name_d1=str(qemu_dir / "d1"),
        image_size_d1="64M", create_image_d1="yes", remove_image_d1="yes",
    )  # fmt: skip
    console = serial(vm)
    console.cmd("printf before > /dev/vda; sync")
    snap = vm.create_snapshot("s1", disk_only=True, kind="external")
    (overlay,) = snap.files
    assert vm.disks()[0].path == overlay
    console.cmd("printf after! > /dev/vda; sync")
    after = vm.block_commit("d1")
    assert after.path == str(qemu_dir / "d1.qcow2")
    assert overlay not in disk_sources(vm)
    console.cmd("echo 3 > /proc/sys/vm/drop_caches")
    assert console.cmd("head -c 6 /dev/vda; echo").strip() == "after!"
    vm.destroy()
    assert not list(qemu_dir.iterdir())  # the image and the overlay went with the VM
