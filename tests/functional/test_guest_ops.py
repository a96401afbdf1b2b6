"""What tests do with a running guest: reboot, keys, save/restore, crashes, files, clients."""

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


def boot_id(session: virtlib.ShellSession) -> str:
    return session.cmd("cat /proc/sys/kernel/random/boot_id").strip()


@pytest.mark.parametrize("method", ["shell", "system_reset"])
def test_reboot_comes_back_with_a_new_boot(vm_factory: VMFactory, method: str) -> None:
    vm = vm_factory()
    session = vm.wait_for_login(timeout=120)
    before = boot_id(session)
    session = vm.reboot(session, method=method, timeout=120)
    try:
        assert boot_id(session) != before
    finally:
        session.close()
    # The serial console stayed attached through the reboot.
    assert serial(vm).get_output().count("virtlib-guest login:") >= 2


def test_reboot_of_a_guest_that_does_not_go_down(vm_factory: VMFactory) -> None:
    vm = vm_factory(reboot_command="true")
    session = vm.wait_for_login(timeout=120)
    with pytest.raises(virtlib.VMRebootError):
        vm.reboot(session, timeout=5)
    with pytest.raises(virtlib.VMRebootError):
        vm.reboot(method="bogus")


def test_ctrl_alt_delete_reboots_and_send_string_types(vm: virtlib.BaseVM) -> None:
    console = serial(vm)
    console.cmd("(head -n 1 /dev/tty1 > /tmp/typed) >/dev/null 2>&1 &")
    vm.send_string("Hello World-42")
    vm.send_key("ret")
    assert wait_for(lambda: console.cmd("cat /tmp/typed").strip() == "Hello World-42", 10)
    before = boot_id(console)
    seen = len(console.get_output())
    vm.send_key("ctrl-alt-delete")
    assert wait_for(lambda: "login:" in console.get_output()[seen:], 120), "no reboot"
    vm.wait_for_serial_login(timeout=120)
    assert boot_id(console) != before
    with pytest.raises(virtlib.VMParamsError):
        vm.send_key("ctrl-nosuchkey")


def test_save_and_restore_keep_the_guest_state(vm_factory: VMFactory, tmp_path: Path) -> None:
    vm = vm_factory()
    console = vm.wait_for_serial_login(timeout=120)
    console.cmd("echo remembered > /tmp/state")
    state = tmp_path / "saved.state"
    vm.save_to_file(str(state))
    assert vm.is_dead() and state.stat().st_size > 0
    vm.restore_from_file(str(state))
    assert vm.is_alive()
    assert console.cmd("cat /tmp/state").strip() == "remembered"
    session = vm.wait_for_login(timeout=60)
    assert session.cmd("cat /tmp/state").strip() == "remembered"
    session.close()


def test_kernel_crash_is_detected(vm: virtlib.BaseVM) -> None:
    vm.verify_kernel_crash()  # a healthy guest passes
    serial(vm).sendline("virtlib-oops")
    assert wait_for(lambda: "end trace" in serial(vm).get_output(), 30)
    with pytest.raises(virtlib.VMDeadKernelCrashError) as info:
        vm.verify_kernel_crash()
    assert info.value.kernel_crash.startswith("BUG:")
    assert Path(vm.get_serial_console_filename()).read_text(errors="replace").count("end trace")


def test_copy_files_both_ways(vm_factory: VMFactory, tmp_path: Path) -> None:
    vm = vm_factory()
    vm.wait_for_login(timeout=120).close()
    payload = tmp_path / "out" / "payload.bin"
    payload.parent.mkdir()
    payload.write_bytes(bytes(range(256)) * 1024)
    (payload.parent / "sub").mkdir()
    (payload.parent / "sub" / "note.txt").write_text("nested\n")

    vm.copy_files_to(str(payload), "/tmp/payload.bin")
    vm.copy_files_to(str(payload.parent), "/tmp/")
    back = tmp_path / "back"
    back.mkdir()
    vm.copy_files_from("/tmp/payload.bin", str(back / "payload.bin"))
    vm.copy_files_from("/tmp/out", str(back))

    assert (back / "payload.bin").read_bytes() == payload.read_bytes()
    assert (back / "out" / "sub" / "note.txt").read_text() == "nested\n"
    session = vm.login()
    assert session.cmd("md5sum /tmp/payload.bin").split()[0] == (
        __import__("hashlib").md5(payload.read_bytes()).hexdigest()
    )
    session.close()

    with pytest.raises(virtlib.TransferError):
        vm.copy_files_from("/no/such/file", str(back))
    with pytest.raises(virtlib.TransferError):
        vm.copy_files_to(str(tmp_path / "missing"), "/tmp/")
    with pytest.raises(virtlib.TransferError):
        vm.copy_files_to(str(payload), "/proc/not-writable/x")


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
