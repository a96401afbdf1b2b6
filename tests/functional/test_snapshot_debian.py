"""Snapshots and checkpoint reset on a real distribution: the Debian guest from its own disk.

The guest boots from a per-VM qcow2 overlay over the cached Debian image (``image_snapshot``)
with a cloud-init seed; a boot costs 35-60 s under TCG, so the tests share one kept guest
through ``vm_factory(reset="checkpoint")`` (which is what makes them cheap) and one more
boot proves external snapshots.  Skipped where the tree has no Debian guest builder.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from functional_support import VMFactory

import virtlib
from virtlib.waiting import wait_for

debian = pytest.importorskip("virtlib.guest.debian")

pytestmark = pytest.mark.xdist_group("debian-guest")  # one boot with --dist loadgroup

PASSWORD = "virtlib-debian"  # the test guest's, written into its seed
PROCESS = "sleep 4646"
BEFORE, AFTER = "/root/written-before", "/root/written-after"
#: How long the first boot of the kept guest took (the later requests are compared to it).
FIRST_BOOT: dict[str, float] = {}


@pytest.fixture(scope="session")
def debian_params() -> dict[str, str]:
    if os.geteuid() != 0:
        pytest.skip("building the Debian guest needs root (mmdebstrap)")
    params: dict[str, str] = debian.ensure_debian_guest(log=print).params()
    params.update(mem="768", user_net_restrict="yes")
    params["password"] = PASSWORD
    return params


def kept(vm_factory: VMFactory, params: dict[str, str]) -> virtlib.BaseVM:
    started = time.monotonic()
    vm = vm_factory("debian", reset="checkpoint", **params)
    FIRST_BOOT.setdefault("seconds", time.monotonic() - started)
    return vm


def console(vm: virtlib.BaseVM) -> virtlib.ShellSession:
    return vm.wait_for_serial_login(timeout=120)


def test_internal_snapshot_of_a_debian_guest(
    vm_factory: VMFactory, debian_params: dict[str, str]
) -> None:
    vm = kept(vm_factory, debian_params)
    shell = console(vm)
    shell.cmd(f"echo before > {BEFORE}; ({PROCESS} > /dev/null 2>&1 &)")
    snap = vm.create_snapshot("debian-internal")
    assert (snap.kind, snap.memory, snap.parent) == ("internal", True, "virtlib-checkpoint")
    shell.cmd(f"echo after > {AFTER}; pkill -f '{PROCESS}'; sync")
    vm.revert_snapshot("debian-internal")
    shell = console(vm)
    assert shell.cmd(f"cat {BEFORE}").strip() == "before"
    assert shell.cmd_status(f"test -e {AFTER}") != 0
    assert PROCESS in shell.cmd_output("ps -eo args")
    ssh = vm.wait_for_login(timeout=60)
    try:
        assert ssh.cmd(f"cat {BEFORE}").strip() == "before"
    finally:
        ssh.close()
    vm.delete_snapshot("debian-internal")
    assert [s.name for s in vm.list_snapshots()] == ["virtlib-checkpoint"]


def test_damage_to_a_debian_guest(vm_factory: VMFactory, debian_params: dict[str, str]) -> None:
    vm = kept(vm_factory, debian_params)
    shell = console(vm)
    assert shell.cmd_status("test -e /etc/debian_version") == 0
    shell.cmd("rm -f /etc/debian_version /usr/bin/id; sync")
    shell.sendline("echo b > /proc/sysrq-trigger")  # and a hard reset, left rebooting


def test_the_next_debian_test_finds_it_clean_and_fast(
    vm_factory: VMFactory, debian_params: dict[str, str]
) -> None:
    started = time.monotonic()
    vm = kept(vm_factory, debian_params)
    took = time.monotonic() - started
    shell = console(vm)
    assert shell.cmd_status("test -e /etc/debian_version") == 0
    assert shell.cmd("id -u").strip() == "0"
    if "seconds" in FIRST_BOOT and FIRST_BOOT["seconds"] > took:
        assert took * 5 < FIRST_BOOT["seconds"], f"a reset took {took:.1f} s"


def test_external_snapshots_of_a_debian_guest(
    vm_factory: VMFactory, debian_params: dict[str, str]
) -> None:
    vm = vm_factory("debext", reset="boot", **debian_params)
    shell = console(vm)
    shell.cmd(f"echo before > {BEFORE}; ({PROCESS} > /dev/null 2>&1 &); sync")
    full = vm.create_snapshot("full", kind="external")
    assert (full.kind, full.memory) == ("external", True)
    overlay = Path(full.overlays[0].overlay)
    assert overlay.exists()
    shell.cmd(f"echo after > {AFTER}; pkill -f '{PROCESS}'; sync")
    disks = vm.create_snapshot("disks", disk_only=True)
    assert disks.parent == "full"
    vm.revert_snapshot("full")
    shell = console(vm)
    assert shell.cmd(f"cat {BEFORE}").strip() == "before"
    assert shell.cmd_status(f"test -e {AFTER}") != 0
    assert PROCESS in shell.cmd_output("ps -eo args")
    vm.revert_snapshot("disks")  # the disks alone: Debian boots from them
    # Over SSH: while it boots, cloud-init writes to the serial line, into command output.
    session = vm.wait_for_login(timeout=300)
    assert session.cmd(f"cat {AFTER}").strip() == "after"
    assert PROCESS not in session.cmd_output("ps -eo args")
    session.close()
    files = [f for s in vm.list_snapshots() for f in s.files]
    owned = list(vm.state.owned_files) if vm.state else []
    vm.destroy(gracefully=False)
    assert not any(Path(f).exists() for f in files + owned)


def test_a_panic_of_the_debian_guest_is_seen(
    vm_factory: VMFactory, debian_params: dict[str, str]
) -> None:
    """A real distribution's kernel panic (its own pvpanic driver, loaded by udev) ends the
    domain as crashed within seconds; the last test of the module, as it spends the kept guest."""
    vm = kept(vm_factory, debian_params)
    shell = console(vm)
    assert shell.cmd_status("grep -qw pvpanic /proc/modules") == 0
    shell.sendline("echo c > /proc/sysrq-trigger")
    assert wait_for(vm.is_dead, 30), "the panicked Debian guest still counts as alive"
    with pytest.raises(virtlib.VMDeadError) as dead:
        vm.verify_alive()
    assert dead.value.reason == "crashed"
    with pytest.raises(virtlib.VMDeadKernelCrashError) as crash:
        vm.verify_kernel_crash()
    assert "Kernel panic - not syncing: sysrq triggered crash" in crash.value.kernel_crash
