"""Hotplug on the real libvirtd and the bundled guest: what the guest sees, each way.

Every test attaches something to a running guest, uses it from inside the guest (a disk
of the right size written and read back, a NIC that gets an address and carries SSH,
vCPUs online in ``/sys/devices/system/cpu/online``, ``MemTotal``, a CD's files), detaches
it and checks the guest no longer has it and nothing of it is left on the host.  Bad
input is refused with a VMDeviceError naming the VM, the param and the value, before
libvirt is asked: the domain's devices are as they were.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import libvirt
import pytest
from functional_support import VMFactory

import virtlib
from virtlib.macpool import MacPool
from virtlib.ports import PortPool, port_is_free
from virtlib.waiting import wait_for

MIB = 1 << 20


def serial(vm: virtlib.BaseVM) -> virtlib.ShellSession:
    return vm.wait_for_serial_login(timeout=120)


def guest_has(vm: virtlib.BaseVM, command: str, timeout: float = 20) -> bool:
    """``command`` succeeds in the guest within ``timeout`` s (devices appear asynchronously)."""
    console = serial(vm)
    return bool(wait_for(lambda: console.cmd_status(command) == 0, timeout, 0.2, 1.0))


def block_devices(vm: virtlib.BaseVM) -> list[str]:
    return serial(vm).cmd("ls /sys/block").split()


def mem_total_kib(vm: virtlib.BaseVM) -> int:
    line = serial(vm).cmd("grep MemTotal /proc/meminfo")
    return int(line.split()[1])


def live_xml(vm: virtlib.BaseVM) -> str:
    conn = libvirt.open(vm.uri)
    try:
        return str(conn.lookupByName(vm.name).XMLDesc(0))
    finally:
        conn.close()


def reservations(vm: virtlib.BaseVM) -> tuple[list[str], list[str]]:
    macs = [k for k in MacPool(partition=vm.partition).reserved() if k.startswith(vm.instance)]
    ports = [k for k in PortPool(partition=vm.partition).table.rows() if k.startswith(vm.instance)]
    return sorted(macs), sorted(ports)


# --- disks ------------------------------------------------------------------------------------
def test_disk_attach_write_read_detach(vm_factory: VMFactory) -> None:
    vm = vm_factory("hpdisk")
    assert block_devices(vm) == [] and vm.disks() == []
    disk = vm.attach_disk(size="64M")
    assert (disk.bus, disk.format, disk.serial) == ("virtio", "qcow2", disk.name)
    assert Path(disk.path).is_file() and Path(disk.path).parent.name.startswith(vm.name)
    assert vm.disks() == [disk]
    dev = f"/dev/{disk.target}"
    assert guest_has(vm, f"test -b {dev} && test -L {disk.by_id}")
    console = serial(vm)
    assert console.cmd(f"readlink -f {disk.by_id}").strip() == dev
    sectors = int(console.cmd(f"cat /sys/block/{disk.target}/size"))
    assert sectors * 512 == 64 * MIB
    console.cmd("dd if=/dev/urandom of=/root/pattern bs=1M count=2 2>/dev/null; sync")
    console.cmd(f"dd if=/root/pattern of={dev} bs=1M seek=3 conv=fsync 2>/dev/null")
    console.cmd("echo 3 > /proc/sys/vm/drop_caches")
    written = console.cmd("md5sum < /root/pattern").split()[0]
    read = console.cmd(f"dd if={dev} bs=1M skip=3 count=2 2>/dev/null | md5sum").split()[0]
    assert read == written

    vm.detach_disk(disk)
    assert disk.target not in block_devices(vm)
    assert console.cmd_status(f"test -e {disk.by_id}") != 0
    assert vm.disks() == [] and not Path(disk.path).exists()  # the image virtlib made is gone
    assert disk.path not in live_xml(vm)


def test_disk_of_a_given_image_and_readonly(vm_factory: VMFactory, qemu_dir: Path) -> None:
    image = qemu_dir / "given.raw"
    image.write_bytes(b"virtlib-given-image".ljust(4 * MIB, b"\0"))
    image.chmod(0o644)
    vm = vm_factory("hpgiven")
    disk = vm.attach_disk(path=str(image), image_format="raw", readonly=True, name="given")
    assert (disk.name, disk.format, disk.readonly, disk.path) == ("given", "raw", True, str(image))
    dev = f"/dev/{disk.target}"
    assert guest_has(vm, f"test -b {dev}")
    console = serial(vm)
    assert console.cmd(f"head -c 19 {dev}; echo").strip() == "virtlib-given-image"
    assert console.cmd(f"cat /sys/block/{disk.target}/ro").strip() == "1"
    vm.detach_disk("given")
    assert disk.target not in block_devices(vm)
    assert image.exists()  # not virtlib's: kept


# --- NICs -------------------------------------------------------------------------------------
def test_nic_attach_gets_an_address_carries_ssh_and_detaches(vm_factory: VMFactory) -> None:
    vm = vm_factory("hpnic")
    before = reservations(vm)
    nic = vm.attach_nic(redirs=(22,))
    assert (nic.index, nic.nettype, nic.model) == (1, "user", "virtio")
    assert vm.get_mac_address(nic.index) == nic.mac
    assert vm.get_port(22, nic.index) == nic.forwards[22] != vm.get_port(22, 0)
    assert [n.index for n in vm.nics()] == [0, 1]
    address = f"ip -4 addr show $(grep -l {nic.mac} /sys/class/net/*/address | cut -d/ -f5)"
    assert guest_has(vm, f"{address} | grep -q 'inet 10.0.3.'", timeout=30)
    ssh = vm.wait_for_login(nic_index=nic.index, timeout=60)
    try:
        assert ssh.cmd("hostname").strip() == "virtlib-guest"
        # SSH came in over the new NIC: the server side of the connection is its address
        assert "10.0.3.15" in ssh.cmd("echo $SSH_CONNECTION")
    finally:
        ssh.close()
    assert len(reservations(vm)[0]) == len(before[0]) + 1

    vm.detach_nic(nic)
    console = serial(vm)
    assert console.cmd_status(f"grep -q {nic.mac} /sys/class/net/*/address") != 0
    assert [n.index for n in vm.nics()] == [0]
    assert reservations(vm) == before  # its MAC and port are free again
    assert wait_for(lambda: port_is_free(nic.forwards[22]), 10)  # QEMU let go of it
    ssh = vm.wait_for_login(timeout=60)  # the boot NIC still carries SSH
    ssh.close()


# --- vCPUs and memory -----------------------------------------------------------------------
def test_vcpus_plug_online_and_offline(vm_factory: VMFactory) -> None:
    vm = vm_factory("hpcpu", smp="1", vcpus_max="2")
    console = serial(vm)
    assert console.cmd("cat /sys/devices/system/cpu/online").strip() == "0"
    vm.set_vcpus(2)
    assert guest_has(vm, "grep -qx 0-1 /sys/devices/system/cpu/online")
    assert vm.get_cpu_count() == 2
    with pytest.raises(virtlib.VMDeviceParamsError) as info:
        vm.set_vcpus(3)
    assert (info.value.vm, info.value.param, info.value.value) == (vm.name, "count", 3)
    # TCG's QEMU cannot unplug vCPUs safely: the guest takes one offline instead
    vm.set_vcpus(1, guest=True)
    assert guest_has(vm, "grep -qx 0 /sys/devices/system/cpu/online")
    assert console.cmd("cat /sys/devices/system/cpu/cpu1/online").strip() == "0"


def test_memory_balloon(vm_factory: VMFactory) -> None:
    vm = vm_factory("hpballoon", mem="256")
    full = mem_total_kib(vm)
    vm.set_memory(192)
    assert wait_for(lambda: mem_total_kib(vm) <= full - 60 * 1024, 20, 0.2, 1.0)
    vm.set_memory(256)
    assert wait_for(lambda: mem_total_kib(vm) == full, 20, 0.2, 1.0)
    with pytest.raises(virtlib.VMDeviceParamsError) as info:
        vm.set_memory(4096)
    assert (info.value.param, info.value.value) == ("mib", 4096) and vm.name in str(info.value)


def test_memory_dimm_attach_detach(vm_factory: VMFactory) -> None:
    vm = vm_factory("hpdimm", mem="256", mem_max="1024", mem_slots="2")
    before = mem_total_kib(vm)
    dimm = vm.attach_memory(128)
    assert dimm.size_mib == 128
    assert wait_for(lambda: mem_total_kib(vm) == before + 128 * 1024, 20, 0.2, 1.0)
    assert "<memory model='dimm'" in live_xml(vm)
    vm.detach_memory(dimm)
    assert mem_total_kib(vm) == before
    assert "<memory model='dimm'" not in live_xml(vm)
    with pytest.raises(virtlib.VMDeviceParamsError):
        vm.attach_memory(100)  # not a multiple of the guest's 128 MiB memory block
    with pytest.raises(virtlib.VMDeviceNotFoundError):
        vm.detach_memory(dimm)


# --- CD-ROMs --------------------------------------------------------------------------------
def _iso(directory: Path, name: str, text: str) -> Path:
    content = directory / f"{name}-content"
    content.mkdir()
    (content / "hello.txt").write_text(text)
    iso = directory / f"{name}.iso"
    subprocess.run(
        ["genisoimage", "-quiet", "-V", name.upper(), "-o", str(iso), str(content)], check=True
    )
    iso.chmod(0o644)
    return iso


def test_media_change_and_eject(vm_factory: VMFactory, qemu_dir: Path) -> None:
    if shutil.which("genisoimage") is None:
        pytest.skip("genisoimage is not installed")
    first, second = _iso(qemu_dir, "first", "one\n"), _iso(qemu_dir, "second", "two\n")
    vm = vm_factory("hpcd", guest="bundled", cdroms="cd1", cdrom_cd1="", cd_format_cd1="ide")
    console = serial(vm)
    console.cmd("mkdir -p /mnt/cd")
    mount = "mount -t iso9660 -o ro /dev/sr0 /mnt/cd"
    assert console.cmd_status(mount) != 0  # an empty drive
    for iso, text in ((first, "one"), (second, "two")):
        vm.change_media("cd1", str(iso))
        assert guest_has(vm, mount)
        assert console.cmd("cat /mnt/cd/hello.txt").strip() == text
        console.cmd("umount /mnt/cd")
        assert str(iso) in live_xml(vm)
    vm.eject_media("cd1")
    assert console.cmd_status(mount) != 0
    assert str(second) not in live_xml(vm)
    with pytest.raises(virtlib.VMDeviceNotFoundError):
        vm.change_media("cd9", str(first))
    with pytest.raises(virtlib.VMFileMissingError):
        vm.change_media("cd1", str(qemu_dir / "missing.iso"))


# --- params-driven: boot_drive = no ----------------------------------------------------------
def test_configured_devices_kept_out_of_boot_attach_by_name(
    vm_factory: VMFactory, qemu_dir: Path
) -> None:
    vm = vm_factory(
        "hpparams",
        guest="bundled",
        images="spare",
        image_name_spare=str(qemu_dir / "spare"),
        image_size_spare="32M",
        create_image_spare="yes",
        remove_image_spare="yes",
        boot_drive_spare="no",
        nics="nic1 nic2",
        boot_drive_nic2="no",
        redirs_nic2="ssh2",
        guest_port_ssh2="22",
    )
    console = serial(vm)
    assert block_devices(vm) == []
    assert console.cmd("ls /sys/class/net").split() == ["eth0", "lo"]
    disk = vm.attach_disk(name="spare")
    assert disk.name == "spare" and disk.path == str(qemu_dir / "spare.qcow2")
    assert guest_has(vm, f"test -b /dev/{disk.target}")
    assert int(console.cmd(f"cat /sys/block/{disk.target}/size")) * 512 == 32 * MIB
    nic = vm.attach_nic(name="nic2")
    assert (nic.name, nic.index) == ("nic2", 1) and 22 in nic.forwards
    ssh = vm.wait_for_login(nic_index=1, timeout=60)
    ssh.close()
    vm.detach_nic("nic2")
    vm.detach_disk("spare")
    assert block_devices(vm) == []
    assert wait_for(lambda: console.cmd("ls /sys/class/net").split() == ["eth0", "lo"], 10)


# --- bad input: refused before libvirt is asked, nothing half-attached ------------------------
def test_bad_input_is_refused_and_leaves_the_vm_as_it_was(vm_factory: VMFactory) -> None:
    vm = vm_factory("hpbad", vcpus_max="2")
    xml, held = live_xml(vm), reservations(vm)
    bad = [
        (lambda: vm.attach_disk(size="10Q"), "size", "10Q"),
        (lambda: vm.attach_disk(bus="ide"), "bus", "ide"),
        (lambda: vm.attach_disk(image_format="vmdk9"), "image_format", "vmdk9"),
        (lambda: vm.attach_disk(name="bad name"), "name", "bad name"),
        (lambda: vm.set_vcpus(3), "count", 3),
        (lambda: vm.set_vcpus(0), "count", 0),
        (lambda: vm.attach_nic(nettype="pigeon"), "nettype", "pigeon"),
        (lambda: vm.attach_nic(mac="not-a-mac"), "mac", "not-a-mac"),
        (lambda: vm.attach_nic(redirs=(70000,)), "redirs", 70000),
        (lambda: vm.attach_memory(128), "mib", 128),  # no mem_slots
    ]
    for call, param, value in bad:
        with pytest.raises(virtlib.VMDeviceParamsError) as info:
            call()
        error = info.value
        assert isinstance(error, virtlib.VMDeviceError) and isinstance(error, virtlib.VMParamsError)
        assert (error.vm, error.param, error.value) == (vm.name, param, value)
        assert vm.name in str(error) and param in str(error) and repr(value) in str(error)
    for call in (lambda: vm.detach_disk("vdz"), lambda: vm.detach_nic(7)):
        with pytest.raises(virtlib.VMDeviceNotFoundError) as found:
            call()
        assert found.value.vm == vm.name
    with pytest.raises(virtlib.VMFileMissingError):
        vm.attach_disk(path="/nonexistent/disk.qcow2")
    assert live_xml(vm) == xml and reservations(vm) == held
    assert vm.disks() == [] and len(vm.nics()) == 1
    ssh = vm.wait_for_login(timeout=60)
    ssh.close()


# --- a hotplugged VM saved and restored ---------------------------------------------------------
def test_hotplugged_devices_survive_save_and_restore(vm_factory: VMFactory, tmp_path: Path) -> None:
    vm = vm_factory("hpsave")
    disk = vm.attach_disk(size="16M")
    nic = vm.attach_nic(redirs=(22,))
    assert guest_has(vm, f"test -b /dev/{disk.target}")
    serial(vm).cmd(f"echo kept > /dev/{disk.target}; sync")
    state = tmp_path / "saved.state"
    vm.save_to_file(str(state))
    vm.restore_from_file(str(state))
    assert vm.disks() == [disk] and [n.index for n in vm.nics()] == [0, 1]
    console = serial(vm)
    assert console.cmd(f"head -c 4 /dev/{disk.target}; echo").strip() == "kept"
    ssh = vm.wait_for_login(nic_index=nic.index, timeout=60)
    ssh.close()
    vm.detach_nic(nic)
    vm.detach_disk(disk)
    assert disk.target not in block_devices(vm)


# --- a guest that does not release the device ---------------------------------------------------
def test_unplug_a_guest_ignores_times_out_and_keeps_the_device(vm_factory: VMFactory) -> None:
    """Without ACPI the guest never hears the unplug request: the deadline, a named error,
    and the disk still attached and recorded (it goes with destroy)."""
    vm = vm_factory("hpnoacpi", kernel_args="acpi=off")
    disk = vm.attach_disk(size="8M")
    with pytest.raises(virtlib.VMDeviceTimeoutError) as info:
        vm.detach_disk(disk, timeout=2)
    assert (info.value.vm, info.value.device) == (vm.name, disk.name)
    assert "within 2 s" in str(info.value)
    assert vm.disks() == [disk] and disk.path in live_xml(vm)
    assert Path(disk.path).exists()
    vm.destroy(gracefully=False)
    assert not Path(disk.path).exists()


# --- persistent=True: the next boot has the change ------------------------------------------------
def test_persistent_changes_are_in_the_next_boot(vm_factory: VMFactory, qemu_dir: Path) -> None:
    image = qemu_dir / "kept.raw"
    image.write_bytes(b"persistent-disk".ljust(MIB, b"\0"))
    image.chmod(0o644)
    vm = vm_factory("hppersist", vcpus_max="2")
    disk = vm.attach_disk(path=str(image), image_format="raw", name="kept", persistent=True)
    vm.set_vcpus(2, persistent=True)
    with pytest.raises(virtlib.VMDeviceParamsError) as info:
        vm.attach_disk(size="8M", persistent=True)  # an image virtlib makes goes with the disk
    assert info.value.param == "persistent"
    vm.destroy(gracefully=False)
    vm.create()
    console = serial(vm)
    assert console.cmd(f"head -c 15 /dev/{disk.target}; echo").strip() == "persistent-disk"
    assert console.cmd("cat /sys/devices/system/cpu/online").strip() == "0-1"
    vm.detach_disk("kept", persistent=True)
    vm.destroy(gracefully=False)
    vm.create()
    assert block_devices(vm) == [] and image.exists()


def test_disk_on_the_virtio_scsi_controller(vm_factory: VMFactory, qemu_dir: Path) -> None:
    """A configured scsi disk kept out of the boot (boot_drive = no) gives the VM its
    virtio-scsi controller; a new disk goes on it."""
    vm = vm_factory(
        "hpscsi", guest="bundled", images="s0", image_name_s0=str(qemu_dir / "s0"),
        image_size_s0="8M", create_image_s0="yes", remove_image_s0="yes",
        drive_format_s0="scsi", boot_drive_s0="no",
    )  # fmt: skip
    disk = vm.attach_disk(size="16M", bus="scsi")
    assert disk.bus == "scsi" and disk.target.startswith("sd")
    # the guest names SCSI disks in the order it finds them (sda here, libvirt's sdb)
    assert guest_has(vm, "test -b /dev/sda")
    assert int(serial(vm).cmd("cat /sys/block/sda/size")) * 512 == 16 * MIB
    assert "QEMU HARDDISK" in serial(vm).cmd("cat /sys/block/sda/device/model")
    vm.detach_disk(disk)
    assert "sda" not in block_devices(vm)
