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


def run(ssh: virtlib.ShellSession, command: str) -> str:
    return ssh.cmd(command, timeout=60)


def test_debian_sees_a_disk_and_a_nic_come_and_go(debian_vm: virtlib.BaseVM) -> None:
    """Over SSH (the kernel's hotplug messages go to the serial console)."""
    ssh = debian_vm.wait_for_login(timeout=BOOT_TIMEOUT)
    try:
        _disk(debian_vm, ssh)
        _nic(debian_vm, ssh)
    finally:
        ssh.close()


def _disk(vm: virtlib.BaseVM, ssh: virtlib.ShellSession) -> None:
    """udev names the disk by its serial; it is formatted, written, read back, and goes."""
    disk = vm.attach_disk(size="64M", name="data")
    assert disk.target == "vdb" and disk.by_id == "/dev/disk/by-id/virtio-data"
    assert wait_for(lambda: ssh.cmd_status(f"test -b {disk.by_id}") == 0, 30, 0.5, 2)
    assert run(ssh, f"blockdev --getsize64 {disk.by_id}").strip() == str(64 << 20)
    run(ssh, f"mkfs.ext4 -q {disk.by_id} && mkdir -p /mnt/data && mount {disk.by_id} /mnt/data")
    run(ssh, "echo on-the-hotplugged-disk > /mnt/data/file && umount /mnt/data")
    run(ssh, f"mount {disk.by_id} /mnt/data")
    assert run(ssh, "cat /mnt/data/file").strip() == "on-the-hotplugged-disk"
    run(ssh, "umount /mnt/data")
    vm.detach_disk(disk)
    assert ssh.cmd_status(f"test -e {disk.by_id}") != 0
    assert "vdb" not in run(ssh, "lsblk -n -d -o NAME").split()


def _nic(vm: virtlib.BaseVM, ssh: virtlib.ShellSession) -> None:
    """udev names the NIC; brought up with DHCP, it gets an address and carries SSH."""
    nic = vm.attach_nic(redirs=(22,))
    find = f"grep -l {nic.mac} /sys/class/net/*/address | cut -d/ -f5"
    assert wait_for(lambda: ssh.cmd_output(find).strip(), 30, 0.5, 2)
    name = run(ssh, find).strip()
    # nothing in the image configures a NIC that came later: bring it up as an admin would
    run(ssh, f"ip link set {name} up; dhclient -1 {name} || networkctl reconfigure {name}")
    show = f"ip -4 addr show {name}"
    assert wait_for(lambda: "inet 10.0.3." in ssh.cmd_output(show), 60, 1, 3)
    second = vm.wait_for_login(nic_index=nic.index, timeout=120)
    try:
        assert "10.0.3.15" in second.cmd("echo $SSH_CONNECTION")
    finally:
        second.close()
    vm.detach_nic(nic)
    assert ssh.cmd_status(f"grep -q {nic.mac} /sys/class/net/*/address") != 0
