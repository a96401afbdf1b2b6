"""LibvirtVM against libvirt's in-process test driver (``test:///default``): no daemon, no guest.

The test driver differs from QEMU's in two ways create() copes with: it rejects
``VIR_DOMAIN_START_PAUSED`` (create() starts, then pauses) and it has no consoles
(``virDomainOpenConsole`` is unsupported: the VM runs without a serial console).

The test driver's state lives as long as the process, so every test checks that it leaves no
domain behind.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from virtlib import (
    Params,
    RemoteError,
    VMCreateError,
    VMDeadError,
    VMNotSupportedError,
    VMParamsError,
    VMPortNotRedirectedError,
)
from virtlib.backends.libvirt import domxml
from virtlib.backends.libvirt.console import DomainConsole
from virtlib.backends.libvirt.domain import LibvirtVM
from virtlib.backends.libvirt.host import Host
from virtlib.macpool import MacPool
from virtlib.ports import PortPool

URI = "test:///default"


def domain_names(conn: libvirt.virConnect) -> set[str]:
    return {dom.name() for dom in conn.listAllDomains()}


@pytest.fixture
def conn() -> Iterator[libvirt.virConnect]:
    """The test driver's connection; fails the test if it leaves a domain behind."""
    connection = Host.get(URI).conn
    before = domain_names(connection)
    yield connection
    leftovers = domain_names(connection) - before
    for name in leftovers:  # clean up first, so one failure does not spread to other tests
        dom = connection.lookupByName(name)
        if dom.isActive():
            dom.destroy()
        if dom.isPersistent():
            dom.undefine()
    assert not leftovers, f"the test left domains on {URI}: {sorted(leftovers)}"


@pytest.fixture
def console_attaches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Attaching the console records the domain name instead of opening a stream."""
    attached: list[str] = []

    def attach(self: DomainConsole, host: Any, guest: Any) -> None:
        attached.append(guest.name)

    monkeypatch.setattr(DomainConsole, "attach", attach)
    return attached


@pytest.fixture
def test_driver(conn: libvirt.virConnect) -> libvirt.virConnect:
    return conn


@pytest.fixture
def make_params(tmp_path: Path) -> Callable[..., Params]:
    """Params for a kernel-booted VM on the test driver (the bundled guest is not built)."""
    (tmp_path / "vmlinuz").write_bytes(b"kernel")
    (tmp_path / "initrd").write_bytes(b"initrd")

    def make(**extra: Any) -> Params:
        params = Params(
            connect_uri=URI,
            kernel=str(tmp_path / "vmlinuz"),
            initrd=str(tmp_path / "initrd"),
            accel="tcg",  # the same domain type whatever the machine running the tests
            mem="128",
        )
        params.update(extra)
        return params

    return make


def reservations_of(vm: LibvirtVM) -> tuple[dict[str, str], dict[str, str]]:
    prefix = f"{vm.instance}/"
    macs = {k: v for k, v in MacPool().reserved().items() if k.startswith(prefix)}
    ports = {k: v for k, v in PortPool().table.rows().items() if k.startswith(prefix)}
    return macs, ports


@pytest.fixture
def vms() -> Iterator[list[LibvirtVM]]:
    """VMs to destroy at the end of the test, whatever happened."""
    made: list[LibvirtVM] = []
    yield made
    for vm in made:
        vm.destroy(gracefully=False)


# --- the two differences of the test driver (findings) ------------------------------------------


def test_create_copes_with_the_test_driver(
    conn: libvirt.virConnect, make_params: Callable[..., Params], vms: list[LibvirtVM]
) -> None:
    """No START_PAUSED and no console: the VM runs, without a serial console."""
    vm = LibvirtVM("td-plain", make_params(), ".")
    vms.append(vm)
    vm.create()
    assert vm.is_alive() and not vm.is_paused()
    assert vm.serial_console is None
    with pytest.raises(VMNotSupportedError):
        vm.serial_login()


# --- create and destroy -------------------------------------------------------------------------


def test_create_starts_a_transient_domain(
    test_driver: libvirt.virConnect,
    console_attaches: list[str],
    make_params: Callable[..., Params],
    vms: list[LibvirtVM],
) -> None:
    vm = LibvirtVM("td-create", make_params(nics="nic1"), ".")
    vms.append(vm)
    assert not vm.is_alive()
    vm.create()
    assert vm.is_alive()
    assert not vm.is_dead()
    assert not vm.is_paused()  # started paused, resumed once the console was attached
    vm.verify_alive()
    assert console_attaches == ["td-create"]
    dom = test_driver.lookupByName("td-create")
    assert dom.UUIDString() == vm.uuid
    assert not dom.isPersistent()
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    root = domxml.parse(dom.XMLDesc(0))
    assert root.get("type") == "qemu"
    assert root.findtext("os/kernel") == vm.params["kernel"]
    values = domxml.read_metadata(root)
    assert values.pop("partition", f"{vm.partition.index}/{vm.partition.count}") == (
        f"{vm.partition.index}/{vm.partition.count}"
    )
    stored_params = json.loads(values.pop("params"))
    assert values == {
        "format": "2",
        "instance": vm.instance,
        "forwards": f"0:22={vm.get_port(22)}",
        "macs": f"0={vm.get_mac_address(0)}",
        "accel": "tcg",
        "root_dir": ".",
    }
    assert stored_params["kernel"] == vm.params["kernel"]
    assert "password" not in stored_params  # secrets stay out of the domain XML
    vm.destroy(gracefully=False)
    assert "td-create" not in domain_names(test_driver)
    assert not vm.is_alive()
    with pytest.raises(VMDeadError):
        vm.verify_alive()


def test_pause_and_resume(
    test_driver: libvirt.virConnect, make_params: Callable[..., Params], vms: list[LibvirtVM]
) -> None:
    vm = LibvirtVM("td-pause", make_params(), ".")
    vms.append(vm)
    vm.create()
    vm.pause()
    assert vm.is_paused()
    assert vm.is_alive()
    vm.resume()
    assert not vm.is_paused()


def test_graceful_destroy_without_nics(
    test_driver: libvirt.virConnect, make_params: Callable[..., Params], vms: list[LibvirtVM]
) -> None:
    vm = LibvirtVM("td-graceful", make_params(), ".")
    vms.append(vm)
    vm.create()
    vm.destroy()  # ACPI shutdown (the test driver obeys at once), then nothing left to destroy
    assert "td-graceful" not in domain_names(test_driver)
    assert vm.is_dead()


def test_create_again_replaces_the_running_domain(
    test_driver: libvirt.virConnect, make_params: Callable[..., Params], vms: list[LibvirtVM]
) -> None:
    vm = LibvirtVM("td-twice", make_params(), ".")
    vms.append(vm)
    vm.create()
    first_uuid = vm.uuid
    vm.create()
    assert vm.is_alive()
    assert vm.uuid == first_uuid  # the same VM again
    assert [d.name() for d in test_driver.listAllDomains()].count("td-twice") == 1


def test_libvirt_xml_error_becomes_vmcreateerror(
    test_driver: libvirt.virConnect, make_params: Callable[..., Params], vms: list[LibvirtVM]
) -> None:
    # A multicast MAC passes virtlib's checks; libvirt's XML parser rejects it.
    params = make_params(nics="nic1", nettype="network", nic_mac="01:00:5e:00:00:01")
    vm = LibvirtVM("td-xmlerror", params, ".")
    vms.append(vm)
    with pytest.raises(VMCreateError) as info:
        vm.create()
    assert "<name>td-xmlerror</name>" in info.value.cmd
    assert domxml.parse(info.value.cmd).find("devices/interface/mac").get("address") == (
        "01:00:5e:00:00:01"
    )
    assert info.value.status == libvirt.VIR_ERR_XML_ERROR
    assert "multicast" in info.value.output
    assert "td-xmlerror" not in domain_names(test_driver)
    assert reservations_of(vm) == ({}, {})
    assert not vm.is_alive()


@pytest.fixture
def console_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """Attaching the console fails after the domain has started."""

    def attach(self: DomainConsole, host: Any, guest: Any) -> None:
        raise RemoteError("console taken")

    monkeypatch.setattr(DomainConsole, "attach", attach)


def test_failure_after_start_destroys_the_domain(
    conn: libvirt.virConnect,
    console_taken: None,
    make_params: Callable[..., Params],
    vms: list[LibvirtVM],
) -> None:
    vm = LibvirtVM("td-late-failure", make_params(nics="nic1"), ".")
    vms.append(vm)
    with pytest.raises(RemoteError, match="console taken"):
        vm.create()
    assert "td-late-failure" not in domain_names(conn)
    assert reservations_of(vm) == ({}, {})
    assert not vm.is_alive()


def test_failed_create_leaves_no_reconnect_listener(
    conn: libvirt.virConnect,
    console_taken: None,
    make_params: Callable[..., Params],
    vms: list[LibvirtVM],
) -> None:
    vm = LibvirtVM("td-listener", make_params(), ".")
    with pytest.raises(RemoteError):
        vm.create()
    host = Host.get(URI)
    leaked = vm._on_reconnect in host._reconnect_listeners
    host.remove_reconnect_listener(vm._on_reconnect)  # do not leak into other tests
    assert not leaked


def test_bad_params_fail_before_anything_is_made(
    test_driver: libvirt.virConnect, make_params: Callable[..., Params]
) -> None:
    vm = LibvirtVM("td-xen-user", make_params(hypervisor="xen", nics="nic1"), ".")
    with pytest.raises(VMParamsError, match="user networking"):
        vm.create()
    assert reservations_of(vm) == ({}, {})
    assert vm.uuid is None


# --- reservations -------------------------------------------------------------------------------


def test_reservations_freed_after_destroy(
    test_driver: libvirt.virConnect, make_params: Callable[..., Params], vms: list[LibvirtVM]
) -> None:
    params = make_params(nics="nic1 nic2", redirs_nic1="web", guest_port_web="8080")
    vm = LibvirtVM("td-reserve", params, ".")
    vms.append(vm)
    vm.create()
    macs, ports = reservations_of(vm)
    assert sorted(macs) == [f"{vm.instance}/0", f"{vm.instance}/1"]
    assert sorted(macs.values()) == sorted([vm.get_mac_address(0), vm.get_mac_address(1)])
    assert sorted(ports) == [f"{vm.instance}/nic0/22", f"{vm.instance}/nic0/8080"]
    assert vm.get_port(8080) == int(ports[f"{vm.instance}/nic0/8080"])
    with pytest.raises(VMPortNotRedirectedError):
        vm.get_port(8080, nic_index=1)
    vm.destroy(gracefully=False)
    assert reservations_of(vm) == ({}, {})


def test_destroy_can_keep_mac_addresses(
    test_driver: libvirt.virConnect, make_params: Callable[..., Params], vms: list[LibvirtVM]
) -> None:
    vm = LibvirtVM("td-keepmac", make_params(nics="nic1"), ".")
    vms.append(vm)
    vm.create()
    mac = vm.get_mac_address(0)
    vm.destroy(gracefully=False, free_mac_addresses=False)
    assert reservations_of(vm) == ({f"{vm.instance}/0": mac}, {})
    vm.create()  # the next create() reuses it
    assert vm.get_mac_address(0) == mac
    vm.destroy(gracefully=False)
    assert reservations_of(vm) == ({}, {})


# --- needs_restart ------------------------------------------------------------------------------


def test_needs_restart(
    test_driver: libvirt.virConnect,
    make_params: Callable[..., Params],
    vms: list[LibvirtVM],
    tmp_path: Path,
) -> None:
    params = make_params(nics="nic1")
    vm = LibvirtVM("td-restart", params, tmp_path)
    vms.append(vm)
    assert vm.needs_restart("td-restart", params, tmp_path)  # not running
    vm.create()
    assert not vm.needs_restart("td-restart", params.copy(), tmp_path)
    assert not vm.needs_restart(
        "td-restart", make_params(nics="nic1", shutdown_timeout="5"), tmp_path
    )
    assert vm.needs_restart("td-restart", make_params(nics="nic1", mem="256"), tmp_path)
    assert vm.needs_restart("td-restart", make_params(nics="nic1", smp="2"), tmp_path)
    assert vm.needs_restart("td-restart", make_params(nics="nic1 nic2"), tmp_path)
    assert vm.needs_restart("td-restart", make_params(nics="nic1", kernel="nothere"), tmp_path)
    assert vm.needs_restart("td-other-name", params, tmp_path)
    vm.destroy(gracefully=False)
    assert vm.needs_restart("td-restart", params, tmp_path)


def test_needs_restart_with_explicit_uuid(
    test_driver: libvirt.virConnect, make_params: Callable[..., Params], vms: list[LibvirtVM]
) -> None:
    uuid = "6f1c1c4e-29a8-4b53-9d1e-2b4f5a6c7d8e"
    vm = LibvirtVM("td-uuid", make_params(uuid=uuid), ".")
    vms.append(vm)
    vm.create()
    assert vm.uuid == uuid
    assert not vm.needs_restart("td-uuid", make_params(uuid=uuid), ".")
    other = "7f1c1c4e-29a8-4b53-9d1e-2b4f5a6c7d8e"
    assert vm.needs_restart("td-uuid", make_params(uuid=other), ".")


def test_needs_restart_with_random_uuid(
    test_driver: libvirt.virConnect, make_params: Callable[..., Params], vms: list[LibvirtVM]
) -> None:
    vm = LibvirtVM("td-random-uuid", make_params(uuid="random"), ".")
    vms.append(vm)
    vm.create()
    assert not vm.needs_restart("td-random-uuid", make_params(uuid="random"), ".")


def test_needs_restart_of_hugepage_vm(
    test_driver: libvirt.virConnect,
    monkeypatch: pytest.MonkeyPatch,
    make_params: Callable[..., Params],
    vms: list[LibvirtVM],
) -> None:
    monkeypatch.setattr(Host, "free_hugepages", lambda self, size_kib=2048: 1024)
    params = make_params(hugepage="yes")
    vm = LibvirtVM("td-hugepages", params, ".")
    vms.append(vm)
    vm.create()
    assert domxml.parse(vm.xml).find("memoryBacking/hugepages") is not None
    assert not vm.needs_restart("td-hugepages", params.copy(), ".")


# --- Xen on the test driver ---------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "os_type"), [("hvm", "hvm"), ("pv", "linux")])
def test_hypervisor_xen_on_test_driver(
    test_driver: libvirt.virConnect,
    make_params: Callable[..., Params],
    vms: list[LibvirtVM],
    mode: str,
    os_type: str,
) -> None:
    params = make_params(
        hypervisor="xen", hvm_or_pv=mode, nics="nic1", nettype="bridge", netdst="xenbr0"
    )
    vm = LibvirtVM(f"td-xen-{mode}", params, ".")
    vms.append(vm)
    vm.create()
    assert vm.is_alive()
    root = domxml.parse(test_driver.lookupByName(f"td-xen-{mode}").XMLDesc(0))
    assert root.get("type") == "xen"
    assert root.findtext("os/type") == os_type
    assert root.find("devices/interface/source").get("bridge") == "xenbr0"
    assert root.find(f"{{{domxml.QEMU_NS}}}commandline") is None
    vm.destroy(gracefully=False)
    assert f"td-xen-{mode}" not in domain_names(test_driver)
