"""Migration between two real libvirt hosts on this machine (virtlib.secondhost)."""

from __future__ import annotations

from pathlib import Path

import pytest
from functional_support import VMFactory, domain_names

import virtlib
from virtlib.backends.libvirt.migration import MigrationProgress
from virtlib.secondhost import SecondHost

# The guest counts as fast as it can; each value is written whole (rename), never half.
COUNTER_LOOP = (
    "(i=0; while true; do i=$((i+1)); echo $i > /tmp/c.new; mv /tmp/c.new /tmp/counter; done)"
    " >/dev/null 2>&1 &"
)


def counter(session: virtlib.ShellSession) -> int:
    return int(session.cmd("cat /tmp/counter").strip())


def booted(vm_factory: VMFactory, second_host: SecondHost, **params: str) -> virtlib.BaseVM:
    vm = vm_factory(migration_dest_uri=second_host.uri, **params)
    serial = vm.wait_for_serial_login(timeout=120)
    serial.cmd(COUNTER_LOOP)
    vm.wait_for_login(timeout=120).close()
    return vm


def assert_runs_at(vm: virtlib.BaseVM, uri: str, other_uri: str) -> None:
    """The VM runs at ``uri``, answers on serial and SSH, and ``other_uri`` has no domain of it."""
    assert getattr(vm, "uri", None) == uri
    assert vm.is_alive()
    assert vm.name in domain_names(uri)
    assert vm.name not in domain_names(other_uri)
    assert vm.serial_console is not None
    first = counter(vm.serial_console)
    session = vm.wait_for_login(timeout=60)
    try:
        assert counter(session) > first, "the guest's loop does not advance"
    finally:
        session.close()


def test_live_migration_and_back(
    vm_factory: VMFactory, second_host: SecondHost, libvirt_uri: str
) -> None:
    vm = booted(vm_factory, second_host)
    assert vm.serial_console is not None
    before = counter(vm.serial_console)
    samples: list[MigrationProgress] = []

    result = vm.migrate(progress=samples.append)

    assert counter(vm.serial_console) > before
    assert_runs_at(vm, second_host.uri, libvirt_uri)
    assert result.total_time_ms > 0 and result.data_transferred > 0
    assert result.downtime_ms is not None

    vm.params["migration_dest_uri"] = libvirt_uri
    vm.migrate()
    assert_runs_at(vm, libvirt_uri, second_host.uri)


def test_offline_migration_keeps_the_guest_paused_during_transfer(
    vm_factory: VMFactory, second_host: SecondHost, libvirt_uri: str
) -> None:
    vm = booted(vm_factory, second_host, migration_bandwidth="50")
    paused_during: list[bool] = []
    vm.migrate(offline=True, progress=lambda _: paused_during.append(vm.is_paused()))
    assert paused_during and all(paused_during)
    assert not vm.is_paused()
    assert_runs_at(vm, second_host.uri, libvirt_uri)


def test_stable_check_compares_guest_state(
    vm_factory: VMFactory, second_host: SecondHost, libvirt_uri: str, tmp_path: object
) -> None:
    vm = booted(vm_factory, second_host)
    result = vm.migrate(stable_check=True, save_path=str(tmp_path))
    assert result.state_hashes is not None
    assert result.state_hashes[0] == result.state_hashes[1]
    assert not list(tmp_path.iterdir())  # type: ignore[attr-defined]
    assert_runs_at(vm, second_host.uri, libvirt_uri)


def test_cancelled_migration_leaves_the_vm_on_the_source(
    vm_factory: VMFactory, second_host: SecondHost, libvirt_uri: str
) -> None:
    vm = booted(vm_factory, second_host, migration_bandwidth="2")
    with pytest.raises(virtlib.VMMigrateCancelError):
        vm.migrate(cancel_delay=1.0)
    assert_runs_at(vm, libvirt_uri, second_host.uri)


def test_timed_out_migration_leaves_the_vm_on_the_source(
    vm_factory: VMFactory, second_host: SecondHost, libvirt_uri: str
) -> None:
    vm = booted(vm_factory, second_host, migration_bandwidth="2")
    with pytest.raises(virtlib.VMMigrateTimeoutError):
        vm.migrate(timeout=1.0)
    assert_runs_at(vm, libvirt_uri, second_host.uri)


def test_unreachable_destination_fails_cleanly(
    vm_factory: VMFactory, second_host: SecondHost, libvirt_uri: str, tmp_path: object
) -> None:
    vm = booted(vm_factory, second_host)
    vm.params["migration_dest_uri"] = f"qemu+unix:///system?socket={tmp_path}/no-such-sock"
    with pytest.raises(virtlib.VMMigrateFailedError):
        vm.migrate()
    assert_runs_at(vm, libvirt_uri, second_host.uri)


def test_unsupported_protocol(vm_factory: VMFactory, second_host: SecondHost) -> None:
    vm = vm_factory(migration_dest_uri=second_host.uri)
    assert "exec" not in vm.MIGRATION_PROTOS
    with pytest.raises(virtlib.VMMigrateProtoUnsupportedError):
        vm.migrate(protocol="exec")
    assert vm.is_alive()


def test_migration_over_a_unix_socket(
    vm_factory: VMFactory, second_host: SecondHost, libvirt_uri: str
) -> None:
    vm = booted(vm_factory, second_host)
    before = set(Path("/tmp").glob("virtlib-migrate-*"))
    vm.migrate(protocol="unix")
    assert_runs_at(vm, second_host.uri, libvirt_uri)
    assert set(Path("/tmp").glob("virtlib-migrate-*")) == before
