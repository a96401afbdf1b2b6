"""BaseVM's avocado-vt API (virt_vm.BaseVM, libvirt_vm.VM), built from primitives, on a fake VM.

Each test states the avocado-vt behaviour it checks; signatures are compared
with avocado-vt's parameter lists name by name, so a test written for
avocado-vt that passes arguments by position or by name lands in the same slot.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fake_guest
import pytest
from fake_guest import PASSWORD, USERNAME
from fake_vm import FakeVM

import virtlib.transfer
from virtlib import sessions
from virtlib.backends.libvirt.domain import LibvirtVM
from virtlib.contract import RESTART_NETWORK_COMMAND, BaseVM
from virtlib.errors import (
    LoginAuthenticationError,
    LoginTimeoutError,
    VMDeadError,
    VMNotSupportedError,
    VMParamsError,
    VMStatusError,
)
from virtlib.sessions.shell import ShellSession


@pytest.fixture
def vm() -> Iterator[FakeVM]:
    machine = FakeVM("ha-unit", {})
    machine.create()
    yield machine
    machine.destroy()


def params_of(method: Any) -> list[tuple[str, Any]]:
    return [
        (p.name, p.default)
        for p in inspect.signature(method).parameters.values()
        if p.name != "self"
    ]


# --- signatures: avocado-vt's parameters, in avocado-vt's order, with its defaults ----------

EMPTY = inspect.Parameter.empty
AVOCADO_SIGNATURES: dict[str, list[tuple[str, Any]]] = {
    # virt_vm.BaseVM
    "login": [("nic_index", 0), ("timeout", 10), ("username", None), ("password", None)],
    "wait_for_login": [
        ("nic_index", 0), ("timeout", 240), ("internal_timeout", 10), ("serial", False),
        ("restart_network", False), ("username", None), ("password", None),
        ("status_check", True),
    ],
    "copy_files_to": [
        ("host_path", EMPTY), ("guest_path", EMPTY), ("nic_index", 0), ("limit", ""),
        ("verbose", False), ("timeout", 600), ("username", None), ("password", None),
        ("filesize", None),
    ],
    "copy_files_from": [
        ("guest_path", EMPTY), ("host_path", EMPTY), ("nic_index", 0), ("limit", ""),
        ("verbose", False), ("timeout", 600), ("username", None), ("password", None),
        ("filesize", None),
    ],
    "serial_login": [("timeout", 10), ("username", None), ("password", None), ("virtio", False)],
    "wait_for_serial_login": [
        ("timeout", 240), ("internal_timeout", 10), ("restart_network", False),
        ("username", None), ("password", None), ("virtio", False), ("status_check", True),
        ("recreate_serial_console", False),
    ],
    "reboot": [
        ("session", None), ("method", "shell"), ("nic_index", 0), ("timeout", 240),
        ("serial", False),
    ],
    "get_memory_size": [("cmd", None), ("timeout", 60)],
    "get_distro": [("connect_uri", None)],
    "verify_status": [("status", EMPTY)],
    # qemu_vm.VM
    "resume": [("timeout", None)],
}  # fmt: skip


@pytest.mark.parametrize("cls", [BaseVM, LibvirtVM])
@pytest.mark.parametrize("method", sorted(AVOCADO_SIGNATURES))
def test_signature_is_avocado_vts(cls: type[BaseVM], method: str) -> None:
    assert params_of(getattr(cls, method)) == AVOCADO_SIGNATURES[method]


def test_get_cpu_count_takes_a_param_name_or_a_command_first() -> None:
    # avocado-vt: get_cpu_count(check_cmd="cpu_chk_cmd", connect_uri=None); None is that key.
    assert [name for name, _ in params_of(BaseVM.get_cpu_count)] == ["check_cmd", "connect_uri"]


def test_wait_for_shutdown_takes_timeout_first_and_libvirts_count() -> None:
    # qemu_vm: wait_for_shutdown(timeout=60); libvirt_vm: wait_for_shutdown(count=60).
    assert params_of(BaseVM.wait_for_shutdown) == [("timeout", 60), ("count", None)]


def test_avocado_timeouts_are_class_constants() -> None:
    assert (BaseVM.LOGIN_TIMEOUT, BaseVM.LOGIN_WAIT_TIMEOUT, BaseVM.COPY_FILES_TIMEOUT) == (
        10, 240, 600
    )  # fmt: skip
    assert (BaseVM.MIGRATE_TIMEOUT, BaseVM.REBOOT_TIMEOUT) == (3600, 240)


# --- login: username and password --------------------------------------------------------


def test_login_passes_username_and_password_instead_of_the_params(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[dict[str, Any]] = []

    def remote_login(**kwargs: Any) -> Any:
        seen.append(kwargs)
        raise LoginTimeoutError("", 1)

    monkeypatch.setattr(sessions, "remote_login", remote_login)
    vm = FakeVM("ha-unit", {"username": "root", "password": "from-params"})
    with pytest.raises(LoginTimeoutError):
        BaseVM.login(vm, 0, 1, "tester", "s3cret")
    with pytest.raises(LoginTimeoutError):
        BaseVM.login(vm, 0, 1)
    assert [(s["username"], s["password"]) for s in seen] == [
        ("tester", "s3cret"),
        ("root", "from-params"),
    ]
    assert seen[0]["port"] == 40022


def test_serial_login_with_username_and_password(vm: FakeVM) -> None:
    session = vm.serial_login(5, USERNAME, PASSWORD)
    assert session is vm.serial_console
    assert vm.guest is not None and vm.guest.attempts == [(USERNAME, PASSWORD)]


def test_serial_login_with_a_wrong_password_is_refused(vm: FakeVM) -> None:
    with pytest.raises(LoginAuthenticationError):
        vm.wait_for_serial_login(5, 2, password="wrong")


def test_serial_login_on_a_virtio_console_is_not_supported(vm: FakeVM) -> None:
    with pytest.raises(VMNotSupportedError, match="virtio"):
        vm.wait_for_serial_login(5, 2, virtio=True)


# --- wait_for_login: serial and restart_network -------------------------------------------


def test_wait_for_login_retries_then_returns_a_network_session(vm: FakeVM) -> None:
    vm.network = [LoginTimeoutError("", 1), LoginTimeoutError("", 1)]
    session = vm.wait_for_login(0, 5, 1, username="u", password="p")
    assert session is not vm.serial_console
    assert vm.login_calls == [(0, 1, "u", "p")] * 3


def test_wait_for_login_without_serial_raises_the_last_error(vm: FakeVM) -> None:
    vm.network = [LoginTimeoutError("no prompt", 1)] * 100
    with pytest.raises(LoginTimeoutError):
        vm.wait_for_login(timeout=0.3, internal_timeout=0.1)


def test_wait_for_login_serial_falls_back_to_the_serial_console(vm: FakeVM) -> None:
    # virt_vm.wait_for_login: "serial: Whether to use a serial connection when remote login failed"
    vm.network = [LoginTimeoutError("no prompt", 1)] * 100
    session = vm.wait_for_login(timeout=0.3, internal_timeout=0.1, serial=True)
    assert session is vm.serial_console
    assert session.cmd("uname -r") == "6.6.0-virtlib\n"


def test_wait_for_login_serial_also_after_a_refused_password(vm: FakeVM) -> None:
    vm.network = [LoginAuthenticationError("refused")]
    assert vm.wait_for_login(timeout=5, serial=True) is vm.serial_console
    assert len(vm.login_calls) == 1, "a refused password is not retried"


def test_wait_for_login_serial_on_a_vm_without_nics_goes_to_the_console() -> None:
    machine = FakeVM("ha-unit", {"nics": ""})
    machine.create()
    try:
        assert machine.wait_for_login(timeout=5, serial=True) is machine.serial_console
        assert machine.login_calls == []
    finally:
        machine.destroy()


def test_wait_for_login_restart_network_renews_leases_then_logs_in_again(
    vm: FakeVM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(fake_guest.CANNED, RESTART_NETWORK_COMMAND, ("lease renewed\r\n", 0))
    vm.network = [LoginTimeoutError("", 1)] * 10_000  # the network fails until the restart
    serial_login = vm.wait_for_serial_login

    def network_back_after_serial_login(*args: Any, **kwargs: Any) -> ShellSession:
        console = serial_login(*args, **kwargs)
        vm.network = []
        return console

    monkeypatch.setattr(vm, "wait_for_serial_login", network_back_after_serial_login)
    session = vm.wait_for_login(timeout=0.3, internal_timeout=0.1, restart_network=True)
    assert session is not vm.serial_console
    assert vm.guest is not None and RESTART_NETWORK_COMMAND in vm.guest.commands


def test_wait_for_login_dead_vm_raises_vm_dead_even_with_serial(vm: FakeVM) -> None:
    vm.power_off()
    with pytest.raises(VMDeadError):
        vm.wait_for_login(timeout=5, serial=True)


def test_wait_for_login_status_check_false_keeps_trying_a_dead_vm(vm: FakeVM) -> None:
    vm.power_off()
    start = time.monotonic()
    with pytest.raises(LoginTimeoutError):
        vm.wait_for_login(timeout=0.5, internal_timeout=0.1, status_check=False)
    assert time.monotonic() - start >= 0.45


# --- copy_files_to/from: limit, filesize, the seed's positional verbose ---------------------


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any, str, str, bool]]:
    calls: list[tuple[str, Any, str, str, bool]] = []

    def fake(direction: str) -> Any:
        def copy(target: Any, source: str, dest: str, verbose: bool = False) -> None:
            calls.append((direction, target, source, dest, verbose))

        return copy

    monkeypatch.setattr(virtlib.transfer, "copy_files_to", fake("to"))
    monkeypatch.setattr(virtlib.transfer, "copy_files_from", fake("from"))
    return calls


def test_copy_files_positional_order_is_avocado_vts(vm: FakeVM, copies: list[Any]) -> None:
    # copy_files_to(host_path, guest_path, nic_index, limit, verbose, timeout, username, password)
    vm.copy_files_to("/h", "/g", 0, "", True, 33, "user", "pw")
    direction, target, source, dest, verbose = copies[-1]
    assert (direction, source, dest, verbose) == ("to", "/h", "/g", True)
    assert (target.timeout, target.username, target.password, target.port) == (
        33, "user", "pw", 40022
    )  # fmt: skip
    vm.copy_files_from("/g", "/h", 0, "", False, 44)
    assert copies[-1][0] == "from" and copies[-1][2:] == ("/g", "/h", False)
    assert copies[-1][1].timeout == 44


def test_copy_files_seeds_positional_verbose_and_timeout_still_work(
    vm: FakeVM, copies: list[Any]
) -> None:
    # the seed: copy_files_to(host_path, guest_path, nic_index=0, verbose=False, timeout=600)
    vm.copy_files_to("/h", "/g", 0, True, 77)
    assert copies[-1][4] is True and copies[-1][1].timeout == 77
    vm.copy_files_from("/g", "/h", 0, False)
    assert copies[-1][4] is False and copies[-1][1].timeout == 600


def test_copy_files_filesize_logs_the_throughput(
    vm: FakeVM, copies: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="virtlib.contract"):
        vm.copy_files_to("/h", "/g", filesize=5)
        vm.copy_files_from("/g", "/h")
    messages = [r.getMessage() for r in caplog.records]
    assert any("estimated throughput" in m and "MB/s" in m for m in messages)
    assert any("elapsed time" in m for m in messages)


def test_copy_files_limit_is_checked_and_said_to_be_unenforced(
    vm: FakeVM, copies: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="virtlib.contract"):
        vm.copy_files_to("/h", "/g", limit="8192")
    assert "not throttled" in caplog.text and len(copies) == 1
    with pytest.raises(VMParamsError, match=r"ha-unit.*limit.*'fast'"):
        vm.copy_files_to("/h", "/g", limit="fast")
    assert len(copies) == 1, "nothing is copied with a bad limit"


# --- state: start_time, wait_for_shutdown, verify_status, pause/resume --------------------


def test_start_time_is_zero_until_the_vm_starts() -> None:
    machine = FakeVM("ha-unit", {})
    assert (machine.start_time, machine.start_monotonic_time) == (0.0, 0.0)
    before = time.time()
    machine.create()
    try:
        assert before <= machine.start_time <= time.time()
        assert 0 < machine.start_monotonic_time <= time.monotonic()
    finally:
        machine.destroy()


def test_wait_for_shutdown_true_when_the_guest_goes_down(vm: FakeVM) -> None:
    import threading

    threading.Timer(0.2, vm.power_off).start()
    start = time.monotonic()
    assert vm.wait_for_shutdown(5) is True
    assert time.monotonic() - start < 2


@pytest.mark.parametrize("kwargs", [{"timeout": 0.3}, {"count": 0.3}])
def test_wait_for_shutdown_false_at_the_deadline(vm: FakeVM, kwargs: dict[str, float]) -> None:
    start = time.monotonic()
    assert vm.wait_for_shutdown(**kwargs) is False
    assert 0.25 <= time.monotonic() - start < 1.5


def test_verify_status(vm: FakeVM) -> None:
    vm.verify_status("running")
    with pytest.raises(VMStatusError, match=r"ha-unit.*\"running\".*expected \"paused\""):
        vm.verify_status("paused")
    vm.pause()
    vm.verify_status("paused")
    assert vm.status() == "paused"
    vm.power_off()
    vm.verify_status("shut off")


def test_base_pause_resume_are_named_limits_until_a_backend_has_them() -> None:
    class Minimal(FakeVM):
        pause = BaseVM.pause  # type: ignore[assignment]
        resume = BaseVM.resume  # type: ignore[assignment]

    machine = Minimal("ha-unit", {})
    with pytest.raises(VMNotSupportedError, match="resume"):
        machine.resume()
    with pytest.raises(VMNotSupportedError, match="pause"):
        machine.pause()


# --- get_cpu_count, get_distro ------------------------------------------------------------


def test_get_cpu_count_runs_cpu_chk_cmd_and_reads_the_first_number(
    vm: FakeVM, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(fake_guest.CANNED, "grep -c ^processor /proc/cpuinfo", ("4\r\n", 0))
    monkeypatch.setitem(fake_guest.CANNED, "nproc --all", ("CPUs: 8\r\n", 0))
    assert vm.get_cpu_count() == 4
    vm.params["cpu_chk_all_cmd"] = "nproc --all"
    assert vm.get_cpu_count("cpu_chk_all_cmd") == 8  # the name of a param, as avocado-vt
    assert vm.get_cpu_count("nproc --all") == 8  # or the command itself
    assert all(s.is_alive() is False for s in vm.sessions), "the network sessions are closed"


def test_get_cpu_count_without_a_number_is_a_status_error(vm: FakeVM) -> None:
    with pytest.raises(VMStatusError, match="no CPU count"):
        vm.get_cpu_count("true")


def test_get_cpu_count_on_another_connect_uri_is_not_supported(vm: FakeVM) -> None:
    with pytest.raises(VMNotSupportedError, match="connect_uri"):
        vm.get_cpu_count(connect_uri="qemu+ssh://elsewhere/system")


def test_get_distro_reads_id_from_os_release(vm: FakeVM, monkeypatch: pytest.MonkeyPatch) -> None:
    command = "grep '^ID=' /etc/os-release"
    monkeypatch.setitem(fake_guest.CANNED, command, ('ID="rhel"\r\n', 0))
    assert vm.get_distro() == "rhel"
    monkeypatch.setitem(fake_guest.CANNED, command, ("grep: /etc/os-release: no such file\r\n", 2))
    assert vm.get_distro() == ""


def test_get_distro_falls_back_to_the_serial_console(
    vm: FakeVM, monkeypatch: pytest.MonkeyPatch
) -> None:
    # avocado-vt's session_handler: wait_for_login(serial=True)
    monkeypatch.setitem(fake_guest.CANNED, "grep '^ID=' /etc/os-release", ("ID=debian\r\n", 0))
    monkeypatch.setattr(FakeVM, "LOGIN_WAIT_TIMEOUT", 0.2)
    vm.network = [LoginTimeoutError("", 1)] * 1000

    def short_wait(self: FakeVM, *args: Any, **kwargs: Any) -> Any:
        return BaseVM.wait_for_login(self, timeout=0.3, internal_timeout=0.1, serial=True)

    monkeypatch.setattr(FakeVM, "wait_for_login", short_wait)
    assert vm.get_distro() == "debian"
    assert vm.serial_console is not None and vm.serial_console.is_alive()


def test_path_of_workdir_is_private(vm: FakeVM) -> None:
    assert Path(vm.workdir).stat().st_mode & 0o077 == 0
