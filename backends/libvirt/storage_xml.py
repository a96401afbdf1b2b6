"""Storage pool and volume XML for libvirt's storage API, built with lxml.  No policy here."""

from __future__ import annotations

import uuid

from lxml import etree


def pool(directory: str) -> str:
    """A transient directory pool over ``directory``."""
    root = etree.Element("pool", type="dir")
    etree.SubElement(root, "name").text = f"virtlib-{uuid.uuid4().hex[:12]}"
    target = etree.SubElement(root, "target")
    etree.SubElement(target, "path").text = directory
    return etree.tostring(root, encoding="unicode")


def volume(name: str, fmt: str, capacity: int, backing: tuple[str, str] | None = None) -> str:
    """A volume of ``capacity`` bytes in ``fmt``, optionally over ``backing`` (path, format)."""
    root = etree.Element("volume")
    etree.SubElement(root, "name").text = name
    etree.SubElement(root, "capacity", unit="bytes").text = str(capacity)
    target = etree.SubElement(root, "target")
    etree.SubElement(target, "format", type=fmt)
    if fmt == "qcow2":
        etree.SubElement(target, "compat").text = "1.1"  # as qemu-img makes them
    if backing is not None:
        store = etree.SubElement(root, "backingStore")
        etree.SubElement(store, "path").text = backing[0]
        etree.SubElement(store, "format", type=backing[1])
    return etree.tostring(root, encoding="unicode")
