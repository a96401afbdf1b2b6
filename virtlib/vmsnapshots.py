"""Snapshots of a VM: optional operations a backend overrides (the rest raise
VMNotSupportedError).  The values are :mod:`virtlib.snapshot`'s.  Mixed into
:class:`~virtlib.contract.BaseVM`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from virtlib.errors import VMNotSupportedError
from virtlib.vmcore import VMCore

if TYPE_CHECKING:
    from virtlib.snapshot import Snapshot


class SnapshotOperations(VMCore):
    """BaseVM's snapshot operations (see the module docstring)."""

    def create_snapshot(
        self,
        name: str,
        memory: bool = True,
        disk_only: bool = False,
        description: str = "",
        kind: str = "auto",
    ) -> Snapshot:
        """Take a snapshot of the running VM; it becomes the current one.

        :param name: 1-64 letters, digits, ``.``, ``_``, ``-`` (it names files).
        :param memory: keep the RAM and device state too: a revert resumes the guest
            where it was, processes and all.
        :param disk_only: only the disks (no memory), even when ``memory`` is true; a
            revert boots the guest from them.
        :param description: free text kept with the snapshot.
        :param kind: "internal" (inside the qcow2 images), "external" (new overlay files,
            memory in a file of its own), or "auto": internal where the VM can, else external.
        :return: the new :class:`~virtlib.snapshot.Snapshot`.
        :raises VMSnapshotError: a bad or taken name, a bad ``kind``; the backend failed.
        :raises VMSnapshotKindError: the VM cannot take that kind of snapshot.
        :raises VMNotSupportedError: the backend has no snapshots.
        """
        raise VMNotSupportedError("create snapshot", self.BACKEND)

    def list_snapshots(self) -> list[Snapshot]:
        """The VM's snapshots, oldest first.

        :raises VMNotSupportedError: the backend has no snapshots.
        """
        raise VMNotSupportedError("list snapshots", self.BACKEND)

    def current_snapshot(self) -> Snapshot | None:
        """The snapshot taken or reverted to last (None when there is none).

        :raises VMNotSupportedError: the backend has no snapshots.
        """
        raise VMNotSupportedError("current snapshot", self.BACKEND)

    def revert_snapshot(self, name: str) -> None:
        """Bring the VM back to snapshot ``name``: its disks (and, when it holds memory, its
        RAM, so it runs on from that moment) as they were; also a VM whose guest panicked
        or powered off meanwhile.  The serial console is attached afterwards (log in or
        ``sync()`` before use) and the guest's clock set where a guest agent answers.

        :raises VMSnapshotNotFoundError: no such snapshot.
        :raises VMSnapshotRevertError: it failed; the VM is as it was.
        :raises VMNotSupportedError: the backend has no snapshots.
        """
        raise VMNotSupportedError("revert snapshot", self.BACKEND)

    def delete_snapshot(self, name: str, children: bool = False) -> None:
        """Delete snapshot ``name`` and the files made for it that nothing needs any more.

        :param children: also delete every snapshot taken after it from it (else they
            stay, hanging from its parent).
        :raises VMSnapshotNotFoundError: no such snapshot.
        :raises VMSnapshotError: the backend failed; the snapshot is kept.
        :raises VMNotSupportedError: the backend has no snapshots.
        """
        raise VMNotSupportedError("delete snapshot", self.BACKEND)
