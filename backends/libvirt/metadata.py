"""virtlib's metadata in a domain's XML: what another process needs to manage the VM.

Written into ``<metadata>`` at create time: the VM's instance id (its
reservations are keyed by it), the forwarded ports and the MAC addresses.
``virtlib list`` finds virtlib's domains by it, and ``LibvirtVM.adopt()``
rebuilds a VM object for a running domain from it.
"""

from __future__ import annotations

from virtlib.backends.libvirt.designer import Allocations
from virtlib.errors import VMError


def encode(instance: str, allocations: Allocations) -> dict[str, str]:
    """The metadata values for a VM (all strings, as the XML holds them)."""
    forwards = " ".join(
        f"{nic}:{guest}={host}" for (nic, guest), host in sorted(allocations.ports.items())
    )
    macs = " ".join(f"{nic}={mac}" for nic, mac in sorted(allocations.macs.items()))
    return {"instance": instance, "forwards": forwards, "macs": macs}


def decode(values: dict[str, str]) -> tuple[str, Allocations]:
    """(instance, allocations) from metadata written by :func:`encode`."""
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
    return values["instance"], allocations
