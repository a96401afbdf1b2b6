"""LibvirtVM: the BaseVM contract on a libvirt domain, through the Host and Guest wrappers.

Domains are *transient*: ``create()`` starts one from generated XML
(``virDomainCreateXML``) and ``destroy()`` makes it disappear, so a crashed
test process can never leave a definition behind.  The domain starts paused,
the serial console is attached, then the CPUs run: the console log holds the
guest's output from its first byte.

State: the VM's :class:`~virtlib.state.VMState` (instance, URI, UUID, MACs,
ports, the params and spec it was designed from) is made whole before the
domain exists, written into the domain's metadata, and replaced whole by
create, adopt, restore and migrate.  The domain XML is always *designed* from
a state (:meth:`LibvirtVM.design`); nothing edits XML strings.

Threads: a per-VM lock serialises console attach/detach, reconnects and
teardown; libvirt's event-loop thread only records what it reports
(:meth:`LibvirtVM._on_event`).
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import threading
import uuid as uuidlib
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from virtlib import media
from virtlib.accel import AccelChoice
from virtlib.backends.libvirt import (
    designer,
    domxml,
    evidence,
    inventory,
    metadata,
    migration,
    snapshots,
    storage,
)
from virtlib.backends.libvirt.agent import LibvirtGuestAgent
from virtlib.backends.libvirt.console import SerialConsole, attach_serial
from virtlib.backends.libvirt.errors import message
from virtlib.backends.libvirt.events import DomainEvent
from virtlib.backends.libvirt.evidence import pick_address
from virtlib.backends.libvirt.facts import host_facts, running_accel
from virtlib.backends.libvirt.guest import Guest, GuestState
from virtlib.backends.libvirt.host import Host, require_uri
from virtlib.backends.libvirt.lifecycle import (
    reboot_guest,
    shutdown_gracefully,
    wait_for_crash_dump,
)
from virtlib.backends.libvirt.vm_devices import LibvirtDevices
from virtlib.backends.libvirt.vm_snapshots import LibvirtSnapshots
from virtlib.contract import BaseVM
from virtlib.errors import (
    VMCreateError,
    VMDeadError,
    VMError,
    VMIPAddressMissingError,
    VMMACAddressMissingError,
    VMNotFoundError,
    VMNotSupportedError,
    VMParamsError,
    VMPortNotRedirectedError,
)
from virtlib.images import create_image
from virtlib.inventory import HostCheck, ManagedVM
from virtlib.keys import parse_keys
from virtlib.migration import MigrationProgress, MigrationResult
from virtlib.params import Params
from virtlib.spec import BUNDLED, VMSpec
from virtlib.state import Allocations, PortKey, VMState
from virtlib.workdir import remove_tree

if TYPE_CHECKING:
    from virtlib.guest import GuestImage
    from virtlib.sessions.shell import ShellSession

log = logging.getLogger(__name__)


class LibvirtVM(LibvirtSnapshots, LibvirtDevices, BaseVM):
    """A VM run by libvirtd (``vm_type = libvirt``); see the module docstring."""

    BACKEND = "libvirt"
    MIGRATION_PROTOS: ClassVar[list[str]] = list(migration.PROTOCOLS)

    def __init__(self, name: str, params: dict[str, str], root_dir: str | Path = ".") -> None:
        super().__init__(name, params, root_dir)
        require_uri(self.spec.connect_uri)
        self._image: GuestImage | None = None  # the bundled guest, when it is the one
        self._serial: SerialConsole | None = None
        self._lock = threading.RLock()
        self._guest_cache: tuple[tuple[str, int, str], Guest] | None = None
        self._rendered: tuple[VMState, str] | None = None
        self._listening: Host | None = None
        #: What libvirt last said about the domain stopping ("crashed", "shutdown", ...).
        self.stop_reason = ""

    # --- identity and the wrappers ---------------------------------------------------------
    @property
    def accel(self) -> AccelChoice | None:
        """The accelerator the VM runs with (None before create)."""
        if self.state is None:
            return None
        return AccelChoice(self.state.accel, "chosen at create time")

    @property
    def host(self) -> Host:
        return Host.get(require_uri(self.uri))

    def guest(self) -> Guest:
        """The domain, looked up once per connection and state (a reconnect, restore or
        migration looks it up again).  VMNotFoundError when it is gone."""
        state = self._require_state()
        host = self.host
        key = (host.uri, host.generation, state.uuid)
        if self._guest_cache is None or self._guest_cache[0] != key:
            self._guest_cache = (key, host.lookup(state.uuid))
        return self._guest_cache[1]

    def _require_state(self) -> VMState:
        if self.state is None:
            raise VMDeadError("no domain", f"{self.name!r} was not created")
        return self.state

    def _set_state(self, state: VMState | None) -> None:
        """Replace the state whole (and forget what was derived from the old one)."""
        self.state = state
        self._guest_cache = None
        self._rendered = None
        if state is not None:
            self.spec = state.spec

    # --- design -----------------------------------------------------------------------------
    def design(self, state: VMState, check_resources: bool = True) -> domxml.DomainConfig:
        """Every value of the domain for ``state`` (the designer's policy, the host's facts)."""
        host = Host.get(state.uri)
        facts = host_facts(host, running_accel(state.accel))
        boot, self._image = self._boot_media(state.spec)
        return designer.design(
            state.spec,
            facts,
            state.allocations,
            boot,
            metadata.encode(state),
            uuid=state.uuid,
            check_resources=check_resources,
            media=media.planned(state.spec, state.instance),
        )

    def _render(self, state: VMState) -> str:
        if self._rendered is None or self._rendered[0] is not state:
            self._rendered = (state, domxml.render(self.design(state)))
        return self._rendered[1]

    @property
    def xml(self) -> str:
        """The domain XML designed for the VM's state ("" before create)."""
        return self._render(self.state) if self.state is not None else ""

    def _boot_media(self, spec: VMSpec) -> tuple[designer.BootMedia | None, GuestImage | None]:
        """Kernel boot media: the bundled guest's (built on first use) or from params."""
        if spec.guest != BUNDLED:
            return designer.boot_media(spec), None
        from virtlib.guest import ensure_guest

        guest = ensure_guest()
        args = f"{guest.kernel_args} {spec.kernel_args}".strip()
        return designer.BootMedia(guest.kernel, guest.initrd, args), guest

    # --- create ---------------------------------------------------------------------------------
    def create(
        self,
        name: str | None = None,
        params: dict[str, str] | None = None,
        root_dir: str | Path | None = None,
        timeout: float = 120.0,
        migration_mode: str | None = None,
        mac_source: BaseVM | None = None,
    ) -> None:
        """Start the domain (transient) from XML designed from params.

        On any failure nothing is left: no domain, reservation, image it made, or
        private directory.

        :raises VMParamsError: bad params (nothing is created or reserved).
        :raises VMImageMissingError, VMHashMismatchError: missing or wrong media.
        :raises VMHugePageError, VMBadPATypeError, VMPAError: unavailable resources.
        :raises VMCreateError: libvirt refused or failed; ``cmd`` is the XML,
            ``status`` libvirt's error code, ``output`` its message.
        """
        if name is not None or params is not None or root_dir is not None:
            self.name = name or self.name
            if params is not None:
                self.params = params if isinstance(params, Params) else Params(params)
            self.root_dir = Path(root_dir) if root_dir is not None else self.root_dir
            self.spec = VMSpec.from_params(self.name, self.params, self.root_dir)
            require_uri(self.spec.connect_uri)
        if migration_mode is not None:
            raise VMParamsError("migration_mode is not used by the libvirt backend: use migrate()")
        previous_uuid = self.state.uuid if self.state is not None else ""
        if self.state is not None:
            self.destroy(gracefully=False, free_mac_addresses=False)
        host = Host.get(require_uri(self.spec.connect_uri))
        created_images: list[str] = []
        self.stop_reason = ""
        try:
            self._set_state(self._new_state(host, mac_source, previous_uuid))
            created_images = self._create_images()
            media.prepare(self.spec, self.instance)
            storage.share_with_qemu(host, self.spec)
            xml = self._render(self._require_state())
            self._trust_host_keys()
            self._start(host, xml)
        except BaseException:
            self._discard_failed_create(created_images)
            raise
        log.info("%s: started on %s (%s)", self.name, self.uri, self.accel)

    def _new_state(self, host: Host, mac_source: BaseVM | None, previous_uuid: str) -> VMState:
        """The state of the VM about to be made: a UUID (the params', else the one it had
        before, else a new one), the accelerator, MACs and ports."""
        accel = host.accel_choice(self.spec.accel)
        wanted = self.spec.uuid if self.spec.uuid and self.spec.uuid != "random" else ""
        if self.spec.uuid == "random":
            previous_uuid = ""
        params, spec = dict(self.params), self.spec
        if spec.display != "none" and not spec.display_password:
            # A password of the VM's own (VNC takes 8 characters); a secret, so it stays out
            # of the metadata and lives in the state's params.
            params["display_password"] = secrets.token_urlsafe(6)[:8]
            spec = dataclasses.replace(spec, display_password=params["display_password"])
        return VMState(
            instance=self.instance,
            uri=host.uri,
            uuid=wanted or previous_uuid or str(uuidlib.uuid4()),
            allocations=self._reserve(mac_source),
            spec=spec,
            params=params,
            root_dir=str(self.root_dir),
            partition=self.partition,
            accel=accel.accel,
        )

    def _reserve(self, mac_source: BaseVM | None) -> Allocations:
        """A MAC per NIC and a host port per forwarded guest port (shared, locked pools)."""
        macs: dict[int, str] = {}
        ports: dict[PortKey, int] = {}
        mac_pool, port_pool = self.mac_pool(), self.port_pool()
        for nic in self.spec.nics:
            source_mac = None
            if mac_source is not None:
                try:
                    source_mac = mac_source.get_mac_address(nic.index)
                except VMMACAddressMissingError:
                    source_mac = None
            macs[nic.index] = mac_pool.reserve(self.instance, nic.index, nic.mac or source_mac)
            for guest_port in nic.guest_ports:
                ports[(nic.index, guest_port)] = port_pool.reserve(
                    self.instance, f"nic{nic.index}/{guest_port}"
                )
        return Allocations.of(macs, ports)

    def _create_images(self) -> list[str]:
        created = []
        for disk in self.spec.disks:
            if disk.create and not disk.raw_device:
                created.append(create_image(self.params.object_params(disk.name), self.root_dir))
        return created

    def _trust_host_keys(self) -> None:
        """The bundled guest's host keys are known: trust exactly them at each SSH forward."""
        guest, state = self._image, self.state
        if guest is None or state is None or self.spec.login.known_hosts_file:
            return
        ssh_port = self.spec.login.shell_port
        text = "".join(
            guest.known_hosts("127.0.0.1", port)
            for (_, guest_port), port in state.allocations.ports
            if guest_port == ssh_port
        )
        path = self.known_hosts_file()
        path.write_text(text)
        path.chmod(0o600)

    def _start(self, host: Host, xml: str) -> None:
        """Start paused, attach the console, run: the log has the guest's first byte."""
        state = self._require_state()
        self._listen(host, state.uuid)
        guest = host.create_guest(xml, paused=True)
        self._guest_cache = ((host.uri, host.generation, state.uuid), guest)
        self._attach_console(host, guest)
        guest.resume(default=lambda e: VMCreateError(xml, e.get_error_code(), message(e)))
        self._note_started()

    def _discard_failed_create(self, created_images: list[str]) -> None:
        """Undo whatever a failed create() made (see create())."""
        state = self.state
        if state is not None:
            try:
                Host.get(state.uri).lookup(state.uuid).remove()
            except VMError as exc:
                log.debug("%s: no domain to remove after a failed create: %s", self.name, exc)
        self._forget(free_mac_addresses=True)
        for image in created_images:
            Path(image).unlink(missing_ok=True)

    # --- adopt and release ---------------------------------------------------------------------
    @classmethod
    def adopt(
        cls,
        name: str,
        params: dict[str, str],
        root_dir: str | Path = ".",
        attach_console: bool = False,
    ) -> LibvirtVM:
        """A VM object for a domain virtlib started earlier (in another process).

        Its state comes from the domain's virtlib metadata; ``params`` add what
        the metadata does not hold (secrets) and say where to look (``connect_uri``).

        :raises VMNotFoundError: no such domain.
        :raises VMError: the domain was not made by virtlib.
        """
        extra = params if isinstance(params, Params) else Params(params)
        uri = require_uri(extra.get("connect_uri", "qemu:///system"))
        host = Host.get(uri)
        guest = host.lookup(name)
        state = metadata.decode(metadata.read(guest.xml()), guest.name, uri, guest.uuid, extra)
        vm = cls(guest.name, Params(state.params), state.root_dir)
        vm.instance = state.instance
        vm._set_state(state)
        vm._guest_cache = ((host.uri, host.generation, state.uuid), guest)
        vm._listen(host, state.uuid)
        if vm.spec.guest == BUNDLED:
            _, vm._image = vm._boot_media(vm.spec)
            vm._trust_host_keys()
        if attach_console and guest.is_active():
            vm._attach_console(host, guest)
        return vm

    def release(self) -> None:
        """Forget the VM in this process (console, private files) and leave the domain running.

        The opposite of adopt(); destroy() is the way to stop the VM.
        """
        with self._lock:
            self._unlisten()
            self._detach_console(release=True)
            remove_tree(self._workdir)
            self._workdir = None
            self._set_state(None)

    # --- events and reconnects ------------------------------------------------------------------
    def _listen(self, host: Host, uuid: str) -> None:
        """Record this domain's events and re-attach the console after reconnects."""
        self._unlisten()
        host.events.watch(uuid, self._on_event)
        host.add_reconnect_listener(self._on_reconnect)
        self._listening = host

    def _unlisten(self) -> None:
        host, self._listening = self._listening, None
        if host is not None:
            host.remove_reconnect_listener(self._on_reconnect)
            if self.state is not None:
                host.events.unwatch(self.state.uuid, self._on_event)

    def _on_event(self, event: DomainEvent) -> None:
        """On libvirt's event-loop thread: only record why the domain stopped (a crash is kept:
        the destroy that follows it on ``on_crash = destroy`` does not hide it; a reboot, as
        ``on_crash = restart`` does, ends it)."""
        if event.kind == "reboot":
            self.stop_reason = ""
            return
        reason = event.stop_reason
        if reason is not None and self.stop_reason != "crashed":
            self.stop_reason = reason

    def _on_reconnect(self) -> None:
        """libvirtd came back: re-attach the console of a running domain."""
        with self._lock:
            if self._serial is None or self.state is None:
                return
            try:
                guest = self.guest()
                if guest.is_active():
                    self._serial.attach(self.host, guest)
            except VMError as exc:
                log.warning("%s: console not re-attached after reconnect: %s", self.name, exc)

    # --- serial console ---------------------------------------------------------------------------
    def _attach_console(self, host: Host, guest: Guest) -> None:
        with self._lock:
            self._serial = attach_serial(
                self._serial,
                self.name,
                Path(self.get_serial_console_filename()),
                self.spec.login,
                host,
                guest,
            )
            self.serial_console = self._serial.session if self._serial else None

    def _detach_console(self, release: bool) -> None:
        with self._lock:
            serial = self._serial
            if serial is None:
                return
            if release:
                serial.release()
                self._serial = None
                self.serial_console = None
            else:
                serial.detach()

    # --- state ----------------------------------------------------------------------------------
    def _guest_state(self) -> GuestState | None:
        """The domain's state, or None when there is no domain (or no state)."""
        if self.state is None:
            return None
        try:
            return self.guest().state()
        except VMNotFoundError:
            return None

    def is_alive(self) -> bool:
        """True if the domain runs (or is paused) and libvirt answers."""
        try:
            state = self._guest_state()
        except VMError:
            return False
        return state is not None and state.alive

    def is_dead(self) -> bool:
        """True if there is no running domain for this VM."""
        return not self.is_alive()

    def is_paused(self) -> bool:
        state = self._guest_state()
        return state is not None and state.paused

    def verify_alive(self) -> None:
        """Make sure the VM runs.

        :raises VMDeadError: ``reason`` says why it does not ("crashed", "killed",
            "shutdown", "destroyed", "no domain", ...), recorded from libvirt's events
            as they happened (a transient domain vanishes when it stops) or read from
            its state; ``detail`` has the kernel's panic text for a crash.
        """
        state = self._guest_state()
        if state is not None and state.alive:
            return
        if state is not None and state.crashed:
            reason = "crashed"
        elif state is not None:
            reason = self.stop_reason or state.reason_name
        else:
            reason = self.stop_reason or "no domain"
        raise VMDeadError(reason, evidence.death_detail(self, reason, state))

    def pause(self) -> bool:
        """Pause the domain; a paused one is left as it is (see BaseVM.pause)."""
        if self.is_paused():
            return True
        self.guest().suspend()
        return True

    def resume(self, timeout: float | None = None) -> bool:
        """Resume a paused domain; a running one is left as it is (see BaseVM.resume)."""
        if not self.is_paused():
            self.verify_alive()
            return True
        self.guest().resume()
        return True

    # --- addresses ---------------------------------------------------------------------------
    def get_address(self, index: int = 0) -> str:
        """127.0.0.1 for user-mode NICs (ports are forwarded there); else the address libvirt
        reports for the NIC's MAC (DHCP lease, then guest agent, then ARP), link-local dropped.

        :raises VMMACAddressMissingError, VMIPAddressMissingError
        """
        nic = self.spec.nic(index)
        if nic is None:
            raise VMMACAddressMissingError(index)
        if nic.nettype == "user":
            return "127.0.0.1"
        mac = self.get_mac_address(index)
        address = pick_address(self.guest().interface_addresses(), mac)
        if address is None:
            raise VMIPAddressMissingError(mac)
        return address

    def get_port(self, port: int, nic_index: int = 0) -> int:
        """The host port forwarded to guest ``port`` (user-mode NICs); ``port`` itself otherwise.

        :raises VMPortNotRedirectedError: a user-mode NIC without that forward.
        """
        nic = self.spec.nic(nic_index)
        if nic is None or nic.nettype != "user":
            return port
        host_port = self.state.allocations.port(nic_index, port) if self.state else None
        if host_port is None:
            raise VMPortNotRedirectedError(port)
        return host_port

    # --- destroy --------------------------------------------------------------------------
    def destroy(self, gracefully: bool = True, free_mac_addresses: bool = True) -> None:
        """Stop the domain and leave nothing behind.

        With ``gracefully`` (and a guest that runs, not a crashed one): a shutdown
        command over SSH when the guest can be reached, else (or when that does not
        stop it) an ACPI shutdown, each with a bounded wait; then a hard destroy.  A
        persistent definition is undefined with its NVRAM, managed save and snapshot
        metadata.  The console is closed, forwarded ports freed, MACs freed when
        ``free_mac_addresses``, images with ``remove_image`` removed, and the private
        directory deleted.  A VM whose create() failed has nothing to stop: destroy()
        only cleans up locally and never raises for it.
        """
        try:
            if self.state is not None:
                self._stop(gracefully)
        finally:
            self._forget(free_mac_addresses)
            for disk in self.spec.disks:
                if disk.remove and not disk.raw_device:
                    disk.path.unlink(missing_ok=True)

    def _stop(self, gracefully: bool) -> None:
        self._guest_cache = None
        state = self._require_state()
        try:
            self._stop_domain(gracefully)
        finally:
            snapshots.after_stop(self, state)
            storage.remove_files(Host.get(state.uri), state.owned_files)

    def _stop_domain(self, gracefully: bool) -> None:
        try:
            guest = self.guest()
        except VMNotFoundError:
            return
        if self.stop_reason == "crashed" and self.spec.on_crash.startswith("coredump"):
            wait_for_crash_dump(self, guest)  # libvirt is writing the dump: let it finish
        if gracefully and self._can_shut_down(guest):
            shutdown_gracefully(self, guest)
        guest.remove()

    def _can_shut_down(self, guest: Guest) -> bool:
        """A graceful shutdown is worth trying: the guest runs and has not crashed (a
        panicked kernel answers neither a shell nor ACPI)."""
        state = guest.state_or_none()
        if state is None or not state.alive or state.crashed or state.paused:
            return False
        if self.stop_reason == "crashed":
            return False
        if self.spec.pvpanic:  # a panic would have reached libvirt
            return True
        crash = self.kernel_crash()
        return crash is None or not crash.panic

    def _forget(self, free_mac_addresses: bool) -> None:
        """Local teardown: console, reservations, listeners, private files, state."""
        with self._lock:
            self._unlisten()
            self._detach_console(release=True)
            self.port_pool().free(self.instance)
            if free_mac_addresses:
                self.mac_pool().free(self.instance)
            remove_tree(self._workdir)
            self._workdir = None
            media.remove((self.state.spec if self.state else self.spec).name, self.instance)
            self._set_state(None)

    # --- reboot, keys, save/restore ----------------------------------------------------------
    def reboot(
        self,
        session: ShellSession | None = None,
        method: str = "shell",
        nic_index: int = 0,
        timeout: float = 240,
        serial: bool = False,
    ) -> ShellSession:
        """Reboot with a shell command or virDomainReset ("system_reset", "libvirt_reset")
        and log in again (on the serial console with ``serial``).

        :raises VMRebootError: an unknown method, the guest did not go down, or did not come back.
        """
        return reboot_guest(self, self.guest(), session, method, nic_index, timeout, serial)

    def login_any(self, nic_index: int, timeout: float, serial: bool = False) -> ShellSession:
        """SSH when the VM has a NIC (and ``serial`` is not asked for), else the serial console."""
        if self.spec.nics and not serial:
            return self.wait_for_login(nic_index, timeout)
        return self.wait_for_serial_login(timeout)

    def send_key(self, keystr: str) -> None:
        """Press the keys of ``keystr`` together (virDomainSendKey, Linux key codes)."""
        self.guest().send_keys(parse_keys(keystr))

    def save_to_file(self, path: str) -> None:
        """Save the VM's memory and device state to ``path``; the domain stops.

        The VM keeps its reservations, so restore_from_file() brings it back as it was.
        """
        self.guest().save(str(path), self.xml)  # the design: NICs QEMU got through QMP
        self._detach_console(release=False)

    def restore_from_file(self, path: str) -> None:
        """Start the VM again from a file written by save_to_file(); the console re-attaches.

        Works from a fresh VM object too: the state comes from the save file's metadata.
        """
        host = Host.get(require_uri(self.uri))
        saved = host.saved_xml(str(path), self.name)
        root = domxml.parse(saved)
        uuid = root.findtext("uuid") or ""
        state = metadata.decode(metadata.read(saved), self.name, host.uri, uuid, dict(self.params))
        host.restore(str(path), self.name)
        guest = host.lookup(uuid)
        if self.state is None:
            self.instance = state.instance
        self.params = Params(state.params)
        self._set_state(state)
        self._guest_cache = ((host.uri, host.generation, uuid), guest)
        self._listen(host, uuid)
        self._image = self._boot_media(state.spec)[1] if state.spec.guest == BUNDLED else None
        self._trust_host_keys()
        self._attach_console(host, guest)
        snapshots.give_records_to_libvirt(self, guest)
        guest.resume()
        self._note_started()

    # --- clone, needs_restart, migrate -----------------------------------------------------
    def clone(self, name: str | None = None, **params: Any) -> LibvirtVM:
        """A new, unstarted VM like this one (params copied, then updated with ``params``)."""
        new_params = self.params.copy()
        new_params.update(params)
        return LibvirtVM(name or self.name, new_params, self.root_dir)

    def needs_restart(self, name: str, params: dict[str, str], basedir: str | Path) -> bool:
        """True when the VM is not running or ``params`` would design a different domain.

        The running VM's design (from its state) is compared with the design of
        ``params`` given the same instance, UUID, accelerator and reservations;
        virtlib's metadata is left out (it records params that change nothing).
        """
        state = self.state
        if state is None or self.is_dead():
            return True
        try:
            wanted = VMState.designed(
                name,
                params,
                basedir,
                instance=state.instance,
                uri=state.uri,
                uuid=state.uuid,
                allocations=state.allocations,
                partition=state.partition,
                accel=state.accel,
            )
            if wanted.spec.connect_uri != state.uri:
                return True
            if wanted.spec.uuid not in ("", "random", state.uuid):
                return True
            current = self.design(state, check_resources=False)
            other = self.design(wanted, check_resources=False)
        except (VMError, KeyError):
            return True
        return _without_metadata(current) != _without_metadata(other)

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
        """Migrate through libvirt's migration API (see :mod:`.migration`).

        The destination is ``migration_dest_uri`` from params, else
        ``qemu+ssh://<dest_host>/system``.  ``progress`` (virtlib's addition) is
        called with a MigrationProgress about five times a second.  ``p2p``: the
        source's libvirtd opens the destination URI itself (VIR_MIGRATE_PEER2PEER);
        ``tunnelled``: peer-to-peer, with the data inside that connection
        (VIR_MIGRATE_TUNNELLED).  Without either, the data goes to
        ``tcp://<the destination URI's host, else dest_host>``.

        :return: a MigrationResult (time, downtime, bytes).
        :raises VMMigrateTimeoutError, VMMigrateCancelError: the job was aborted;
            the VM runs on the source.
        :raises VMMigrateFailedError: any other failure; the VM runs on the source.
        :raises VMMigrateProtoUnsupportedError: ``protocol`` not in MIGRATION_PROTOS.
        :raises VMMigrateStateMismatchError: ``stable_check`` found a difference.
        :raises VMParamsError: ``tunnelled`` with ``protocol`` unix or a ``remote_port``.
        """
        return migration.migrate(
            self,
            migration.MigrationRequest(
                timeout=timeout,
                protocol=protocol,
                cancel_delay=cancel_delay,
                offline=offline,
                stable_check=stable_check,
                clean=clean,
                save_path=save_path,
                dest_host=dest_host,
                remote_port=remote_port,
                progress=progress,
                p2p=p2p,
                tunnelled=tunnelled,
            ),
        )

    def moved_to(self, state: VMState, guest: Guest) -> None:
        """After a migration: the VM is ``guest`` on the state's host (console re-attached)."""
        with self._lock:
            self._unlisten()
            self._set_state(state)
            host = Host.get(state.uri)
            self._guest_cache = ((host.uri, host.generation, state.uuid), guest)
            self._listen(host, state.uuid)
            self._trust_host_keys()
            self._attach_console(host, guest)

    # --- evidence (backends/libvirt/evidence.py) -----------------------------------------
    def definition(self) -> str:
        """The domain XML libvirt runs the VM with (the designed XML when it is not running)."""
        return evidence.definition(self)

    def hypervisor_log(self, max_bytes: int = 1 << 20) -> str:
        """The end of libvirt's QEMU log of the domain (on this machine's default daemon)."""
        return evidence.hypervisor_log(self, max_bytes)

    def memory_dump(self, path: str | Path, max_bytes: int) -> Path:
        """A kdump-compressed memory-only dump; over ``max_bytes`` it is removed (VMError)."""
        return evidence.memory_dump(self, Path(path), max_bytes)

    def screenshot(self, path: str | Path) -> Path:
        """The display's picture, written as PNG to ``path`` (virDomainScreenshot).

        :raises VMNotSupportedError: the domain has no display (``display = none``).
        """
        return evidence.screenshot(self, Path(path))

    # --- the guest agent ---------------------------------------------------------------------
    def guest_agent(self) -> LibvirtGuestAgent:
        """The QEMU guest agent on the domain's ``org.qemu.guest_agent.0`` channel.

        :raises VMNotSupportedError: ``guest_agent = no`` (the domain has no channel).
        """
        if not getattr(self.spec, "guest_agent", True):
            raise VMNotSupportedError(
                "guest agent", self.BACKEND, f"{self.name!r}: guest_agent = no"
            )
        return LibvirtGuestAgent(self)

    # --- tools: info, inventory, host checks ----------------------------------------------------
    def info(self) -> dict[str, Any]:
        return evidence.info(self)

    @classmethod
    def probe(cls, uri: str) -> str | None:
        return inventory.probe(uri)

    @classmethod
    def managed_vms(cls, uri: str) -> list[ManagedVM]:
        return inventory.managed_vms(uri)

    @classmethod
    def remove_vms(cls, uri: str, names: Collection[str], uuids: Collection[str]) -> list[str]:
        return inventory.remove_vms(uri, names, uuids)

    @classmethod
    def host_checks(cls, uri: str) -> list[HostCheck]:
        return inventory.host_checks(uri)


def _without_metadata(config: domxml.DomainConfig) -> domxml.DomainConfig:
    return dataclasses.replace(config, metadata={})
