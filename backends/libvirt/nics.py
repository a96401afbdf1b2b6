"""NICs on a running libvirt domain: user-networking NICs through QMP, the others through libvirt.

A user-networking NIC at boot is QEMU's ``-netdev user,hostfwd=...`` plus a ``-device``
in the domain's qemu:commandline (libvirt 9.0 has no user networking with port
forwards of its own: its passt backend came later).  libvirt's device API cannot plug
such a NIC, so virtlib plugs the same two things into the running QEMU with QMP
(``netdev_add`` with the forwards, then ``device_add`` at the designer's PCI slot)
through libvirt-qemu's monitor passthrough, and unplugs them with ``device_del``
(waiting for QEMU's own DEVICE_DELETED, which libvirt passes on) and ``netdev_del``.
The NIC is in the VM's state as any NIC of its params, so the design of the VM (for a
migration, a save, ``needs_restart``) has it in its qemu:commandline with its forwards
and slot: a destination QEMU starts with the NIC the source had plugged in.

Why not libvirt's ``<interface type="user">``: it plugs, but its forwards would have
to be added with HMP ``hostfwd_add`` after every start of QEMU (migration, restore, a
snapshot's revert) and could not be part of the design; ``restrict`` is not there either.

NICs on a libvirt network or bridge are plugged with libvirt's device API.  MACs and
forwarded ports are reserved from the VM's pools (its partition) as at boot, and freed
when the NIC goes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from virtlib import hotplug
from virtlib.backends.libvirt import designer, domxml
from virtlib.backends.libvirt.devices import (
    commit,
    designed,
    live_alias,
    live_pci_slots,
    live_root,
    params_error,
    persist,
    refusal,
    running,
    wait_removed,
)
from virtlib.backends.libvirt.events import QEMU_DEVICE_DELETED
from virtlib.devices import Nic
from virtlib.errors import (
    VMDeviceAttachError,
    VMDeviceDetachError,
    VMDeviceError,
    VMDeviceNotFoundError,
)
from virtlib.spec import MAC_RE, NET_TYPES, NicSpec
from virtlib.state import Allocations, VMState
from virtlib.waiting import Deadline

if TYPE_CHECKING:
    from virtlib.backends.libvirt.domain import LibvirtVM
    from virtlib.backends.libvirt.guest import Guest

log = logging.getLogger(__name__)

#: A change to a VM's params (what attaching a NIC does to them).
Change = Callable[[Mapping[str, str]], dict[str, str]]


def nic_value(state: VMState, nic: NicSpec) -> Nic:
    allocations = state.allocations
    return Nic(
        name=nic.name,
        index=nic.index,
        mac=allocations.mac(nic.index) or nic.mac,
        model=nic.model,
        nettype=nic.nettype,
        netdst=nic.netdst,
        forwards={
            guest: host
            for (index, guest), host in allocations.ports
            if index == nic.index and nic.nettype == "user"
        },
    )


def nics(vm: LibvirtVM) -> list[Nic]:
    state = vm.state
    if state is None:
        return []
    return [nic_value(state, n) for n in state.spec.nics if n.present]


def find_nic(state: VMState, nic: Nic | str | int) -> NicSpec:
    """The attached NIC named or numbered by ``nic``; VMDeviceNotFoundError when none."""
    present = [n for n in state.spec.nics if n.present]
    for candidate in present:
        if isinstance(nic, Nic) and candidate.index == nic.index and candidate.name == nic.name:
            return candidate
        if isinstance(nic, bool):
            break
        if candidate.name == nic or (isinstance(nic, int) and candidate.index == nic):
            return candidate
    key = nic.name if isinstance(nic, Nic) else str(nic)
    raise VMDeviceNotFoundError(state.spec.name, key, [n.name for n in present])


def _check(
    vm: LibvirtVM, nettype: str, mac: str | None, model: str, redirs: Sequence[int], netdst: str
) -> None:
    """Bad input, before anything is reserved or asked."""
    if nettype not in NET_TYPES:
        raise params_error(
            vm, "attach_nic", "nettype", nettype, f"is not one of {', '.join(NET_TYPES)}"
        )
    if nettype == "user" and model not in designer.USER_NET_MODELS:
        raise params_error(
            vm, "attach_nic", "model", model, f"is not one of {', '.join(designer.USER_NET_MODELS)}"
        )
    if mac is not None and not MAC_RE.match(mac.lower()):
        raise params_error(vm, "attach_nic", "mac", mac, "is not a MAC address")
    if nettype == "bridge" and not netdst:
        raise params_error(vm, "attach_nic", "netdst", netdst, "must name the bridge")
    for port in redirs:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise params_error(vm, "attach_nic", "redirs", port, "is not a TCP port (1-65535)")
    if redirs and nettype != "user":
        raise params_error(
            vm, "attach_nic", "redirs", tuple(redirs), "are for user networking only"
        )


def attach_nic(
    vm: LibvirtVM,
    nettype: str,
    mac: str | None,
    model: str,
    redirs: Sequence[int],
    name: str | None,
    netdst: str,
    persistent: bool,
) -> Nic:
    """See DeviceOperations.attach_nic."""
    state, guest = running(vm, "attach a NIC")
    spec = state.spec
    standby = {n.name: n for n in spec.nics if not n.present and not n.hotplugged}
    configured = standby.get(name or "")
    change: Change
    if configured is not None:
        configured_name = configured.name

        def attach(params: Mapping[str, str]) -> dict[str, str]:
            return hotplug.with_disk_attached(params, configured_name, True)

        change = attach

        index = configured.index
    else:
        change, index = _new_nic(vm, state, guest, nettype, mac, model, redirs, name, netdst)

    new = state.with_params(change(state.params))
    nic = new.spec.nics[index]
    new = new.replace(allocations=_reserve(vm, state.allocations, nic))
    try:
        _plug(vm, guest, designed(vm, new), new.allocations, nic, persistent)
    except BaseException:
        _release(vm, nic, new.allocations)
        raise
    commit(vm, guest, new)
    if persistent:
        persist(vm, change)
    log.info("%s: NIC %s (%s) attached as index %d", vm.name, nic.name, nic.nettype, index)
    return nic_value(new, nic)


def _new_nic(
    vm: LibvirtVM,
    state: VMState,
    guest: Guest,
    nettype: str,
    mac: str | None,
    model: str,
    redirs: Sequence[int],
    name: str | None,
    netdst: str,
) -> tuple[Change, int]:
    """A new NIC's input checked (before libvirt is asked), its place chosen: the change
    to the VM's params that adds it, and its index."""
    spec = state.spec
    _check(vm, nettype, mac, model, redirs, netdst)
    names = [n.name for n in spec.nics]
    name = hotplug.check_name(vm.name, name, names, "NIC") if name else None
    name = name or hotplug.new_name(hotplug.NIC_PREFIX, names)
    reuse = next((n for n in spec.nics if n.hotplugged and not n.present), None)
    index = reuse.index if reuse is not None else len(spec.nics)
    user = nettype == "user"
    if user and not designer.places_pci_devices(spec, designed(vm, state).template):
        raise params_error(
            vm,
            "attach_nic",
            "nettype",
            nettype,
            "NICs can be hotplugged on i440fx only (q35 has no free slot on its root bus)",
        )
    slot = designer.hot_pci_slot(
        vm.name, designed(vm, state), live_pci_slots(live_root(guest)), user_net=user
    )
    network = netdst or ("default" if nettype == "network" else "")
    new_name = name

    def change(params: Mapping[str, str]) -> dict[str, str]:
        return hotplug.with_nic(
            params,
            names,
            new_name,
            nettype,
            model,
            (mac or "").lower(),
            network,
            redirs,
            slot,
            reuse,
        )

    return change, index


def _reserve(vm: LibvirtVM, allocations: Allocations, nic: NicSpec) -> Allocations:
    """A MAC and the forwarded ports for ``nic``, from the VM's pools (freed on failure)."""
    macs, ports = allocations.mac_map, allocations.port_map
    macs[nic.index] = vm.mac_pool().reserve(vm.instance, nic.index, nic.mac or None)
    try:
        for guest_port in nic.guest_ports:
            ports[(nic.index, guest_port)] = vm.port_pool().reserve(
                vm.instance, f"nic{nic.index}/{guest_port}"
            )
    except BaseException:
        _release(vm, nic, Allocations.of(macs, ports))
        raise
    return Allocations.of(macs, ports)


def _release(vm: LibvirtVM, nic: NicSpec, allocations: Allocations) -> Allocations:
    """Free the MAC and ports of ``nic``; the allocations without them."""
    vm.mac_pool().release(vm.instance, nic.index)
    mine = {port for (index, _), port in allocations.ports if index == nic.index}
    vm.port_pool().release(vm.instance, mine)
    macs = {i: m for i, m in allocations.macs if i != nic.index}
    ports = {k: p for k, p in allocations.ports if k[0] != nic.index}
    return Allocations.of(macs, ports)


def _plug(
    vm: LibvirtVM,
    guest: Guest,
    config: domxml.DomainConfig,
    allocations: Allocations,
    nic: NicSpec,
    persistent: bool,
) -> None:
    """Plug the designed NIC ``nic`` into the running domain."""
    refused = refusal(vm, nic.name, VMDeviceAttachError)
    if nic.nettype != "user":
        mac = allocations.mac(nic.index)
        interface = next(i for i in config.interfaces if i.mac == mac)
        xml = domxml.to_string(domxml.interface_element(interface))
        guest.attach_device(xml, persistent, refused)
        return
    net = next(u for u in config.user_nets if u.device_id == f"vlnic{nic.index}")
    netdev: dict[str, object] = {"type": "user", "id": net.netdev_id, "restrict": net.restrict}
    if net.network:
        netdev["net"] = net.network
    if net.forwards:
        netdev["hostfwd"] = [
            {"str": f"tcp:{net.bind_address}:{host}-:{port}"} for host, port in net.forwards
        ]
    guest.qmp("netdev_add", netdev, refused)
    try:
        guest.qmp("device_add", dict(net.device_properties()), refused)
    except BaseException:
        guest.qmp("netdev_del", {"id": net.netdev_id}, refusal(vm, nic.name, VMDeviceError))
        raise


def detach_nic(vm: LibvirtVM, nic: Nic | str | int, timeout: float, persistent: bool) -> None:
    """See DeviceOperations.detach_nic."""
    state, guest = running(vm, "detach a NIC")
    found = find_nic(state, nic)
    mac = state.allocations.mac(found.index) or found.mac
    events = vm.host.events.subscribe(state.uuid)
    refused = refusal(vm, found.name, VMDeviceDetachError)
    deadline = Deadline(timeout)
    try:
        if found.nettype == "user":
            device = f"vlnic{found.index}"
            guest.qmp("device_del", {"id": device}, refused)
            wait_removed(events, vm.name, found.name, device, deadline, QEMU_DEVICE_DELETED)
            guest.qmp("netdev_del", {"id": f"vlnet{found.index}"}, refused)
        else:
            path = f"devices/interface/mac[@address='{mac}']/.."
            alias = live_alias(live_root(guest), path)
            interface = next(i for i in designed(vm, state).interfaces if i.mac == mac)
            xml = domxml.to_string(domxml.interface_element(interface))
            guest.detach_device(xml, persistent, refused)
            wait_removed(events, vm.name, found.name, alias, deadline)
    finally:
        vm.host.events.unsubscribe(state.uuid, events)
    allocations = _release(vm, found, state.allocations)

    def change(params: Mapping[str, str]) -> dict[str, str]:
        return hotplug.with_disk_attached(params, found.name, False)

    commit(vm, guest, state.with_params(change(state.params), allocations=allocations))
    if persistent:
        persist(vm, change)
    log.info("%s: NIC %s detached", vm.name, found.name)
