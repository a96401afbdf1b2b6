"""Devices on a running guest: disk, NIC, CD-ROM, vCPU and memory hotplug, and block jobs.

Optional operations a backend overrides (the rest raise VMNotSupportedError naming the
operation).  Each applies to the running guest; ``persistent=True`` also keeps the change
for the next boot.  The values are :mod:`virtlib.devices`'s.  Mixed into
:class:`~virtlib.contract.BaseVM`; the libvirt backend's are in
``virtlib.backends.libvirt.vm_devices``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from virtlib.errors import VMNotSupportedError
from virtlib.vmcore import VMCore

if TYPE_CHECKING:
    from virtlib.devices import Dimm, Disk, Nic, ProgressCallback


class DeviceOperations(VMCore):
    """The device operations of the contract (mixed into BaseVM); see the module docstring.

    ``persistent`` everywhere: a defined (persistent) domain gets the change in its
    configuration too.  virtlib's own domains are transient (nothing of them outlives
    the VM), so there it means the VM's params: the next ``create()`` of this VM object
    boots with the change (a disk attached, a NIC, vCPUs, memory).
    """

    # --- disks -------------------------------------------------------------------------
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
        """Attach a disk to the running guest.

        :param path: the image file or block device; without one a new ``size`` image of
            ``image_format`` is made where QEMU can read it and removed with the disk
            (on detach, or when the VM is destroyed).  A file's name must end with
            ``.<image_format>`` (as ``image_name`` + ``image_format`` name images).
        :param size: of the new image (``512M``, ``10G``).
        :param bus: ``virtio`` (a PCI device) or ``scsi`` (on the VM's virtio-scsi
            controller: a disk with ``drive_format = scsi`` in params gives it one).
        :param name: an entry of ``images`` that is not attached (``boot_drive = no``):
            attach it as params describe it (the other arguments are not used); else
            the name the new disk gets in the VM's params (default ``hotdiskN``).
        :param serial: what the guest sees (``/dev/disk/by-id``); default: the name.
        :return: the :class:`Disk`.
        :raises VMDeviceParamsError: bad input (a size such as ``10Q``, an unknown bus or format,
            a taken name, no free target or PCI slot); nothing is made or asked.
        :raises VMFileMissingError: ``path`` does not exist.
        :raises VMDeviceAttachError: the hypervisor refused; nothing is left behind.
        :raises VMNotSupportedError: the backend cannot.
        """
        raise VMNotSupportedError("attach disk", self.BACKEND)

    def detach_disk(self, disk: Disk | str, timeout: float = 30, persistent: bool = False) -> None:
        """Detach a disk (a :class:`Disk`, or its name or target) once the guest released it.

        :raises VMDeviceNotFoundError: the VM has no such disk (nothing was asked).
        :raises VMDeviceTimeoutError: the guest did not release it within ``timeout`` s.
        :raises VMDeviceDetachError: the hypervisor refused.
        """
        raise VMNotSupportedError("detach disk", self.BACKEND)

    def disks(self) -> list[Disk]:
        """The VM's disks now (CD-ROMs not included)."""
        raise VMNotSupportedError("disks", self.BACKEND)

    # --- NICs ----------------------------------------------------------------------------
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
        """Attach a NIC to the running guest; ``get_address``/``get_port`` know it by its index.

        :param nettype: ``user`` (QEMU user networking, reached through ports forwarded to
            127.0.0.1), ``network`` or ``bridge`` (``netdst`` names it).
        :param mac: else one is reserved from the pool (as for NICs at boot).
        :param redirs: guest ports to forward (user networking), each to a host port
            reserved from the pool: ``redirs=(22,)`` carries SSH.
        :param name: an entry of ``nics`` that is not attached (``boot_drive = no``):
            attach it as params describe it; else the new NIC's name (``hotnicN``).
        :raises VMDeviceParamsError: bad input (an unknown nettype or model, a taken MAC).
        :raises VMDeviceAttachError: the hypervisor refused; the MAC and ports are freed.
        """
        raise VMNotSupportedError("attach nic", self.BACKEND)

    def detach_nic(
        self, nic: Nic | str | int, timeout: float = 30, persistent: bool = False
    ) -> None:
        """Detach a NIC (a :class:`Nic`, its name or index) once the guest released it; its
        MAC and forwarded ports are freed.

        :raises VMDeviceNotFoundError, VMDeviceTimeoutError, VMDeviceDetachError: as detach_disk.
        """
        raise VMNotSupportedError("detach nic", self.BACKEND)

    def nics(self) -> list[Nic]:
        """The VM's NICs now."""
        raise VMNotSupportedError("nics", self.BACKEND)

    # --- CD-ROMs ---------------------------------------------------------------------------
    def change_media(self, cdrom: str, path: str, persistent: bool = False) -> None:
        """Put the ISO ``path`` into CD-ROM ``cdrom`` (a name in ``cdroms``), replacing its medium.

        :raises VMDeviceNotFoundError: no such CD-ROM.
        :raises VMFileMissingError: ``path`` does not exist.
        :raises VMDeviceError: the hypervisor refused (the guest may have locked the tray).
        """
        raise VMNotSupportedError("change media", self.BACKEND)

    def eject_media(self, cdrom: str, persistent: bool = False) -> None:
        """Take the medium out of CD-ROM ``cdrom`` (an empty drive stays).

        :raises VMDeviceNotFoundError, VMDeviceError: as change_media.
        """
        raise VMNotSupportedError("eject media", self.BACKEND)

    # --- vCPUs and memory -------------------------------------------------------------------
    def set_vcpus(self, count: int, guest: bool = False, persistent: bool = False) -> None:
        """Plug or unplug vCPUs so that the guest has ``count`` (up to the ``vcpus_max`` param).

        :param guest: leave the vCPUs plugged and bring ``count`` of them online or
            offline in the guest instead, through the guest agent.
        :raises VMDeviceParamsError: ``count`` is below 1 or above ``vcpus_max``.
        :raises VMNotSupportedError: unplugging where the hypervisor cannot do it safely
            (libvirt's QEMU 7.2 under TCG; ``guest=True`` works there).
        :raises VMDeviceError: the hypervisor or the guest refused (VMDeviceTimeoutError:
            the guest did not release a vCPU in libvirt's time).
        """
        raise VMNotSupportedError("set vcpus", self.BACKEND)

    def set_memory(self, mib: int, persistent: bool = False) -> None:
        """Set the memory balloon's target: the guest keeps ``mib`` MiB of its memory.

        :raises VMDeviceParamsError: ``mib`` is not between 1 and the memory the VM has.
        """
        raise VMNotSupportedError("set memory", self.BACKEND)

    def attach_memory(self, mib: int, persistent: bool = False) -> Dimm:
        """Plug a memory module of ``mib`` MiB into the running guest (``mem_slots`` slots,
        up to ``mem_max`` MiB in all).

        :raises VMDeviceParamsError: no memory hotplug (``mem_slots``), no free slot, over
            ``mem_max``, or not a multiple of 128 MiB (the guest's memory block).
        :raises VMDeviceAttachError: the hypervisor refused.
        """
        raise VMNotSupportedError("attach memory", self.BACKEND)

    def detach_memory(
        self, dimm: Dimm | str, timeout: float = 30, persistent: bool = False
    ) -> None:
        """Unplug a memory module once the guest gave its memory back.

        :raises VMDeviceNotFoundError, VMDeviceTimeoutError, VMDeviceDetachError: as detach_disk.
        """
        raise VMNotSupportedError("detach memory", self.BACKEND)

    # --- block jobs ----------------------------------------------------------------------------
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
        """Merge the disk's overlays into ``base`` (default: the image under the top one).

        With ``top`` unset (or the active image) it is an active commit: the guest
        writes on meanwhile, and with ``pivot`` the disk continues on ``base`` once all
        is merged (``pivot=False``: it stays on its overlay).  ``bandwidth`` caps it
        (MiB/s, 0: none); ``progress`` is called with a BlockJobProgress about five
        times a second and aborts the job by returning False.

        :return: the disk as it is afterwards.
        :raises VMDeviceNotFoundError: no such disk.
        :raises VMBlockJobError: the job failed, was aborted or ran over ``timeout``;
            the disk goes on with the image it had.
        """
        raise VMNotSupportedError("block commit", self.BACKEND)

    def block_pull(
        self,
        disk: Disk | str,
        base: str | None = None,
        bandwidth: int = 0,
        progress: ProgressCallback | None = None,
        timeout: float = 600,
    ) -> Disk:
        """Copy the data of the disk's backing images (down to ``base``, default all) into
        its active image, which then needs them no more.

        :raises VMDeviceNotFoundError, VMBlockJobError: as block_commit.
        """
        raise VMNotSupportedError("block pull", self.BACKEND)

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
        """Copy the disk to a new image ``dest`` while the guest writes on (a mirror), then
        with ``pivot`` go on with the copy (``pivot=False``: keep the original; ``dest``
        is then a copy of the moment the job ended).  ``shallow`` copies the top image
        only (``dest`` gets the same backing file).

        :raises VMDeviceParamsError: ``dest`` exists, or is not a ``.<dest_format>`` file name.
        :raises VMDeviceNotFoundError, VMBlockJobError: as block_commit.
        """
        raise VMNotSupportedError("block copy", self.BACKEND)
