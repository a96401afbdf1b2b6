"""Policy: which values a domain gets, decided from the VM spec and facts about the host.

The designer checks what can be checked before anything is created (media
exist and match their hashes, huge pages and PCI devices are available) and
returns a :class:`~.domxml.DomainConfig`; :mod:`.domxml` maps it to XML.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from virtlib.accel import AccelChoice
from virtlib.backends.libvirt.domxml import (
    DiskConfig,
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
from virtlib.spec import CdromSpec, DiskSpec, NicSpec, VMSpec
from virtlib.state import Allocations

log = logging.getLogger(__name__)

TARGET_PREFIX = {"virtio": "vd", "ide": "hd", "scsi": "sd", "sata": "sd", "usb": "sd", "xen": "xvd"}
USER_NET_MODELS = {
    "virtio": "virtio-net-pci",
    "e1000": "e1000",
    "e1000e": "e1000e",
    "rtl8139": "rtl8139",
}
FIRST_USER_NET_SLOT = 0x10  # clear of the slots libvirt hands out (memballoon took slot 2)
HUGEPAGE_KIB = 2048
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
) -> DomainConfig:
    """Every value of the domain; raises the seed's errors for bad media and resources.

    ``check_resources=False`` skips the host checks (free huge pages, PCI devices):
    for comparing with a running VM, which already holds them.
    """
    template, domain_type = template_and_type(spec, facts)
    xen = template.startswith("xen")
    disks = _disks(spec, xen=xen, pv=template == "xen-pv")
    interfaces, user_nets = _nics(spec.nics, allocations, xen)
    if spec.hugepages and check_resources:
        _check_hugepages(spec, facts)
    cpu_mode, cpu_model = spec.cpu_mode, spec.cpu_model
    if not cpu_mode and not cpu_model and domain_type == "kvm":
        cpu_mode = "host-passthrough"  # fastest; migrate only between alike hosts
    return DomainConfig(
        template=template,
        domain_type=domain_type,
        name=spec.name,
        memory_mib=spec.mem_mib,
        vcpus=spec.vcpus,
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
        hostdevs=_hostdevs(spec, facts) if check_resources else (),
        hugepages=spec.hugepages,
        panic_model="isa" if spec.pvpanic and not xen else "",
        on_poweroff=spec.on_poweroff,
        on_reboot=spec.on_reboot,
        on_crash=spec.on_crash,
        metadata=dict(metadata or {}),
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


def _target_names() -> Callable[[str], str]:
    used: dict[str, int] = {}

    def next_name(bus: str) -> str:
        prefix = TARGET_PREFIX[bus]
        index = used.get(prefix, 0)
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


def _disks(spec: VMSpec, xen: bool, pv: bool) -> tuple[DiskConfig, ...]:
    """Disks, then CD-ROMs, with Linux's target names.  On shared migration storage the
    writable disks keep their owner (QEMU's user, set by the driver): both hosts' QEMUs
    use them, and libvirt must not hand them back to root when one side stops."""
    vm = spec.name
    shared = spec.migration_storage == "shared"
    next_name = _target_names()
    result = []
    for disk in spec.disks:
        if not disk.raw_device and not disk.path.exists():
            raise missing_disk(vm, disk)
        bus = _disk_bus(disk.bus, xen, pv)
        result.append(
            DiskConfig(
                source=str(disk.path),
                target=next_name(bus),
                bus=bus,
                format=disk.format,
                block=disk.raw_device,
                readonly=disk.readonly,
                relabel=not (shared and not disk.readonly),
            )
        )
    for cdrom in spec.cdroms:
        if cdrom.path is not None:
            check_cdrom(cdrom, vm)
        bus = _cdrom_bus(cdrom.bus, xen, pv)
        result.append(
            DiskConfig(
                source=str(cdrom.path) if cdrom.path else "",
                target=next_name(bus),
                bus=bus,
                format="raw",
                device="cdrom",
                readonly=True,
            )
        )
    return tuple(result)


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
    nics: tuple[NicSpec, ...], allocations: Allocations, xen: bool
) -> tuple[tuple[InterfaceConfig, ...], tuple[UserNetConfig, ...]]:
    interfaces, user_nets = [], []
    macs, ports = allocations.mac_map, allocations.port_map
    for nic in nics:
        mac = macs[nic.index]
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
            forwards = tuple((ports[(nic.index, port)], port) for port in nic.guest_ports)
            user_nets.append(
                UserNetConfig(
                    netdev_id=f"vlnet{nic.index}",
                    mac=mac,
                    device_model=USER_NET_MODELS[nic.model],
                    pci_slot=FIRST_USER_NET_SLOT + nic.index,
                    forwards=forwards,
                )
            )
        else:
            interfaces.append(
                InterfaceConfig(
                    nic.nettype,
                    nic.netdst,
                    mac,
                    "netfront" if xen and nic.model == "virtio" else nic.model,
                )
            )
    return tuple(interfaces), tuple(user_nets)


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
