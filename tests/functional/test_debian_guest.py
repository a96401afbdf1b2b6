"""A real distribution: the Debian guest boots from its own disk through cloud-init.

Everything runs with virtlib's defaults (prompt, NIC slot, login): the params are the
ones a Debian genericcloud or Fedora Cloud qcow2 needs (an image, ``image_snapshot``,
``cloudinit``, a password).  A Debian boot costs 35-60 s under TCG, so one VM serves
the module's tests and the overlay test adds one more, side by side with it.
The image is built on first use (about a minute, root only) and cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import libvirt_qemu
import pytest
from functional_support import VMFactory, domain_names

import virtlib
from virtlib import media
from virtlib.backends.libvirt.domain import LibvirtVM
from virtlib.guest.debian import DebianImage, ensure_debian_guest
from virtlib.pytest_plugin import PLAN
from virtlib.secondhost import SecondHost

pytestmark = pytest.mark.xdist_group("debian-guest")  # one boot with --dist loadgroup

BOOT_TIMEOUT = 480  # a loaded 2-core machine took 210 s to a quiet console


@pytest.fixture(scope="session")
def debian_image() -> DebianImage:
    if os.geteuid() != 0:
        pytest.skip("building the Debian guest needs root (mmdebstrap)")
    return ensure_debian_guest(log=print)


def debian_params(image: DebianImage, **extra: str) -> dict[str, str]:
    """The params of a cloud image: the disk through an overlay, a seed, a password."""
    params = image.params()
    params.update(
        password="virtlib-debian",
        mem="768",
        user_net_restrict="yes",  # the guest reaches nothing but QEMU's DHCP and our forwards
    )
    params.update(extra)
    return params


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def debian_vm(
    pytestconfig: pytest.Config, debian_image: DebianImage, libvirt_host: str
) -> Iterator[virtlib.BaseVM]:
    """One Debian VM for the module, booted (cloud-init done), logged in on its serial console.

    Until the boot is over, systemd and cloud-init write to the serial line the shell
    uses; SSH waits for the end of the boot first."""
    plan = pytestconfig.stash[PLAN]
    params = virtlib.Params(debian_params(debian_image, connect_uri=libvirt_host))
    vm = virtlib.new_vm(plan.vm_name("debian"), params)
    plan.made.append(vm)
    started = time.monotonic()
    vm.create()
    try:
        ssh = vm.wait_for_login(timeout=BOOT_TIMEOUT)
        print(f"Debian guest: SSH login {time.monotonic() - started:.1f} s after create")
        try:
            ssh.cmd("cloud-init status --wait", timeout=BOOT_TIMEOUT)
        finally:
            ssh.close()
        vm.wait_for_serial_login(timeout=BOOT_TIMEOUT)
        print(f"Debian guest: booted, serial login {time.monotonic() - started:.1f} s")
        yield vm
    finally:
        vm.destroy(gracefully=False)


def test_boots_from_its_own_disk_through_cloud_init(debian_vm: virtlib.BaseVM) -> None:
    serial = debian_vm.serial_console
    assert serial is not None
    assert serial.cmd("hostname").strip() == debian_vm.spec.cloudinit.hostname
    cmdline = serial.cmd("cat /proc/cmdline")
    assert "console=ttyS0" in cmdline and "root=UUID=" in cmdline  # GRUB's, not virtlib's
    assert isinstance(debian_vm, LibvirtVM)
    assert "<kernel>" not in debian_vm.xml
    assert serial.cmd("findmnt -n -o SOURCE /").strip() == "/dev/vda1"
    assert serial.cmd("cloud-init status").strip() == "status: done"
    # Its first boot: the seed's instance id, the NIC where images made for QEMU expect it.
    assert debian_vm.instance in serial.cmd("cloud-init query instance_id")
    assert "ens3" in serial.cmd("ip -o link show")
    boot_log = serial.get_output()
    assert "Booting `Debian GNU/Linux 12'" in boot_log  # GRUB's menu entry
    assert "Invalid cloud-config" not in boot_log  # the image's and virtlib's configuration
    assert "fsck not present" not in boot_log


def test_serial_commands_have_their_status_and_output(debian_vm: virtlib.BaseVM) -> None:
    serial = debian_vm.serial_console
    assert serial is not None
    assert serial.cmd("echo $((6*7))") == "42\n"
    status, output = serial.cmd_status_output("ls /nonexistent")
    assert status == 2 and "No such file or directory" in output
    assert serial.cmd_status_output("true") == (0, "")
    assert serial.cmd("printf 'a\\nb\\nc\\n'") == "a\nb\nc\n"
    with pytest.raises(virtlib.ShellCmdError) as caught:
        serial.cmd("exit_status_seven() { return 7; }; exit_status_seven")
    assert caught.value.status == 7
    long_command = "echo " + "x" * 150  # longer than the serial terminal's 80 columns
    assert serial.cmd(long_command).strip() == "x" * 150


def test_ssh_login_commands_and_files(debian_vm: virtlib.BaseVM, tmp_path: Path) -> None:
    ssh = debian_vm.wait_for_login(timeout=BOOT_TIMEOUT)
    try:
        assert ssh.cmd("id -u").strip() == "0"
        assert ssh.cmd_status_output("false") == (1, "")
        assert ssh.cmd("uname -r").strip().endswith("-cloud-amd64")
    finally:
        ssh.close()
    sent = tmp_path / "sent.txt"
    sent.write_text("to the Debian guest\n")
    debian_vm.copy_files_to(str(sent), "/root/")
    debian_vm.copy_files_from("/root/sent.txt", str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_text() == "to the Debian guest\n"


def test_guest_agent_answers_on_its_channel(debian_vm: virtlib.BaseVM, libvirt_host: str) -> None:
    conn = libvirt.open(libvirt_host)
    try:
        dom = conn.lookupByName(debian_vm.name)
        assert "org.qemu.guest_agent.0" in dom.XMLDesc(0)
        deadline = time.monotonic() + 120
        while True:
            try:
                reply = libvirt_qemu.qemuAgentCommand(dom, '{"execute":"guest-ping"}', 10, 0)
                break
            except libvirt.libvirtError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        assert json.loads(reply) == {"return": {}}
        info = libvirt_qemu.qemuAgentCommand(dom, '{"execute":"guest-get-osinfo"}', 10, 0)
        assert json.loads(info)["return"]["id"] == "debian"
    finally:
        conn.close()


def test_two_vms_from_one_base_and_nothing_left(
    debian_vm: virtlib.BaseVM,
    vm_factory: VMFactory,
    debian_image: DebianImage,
    libvirt_host: str,
) -> None:
    base_before = sha256(debian_image.disk)
    second = vm_factory("debian2", **debian_params(debian_image))
    first_ssh = debian_vm.wait_for_login(timeout=BOOT_TIMEOUT)
    second_ssh = second.wait_for_login(timeout=BOOT_TIMEOUT)
    try:
        first_ssh.cmd("echo first > /root/whoami && sync")
        second_ssh.cmd("echo second > /root/whoami && sync")
        assert first_ssh.cmd("cat /root/whoami") == "first\n"
        assert second_ssh.cmd("cat /root/whoami") == "second\n"
        assert second_ssh.cmd("hostname").strip() == second.spec.cloudinit.hostname
    finally:
        first_ssh.close()
        second_ssh.close()
    workdir = second.workdir
    media_dir = media.media_dir(second.name, second.instance)
    made = sorted(p.name for p in media_dir.iterdir())
    assert made == ["cloudinit-seed.iso", "image1.overlay.qcow2"]
    assert stat.S_IMODE(media_dir.stat().st_mode) == 0o710  # QEMU's group may only search it

    second.destroy()

    assert second.name not in domain_names(libvirt_host)
    assert not workdir.exists() and not media_dir.exists()  # private dir, overlay, seed
    assert sha256(debian_image.disk) == base_before
    assert debian_vm.serial_console is not None
    assert debian_vm.serial_console.cmd("cat /root/whoami") == "first\n"


# --- the rest of the contract on a real distribution (the module's VM, in this order) -------


def test_every_agent_call_on_debian(debian_vm: virtlib.BaseVM) -> None:
    agent = debian_vm.guest_agent()
    agent.wait(timeout=BOOT_TIMEOUT)
    assert agent.os_info()["id"] == "debian"
    result = agent.run(["/bin/sh", "-c", "cat /etc/debian_version; echo oops >&2; exit 4"])
    assert result.status == 4 and result.stdout.startswith("12.") and result.stderr == "oops\n"
    agent.write_file("/root/from-the-agent", b"written by qemu-ga\n")
    assert agent.read_file("/root/from-the-agent") == b"written by qemu-ga\n"
    nic = {i.mac: i for i in agent.interfaces()}[debian_vm.get_mac_address(0)]
    assert nic.name == "ens3" and any(a.startswith("10.0.2.") for a in nic.addresses)
    assert agent.fsfreeze() >= 1  # the root filesystem at least
    assert agent.fsthaw() >= 1
    agent.sync_time()
    agent.set_password("root", "changed-by-agent")
    try:
        session = debian_vm.wait_for_login(timeout=60, password="changed-by-agent")
        session.close()
    finally:
        agent.set_password("root", debian_vm.spec.login.password)


def test_save_and_restore_keep_the_guest_state(debian_vm: virtlib.BaseVM, qemu_dir: Path) -> None:
    serial = debian_vm.wait_for_serial_login(timeout=BOOT_TIMEOUT)
    serial.cmd("echo kept-in-memory > /dev/shm/marker")
    state_file = qemu_dir / "debian.state"
    debian_vm.save_to_file(str(state_file))
    assert debian_vm.is_dead()
    debian_vm.restore_from_file(str(state_file))
    serial = debian_vm.wait_for_serial_login(timeout=BOOT_TIMEOUT)
    assert serial.cmd("cat /dev/shm/marker").strip() == "kept-in-memory"


@pytest.mark.parametrize("method", ["shell", "system_reset"])
def test_reboot_comes_back(debian_vm: virtlib.BaseVM, method: str) -> None:
    ssh = debian_vm.wait_for_login(timeout=BOOT_TIMEOUT)
    boot_id = ssh.cmd("cat /proc/sys/kernel/random/boot_id").strip()
    started = time.monotonic()
    ssh = debian_vm.reboot(ssh, method=method, timeout=BOOT_TIMEOUT)
    print(f"Debian guest: {method} reboot back over SSH in {time.monotonic() - started:.1f} s")
    try:
        assert ssh.cmd("cat /proc/sys/kernel/random/boot_id").strip() != boot_id
        ssh.cmd("systemctl is-system-running --wait || true", timeout=BOOT_TIMEOUT)
    finally:
        ssh.close()


def test_migrates_with_its_overlay_copied(
    debian_vm: virtlib.BaseVM, second_host: SecondHost
) -> None:
    ssh = debian_vm.wait_for_login(timeout=BOOT_TIMEOUT)
    ssh.cmd("echo before-migration > /root/moved && sync")
    ssh.close()
    debian_vm.params["migration_dest_uri"] = second_host.uri
    debian_vm.params["migration_storage"] = "copy-incremental"  # the base is on both sides
    debian_vm.migrate()
    assert debian_vm.uri == second_host.uri
    ssh = debian_vm.wait_for_login(timeout=BOOT_TIMEOUT)
    try:
        assert ssh.cmd("cat /root/moved").strip() == "before-migration"
        ssh.cmd("echo after-migration >> /root/moved && sync")
        assert ssh.cmd("tail -1 /root/moved").strip() == "after-migration"
    finally:
        ssh.close()


def test_graceful_destroy_is_the_guest_powering_off(debian_vm: virtlib.BaseVM) -> None:
    assert isinstance(debian_vm, LibvirtVM)
    started = time.monotonic()
    debian_vm.destroy(gracefully=True)
    print(f"Debian guest: graceful destroy in {time.monotonic() - started:.1f} s")
    assert debian_vm.stop_reason == "shutdown"  # systemd powered it off; no hard destroy
    assert debian_vm.is_dead()
