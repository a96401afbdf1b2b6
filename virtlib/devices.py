"""Devices on a running guest: what the hotplug operations hand back.

The operations are :class:`~virtlib.vmdevices.DeviceOperations` (a part of BaseVM).
The values here (:class:`Disk`, :class:`Nic`, :class:`Dimm`, :class:`BlockJobProgress`)
are backend-neutral snapshots: the VM's state is the record, they are read from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

#: A block job's progress callback; returning False aborts the job.
ProgressCallback = Callable[["BlockJobProgress"], "bool | None"]


@dataclass(frozen=True)
class Disk:
    """A disk of the VM: its name in ``images``, the target libvirt knows it by (``vdb``;
    the guest may name it otherwise), its bus, the image it uses now and the serial
    number the guest sees."""

    name: str
    target: str
    bus: str
    path: str
    format: str
    serial: str = ""
    readonly: bool = False

    @property
    def by_id(self) -> str:
        """Where udev (and the bundled guest) puts the disk: ``/dev/disk/by-id/...``
        ("" without a serial, or on a bus whose names are not known here)."""
        if not self.serial:
            return ""
        names = {
            "virtio": f"virtio-{self.serial}",
            "scsi": f"scsi-0QEMU_QEMU_HARDDISK_{self.serial}",
        }
        name = names.get(self.bus, "")
        return f"/dev/disk/by-id/{name}" if name else ""


@dataclass(frozen=True)
class Nic:
    """A NIC of the VM: its name in ``nics``, its index (``get_address``/``get_port`` take
    it), MAC and model, and for user networking the host ports forwarded to it."""

    name: str
    index: int
    mac: str
    model: str
    nettype: str
    netdst: str = ""
    forwards: dict[int, int] = field(default_factory=dict)
    """Guest port -> host port on 127.0.0.1 (user networking)."""


@dataclass(frozen=True)
class Dimm:
    """A memory module hotplugged into the VM."""

    name: str
    size_mib: int
    slot: int


@dataclass(frozen=True)
class BlockJobProgress:
    """One look at a running block job: ``cur`` of ``end`` bytes done."""

    disk: str
    job: str  # "commit", "active commit", "pull", "copy"
    cur: int
    end: int
    bandwidth_mib: int = 0

    @property
    def fraction(self) -> float:
        return self.cur / self.end if self.end else 0.0

    @property
    def ready(self) -> bool:
        """Everything copied: a copy or an active commit waits for its pivot."""
        return self.end > 0 and self.cur == self.end
