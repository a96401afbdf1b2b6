"""The BaseVM contract: autotest's ``virt_vm.BaseVM``, kept name for name.

A backend subclasses :class:`BaseVM` and implements its abstract primitives
(an incomplete backend fails at construction).  Behaviour built from the
primitives (login and its retries, serial login, file copies, memory and CPU
queries, kernel-crash detection, MAC addresses) is written once here.

Differences from the seed, on purpose: no ``eval`` of ``shell_linesep`` (a safe
unescape), no predictable ``/tmp`` files (a private 0700 directory per VM),
no shell strings, and retries with short back-off up to a deadline instead of
fixed two-second sleeps.

Signatures are avocado-vt's ``virt_vm.BaseVM`` (the seed's successor), which
extends the seed's: new parameters come after the seed's, so the seed's calls
work unchanged -- except ``copy_files_to/from``, where avocado-vt put ``limit``
before ``verbose``: there a boolean in ``limit``'s place is taken for the
seed's positional ``verbose`` (and a number after it for its ``timeout``).
Where avocado-vt's qemu and libvirt VMs differ, virtlib follows ``libvirt_vm``.
"""

from __future__ import annotations

from virtlib.history import wrap_recorded
from virtlib.vmcore import RETRY_BANNER_MAX, RETRY_BANNER_STEP, RETRY_BANNER_TIMEOUT
from virtlib.vmdevices import DeviceOperations
from virtlib.vmfiles import FileCopies
from virtlib.vmlogin import RESTART_NETWORK_COMMAND
from virtlib.vmqueries import KERNEL_LINE, GuestQueries, parse_memory_size
from virtlib.vmsnapshots import SnapshotOperations
from virtlib.vmtools import OptionalOperations

__all__ = [
    "KERNEL_LINE",
    "RESTART_NETWORK_COMMAND",
    "RETRY_BANNER_MAX",
    "RETRY_BANNER_STEP",
    "RETRY_BANNER_TIMEOUT",
    "BaseVM",
    "parse_memory_size",
]


class BaseVM(FileCopies, GuestQueries, OptionalOperations, SnapshotOperations, DeviceOperations):
    """Base class for every hypervisor-specific VM.

    Public methods are consumed by tests; ``_protected`` ones by BaseVM and its
    subclasses.  ``params`` is a :class:`~virtlib.params.Params` (a plain dict is
    converted); it is parsed into ``self.spec`` at construction, so a bad value fails
    there.  The pieces, one concept each:

    - :class:`~virtlib.vmcore.VMCore`: identity, state, files, and the primitives a
      backend implements (abstract) or may implement (optional);
    - :class:`~virtlib.vmlogin.LoginOperations`: logins over the network and the serial
      console, with retries;
    - :class:`~virtlib.vmfiles.FileCopies`: copies to and from the guest;
    - :class:`~virtlib.vmqueries.GuestQueries`: crashes, CPUs, memory, distribution, dmesg;
    - :class:`~virtlib.vmtools.OptionalOperations`: evidence, the guest agent, and the
      operations tools use;
    - :class:`~virtlib.vmsnapshots.SnapshotOperations`: snapshots (optional);
    - :class:`~virtlib.vmdevices.DeviceOperations`: hotplug of disks, NICs, CD-ROM media,
      vCPUs and memory, and block jobs (optional).
    """


wrap_recorded(BaseVM, inherited=True)
