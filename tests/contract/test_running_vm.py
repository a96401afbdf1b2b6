"""The contract on one running VM per backend (module-scoped: each test leaves it as it was)."""

from __future__ import annotations

import hashlib
import logging
import re
import socket
import threading
import time
from pathlib import Path

import pytest
from contract_support import LOGIN_TIMEOUT, Backend, supported

import virtlib
from virtlib.contract import BaseVM
from virtlib.macpool import MacPool
from virtlib.ports import PortPool
from virtlib.sessions.shell import ShellSession
from virtlib.waiting import wait_for


def serial(vm: BaseVM) -> ShellSession:
    assert vm.serial_console is not None
    return vm.serial_console


def boot_id(session: ShellSession) -> str:
    return session.cmd("cat /proc/sys/kernel/random/boot_id").strip()


def test_a_created_vm_is_alive(shared_vm: BaseVM) -> None:
    assert shared_vm.is_alive() and not shared_vm.is_dead()
    shared_vm.verify_alive()
    assert shared_vm.state is not None and shared_vm.uuid
    assert shared_vm.get_uuid() == shared_vm.uuid
    assert shared_vm.instance == shared_vm.state.instance


def test_mac_address_is_reserved_and_missing_nics_are_errors(shared_vm: BaseVM) -> None:
    mac = shared_vm.get_mac_address(0)
    assert re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", mac)
    assert MacPool(partition=shared_vm.partition).lookup(shared_vm.instance, 0) == mac
    with pytest.raises(virtlib.VMMACAddressMissingError):
        shared_vm.get_mac_address(7)


def test_ssh_port_is_forwarded_and_others_are_not(shared_vm: BaseVM) -> None:
    port = shared_vm.get_port(22)
    assert port != 22
    rows = PortPool(partition=shared_vm.partition).table.rows()
    assert any(key.startswith(shared_vm.instance) for key in rows)
    with socket.create_connection((shared_vm.get_address(0), port), timeout=5):
        pass
    with pytest.raises(virtlib.VMPortNotRedirectedError):
        shared_vm.get_port(8080)


def test_serial_console_runs_commands_with_status_and_output(shared_vm: BaseVM) -> None:
    console = serial(shared_vm)
    assert console.cmd("echo contract-ok").strip() == "contract-ok"
    assert console.cmd_status("true") == 0
    status, output = console.cmd_status_output("cat /no/such/file")
    assert status != 0 and "/no/such/file" in output
    with pytest.raises(virtlib.ShellCmdError) as info:
        console.cmd("cat /no/such/file")
    assert info.value.status == status and "/no/such/file" in info.value.output


def test_ssh_login_runs_commands(shared_vm: BaseVM) -> None:
    session = shared_vm.wait_for_login(timeout=LOGIN_TIMEOUT)
    try:
        assert session.cmd("hostname").strip() == "virtlib-guest"
        assert session.cmd_status_output("(exit 3)") == (3, "")
        assert session.cmd_output("echo over-ssh").strip() == "over-ssh"
    finally:
        session.close()


def test_login_retries_until_the_guest_answers(
    shared_vm: BaseVM, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    """Paused, the guest cannot answer: the first attempts fail, login goes on trying and
    succeeds once the VM is resumed."""
    try:
        shared_vm.pause()
    except virtlib.VMNotSupportedError as exc:
        supported(backend, exc)
    resume = threading.Timer(2.0, shared_vm.resume)
    resume.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="virtlib.contract"):
            session = shared_vm.wait_for_login(timeout=LOGIN_TIMEOUT, internal_timeout=1)
    finally:
        resume.join()
    try:
        assert session.cmd("echo logged-in").strip() == "logged-in"
    finally:
        session.close()
    failed = [
        r for r in caplog.records if r.getMessage().startswith(f"login to {shared_vm.name!r}")
    ]
    assert failed, "no attempt failed while the guest was paused"
    serial(shared_vm).sync(timeout=30)


def test_wrong_password_gives_up_at_once(shared_vm: BaseVM, backend: Backend) -> None:
    params = {"connect_uri": shared_vm.uri, "password": "not-the-password"}
    try:
        stranger = backend.cls.adopt(shared_vm.name, params)
    except virtlib.VMNotSupportedError as exc:
        supported(backend, exc)
    started = time.monotonic()
    try:
        with pytest.raises(virtlib.LoginAuthenticationError):
            stranger.wait_for_login(timeout=LOGIN_TIMEOUT)
    finally:
        stranger.release()
    assert time.monotonic() - started < 30, "a refused password was retried"


def test_copy_files_both_ways(shared_vm: BaseVM, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    payload = out / "payload.bin"
    payload.write_bytes(bytes(range(256)) * 512)
    (out / "sub" / "note.txt").write_text("nested\n")

    shared_vm.copy_files_to(str(payload), "/tmp/contract-payload.bin")
    shared_vm.copy_files_to(str(out), "/tmp/")
    back = tmp_path / "back"
    back.mkdir()
    shared_vm.copy_files_from("/tmp/contract-payload.bin", str(back / "payload.bin"))
    shared_vm.copy_files_from("/tmp/out", str(back))

    assert hashlib.sha256((back / "payload.bin").read_bytes()).digest() == (
        hashlib.sha256(payload.read_bytes()).digest()
    )
    assert (back / "out" / "sub" / "note.txt").read_text() == "nested\n"
    assert serial(shared_vm).cmd("cat /tmp/out/sub/note.txt").strip() == "nested"
    with pytest.raises(virtlib.TransferError):
        shared_vm.copy_files_from("/no/such/file", str(back))
    with pytest.raises(virtlib.TransferError):
        shared_vm.copy_files_to(str(tmp_path / "missing"), "/tmp/")
    with pytest.raises(virtlib.TransferError):
        shared_vm.copy_files_to(str(payload), "/no/such/dir/x")


def test_memory_and_cpus_seen_by_the_guest(shared_vm: BaseVM) -> None:
    assert shared_vm.get_cpu_count() == shared_vm.spec.vcpus
    memory = shared_vm.get_memory_size()
    assert shared_vm.spec.mem_mib * 0.6 < memory <= shared_vm.spec.mem_mib
    assert shared_vm.get_current_memory_size() == memory


@pytest.mark.parametrize(
    ("command", "mib"),
    [("echo MemTotal: 2 GB", 2048), ("echo 512 MB", 512), ("echo 1048576 kB", 1024)],
)
def test_memory_size_output_in_other_units(
    shared_vm: BaseVM, backend: Backend, command: str, mib: int
) -> None:
    """``mem_chk_cmd`` output is parsed as the seed did (GB scaled up, kB down)."""
    try:
        view = backend.cls.adopt(
            shared_vm.name, {"connect_uri": shared_vm.uri, "mem_chk_cmd": command}
        )
    except virtlib.VMNotSupportedError as exc:
        supported(backend, exc)
    try:
        assert view.get_memory_size() == mib
    finally:
        view.release()


def test_pause_stops_the_guest_and_resume_goes_on(shared_vm: BaseVM, backend: Backend) -> None:
    console = serial(shared_vm)
    assert shared_vm.status() == "running"
    assert shared_vm.resume() is True, "resuming a running VM is harmless"
    try:
        assert shared_vm.pause() is True
    except virtlib.VMNotSupportedError as exc:
        supported(backend, exc)
    try:
        assert shared_vm.pause() is True, "pausing a paused VM is harmless"
        assert shared_vm.is_paused() and shared_vm.is_alive()
        shared_vm.verify_status("paused")
        with pytest.raises(virtlib.VMStatusError):
            shared_vm.verify_status("running")
        assert not console.is_responsive(timeout=1.0), "a paused guest answered"
    finally:
        assert shared_vm.resume() is True
    assert not shared_vm.is_paused() and shared_vm.status() == "running"
    console.sync(timeout=30)
    assert console.cmd("echo resumed").strip() == "resumed"


def test_needs_restart_compares_the_params(shared_vm: BaseVM) -> None:
    assert not shared_vm.needs_restart(shared_vm.name, shared_vm.params, shared_vm.root_dir)
    changed = shared_vm.params.copy()
    changed["mem"] = str(shared_vm.spec.mem_mib + 128)
    assert shared_vm.needs_restart(shared_vm.name, changed, shared_vm.root_dir)


def test_info_describes_the_vm(shared_vm: BaseVM, backend: Backend) -> None:
    try:
        info = shared_vm.info()
    except virtlib.VMNotSupportedError as exc:
        supported(backend, exc)
    assert info["name"] == shared_vm.name
    assert (info["uri"], info["uuid"], info["instance"]) == (
        shared_vm.uri,
        shared_vm.uuid,
        shared_vm.instance,
    )
    assert info["state"] == "running"
    assert (info["vcpus"], info["memory_mib"]) == (shared_vm.spec.vcpus, shared_vm.spec.mem_mib)
    assert info["macs"] == {"nic0": shared_vm.get_mac_address(0)}
    assert info["forwards"]["nic0:22"] == f"127.0.0.1:{shared_vm.get_port(22)}"


def test_managed_vms_lists_it(shared_vm: BaseVM, backend: Backend) -> None:
    try:
        found = [m for m in backend.cls.managed_vms(shared_vm.uri) if m.name == shared_vm.name]
    except virtlib.VMNotSupportedError as exc:
        supported(backend, exc)
    assert len(found) == 1
    (managed,) = found
    assert (managed.uuid, managed.instance, managed.uri) == (
        shared_vm.uuid,
        shared_vm.instance,
        shared_vm.uri,
    )
    assert managed.state == "running"
    assert managed.ssh == f"127.0.0.1:{shared_vm.get_port(22)}"


def test_adopt_from_a_fresh_object_then_release(shared_vm: BaseVM, backend: Backend) -> None:
    try:
        adopted = backend.cls.adopt(shared_vm.name, {"connect_uri": shared_vm.uri})
    except virtlib.VMNotSupportedError as exc:
        supported(backend, exc)
    try:
        assert adopted is not shared_vm and isinstance(adopted, backend.cls)
        assert (adopted.uuid, adopted.instance, adopted.uri) == (
            shared_vm.uuid,
            shared_vm.instance,
            shared_vm.uri,
        )
        assert adopted.get_mac_address(0) == shared_vm.get_mac_address(0)
        assert adopted.get_port(22) == shared_vm.get_port(22)
        assert adopted.is_alive()
        assert not adopted.needs_restart(shared_vm.name, shared_vm.params, shared_vm.root_dir)
        session = adopted.wait_for_login(timeout=LOGIN_TIMEOUT)
        assert session.cmd("hostname").strip() == "virtlib-guest"
        session.close()
        workdir = adopted.workdir
    finally:
        adopted.release()
    assert adopted.state is None and not workdir.exists()
    assert shared_vm.is_alive(), "release() stopped the VM"
    assert serial(shared_vm).cmd("echo still-here").strip() == "still-here"
    with pytest.raises(virtlib.VMNotFoundError):
        backend.cls.adopt(shared_vm.name + "-nobody", {"connect_uri": shared_vm.uri})


def test_save_and_restore_keep_the_guest_state(
    shared_vm: BaseVM, backend: Backend, tmp_path: Path
) -> None:
    console = serial(shared_vm)
    console.cmd("echo remembered > /tmp/contract-state")
    saved = tmp_path / "saved.state"
    shared_vm.save_to_file(str(saved))
    assert shared_vm.is_dead() and saved.stat().st_size > 0
    try:
        shared_vm.restore_from_file(str(saved))
    except virtlib.VMNotSupportedError as exc:
        supported(backend, exc)
    assert shared_vm.is_alive()
    assert serial(shared_vm).cmd("cat /tmp/contract-state").strip() == "remembered"
    session = shared_vm.wait_for_login(timeout=LOGIN_TIMEOUT)
    try:
        assert session.cmd("cat /tmp/contract-state").strip() == "remembered"
    finally:
        session.close()


@pytest.mark.parametrize("method", ["shell", "system_reset"])
def test_reboot_comes_back_with_a_new_boot(shared_vm: BaseVM, method: str) -> None:
    session = shared_vm.wait_for_login(timeout=LOGIN_TIMEOUT)
    before = boot_id(session)
    session = shared_vm.reboot(session, method=method, timeout=LOGIN_TIMEOUT)
    try:
        assert boot_id(session) != before
    finally:
        session.close()
    shared_vm.wait_for_serial_login(timeout=LOGIN_TIMEOUT)  # leave it logged in, as found


def test_reboot_with_an_unknown_method_is_refused(shared_vm: BaseVM) -> None:
    with pytest.raises(virtlib.VMRebootError):
        shared_vm.reboot(method="bogus")
    assert shared_vm.is_alive()


def test_ctrl_alt_delete_reboots(shared_vm: BaseVM) -> None:
    console = serial(shared_vm)
    before = boot_id(console)
    seen = len(console.get_output())
    shared_vm.send_key("ctrl-alt-delete")
    assert wait_for(lambda: "login:" in console.get_output()[seen:], LOGIN_TIMEOUT), "no reboot"
    shared_vm.wait_for_serial_login(timeout=LOGIN_TIMEOUT)
    assert boot_id(console) != before
    with pytest.raises(virtlib.VMParamsError):
        shared_vm.send_key("ctrl-nosuchkey")


def test_kernel_crash_is_found_on_the_serial_console(shared_vm: BaseVM) -> None:
    shared_vm.verify_kernel_crash()  # a healthy guest passes
    console = serial(shared_vm)
    seen = len(console.get_output())
    console.cmd_status_output("virtlib-oops")
    assert wait_for(lambda: "end trace" in console.get_output()[seen:], 30)
    with pytest.raises(virtlib.VMDeadKernelCrashError) as info:
        shared_vm.verify_kernel_crash()
    assert info.value.kernel_crash.startswith("BUG:")
    assert "end trace" in Path(shared_vm.get_serial_console_filename()).read_text(errors="replace")
