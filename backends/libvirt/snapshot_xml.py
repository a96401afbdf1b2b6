"""Snapshot XML: config objects and their mapping to libvirt's ``<domainsnapshot>``.  No policy.

:mod:`.snapshots` decides every value; this module only builds the elements with
lxml (``.text``, ``.set()``, ``SubElement``), so names, descriptions and paths stay
data.  It also reads what a live domain's disks are (their sources after libvirt
changed them).
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from virtlib.backends.libvirt import domxml

INTERNAL = "internal"
EXTERNAL = "external"
NO = "no"


@dataclass(frozen=True)
class DiskSnapshotConfig:
    """What a snapshot does with one disk (libvirt's target name): ``internal``, ``external``
    (continue in the new overlay ``source``, of ``format``) or ``no`` (left out)."""

    target: str
    snapshot: str
    source: str = ""
    format: str = "qcow2"


@dataclass(frozen=True)
class SnapshotConfig:
    """Every value of one ``<domainsnapshot>``.

    ``memory`` is ``internal``, ``external`` (into ``memory_file``) or ``no``.  ``state``,
    ``created``, ``parent`` and ``domain`` are only for a redefinition (a record of a
    snapshot that exists already: libvirt writes them itself when it takes one).
    """

    name: str
    description: str = ""
    memory: str = NO
    memory_file: str = ""
    disks: tuple[DiskSnapshotConfig, ...] = ()
    state: str = ""
    created: int = 0
    parent: str = ""
    domain: str = ""  # the domain XML the snapshot was taken of


def _child(
    parent: etree._Element, tag: str, text: str | None = None, **attrs: str
) -> etree._Element:
    element = etree.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def build(config: SnapshotConfig) -> etree._Element:
    """The ``<domainsnapshot>`` element of ``config``."""
    root = etree.Element("domainsnapshot")
    _child(root, "name", config.name)
    if config.description:
        _child(root, "description", config.description)
    if config.state:
        _child(root, "state", config.state)
    if config.parent:
        _child(_child(root, "parent"), "name", config.parent)
    if config.created:
        _child(root, "creationTime", str(config.created))
    memory = _child(root, "memory", snapshot=config.memory)
    if config.memory == EXTERNAL:
        memory.set("file", config.memory_file)
    if config.disks:
        disks = _child(root, "disks")
        for disk in config.disks:
            element = _child(disks, "disk", name=disk.target, snapshot=disk.snapshot)
            if disk.snapshot == EXTERNAL:
                element.set("type", "file")
                _child(element, "driver", type=disk.format)
                _child(element, "source", file=disk.source)
    if config.domain:
        root.append(domxml.parse(config.domain))
    return root


def render(config: SnapshotConfig) -> str:
    """The snapshot XML of ``config``, pretty-printed."""
    return str(etree.tostring(build(config), pretty_print=True, encoding="unicode"))


@dataclass(frozen=True)
class DiskElement:
    """A ``<disk>`` of domain XML (a running domain's, or a designed one)."""

    target: str
    source: str  # the file (or, for a raw device, the device) QEMU opens
    format: str
    device: str = "disk"  # or "cdrom"
    readonly: bool = False
    block: bool = False


def disk_elements(xml: str) -> list[DiskElement]:
    """The disks and CD-ROMs of domain XML, in document order."""
    found = []
    for disk in domxml.parse(xml).findall("devices/disk"):
        target = disk.find("target")
        source = disk.find("source")
        driver = disk.find("driver")
        path = (source.get("file") or source.get("dev") or "") if source is not None else ""
        found.append(
            DiskElement(
                target=target.get("dev", "") if target is not None else "",
                source=path,
                format=driver.get("type", "raw") if driver is not None else "raw",
                device=disk.get("device", "disk"),
                readonly=disk.find("readonly") is not None,
                block=disk.get("type") == "block",
            )
        )
    return found
