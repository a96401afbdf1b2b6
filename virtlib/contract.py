"""The BaseVM contract: autotest's ``virt_vm.BaseVM``, kept name for name.

A backend subclasses :class:`BaseVM` and implements its abstract primitives
(an incomplete backend fails at construction).  Behaviour built from the
primitives (login and its retries, serial login, file copies, memory and CPU
queries, kernel-crash detection, MAC addresses) is written once here.

Differences from the seed, on purpose: no ``eval`` of ``shell_linesep`` (a safe
unescape), no predictable ``/tmp`` files (a private 0700 directory per VM),
no shell strings, and retries with short back-off up to a deadline instead of
fixed two-second sleeps.
"""

from __future__ import annotations

import abc
import logging
import re
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from virtlib import sessions, transfer
from virtlib.crashscan import KernelCrash, find_crash
from virtlib.errors import (
    LoginAuthenticationError,
    LoginError,
    VMDeadError,
    VMDeadKernelCrashError,
    VMError,
    VMMACAddressMissingError,
    VMNotSupportedError,
)
from virtlib.inventory import HostCheck, ManagedVM
from virtlib.keys import char_to_keystr
from virtlib.macpool import MacPool
from virtlib.migration import MigrationProgress, MigrationResult
from virtlib.params import Params
from virtlib.ports import PortPool
from virtlib.reservations import Partition, current_partition
from virtlib.spec import VMSpec
from virtlib.state import VMState
from virtlib.textutil import random_string
from virtlib.waiting import retry
from virtlib.workdir import make_vm_dir

if TYPE_CHECKING:
    from virtlib.sessions.shell import ShellSession

log = logging.getLogger(__name__)


class BaseVM(abc.ABC):
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

    def __init__(self, name: str, params: dict[str, str], root_dir: str | Path = ".") -> None:
        self.name = name
        self.params = params if isinstance(params, Params) else Params(params)
        self.root_dir = Path(root_dir)
        self.spec = VMSpec.from_params(name, self.params, self.root_dir)
        #: A ShellSession on the serial console once the VM runs (see serial_login()).
        self.serial_console: ShellSession | None = None
        #: Who the running VM is and what it holds (None until created or adopted).  The
        #: backend replaces it whole; ``instance``, ``uuid``, ``uri`` and ``partition`` read it.
        self.state: VMState | None = None
        self._workdir: Path | None = None
        self._partition: Partition = current_partition()
        self._generate_unique_id()

    def _generate_unique_id(self) -> None:
        """A unique id for this VM object: a timestamp and random characters."""
        self.instance = time.strftime("%Y%m%d-%H%M%S-") + random_string(8)

    # --- identity: from the state once the VM exists -----------------------------------
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
        """Return the serial console log filename (in the VM's private directory)."""
        base = self.spec.log_dir or self.workdir
        return str(base / f"serial-{self.name}-{self.instance}.log")

    def get_testlog_filename(self) -> str:
        """Return the testlog filename."""
        return str(self.workdir / f"testlog-{self.instance}")

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

    def verify_kernel_crash(self) -> None:
        """Find a kernel crash message on the VM's serial console.

        Oopses, ``BUG:`` reports, ``Kernel panic - not syncing`` and general protection
        faults, with their call traces up to the ``---[ end ... ]---`` trailer (see
        :mod:`virtlib.crashscan`).

        :raises VMDeadKernelCrashError: a kernel crash report was found (the excerpt).
        """
        crash = self.kernel_crash()
        if crash is not None:
            raise VMDeadKernelCrashError(crash.text)

    def kernel_crash(self) -> KernelCrash | None:
        """The first kernel crash report on the serial console so far (None without one)."""
        if self.serial_console is None:
            return None
        return find_crash(self.serial_console.get_output())

    def login(self, nic_index: int = 0, timeout: float = 10) -> ShellSession:
        """Log into the guest over SSH, telnet or nc (``shell_client``).

        :param nic_index: the NIC whose address to connect to.
        :param timeout: seconds to wait for each prompt.
        :return: a ShellSession at the shell prompt.
        :raises LoginError: (and subclasses) when login fails.
        :raises VMAddressError: when the guest has no reachable address.
        """
        login = self.spec.login
        address = self.get_address(nic_index)
        port = self.get_port(login.shell_port, nic_index)
        log.debug("logging into %r at %s:%s with %s", self.name, address, port, login.shell_client)
        session = sessions.remote_login(
            client=login.shell_client,
            host=address,
            port=port,
            username=login.username,
            password=login.password,
            prompt=login.shell_prompt,
            linesep=login.linesep,
            timeout=timeout,
            known_hosts=self.known_hosts_file(),
            host_key_policy=login.host_key_policy,
            log_file=self.workdir / f"session-{self.name}-{random_string(4)}.log",
        )
        session.set_status_test_command(login.status_test_command)
        return session

    def remote_login(self, nic_index: int = 0, timeout: float = 10) -> ShellSession:
        """Alias for login() for backward compatibility."""
        return self.login(nic_index, timeout)

    def wait_for_login(
        self, nic_index: int = 0, timeout: float = 240, internal_timeout: float = 10
    ) -> ShellSession:
        """Try to log in until ``timeout``; at the deadline the last error is raised.

        Stops early with VMDeadError when the VM dies meanwhile.
        """
        log.debug("waiting for login to %r (timeout %gs)", self.name, timeout)
        return retry(
            lambda: self.login(nic_index, internal_timeout),
            timeout,
            retry_on=(LoginError, VMError),
            fatal=(LoginAuthenticationError,),
            give_up=self.verify_alive,
            on_error=lambda exc: log.debug("login to %r: %s", self.name, exc),
        )

    def copy_files_to(
        self,
        host_path: str,
        guest_path: str,
        nic_index: int = 0,
        verbose: bool = False,
        timeout: float = 600,
    ) -> None:
        """Copy files or directories from the host to the guest (SFTP).

        :raises TransferError: a path is wrong or the transfer failed.
        :raises LoginError: the guest cannot be reached.
        """
        transfer.copy_files_to(
            self._transfer_target(nic_index, timeout), host_path, guest_path, verbose=verbose
        )

    def copy_files_from(
        self,
        guest_path: str,
        host_path: str,
        nic_index: int = 0,
        verbose: bool = False,
        timeout: float = 600,
    ) -> None:
        """Copy files or directories from the guest to the host (SFTP).

        :raises TransferError: a path is wrong or the transfer failed.
        :raises LoginError: the guest cannot be reached.
        """
        transfer.copy_files_from(
            self._transfer_target(nic_index, timeout), guest_path, host_path, verbose=verbose
        )

    def _transfer_target(self, nic_index: int, timeout: float) -> transfer.Target:
        login = self.spec.login
        return transfer.Target(
            host=self.get_address(nic_index),
            port=self.get_port(login.file_transfer_port, nic_index),
            username=login.username,
            password=login.password,
            known_hosts=self.known_hosts_file(),
            host_key_policy=login.host_key_policy,
            timeout=timeout,
        )

    def known_hosts_file(self) -> Path:
        """The known_hosts file of this VM: the params' file, else one in the private dir."""
        if self.spec.login.known_hosts_file:
            return Path(self.spec.login.known_hosts_file)
        return self.workdir / "known_hosts"

    def serial_login(self, timeout: float = 10) -> ShellSession:
        """Log into the guest via the serial console.

        :param timeout: seconds to wait for each prompt.
        :return: the serial console's ShellSession, at the shell prompt.
        :raises LoginError: when no prompt comes or the guest refuses the login.
        """
        console = self._require_serial_console()
        login = self.spec.login
        console.set_linesep(login.linesep)
        console.set_status_test_command(login.status_test_command)
        sessions.console_login(console, login.username, login.password, login.shell_prompt, timeout)
        return console

    def wait_for_serial_login(
        self, timeout: float = 240, internal_timeout: float = 10
    ) -> ShellSession:
        """Try serial_login() until ``timeout``; at the deadline the last error is raised."""
        log.debug("waiting for serial login to %r (timeout %gs)", self.name, timeout)
        return retry(
            lambda: self.serial_login(internal_timeout),
            timeout,
            retry_on=(LoginError,),
            fatal=(LoginAuthenticationError,),
            give_up=self.verify_alive,
            on_error=lambda exc: log.debug("serial login to %r: %s", self.name, exc),
        )

    def _require_serial_console(self) -> ShellSession:
        if self.serial_console is None:
            if self.is_alive():
                raise VMNotSupportedError("serial login", self.BACKEND, "the VM has no console")
            raise VMDeadError("no serial console", f"VM {self.name!r} is not running")
        return self.serial_console

    def get_uuid(self) -> str | None:
        """The VM's UUID: the one it really has once created, else the one from params (or None)."""
        if self.uuid:
            return self.uuid
        return self.spec.uuid if self.spec.uuid and self.spec.uuid != "random" else None

    def send_string(self, str: str) -> None:
        """Type a string on the VM's keyboard (letters, digits, spaces and US punctuation)."""
        for char in str:
            self.send_key(char_to_keystr(char))

    def get_cpu_count(self) -> int:
        """The number of CPUs the guest sees (``cpu_chk_cmd``)."""
        session = self.login()
        try:
            return int(session.cmd(self.spec.cpu_chk_cmd).strip())
        finally:
            session.close()

    def get_memory_size(self, cmd: str | None = None) -> int:
        """The guest's memory in MiB, from ``cmd`` (default ``mem_chk_cmd``).

        Numbers in the output are summed; GB output is scaled up, kB scaled down.
        """
        session = self.login()
        try:
            return parse_memory_size(session.cmd(cmd or self.spec.mem_chk_cmd))
        finally:
            session.close()

    def get_current_memory_size(self) -> int:
        """Current memory size of the guest (``mem_chk_cur_cmd``), rather than boot-up memory."""
        return self.get_memory_size(self.spec.mem_chk_cur_cmd)

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
    ) -> MigrationResult:
        """Migrate the VM; afterwards this object refers to the VM at its destination.

        ``progress`` (virtlib's addition) is called with each look at the running job.

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
    ) -> ShellSession:
        """Reboot ("shell" command or "system_reset") and log in again.

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
        """Restore a VM saved by save_to_file()."""
        raise VMNotSupportedError("restore_from_file", self.BACKEND)

    def pause(self) -> None:
        """Pause the VM's CPUs."""
        raise VMNotSupportedError("pause", self.BACKEND)

    def resume(self) -> None:
        """Resume a paused VM."""
        raise VMNotSupportedError("resume", self.BACKEND)

    def is_paused(self) -> bool:
        """True if the VM is paused."""
        raise VMNotSupportedError("is_paused", self.BACKEND)

    # --- Operations for tools (the CLI, the pytest plugin): optional, backend-neutral ---------
    @classmethod
    def adopt(
        cls,
        name: str,
        params: dict[str, str],
        root_dir: str | Path = ".",
        attach_console: bool = False,
    ) -> BaseVM:
        """A VM object for a VM this backend started earlier, in another process.

        ``params`` add what the hypervisor does not keep (secrets such as the
        password) and say where to look (``connect_uri``).  The console is attached
        only when asked (attaching may take it over from another client).

        :raises VMNotFoundError: no such VM.
        :raises VMError: the VM was not made by virtlib.
        """
        raise VMNotSupportedError("adopt", cls.BACKEND)

    def release(self) -> None:
        """Forget the VM in this process (console, private files); it keeps running."""
        raise VMNotSupportedError("release", self.BACKEND)

    def info(self) -> dict[str, Any]:
        """What the VM is and holds: name, uri, uuid, state, vcpus, memory_mib, accel,
        macs, forwards, instance."""
        raise VMNotSupportedError("info", self.BACKEND)

    @classmethod
    def probe(cls, uri: str) -> str | None:
        """None when the hypervisor at ``uri`` answers, else why it does not."""
        raise VMNotSupportedError("probe", cls.BACKEND)

    @classmethod
    def managed_vms(cls, uri: str) -> list[ManagedVM]:
        """The VMs virtlib manages on ``uri`` (made by any process).

        :raises HypervisorConnectionError: ``uri`` does not answer.
        """
        raise VMNotSupportedError("managed_vms", cls.BACKEND)

    @classmethod
    def remove_vms(cls, uri: str, names: Collection[str], uuids: Collection[str]) -> list[str]:
        """Stop and remove the VMs on ``uri`` with one of ``names`` or ``uuids`` (leftovers of a
        crashed run); returns a line for each VM found.  A host that does not answer has none."""
        raise VMNotSupportedError("remove_vms", cls.BACKEND)

    @classmethod
    def host_checks(cls, uri: str) -> list[HostCheck]:
        """What this backend needs from the host at ``uri``, checked (``virtlib host check``)."""
        raise VMNotSupportedError("host_checks", cls.BACKEND)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} instance={self.instance}>"


def parse_memory_size(text: str) -> int:
    """The seed's memory parsing: sum the numbers; GB x1024, MB as is, else kB / 1024."""
    size = sum(int(number) for number in re.findall(r"[0-9]+", text))
    if "GB" in text:
        size *= 1024
    elif "MB" not in text:
        size //= 1024
    return size
