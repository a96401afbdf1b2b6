"""LibvirtVM's snapshot operations: the contract's, delegating to :mod:`.snapshots` and
:mod:`.snapshot_revert`, and the few things that code needs of the VM object.

A mixin of :class:`~.domain.LibvirtVM` alone (``self`` is always one), so domain.py stays
one concept: the domain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from virtlib.backends.libvirt import snapshot_revert, snapshots
from virtlib.vmsnapshots import SnapshotOperations

if TYPE_CHECKING:
    from virtlib.backends.libvirt.domain import LibvirtVM
    from virtlib.backends.libvirt.guest import GuestState
    from virtlib.snapshot import Snapshot
    from virtlib.state import VMState


class LibvirtSnapshots(SnapshotOperations):
    """Snapshots of a libvirt domain (see :mod:`.snapshots` for the kinds and paths)."""

    def _vm(self) -> LibvirtVM:
        return cast("LibvirtVM", self)

    def create_snapshot(
        self,
        name: str,
        memory: bool = True,
        disk_only: bool = False,
        description: str = "",
        kind: str = "auto",
    ) -> Snapshot:
        """Take a snapshot through libvirt's snapshot API (see BaseVM.create_snapshot)."""
        return snapshots.create(self._vm(), name, memory, disk_only, description, kind)

    def list_snapshots(self) -> list[Snapshot]:
        return snapshots.listing(self._vm())

    def current_snapshot(self) -> Snapshot | None:
        return snapshots.current(self._vm())

    def revert_snapshot(self, name: str) -> None:
        """Go back to a snapshot: in the running QEMU where it can (see .snapshot_revert)."""
        snapshot_revert.revert(self._vm(), name)

    def delete_snapshot(self, name: str, children: bool = False) -> None:
        snapshots.delete(self._vm(), name, children)

    # --- for the snapshot code ---------------------------------------------------------------
    def replace_state(self, state: VMState) -> None:
        """The snapshot code replaced the VM's state (disks, owned files, records)."""
        vm = self._vm()
        with vm._lock:
            vm._set_state(state)

    def guest_state(self) -> GuestState | None:
        """libvirt's state of the domain (None when there is none)."""
        return self._vm()._guest_state()

    def detach_console_for_restart(self) -> None:
        """Before QEMU stops on purpose (a revert restarts it): the console re-attaches later."""
        self._vm()._detach_console(release=False)

    def note_on_console(self, text: str) -> None:
        """A line of virtlib's own in the serial log (where the guest's output jumps)."""
        serial = self._vm()._serial
        if serial is not None:
            serial.buffer.mark(text)
