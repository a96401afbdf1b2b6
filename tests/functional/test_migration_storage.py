"""Guests with disks migrate: shared storage, a full copy, an incremental copy; the guest
writes to its disk during the migration and the data is checked on the destination."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from functional_support import VMFactory

import virtlib
from virtlib.images import create_image, create_overlay
from virtlib.secondhost import SecondHost
from virtlib.waiting import wait_for

BLOCKS = 64  # 4 KiB blocks the guest writes, each starting with its number
DISK_MIB = 16
QEMU_USER = "libvirt-qemu"

# Writes block i as "%08d" % i followed by zeros, slowly enough to overlap the migration.
WRITER = (
    f"(i=0; while [ $i -lt {BLOCKS} ]; do "
    "dd if=/dev/zero of=/dev/vda bs=4096 count=1 seek=$i conv=notrunc 2>/dev/null; "
    "printf '%08d' $i | dd of=/dev/vda bs=1 seek=$((i*4096)) conv=notrunc 2>/dev/null; "
    "i=$((i+1)); sleep 0.05; done; sync; echo written > /tmp/writer) >/dev/null 2>&1 &"
)


def expected_md5() -> str:
    data = b"".join(f"{i:08d}".encode().ljust(4096, b"\0") for i in range(BLOCKS))
    return hashlib.md5(data).hexdigest()  # noqa: S324 - a checksum, not security


def guest_md5(vm: virtlib.BaseVM) -> str:
    console = vm.wait_for_serial_login(timeout=60)
    done = wait_for(
        lambda: console.cmd("cat /tmp/writer 2>/dev/null || true").strip() == "written", 60
    )
    assert done, "the guest's writer did not finish"
    console.cmd("echo 3 > /proc/sys/vm/drop_caches")
    return console.cmd(f"dd if=/dev/vda bs=4096 count={BLOCKS} 2>/dev/null | md5sum").split()[0]


def image_md5(vm: virtlib.BaseVM, path: Path, fmt: str) -> str:
    """What the image file itself holds (read with qemu-img while the VM is paused: a
    paused QEMU has written back its image caches)."""
    vm.pause()
    try:
        return _file_md5(path, fmt)
    finally:
        vm.resume()


def _file_md5(path: Path, fmt: str) -> str:
    raw = path.with_suffix(".check.raw")
    subprocess.run(
        ["qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", str(path), str(raw)], check=True
    )
    try:
        with raw.open("rb") as handle:
            return hashlib.md5(handle.read(BLOCKS * 4096)).hexdigest()  # noqa: S324
    finally:
        raw.unlink()


def owner(path: Path) -> str:
    import pwd

    return pwd.getpwuid(os.stat(path).st_uid).pw_name


def disk_vm(
    vm_factory: VMFactory, image: Path, second_host: SecondHost, **params: str
) -> virtlib.BaseVM:
    return vm_factory(
        guest="bundled",
        images="disk1",
        image_name=str(image.with_suffix("")),
        image_format="qcow2",
        migration_dest_uri=second_host.uri,
        **params,
    )


def test_a_writable_local_disk_needs_migration_storage(
    vm_factory: VMFactory, qemu_dir: Path, second_host: SecondHost
) -> None:
    image = Path(create_image({"image_name": str(qemu_dir / "d"), "image_size": "16M"}, "/"))
    vm = disk_vm(vm_factory, image, second_host)
    with pytest.raises(virtlib.VMMigrateFailedError, match="migration_storage"):
        vm.migrate()
    assert vm.is_alive() and vm.uri != second_host.uri


@pytest.mark.parametrize("mode", ["copy", "copy-incremental"])
def test_copy_moves_the_disk_while_the_guest_writes(
    vm_factory: VMFactory, qemu_dir: Path, second_host: SecondHost, mode: str
) -> None:
    if mode == "copy":
        image = Path(create_image({"image_name": str(qemu_dir / "d"), "image_size": "16M"}, "/"))
    else:
        base = Path(create_image({"image_name": str(qemu_dir / "base"), "image_size": "16M"}, "/"))
        image = Path(create_overlay(base, qemu_dir / "d.qcow2", "qcow2"))
    vm = disk_vm(vm_factory, image, second_host, migration_storage=mode)
    vm.wait_for_serial_login(timeout=120).sendline(WRITER)
    vm.migrate()
    assert vm.uri == second_host.uri
    assert vm.state is not None and vm.state.owned_files
    copy = Path(vm.state.owned_files[0])
    assert copy != image and copy.exists()
    assert guest_md5(vm) == expected_md5()
    assert image_md5(vm, copy, "qcow2") == expected_md5()  # the data is in the destination's image
    assert owner(image) == "root"  # the source's file is handed back as it was
    assert owner(copy) == QEMU_USER  # the destination's QEMU owns its copy while it runs
    vm.destroy()
    assert not copy.exists()  # virtlib's copy goes with the VM
    assert image.exists()  # the user's image stays


def test_shared_storage_keeps_one_file_owned_by_qemu(
    vm_factory: VMFactory, qemu_dir: Path, second_host: SecondHost
) -> None:
    image = Path(create_image({"image_name": str(qemu_dir / "d"), "image_size": "16M"}, "/"))
    vm = disk_vm(vm_factory, image, second_host, migration_storage="shared")
    vm.wait_for_serial_login(timeout=120).sendline(WRITER)
    vm.migrate()
    assert vm.uri == second_host.uri
    assert guest_md5(vm) == expected_md5()
    assert image_md5(vm, image, "qcow2") == expected_md5()
    assert owner(image) == QEMU_USER  # not handed back to root while the destination writes
    assert vm.state is not None and vm.state.owned_files == ()
