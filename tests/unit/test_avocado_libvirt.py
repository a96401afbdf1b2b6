"""LibvirtVM's avocado-vt behaviour on libvirt's test driver (no daemon, no guest).

avocado-vt: resume() on a running VM does not raise (qemu_vm), pause() and
resume() report success (libvirt_vm), start_time is set when the VM starts
(qemu_vm), reboot knows libvirt_vm's "libvirt_reset" besides "system_reset".
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtlib import Params, VMDeadError, VMRebootError
from virtlib.backends.libvirt.domain import LibvirtVM
from virtlib.backends.libvirt.host import Host

URI = "test:///default"


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[LibvirtVM]:
    (tmp_path / "vmlinuz").write_bytes(b"kernel")
    params = Params(
        connect_uri=URI, kernel=str(tmp_path / "vmlinuz"), accel="tcg", mem="128", nics=""
    )
    machine = LibvirtVM("td-avocado", params, ".")
    before = time.time()
    machine.create()
    assert before <= machine.start_time <= time.time()
    yield machine
    machine.destroy(gracefully=False)
    assert "td-avocado" not in {d.name() for d in Host.get(URI).conn.listAllDomains()}


def test_resume_on_a_running_vm_is_a_no_op(vm: LibvirtVM) -> None:
    assert vm.resume() is True
    assert vm.resume(timeout=5) is True
    vm.verify_status("running")


def test_pause_twice_then_resume(vm: LibvirtVM) -> None:
    assert vm.pause() is True
    assert vm.pause() is True
    vm.verify_status("paused")
    assert vm.resume() is True
    vm.verify_status("running")


def test_resume_on_a_destroyed_vm_raises(vm: LibvirtVM) -> None:
    Host.get(URI).conn.lookupByName("td-avocado").destroy()
    with pytest.raises(VMDeadError, match="td-avocado"):
        vm.resume()
    vm.verify_status("shut off")


def test_wait_for_shutdown_sees_the_domain_go(vm: LibvirtVM) -> None:
    assert vm.wait_for_shutdown(0.2) is False
    Host.get(URI).conn.lookupByName("td-avocado").destroy()
    assert vm.wait_for_shutdown(5) is True


def test_unknown_reboot_method_names_the_known_ones(vm: LibvirtVM) -> None:
    with pytest.raises(VMRebootError, match="libvirt_reset"):
        vm.reboot(method="acpi", serial=True)
