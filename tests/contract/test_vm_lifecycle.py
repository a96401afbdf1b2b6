"""The contract over a VM's whole life: login retries, death from outside, destroy, bad params."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from contract_support import LOGIN_TIMEOUT, Backend, Maker

import virtlib
from virtlib.contract import BaseVM
from virtlib.macpool import MacPool
from virtlib.ports import PortPool, port_is_free
from virtlib.waiting import wait_for

OPTIONAL_OPERATIONS = (
    "restore_from_file",
    "pause",
    "resume",
    "is_paused",
    "definition",
    "hypervisor_log",
    "memory_dump",
    "screenshot",
    "guest_agent",
    "adopt",
    "release",
    "info",
    "probe",
    "managed_vms",
    "remove_vms",
    "host_checks",
    "create_snapshot",
    "list_snapshots",
    "current_snapshot",
    "revert_snapshot",
    "delete_snapshot",
    "attach_disk",
    "detach_disk",
    "disks",
    "attach_nic",
    "detach_nic",
    "nics",
    "change_media",
    "eject_media",
    "set_vcpus",
    "set_memory",
    "attach_memory",
    "detach_memory",
    "block_commit",
    "block_pull",
    "block_copy",
)


def reservations_of(vm: BaseVM) -> list[str]:
    macs = [k for k in MacPool(partition=vm.partition).reserved() if k.startswith(vm.instance)]
    ports = PortPool(partition=vm.partition).table.rows()
    return macs + [k for k in ports if k.startswith(vm.instance)]


def test_a_vm_killed_from_outside_is_dead_and_login_stops_early(
    make_vm: Maker, backend: Backend
) -> None:
    if backend.profile.kill is None:
        pytest.skip(f"the suite has no way to kill a {backend.vm_type} VM from outside")
    vm = make_vm("killed")
    backend.profile.kill(vm)
    assert wait_for(vm.is_dead, 30)
    with pytest.raises(virtlib.VMDeadError):
        vm.verify_alive()
    started = time.monotonic()
    with pytest.raises(virtlib.VMDeadError):
        vm.wait_for_login(timeout=LOGIN_TIMEOUT, internal_timeout=2)
    assert time.monotonic() - started < 20, "wait_for_login kept trying a dead VM"


def test_destroy_leaves_nothing(make_vm: Maker, backend: Backend) -> None:
    vm = make_vm("destroy")
    vm.wait_for_serial_login(timeout=LOGIN_TIMEOUT)
    name, uuid, instance, workdir = vm.name, vm.uuid or "", vm.instance, vm.workdir
    port = vm.get_port(22)
    assert reservations_of(vm)

    vm.destroy()

    assert vm.is_dead() and vm.state is None and vm.serial_console is None
    assert not workdir.exists()
    assert not [k for k in MacPool().reserved() if k.startswith(instance)]
    assert not [k for k in PortPool().table.rows() if k.startswith(instance)]
    assert wait_for(lambda: port_is_free(port), 10), "the forwarded port is still bound"
    assert name not in [m.name for m in backend.cls.managed_vms(backend.uri)]
    assert backend.cls.remove_vms(backend.uri, {name}, {uuid}) == []
    with pytest.raises(virtlib.VMDeadError):
        vm.verify_alive()


def test_remove_vms_removes_a_leftover_by_uuid(make_vm: Maker, backend: Backend) -> None:
    """What the pytest plugin and the CLI do after a crashed run; the VM's own object can
    still clean up its local state afterwards."""
    vm = make_vm("leftover")
    assert vm.uuid
    lines = backend.cls.remove_vms(backend.uri, set(), {vm.uuid})
    assert len(lines) == 1 and vm.name in lines[0] and backend.uri in lines[0]
    assert wait_for(vm.is_dead, 30)
    assert vm.name not in [m.name for m in backend.cls.managed_vms(backend.uri)]
    instance = vm.instance
    vm.destroy()
    assert not [k for k in MacPool().reserved() if k.startswith(instance)]
    assert not [k for k in PortPool().table.rows() if k.startswith(instance)]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("mem", "lots"),
        ("smp", "0"),
        ("uuid", "not-a-uuid"),
        ("shell_port", "70000"),
        ("on_crash", "explode"),
        ("nettype", "carrier-pigeon"),
    ],
)
def test_bad_params_raise_a_params_error_naming_them(
    backend: Backend, key: str, value: str
) -> None:
    params = backend.params.copy()
    params[key] = value
    with pytest.raises(virtlib.VMParamsError) as info:
        virtlib.new_vm("contract-bad-params", params).create()
    assert key in str(info.value) and value in str(info.value)
    assert "contract-bad-params" not in [m.name for m in backend.cls.managed_vms(backend.uri)]


def test_probe_answers_and_says_why_not(backend: Backend) -> None:
    assert backend.cls.probe(backend.uri) is None
    reason = backend.cls.probe(backend.profile.dead_uri)
    assert isinstance(reason, str) and reason


def test_operations_the_backend_lacks_raise_a_named_error(backend: Backend) -> None:
    bases = {cls.__qualname__ for cls in BaseVM.__mro__}  # BaseVM and the mixins it is made of
    lacking = [
        op
        for op in OPTIONAL_OPERATIONS
        if getattr(backend.cls, op).__qualname__.split(".")[0] in bases
    ]
    if not lacking:
        pytest.skip(f"the {backend.vm_type} backend implements every optional operation")
    vm = virtlib.new_vm("contract-lacking", backend.params)
    calls: dict[str, Callable[[], object]] = {
        "restore_from_file": lambda: vm.restore_from_file("/nonexistent"),
        "pause": vm.pause,
        "resume": vm.resume,
        "is_paused": vm.is_paused,
        "definition": vm.definition,
        "hypervisor_log": vm.hypervisor_log,
        "memory_dump": lambda: vm.memory_dump("/nonexistent/dump", 1 << 20),
        "screenshot": lambda: vm.screenshot("/nonexistent/screen.png"),
        "guest_agent": vm.guest_agent,
        "adopt": lambda: backend.cls.adopt("contract-lacking", backend.params),
        "release": vm.release,
        "info": vm.info,
        "probe": lambda: backend.cls.probe(backend.uri),
        "managed_vms": lambda: backend.cls.managed_vms(backend.uri),
        "remove_vms": lambda: backend.cls.remove_vms(backend.uri, [], []),
        "host_checks": lambda: backend.cls.host_checks(backend.uri),
        "create_snapshot": lambda: vm.create_snapshot("contract"),
        "list_snapshots": vm.list_snapshots,
        "current_snapshot": vm.current_snapshot,
        "revert_snapshot": lambda: vm.revert_snapshot("contract"),
        "delete_snapshot": lambda: vm.delete_snapshot("contract"),
        "attach_disk": vm.attach_disk,
        "detach_disk": lambda: vm.detach_disk("vdb"),
        "disks": vm.disks,
        "attach_nic": vm.attach_nic,
        "detach_nic": lambda: vm.detach_nic(1),
        "nics": vm.nics,
        "change_media": lambda: vm.change_media("cd1", "/nonexistent.iso"),
        "eject_media": lambda: vm.eject_media("cd1"),
        "set_vcpus": lambda: vm.set_vcpus(2),
        "set_memory": lambda: vm.set_memory(256),
        "attach_memory": lambda: vm.attach_memory(128),
        "detach_memory": lambda: vm.detach_memory("dimm0"),
        "block_commit": lambda: vm.block_commit("vda"),
        "block_pull": lambda: vm.block_pull("vda"),
        "block_copy": lambda: vm.block_copy("vda", "/nonexistent/copy.qcow2"),
    }
    for op in lacking:
        with pytest.raises(virtlib.VMNotSupportedError) as info:
            calls[op]()
        # the error names the operation (in words: "memory dump") and the backend
        assert info.value.operation.replace(" ", "_") == op
        assert info.value.backend == backend.cls.BACKEND
        assert info.value.operation in str(info.value) and backend.cls.BACKEND in str(info.value)


def test_mac_address_from_params_before_and_after_create(make_vm: Maker) -> None:
    """``nic_mac`` wins over the pool; without it an unstarted VM has no MAC yet."""
    vm = make_vm("mac", start=False, nic_mac="52:54:00:0c:0f:fe")
    assert vm.get_mac_address(0) == "52:54:00:0c:0f:fe"
    with pytest.raises(virtlib.VMMACAddressMissingError):
        make_vm("nomac", start=False).get_mac_address(0)


def test_unstarted_vm_is_dead_and_says_so(backend: Backend) -> None:
    vm = virtlib.new_vm("contract-never-started", backend.params)
    assert isinstance(vm, backend.cls)
    assert vm.is_dead() and not vm.is_alive() and vm.state is None
    with pytest.raises(virtlib.VMDeadError):
        vm.verify_alive()
    with pytest.raises(virtlib.VMPortNotRedirectedError):
        vm.get_port(22)
