"""A VM's runtime state: one immutable value, replaced whole, never copied into other objects.

A backend makes a :class:`VMState` when it creates, adopts, restores or
migrates a VM, stores it with the VM on the hypervisor (the libvirt backend
keeps it in the domain's metadata) and replaces it whole when anything in it
changes.  Everything else (the URI a VM runs on, its forwarded ports, its MAC
addresses, the spec it was designed from) is read from it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from virtlib.params import Params
from virtlib.reservations import WHOLE, Partition
from virtlib.snapshot import Snapshot, SnapshotTree
from virtlib.spec import VMSpec

#: Params whose values are secrets: never written where other users can read them
#: (domain metadata is readable through libvirt's read-only socket).
SECRET_KEY_RE = re.compile(r"pass(word|wd|phrase)|secret|token", re.IGNORECASE)

PortKey = tuple[int, int]  # (NIC index, guest port)


def is_secret(key: str) -> bool:
    """True for params that hold secrets (``password``, ``password_nic1``, ``*_secret``...)."""
    return SECRET_KEY_RE.search(key) is not None


def public_params(params: Mapping[str, str]) -> dict[str, str]:
    """``params`` without its secrets."""
    return {k: v for k, v in params.items() if not is_secret(k)}


def secret_params(params: Mapping[str, str]) -> dict[str, str]:
    """Only the secrets of ``params``."""
    return {k: v for k, v in params.items() if is_secret(k)}


@dataclass(frozen=True)
class Allocations:
    """What a VM holds from the shared pools: a MAC per NIC, a host port per forwarded guest port.

    Immutable: ``with_ports`` makes a new value (migration moves a VM's forwards).
    """

    macs: tuple[tuple[int, str], ...] = ()
    ports: tuple[tuple[PortKey, int], ...] = ()

    @classmethod
    def of(cls, macs: Mapping[int, str], ports: Mapping[PortKey, int]) -> Allocations:
        return cls(tuple(sorted(macs.items())), tuple(sorted(ports.items())))

    @property
    def mac_map(self) -> dict[int, str]:
        return dict(self.macs)

    @property
    def port_map(self) -> dict[PortKey, int]:
        return dict(self.ports)

    def mac(self, nic: int) -> str | None:
        return self.mac_map.get(nic)

    def port(self, nic: int, guest_port: int) -> int | None:
        return self.port_map.get((nic, guest_port))

    def with_ports(self, ports: Mapping[PortKey, int]) -> Allocations:
        return Allocations(self.macs, tuple(sorted(ports.items())))


@dataclass(frozen=True)
class VMState:
    """Who a running VM is and what it holds.

    ``params`` are those the VM was designed from (secrets included in memory; a
    backend stores only :func:`public_params`), ``spec`` is parsed from them, and
    ``accel`` is the accelerator the VM really runs with ("kvm", "tcg", ...).
    """

    instance: str
    uri: str
    uuid: str
    allocations: Allocations
    spec: VMSpec
    params: Mapping[str, str] = field(default_factory=dict)
    root_dir: str = "."
    partition: Partition = WHOLE
    accel: str = ""
    #: Files virtlib made for this VM outside its private directory (migration copies of
    #: its disks, ...): removed with the VM.
    owned_files: tuple[str, ...] = ()
    #: The VM's snapshots (virtlib.snapshot) and the name of the current one ("" for none).
    snapshots: tuple[Snapshot, ...] = ()
    current_snapshot: str = ""

    @property
    def snapshot_tree(self) -> SnapshotTree:
        return SnapshotTree(self.snapshots, self.current_snapshot, self.spec.name)

    def with_snapshots(self, tree: SnapshotTree, owned_files: tuple[str, ...]) -> VMState:
        """A new state holding ``tree`` and owning ``owned_files``."""
        return self.replace(
            snapshots=tree.snapshots, current_snapshot=tree.current, owned_files=owned_files
        )

    def replace(self, **changes: object) -> VMState:
        """A new state with ``changes`` (the only way a state changes)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def with_params(self, params: Mapping[str, str], **changes: object) -> VMState:
        """A new state designed from ``params`` (its spec parsed from them again; raises
        VMParamsError on bad ones), with ``changes`` and everything else kept: what a
        hotplug makes of the VM.  The guest stays the one it is: a disk in ``images``
        would otherwise turn the bundled guest's default (``guest``) off."""
        copy = dict(params)
        copy.setdefault("guest", self.spec.guest)
        spec = VMSpec.from_params(self.spec.name, Params(copy), self.root_dir)
        return self.replace(params=copy, spec=spec, **changes)

    def moved(
        self,
        uri: str,
        allocations: Allocations,
        params: Mapping[str, str] | None = None,
        owned_files: tuple[str, ...] = (),
    ) -> VMState:
        """The state after a migration to ``uri`` holding ``allocations`` there (``params``
        changed there, e.g. the paths of copied disks, and ``owned_files`` made there)."""
        return VMState.designed(
            self.spec.name,
            {**self.params, **(params or {}), "connect_uri": uri},
            self.root_dir,
            owned_files=owned_files,
            instance=self.instance,
            uri=uri,
            uuid=self.uuid,
            allocations=allocations,
            partition=self.partition,
            accel=self.accel,
        )

    @classmethod
    def designed(
        cls,
        name: str,
        params: Mapping[str, str],
        root_dir: str | Path,
        **fields: object,
    ) -> VMState:
        """A state whose spec is parsed from ``params`` (raises VMParamsError on bad ones)."""
        copy = dict(params)
        spec = VMSpec.from_params(name, Params(copy), root_dir)
        return cls(spec=spec, params=copy, root_dir=str(root_dir), **fields)  # type: ignore[arg-type]
