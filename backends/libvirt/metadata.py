"""virtlib's metadata in a domain's XML: what another process needs to manage the VM.

Written into ``<metadata>`` at create time: the VM's instance id (its
reservations are keyed by it), the forwarded ports and the MAC addresses.
``virtlib list`` finds virtlib's domains by it, and ``LibvirtVM.adopt()``
rebuilds a VM object for a running domain from it.
"""

from __future__ import annotations

from virtlib.backends.libvirt.designer import Allocations
from virtlib.errors import VMError
from virtlib.reservations import WHOLE, Partition


def encode(instance: str, allocations: Allocations, partition: Partition = WHOLE) -> dict[str, str]:
    """The metadata values for a VM (all strings, as the XML holds them)."""
    forwards = " ".join(
        f"{nic}:{guest}={host}" for (nic, guest), host in sorted(allocations.ports.items())
    )
    macs = " ".join(f"{nic}={mac}" for nic, mac in sorted(allocations.macs.items()))
    values = {"instance": instance, "forwards": forwards, "macs": macs}
    if not partition.whole:  # its reservations live in that partition's tables
        values["partition"] = f"{partition.index}/{partition.count}"
    return values


def decode(values: dict[str, str]) -> tuple[str, Allocations, Partition]:
    """(instance, allocations, partition) from metadata written by :func:`encode`."""
    if not values.get("instance"):
        raise VMError("the domain has no virtlib metadata: it was not made by virtlib")
    allocations = Allocations()
    try:
        for item in values.get("forwards", "").split():
            where, _, host = item.partition("=")
            nic, _, guest = where.partition(":")
            allocations.ports[(int(nic), int(guest))] = int(host)
        for item in values.get("macs", "").split():
            nic, _, mac = item.partition("=")
            allocations.macs[int(nic)] = mac
    except ValueError as exc:
        raise VMError(f"the domain's virtlib metadata is damaged: {exc}") from None
    partition = Partition.parse(values["partition"]) if values.get("partition") else WHOLE
    return values["instance"], allocations, partition
