"""Devices on a running libvirt domain: disks, CD-ROMs, vCPUs, memory (NICs: :mod:`.nics`).

Every operation runs the same way:

1. check the input against the VM's state, before libvirt is asked (a bad size, an
   unknown disk, vCPUs over ``vcpus_max``: a VMDeviceParamsError naming the VM, the argument
   and the value; nothing is made);
2. decide the new device's values with the designer (target, PCI slot clear of every
   device virtlib placed and of those libvirt placed itself, serial) and write them into
   a new state's params (:mod:`virtlib.hotplug`), so every later design of the VM (a
   migration's, ``needs_restart``'s) has the device where it is;
3. build the device's XML from that design (:mod:`.domxml`'s mapping) and ask libvirt;
4. on success replace the VM's state and its copy in the domain's metadata; on failure
   remove whatever was made for it (an image, reservations).

Unplugging asks the guest and waits, with a deadline, for libvirt's device-removed
event (subscribed before asking): a guest that does not release the device gets a
VMDeviceTimeoutError and the device stays in the state.
"""

from __future__ import annotations

import logging
import os
import queue
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lxml import etree

from virtlib import hotplug, media
from virtlib.backends.libvirt import designer, domxml, metadata
from virtlib.backends.libvirt.events import DEVICE_REMOVED, DomainEvent, wait_event
from virtlib.devices import Dimm, Disk
from virtlib.errors import (
    VMDeviceAttachError,
    VMDeviceDetachError,
    VMDeviceError,
    VMDeviceNotFoundError,
    VMDeviceParamsError,
    VMDeviceTimeoutError,
    VMFileMissingError,
    VMNotSupportedError,
    VMParamsError,
    VMStateError,
)
from virtlib.image_types import check_size
from virtlib.images import create_image
from virtlib.params import Params
from virtlib.registry import image_tool
from virtlib.spec import DISK_FORMATS, SERIAL_RE, DiskSpec
from virtlib.state import VMState
from virtlib.waiting import Deadline

if TYPE_CHECKING:
    from virtlib.backends.libvirt.domain import LibvirtVM
    from virtlib.backends.libvirt.guest import Guest

log = logging.getLogger(__name__)

HOT_BUSES = ("virtio", "scsi")
"""Disk buses QEMU can hotplug on i440fx: a virtio-blk PCI device, or a disk on the VM's
virtio-scsi controller (IDE and SATA disks cannot be hotplugged)."""
MEMORY_BLOCK_MIB = 128
"""Linux's memory block on x86-64: the guest onlines hotplugged memory in these."""


# --- shared by the device operations ------------------------------------------------------------
def running(vm: LibvirtVM, operation: str) -> tuple[VMState, Guest]:
    """The VM's state and domain; VMStateError when it does not run."""
    state = vm.state
    if state is None or not vm.is_alive():
        raise VMStateError(f"cannot {operation}: VM {vm.name!r} is not running")
    return state, vm.guest()


def designed(vm: LibvirtVM, state: VMState) -> domxml.DomainConfig:
    return vm.design(state, check_resources=False)


def commit(vm: LibvirtVM, guest: Guest, state: VMState) -> None:
    """``state`` becomes the VM's, in this process and in the running domain's metadata."""
    vm.replace_device_state(state)
    guest.set_metadata(metadata.element(state), "virtlib", domxml.VIRTLIB_NS)


def persist(vm: LibvirtVM, change: Callable[[Mapping[str, str]], dict[str, str]]) -> None:
    """``persistent=True`` on virtlib's transient domains: the VM's params (what its next
    create() boots from) get the same change."""
    changed = change(dict(vm.params))
    changed.setdefault("guest", vm.spec.guest)  # as VMState.with_params: the same guest
    vm.params.clear()
    vm.params.update(changed)


def live_root(guest: Guest) -> etree._Element:
    return domxml.parse(guest.xml())


def live_pci_slots(root: etree._Element) -> set[int]:
    """The slots on PCI bus 0 the running domain's devices have (libvirt's own too)."""
    slots = set()
    for address in root.iterfind("devices//address[@type='pci']"):
        if int(address.get("bus", "0"), 16) == 0 and int(address.get("domain", "0"), 16) == 0:
            slots.add(int(address.get("slot", "0"), 16))
    return slots


def live_disk_order(root: etree._Element) -> list[str]:
    """The targets of the running domain's disks and CD-ROMs, in libvirt's order."""
    return [t.get("dev", "") for t in root.iterfind("devices/disk/target")]


def live_alias(root: etree._Element, path: str) -> str:
    """The alias libvirt gave the device at ``path`` (an ElementPath from the root)."""
    element = root.find(path)
    alias = element.find("alias") if element is not None else None
    return alias.get("name", "") if alias is not None else ""


def wait_removed(
    events: queue.Queue[DomainEvent],
    vm: str,
    device: str,
    alias: str,
    deadline: Deadline,
    kind: str = DEVICE_REMOVED,
) -> None:
    """Wait for the event that device ``alias`` is gone; VMDeviceTimeoutError at the deadline.

    The deadline starts before the unplug is asked for (libvirt's detach call itself may
    wait a few seconds for the guest); an event that came meanwhile is still seen."""

    def wanted(event: DomainEvent) -> bool:
        return event.kind == kind and event.device == alias

    if wait_event(events, max(deadline.remaining(), 0.05), wanted) is None:
        raise VMDeviceTimeoutError(
            vm,
            device,
            f"the guest did not release it within {deadline.timeout:g} s (it is still attached; "
            "a guest without hotplug support, or one using the device, keeps it)",
        )


def refusal(
    vm: LibvirtVM, device: str, error: type[VMDeviceError]
) -> Callable[[str], VMDeviceError]:
    return lambda text: error(vm.name, device, text)


def params_error(
    vm: LibvirtVM, operation: str, argument: str, value: object, why: str
) -> VMDeviceParamsError:
    return VMDeviceParamsError(vm.name, operation, argument, value, why)


# --- disks ----------------------------------------------------------------------------------------
def find_disk(state: VMState, disk: Disk | str, config: domxml.DomainConfig) -> DiskSpec:
    """The attached disk named (or targeted) by ``disk``; VMDeviceNotFoundError when none."""
    key = disk.name if isinstance(disk, Disk) else str(disk)
    targets = {d.name: d.target for d in config.disks if d.device == "disk"}
    for spec_disk in state.spec.disks:
        if key in (spec_disk.name, targets.get(spec_disk.name)):
            return spec_disk
    raise VMDeviceNotFoundError(state.spec.name, key, [d.name for d in state.spec.disks])


def disk_value(config: domxml.DomainConfig, name: str) -> Disk:
    disk = next(d for d in config.disks if d.name == name and d.device == "disk")
    return Disk(
        name=name,
        target=disk.target,
        bus=disk.bus,
        path=disk.source,
        format=disk.format,
        serial=disk.serial,
        readonly=disk.readonly,
    )


def disks(vm: LibvirtVM) -> list[Disk]:
    state = vm.state
    if state is None:
        return []
    config = designed(vm, state)
    return [disk_value(config, d.name) for d in state.spec.disks]


@dataclass(frozen=True)
class _NewDisk:
    """A disk to hotplug, its input checked."""

    name: str
    file: Path
    format: str
    bus: str
    readonly: bool
    raw: bool
    serial: str
    size: str
    made: bool  # virtlib makes the image (and removes it with the disk)

    def image_name(self, vm: str) -> str:
        return hotplug.image_name(vm, str(self.file), self.format, self.raw)


def _new_disk(
    vm: LibvirtVM,
    state: VMState,
    path: str | None,
    size: str,
    fmt: str,
    bus: str,
    readonly: bool,
    name: str | None,
    serial: str | None,
    persistent: bool,
) -> _NewDisk:
    """Check attach_disk's input (VMDeviceParamsError, VMFileMissingError); nothing is made."""
    spec = state.spec
    names = [d.name for d in spec.planned_disks()] + [c.name for c in spec.cdroms]
    name = hotplug.check_name(vm.name, name, names, "disk") if name else None
    name = name or hotplug.new_name(hotplug.DISK_PREFIX, names)
    if bus not in HOT_BUSES:
        why = f"cannot be hotplugged: use one of {', '.join(HOT_BUSES)}"
        raise params_error(vm, "attach_disk", "bus", bus, why)
    if fmt not in DISK_FORMATS:
        why = f"is not one of {', '.join(DISK_FORMATS)}"
        raise params_error(vm, "attach_disk", "image_format", fmt, why)
    serial = name[-20:] if serial is None else serial
    if not SERIAL_RE.match(serial):
        why = "must be 1-20 letters, digits, '_', '.' or '-'"
        raise params_error(vm, "attach_disk", "serial", serial, why)
    if path is not None:
        file = Path(path).absolute()
        if not file.exists():
            raise VMFileMissingError(str(file), "disk image", vm.name, "path")
        request = _NewDisk(
            name, file, fmt, bus, readonly, file.is_block_device(), serial, "", False
        )
        request.image_name(vm.name)
        return request
    if persistent:
        why = "needs a path: an image virtlib makes goes with the disk"
        raise params_error(vm, "attach_disk", "persistent", persistent, why)
    try:
        size = check_size(size)
    except VMParamsError as exc:
        raise params_error(vm, "attach_disk", "size", size, f"is no size ({exc})") from None
    file = media.directory_for(spec, state.instance) / f"{name}.{fmt}"
    return _NewDisk(name, file, fmt, bus, readonly, False, serial, size, True)


def attach_disk(
    vm: LibvirtVM,
    path: str | None,
    size: str,
    image_format: str,
    bus: str,
    readonly: bool,
    name: str | None,
    serial: str | None,
    persistent: bool,
) -> Disk:
    """See DeviceOperations.attach_disk."""
    state, guest = running(vm, "attach a disk")
    standby = {d.name: d for d in state.spec.standby_disks}
    if name is not None and name in standby:
        return _attach_standby(vm, state, guest, standby[name], persistent)
    disk = _new_disk(vm, state, path, size, image_format, bus, readonly, name, serial, persistent)
    now = designed(vm, state)
    if bus == "scsi" and designer.needs_scsi_controller(now):
        why = (
            "needs the VM's virtio-scsi controller: give the VM a disk with drive_format = "
            "scsi in params (boot_drive = no keeps it out of the domain)"
        )
        raise params_error(vm, "attach_disk", "bus", bus, why)
    target = designer.hot_target(now, bus)
    taken = live_pci_slots(live_root(guest))
    slot = designer.hot_pci_slot(vm.name, now, taken, user_net=False) if bus == "virtio" else 0
    image = disk.image_name(vm.name)
    images = [d.name for d in state.spec.planned_disks()]

    def change(params: Mapping[str, str]) -> dict[str, str]:
        return hotplug.with_disk(
            params, images, disk.name, image, disk.format, disk.bus, disk.readonly, disk.raw,
            disk.serial, target, slot,
        )  # fmt: skip

    owned = (*state.owned_files, str(disk.file)) if disk.made else state.owned_files
    new = state.with_params(change(state.params), owned_files=owned)
    try:
        if disk.made:
            image_tool().create(disk.file, disk.format, disk.size)
            os.chmod(disk.file, 0o600)
        config = designed(vm, new)
        element = next(d for d in config.disks if d.name == disk.name)
        xml = domxml.to_string(domxml.disk_element(element))
        guest.attach_device(xml, persistent, refusal(vm, disk.name, VMDeviceAttachError))
    except BaseException:
        if disk.made:
            disk.file.unlink(missing_ok=True)
        raise
    _commit_disks(vm, guest, new)
    if persistent:
        persist(vm, change)
    log.info("%s: disk %s attached as %s (%s)", vm.name, disk.name, target, disk.file)
    return disk_value(config, disk.name)


def _attach_standby(
    vm: LibvirtVM, state: VMState, guest: Guest, disk: DiskSpec, persistent: bool
) -> Disk:
    """Attach the configured disk ``disk`` (``boot_drive = no``) in the place kept for it;
    an image with ``create_image`` is made now (and with ``remove_image`` goes with the VM)."""

    def change(params: Mapping[str, str]) -> dict[str, str]:
        return hotplug.with_disk_attached(params, disk.name, True)

    owned = state.owned_files
    made = disk.create and not disk.raw_device and not disk.path.exists()
    if made and disk.remove:
        owned = (*owned, str(disk.path))
    new = state.with_params(change(state.params), owned_files=owned)
    try:
        if made:
            create_image(Params(state.params).object_params(disk.name), state.root_dir)
        config = designed(vm, new)
        element = next(d for d in config.disks if d.name == disk.name)
        xml = domxml.to_string(domxml.disk_element(element))
        guest.attach_device(xml, persistent, refusal(vm, disk.name, VMDeviceAttachError))
    except BaseException:
        if made:
            disk.path.unlink(missing_ok=True)
        raise
    _commit_disks(vm, guest, new)
    if persistent:
        persist(vm, change)
    return disk_value(config, disk.name)


def _commit_disks(vm: LibvirtVM, guest: Guest, state: VMState) -> None:
    """Commit ``state`` with the order libvirt lists the disks in now."""
    order = live_disk_order(live_root(guest))
    commit(vm, guest, state.with_params(hotplug.with_disk_order(state.params, order)))


def detach_disk(vm: LibvirtVM, disk: Disk | str, timeout: float, persistent: bool) -> None:
    """See DeviceOperations.detach_disk."""
    state, guest = running(vm, "detach a disk")
    config = designed(vm, state)
    found = find_disk(state, disk, config)
    element = next(d for d in config.disks if d.name == found.name)
    alias = live_alias(live_root(guest), f"devices/disk/target[@dev='{element.target}']/..")
    xml = domxml.to_string(domxml.disk_element(element))
    events = vm.host.events.subscribe(state.uuid)
    try:
        deadline = Deadline(timeout)
        guest.detach_device(xml, persistent, refusal(vm, found.name, VMDeviceDetachError))
        wait_removed(events, vm.name, found.name, alias, deadline)
    finally:
        vm.host.events.unsubscribe(state.uuid, events)
    owned = state.owned_files
    if element.source in owned:  # an image virtlib made for the disk: it goes with it
        Path(element.source).unlink(missing_ok=True)
        owned = tuple(f for f in owned if f != element.source)

    def change(params: Mapping[str, str]) -> dict[str, str]:
        return hotplug.without_disk(params, found)

    _commit_disks(vm, guest, state.with_params(change(state.params), owned_files=owned))
    if persistent:
        persist(vm, change)
    log.info("%s: disk %s (%s) detached", vm.name, found.name, element.target)


# --- CD-ROMs --------------------------------------------------------------------------------
def change_media(vm: LibvirtVM, cdrom: str, path: str | None, persistent: bool) -> None:
    """See DeviceOperations.change_media and eject_media (``path`` None)."""
    state, guest = running(vm, "change a CD-ROM's medium")
    names = [c.name for c in state.spec.cdroms]
    if cdrom not in names:
        raise VMDeviceNotFoundError(vm.name, cdrom, names)
    medium = ""
    if path is not None:
        iso = Path(path).absolute()
        if not iso.is_file():
            raise VMFileMissingError(str(iso), f"CD image for {cdrom!r}", vm.name, "path")
        medium = str(iso)

    def change(params: Mapping[str, str]) -> dict[str, str]:
        return hotplug.with_medium(params, cdrom, medium)

    new = state.with_params(change(state.params))
    element = next(d for d in designed(vm, new).disks if d.name == cdrom)
    xml = domxml.to_string(domxml.disk_element(element))
    guest.update_device(xml, persistent, refusal(vm, cdrom, VMDeviceError))
    commit(vm, guest, new)
    if persistent:
        persist(vm, change)


# --- vCPUs and memory -----------------------------------------------------------------------
def set_vcpus(vm: LibvirtVM, count: int, in_guest: bool, persistent: bool) -> None:
    """See DeviceOperations.set_vcpus."""
    state, guest = running(vm, "set the vCPUs")
    maximum = state.spec.growth.vcpus_max
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= maximum:
        raise params_error(
            vm, "set_vcpus", "count", count, f"is not between 1 and vcpus_max ({maximum})"
        )
    refused = refusal(vm, "vcpus", VMDeviceError)
    if in_guest:
        guest.set_vcpus(count, True, False, refused, refused)
        return
    if count < state.spec.vcpus and state.accel != "kvm":
        raise VMNotSupportedError(
            "vCPU unplug",
            vm.BACKEND,
            f"{vm.name!r} runs under {state.accel or 'TCG'}: QEMU 7.2 there sends no "
            "DEVICE_DELETED for an unplugged vCPU, so libvirt never sees it go, and QEMU "
            "later crashes; take vCPUs offline in the guest with set_vcpus(count, guest=True)",
        )
    if count != state.spec.vcpus:
        timed_out = refusal(vm, "vcpus", VMDeviceTimeoutError)
        guest.set_vcpus(count, False, persistent, refused, timed_out)

    def change(params: Mapping[str, str]) -> dict[str, str]:
        return hotplug.with_vcpus(params, count)

    commit(vm, guest, state.with_params(change(state.params)))
    if persistent:
        persist(vm, change)


def set_memory(vm: LibvirtVM, mib: int, persistent: bool) -> None:
    """See DeviceOperations.set_memory."""
    state, guest = running(vm, "set the memory")
    total = state.spec.memory_mib
    if isinstance(mib, bool) or not isinstance(mib, int) or not 1 <= mib <= total:
        raise params_error(
            vm, "set_memory", "mib", mib, f"is not between 1 and the VM's memory ({total} MiB)"
        )
    guest.set_memory(mib * 1024, persistent, refusal(vm, "memory balloon", VMDeviceError))

    def change(params: Mapping[str, str]) -> dict[str, str]:
        return hotplug.with_balloon(params, 0 if mib == total else mib)

    commit(vm, guest, state.with_params(change(state.params)))
    if persistent:
        persist(vm, change)


def attach_memory(vm: LibvirtVM, mib: int, persistent: bool) -> Dimm:
    """See DeviceOperations.attach_memory."""
    state, guest = running(vm, "attach memory")
    growth, total = state.spec.growth, state.spec.memory_mib
    if not growth.mem_slots:
        raise params_error(
            vm,
            "attach_memory",
            "mib",
            mib,
            "needs memory hotplug: set the params mem_slots and mem_max",
        )
    if isinstance(mib, bool) or not isinstance(mib, int) or mib <= 0 or mib % MEMORY_BLOCK_MIB:
        raise params_error(
            vm,
            "attach_memory",
            "mib",
            mib,
            f"must be a positive multiple of {MEMORY_BLOCK_MIB} (the guest's memory block)",
        )
    if total + mib > growth.mem_max_mib:
        raise params_error(
            vm,
            "attach_memory",
            "mib",
            mib,
            f"would take the VM over mem_max ({total} + {mib} > {growth.mem_max_mib} MiB)",
        )
    free = sorted(set(range(growth.mem_slots)) - {d.slot for d in growth.dimms})
    if not free:
        raise params_error(
            vm, "attach_memory", "mib", mib, f"has no free slot (mem_slots = {growth.mem_slots})"
        )
    name = hotplug.new_name(hotplug.DIMM_PREFIX, [d.name for d in growth.dimms])
    dimm = domxml.DimmConfig(mib, free[0])
    xml = domxml.to_string(domxml.dimm_element(dimm))
    guest.attach_device(xml, persistent, refusal(vm, name, VMDeviceAttachError))
    found = live_root(guest).find(f"devices/memory[@model='dimm']/address[@slot='{dimm.slot}']")
    base = int(found.get("base", "0"), 16) if found is not None else 0

    def change(params: Mapping[str, str]) -> dict[str, str]:
        return hotplug.with_dimm(params, name, mib, dimm.slot, base)

    commit(vm, guest, state.with_params(change(state.params)))
    if persistent:
        persist(vm, change)
    return Dimm(name, mib, dimm.slot)


def detach_memory(vm: LibvirtVM, dimm: Dimm | str, timeout: float, persistent: bool) -> None:
    """See DeviceOperations.detach_memory."""
    state, guest = running(vm, "detach memory")
    key = dimm.name if isinstance(dimm, Dimm) else str(dimm)
    dimms = {d.name: d for d in state.spec.growth.dimms}
    if key not in dimms:
        raise VMDeviceNotFoundError(vm.name, key, list(dimms))
    root = live_root(guest)
    path = f"devices/memory[@model='dimm']/address[@slot='{dimms[key].slot}']/.."
    element = root.find(path)
    if element is None:
        raise VMDeviceDetachError(vm.name, key, "the running domain has no such memory module")
    alias = live_alias(root, path)
    events = vm.host.events.subscribe(state.uuid)
    try:
        xml = str(etree.tostring(element, encoding="unicode"))
        deadline = Deadline(timeout)
        guest.detach_device(xml, persistent, refusal(vm, key, VMDeviceDetachError))
        wait_removed(events, vm.name, key, alias, deadline)
    finally:
        vm.host.events.unsubscribe(state.uuid, events)
    left = state.spec.memory_mib - dimms[key].size_mib

    def change(params: Mapping[str, str]) -> dict[str, str]:
        result = hotplug.without_dimm(params, key)
        if state.spec.growth.balloon_mib > left:
            result = hotplug.with_balloon(result, 0)
        return result

    commit(vm, guest, state.with_params(change(state.params)))
    if persistent:
        persist(vm, change)
