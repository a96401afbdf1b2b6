"""Domain XML: config objects and their mapping to elements.  No policy here.

The designer decides every value (:mod:`.designer`); this module only puts
them into a skeleton from ``xml_templates/`` with lxml (``.text``, ``.set()``,
``SubElement``), so names and paths containing XML metacharacters stay data.
Templates are parsed with a hardened parser (no entities, no network).
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"
VIRTLIB_NS = "https://virtlib.dev/xmlns/vm/1"
TEMPLATES = ("kvm", "qemu", "xen-hvm", "xen-pv")

PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    remove_blank_text=True,
    remove_comments=True,
    huge_tree=False,
)


@dataclass(frozen=True)
class DiskConfig:
    source: str
    target: str
    bus: str
    format: str = "qcow2"
    device: str = "disk"  # or "cdrom"
    block: bool = False  # a raw device (type="block") rather than a file
    readonly: bool = False
    relabel: bool = True  # False: libvirt leaves its owner alone (shared storage)
    backing_source: str = ""  # an overlay's read-only base image (never relabelled)
    backing_format: str = ""
    pci_slot: int = 0  # virtio disks: the slot on PCI bus 0 (0: libvirt chooses)
    serial: str = ""  # what the guest sees as its serial number (/dev/disk/by-id)
    name: str = ""  # its name in params (``images``, ``cdroms``); not XML


@dataclass(frozen=True)
class DimmConfig:
    """A memory module (``<memory model="dimm">``) on NUMA node 0, in slot ``slot``."""

    size_mib: int
    slot: int
    base: int = 0  # its guest-physical address (0: the hypervisor chooses)


@dataclass(frozen=True)
class ControllerConfig:
    """A controller virtlib places explicitly (``virtio-serial``, ``sata``, ``scsi``)."""

    type: str
    pci_slot: int
    model: str = ""  # e.g. "virtio-scsi" ("": libvirt's default for the type)


@dataclass(frozen=True)
class InterfaceConfig:
    """A libvirt-managed NIC: type "network" or "bridge"."""

    type: str
    source: str
    mac: str
    model: str
    pci_slot: int = 0


@dataclass(frozen=True)
class UserNetConfig:
    """A QEMU user-mode NIC with host ports forwarded to the guest (via qemu:commandline)."""

    netdev_id: str
    mac: str
    device_model: str
    pci_slot: int
    forwards: tuple[tuple[int, int], ...]  # (host port on 127.0.0.1, guest port)
    bind_address: str = "127.0.0.1"
    restrict: bool = False
    device_id: str = ""  # QEMU's id of the NIC (device_del takes it)
    network: str = ""  # the guest's subnet ("": QEMU's 10.0.2.0/24)

    def netdev_options(self) -> str:
        """QEMU's ``-netdev`` value."""
        return (
            f"user,id={self.netdev_id}"
            + f",net={self.network}" * bool(self.network)
            + ",restrict=on" * self.restrict
            + "".join(
                f",hostfwd=tcp:{self.bind_address}:{host}-:{guest}" for host, guest in self.forwards
            )
        )

    def device_properties(self) -> dict[str, str]:
        """The NIC's ``-device`` properties (also device_add's arguments)."""
        props = {"driver": self.device_model}
        if self.device_id:
            props["id"] = self.device_id
        props.update(netdev=self.netdev_id, mac=self.mac, addr=f"{self.pci_slot:#x}")
        return props

    def qemu_args(self) -> list[str]:
        props = self.device_properties()
        device = ",".join([props.pop("driver"), *(f"{k}={v}" for k, v in props.items())])
        return ["-netdev", self.netdev_options(), "-device", device]


@dataclass(frozen=True)
class HostdevConfig:
    domain: int
    bus: int
    slot: int
    function: int
    guest_slot: int = 0  # where the guest sees it on PCI bus 0 (0: libvirt chooses)


@dataclass(frozen=True)
class DisplayConfig:
    """A graphical display: ``vnc`` or ``spice`` on ``listen``, with a password."""

    kind: str
    listen: str
    password: str = field(repr=False)
    video_model: str  # "vga", "qxl"


@dataclass(frozen=True)
class DomainConfig:
    """Every value of one domain, decided."""

    template: str
    domain_type: str
    name: str
    memory_mib: int
    vcpus: int
    uuid: str = ""
    vcpus_max: int = 0  # more than ``vcpus``: <vcpu current="vcpus">vcpus_max</vcpu>
    max_memory_mib: int = 0  # memory hotplug: <maxMemory slots=...>, NUMA cell 0
    mem_slots: int = 0
    numa_cell_mib: int = 0  # the boot memory, in NUMA cell 0 (memory hotplug needs a cell)
    dimms: tuple[DimmConfig, ...] = ()
    current_memory_mib: int = 0  # the balloon's target (0: all of memory_mib)
    machine: str = ""
    cpu_mode: str = ""
    cpu_model: str = ""
    kernel: str = ""
    initrd: str = ""
    cmdline: str = ""
    disks: tuple[DiskConfig, ...] = ()
    interfaces: tuple[InterfaceConfig, ...] = ()
    user_nets: tuple[UserNetConfig, ...] = ()
    hostdevs: tuple[HostdevConfig, ...] = ()
    controllers: tuple[ControllerConfig, ...] = ()
    guest_agent: bool = False  # a virtio-serial channel org.qemu.guest_agent.0
    balloon_slot: int = 0  # the memballoon's slot on PCI bus 0 (0: libvirt chooses)
    boot_devices: tuple[str, ...] = ()  # BIOS boot order ("hd", "cdrom"); () = hd, or cdrom first
    hugepages: bool = False
    panic_model: str = ""  # "isa": QEMU's pvpanic device, so a guest panic reaches libvirt
    display: DisplayConfig | None = None
    on_poweroff: str = "destroy"
    on_reboot: str = "restart"
    on_crash: str = "destroy"
    metadata: dict[str, str] = field(default_factory=dict)
    # The designer's, not XML: PCI slots and disk targets kept for devices that are not
    # attached now (``boot_drive = no``), so that nothing hotplugged takes them.
    reserved_slots: frozenset[int] = frozenset()
    reserved_targets: frozenset[str] = frozenset()


def load_template(name: str) -> etree._ElementTree:
    """A fresh tree of one skeleton from ``xml_templates/``."""
    if name not in TEMPLATES:
        raise ValueError(f"no domain template {name!r} (known: {', '.join(TEMPLATES)})")
    resource = importlib.resources.files("virtlib.xml_templates").joinpath(f"{name}.xml")
    return etree.ElementTree(etree.fromstring(resource.read_bytes(), PARSER))


def _child(
    parent: etree._Element, tag: str, text: str | None = None, **attrs: str
) -> etree._Element:
    element = etree.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        element.text = text
    return element


def _find(root: etree._Element, path: str) -> etree._Element:
    element = root.find(path)
    if element is None:
        raise ValueError(f"the domain template has no <{path}>")
    return element


def _set_text(root: etree._Element, path: str, text: str) -> etree._Element:
    element = _find(root, path)
    element.text = text
    return element


def _insert_after(root: etree._Element, after: str, tag: str) -> etree._Element:
    anchor = root.find(after)
    element = etree.Element(tag)
    if anchor is None:
        root.insert(0, element)
    else:
        anchor.addnext(element)
    return element


def build(config: DomainConfig) -> etree._Element:
    """The domain element for ``config``."""
    root = load_template(config.template).getroot()
    root.set("type", config.domain_type)
    _set_text(root, "name", config.name)
    if config.uuid:
        _insert_after(root, "name", "uuid").text = config.uuid
    if config.metadata:
        _add_metadata(root, config.metadata)
    _fill_memory(root, config)
    if config.hugepages:
        backing = _insert_after(root, "vcpu", "memoryBacking")
        _child(backing, "hugepages")
    _fill_os(root, config)
    _fill_cpu(root, config)
    _set_text(root, "on_poweroff", config.on_poweroff)
    _set_text(root, "on_reboot", config.on_reboot)
    _set_text(root, "on_crash", config.on_crash)
    devices = _find(root, "devices")
    # Disks and NICs go before the character devices, as libvirt writes them.
    anchor = devices.find("serial")
    if anchor is None:
        anchor = devices.find("console")
    for element in [
        *map(_disk, config.disks),
        *map(_controller, config.controllers),
        *map(_interface, config.interfaces),
    ]:
        if anchor is not None:
            anchor.addprevious(element)
        else:
            devices.append(element)
    if config.guest_agent:
        channel = etree.Element("channel", type="unix")
        _child(channel, "target", type="virtio", name=GUEST_AGENT_CHANNEL)
        console = devices.find("console")
        if console is not None:
            console.addnext(channel)
        else:
            devices.append(channel)
    balloon = devices.find("memballoon")
    if balloon is not None and config.balloon_slot:
        balloon.append(_pci_address(config.balloon_slot))
    for hostdev in config.hostdevs:
        devices.append(_hostdev(hostdev))
    for dimm in config.dimms:
        devices.append(dimm_element(dimm))
    if config.panic_model:
        _child(devices, "panic", model=config.panic_model)
    if config.display is not None:
        _add_display(devices, config.display)
    if config.user_nets:
        commandline = etree.SubElement(root, f"{{{QEMU_NS}}}commandline", nsmap={"qemu": QEMU_NS})
        for net in config.user_nets:
            for arg in net.qemu_args():
                etree.SubElement(commandline, f"{{{QEMU_NS}}}arg", value=arg)
    return root


def _fill_memory(root: etree._Element, config: DomainConfig) -> None:
    """``<memory>``, ``<maxMemory>`` (before it) and ``<currentMemory>`` (after it), and
    ``<vcpu>`` (``current`` of them plugged when it can grow)."""
    memory = _set_text(root, "memory", str(config.memory_mib))
    vcpu = _set_text(root, "vcpu", str(config.vcpus))
    if config.vcpus_max > config.vcpus:
        vcpu.text = str(config.vcpus_max)
        vcpu.set("current", str(config.vcpus))
    if config.max_memory_mib:
        maximum = etree.Element("maxMemory", slots=str(config.mem_slots), unit="MiB")
        maximum.text = str(config.max_memory_mib)
        memory.addprevious(maximum)
    if config.current_memory_mib:
        current = etree.Element("currentMemory", unit="MiB")
        current.text = str(config.current_memory_mib)
        memory.addnext(current)


def _fill_cpu(root: etree._Element, config: DomainConfig) -> None:
    """``<cpu>``: mode and model, and NUMA cell 0 when memory can be hotplugged."""
    if not (config.cpu_mode or config.cpu_model or config.numa_cell_mib):
        return
    cpu = _insert_after(root, "features" if root.find("features") is not None else "os", "cpu")
    if config.cpu_mode or config.cpu_model:
        cpu.set("mode", config.cpu_mode or "custom")
    if config.cpu_model:
        cpu.set("match", "exact")
        _child(cpu, "model", config.cpu_model, fallback="allow")
    if config.numa_cell_mib:
        numa = _child(cpu, "numa")
        last = max(config.vcpus, config.vcpus_max) - 1
        cpus = f"0-{last}" if last else "0"
        _child(numa, "cell", id="0", cpus=cpus, memory=str(config.numa_cell_mib), unit="MiB")


def _add_display(devices: etree._Element, display: DisplayConfig) -> None:
    """``<graphics>`` (listening on one address only, with a password) and its ``<video>``,
    placed where libvirt writes them: after the input devices, before the sound/video."""
    graphics = etree.Element(
        "graphics",
        type=display.kind,
        autoport="yes",
        listen=display.listen,
        passwd=display.password,
    )
    _child(graphics, "listen", type="address", address=display.listen)
    video = etree.Element("video")
    _child(video, "model", type=display.video_model, heads="1", primary="yes")
    anchor = devices.find("memballoon")
    for element in (graphics, video):
        if anchor is not None:
            anchor.addprevious(element)
        else:
            devices.append(element)


def _add_metadata(root: etree._Element, values: dict[str, str]) -> None:
    metadata = root.find("metadata")
    if metadata is None:
        anchor = "uuid" if root.find("uuid") is not None else "name"
        metadata = _insert_after(root, anchor, "metadata")
    vm = etree.SubElement(metadata, f"{{{VIRTLIB_NS}}}vm", nsmap={"virtlib": VIRTLIB_NS})
    for key, value in sorted(values.items()):
        etree.SubElement(vm, f"{{{VIRTLIB_NS}}}{key}").text = value


def _fill_os(root: etree._Element, config: DomainConfig) -> None:
    os_element = _find(root, "os")
    os_type = _find(os_element, "type")
    if config.machine:
        os_type.set("machine", config.machine)
    if config.kernel:
        _child(os_element, "kernel", config.kernel)
        if config.initrd:
            _child(os_element, "initrd", config.initrd)
        if config.cmdline:
            _child(os_element, "cmdline", config.cmdline)
    elif config.template != "xen-pv":
        boot_order = config.boot_devices or (
            ("cdrom", "hd") if any(d.device == "cdrom" for d in config.disks) else ("hd",)
        )
        for dev in boot_order:
            _child(os_element, "boot", dev=dev)


def _pci_address(slot: int) -> etree._Element:
    """``<address type="pci">`` on bus 0, function 0."""
    return etree.Element(
        "address", type="pci", domain="0x0000", bus="0x00", slot=f"{slot:#04x}", function="0x0"
    )


def _disk(disk: DiskConfig) -> etree._Element:
    element = etree.Element("disk", type="block" if disk.block else "file", device=disk.device)
    _child(element, "driver", name="qemu", type=disk.format)
    if disk.source:
        source = _child(element, "source", **{"dev" if disk.block else "file": disk.source})
        if not disk.relabel:
            _child(source, "seclabel", model="dac", relabel="no")
    if disk.backing_source:
        # The whole chain is given (libvirt probes nothing); the base is read-only and
        # shared, so libvirt must not chown it (seclabel relabel="no").
        backing = _child(element, "backingStore", type="file")
        _child(backing, "format", type=disk.backing_format)
        source = _child(backing, "source", file=disk.backing_source)
        _child(source, "seclabel", model="dac", relabel="no")
        _child(backing, "backingStore")
    _child(element, "target", dev=disk.target, bus=disk.bus)
    if disk.readonly or disk.device == "cdrom":
        _child(element, "readonly")
    if disk.serial:
        _child(element, "serial", disk.serial)
    if disk.pci_slot:
        element.append(_pci_address(disk.pci_slot))
    return element


def disk_element(disk: DiskConfig) -> etree._Element:
    """One ``<disk>`` (for hotplug, media changes and block copies)."""
    return _disk(disk)


def interface_element(interface: InterfaceConfig) -> etree._Element:
    """One ``<interface>`` of a libvirt-managed NIC (for hotplug)."""
    return _interface(interface)


def dimm_element(dimm: DimmConfig) -> etree._Element:
    """``<memory model="dimm">`` on NUMA node 0 (the guest's only cell), in its slot."""
    element = etree.Element("memory", model="dimm")
    target = _child(element, "target")
    _child(target, "size", str(dimm.size_mib), unit="MiB")
    _child(target, "node", "0")
    address = {"type": "dimm", "slot": str(dimm.slot)}
    if dimm.base:
        address["base"] = f"{dimm.base:#x}"
    _child(element, "address", **address)
    return element


def _controller(controller: ControllerConfig) -> etree._Element:
    element = etree.Element("controller", type=controller.type, index="0")
    if controller.model:
        element.set("model", controller.model)
    element.append(_pci_address(controller.pci_slot))
    return element


def _interface(interface: InterfaceConfig) -> etree._Element:
    element = etree.Element("interface", type=interface.type)
    _child(element, "mac", address=interface.mac)
    _child(element, "source", **{interface.type: interface.source})
    _child(element, "model", type=interface.model)
    if interface.pci_slot:
        element.append(_pci_address(interface.pci_slot))
    return element


def _hostdev(hostdev: HostdevConfig) -> etree._Element:
    element = etree.Element("hostdev", mode="subsystem", type="pci", managed="yes")
    source = _child(element, "source")
    _child(
        source,
        "address",
        domain=f"{hostdev.domain:#06x}",
        bus=f"{hostdev.bus:#04x}",
        slot=f"{hostdev.slot:#04x}",
        function=f"{hostdev.function:#x}",
    )
    if hostdev.guest_slot:
        element.append(_pci_address(hostdev.guest_slot))
    return element


def to_string(root: etree._Element) -> str:
    return etree.tostring(root, pretty_print=True, encoding="unicode")


def render(config: DomainConfig) -> str:
    """The domain XML for ``config``, pretty-printed."""
    return to_string(build(config))


def parse(xml: str) -> etree._Element:
    """Parse domain XML (from libvirt or a file) with the hardened parser."""
    return etree.fromstring(xml.encode(), PARSER)


def canonical(xml: str, ignore: tuple[str, ...] = ()) -> str:
    """Canonical form (C14N 2.0, whitespace stripped) for comparing documents, without
    the top-level elements named in ``ignore``."""
    root = parse(xml)
    for tag in ignore:
        for element in root.findall(tag):
            root.remove(element)
    return str(etree.canonicalize(etree.tostring(root, encoding="unicode"), strip_text=True))


def schema_path(name: str = "domain.rng") -> Path:
    return Path("/usr/share/libvirt/schemas") / name


def replace_metadata(root: etree._Element, values: dict[str, str]) -> None:
    """Put ``values`` in place of the virtlib metadata of a domain document."""
    old = root.find(f"metadata/{{{VIRTLIB_NS}}}vm")
    if old is not None:
        parent = old.getparent()
        if parent is not None:
            parent.remove(old)
    _add_metadata(root, values)


def read_metadata(root: etree._Element) -> dict[str, str]:
    """The virtlib metadata of a domain (empty for domains virtlib did not make)."""
    vm = root.find(f"metadata/{{{VIRTLIB_NS}}}vm")
    if vm is None:
        return {}
    return {etree.QName(child).localname: child.text or "" for child in vm}
