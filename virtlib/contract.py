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

import abc
import contextlib
import logging
import re
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import paramiko

from virtlib import sessions, transfer
from virtlib.crashscan import KernelCrash, find_crash
from virtlib.errors import (
    LoginAuthenticationError,
    LoginBannerTimeoutError,
    LoginError,
    VMDeadError,
    VMDeadKernelCrashError,
    VMError,
    VMMACAddressMissingError,
    VMNotSupportedError,
    VMParamsError,
    VMStatusError,
)
from virtlib.history import MAX_ACTIONS, Action, note_live, wrap_recorded
from virtlib.inventory import HostCheck, ManagedVM
from virtlib.keys import char_to_keystr
from virtlib.macpool import MacPool
from virtlib.migration import MigrationProgress, MigrationResult
from virtlib.params import Params
from virtlib.ports import PortPool
from virtlib.reservations import Partition, current_partition
from virtlib.sessions import tunnel
from virtlib.sessions.login import LOGIN_PROMPT
from virtlib.spec import VMSpec
from virtlib.state import VMState
from virtlib.textutil import random_string
from virtlib.waiting import retry, wait_for
from virtlib.workdir import make_vm_dir, serial_log_dir

if TYPE_CHECKING:
    from virtlib.agent import GuestAgent
    from virtlib.sessions.shell import ShellSession

log = logging.getLogger(__name__)

#: A kernel message on a console (a printk timestamp first).
KERNEL_LINE = re.compile(r"^\s*(<\d>)?\[\s*\d+\.\d+\]")

#: How long a retried SSH login first waits for the server's banner (seconds); each attempt
#: that got none waits RETRY_BANNER_STEP longer, up to RETRY_BANNER_MAX (a loaded host's
#: guest may be slow to answer; a guest that is down never answers).
RETRY_BANNER_TIMEOUT = 1.0
RETRY_BANNER_STEP = 0.5
RETRY_BANNER_MAX = 5.0

#: What ``restart_network`` runs in the guest (on the serial console): the first DHCP client
#: found renews every NIC's lease (dhclient, dhcpcd, then busybox's udhcpc).
RESTART_NETWORK_COMMAND = (
    "if command -v dhclient >/dev/null 2>&1; then dhclient -r; dhclient; "
    "elif command -v dhcpcd >/dev/null 2>&1; then dhcpcd -k; dhcpcd; "
    'else for dev in /sys/class/net/*; do name=${dev##*/}; [ "$name" = lo ] || '
    'udhcpc -n -q -t 3 -T 1 -i "$name"; done; fi'
)


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

    def login(
        self,
        nic_index: int = 0,
        timeout: float = 10,
        username: str | None = None,
        password: str | None = None,
    ) -> ShellSession:
        """Log into the guest over SSH, telnet or nc (``shell_client``).

        :param nic_index: the NIC whose address to connect to.
        :param timeout: seconds to wait for each prompt.
        :param username, password: instead of the params' ``username``/``password``.
        :return: a ShellSession at the shell prompt.
        :raises LoginError: (and subclasses) when login fails.
        :raises VMAddressError: when the guest has no reachable address.
        """
        return self._login(nic_index, timeout, username, password, self._login_retrying)

    def _login(
        self,
        nic_index: int,
        timeout: float,
        username: str | None,
        password: str | None,
        retrying: bool = False,
    ) -> ShellSession:
        """login(); a ``retrying`` attempt (inside wait_for_login) waits only
        RETRY_BANNER_TIMEOUT for the SSH banner (a forward accepts while the guest is
        down) and logs quietly."""
        login = self.spec.login
        where = self.guest_route(login.shell_port, nic_index)
        log.debug("logging into %r at %s with %s", self.name, where, login.shell_client)
        session = sessions.remote_login(
            client=login.shell_client,
            host=where.host,
            port=where.port,
            username=username or login.username,
            password=password or login.password,
            prompt=login.shell_prompt,
            linesep=login.linesep,
            timeout=timeout,
            known_hosts=self.known_hosts_file(),
            host_key_policy=login.host_key_policy,
            log_file=self.workdir / f"session-{self.name}-{random_string(4)}.log",
            banner_timeout=self._banner_timeout if retrying else None,
            quiet=retrying,
            via=where.via,
        )
        session.set_status_test_command(login.status_test_command)
        return session

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

    def ssh_client(self, nic_index: int = 0, timeout: float = 10) -> paramiko.SSHClient:
        """An authenticated paramiko SSHClient to the guest (for tools that run commands or
        shells themselves: ``virtlib exec``, ``virtlib ssh``), through the hypervisor host
        when needed.  Close it when done.

        :raises LoginError, VMAddressError: as login().
        """
        login = self.spec.login
        where = self.guest_route(login.shell_port, nic_index)
        sock = where.open(timeout)
        try:
            return sessions.ssh.connect(
                where.host,
                where.port,
                login.username,
                login.password,
                timeout,
                self.known_hosts_file(),
                login.host_key_policy,
                sock=sock,
            )
        except BaseException:
            if sock is not None:
                sock.close()
            raise

    def remote_login(
        self,
        nic_index: int = 0,
        timeout: float = 10,
        username: str | None = None,
        password: str | None = None,
    ) -> ShellSession:
        """Alias for login() for backward compatibility."""
        return self.login(nic_index, timeout, username, password)

    def wait_for_login(
        self,
        nic_index: int = 0,
        timeout: float = 240,
        internal_timeout: float = 10,
        serial: bool = False,
        restart_network: bool = False,
        username: str | None = None,
        password: str | None = None,
        status_check: bool = True,
    ) -> ShellSession:
        """Try to log in over the network until ``timeout``; at the deadline the last error.

        :param internal_timeout: the timeout of each login() attempt.
        :param serial: when the network login fails (also when the password is
            refused), log in on the serial console instead and return that session.
        :param restart_network: when the network login fails, log in on the serial
            console, renew the guest's DHCP leases (RESTART_NETWORK_COMMAND) and try
            the network once more (until ``timeout`` again).
        :param username, password: instead of the params' ones.
        :param status_check: stop early with VMDeadError when the VM dies
            meanwhile (False while its state is unreliable, e.g. rebooting).
        :raises LoginError, VMError: the last error, when every way failed.
        """
        log.debug("waiting for login to %r (timeout %gs)", self.name, timeout)
        if serial and not self.spec.nics:  # nothing to try over the network
            return self.wait_for_serial_login(
                timeout, internal_timeout, False, username, password, status_check=status_check
            )

        def attempt() -> ShellSession:
            return self._retry_login(
                nic_index, timeout, internal_timeout, username, password, status_check
            )

        try:
            return attempt()
        except VMDeadError:
            raise
        except (LoginError, VMError) as exc:
            if not (serial or restart_network):
                raise
            log.debug("%s: network login failed (%s); trying the serial console", self.name, exc)
        console = self.wait_for_serial_login(
            timeout, internal_timeout, restart_network, username, password,
            status_check=status_check,
        )  # fmt: skip
        if not restart_network:
            return console
        try:
            return attempt()
        except VMDeadError:
            raise
        except (LoginError, VMError):
            if not serial:
                raise
        return console

    def _retry_login(
        self,
        nic_index: int,
        timeout: float,
        internal_timeout: float,
        username: str | None,
        password: str | None,
        status_check: bool,
    ) -> ShellSession:
        self._login_retrying = True
        self._banner_timeout = min(RETRY_BANNER_TIMEOUT, internal_timeout)

        def retried(exc: BaseException) -> None:
            log.debug("login to %r: %s", self.name, exc)
            if isinstance(exc, LoginBannerTimeoutError):  # the guest may just be slow: wait longer
                grown = self._banner_timeout + RETRY_BANNER_STEP
                self._banner_timeout = min(grown, RETRY_BANNER_MAX, internal_timeout)

        try:
            return retry(
                lambda: self.login(nic_index, internal_timeout, username, password),
                timeout,
                retry_on=(LoginError, VMError),
                fatal=(LoginAuthenticationError, tunnel.GuestRouteError, VMParamsError),
                give_up=self.verify_alive if status_check else None,
                on_error=retried,
                initial=0.05,
                maximum=0.25,  # each attempt already waits up to RETRY_BANNER_TIMEOUT
            )
        finally:
            self._login_retrying = False

    def copy_files_to(
        self,
        host_path: str,
        guest_path: str,
        nic_index: int = 0,
        limit: str | bool = "",
        verbose: bool | float = False,
        timeout: float = 600,
        username: str | None = None,
        password: str | None = None,
        filesize: float | None = None,
    ) -> None:
        """Copy files or directories from the host to the guest (SFTP).

        :param limit: avocado-vt's speed limit (scp's ``-l``, Kbit/s): checked, but
            SFTP transfers are not throttled (a warning says so).
        :param verbose: log progress (bytes, rate) at INFO, each file at DEBUG.
        :param timeout: seconds the transfer may stall.
        :param username, password: instead of the params' ones.
        :param filesize: the size in MB, to log the throughput (avocado-vt's).
        :raises TransferError: a path is wrong or the transfer failed.
        :raises LoginError: the guest cannot be reached.
        :raises VMParamsError: ``limit`` is not a number of Kbit/s.
        """
        verbose, timeout = self._transfer_options("copy_files_to", limit, verbose, timeout)
        target = self._transfer_target(nic_index, timeout, username, password)
        with self._timed_transfer(f"{host_path} -> {self.name}:{guest_path}", filesize):
            transfer.copy_files_to(target, host_path, guest_path, verbose=verbose)

    def copy_files_from(
        self,
        guest_path: str,
        host_path: str,
        nic_index: int = 0,
        limit: str | bool = "",
        verbose: bool | float = False,
        timeout: float = 600,
        username: str | None = None,
        password: str | None = None,
        filesize: float | None = None,
    ) -> None:
        """Copy files or directories from the guest to the host (SFTP).

        The parameters are copy_files_to()'s.

        :raises TransferError: a path is wrong or the transfer failed.
        :raises LoginError: the guest cannot be reached.
        :raises VMParamsError: ``limit`` is not a number of Kbit/s.
        """
        verbose, timeout = self._transfer_options("copy_files_from", limit, verbose, timeout)
        target = self._transfer_target(nic_index, timeout, username, password)
        with self._timed_transfer(f"{self.name}:{guest_path} -> {host_path}", filesize):
            transfer.copy_files_from(target, guest_path, host_path, verbose=verbose)

    def _transfer_options(
        self, operation: str, limit: str | bool, verbose: bool | float, timeout: float
    ) -> tuple[bool, float]:
        """(verbose, timeout), reading the seed's positional order when ``limit`` is a bool."""
        if isinstance(limit, bool):  # the seed's copy_files_to(h, g, nic_index, verbose, timeout)
            if not isinstance(verbose, bool):
                timeout = float(verbose)
            return limit, timeout
        text = str(limit).strip()
        if text and not (text.isdigit() and int(text) > 0):
            raise VMParamsError(
                f"VM {self.name!r}: {operation}: limit must be a speed in Kbit/s, not {limit!r}"
            )
        if text:
            log.warning("%s: %s: SFTP transfers are not throttled (limit=%s)", self.name,
                        operation, text)  # fmt: skip
        return bool(verbose), timeout

    @contextlib.contextmanager
    def _timed_transfer(self, what: str, filesize: float | None) -> Iterator[None]:
        """Log the time a transfer took and, with ``filesize`` (MB), its throughput."""
        start = time.monotonic()
        yield
        elapsed = max(time.monotonic() - start, 1e-6)
        if filesize is not None:
            log.info("copied %s, estimated throughput: %.2f MB/s", what, filesize / elapsed)
        else:
            log.info("copied %s, elapsed time: %.2f s", what, elapsed)

    def _transfer_target(
        self,
        nic_index: int,
        timeout: float,
        username: str | None = None,
        password: str | None = None,
    ) -> transfer.Target:
        login = self.spec.login
        where = self.guest_route(login.file_transfer_port, nic_index)
        return transfer.Target(
            host=where.host,
            port=where.port,
            via=where.via,
            username=username or login.username,
            password=password or login.password,
            known_hosts=self.known_hosts_file(),
            host_key_policy=login.host_key_policy,
            timeout=timeout,
            vm=self.name,
        )

    def known_hosts_file(self) -> Path:
        """The known_hosts file of this VM: the params' file, else one in the private dir."""
        if self.spec.login.known_hosts_file:
            return Path(self.spec.login.known_hosts_file)
        return self.workdir / "known_hosts"

    def serial_login(
        self,
        timeout: float = 10,
        username: str | None = None,
        password: str | None = None,
        virtio: bool = False,
    ) -> ShellSession:
        """Log into the guest via the serial console.

        The session is the VM's one console (``serial_console``): closing it
        detaches nothing, but the VM's owner keeps using it, so tests leave it open.

        :param timeout: seconds to wait for each prompt.
        :param username, password: instead of the params' ones.
        :param virtio: a virtio console (deprecated in avocado-vt): not supported.
        :return: the serial console's ShellSession, at the shell prompt.
        :raises LoginError: when no prompt comes or the guest refuses the login.
        :raises VMNotSupportedError: ``virtio``.
        """
        if virtio:
            raise VMNotSupportedError("serial login on a virtio console", self.BACKEND)
        console = self._require_serial_console()
        login = self.spec.login
        console.set_linesep(login.linesep)
        console.set_status_test_command(login.status_test_command)
        sessions.console_login(
            console,
            username or login.username,
            password or login.password,
            login.shell_prompt,
            timeout,
        )
        return console

    def serial_logout(self, timeout: float = 10) -> bool:
        """Log out of the serial console (``exit``) and wait for the login prompt, so no
        shell is left logged in for whoever attaches next; True when the prompt came."""
        console = self.serial_console
        if console is None:
            return False
        try:
            console.sendline("exit")
            console.read_until_last_line_matches([LOGIN_PROMPT], timeout)
        except (VMError, OSError) as exc:
            log.debug("%s: serial logout: %s", self.name, exc)
            return False
        return True

    def wait_for_serial_login(
        self,
        timeout: float = 240,
        internal_timeout: float = 10,
        restart_network: bool = False,
        username: str | None = None,
        password: str | None = None,
        virtio: bool = False,
        status_check: bool = True,
        recreate_serial_console: bool = False,
    ) -> ShellSession:
        """Try serial_login() until ``timeout``; at the deadline the last error is raised.

        :param restart_network: then renew the guest's DHCP leases
            (RESTART_NETWORK_COMMAND), for a network login to follow.
        :param status_check: stop early with VMDeadError when the VM dies meanwhile.
        :param recreate_serial_console: accepted; virtlib's console follows the VM
            through reboot, restore and migration by itself, so there is nothing to redo.
        """
        log.debug("waiting for serial login to %r (timeout %gs)", self.name, timeout)
        console = retry(
            lambda: self.serial_login(internal_timeout, username, password, virtio),
            timeout,
            retry_on=(LoginError,),
            fatal=(LoginAuthenticationError, VMNotSupportedError),
            give_up=self.verify_alive if status_check else None,
            on_error=lambda exc: log.debug("serial login to %r: %s", self.name, exc),
        )
        if restart_network:
            log.debug("%s: restarting the guest's network", self.name)
            console.cmd_output_safe(RESTART_NETWORK_COMMAND, timeout=max(timeout, 60))
        return console

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

    def get_cpu_count(self, check_cmd: str | None = None, connect_uri: str | None = None) -> int:
        """The number of CPUs the guest sees: the first number ``check_cmd`` prints.

        :param check_cmd: as in avocado-vt, the name of the param holding the
            command (default ``cpu_chk_cmd``); a string that is no param's name
            is run as the command itself.
        :param connect_uri: avocado-vt's; only this VM's own URI is accepted.
        :raises VMError: the output has no number (VMStatusError), or login failed.
        """
        self._check_connect_uri("get_cpu_count", connect_uri)
        if check_cmd is None or check_cmd == "cpu_chk_cmd":
            command = self.spec.cpu_chk_cmd
        else:
            command = self.params.get(check_cmd) or check_cmd
        with self._guest_session() as session:
            output = session.cmd_output_safe(command)
        match = re.search(r"\d+", output)
        if match is None:
            raise VMStatusError(f"VM {self.name!r}: no CPU count in the output of {command!r}")
        return int(match.group())

    def get_distro(self, connect_uri: str | None = None) -> str:
        """The guest's distribution: ``ID`` in /etc/os-release (``""`` when it has none).

        :param connect_uri: avocado-vt's; only this VM's own URI is accepted.
        """
        self._check_connect_uri("get_distro", connect_uri)
        with self._guest_session() as session:
            status, output = session.cmd_status_output("grep '^ID=' /etc/os-release", timeout=300)
        if status != 0 or "=" not in output:
            log.debug("%s: no distribution name: %s", self.name, output.strip())
            return ""
        return output.split("=", 1)[1].strip().strip("\"'")

    def _check_connect_uri(self, operation: str, connect_uri: str | None) -> None:
        if connect_uri and connect_uri != self.spec.connect_uri:
            raise VMNotSupportedError(
                f"{operation} through another connect_uri ({connect_uri})", self.BACKEND
            )

    @contextlib.contextmanager
    def _guest_session(self) -> Iterator[ShellSession]:
        """A shell for one query (avocado-vt's session_handler): the network, else the console.

        A network session is closed afterwards; the serial console stays open.
        """
        session = self.wait_for_login(serial=True)
        try:
            yield session
        finally:
            if session is not self.serial_console:
                session.close()

    def get_memory_size(self, cmd: str | None = None, timeout: float = 60) -> int:
        """The guest's memory in MiB, from ``cmd`` (default ``mem_chk_cmd``).

        Numbers in the output are summed; GB output is scaled up, kB scaled down.
        ``timeout`` is the command's.
        """
        session = self.login()
        try:
            return parse_memory_size(session.cmd(cmd or self.spec.mem_chk_cmd, timeout))
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

    def is_paused(self) -> bool:
        """True if the VM is paused (False when it is not running at all)."""
        raise VMNotSupportedError("is_paused", self.BACKEND)

    # --- avocado-vt's state helpers, built on the primitives ------------------------------
    def wait_for_shutdown(self, timeout: float = 60, count: float | None = None) -> bool:
        """Wait until the VM has stopped (the guest shut itself down); False at ``timeout``.

        ``count`` is avocado-vt libvirt's name for ``timeout`` (seconds); qemu's is
        ``timeout``.  Both are accepted; positionally it is the first.
        """
        wait = timeout if count is None else count
        stopped = wait_for(self.is_dead, wait, maximum=0.25)
        log.debug("%s: %s within %g s", self.name, "shut down" if stopped else "still up", wait)
        return bool(stopped)

    def status(self) -> str:
        """The VM's state in avocado-vt's words: "running", "paused" or "shut off"."""
        if self.is_dead():
            return "shut off"
        return "paused" if self.is_paused() else "running"

    def verify_status(self, status: str) -> None:
        """Make sure the VM's state is ``status`` ("running", "paused", "shut off").

        :raises VMStatusError: it is in another state.
        """
        current = self.status()
        if current != status:
            raise VMStatusError(
                f'VM {self.name!r}: unexpected VM status: "{current}" (expected "{status}")'
            )

    def definition(self) -> str:
        """The hypervisor's definition of the VM (libvirt: the domain XML it runs with)."""
        raise VMNotSupportedError("definition", self.BACKEND)

    def hypervisor_log(self, max_bytes: int = 1 << 20) -> str:
        """The end (at most ``max_bytes``) of the hypervisor's own log of this VM (QEMU's)."""
        raise VMNotSupportedError("hypervisor log", self.BACKEND)

    def memory_dump(self, path: str | Path, max_bytes: int) -> Path:
        """Dump the guest's memory, compressed, to ``path``; a dump over ``max_bytes`` is
        removed again and reported (VMError).  The VM keeps running."""
        raise VMNotSupportedError("memory dump", self.BACKEND)

    def dmesg(self, timeout: float = 20) -> str:
        """The guest kernel's log: through the guest agent, else a logged-in serial console,
        else the kernel lines of the serial log."""
        try:
            result = self.guest_agent().exec(["dmesg"], timeout=timeout)
            if result.ok:
                return result.stdout
        except VMError as exc:
            log.debug("%s: dmesg through the agent: %s", self.name, exc)
        console = self.serial_console
        if console is not None and self.is_alive():
            try:
                console.sendline("")
                console.read_up_to_prompt(timeout=2)
                return console.cmd_output("dmesg", timeout=timeout)
            except VMError as exc:
                log.debug("%s: dmesg on the serial console: %s", self.name, exc)
        output = console.get_output() if console is not None else ""
        return "\n".join(line for line in output.splitlines() if KERNEL_LINE.match(line))

    def screenshot(self, path: str | Path) -> Path:
        """Write a picture of the VM's display to ``path`` as PNG; returns the path.

        :raises VMNotSupportedError: the backend, or a VM without a display, cannot.
        """
        raise VMNotSupportedError("screenshot", self.BACKEND)

    def guest_agent(self) -> GuestAgent:
        """The VM's QEMU guest agent (see :mod:`virtlib.agent`).

        :raises VMNotSupportedError: the backend or the VM has no agent channel.
        """
        raise VMNotSupportedError("guest agent", self.BACKEND)

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


wrap_recorded(BaseVM)


def parse_memory_size(text: str) -> int:
    """The seed's memory parsing: sum the numbers; GB x1024, MB as is, else kB / 1024."""
    size = sum(int(number) for number in re.findall(r"[0-9]+", text))
    if "GB" in text:
        size *= 1024
    elif "MB" not in text:
        size //= 1024
    return size
