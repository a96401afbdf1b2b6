"""What the designer needs to know about a host, gathered through the Host wrapper."""

from __future__ import annotations

from virtlib.accel import AccelChoice
from virtlib.backends.libvirt.designer import HostFacts, PciDevice
from virtlib.backends.libvirt.host import Host


def host_facts(host: Host, accel: AccelChoice) -> HostFacts:
    """Facts of ``host`` for a VM that runs (or will run) with ``accel``."""
    return HostFacts(
        driver=host.hypervisor_kind(),
        accel=accel,
        free_hugepages=host.free_hugepages,
        pci_devices=lambda: pci_devices(host),
    )


def running_accel(accel: str) -> AccelChoice:
    """The accelerator a running VM has (from its state)."""
    return AccelChoice("kvm" if accel == "kvm" else "tcg", "the running domain's")


def pci_devices(host: Host) -> list[PciDevice]:
    """Host PCI devices with their SR-IOV roles, from libvirt's node device API."""
    result = []
    for root in host.pci_devices():
        cap = root.find("capability[@type='pci']")
        if cap is None:
            continue
        domain, bus, slot, function = (
            int(cap.findtext(tag, "0"), 0) for tag in ("domain", "bus", "slot", "function")
        )
        result.append(
            PciDevice(
                domain,
                bus,
                slot,
                function,
                is_vf=cap.find("capability[@type='phys_function']") is not None,
                is_pf=cap.find("capability[@type='virt_functions']") is not None,
            )
        )
    return result
