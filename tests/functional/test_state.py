"""One owner of a VM's state: created, adopted, restored and migrated VMs know who they are.

``needs_restart`` compares the design of the running VM (from its state) with the
design of new params; it must be right however the VM object came to be.
"""

from __future__ import annotations

from pathlib import Path

from functional_support import VMFactory

import virtlib
from virtlib.params import Params
from virtlib.secondhost import SecondHost


def _with(params: Params, **changes: str) -> Params:
    copy = params.copy()
    copy.update(changes)
    return copy


def test_created_vm_needs_restart_only_for_a_different_design(vm_factory: VMFactory) -> None:
    vm = vm_factory()
    assert vm.state is not None and vm.state.uri == vm.uri
    assert not vm.needs_restart(vm.name, vm.params, vm.root_dir)
    assert not vm.needs_restart(vm.name, _with(vm.params, password="other"), vm.root_dir)
    assert vm.needs_restart(vm.name, _with(vm.params, mem="384"), vm.root_dir)
    assert vm.needs_restart(vm.name, _with(vm.params, smp="2"), vm.root_dir)


def test_adopted_vm_has_the_state_of_the_original(vm_factory: VMFactory) -> None:
    vm = vm_factory(redirs="web", guest_port_web="80")
    adopted = type(vm).adopt(vm.name, Params(connect_uri=vm.uri))
    try:
        assert adopted.state is not None and vm.state is not None
        assert adopted.instance == vm.instance
        assert adopted.uuid == vm.uuid
        assert adopted.get_port(22) == vm.get_port(22)
        assert adopted.get_port(80) == vm.get_port(80)
        assert adopted.get_mac_address(0) == vm.get_mac_address(0)
        assert not adopted.needs_restart(vm.name, vm.params, vm.root_dir)
        assert adopted.needs_restart(vm.name, _with(vm.params, mem="384"), vm.root_dir)
        session = adopted.wait_for_login(timeout=60)
        assert session.cmd("echo adopted").strip() == "adopted"
        session.close()
    finally:
        adopted.release()
    assert vm.is_alive()  # release forgets, it does not stop


def test_vm_restored_by_a_fresh_object_gets_its_state_from_the_save_file(
    vm_factory: VMFactory, tmp_path: Path
) -> None:
    vm = vm_factory()
    vm.wait_for_serial_login(timeout=120)
    original = (vm.instance, vm.uuid, vm.get_port(22), vm.get_mac_address(0))
    state_file = tmp_path / "vm.state"
    vm.save_to_file(str(state_file))
    assert vm.is_dead()
    fresh = virtlib.new_vm(vm.name, Params(connect_uri=vm.uri))
    fresh.restore_from_file(str(state_file))
    try:
        assert (fresh.instance, fresh.uuid, fresh.get_port(22), fresh.get_mac_address(0)) == (
            original
        )
        assert not fresh.needs_restart(vm.name, vm.params, vm.root_dir)
        assert fresh.needs_restart(vm.name, _with(vm.params, mem="384"), vm.root_dir)
        assert fresh.serial_console is not None
        assert fresh.serial_console.cmd("echo restored").strip() == "restored"
    finally:
        fresh.release()
    vm.destroy(gracefully=False)  # the original object still owns the reservations


def test_migrated_vm_is_designed_for_its_new_host(
    vm_factory: VMFactory, second_host: SecondHost
) -> None:
    vm = vm_factory(migration_dest_uri=second_host.uri)
    vm.wait_for_serial_login(timeout=240).close()  # a booted guest, not one mid-boot
    before = vm.state
    assert before is not None
    vm.migrate()
    after = vm.state
    assert after is not None
    assert after.uri == second_host.uri == vm.uri
    assert after.instance == before.instance and after.uuid == before.uuid
    assert after.allocations.macs == before.allocations.macs
    on_dest = _with(vm.params, connect_uri=second_host.uri)
    assert not vm.needs_restart(vm.name, on_dest, vm.root_dir)
    assert vm.needs_restart(vm.name, _with(on_dest, mem="384"), vm.root_dir)
    assert vm.needs_restart(vm.name, _with(on_dest, connect_uri=before.uri), vm.root_dir)
    session = vm.wait_for_login(timeout=120)
    assert session.cmd("echo moved").strip() == "moved"
    session.close()
