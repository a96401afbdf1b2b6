"""The core of :class:`~virtlib.contract.BaseVM`: identity, state, files, and the primitives
a backend implements (abstract) or may implement (optional).  The behaviour built from
them lives in the mixins (vmlogin, vmfiles, vmqueries, vmtools); contract.py assembles
them into BaseVM."""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from virtlib.errors import (
    VMDeadError,
    VMMACAddressMissingError,
    VMNotSupportedError,
)
from virtlib.history import MAX_ACTIONS, Action, note_live, wrap_recorded
from virtlib.macpool import MacPool
from virtlib.migration import MigrationProgress, MigrationResult
from virtlib.params import Params
from virtlib.ports import PortPool
from virtlib.reservations import Partition, current_partition
from virtlib.sessions import tunnel
from virtlib.spec import VMSpec
from virtlib.state import VMState
from virtlib.textutil import random_string
from virtlib.workdir import make_vm_dir, serial_log_dir

if TYPE_CHECKING:
    from virtlib.agent import GuestAgent
    from virtlib.contract import BaseVM
    from virtlib.sessions.shell import ShellSession

log = logging.getLogger("virtlib.contract")  # BaseVM's behaviour logs under one name

#: How long a retried SSH login first waits for the server's banner (seconds); each attempt
#: that got none waits RETRY_BANNER_STEP longer, up to RETRY_BANNER_MAX (a loaded host's
#: guest may be slow to answer; a guest that is down never answers).
RETRY_BANNER_TIMEOUT = 1.0
RETRY_BANNER_STEP = 0.5
RETRY_BANNER_MAX = 5.0


class VMCore(abc.ABC):
    """Base class for every hypervisor-specific VM.

    Public methods are consumed by tests; ``_protected`` ones by BaseVM and
    its subclasses.  ``params`` is a :class:`~virtlib.params.Params` (a plain
    dict is converted); it is parsed into ``self.spec`` at construction, so a
    bad value fails here.
    """

    #: Migration protocols this backend can do (the seed assumed tcp everywhere).
    MIGRATION_PROTOS: ClassVar[list[str]] = ["tcp"]
    #: The name the registry knows this backend by.
    BACKEND: ClassVar[str] = "base"
    #: avocado-vt's default timeouts (seconds); a subclass may change them for itself.
    LOGIN_TIMEOUT: ClassVar[float] = 10
    LOGIN_WAIT_TIMEOUT: ClassVar[float] = 240
    COPY_FILES_TIMEOUT: ClassVar[float] = 600
    MIGRATE_TIMEOUT: ClassVar[float] = 3600
    REBOOT_TIMEOUT: ClassVar[float] = 240

    def __init__(self, name: str, params: dict[str, str], root_dir: str | Path = ".") -> None:
        self.name = name
        self.params = params if isinstance(params, Params) else Params(params)
        self.root_dir = Path(root_dir)
        self.spec = VMSpec.from_params(name, self.params, self.root_dir)
        #: A ShellSession on the serial console once the VM runs (see serial_login()).
        self.serial_console: ShellSession | None = None
        #: What virtlib did to the VM (virtlib.history): operation, start, duration, outcome.
        self.history: list[Action] = []
        self._state: VMState | None = None
        self._workdir: Path | None = None
        self._login_retrying = False  # inside wait_for_login (see _login)
        self._banner_timeout = RETRY_BANNER_TIMEOUT
        self._serial_log: Path | None = None
        self._partition: Partition = current_partition()
        #: When the VM last started (create or restore): ``time.time()`` and
        #: ``time.monotonic()``; 0.0 before.  avocado-vt's attributes.
        self.start_time = 0.0
        self.start_monotonic_time = 0.0
        self._generate_unique_id()

    def _generate_unique_id(self) -> None:
        """A unique id for this VM object: a timestamp and random characters."""
        self.instance = time.strftime("%Y%m%d-%H%M%S-") + random_string(8)

    def _note_started(self) -> None:
        """Backends call this when the VM has started (start_time, start_monotonic_time)."""
        self.start_time = time.time()
        self.start_monotonic_time = time.monotonic()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        wrap_recorded(cls)

    def _record(self, action: Action) -> None:
        self.history.append(action)
        del self.history[:-MAX_ACTIONS]

    # --- identity: from the state once the VM exists -----------------------------------
    @property
    def state(self) -> VMState | None:
        """Who the running VM is and what it holds (None until created or adopted).  The
        backend replaces it whole; ``instance``, ``uuid``, ``uri`` and ``partition`` read it."""
        return self._state

    @state.setter
    def state(self, value: VMState | None) -> None:
        self._state = value
        if value is not None:
            note_live(self)

    @property
    def instance(self) -> str:
        """The VM's unique id (its reservations and files are named after it)."""
        return self.state.instance if self.state is not None else self._instance

    @instance.setter
    def instance(self, value: str) -> None:
        self._instance = value

    @property
    def uuid(self) -> str | None:
        """The UUID the running VM has (None before create)."""
        return self.state.uuid if self.state is not None else None

    @property
    def uri(self) -> str:
        """Where the VM runs (its state), else where it would be created (``connect_uri``)."""
        return self.state.uri if self.state is not None else self.spec.connect_uri

    @property
    def partition(self) -> Partition:
        """Whose reservation tables hold this VM's MACs and ports (see virtlib.reservations)."""
        return self.state.partition if self.state is not None else self._partition

    def mac_pool(self) -> MacPool:
        """The MAC pool (of this VM's partition)."""
        return MacPool(partition=self.partition)

    def port_pool(self) -> PortPool:
        """The forwarded-port pool (of this VM's partition)."""
        return PortPool(partition=self.partition)

    # --- files of this VM ------------------------------------------------------------
    @property
    def workdir(self) -> Path:
        """This VM's private directory (0700), made on first use, removed by destroy()."""
        if self._workdir is None or not self._workdir.exists():
            self._workdir = make_vm_dir(self.name, self.instance)
        return self._workdir

    def get_serial_console_filename(self) -> str:
        """Return the serial console log filename: in ``log_dir``, else in virtlib's
        private ``serial-logs`` directory (kept after destroy, the newest 200 logs)."""
        if self._serial_log is None:
            base = self.spec.log_dir or serial_log_dir()
            self._serial_log = base / f"serial-{self.name}-{self.instance}.log"
        return str(self._serial_log)

    def get_testlog_filename(self) -> str:
        """Return the testlog filename."""
        return str(self.workdir / f"testlog-{self.instance}")

    def known_hosts_file(self) -> Path:
        """The known_hosts file of this VM: the params' file, else one in the private dir."""
        if self.spec.login.known_hosts_file:
            return Path(self.spec.login.known_hosts_file)
        return self.workdir / "known_hosts"

    def guest_route(self, guest_port: int, nic_index: int = 0) -> tunnel.Route:
        """Where this machine reaches guest port ``guest_port`` of NIC ``nic_index``: the
        address and port, and the hypervisor host to go through when they are on that
        host's loopback (a forwarded port of a VM on a remote SSH URI; see
        :mod:`virtlib.sessions.tunnel`).

        :raises GuestRouteError: the VM's URI is remote and not over SSH.
        :raises VMAddressError: no address or forward for that NIC and port.
        """
        address = self.get_address(nic_index)
        port = self.get_port(guest_port, nic_index)
        return tunnel.route(self.uri, address, port, self.name)

    def get_params(self) -> Params:
        """Return the VM's params. Most modified params take effect only upon create()."""
        return self.params

    # --- Public API built from the primitives ------------------------------------------
    def verify_alive(self) -> None:
        """Make sure the VM is alive.

        :raises VMDeadError: if the VM is dead (backends add libvirt's reason).
        """
        if self.is_dead():
            raise VMDeadError

    def get_mac_address(self, nic_index: int = 0) -> str:
        """Return the MAC address of a NIC: ``nic_mac`` from params, else the reserved one.

        :raises VMMACAddressMissingError: no such NIC, or no address given or reserved.
        """
        nic = self.spec.nic(nic_index)
        mac = nic.mac if nic else ""
        if nic and not mac and self.state is not None:
            mac = self.state.allocations.mac(nic_index) or ""
        if nic and not mac:
            mac = self.mac_pool().lookup(self.instance, nic_index) or ""
        if not mac:
            raise VMMACAddressMissingError(nic_index)
        return mac

    def get_uuid(self) -> str | None:
        """The VM's UUID: the one it really has once created, else the one from params (or None)."""
        if self.uuid:
            return self.uuid
        return self.spec.uuid if self.spec.uuid and self.spec.uuid != "random" else None

    # --- Public API every backend implements -------------------------------------------
    @abc.abstractmethod
    def create(
        self,
        name: str | None = None,
        params: dict[str, str] | None = None,
        root_dir: str | Path | None = None,
        timeout: float = 120.0,
        migration_mode: str | None = None,
        mac_source: BaseVM | None = None,
    ) -> None:
        """Start the VM; name/params/root_dir replace the object's own when given.

        :raises VMCreateError: the hypervisor refused or failed to start it.
        :raises VMImageMissingError, VMHashMismatchError: bad CD images.
        :raises VMParamsError: bad params.
        """

    @abc.abstractmethod
    def is_alive(self) -> bool:
        """True if the VM runs (or is paused) and the management interface answers."""

    @abc.abstractmethod
    def is_dead(self) -> bool:
        """True if the VM is not running."""

    @abc.abstractmethod
    def get_address(self, index: int = 0) -> str:
        """The address to reach NIC ``index`` of the guest from the host.

        :raises VMMACAddressMissingError, VMIPAddressMissingError, VMAddressVerificationError
        """

    @abc.abstractmethod
    def get_port(self, port: int, nic_index: int = 0) -> int:
        """The host port that reaches guest ``port`` on NIC ``nic_index``.

        :raises VMPortNotRedirectedError: the port is not forwarded.
        """

    @abc.abstractmethod
    def clone(self, name: str | None = None, **params: Any) -> BaseVM:
        """A new, unstarted VM object like this one, with optionally changed params."""

    @abc.abstractmethod
    def destroy(self, gracefully: bool = True, free_mac_addresses: bool = True) -> None:
        """Stop the VM and remove everything it left (domain, files, reservations).

        :param gracefully: first try a shell shutdown command, then an ACPI shutdown.
        :param free_mac_addresses: free the MAC addresses reserved for the VM.
        """

    @abc.abstractmethod
    def migrate(
        self,
        timeout: float = 3600,
        protocol: str = "tcp",
        cancel_delay: float | None = None,
        offline: bool = False,
        stable_check: bool = False,
        clean: bool = True,
        save_path: str = "/tmp",  # noqa: S108 - the seed's default
        dest_host: str = "localhost",
        remote_port: int | None = None,
        progress: Callable[[MigrationProgress], None] | None = None,
        p2p: bool = False,
        tunnelled: bool = False,
    ) -> MigrationResult:
        """Migrate the VM; afterwards this object refers to the VM at its destination.

        ``progress`` (virtlib's addition) is called with each look at the running job.
        ``p2p`` and ``tunnelled`` (virsh's ``--p2p`` and ``--tunnelled``, virtlib's
        additions): the source host drives the migration itself, opening the
        destination URI from there; ``tunnelled`` (peer-to-peer too) sends the data
        inside that connection instead of QEMU to QEMU.

        :raises VMMigrateTimeoutError, VMMigrateCancelError, VMMigrateFailedError,
            VMMigrateProtoUnsupportedError, VMMigrateStateMismatchError
        """

    @abc.abstractmethod
    def reboot(
        self,
        session: ShellSession | None = None,
        method: str = "shell",
        nic_index: int = 0,
        timeout: float = 240,
        serial: bool = False,
    ) -> ShellSession:
        """Reboot and log in again; the session given (not the serial console) is closed.

        :param method: "shell" (``reboot_command`` in ``session``, else in a new
            login) or a hard reset: "system_reset" (the seed's and avocado-vt
            qemu's name) or "libvirt_reset" (avocado-vt libvirt's).
        :param serial: log in on the serial console (for the shell command and after).
        :raises VMRebootError: the guest did not go down and come back.
        """

    @abc.abstractmethod
    def send_key(self, keystr: str) -> None:
        """Send a key event (e.g. ``"ctrl-alt-delete"``)."""

    @abc.abstractmethod
    def save_to_file(self, path: str) -> None:
        """Save the VM's state to ``path`` and stop it."""

    @abc.abstractmethod
    def needs_restart(self, name: str, params: dict[str, str], basedir: str | Path) -> bool:
        """Whether a VM made from ``name``/``params`` would differ from this running one."""

    # --- Optional operations: a backend overrides what it can do ------------------------
    def restore_from_file(self, path: str) -> None:
        """Restore a VM saved by save_to_file(); it runs afterwards (as avocado-vt's libvirt VM).

        Tests written for avocado-vt's qemu VM (which restores paused) call resume()
        next: that is harmless, resume() leaves a running VM as it is.
        """
        raise VMNotSupportedError("restore_from_file", self.BACKEND)

    def pause(self) -> bool:
        """Pause the VM's CPUs (nothing to do when paused already); True.

        :raises VMError: the VM could not be paused (avocado-vt's libvirt VM
            returns False there; virtlib raises, so the reason is not lost).
        """
        raise VMNotSupportedError("pause", self.BACKEND)

    def resume(self, timeout: float | None = None) -> bool:
        """Let a paused VM run again; a running VM is left as it is (no error); True.

        :param timeout: avocado-vt qemu's wait for the running state; resuming
            is synchronous here, so it is accepted and unused.
        :raises VMError: the VM is not running or could not be resumed.
        """
        raise VMNotSupportedError("resume", self.BACKEND)

    def guest_agent(self) -> GuestAgent:
        """The VM's QEMU guest agent (see :mod:`virtlib.agent`).

        :raises VMNotSupportedError: the backend or the VM has no agent channel.
        """
        raise VMNotSupportedError("guest agent", self.BACKEND)

    def is_paused(self) -> bool:
        """True if the VM is paused (False when it is not running at all)."""
        raise VMNotSupportedError("is_paused", self.BACKEND)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} instance={self.instance}>"
