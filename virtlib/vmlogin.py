"""Logging into a VM's guest, written once for every backend: network logins with retries,
the serial console, logout; mixed into :class:`~virtlib.contract.BaseVM`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import paramiko

from virtlib import sessions
from virtlib.errors import (
    LoginAuthenticationError,
    LoginBannerTimeoutError,
    LoginError,
    VMDeadError,
    VMError,
    VMNotSupportedError,
    VMParamsError,
)
from virtlib.sessions import tunnel
from virtlib.sessions.login import LOGIN_PROMPT
from virtlib.textutil import random_string
from virtlib.waiting import retry

if TYPE_CHECKING:
    from virtlib.sessions.shell import ShellSession

from virtlib.vmcore import RETRY_BANNER_MAX, RETRY_BANNER_STEP, RETRY_BANNER_TIMEOUT, VMCore

log = logging.getLogger("virtlib.contract")  # BaseVM's behaviour logs under one name


#: What ``restart_network`` runs in the guest (on the serial console): the first DHCP client
#: found renews every NIC's lease (dhclient, dhcpcd, then busybox's udhcpc).
RESTART_NETWORK_COMMAND = (
    "if command -v dhclient >/dev/null 2>&1; then dhclient -r; dhclient; "
    "elif command -v dhcpcd >/dev/null 2>&1; then dhcpcd -k; dhcpcd; "
    'else for dev in /sys/class/net/*; do name=${dev##*/}; [ "$name" = lo ] || '
    'udhcpc -n -q -t 3 -T 1 -i "$name"; done; fi'
)


class LoginOperations(VMCore):
    """BaseVM's logins (see the module docstring)."""

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
