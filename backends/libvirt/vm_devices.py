"""LibvirtVM's device operations: the contract's (hotplug, media, vCPUs, memory, block
jobs), delegating to :mod:`.devices`, :mod:`.nics` and :mod:`.blockjobs`, and the one
thing that code needs of the VM object.

A mixin of :class:`~.domain.LibvirtVM` alone (``self`` is always one), so domain.py stays
one concept: the domain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from virtlib.backends.libvirt import blockjobs, devices, nics
from virtlib.vmdevices import DeviceOperations

if TYPE_CHECKING:
    from virtlib.backends.libvirt.domain import LibvirtVM
    from virtlib.devices import Dimm, Disk, Nic, ProgressCallback
    from virtlib.state import VMState


class LibvirtDevices(DeviceOperations):
    """Devices of a running libvirt domain (see :mod:`.devices` for how each runs)."""

    def _vm(self) -> LibvirtVM:
        return cast("LibvirtVM", self)

    def attach_disk(
        self,
        path: str | None = None,
        size: str = "1G",
        image_format: str = "qcow2",
        bus: str = "virtio",
        readonly: bool = False,
        name: str | None = None,
        serial: str | None = None,
        persistent: bool = False,
    ) -> Disk:
        return devices.attach_disk(
            self._vm(), path, size, image_format, bus, readonly, name, serial, persistent
        )

    def detach_disk(self, disk: Disk | str, timeout: float = 30, persistent: bool = False) -> None:
        devices.detach_disk(self._vm(), disk, timeout, persistent)

    def disks(self) -> list[Disk]:
        return devices.disks(self._vm())

    def attach_nic(
        self,
        nettype: str = "user",
        mac: str | None = None,
        model: str = "virtio",
        redirs: Sequence[int] = (),
        name: str | None = None,
        netdst: str = "",
        persistent: bool = False,
    ) -> Nic:
        return nics.attach_nic(self._vm(), nettype, mac, model, redirs, name, netdst, persistent)

    def detach_nic(
        self, nic: Nic | str | int, timeout: float = 30, persistent: bool = False
    ) -> None:
        nics.detach_nic(self._vm(), nic, timeout, persistent)

    def nics(self) -> list[Nic]:
        return nics.nics(self._vm())

    def change_media(self, cdrom: str, path: str, persistent: bool = False) -> None:
        devices.change_media(self._vm(), cdrom, path, persistent)

    def eject_media(self, cdrom: str, persistent: bool = False) -> None:
        devices.change_media(self._vm(), cdrom, None, persistent)

    def set_vcpus(self, count: int, guest: bool = False, persistent: bool = False) -> None:
        devices.set_vcpus(self._vm(), count, guest, persistent)

    def set_memory(self, mib: int, persistent: bool = False) -> None:
        devices.set_memory(self._vm(), mib, persistent)

    def attach_memory(self, mib: int, persistent: bool = False) -> Dimm:
        return devices.attach_memory(self._vm(), mib, persistent)

    def detach_memory(
        self, dimm: Dimm | str, timeout: float = 30, persistent: bool = False
    ) -> None:
        devices.detach_memory(self._vm(), dimm, timeout, persistent)

    def block_commit(
        self,
        disk: Disk | str,
        base: str | None = None,
        top: str | None = None,
        bandwidth: int = 0,
        progress: ProgressCallback | None = None,
        timeout: float = 600,
        pivot: bool = True,
    ) -> Disk:
        return blockjobs.commit_disk(
            self._vm(), disk, base, top, bandwidth, progress, timeout, pivot
        )

    def block_pull(
        self,
        disk: Disk | str,
        base: str | None = None,
        bandwidth: int = 0,
        progress: ProgressCallback | None = None,
        timeout: float = 600,
    ) -> Disk:
        return blockjobs.pull_disk(self._vm(), disk, base, bandwidth, progress, timeout)

    def block_copy(
        self,
        disk: Disk | str,
        dest: str,
        dest_format: str = "qcow2",
        shallow: bool = False,
        bandwidth: int = 0,
        progress: ProgressCallback | None = None,
        timeout: float = 600,
        pivot: bool = True,
    ) -> Disk:
        return blockjobs.copy_disk(
            self._vm(), disk, dest, dest_format, shallow, bandwidth, progress, timeout, pivot
        )

    # --- for the device code -------------------------------------------------------------------
    def replace_device_state(self, state: VMState) -> None:
        """A device operation replaced the VM's state (the host keys of new forwards too)."""
        vm = self._vm()
        with vm._lock:
            vm._set_state(state)
            vm._trust_host_keys()
