"""Checkpoint reset: every test here damages the guest, and each next test gets it clean.

Each test first checks that it got the checkpoint's guest -- logged in on the serial
console, no trace of what the earlier tests did to files, processes, the scratch disk,
the kernel or the params, SSH answering -- then breaks it in its own way: files and
processes, a kernel oops, a panic, a poweroff, a destroy, a paused VM.  The console
shows no new boot: the same logged-in shell comes back every time (a restore, not a
reboot).

Tests run in any order and under xdist: what is compared is per worker.  The last test
runs small pytest sessions to show that ``--virtlib-reset`` chooses.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from functional_support import VMFactory

import virtlib
from virtlib.waiting import wait_for

pytest_plugins = ["pytester"]

MARKER = "/root/left-by-an-earlier-test"
LOGIN_PROMPT = "virtlib-guest login:"
#: worker id -> the VM and how many login prompts its console had, as the first test saw
SEEN: dict[str, tuple[str, int]] = {}


def serial(vm: virtlib.BaseVM) -> virtlib.ShellSession:
    assert vm.serial_console is not None
    return vm.serial_console


def check_clean(vm: virtlib.BaseVM, worker_id: str) -> None:
    """The guest is the checkpoint's, whatever the test before did."""
    console = serial(vm)
    assert vm.is_alive() and not vm.is_paused()
    assert console.cmd_status(f"test -e {MARKER}") != 0, "a file of an earlier test is back"
    assert console.cmd_output("ps").count("sleep 4242") == 0, "a process of an earlier test"
    assert console.cmd("head -c 5 /dev/vda | od -An -c").split() == ["\\0"] * 5
    assert console.cmd("cat /proc/sys/kernel/tainted").strip() == "0"
    assert vm.params.get("virtlib_test_changed", "") == ""
    vm.verify_kernel_crash()
    seen = (vm.name, console.get_output().count(LOGIN_PROMPT))
    assert seen == SEEN.setdefault(worker_id, seen), "not the same VM, or it booted again"
    ssh = vm.wait_for_login(timeout=5)  # answers at once: sshd runs in the checkpoint
    try:
        assert ssh.cmd("echo ssh").strip() == "ssh"
    finally:
        ssh.close()


def test_files_processes_disk_and_params(vm: virtlib.BaseVM, worker_id: str) -> None:
    check_clean(vm, worker_id)
    console = serial(vm)
    console.cmd(f"echo damage > {MARKER}; printf damage > /dev/vda; sync")
    console.cmd("(sleep 4242 &)")
    vm.params["virtlib_test_changed"] = "yes"
    console.sendline("hostname damaged")  # and a prompt the session does not know


def test_kernel_oops(vm: virtlib.BaseVM, worker_id: str) -> None:
    check_clean(vm, worker_id)
    serial(vm).sendline("virtlib-oops")
    assert wait_for(vm.kernel_crash, 30), "no oops"


def test_kernel_panic(vm: virtlib.BaseVM, worker_id: str) -> None:
    check_clean(vm, worker_id)
    serial(vm).sendline("echo c > /proc/sysrq-trigger")
    assert wait_for(vm.is_dead, 30), "the panicked guest is still there"


def test_poweroff(vm: virtlib.BaseVM, worker_id: str) -> None:
    check_clean(vm, worker_id)
    serial(vm).sendline("poweroff -f")
    assert wait_for(vm.is_dead, 30)


def test_destroyed_by_the_test(vm: virtlib.BaseVM, worker_id: str) -> None:
    check_clean(vm, worker_id)
    vm.destroy(gracefully=False)
    assert vm.is_dead()
    SEEN.pop(worker_id)  # the next test gets a new boot, checkpointed again


def test_left_paused_with_a_snapshot_of_its_own(vm: virtlib.BaseVM, worker_id: str) -> None:
    check_clean(vm, worker_id)
    serial(vm).cmd(f"echo damage > {MARKER}")
    vm.create_snapshot("own")
    vm.pause()


def test_the_next_test_gets_none_of_it(vm: virtlib.BaseVM, worker_id: str) -> None:
    check_clean(vm, worker_id)
    assert [s.name for s in vm.list_snapshots()] == ["virtlib-checkpoint"]


def test_reset_by_hand_on_vm_factory(vm_factory: VMFactory) -> None:
    first = vm_factory("byhand", reset="checkpoint")
    serial(first).cmd(f"echo damage > {MARKER}")
    second = vm_factory("byhand", reset="checkpoint")  # the first is in use: another VM
    assert second.name != first.name
    assert serial(second).cmd_status(f"test -e {MARKER}") != 0
    with pytest.raises(ValueError, match="reset"):
        vm_factory(reset="sometimes")


INNER = """
import json, pathlib

def record(vm, name):
    path = pathlib.Path({records!r}) / (name + ".json")
    path.write_text(json.dumps({{"vm": vm.name, "logins": vm.serial_console.get_output().count(
        "virtlib-guest login:")}}))

def test_one(vm):
    record(vm, "one")
    vm.serial_console.cmd("echo one > /root/one")

def test_two(vm):
    record(vm, "two")
    assert vm.serial_console.cmd_status("test -e /root/one") != 0
"""


@pytest.mark.parametrize("mode", ["checkpoint", "boot"])
def test_the_reset_option_chooses(
    pytester: pytest.Pytester, tmp_path: Path, libvirt_host: str, mode: str
) -> None:
    records = tmp_path / "records"
    records.mkdir()
    pytester.makepyfile(test_inner=INNER.format(records=str(records)))
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--virtlib-uri", libvirt_host, "--virtlib-reset", mode,
        timeout=300,
    )  # fmt: skip
    result.assert_outcomes(passed=2)
    one, two = (json.loads((records / f"{n}.json").read_text()) for n in ("one", "two"))
    if mode == "checkpoint":  # the same guest, not booted again
        assert one == two
    else:
        assert one["vm"] != two["vm"]
