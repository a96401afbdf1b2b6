"""LibvirtVM: the BaseVM contract on a libvirt domain, through libvirt-python.

Domains are *transient*: ``create()`` starts one from generated XML
(``virDomainCreateXML``) and ``destroy()`` makes it disappear, so a crashed
test process can never leave a definition behind.  The domain starts paused,
the serial console is attached, then the CPUs run: the console log holds the
guest's output from its first byte.
"""

from __future__ import annotations

import contextlib
import logging
import queue
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import libvirt

from virtlib.accel import AccelChoice
from virtlib.backends.libvirt import designer, domxml, metadata, migration
from virtlib.backends.libvirt.console import DomainConsole
from virtlib.backends.libvirt.errors import message, translated
from virtlib.backends.libvirt.host import DomainEvent, Host, require_uri
from virtlib.backends.libvirt.migration import MigrationProgress, MigrationResult
from virtlib.contract import BaseVM
from virtlib.errors import (
    LoginError,
    VMCreateError,
    VMDeadError,
    VMError,
    VMIPAddressMissingError,
    VMMACAddressMissingError,
    VMNotFoundError,
    VMNotSupportedError,
    VMParamsError,
    VMPortNotRedirectedError,
    VMRebootError,
)
from virtlib.images import create_image
from virtlib.keys import parse_keys
from virtlib.sessions.buffer import ConsoleBuffer
from virtlib.sessions.shell import ShellSession
from virtlib.sessions.transport import BufferSpawn
from virtlib.spec import BUNDLED, VMSpec

if TYPE_CHECKING:
    from virtlib.guest import GuestImage
from virtlib.waiting import Deadline
from virtlib.workdir import remove_tree

log = logging.getLogger(__name__)

STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "no state",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting down",
    libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended by guest power management",
}
SHUTOFF_REASONS = {
    libvirt.VIR_DOMAIN_SHUTOFF_UNKNOWN: "unknown",
    libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: "the guest shut down",
    libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: "destroyed",
    libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: "the emulator crashed or was killed",
    libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED: "migrated away",
    libvirt.VIR_DOMAIN_SHUTOFF_SAVED: "saved to a file",
    libvirt.VIR_DOMAIN_SHUTOFF_FAILED: "failed to start",
}
ALIVE_STATES = frozenset(
    {
        libvirt.VIR_DOMAIN_RUNNING,
        libvirt.VIR_DOMAIN_BLOCKED,
        libvirt.VIR_DOMAIN_PAUSED,
        libvirt.VIR_DOMAIN_SHUTDOWN,
        libvirt.VIR_DOMAIN_PMSUSPENDED,
    }
)
UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
)
LINK_LOCAL_PREFIXES = ("fe80:", "169.254.")


class LibvirtVM(BaseVM):
    """A VM run by libvirtd (``vm_type = libvirt``); see the module docstring."""

    BACKEND = "libvirt"
    MIGRATION_PROTOS: ClassVar[list[str]] = list(migration.PROTOCOLS)

    def __init__(self, name: str, params: dict[str, str], root_dir: str | Path = ".") -> None:
        super().__init__(name, params, root_dir)
        self.uri = require_uri(self.spec.connect_uri)
        self.accel: AccelChoice | None = None
        self.xml = ""
        self.allocations = designer.Allocations()
        self._guest: GuestImage | None = None
        self._dom_cache: tuple[tuple[str, int, str], Any] | None = None
        self._buffer: ConsoleBuffer | None = None
        self._console: DomainConsole | None = None
        self._reconnect_listener = self._on_reconnect

    @classmethod
    def adopt(
        cls,
        name: str,
        params: dict[str, str],
        root_dir: str | Path = ".",
        attach_console: bool = False,
    ) -> LibvirtVM:
        """A VM object for a domain virtlib started earlier (in another process).

        Its instance id, forwarded ports and MACs come from the domain's virtlib
        metadata; ``params`` should be those it was created with.  The console is
        attached only when asked (attaching takes it over from any other client).

        :raises VMNotFoundError: no such domain.
        :raises VMError: the domain was not made by virtlib.
        """
        vm = cls(name, params, root_dir)
        dom = vm.host.lookup(name)
        vm.xml = str(dom.XMLDesc(0))
        vm.instance, vm.allocations, vm.partition = metadata.decode(
            domxml.read_metadata(domxml.parse(vm.xml))
        )
        vm.uuid = dom.UUIDString()
        kind = domxml.parse(vm.xml).get("type", "")
        vm.accel = AccelChoice("kvm" if kind == "kvm" else "tcg", f"the running domain is {kind}")
        if vm.spec.guest == BUNDLED:
            from virtlib.guest import ensure_guest

            vm._guest = ensure_guest()
            vm._trust_host_keys()
        if attach_console and dom.isActive():
            vm._attach_console(dom)
        vm.host.add_reconnect_listener(vm._reconnect_listener)
        return vm

    def release(self) -> None:
        """Forget the VM in this process (console, private files) and leave the domain running.

        The opposite of adopt(); destroy() is the way to stop the VM.
        """
        self._detach_console(release=True)
        self.host.remove_reconnect_listener(self._reconnect_listener)
        remove_tree(self._workdir)
        self._workdir = None
        self._buffer = self._console = None
        self.serial_console = None

    # --- connection and domain ----------------------------------------------------------
    @property
    def host(self) -> Host:
        return Host.get(self.uri)

    def _dom(self) -> Any:
        """The virDomain, looked up once per connection (a reconnect or a new domain -- create,
        restore, migration -- looks it up again).  Calls on a domain that is gone raise
        VIR_ERR_NO_DOMAIN, which every caller handles."""
        host = self.host
        key = (host.uri, host.generation, self.uuid or self.name)
        if self._dom_cache is None or self._dom_cache[0] != key:
            self._dom_cache = (key, host.lookup(self.uuid or self.name))
        return self._dom_cache[1]

    def _forget_dom(self) -> None:
        self._dom_cache = None

    def _state(self) -> tuple[int, int] | None:
        """(state, reason), or None when there is no such domain."""
        try:
            dom = self._dom()
            with translated("query the state of", self.uri, self.name):
                state, reason = dom.state()
        except VMNotFoundError:
            return None
        return int(state), int(reason)

    # --- create ---------------------------------------------------------------------------
    def create(
        self,
        name: str | None = None,
        params: dict[str, str] | None = None,
        root_dir: str | Path | None = None,
        timeout: float = 120.0,
        migration_mode: str | None = None,
        mac_source: BaseVM | None = None,
    ) -> None:
        """Start the domain (transient) from XML generated from params.

        :raises VMParamsError: bad params (nothing is created or reserved).
        :raises VMImageMissingError, VMHashMismatchError: missing or wrong media.
        :raises VMHugePageError, VMBadPATypeError, VMPAError: unavailable resources.
        :raises VMCreateError: libvirt refused or failed; ``cmd`` is the XML,
            ``status`` libvirt's error code, ``output`` its message.
        """
        if name is not None or params is not None or root_dir is not None:
            self.name = name or self.name
            if params is not None:
                self.params = (
                    params if isinstance(params, type(self.params)) else type(self.params)(params)
                )
            self.root_dir = Path(root_dir) if root_dir is not None else self.root_dir
            self.spec = VMSpec.from_params(self.name, self.params, self.root_dir)
            self.uri = require_uri(self.spec.connect_uri)
        if self.uuid and self._state() is not None:
            self.destroy(gracefully=False, free_mac_addresses=False)
        if migration_mode is not None:
            raise VMParamsError("migration_mode is not used by the libvirt backend: use migrate()")
        created_images: list[str] = []
        try:
            self.xml = self._prepare(mac_source)
            created_images = self._create_images()
            self._start(self.xml)
        except BaseException:
            self._release(free_mac_addresses=True)
            for image in created_images:
                Path(image).unlink(missing_ok=True)
            raise
        log.info("%s: started on %s (%s)", self.name, self.uri, self.accel)

    def _prepare(self, mac_source: BaseVM | None) -> str:
        """Check params and host, reserve MACs and ports, and render the XML."""
        host = self.host
        facts = designer.HostFacts(
            driver=host.hypervisor_kind(),
            accel=host.accel_choice(self.spec.accel),
            free_hugepages=host.free_hugepages,
            pci_devices=lambda: pci_devices(host),
        )
        self.accel = facts.accel
        boot, self._guest = self._boot_media()
        self._reserve(mac_source)
        self._trust_host_keys()
        return self._render(self.spec, facts, boot)

    def _boot_media(self) -> tuple[designer.BootMedia | None, GuestImage | None]:
        """Kernel boot media: the bundled guest's (built on first use) or from params."""
        if self.spec.guest != BUNDLED:
            return designer.boot_media(self.spec), None
        from virtlib.guest import ensure_guest

        guest = ensure_guest()
        args = f"{guest.kernel_args} {self.spec.kernel_args}".strip()
        return designer.BootMedia(guest.kernel, guest.initrd, args), guest

    def _reserve(self, mac_source: BaseVM | None) -> None:
        """A MAC per NIC and a host port per forwarded guest port (shared, locked pools)."""
        macs, ports = self.mac_pool(), self.port_pool()
        for nic in self.spec.nics:
            source_mac = None
            if mac_source is not None:
                try:
                    source_mac = mac_source.get_mac_address(nic.index)
                except VMMACAddressMissingError:
                    source_mac = None
            self.allocations.macs[nic.index] = macs.reserve(
                self.instance, nic.index, nic.mac or source_mac
            )
            for guest_port in nic.guest_ports:
                self.allocations.ports[(nic.index, guest_port)] = ports.reserve(
                    self.instance, f"nic{nic.index}/{guest_port}"
                )

    def _trust_host_keys(self) -> None:
        """The bundled guest's host keys are known: trust exactly them at each SSH forward."""
        guest = self._guest
        if guest is None or self.spec.login.known_hosts_file:
            return
        ssh_port = self.spec.login.shell_port
        text = "".join(
            guest.known_hosts("127.0.0.1", port)
            for (_, guest_port), port in self.allocations.ports.items()
            if guest_port == ssh_port
        )
        path = self._known_hosts_file()
        path.write_text(text)
        path.chmod(0o600)

    def _render(
        self,
        spec: VMSpec,
        facts: designer.HostFacts,
        boot: designer.BootMedia | None,
        check_resources: bool = True,
    ) -> str:
        config = designer.design(
            spec,
            facts,
            self.allocations,
            boot,
            metadata.encode(self.instance, self.allocations, self.partition),
            uuid=self._wanted_uuid(spec),
            check_resources=check_resources,
        )
        return domxml.render(config)

    def _wanted_uuid(self, spec: VMSpec) -> str:
        if spec.uuid and spec.uuid != "random":
            return spec.uuid
        return self.uuid or ""

    def _create_images(self) -> list[str]:
        created = []
        for disk in self.spec.disks:
            if disk.create and not disk.raw_device:
                created.append(create_image(self.params.object_params(disk.name), self.root_dir))
        return created

    def _start(self, xml: str) -> None:
        """Start paused, attach the console, run: the log has the guest's first byte."""
        dom = self._create_paused(xml)
        self.uuid = dom.UUIDString()
        self._forget_dom()
        try:
            self._attach_console(dom)
            with translated(
                "resume",
                self.uri,
                self.name,
                default=lambda e: VMCreateError(xml, e.get_error_code(), message(e)),
            ):
                dom.resume()
        except BaseException:
            _quietly(dom.destroy)
            raise
        self.host.add_reconnect_listener(self._reconnect_listener)

    def _create_paused(self, xml: str) -> Any:
        conn = self.host.conn
        try:
            return conn.createXML(xml, libvirt.VIR_DOMAIN_START_PAUSED)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
                raise VMCreateError(xml, exc.get_error_code(), message(exc)) from exc
        # Drivers without the start-paused flag (libvirt's test driver): start, then pause.
        try:
            dom = conn.createXML(xml, 0)
            dom.suspend()
        except libvirt.libvirtError as exc:
            raise VMCreateError(xml, exc.get_error_code(), message(exc)) from exc
        return dom

    # --- serial console -----------------------------------------------------------------
    def _attach_console(self, dom: Any) -> None:
        if self._buffer is None or self._console is None:
            self._buffer = ConsoleBuffer(Path(self.get_serial_console_filename()))
            self._console = DomainConsole(self._buffer, self.name)
            spawn = BufferSpawn(self._buffer, self._console.send, name=f"{self.name} console")
            login = self.spec.login
            self.serial_console = ShellSession(
                spawn,
                prompt=login.shell_prompt,
                linesep=login.linesep,
                status_test_command=login.status_test_command,
                output_source=self._buffer.get_output,
            )
        else:
            self._buffer.mark("console re-attached")
        try:
            self._console.attach(self.host.conn, dom)
        except VMNotSupportedError as exc:
            log.warning("%s: %s; no serial console", self.name, exc)
            self._detach_console(release=True)
            self._buffer = self._console = None
            self.serial_console = None

    def _on_reconnect(self) -> None:
        """libvirtd came back: re-attach the console of a running domain."""
        if self._console is not None and self._state() is not None:
            self._attach_console(self._dom())

    def _detach_console(self, release: bool) -> None:
        if self._console is not None:
            self._console.detach()
        if release and self._buffer is not None:
            self._buffer.release()

    # --- state ----------------------------------------------------------------------------
    def is_alive(self) -> bool:
        """True if the domain runs (or is paused) and libvirt answers."""
        if not self.uuid:
            return False
        try:
            state = self._state()
        except VMError:
            return False
        return state is not None and state[0] in ALIVE_STATES

    def is_dead(self) -> bool:
        """True if there is no running domain for this VM."""
        return not self.is_alive()

    def is_paused(self) -> bool:
        state = self._state() if self.uuid else None
        return state is not None and state[0] == libvirt.VIR_DOMAIN_PAUSED

    def verify_alive(self) -> None:
        """:raises VMDeadError: with libvirt's state and reason when the domain is not running."""
        state = self._state() if self.uuid else None
        if state is None:
            raise VMDeadError("no domain", f"{self.name!r} is not running on {self.uri}")
        if state[0] not in ALIVE_STATES:
            reason = (
                SHUTOFF_REASONS.get(state[1], str(state[1]))
                if state[0] == libvirt.VIR_DOMAIN_SHUTOFF
                else str(state[1])
            )
            raise VMDeadError(STATE_NAMES.get(state[0], str(state[0])), reason)

    def pause(self) -> None:
        with translated("pause", self.uri, self.name):
            self._dom().suspend()

    def resume(self) -> None:
        with translated("resume", self.uri, self.name):
            self._dom().resume()

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
        dom = self._dom()
        for source in (
            libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
            libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
            libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP,
        ):
            try:
                interfaces = dom.interfaceAddresses(source, 0) or {}
            except libvirt.libvirtError:
                continue
            address = pick_address(interfaces, mac)
            if address:
                return address
        raise VMIPAddressMissingError(mac)

    def get_port(self, port: int, nic_index: int = 0) -> int:
        """The host port forwarded to guest ``port`` (user-mode NICs); ``port`` itself otherwise.

        :raises VMPortNotRedirectedError: a user-mode NIC without that forward.
        """
        nic = self.spec.nic(nic_index)
        if nic is None or nic.nettype != "user":
            return port
        host_port = self.allocations.ports.get((nic_index, port))
        if host_port is None:
            raise VMPortNotRedirectedError(port)
        return host_port

    # --- destroy --------------------------------------------------------------------------
    def destroy(self, gracefully: bool = True, free_mac_addresses: bool = True) -> None:
        """Stop the domain and leave nothing behind.

        With ``gracefully``: a shutdown command over SSH when the guest can be
        reached, else (or when that does not stop it) an ACPI shutdown, each
        with a bounded wait; then a hard destroy.  A persistent definition is
        undefined with its NVRAM, managed save and snapshot metadata.  The
        console is closed, forwarded ports freed, MACs freed when
        ``free_mac_addresses``, images with ``remove_image`` removed, and the
        private directory deleted.
        """
        try:
            if self.uuid:
                self._stop(gracefully)
        finally:
            self._detach_console(release=True)
            self._release(free_mac_addresses)
            for disk in self.spec.disks:
                if disk.remove and not disk.raw_device:
                    disk.path.unlink(missing_ok=True)
            self.host.remove_reconnect_listener(self._reconnect_listener)
            remove_tree(self._workdir)
            self._workdir = None
            self._buffer = self._console = None
            self.serial_console = None

    def _stop(self, gracefully: bool) -> None:
        self._forget_dom()
        try:
            dom = self._dom()
        except VMNotFoundError:
            return
        if gracefully and self.is_alive():
            self._shutdown_gracefully(dom)
        with translated("destroy", self.uri, self.name):
            try:
                if dom.isActive():
                    dom.destroy()
                if dom.isPersistent():
                    dom.undefineFlags(UNDEFINE_FLAGS)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise

    def _shutdown_gracefully(self, dom: Any) -> None:
        events = self.host.subscribe(dom.UUIDString())
        try:
            if self.spec.nics:
                try:
                    session = self.login(timeout=5)
                except (LoginError, VMError) as exc:
                    log.debug("%s: no shell for a shutdown command: %s", self.name, exc)
                else:
                    try:
                        session.sendline(self.spec.shutdown_command)
                        session.read_nonblocking(internal_timeout=1.0, timeout=3.0)
                    except (VMError, OSError) as exc:
                        log.debug("%s: shutdown command: %s", self.name, exc)
                    finally:
                        session.close()
                    if self._wait_stopped(dom, events, self.spec.shutdown_timeout):
                        return
            try:
                dom.shutdown()
            except libvirt.libvirtError as exc:
                log.debug("%s: ACPI shutdown: %s", self.name, message(exc))
                return
            self._wait_stopped(dom, events, self.spec.shutdown_timeout)
        finally:
            self.host.unsubscribe(dom.UUIDString(), events)

    def _wait_stopped(self, dom: Any, events: queue.Queue[DomainEvent], timeout: float) -> bool:
        """Wait for the STOPPED event (or find the domain gone); True if it stopped."""
        deadline = Deadline(timeout)
        while True:
            try:
                if not dom.isActive():
                    return True
            except libvirt.libvirtError:
                return True
            if deadline.expired():
                return False
            try:
                event = events.get(timeout=min(deadline.remaining(), 1.0))
            except queue.Empty:
                continue
            if event.kind == "lifecycle" and event.event in (
                libvirt.VIR_DOMAIN_EVENT_STOPPED,
                libvirt.VIR_DOMAIN_EVENT_UNDEFINED,
            ):
                return True

    def _release(self, free_mac_addresses: bool) -> None:
        self.port_pool().free(self.instance)
        self.allocations.ports.clear()
        if free_mac_addresses:
            self.mac_pool().free(self.instance)
            self.allocations.macs.clear()

    # --- reboot, keys, save/restore ----------------------------------------------------------
    def reboot(
        self,
        session: ShellSession | None = None,
        method: str = "shell",
        nic_index: int = 0,
        timeout: float = 240,
    ) -> ShellSession:
        """Reboot with a shell command or virDomainReset ("system_reset") and log in again.

        :raises VMRebootError: an unknown method, the guest did not go down, or did not come back.
        """
        if method not in ("shell", "system_reset"):
            raise VMRebootError(f"unknown reboot method {method!r} (use shell or system_reset)")
        dom = self._dom()
        events = self.host.subscribe(dom.UUIDString())
        try:
            if method == "shell":
                session = session or self._login_any(nic_index, timeout)
                session.sendline(self.spec.reboot_command)
            else:
                with translated("reset", self.uri, self.name):
                    dom.reset(0)
            if not _wait_event(events, timeout, lambda e: e.kind == "reboot"):
                raise VMRebootError(
                    f"{self.name!r} did not go down within {timeout:g} s after a {method} reboot"
                )
        finally:
            self.host.unsubscribe(dom.UUIDString(), events)
        if session is not None and session is not self.serial_console:
            session.close()
        try:
            return self._login_any(nic_index, timeout)
        except (LoginError, VMError) as exc:
            raise VMRebootError(f"{self.name!r} did not come back after reboot: {exc}") from exc

    def _login_any(self, nic_index: int, timeout: float) -> ShellSession:
        """SSH when the VM has a NIC, else the serial console."""
        if self.spec.nics:
            return self.wait_for_login(nic_index, timeout)
        return self.wait_for_serial_login(timeout)

    def send_key(self, keystr: str) -> None:
        """Press the keys of ``keystr`` together (virDomainSendKey, Linux key codes)."""
        codes = parse_keys(keystr)
        with translated("send keys to", self.uri, self.name):
            self._dom().sendKey(libvirt.VIR_KEYCODE_SET_LINUX, 0, codes, len(codes), 0)

    def save_to_file(self, path: str) -> None:
        """Save the VM's memory and device state to ``path``; the domain stops."""
        with translated("save", self.uri, self.name):
            self._dom().save(str(path))
        self._detach_console(release=False)

    def restore_from_file(self, path: str) -> None:
        """Start the VM again from a file written by save_to_file(); the console re-attaches."""
        conn = self.host.conn
        with translated("restore", self.uri, self.name):
            conn.restoreFlags(str(path), None, libvirt.VIR_DOMAIN_SAVE_PAUSED)
            dom = conn.lookupByUUIDString(self.uuid) if self.uuid else conn.lookupByName(self.name)
        self.uuid = dom.UUIDString()
        self._forget_dom()
        self._attach_console(dom)
        with translated("resume", self.uri, self.name):
            dom.resume()

    # --- clone, needs_restart, migrate -----------------------------------------------------
    def clone(self, name: str | None = None, **params: Any) -> LibvirtVM:
        """A new, unstarted VM like this one (params copied, then updated with ``params``)."""
        new_params = self.params.copy()
        new_params.update(params)
        return LibvirtVM(name or self.name, new_params, self.root_dir)

    def needs_restart(self, name: str, params: dict[str, str], basedir: str | Path) -> bool:
        """True when the VM is not running or ``params`` would generate a different domain."""
        if self.is_dead() or not self.xml:
            return True
        other = LibvirtVM(name, params, basedir)
        other.instance = self.instance
        other.allocations = self.allocations
        other.uuid = self.uuid
        try:
            facts = designer.HostFacts(
                driver=self.host.hypervisor_kind(), accel=self.host.accel_choice(other.spec.accel)
            )
            boot, _ = other._boot_media()
            wanted = other._render(other.spec, facts, boot, check_resources=False)
        except (VMError, KeyError):
            return True
        finally:
            other._workdir = None
        ignore = () if other.spec.uuid not in ("", "random") else ("uuid",)
        return domxml.canonical(wanted, ignore) != domxml.canonical(self.xml, ignore)

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
        """Migrate through libvirt's migration API (see :mod:`.migration`).

        The destination is ``migration_dest_uri`` from params, else
        ``qemu+ssh://<dest_host>/system``.  ``progress`` (virtlib's addition) is
        called with a MigrationProgress about five times a second.

        :return: a MigrationResult (time, downtime, bytes).
        :raises VMMigrateTimeoutError, VMMigrateCancelError: the job was aborted;
            the VM runs on the source.
        :raises VMMigrateFailedError: any other failure; the VM runs on the source.
        :raises VMMigrateProtoUnsupportedError: ``protocol`` not in MIGRATION_PROTOS.
        :raises VMMigrateStateMismatchError: ``stable_check`` found a difference.
        """
        return migration.migrate(
            self,
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
        )


def pick_address(interfaces: dict[str, Any], mac: str) -> str | None:
    """The first non-link-local address (IPv4 preferred) of the interface with ``mac``."""
    for info in interfaces.values():
        if str(info.get("hwaddr", "")).lower() != mac.lower():
            continue
        addrs = [
            a
            for a in info.get("addrs") or []
            if not str(a.get("addr", "")).lower().startswith(LINK_LOCAL_PREFIXES)
        ]
        addrs.sort(key=lambda a: a.get("type") != libvirt.VIR_IP_ADDR_TYPE_IPV4)
        if addrs:
            return str(addrs[0]["addr"])
    return None


def pci_devices(host: Host) -> list[designer.PciDevice]:
    """Host PCI devices with their SR-IOV roles, from libvirt's node device API."""
    result = []
    try:
        devices = host.conn.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV)
    except libvirt.libvirtError:
        return []
    for device in devices:
        root = domxml.parse(device.XMLDesc(0))
        cap = root.find("capability[@type='pci']")
        if cap is None:
            continue
        domain, bus, slot, function = (
            int(cap.findtext(tag, "0"), 0) for tag in ("domain", "bus", "slot", "function")
        )
        result.append(
            designer.PciDevice(
                domain,
                bus,
                slot,
                function,
                is_vf=cap.find("capability[@type='phys_function']") is not None,
                is_pf=cap.find("capability[@type='virt_functions']") is not None,
            )
        )
    return result


def _wait_event(
    events: queue.Queue[DomainEvent], timeout: float, wanted: Any
) -> DomainEvent | None:
    deadline = Deadline(timeout)
    while not deadline.expired():
        try:
            event = events.get(timeout=deadline.remaining())
        except queue.Empty:
            return None
        if wanted(event):
            return event
    return None


def _quietly(action: Any) -> None:
    with contextlib.suppress(libvirt.libvirtError, OSError, VMError):
        action()
