"""Snapshots, whatever the backend: the :class:`Snapshot` value and the rules about names and trees.

A snapshot is a point a VM can go back to: its disks (and, with ``memory``, its
RAM and device state: a running process keeps running after the revert) as they
were.  ``internal`` snapshots live inside the VM's qcow2 images; ``external``
ones freeze the images and continue in new overlay files, and keep the memory
in a file of their own.  ``files`` are the files virtlib made for the snapshot
(memory file, overlays): they belong to the VM and go with it.

A backend records its VM's snapshots in the VM's state (for the libvirt backend:
the domain's metadata), so another process that adopts the VM knows them, and
replaces the record whole when anything changes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from virtlib.errors import VMSnapshotError, VMSnapshotNotFoundError

INTERNAL = "internal"
EXTERNAL = "external"
KINDS = (INTERNAL, EXTERNAL)
#: What create_snapshot(kind=...) accepts: "auto" takes an internal snapshot where the
#: VM can (qcow2 disks, with memory), else an external one.
REQUESTABLE_KINDS = ("auto", INTERNAL, EXTERNAL)

RUNNING = "running"
PAUSED = "paused"
#: Snapshot names become file names: letters, digits, ``.``, ``_`` and ``-``; no leading dot.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class SnapshotDisk:
    """Where one disk's state at the snapshot is: ``path`` (in ``format``) holds it.

    Internal snapshot: the image holding it.  External snapshot: the image that was
    active when it was taken (frozen since, the backing file of the overlay after it).
    """

    name: str
    path: str
    format: str = "qcow2"
    #: The image outlives the VM (the user's own, not one made for or with it): destroy()
    #: leaves it as if no snapshot had been taken.
    survives: bool = False


@dataclass(frozen=True)
class SnapshotOverlay:
    """External snapshots: the new file disk ``disk`` continued in after the snapshot."""

    disk: str
    overlay: str


@dataclass(frozen=True)
class Snapshot:
    """One snapshot of a VM (see the module docstring)."""

    name: str
    kind: str = INTERNAL
    memory: bool = True
    description: str = ""
    #: When it was taken (seconds since the epoch).
    created: float = 0.0
    #: The snapshot this one was taken after (the VM's current snapshot then), if any.
    parent: str | None = None
    #: The VM's state when taken: "running" or "paused" (a revert restores it).
    state: str = RUNNING
    disks: tuple[SnapshotDisk, ...] = ()
    #: The file holding memory and device state (external snapshots with memory).
    memory_file: str = ""
    #: External snapshots: where each disk went on writing after it.
    overlays: tuple[SnapshotOverlay, ...] = ()
    #: Every file virtlib made for this snapshot (memory file, overlays).
    files: tuple[str, ...] = ()

    @property
    def internal(self) -> bool:
        return self.kind == INTERNAL

    @property
    def external(self) -> bool:
        return self.kind == EXTERNAL

    @property
    def disk_only(self) -> bool:
        """A snapshot of the disks alone: a revert boots the guest from them."""
        return not self.memory

    @property
    def created_text(self) -> str:
        """The creation time, ISO 8601 in UTC."""
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "memory": self.memory,
            "description": self.description,
            "created": self.created,
            "parent": self.parent,
            "state": self.state,
            "disks": [[d.name, d.path, d.format, d.survives] for d in self.disks],
            "memory_file": self.memory_file,
            "overlays": [[o.disk, o.overlay] for o in self.overlays],
            "files": list(self.files),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Snapshot:
        """The value :meth:`to_json` wrote (ValueError when it is not one)."""
        try:
            kind = str(data["kind"])
            if kind not in KINDS:
                raise ValueError(f"unknown snapshot kind {kind!r}")
            return cls(
                name=str(data["name"]),
                kind=kind,
                memory=bool(data.get("memory", False)),
                description=str(data.get("description", "")),
                created=float(data.get("created", 0.0)),
                parent=str(data["parent"]) if data.get("parent") else None,
                state=str(data.get("state", RUNNING)),
                disks=tuple(
                    SnapshotDisk(str(n), str(p), str(f), bool(rest and rest[0]))
                    for n, p, f, *rest in data["disks"]
                ),
                memory_file=str(data.get("memory_file", "")),
                overlays=tuple(
                    SnapshotOverlay(str(d), str(o)) for d, o in data.get("overlays", ())
                ),
                files=tuple(str(f) for f in data.get("files", ())),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a snapshot record: {exc}") from None


@dataclass(frozen=True)
class SnapshotTree:
    """A VM's snapshots and which one is current: the rules that do not depend on a backend.

    Immutable like the state that holds it: every change returns a new tree.
    """

    snapshots: tuple[Snapshot, ...] = ()
    current: str = ""
    vm: str = field(default="", compare=False)

    def names(self) -> list[str]:
        return [s.name for s in self.snapshots]

    def find(self, name: str) -> Snapshot | None:
        return next((s for s in self.snapshots if s.name == name), None)

    def get(self, name: str) -> Snapshot:
        """The snapshot called ``name``.

        :raises VMSnapshotNotFoundError: there is none (the error lists the known ones).
        """
        found = self.find(name)
        if found is None:
            raise VMSnapshotNotFoundError(self.vm, name, self.names())
        return found

    def current_snapshot(self) -> Snapshot | None:
        return self.find(self.current) if self.current else None

    def children(self, name: str) -> list[Snapshot]:
        return [s for s in self.snapshots if s.parent == name]

    def descendants(self, name: str) -> list[Snapshot]:
        """Every snapshot below ``name``, leaves first (the order to delete them in)."""
        result: list[Snapshot] = []
        for child in self.children(name):
            result += self.descendants(child.name)
            result.append(child)
        return result

    def ancestry(self) -> list[Snapshot]:
        """Every snapshot, parents before children (the order to re-create records in)."""
        ordered: list[Snapshot] = []
        placed: set[str] = set()
        pending = list(self.snapshots)
        while pending:
            ready = [s for s in pending if s.parent is None or s.parent in placed]
            if not ready:  # a parent that is not there: take the rest as they are
                ready = pending
            for snapshot in ready:
                ordered.append(snapshot)
                placed.add(snapshot.name)
            pending = [s for s in pending if s.name not in placed]
        return ordered

    def added(self, snapshot: Snapshot) -> SnapshotTree:
        """With ``snapshot`` (a child of the current one) as the new current snapshot."""
        return replace(self, snapshots=(*self.snapshots, snapshot), current=snapshot.name)

    def without(self, name: str) -> SnapshotTree:
        """Without ``name``: its children hang from its parent, which becomes current if
        ``name`` was."""
        gone = self.get(name)
        kept = tuple(
            replace(s, parent=gone.parent) if s.parent == name else s
            for s in self.snapshots
            if s.name != name
        )
        current = (gone.parent or "") if self.current == name else self.current
        return replace(self, snapshots=kept, current=current)

    def reverted_to(self, name: str) -> SnapshotTree:
        self.get(name)
        return replace(self, current=name)

    def replaced(self, snapshot: Snapshot) -> SnapshotTree:
        """With the record of ``snapshot.name`` replaced by ``snapshot``."""
        self.get(snapshot.name)
        return replace(
            self,
            snapshots=tuple(snapshot if s.name == snapshot.name else s for s in self.snapshots),
        )

    def files(self) -> list[str]:
        """Every file the snapshots own."""
        return [f for s in self.snapshots for f in s.files]


def check_name(vm: str, name: object, existing: Iterable[str] = ()) -> str:
    """``name`` if it can name a new snapshot of ``vm``.

    :raises VMSnapshotError: not a string of letters, digits, ``._-`` (64 at most, no
        leading dot), or taken already.
    """
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise VMSnapshotError(
            vm,
            str(name),
            "parameter 'name' must be 1-64 letters, digits, '.', '_' or '-' "
            f"(not starting with '.' or '-'), not {name!r}",
        )
    if name in set(existing):
        raise VMSnapshotError(vm, name, "the VM has a snapshot of that name already")
    return name


def check_kind(vm: str, name: str, kind: object) -> str:
    """``kind`` if create_snapshot() understands it ("auto", "internal", "external")."""
    if kind not in REQUESTABLE_KINDS:
        raise VMSnapshotError(
            vm, name, f"parameter 'kind' must be one of {', '.join(REQUESTABLE_KINDS)}, "
            f"not {kind!r}"
        )  # fmt: skip
    return str(kind)


def encode(snapshots: Sequence[Snapshot]) -> list[dict[str, Any]]:
    return [s.to_json() for s in snapshots]


def decode(items: Iterable[Mapping[str, Any]]) -> tuple[Snapshot, ...]:
    return tuple(Snapshot.from_json(item) for item in items)
