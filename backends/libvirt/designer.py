"""Policy: which values a domain gets, decided from the VM spec and facts about the host.

The designer checks what can be checked before anything is created (media
exist and match their hashes, huge pages and PCI devices are available) and
returns a :class:`~.domxml.DomainConfig`; :mod:`.domxml` maps it to XML.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from virtlib.accel import AccelChoice
from virtlib.backends.libvirt.domxml import (
    ControllerConfig,
    DimmConfig,
    DiskConfig,
    DisplayConfig,
    DomainConfig,
    HostdevConfig,
    InterfaceConfig,
    UserNetConfig,
)
from virtlib.errors import (
    VMBadPATypeError,
    VMFileMissingError,
    VMHashMismatchError,
    VMHugePageError,
    VMPAError,
    VMParamsError,
)
from virtlib.media import PreparedMedia
from virtlib.spec import CdromSpec, DiskSpec, NicSpec, VMSpec
from virtlib.state import Allocations

log = logging.getLogger(__name__)
Placed = TypeVar("Placed", DiskConfig, InterfaceConfig)

TARGET_PREFIX = {"virtio": "vd", "ide": "hd", "scsi": "sd", "sata": "sd", "usb": "sd", "xen": "xvd"}
USER_NET_MODELS = {
    "virtio": "virtio-net-pci",
    "e1000": "e1000",
    "e1000e": "e1000e",
    "rtl8139": "rtl8139",
}
FIRST_USER_NET_SLOT = 3
"""QEMU's first free slot on i440fx: images made for QEMU name that NIC ``ens3``."""
FIRST_MANAGED_SLOT = 8
"""Where the PCI devices libvirt manages start (slots 3-7 are left to user-net NICs)."""
LAST_PCI_SLOT = 31
MANAGED_SLOT_ORDER = (*range(FIRST_MANAGED_SLOT, LAST_PCI_SLOT + 1), *range(3, FIRST_MANAGED_SLOT))
RESERVED_SLOTS = frozenset({0, 1, 2})  # host bridge, PIIX3 (IDE, USB, PM), VGA
CONTROLLER_MODELS = {"scsi": "virtio-scsi"}
"""libvirt's default SCSI controller on QEMU is an LSI one, which cloud kernels lack."""
HUGEPAGE_KIB = 2048
DISPLAY_LISTEN = "127.0.0.1"
PA_TYPES = ("vf", "pf", "mixed")


@dataclass(frozen=True)
class PciDevice:
    """A host PCI device libvirt knows, with its SR-IOV role."""

    domain: int
    bus: int
    slot: int
    function: int
    is_vf: bool = False
    is_pf: bool = False


@dataclass(frozen=True)
class HostFacts:
    """What the designer needs to know about the host (gathered by the domain driver)."""

    driver: str  # libvirt's driver type: "qemu", "xen", "test", ...
    accel: AccelChoice
    free_hugepages: Callable[[], int] = lambda: 0
    pci_devices: Callable[[], list[PciDevice]] = list


@dataclass(frozen=True)
class BootMedia:
    """Direct kernel boot media (the bundled guest's, or from params)."""

    kernel: Path
    initrd: Path | None
    cmdline: str


def hypervisor_family(spec: VMSpec, facts: HostFacts) -> str:
    if spec.hypervisor != "auto":
        return spec.hypervisor
    return "xen" if facts.driver in ("xen", "libxl") else "qemu"


def template_and_type(spec: VMSpec, facts: HostFacts) -> tuple[str, str]:
    """(template name, domain type)."""
    if hypervisor_family(spec, facts) == "xen":
        return ("xen-pv" if spec.guest_mode == "pv" else "xen-hvm"), "xen"
    kind = "kvm" if facts.accel.accel == "kvm" else "qemu"
    return kind, kind


def design(
    spec: VMSpec,
    facts: HostFacts,
    allocations: Allocations,
    boot: BootMedia | None,
    metadata: dict[str, str] | None = None,
    uuid: str = "",
    check_resources: bool = True,
    media: PreparedMedia | None = None,
) -> DomainConfig:
    """Every value of the domain; raises the seed's errors for bad media and resources.

    ``check_resources=False`` skips the host checks (free huge pages, PCI devices):
    for comparing with a running VM, which already holds them.  ``media`` holds the
    VM's overlays and cloud-init seed (:func:`virtlib.media.prepare`).

    Long because the DomainConfig it returns takes one keyword per field (some 45), and
    the PCI placement before it must see every device at once: split, the fields would
    be decided in several places.
    """
    template, domain_type = template_and_type(spec, facts)
    xen = template.startswith("xen")
    explicit = places_pci_devices(spec, template)
    media = media or PreparedMedia()
    planned = _disks(spec, xen=xen, pv=template == "xen-pv", media=media)
    if media.seed is not None:
        seed = _seed_cdrom(media.seed, [p.config for p in planned], spec, xen, template == "xen-pv")
        planned.append(_Planned(seed))
    user_slots = user_net_slots(spec.nics, spec.name) if not xen else {}
    managed, user_nets = _nics(spec.nics, allocations, xen, user_slots)
    guest_agent = spec.guest_agent and not xen
    hostdevs = _hostdevs(spec, facts) if check_resources else ()
    controllers: tuple[ControllerConfig, ...] = ()
    balloon_slot = 0
    if explicit:
        pinned = {p.config.pci_slot for p in planned if p.config.pci_slot}
        pinned |= {i.config.pci_slot for i in managed if i.config.pci_slot}
        plan = _SlotPlan(spec.name, set(user_slots.values()), pinned)
        controllers = tuple(
            ControllerConfig(
                kind, plan.take(f"the {kind} controller"), CONTROLLER_MODELS.get(kind, "")
            )
            for kind in _controllers_needed([p.config for p in planned], guest_agent)
        )
        managed = [i.placed(plan, f"NIC {i.config.mac}") for i in managed]
        planned = [
            p.placed(plan, f"disk {p.config.target}") if p.config.bus == "virtio" else p
            for p in planned
        ]
        balloon_slot = plan.take("the memory balloon")
        hostdevs = tuple(
            dataclasses.replace(h, guest_slot=plan.take("a host PCI device")) for h in hostdevs
        )
    disks = _in_order([p.config for p in planned if p.present], spec.disk_order)
    interfaces = tuple(i.config for i in managed if i.present)
    absent: list[DiskConfig | InterfaceConfig] = [p.config for p in planned if not p.present]
    absent += [i.config for i in managed if not i.present]
    if spec.hugepages and check_resources:
        _check_hugepages(spec, facts)
    cpu_mode, cpu_model = spec.cpu_mode, spec.cpu_model
    if not cpu_mode and not cpu_model and domain_type == "kvm":
        cpu_mode = "host-passthrough"  # fastest; migrate only between alike hosts
    return DomainConfig(
        template=template,
        domain_type=domain_type,
        name=spec.name,
        memory_mib=spec.memory_mib,
        vcpus=spec.vcpus,
        vcpus_max=spec.growth.vcpus_max,
        max_memory_mib=spec.growth.mem_max_mib if not xen else 0,
        mem_slots=spec.growth.mem_slots if not xen else 0,
        numa_cell_mib=spec.mem_mib if spec.growth.mem_slots and not xen else 0,
        dimms=tuple(DimmConfig(d.size_mib, d.slot, d.base) for d in spec.growth.dimms),
        current_memory_mib=spec.growth.balloon_mib,
        uuid=uuid,
        machine=spec.machine_type,
        cpu_mode=cpu_mode,
        cpu_model=cpu_model,
        kernel=str(boot.kernel) if boot else "",
        initrd=str(boot.initrd) if boot and boot.initrd else "",
        cmdline=boot.cmdline if boot else "",
        disks=disks,
        interfaces=interfaces,
        user_nets=user_nets,
        hostdevs=hostdevs,
        controllers=controllers,
        guest_agent=guest_agent,
        balloon_slot=balloon_slot,
        boot_devices=_boot_devices(spec),
        hugepages=spec.hugepages,
        panic_model="isa" if spec.pvpanic and not xen else "",
        display=_display(spec),
        on_poweroff=spec.on_poweroff,
        on_reboot=spec.on_reboot,
        on_crash=spec.on_crash,
        metadata=dict(metadata or {}),
        reserved_slots=frozenset(
            {c.pci_slot for c in absent if c.pci_slot}
            | {slot for index, slot in user_slots.items() if not _present(spec, index)}
        ),
        reserved_targets=frozenset(c.target for c in absent if isinstance(c, DiskConfig)),
    )


def _present(spec: VMSpec, nic_index: int) -> bool:
    return spec.nic(nic_index) is not None


# --- hotplug: where a new device goes ----------------------------------------------------------
def used_pci_slots(config: DomainConfig) -> set[int]:
    """Every slot on PCI bus 0 the design gives out or keeps (the chipset's included)."""
    slots = set(RESERVED_SLOTS) | set(config.reserved_slots)
    slots |= {d.pci_slot for d in config.disks} | {i.pci_slot for i in config.interfaces}
    slots |= {n.pci_slot for n in config.user_nets} | {c.pci_slot for c in config.controllers}
    slots |= {h.guest_slot for h in config.hostdevs} | {config.balloon_slot}
    return slots - {0}


def hot_pci_slot(vm: str, config: DomainConfig, taken: set[int], user_net: bool) -> int:
    """The slot for a device hotplugged into ``config`` (``taken``: more slots in use): a
    user-net NIC the lowest free one from FIRST_USER_NET_SLOT (QEMU's order), any other
    device the next in the order of libvirt's devices.

    :raises VMParamsError: bus 0 is full.
    """
    used = used_pci_slots(config) | taken
    order = range(FIRST_USER_NET_SLOT, LAST_PCI_SLOT + 1) if user_net else MANAGED_SLOT_ORDER
    for slot in order:
        if slot not in used:
            return slot
    raise VMParamsError(f"VM {vm!r}: no free PCI slot on bus 0 for another device")


def hot_target(config: DomainConfig, bus: str) -> str:
    """The first target name of ``bus``'s prefix no disk or CD-ROM has (or keeps)."""
    used = {d.target for d in config.disks} | set(config.reserved_targets)
    prefix = TARGET_PREFIX[bus]
    index = 0
    while prefix + _letters(index) in used:
        index += 1
    return prefix + _letters(index)


def needs_scsi_controller(config: DomainConfig) -> bool:
    """True when the design has no SCSI controller to hotplug a SCSI disk onto."""
    return not any(c.type == "scsi" for c in config.controllers)


def _display(spec: VMSpec) -> DisplayConfig | None:
    """``display = vnc | spice``: on 127.0.0.1 only, with the VM's display password."""
    if spec.display == "none":
        return None
    return DisplayConfig(
        kind=spec.display,
        listen=DISPLAY_LISTEN,
        password=spec.display_password,
        video_model="qxl" if spec.display == "spice" else "vga",
    )


def places_pci_devices(spec: VMSpec, template: str) -> bool:
    """Whether virtlib gives libvirt's PCI devices explicit slots (clear of the user-net NICs,
    which libvirt does not know about).  On i440fx (libvirt's default machine) it must;
    on q35 libvirt puts its devices behind PCIe root ports, off the root bus."""
    return not template.startswith("xen") and "q35" not in spec.machine_type


class _SlotPlan:
    """Free slots on PCI bus 0 for libvirt's devices: from FIRST_MANAGED_SLOT up, then the
    low slots no user-net NIC uses.  When bus 0 is full the rest are left to libvirt
    (slot 0), which adds a PCI bridge -- unless user-net NICs hide on bus 0, whose slots
    libvirt would think free."""

    def __init__(self, vm: str, user_net: set[int], pinned: set[int] | None = None) -> None:
        self.vm = vm
        self.user_net = set(user_net)
        taken = user_net | RESERVED_SLOTS | (pinned or set())
        self.free: list[int] = [s for s in MANAGED_SLOT_ORDER if s not in taken]

    def take(self, what: str) -> int:
        if self.free:
            return self.free.pop(0)
        if self.user_net:
            raise VMParamsError(
                f"VM {self.vm!r}: no free PCI slot on bus 0 for {what} next to its user-net "
                "NICs (use fewer virtio devices, drive_format = scsi, or machine_type = q35)"
            )
        return 0


def user_net_slots(nics: tuple[NicSpec, ...], vm: str = "") -> dict[int, int]:
    """NIC index -> PCI slot of each user-net NIC: its ``nic_pci_slot``, else the next free
    slot from FIRST_USER_NET_SLOT (3: ``ens3``, 4: ``ens4``, ...)."""
    user = [nic for nic in nics if nic.nettype == "user"]
    chosen: dict[int, int] = {}
    for nic in user:
        slot = nic.pci_slot
        if not slot:
            continue
        if slot in RESERVED_SLOTS or slot in chosen.values():
            raise VMParamsError(
                f"VM {vm!r}, NIC {nic.name!r}: parameter 'nic_pci_slot' = {slot:#x} is taken "
                f"(slots 0-2 are the chipset's; each NIC needs its own)"
            )
        chosen[nic.index] = slot
    taken = set(chosen.values()) | RESERVED_SLOTS
    slot = FIRST_USER_NET_SLOT
    for nic in user:
        if nic.index in chosen:
            continue
        while slot in taken:
            slot += 1
        chosen[nic.index] = slot
        taken.add(slot)
    return chosen


def user_net_network(index: int) -> str:
    """The subnet of user-net NIC ``index``: QEMU's 10.0.2.0/24 for the first, 10.0.3.0/24
    for the second, ...: each NIC its own, or the guest answers a connection that came in
    on one NIC out of the other (both would be 10.0.2.15 on the same subnet)."""
    return "" if index == 0 else f"10.0.{2 + index}.0/24" if index < 250 else ""


def _controllers_needed(disks: list[DiskConfig], guest_agent: bool) -> list[str]:
    """Controllers on PCI that libvirt would otherwise add (and place) by itself."""
    kinds = []
    if any(d.bus == "sata" for d in disks):
        kinds.append("sata")  # AHCI: i440fx has none built in
    if any(d.bus == "scsi" for d in disks):
        kinds.append("scsi")
    if guest_agent:
        kinds.append("virtio-serial")
    return kinds


def _boot_devices(spec: VMSpec) -> tuple[str, ...]:
    """CD-ROMs first when the user gave one (an installer); the seed is never booted."""
    if any(cdrom.path is not None for cdrom in spec.cdroms):
        return ("cdrom", "hd")
    return ("hd",)


def _seed_cdrom(
    seed: Path, disks: list[DiskConfig], spec: VMSpec, xen: bool, pv: bool
) -> DiskConfig:
    """The cloud-init seed as a read-only CD-ROM after the other disks: IDE on i440fx
    (built in, no PCI slot), SATA on q35 (built in there)."""
    bus = _cdrom_bus("sata" if "q35" in spec.machine_type else "ide", xen, pv)
    prefix = TARGET_PREFIX[bus]
    used = {d.target for d in disks}
    index = 0
    while prefix + _letters(index) in used:
        index += 1
    return DiskConfig(
        source=str(seed),
        target=prefix + _letters(index),
        bus=bus,
        format="raw",
        device="cdrom",
        readonly=True,
    )


def boot_media(spec: VMSpec) -> BootMedia | None:
    """Kernel boot media from params (the bundled guest's are given by the driver)."""
    if spec.kernel is None:
        if spec.initrd is not None:
            raise VMParamsError("parameter 'initrd' needs 'kernel'")
        return None
    for path, what in ((spec.kernel, "kernel"), (spec.initrd, "initrd")):
        if path is not None and not path.exists():
            raise VMFileMissingError(str(path), what, spec.name, what)
    return BootMedia(spec.kernel, spec.initrd, spec.kernel_args)


def _target_names(taken: set[str] | None = None) -> Callable[[str], str]:
    """Names in Linux's order per prefix (vda, vdb, ...), skipping those ``taken`` already."""
    used: dict[str, int] = {}
    skip = taken or set()

    def next_name(bus: str) -> str:
        prefix = TARGET_PREFIX[bus]
        index = used.get(prefix, 0)
        while prefix + _letters(index) in skip:
            index += 1
        used[prefix] = index + 1
        return prefix + _letters(index)

    return next_name


def _letters(index: int) -> str:
    """0 -> a, 25 -> z, 26 -> aa (as Linux names disks)."""
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(ord("a") + rest) + name
    return name


def _disk_bus(bus: str, xen: bool, pv: bool) -> str:
    """Xen has no virtio disks: its own bus (xvd*) for PV and for HVM virtio requests."""
    return "xen" if pv or (xen and bus == "virtio") else bus


def _cdrom_bus(bus: str, xen: bool, pv: bool) -> str:
    """Xen HVM emulates IDE CD-ROMs only."""
    return "xen" if pv else "ide" if xen else bus


def missing_disk(vm: str, disk: DiskSpec) -> VMFileMissingError:
    """The error for a disk image that is not there, with the appended format explained."""
    suffix = f".{disk.format}"
    hint = ""
    if disk.path.name.endswith(suffix + suffix):
        hint = (
            f"image_format {disk.format!r} is appended to image_name, so "
            f"{disk.path.name[: -len(suffix)]!r} names {disk.path.name!r}: "
            f"write image_name without {suffix!r}"
        )
    elif not disk.create:
        hint = "create it, or set create_image = yes"
    return VMFileMissingError(
        str(disk.path), f"disk image {disk.name!r}", vm, f"image_name_{disk.name}", hint
    )


@dataclass(frozen=True)
class _Planned(Generic[Placed]):
    """A device while the designer places it: ``present`` ones go into the domain; the others
    (not attached now) keep their target name and PCI slot for when they are."""

    config: Placed
    present: bool = True

    def placed(self, plan: _SlotPlan, what: str) -> _Planned[Placed]:
        """With the next free slot of ``plan``, unless it has one already (hotplugged)."""
        if self.config.pci_slot:
            return self
        return dataclasses.replace(
            self, config=dataclasses.replace(self.config, pci_slot=plan.take(what))
        )


def _disks(spec: VMSpec, xen: bool, pv: bool, media: PreparedMedia) -> list[_Planned[DiskConfig]]:
    """Disks (every entry of ``images``, attached or not), then CD-ROMs, with Linux's
    target names (a hotplugged disk keeps the one it was given).  On shared migration
    storage the writable disks keep their owner (QEMU's user, set by the driver): both
    hosts' QEMUs use them, and libvirt must not hand them back to root when one side stops."""
    vm = spec.name
    shared = spec.migration_storage == "shared"
    next_name = _target_names({d.target for d in spec.planned_disks() if d.target})
    result: list[_Planned[DiskConfig]] = []
    for disk in spec.planned_disks():
        if disk.present and not disk.raw_device and not disk.path.exists():
            raise missing_disk(vm, disk)
        bus = _disk_bus(disk.bus, xen, pv)
        overlay = media.overlays.get(disk.name)
        config = DiskConfig(
            source=str(overlay.path if overlay else disk.path),
            target=disk.target or next_name(bus),
            bus=bus,
            format=overlay.format if overlay else disk.format,
            block=disk.raw_device,
            readonly=disk.readonly,
            relabel=not (shared and not disk.readonly),
            backing_source=str(overlay.base) if overlay else "",
            backing_format=overlay.base_format if overlay else "",
            pci_slot=disk.pci_slot if bus == "virtio" else 0,
            serial=disk.serial,
            name=disk.name,
        )
        result.append(_Planned(config, disk.present))
    for cdrom in spec.cdroms:
        if cdrom.path is not None:
            check_cdrom(cdrom, vm)
        bus = _cdrom_bus(cdrom.bus, xen, pv)
        config = DiskConfig(
            source=str(cdrom.path) if cdrom.path else "",
            target=next_name(bus),
            bus=bus,
            format="raw",
            device="cdrom",
            readonly=True,
            name=cdrom.name,
        )
        result.append(_Planned(config))
    return result


def _in_order(disks: list[DiskConfig], order: tuple[str, ...]) -> tuple[DiskConfig, ...]:
    """The disks in the order the running domain has them (``order``, targets), when
    hotplug recorded one; the others after them, as designed."""
    if not order:
        return tuple(disks)
    rank = {target: index for index, target in enumerate(order)}
    return tuple(sorted(disks, key=lambda d: rank.get(d.target, len(rank))))


def check_cdrom(cdrom: CdromSpec, vm: str = "") -> None:
    """The ISO exists and matches its md5sum/sha1sum when one is given."""
    if cdrom.path is None:
        return
    if not cdrom.path.is_file():
        raise VMFileMissingError(
            str(cdrom.path), f"CD image {cdrom.name!r}", vm, f"cdrom_{cdrom.name}"
        )
    for algorithm, expected in (("md5", cdrom.md5sum), ("sha1", cdrom.sha1sum)):
        if expected:
            actual = file_hash(cdrom.path, algorithm)
            if actual != expected:
                raise VMHashMismatchError(actual, expected)


def file_hash(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _nics(
    nics: tuple[NicSpec, ...],
    allocations: Allocations,
    xen: bool,
    user_slots: dict[int, int],
) -> tuple[list[_Planned[InterfaceConfig]], tuple[UserNetConfig, ...]]:
    """libvirt's NICs (every one, attached or not: a NIC not attached keeps its slot) and the
    user-net NICs attached now."""
    interfaces: list[_Planned[InterfaceConfig]] = []
    user_nets = []
    macs, ports = allocations.mac_map, allocations.port_map
    for nic in nics:
        mac = macs[nic.index] if nic.present else macs.get(nic.index, "")
        if nic.nettype == "user":
            if xen:
                raise VMParamsError(
                    f"NIC {nic.name!r}: user networking is QEMU's; "
                    "use nettype network or bridge with Xen"
                )
            if nic.model not in USER_NET_MODELS:
                raise VMParamsError(
                    f"NIC {nic.name!r}: nic_model {nic.model!r} is not one of "
                    f"{', '.join(USER_NET_MODELS)}"
                )
            if not nic.present:
                continue
            forwards = tuple((ports[(nic.index, port)], port) for port in nic.guest_ports)
            user_nets.append(
                UserNetConfig(
                    netdev_id=f"vlnet{nic.index}",
                    mac=mac,
                    device_model=USER_NET_MODELS[nic.model],
                    pci_slot=user_slots[nic.index],
                    forwards=forwards,
                    restrict=nic.restrict,
                    device_id=f"vlnic{nic.index}",
                    network=user_net_network(nic.index),
                )
            )
        else:
            config = InterfaceConfig(
                nic.nettype,
                nic.netdst,
                mac,
                "netfront" if xen and nic.model == "virtio" else nic.model,
                pci_slot=nic.pci_slot,
            )
            interfaces.append(_Planned(config, nic.present))
    return interfaces, tuple(user_nets)


def _check_hugepages(spec: VMSpec, facts: HostFacts) -> None:
    needed = -(-spec.mem_mib * 1024 // HUGEPAGE_KIB)
    free = facts.free_hugepages()
    if free < needed:
        raise VMHugePageError(
            f"hugepages of {HUGEPAGE_KIB} KiB for {spec.mem_mib} MiB",
            f"{needed} pages needed, {free} free on the host",
        )


def _hostdevs(spec: VMSpec, facts: HostFacts) -> tuple[HostdevConfig, ...]:
    pa_type = spec.pci_assignable
    if pa_type in ("", "no"):
        return ()
    if pa_type not in PA_TYPES:
        raise VMBadPATypeError(pa_type)
    devices = [
        d
        for d in facts.pci_devices()
        if (d.is_vf and pa_type in ("vf", "mixed")) or (d.is_pf and pa_type in ("pf", "mixed"))
    ]
    if len(devices) < max(1, spec.pci_devices_requested):
        raise VMPAError(pa_type)
    return tuple(
        HostdevConfig(d.domain, d.bus, d.slot, d.function)
        for d in devices[: spec.pci_devices_requested]
    )
