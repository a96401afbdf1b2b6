"""Migration to and from a host with its own address (``networked_host``): direct,
peer-to-peer and tunnelled, with the guest's forwarded ports and disks."""

from __future__ import annotations

from pathlib import Path

import pytest
from functional_support import VMFactory, domain_names

import virtlib
from virtlib.images import create_image
from virtlib.secondhost import SecondHost

COUNTER_LOOP = (
    "(i=0; while true; do i=$((i+1)); echo $i > /tmp/c.new; mv /tmp/c.new /tmp/counter; done)"
    " >/dev/null 2>&1 &"
)
MODES = {"direct": {}, "p2p": {"p2p": True}, "tunnelled": {"tunnelled": True}}


def counter(session: virtlib.ShellSession) -> int:
    return int(session.cmd("cat /tmp/counter").strip())


def assert_runs_at(vm: virtlib.BaseVM, uri: str, other_uri: str) -> None:
    """The VM runs at ``uri`` (and not at ``other_uri``), its guest still counting."""
    assert vm.uri == uri and vm.is_alive()
    assert vm.name in domain_names(uri)
    assert vm.name not in domain_names(other_uri)
    assert vm.serial_console is not None
    first = counter(vm.serial_console)
    assert counter(vm.serial_console) > first, "the guest's loop does not advance"


def assert_logs_in(vm: virtlib.BaseVM, marker: str) -> None:
    """An SSH login to the guest, wherever it runs, sees what the serial console wrote."""
    session = vm.wait_for_login(timeout=60)
    try:
        assert session.cmd("cat /tmp/marker").strip() == marker
    finally:
        session.close()


@pytest.mark.parametrize("mode", list(MODES))
def test_migrates_there_and_back(
    vm_factory: VMFactory, networked_host: SecondHost, libvirt_uri: str, mode: str
) -> None:
    vm = vm_factory(migration_dest_uri=networked_host.uri)
    serial = vm.wait_for_serial_login(timeout=120)
    serial.cmd(COUNTER_LOOP)
    serial.cmd(f"echo {mode} > /tmp/marker")
    ports = vm.state.allocations.port_map if vm.state else {}

    result = vm.migrate(**MODES[mode])  # type: ignore[arg-type]

    assert_runs_at(vm, networked_host.uri, libvirt_uri)
    assert result.data_transferred > 0 and result.downtime_ms is not None
    # The destination has a loopback of its own: the same forwarded ports are bound there.
    assert vm.state is not None and vm.state.allocations.port_map == ports
    assert_logs_in(vm, mode)

    # Back to this host: the data comes to this host's end of the pair.
    vm.params["migration_dest_uri"] = libvirt_uri
    vm.migrate(dest_host=networked_host.peer_address or "")
    assert_runs_at(vm, libvirt_uri, networked_host.uri)
    assert_logs_in(vm, mode)


def test_tunnelled_with_a_unix_socket_is_refused_naming_the_param(
    vm_factory: VMFactory, networked_host: SecondHost, libvirt_uri: str
) -> None:
    vm = vm_factory(migration_dest_uri=networked_host.uri)
    with pytest.raises(virtlib.VMParamsError, match="protocol='unix'"):
        vm.migrate(protocol="unix", tunnelled=True)
    assert vm.is_alive() and vm.uri == libvirt_uri


def test_a_disk_copied_to_the_host_with_its_own_address(
    qemu_dir: Path, vm_factory: VMFactory, networked_host: SecondHost
) -> None:
    """``migration_storage = copy``: the destination is on this machine (the same hostname),
    so the copy gets a new name beside the original and goes with the VM."""
    image = Path(create_image({"image_name": str(qemu_dir / "d"), "image_size": "16M"}, "/"))
    vm = vm_factory(
        guest="bundled",
        images="disk1",
        image_name=str(image.with_suffix("")),
        image_format="qcow2",
        migration_storage="copy",
        migration_dest_uri=networked_host.uri,
    )
    serial = vm.wait_for_serial_login(timeout=120)
    serial.cmd("printf virtlib-disk-marker | dd of=/dev/vda conv=notrunc 2>/dev/null; sync")
    vm.migrate(p2p=True)
    assert vm.uri == networked_host.uri
    assert vm.state is not None and len(vm.state.owned_files) == 1
    copy = Path(vm.state.owned_files[0])
    assert copy != image and copy.parent == image.parent and copy.exists()
    serial.cmd("echo 3 > /proc/sys/vm/drop_caches")
    read = serial.cmd("dd if=/dev/vda bs=19 count=1 2>/dev/null; echo")
    assert read.strip() == "virtlib-disk-marker"
    vm.destroy()
    assert not copy.exists() and image.exists()
