"""What tests do with a running guest, beyond the contract suite (tests/contract covers
reboots, ctrl-alt-delete, save/restore, crash scan and file copies on every backend)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from functional_support import VMFactory

import virtlib
from virtlib.waiting import wait_for


def serial(vm: virtlib.BaseVM) -> virtlib.ShellSession:
    assert vm.serial_console is not None
    return vm.serial_console


def test_reboot_of_a_guest_that_does_not_go_down(vm_factory: VMFactory) -> None:
    vm = vm_factory(reboot_command="true")
    session = vm.wait_for_login(timeout=120)
    with pytest.raises(virtlib.VMRebootError):
        vm.reboot(session, timeout=5)
    with pytest.raises(virtlib.VMRebootError):
        vm.reboot(method="bogus")


def test_send_string_types_on_the_keyboard(vm: virtlib.BaseVM) -> None:
    """Keys arrive on the guest's keyboard (the foreground virtual terminal), not the serial
    line (ctrl-alt-delete rebooting is in the contract suite). tty1 has a getty reading it, so
    the test reads tty2 in the foreground."""
    console = serial(vm)
    console.cmd("chvt 2")
    console.cmd("(head -n 1 /dev/tty2 > /tmp/typed) >/dev/null 2>&1 &")
    vm.send_string("Hello World-42")
    vm.send_key("ret")
    assert wait_for(lambda: console.cmd("cat /tmp/typed").strip() == "Hello World-42", 10)
    console.cmd("chvt 1")
    with pytest.raises(virtlib.VMParamsError):
        vm.send_key("ctrl-nosuchkey")


def test_copy_to_an_unreachable_guest(vm_factory: VMFactory, tmp_path: Path) -> None:
    vm = vm_factory()
    vm.pause()
    with pytest.raises((virtlib.LoginError, virtlib.TransferError)):
        vm.copy_files_to(str(Path(__file__)), "/tmp/", timeout=3)
    vm.resume()


@pytest.mark.skipif(shutil.which("telnet") is None, reason="no telnet client on this host")
def test_telnet_login(vm_factory: VMFactory) -> None:
    vm = vm_factory(shell_client="telnet", shell_port="23")
    session = vm.wait_for_login(timeout=120)
    try:
        assert session.cmd("echo $((7*6))").strip() == "42"
        assert session.cmd_status("false") == 1
    finally:
        session.close()


@pytest.mark.skipif(shutil.which("nc") is None, reason="no nc client on this host")
def test_nc_login(vm_factory: VMFactory) -> None:
    vm = vm_factory(shell_client="nc", shell_port="2323")
    session = vm.wait_for_login(timeout=120)
    try:
        assert session.cmd("echo $((7*6))").strip() == "42"
        with pytest.raises(virtlib.ShellCmdError) as info:
            session.cmd("ls /no-such-dir")
        assert info.value.status != 0 and "no-such-dir" in info.value.output
    finally:
        session.close()
