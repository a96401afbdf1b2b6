"""A VM's state in its domain's XML metadata: what another process needs to manage the VM.

The libvirt backend keeps each VM's :class:`~virtlib.state.VMState` in the
domain's ``<metadata>`` (virtlib's namespace): the instance id (reservations
are keyed by it), the partition, the forwarded ports, the MAC addresses, the
accelerator, the root directory and the params the VM was designed from
*without their secrets* (domain XML is readable through libvirt's read-only
socket).  The URI and UUID are where and what the domain is, so they are not
stored.  ``virtlib list`` finds virtlib's domains by it, and ``adopt()``
rebuilds a VM from it; migration and save files carry it along.
"""

from __future__ import annotations

import json

from lxml import etree

from virtlib import snapshot
from virtlib.backends.libvirt import domxml
from virtlib.errors import VMError
from virtlib.reservations import WHOLE, Partition
from virtlib.state import Allocations, PortKey, VMState, public_params

FORMAT = "2"


def encode(state: VMState) -> dict[str, str]:
    """The metadata values for ``state`` (all strings, as the XML holds them)."""
    allocations = state.allocations
    values = {
        "format": FORMAT,
        "instance": state.instance,
        "forwards": " ".join(f"{nic}:{guest}={host}" for (nic, guest), host in allocations.ports),
        "macs": " ".join(f"{nic}={mac}" for nic, mac in allocations.macs),
        "accel": state.accel,
        "root_dir": state.root_dir,
        "params": json.dumps(public_params(state.params), sort_keys=True),
    }
    if state.owned_files:
        values["owned_files"] = json.dumps(list(state.owned_files))
    if state.snapshots:
        values["snapshots"] = json.dumps(snapshot.encode(state.snapshots), sort_keys=True)
    if state.current_snapshot:
        values["current_snapshot"] = state.current_snapshot
    if not state.partition.whole:  # its reservations live in that partition's tables
        values["partition"] = f"{state.partition.index}/{state.partition.count}"
    return values


def decode_allocations(values: dict[str, str]) -> Allocations:
    macs: dict[int, str] = {}
    ports: dict[PortKey, int] = {}
    try:
        for item in values.get("forwards", "").split():
            where, _, host = item.partition("=")
            nic, _, guest = where.partition(":")
            ports[(int(nic), int(guest))] = int(host)
        for item in values.get("macs", "").split():
            nic, _, mac = item.partition("=")
            macs[int(nic)] = mac
    except ValueError as exc:
        raise VMError(f"the domain's virtlib metadata is damaged: {exc}") from None
    return Allocations.of(macs, ports)


def decode(
    values: dict[str, str], name: str, uri: str, uuid: str, extra: dict[str, str] | None = None
) -> VMState:
    """The state of domain ``name`` from metadata written by :func:`encode`.

    ``extra`` params (the caller's: secrets, overrides) are laid over the stored ones.

    :raises VMError: the domain was not made by virtlib, or its metadata is damaged.
    """
    if not values.get("instance"):
        raise VMError(f"the domain {name!r} has no virtlib metadata: it was not made by virtlib")
    try:
        params: dict[str, str] = json.loads(values.get("params") or "{}")
        owned: list[str] = json.loads(values.get("owned_files") or "[]")
        snapshots = snapshot.decode(json.loads(values.get("snapshots") or "[]"))
    except ValueError as exc:
        raise VMError(f"the virtlib metadata of {name!r} is damaged: {exc}") from None
    params.update(extra or {})
    params["connect_uri"] = uri
    partition = Partition.parse(values["partition"]) if values.get("partition") else WHOLE
    return VMState.designed(
        name,
        params,
        values.get("root_dir") or ".",
        instance=values["instance"],
        uri=uri,
        uuid=uuid,
        allocations=decode_allocations(values),
        partition=partition,
        accel=values.get("accel", ""),
        owned_files=tuple(owned),
        snapshots=snapshots,
        current_snapshot=values.get("current_snapshot", ""),
    )


def read(xml: str) -> dict[str, str]:
    """The virtlib metadata values of a domain document (empty when virtlib did not make it)."""
    return domxml.read_metadata(domxml.parse(xml))


def element(state: VMState) -> str:
    """The metadata of ``state`` as one element without a namespace, the form
    virDomainSetMetadata takes (libvirt puts it into virtlib's namespace itself)."""
    vm = etree.Element("vm")
    for key, value in sorted(encode(state).items()):
        etree.SubElement(vm, key).text = value
    return str(etree.tostring(vm, encoding="unicode"))


def write(root: etree._Element, state: VMState) -> None:
    """Put ``state`` in place of the virtlib metadata of a domain document."""
    domxml.replace_metadata(root, encode(state))
