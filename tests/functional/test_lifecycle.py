"""The libvirt driver's lifecycle against the real libvirtd and the bundled guest."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
from functional_support import VMFactory, domain_names, qemu_pid

import virtlib
from virtlib.backends.libvirt.domain import LibvirtVM
from virtlib.macpool import MacPool
from virtlib.ports import PortPool, port_is_free
from virtlib.waiting import wait_for


def test_boot_login_and_destroy_leaves_nothing(vm_factory: VMFactory, libvirt_uri: str) -> None:
    vm = vm_factory()
    assert isinstance(vm, LibvirtVM)
    assert vm.is_alive() and not vm.is_dead()
    assert vm.accel is not None and vm.accel.accel in ("kvm", "tcg")
    serial = vm.wait_for_serial_login(timeout=120)
    assert serial.cmd("echo $((6*7))").strip() == "42"
    ssh = vm.wait_for_login(timeout=120)
    assert ssh.cmd("hostname").strip() == "virtlib-guest"
    ssh.close()
    port = vm.get_port(22)
    workdir = vm.workdir
    serial_log = Path(vm.get_serial_console_filename())
    assert "virtlib-guest login:" in serial_log.read_text(errors="replace")
    instance = vm.instance

    vm.destroy()

    assert vm.name not in domain_names(libvirt_uri)
    assert vm.is_dead()
    assert not workdir.exists()
    assert serial_log.parent.name == "serial-logs" and serial_log.exists()  # evidence stays
    assert "virtlib-guest login:" in serial_log.read_text(errors="replace")
    assert not any(k.startswith(instance) for k in MacPool().reserved())
    assert not any(k.startswith(instance) for k in PortPool().table.rows())
    assert wait_for(lambda: port_is_free(port), 10), "the forwarded port is still bound"


def test_destroy_gracefully_powers_the_guest_off(vm_factory: VMFactory, tmp_path: Path) -> None:
    """The guest's kernel says it powers down (a hard destroy prints nothing); the serial
    log in ``log_dir`` is kept after destroy."""
    vm = vm_factory(log_dir=str(tmp_path))
    vm.wait_for_serial_login(timeout=120)
    serial_log = Path(vm.get_serial_console_filename())
    vm.destroy(gracefully=True)
    assert vm.serial_console is None
    assert vm.is_dead()
    assert "reboot: Power down" in serial_log.read_text(errors="replace")


def test_serial_log_starts_with_the_guests_first_byte(vm_factory: VMFactory) -> None:
    """The console is attached before the CPUs run: with the kernel's messages shown, the
    output (and the log) begins with the kernel's very first line, at time zero."""
    vm = vm_factory(kernel_args="loglevel=8")
    console = vm.wait_for_serial_login(timeout=120)
    output = console.get_output()
    assert re.match(r"\[ +0\.000000\] Linux version \S+", output), output[:300]
    assert "Command line: " in output.split("\n", 2)[1]
    assert Path(vm.get_serial_console_filename()).read_bytes().startswith(b"[    0.000000] Linux")
    assert output.index("Linux version") < output.index("virtlib-guest login:")


def test_sigkill_of_qemu_makes_the_vm_dead(vm_factory: VMFactory) -> None:
    vm = vm_factory()
    os.kill(qemu_pid(vm), signal.SIGKILL)
    assert wait_for(vm.is_dead, 30)
    with pytest.raises(virtlib.VMDeadError) as info:
        vm.verify_alive()
    assert info.value.reason  # libvirt's state, e.g. "no domain" or "shut off"


def test_wrong_password_is_an_authentication_error(vm_factory: VMFactory) -> None:
    vm = vm_factory(password="not-the-password")
    with pytest.raises(virtlib.LoginAuthenticationError):
        vm.wait_for_login(timeout=120)
    with pytest.raises(virtlib.LoginAuthenticationError):
        vm.wait_for_serial_login(timeout=120)


def test_ports_not_forwarded_are_reported(vm_factory: VMFactory) -> None:
    vm = vm_factory(start=False, redirs="web", guest_port_web="80")
    vm.create()
    assert vm.get_port(80) != 80
    assert vm.get_address() == "127.0.0.1"
    with pytest.raises(virtlib.VMPortNotRedirectedError):
        vm.get_port(8080)
    with pytest.raises(virtlib.VMMACAddressMissingError):
        vm.get_address(3)
    assert vm.get_mac_address(0).startswith("52:54:00:")


def test_bad_media_fail_before_anything_is_made(
    vm_factory: VMFactory, libvirt_uri: str, tmp_path: Path
) -> None:
    vm = vm_factory(start=False, cdroms="cd1", cdrom_cd1=str(tmp_path / "missing.iso"))
    with pytest.raises(virtlib.VMImageMissingError):
        vm.create()
    iso = tmp_path / "some.iso"
    iso.write_bytes(b"not really an iso")
    vm2 = vm_factory(
        start=False, cdroms="cd1", cdrom_cd1=str(iso), md5sum_cd1="0" * 32, guest="bundled"
    )
    with pytest.raises(virtlib.VMHashMismatchError) as info:
        vm2.create()
    assert info.value.expected_hash == "0" * 32
    for machine in (vm, vm2):
        assert machine.name not in domain_names(libvirt_uri)
        assert not any(k.startswith(machine.instance) for k in MacPool().reserved())
        assert not any(k.startswith(machine.instance) for k in PortPool().table.rows())


def test_libvirt_refusal_is_a_create_error_with_the_xml(
    vm_factory: VMFactory, libvirt_uri: str
) -> None:
    vm = vm_factory(start=False, machine_type="no-such-machine")
    with pytest.raises(virtlib.VMCreateError) as info:
        vm.create()
    assert "<domain" in info.value.cmd and "no-such-machine" in info.value.cmd
    assert info.value.output
    assert vm.name not in domain_names(libvirt_uri)
    assert not any(k.startswith(vm.instance) for k in PortPool().table.rows())


def test_hugepages_missing_is_reported(vm_factory: VMFactory, libvirt_uri: str) -> None:
    vm = vm_factory(start=False, hugepage="yes")
    with pytest.raises(virtlib.VMHugePageError):
        vm.create()
    assert vm.name not in domain_names(libvirt_uri)


def test_pci_assignment_errors(vm_factory: VMFactory) -> None:
    with pytest.raises(virtlib.VMBadPATypeError):
        vm_factory(start=False, pci_assignable="bogus").create()
    with pytest.raises(virtlib.VMPAError):
        vm_factory(start=False, pci_assignable="vf", devices_requested="1").create()


def test_cpu_and_memory_seen_by_the_guest(vm_factory: VMFactory) -> None:
    vm = vm_factory(smp="2", mem="320")
    vm.wait_for_login(timeout=120).close()
    assert vm.get_cpu_count() == 2
    memory = vm.get_memory_size()
    assert 200 < memory <= 320
    assert 200 < vm.get_current_memory_size() <= 320


def test_uuid_from_params_and_clone(vm_factory: VMFactory) -> None:
    uuid = "12345678-1234-5678-9abc-123456789abc"
    vm = vm_factory(uuid=uuid)
    assert vm.get_uuid() == uuid
    twin = vm.clone(vm.name + "-twin", mem="300")
    assert twin.is_dead() and twin.params["mem"] == "300" and twin.name.endswith("-twin")


def test_create_again_restarts(vm_factory: VMFactory) -> None:
    vm = vm_factory()
    first_mac = vm.get_mac_address()
    vm.create()
    assert vm.is_alive()
    assert vm.get_mac_address() == first_mac
    vm.wait_for_serial_login(timeout=120)
