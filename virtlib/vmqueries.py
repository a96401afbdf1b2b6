"""What a VM's guest says about itself, written once for every backend: kernel crashes,
CPUs, memory, distribution, dmesg, and avocado-vt's state helpers; mixed into
:class:`~virtlib.contract.BaseVM`."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from virtlib.crashscan import KernelCrash, find_crash
from virtlib.errors import (
    VMDeadKernelCrashError,
    VMError,
    VMNotSupportedError,
    VMStatusError,
)
from virtlib.keys import char_to_keystr
from virtlib.waiting import wait_for

if TYPE_CHECKING:
    from virtlib.sessions.shell import ShellSession

from virtlib.vmlogin import LoginOperations

log = logging.getLogger("virtlib.contract")  # BaseVM's behaviour logs under one name

#: A kernel message on a console (a printk timestamp first).
KERNEL_LINE = re.compile(r"^\s*(<\d>)?\[\s*\d+\.\d+\]")


class GuestQueries(LoginOperations):
    """BaseVM's guest queries (see the module docstring)."""

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

    #: Where the kernel-crash scan starts in the output of which console (a revert to a
    #: snapshot leaves the crashes before it behind; a new console starts at 0).
    _crash_scan_start: tuple[object, int] = (None, 0)

    def kernel_crash(self) -> KernelCrash | None:
        """The first kernel crash report on the serial console so far (since the last
        snapshot revert; None without one)."""
        console = self.serial_console
        if console is None:
            return None
        scanned, start = self._crash_scan_start
        return find_crash(console.get_output()[start if scanned is console else 0 :])

    def _scan_for_crashes_from_now(self) -> None:
        """Backends call this after a revert: the guest's kernel is the snapshot's, and a
        crash printed before it is no longer this guest's."""
        console = self.serial_console
        if console is not None:
            self._crash_scan_start = (console, len(console.get_output()))

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

    def dmesg(self, timeout: float = 20) -> str:
        """The guest kernel's log: through the guest agent, else a logged-in serial console,
        else the kernel lines of the serial log."""
        try:
            result = self.guest_agent().run(["dmesg"], timeout=timeout)
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


def parse_memory_size(text: str) -> int:
    """The seed's memory parsing: sum the numbers; GB x1024, MB as is, else kB / 1024."""
    size = sum(int(number) for number in re.findall(r"[0-9]+", text))
    if "GB" in text:
        size *= 1024
    elif "MB" not in text:
        size //= 1024
    return size
