"""Hotplug on a real distribution: the Debian guest (udev, systemd) sees a disk and a NIC
come and go.  One boot (35-60 s under TCG) serves the module.  Skipped where the tree has
no Debian guest builder or the run is not root."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

import virtlib
from virtlib.pytest_plugin import PLAN
from virtlib.waiting import wait_for

debian = pytest.importorskip("virtlib.guest.debian")

pytestmark = pytest.mark.xdist_group("debian-guest")  # one boot with --dist loadgroup

BOOT_TIMEOUT = 480


@pytest.fixture(scope="module")
def debian_vm(pytestconfig: pytest.Config, libvirt_host: str) -> Iterator[virtlib.BaseVM]:
    if os.geteuid() != 0:
        pytest.skip("building the Debian guest needs root (mmdebstrap)")
    params = virtlib.Params(debian.ensure_debian_guest(log=print).params())
    params.update(
        mem="768", user_net_restrict="yes", password="virtlib-debian", connect_uri=libvirt_host
    )
    plan = pytestconfig.stash[PLAN]
    vm = virtlib.new_vm(plan.vm_name("debian-hp"), params)
    plan.made.append(vm)
    started = time.monotonic()
    vm.create()
    try:
        ssh = vm.wait_for_login(timeout=BOOT_TIMEOUT)
        try:
            ssh.cmd("cloud-init status --wait", timeout=BOOT_TIMEOUT)
        finally:
            ssh.close()
        vm.wait_for_serial_login(timeout=BOOT_TIMEOUT)
        print(f"Debian guest for hotplug: booted in {time.monotonic() - started:.1f} s")
        yield vm
    finally:
        vm.destroy(gracefully=False)


def shell(vm: virtlib.BaseVM) -> virtlib.ShellSession:
    return vm.wait_for_serial_login(timeout=120)


def test_debian_sees_a_disk_by_its_serial_and_loses_it(debian_vm: virtlib.BaseVM) -> None:
    disk = debian_vm.attach_disk(size="64M", name="data")
    assert disk.target == "vdb" and disk.by_id == "/dev/disk/by-id/virtio-data"
    console = shell(debian_vm)
    assert wait_for(lambda: console.cmd_status(f"test -b {disk.by_id}") == 0, 30, 0.5, 2)
    assert console.cmd(f"blockdev --getsize64 {disk.by_id}").strip() == str(64 << 20)
    console.cmd(f"mkfs.ext4 -q {disk.by_id} && mkdir -p /mnt/data && mount {disk.by_id} /mnt/data")
    console.cmd("echo on-the-hotplugged-disk > /mnt/data/file && umount /mnt/data")
    console.cmd(f"mount {disk.by_id} /mnt/data")
    assert console.cmd("cat /mnt/data/file").strip() == "on-the-hotplugged-disk"
    console.cmd("umount /mnt/data")
    debian_vm.detach_disk(disk)
    assert console.cmd_status(f"test -e {disk.by_id}") != 0
    assert "vdb" not in console.cmd("lsblk -n -d -o NAME").split()


def test_debian_nic_gets_an_address_and_carries_ssh(debian_vm: virtlib.BaseVM) -> None:
    nic = debian_vm.attach_nic(redirs=(22,))
    console = shell(debian_vm)
    find = f"grep -l {nic.mac} /sys/class/net/*/address | cut -d/ -f5"
    assert wait_for(lambda: console.cmd(find).strip(), 30, 0.5, 2)
    name = console.cmd(find).strip()
    # udev named it; nothing configured it: bring it up as an admin would
    console.cmd(f"ip link set {name} up; (dhclient -1 {name} || networkctl reconfigure {name})")
    assert wait_for(lambda: "inet 10.0.3." in console.cmd(f"ip -4 addr show {name}"), 60, 1, 3)
    ssh = debian_vm.wait_for_login(nic_index=nic.index, timeout=120)
    try:
        assert "10.0.3.15" in ssh.cmd("echo $SSH_CONNECTION")
    finally:
        ssh.close()
    debian_vm.detach_nic(nic)
    assert console.cmd_status(f"grep -q {nic.mac} /sys/class/net/*/address") != 0
    ssh = debian_vm.wait_for_login(timeout=120)  # the boot NIC still carries SSH
    ssh.close()
