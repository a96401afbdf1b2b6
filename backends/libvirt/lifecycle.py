"""Graceful shutdown and reboot of a libvirt domain, waiting on libvirt's events."""

from __future__ import annotations

import logging
import queue
from typing import TYPE_CHECKING

from virtlib.backends.libvirt.events import DomainEvent, wait_event
from virtlib.backends.libvirt.guest import Guest
from virtlib.errors import LoginError, VMError, VMRebootError
from virtlib.waiting import Deadline

if TYPE_CHECKING:
    from virtlib.backends.libvirt.domain import LibvirtVM
    from virtlib.sessions.shell import ShellSession

log = logging.getLogger(__name__)

REBOOT_METHODS = ("shell", "system_reset", "libvirt_reset")  # the last is avocado-vt libvirt's name


def shutdown_gracefully(vm: LibvirtVM, guest: Guest) -> bool:
    """A shutdown command over SSH, else (or when it does not stop the guest) an ACPI
    shutdown, each waited for up to ``shutdown_timeout``; True when the guest stopped."""
    events = vm.host.events.subscribe(guest.uuid)
    try:
        if vm.spec.nics and _shell_shutdown(vm) and _wait_stopped(guest, events, vm):
            return True
        try:
            guest.shutdown()
        except VMError as exc:
            log.debug("%s: ACPI shutdown: %s", vm.name, exc)
            return False
        return _wait_stopped(guest, events, vm)
    finally:
        vm.host.events.unsubscribe(guest.uuid, events)


def _shell_shutdown(vm: LibvirtVM) -> bool:
    """Send ``shutdown_command`` over SSH; False when no shell could be reached."""
    try:
        session = vm._login(0, 5, None, None, retrying=True)
    except (LoginError, VMError) as exc:
        log.debug("%s: no shell for a shutdown command: %s", vm.name, exc)
        return False
    try:
        session.sendline(vm.spec.shutdown_command)
        session.read_nonblocking(internal_timeout=1.0, timeout=3.0)
    except (VMError, OSError) as exc:
        log.debug("%s: shutdown command: %s", vm.name, exc)
    finally:
        session.close()
    return True


def _wait_stopped(guest: Guest, events: queue.Queue[DomainEvent], vm: LibvirtVM) -> bool:
    """Wait for the STOPPED event (or find the domain gone); True if it stopped."""
    deadline = Deadline(vm.spec.shutdown_timeout)
    while True:
        try:
            if not guest.is_active():
                return True
        except VMError:
            return True
        if deadline.expired():
            return False
        if wait_event(events, min(deadline.remaining(), 1.0), lambda e: e.stopped):
            return True


def wait_for_crash_dump(vm: LibvirtVM, guest: Guest, timeout: float = 120.0) -> bool:
    """After a crash with ``on_crash = coredump-*``, wait while libvirt writes the dump (into
    its ``auto_dump_path``): until the domain stops or restarts; True if it did."""
    events = vm.host.events.subscribe(guest.uuid)
    try:
        state = guest.state_or_none()
        if state is None or not state.crashed:
            return True
        log.info("%s: waiting for libvirt's crash dump", vm.name)
        found = wait_event(events, timeout, lambda e: e.stopped or e.kind == "reboot")
        return found is not None
    finally:
        vm.host.events.unsubscribe(guest.uuid, events)


def reboot_guest(
    vm: LibvirtVM,
    guest: Guest,
    session: ShellSession | None,
    method: str,
    nic_index: int,
    timeout: float,
    serial: bool = False,
) -> ShellSession:
    """Reboot ``guest`` by ``method`` and log in again (see LibvirtVM.reboot)."""
    if method not in REBOOT_METHODS:
        raise VMRebootError(f"unknown reboot method {method!r} (use {', '.join(REBOOT_METHODS)})")
    events = vm.host.events.subscribe(guest.uuid)
    try:
        if method == "shell":
            session = session or vm.login_any(nic_index, timeout, serial)
            session.sendline(vm.spec.reboot_command)
        else:
            guest.reset()
        if not wait_event(events, timeout, lambda e: e.kind == "reboot"):
            raise VMRebootError(
                f"{vm.name!r} did not go down within {timeout:g} s after a {method} reboot"
            )
    finally:
        vm.host.events.unsubscribe(guest.uuid, events)
    if session is not None and session is not vm.serial_console:
        session.close()
    try:
        return vm.login_any(nic_index, timeout, serial)
    except (LoginError, VMError) as exc:
        raise VMRebootError(f"{vm.name!r} did not come back after reboot: {exc}") from exc
