"""An in-memory backend (``vm_type = memory``) for the contract suite.

Its "hypervisor" lives in this process: a URI names a table of machines here
(:data:`HOSTS`; URIs with a host part do not answer, there is nothing remote).
A machine's guest is the fake getty/login/shell of ``tests/unit/fake_guest.py``
(:mod:`memory_guest`) on its serial line, and an SSH/SFTP server on the VM's
forwarded port (reserved from virtlib's port pool like the libvirt backend's)
serving a private directory as the guest's files.  Everything the contract
builds from primitives (login and its retries, serial login, the crash scan,
MAC lookup, memory and CPU parsing, file copies) runs for real in
:class:`~virtlib.contract.BaseVM` against it.

It is registered for the test session only, through the ``virtlib.backends``
entry-point group (see ``conftest.py``), so the suite also proves that a
backend registered that way is found.  What an in-process VM cannot have it
leaves to BaseVM's VMNotSupportedError (``host_checks``, ``definition``, the
hypervisor log, memory dumps, screenshots, the guest agent), and ``migrate``
says so itself: the suite checks those errors name the operation and backend.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import urllib.parse
import uuid as uuidlib
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from memory_guest import GuestSSHServer, MemoryGuest

from virtlib.contract import BaseVM
from virtlib.errors import (
    HypervisorConnectionError,
    LoginError,
    VMCreateError,
    VMDeadError,
    VMError,
    VMMACAddressMissingError,
    VMNotFoundError,
    VMNotSupportedError,
    VMPortNotRedirectedError,
    VMRebootError,
    VMStateError,
)
from virtlib.guest import recipe
from virtlib.inventory import ManagedVM
from virtlib.keys import parse_keys
from virtlib.migration import MigrationProgress, MigrationResult
from virtlib.params import Params
from virtlib.sessions.buffer import ConsoleBuffer
from virtlib.sessions.shell import ShellSession
from virtlib.sessions.transport import BufferSpawn
from virtlib.spec import VMSpec
from virtlib.state import Allocations, PortKey, VMState, public_params
from virtlib.workdir import make_vm_dir, remove_tree

BOOT_BANNER = "Linux version 6.6.0-memory (virtlib contract suite) #1 SMP\r\n"
CTRL_ALT_DELETE = parse_keys("ctrl-alt-delete")
REBOOT_METHODS = ("shell", "system_reset", "libvirt_reset")
#: Seconds from power-on to the login prompt and sshd (a short boot, so login retries run).
DEFAULT_BOOT_DELAY = 0.3

HOSTS: dict[str, dict[str, Machine]] = {}
_hosts_lock = threading.Lock()


def _answers(uri: str) -> str | None:
    """None for a URI served in this process, else why not."""
    if "://" not in uri:
        return f"{uri!r} is not a URI"
    host = urllib.parse.urlsplit(uri).hostname
    return f"the memory backend has no host {host!r} (it lives in this process)" if host else None


def _host(uri: str) -> dict[str, Machine]:
    problem = _answers(uri)
    if problem:
        raise HypervisorConnectionError(uri, problem)
    with _hosts_lock:
        return HOSTS.setdefault(uri, {})


def _find(uri: str, name: str) -> Machine:
    machine = _host(uri).get(name)
    if machine is None:
        raise VMNotFoundError(name, uri)
    return machine


class Machine:
    """One running (or paused) in-memory VM: its serial line, sshd and files."""

    def __init__(self, state: VMState, files: dict[str, str] | None = None) -> None:
        self.state = state
        self.name = state.spec.name
        self.mem_mib = state.spec.mem_mib
        self.cpus = state.spec.vcpus
        self.boot_id = str(uuidlib.uuid4())
        self.running = threading.Event()
        self.running.set()
        self.status = "running"
        self.stop_reason = ""
        self.reboots = 0
        self.changed = threading.Condition()
        self.root = make_vm_dir(f"{self.name}-disk", state.instance)
        (self.root / "tmp").mkdir()
        for rel, data in (files or {}).items():
            path = self.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(base64.b64decode(data))
        self._sink: Callable[[bytes], None] | None = None
        self._sink_lock = threading.Lock()
        self.console: MemoryGuest | None = None
        self.sshd: GuestSSHServer | None = None
        ssh_port = state.allocations.port(0, state.spec.login.shell_port)
        if ssh_port is not None:
            try:
                self.sshd = GuestSSHServer(self, ssh_port, recipe.USERNAME, recipe.DEFAULT_PASSWORD)
            except OSError as exc:
                remove_tree(self.root)
                raise VMCreateError(
                    f"listen on 127.0.0.1:{ssh_port}", exc.errno, str(exc)
                ) from None
        self._timer: threading.Timer | None = None

    # --- the serial line ------------------------------------------------------------------
    def attach(self, sink: Callable[[bytes], None]) -> None:
        """The reader of the serial line (one at a time: a new one takes it over)."""
        with self._sink_lock:
            self._sink = sink

    def detach(self, sink: Callable[[bytes], None]) -> None:
        with self._sink_lock:
            if self._sink == sink:
                self._sink = None

    def serial_write(self, data: bytes) -> None:
        with self._sink_lock:
            sink = self._sink
        if sink is not None:  # nobody reading: the bytes are lost, as on a real serial port
            sink(data)

    def serial_input(self, data: bytes) -> None:
        if self.status == "shut off":
            raise OSError(f"{self.name} is not running")
        if self.console is not None:
            self.console.feed(data)

    # --- power -------------------------------------------------------------------------
    def power_on(self, boot_delay: float, console_state: str = "") -> None:
        """Boot: the kernel's first line at once, the getty and sshd after ``boot_delay``."""
        if console_state:  # restored: the guest goes on where it was
            self._start_guest(console_state)
            return
        self.serial_write(BOOT_BANNER.encode())
        self._timer = threading.Timer(boot_delay, self._start_guest, args=("login",))
        self._timer.daemon = True
        self._timer.start()

    def _start_guest(self, state: str) -> None:
        if self.status == "shut off":
            return
        self.console = MemoryGuest(self, self.serial_write, state=state)
        self.console.start()  # after publishing it: the first prompt may be answered at once
        if self.sshd is not None:
            self.sshd.up()

    def _stop_guest(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.sshd is not None:
            self.sshd.down()
        if self.console is not None:
            self.console.stop()
            self.console = None

    def request(self, action: str) -> None:
        """The guest's shell asked to reboot or power off (never on the guest's own thread)."""
        target = self.reboot if action == "reboot" else lambda: self.power_off("shutdown")
        threading.Thread(target=target, daemon=True).start()

    def reboot(self) -> None:
        self._stop_guest()
        self.serial_write(b"reboot: Restarting system\r\n")
        self.boot_id = str(uuidlib.uuid4())
        with self.changed:
            self.reboots += 1
            self.changed.notify_all()
        self.power_on(DEFAULT_BOOT_DELAY)

    def power_off(self, reason: str) -> None:
        """Stop for good: the machine disappears from its host (like a transient domain)."""
        with self.changed:
            if self.status == "shut off":
                return
            self.status, self.stop_reason = "shut off", reason
            self.changed.notify_all()
        self.running.set()  # let paused shells finish
        self._stop_guest()
        if self.sshd is not None:
            self.sshd.close()
        with _hosts_lock:
            host = HOSTS.get(self.state.uri, {})
            if host.get(self.name) is self:
                del host[self.name]
        remove_tree(self.root)

    def wait_stopped(self, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.status == "shut off", timeout)

    def files(self) -> dict[str, str]:
        return {
            str(path.relative_to(self.root)): base64.b64encode(path.read_bytes()).decode()
            for path in self.root.rglob("*")
            if path.is_file()
        }


def kill(vm: BaseVM) -> None:
    """Make ``vm``'s machine die from outside (as a killed QEMU would)."""
    assert vm.state is not None
    _find(vm.state.uri, vm.name).power_off("crashed")


class MemoryVM(BaseVM):
    """A VM of the in-memory backend (see the module docstring)."""

    BACKEND = "memory"

    def __init__(self, name: str, params: dict[str, str], root_dir: str | Path = ".") -> None:
        super().__init__(name, params, root_dir)
        self._buffer: ConsoleBuffer | None = None
        self._listening = False
        self.boot_delay = float(self.params.get("memory_boot_delay", DEFAULT_BOOT_DELAY))

    # --- the machine --------------------------------------------------------------------
    def _machine(self) -> Machine:
        if self.state is None:
            raise VMDeadError("no domain", f"{self.name!r} was not created")
        return _find(self.state.uri, self.name)

    def _machine_or_none(self) -> Machine | None:
        try:
            return self._machine()
        except VMError:
            return None

    def create(
        self,
        name: str | None = None,
        params: dict[str, str] | None = None,
        root_dir: str | Path | None = None,
        timeout: float = 120.0,
        migration_mode: str | None = None,
        mac_source: BaseVM | None = None,
    ) -> None:
        """Power on a machine; a failure leaves nothing (machine, reservation, directory)."""
        if name is not None or params is not None or root_dir is not None:
            self.name = name or self.name
            if params is not None:
                self.params = params if isinstance(params, Params) else Params(params)
            self.root_dir = Path(root_dir) if root_dir is not None else self.root_dir
            self.spec = VMSpec.from_params(self.name, self.params, self.root_dir)
        if self.state is not None:
            self.destroy(gracefully=False, free_mac_addresses=False)
        host = _host(self.spec.connect_uri)
        if self.name in host:
            raise VMCreateError(self.name, 1, f"a VM named {self.name!r} runs on {self.uri}")
        try:
            wanted = self.spec.uuid if self.spec.uuid not in ("", "random") else ""
            self.state = VMState(
                instance=self.instance,
                uri=self.spec.connect_uri,
                uuid=wanted or str(uuidlib.uuid4()),
                allocations=self._reserve(mac_source),
                spec=self.spec,
                params=dict(self.params),
                root_dir=str(self.root_dir),
                partition=self.partition,
                accel="none",
            )
            machine = Machine(self.state)
            with _hosts_lock:
                HOSTS[self.state.uri][self.name] = machine
            self._trust(machine)
            self._attach(machine)
            machine.power_on(self.boot_delay)
        except BaseException:
            self._forget(free_mac_addresses=True)
            raise

    def _reserve(self, mac_source: BaseVM | None) -> Allocations:
        macs: dict[int, str] = {}
        ports: dict[PortKey, int] = {}
        for nic in self.spec.nics:
            source = None
            if mac_source is not None:
                try:
                    source = mac_source.get_mac_address(nic.index)
                except VMMACAddressMissingError:
                    source = None
            macs[nic.index] = self.mac_pool().reserve(self.instance, nic.index, nic.mac or source)
            for guest_port in nic.guest_ports:
                ports[(nic.index, guest_port)] = self.port_pool().reserve(
                    self.instance, f"nic{nic.index}/{guest_port}"
                )
        return Allocations.of(macs, ports)

    def _trust(self, machine: Machine) -> None:
        """The guest's host key is known: trust exactly it (policy strict, as the bundled guest)."""
        if machine.sshd is not None and not self.spec.login.known_hosts_file:
            self.known_hosts_file().write_text(machine.sshd.known_hosts_line())
            self.known_hosts_file().chmod(0o600)

    def _attach(self, machine: Machine) -> None:
        if self._buffer is None:
            self._buffer = ConsoleBuffer(Path(self.get_serial_console_filename()))
            spawn = BufferSpawn(self._buffer, self._send_serial, name=f"{self.name} console")
            login = self.spec.login
            self.serial_console = ShellSession(
                spawn,
                prompt=login.shell_prompt,
                linesep=login.linesep,
                status_test_command=login.status_test_command,
                output_source=self._buffer.get_output,
            )
        machine.attach(self._buffer.append)

    def _send_serial(self, data: bytes) -> None:
        self._machine().serial_input(data)

    def _forget(self, free_mac_addresses: bool) -> None:
        """Local teardown: console, reservations, private files, state."""
        machine = self._machine_or_none()
        if machine is not None and self._buffer is not None:
            machine.detach(self._buffer.append)
        if self._buffer is not None:
            self._buffer.release()
        self._buffer = None
        self.serial_console = None
        self.port_pool().free(self.instance)
        if free_mac_addresses:
            self.mac_pool().free(self.instance)
        remove_tree(self._workdir)
        self._workdir = None
        self.state = None

    # --- state --------------------------------------------------------------------------
    def is_alive(self) -> bool:
        return self._machine_or_none() is not None

    def is_dead(self) -> bool:
        return not self.is_alive()

    def is_paused(self) -> bool:
        machine = self._machine_or_none()
        return machine is not None and machine.status == "paused"

    def verify_alive(self) -> None:
        if self._machine_or_none() is None:
            raise VMDeadError("no domain", f"{self.name!r} is not running on {self.uri}")

    def pause(self) -> bool:
        machine = self._machine()
        machine.running.clear()
        machine.status = "paused"
        return True

    def resume(self, timeout: float | None = None) -> bool:
        machine = self._machine()
        machine.status = "running"
        machine.running.set()
        return True

    # --- addresses ------------------------------------------------------------------------
    def get_address(self, index: int = 0) -> str:
        if self.spec.nic(index) is None:
            raise VMMACAddressMissingError(index)
        return "127.0.0.1"

    def get_port(self, port: int, nic_index: int = 0) -> int:
        host_port = self.state.allocations.port(nic_index, port) if self.state else None
        if host_port is None:
            raise VMPortNotRedirectedError(port)
        return host_port

    # --- destroy ------------------------------------------------------------------------
    def destroy(self, gracefully: bool = True, free_mac_addresses: bool = True) -> None:
        """Power off (a shutdown command over SSH first when ``gracefully``) and clean up."""
        try:
            machine = self._machine_or_none()
            if machine is not None and gracefully and machine.status == "running":
                self._shutdown_command(machine)
            if machine is not None:
                machine.power_off("destroyed")
        finally:
            self._forget(free_mac_addresses)

    def _shutdown_command(self, machine: Machine) -> None:
        """``shutdown_command`` over SSH, waited for; any failure leaves the hard power-off."""
        try:
            session = self.login(timeout=5)
        except (LoginError, VMError):
            return
        try:
            session.sendline(self.spec.shutdown_command)
            machine.wait_stopped(self.spec.shutdown_timeout)
        except OSError:
            pass
        finally:
            with contextlib.suppress(Exception):  # the guest closed the connection first
                session.close()

    # --- reboot, keys, save and restore ----------------------------------------------------
    def reboot(
        self,
        session: ShellSession | None = None,
        method: str = "shell",
        nic_index: int = 0,
        timeout: float = 240,
        serial: bool = False,
    ) -> ShellSession:
        if method not in REBOOT_METHODS:
            raise VMRebootError(
                f"unknown reboot method {method!r} (use {', '.join(REBOOT_METHODS)})"
            )
        machine = self._machine()
        with machine.changed:
            before = machine.reboots
        if method == "shell":
            session = session or self._login_any(nic_index, timeout, serial)
            session.sendline(self.spec.reboot_command)
        else:
            machine.request("reboot")
        with machine.changed:
            if not machine.changed.wait_for(lambda: machine.reboots > before, timeout):
                raise VMRebootError(f"{self.name!r} did not go down within {timeout:g} s")
        if session is not None and session is not self.serial_console:
            session.close()
        try:
            return self._login_any(nic_index, timeout, serial)
        except (LoginError, VMError) as exc:
            raise VMRebootError(f"{self.name!r} did not come back after reboot: {exc}") from exc

    def _login_any(self, nic_index: int, timeout: float, serial: bool) -> ShellSession:
        if self.spec.nics and not serial:
            return self.wait_for_login(nic_index, timeout)
        return self.wait_for_serial_login(timeout)

    def send_key(self, keystr: str) -> None:
        codes = parse_keys(keystr)
        machine = self._machine()
        if codes == CTRL_ALT_DELETE:
            machine.request("reboot")
        elif machine.console is not None and len(codes) == 1:
            machine.console.feed(b"\n" if keystr == "ret" else keystr.encode()[:1])

    def save_to_file(self, path: str) -> None:
        """Write the machine (state, files, where its console was) to ``path`` and stop it."""
        machine = self._machine()
        state = machine.state
        console_state = machine.console.state if machine.console is not None else "login"
        saved = {
            "name": self.name,
            "instance": state.instance,
            "uuid": state.uuid,
            "macs": [list(item) for item in state.allocations.macs],
            "ports": [[list(key), port] for key, port in state.allocations.ports],
            "params": public_params(state.params),
            "root_dir": state.root_dir,
            "boot_id": machine.boot_id,
            "console_state": console_state,
            "files": machine.files(),
        }
        try:
            Path(path).write_text(json.dumps(saved))
        except OSError as exc:
            raise VMError(f"cannot save {self.name!r} to {path}: {exc}") from None
        machine.detach(self._buffer.append if self._buffer else lambda _d: None)
        machine.power_off("saved")

    def restore_from_file(self, path: str) -> None:
        """Start the machine saved in ``path`` again (from a fresh VM object too)."""
        try:
            saved = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise VMError(f"cannot restore from {path}: {exc}") from None
        allocations = Allocations(
            tuple((int(n), str(m)) for n, m in saved["macs"]),
            tuple(((int(k[0]), int(k[1])), int(p)) for k, p in saved["ports"]),
        )
        params = {**saved["params"], **{k: v for k, v in self.params.items()}}
        state = VMState.designed(
            saved["name"],
            {**params, "connect_uri": self.uri},
            saved["root_dir"],
            instance=saved["instance"],
            uri=self.uri,
            uuid=saved["uuid"],
            allocations=allocations,
            partition=self.partition,
            accel="none",
        )
        if saved["name"] in _host(self.uri):
            raise VMStateError(f"cannot restore {saved['name']!r}: it runs on {self.uri}")
        machine = Machine(state, saved["files"])
        machine.boot_id = saved["boot_id"]
        with _hosts_lock:
            HOSTS[state.uri][machine.name] = machine
        if self.state is None:
            self.instance = state.instance
        self.state, self.spec, self.name = state, state.spec, state.spec.name
        self._trust(machine)
        self._attach(machine)
        machine.power_on(self.boot_delay, console_state=saved["console_state"])

    # --- clone, needs_restart, migrate -----------------------------------------------------
    def clone(self, name: str | None = None, **params: Any) -> MemoryVM:
        new_params = self.params.copy()
        new_params.update(params)
        return MemoryVM(name or self.name, new_params, self.root_dir)

    def needs_restart(self, name: str, params: dict[str, str], basedir: str | Path) -> bool:
        """True when the VM is dead or ``params`` ask for other hardware (memory, CPUs, NICs)."""
        if self.state is None or self.is_dead():
            return True
        try:
            wanted = MemoryVM(name, params, basedir).spec
        except VMError:
            return True
        current = self.state.spec

        def hardware(spec: Any) -> tuple[Any, ...]:
            nics = tuple((n.mac, n.nettype, n.guest_ports) for n in spec.nics)
            return (spec.name, spec.connect_uri, spec.mem_mib, spec.vcpus, nics)

        return hardware(wanted) != hardware(current)

    def migrate(
        self,
        timeout: float = 3600,
        protocol: str = "tcp",
        cancel_delay: float | None = None,
        offline: bool = False,
        stable_check: bool = False,
        clean: bool = True,
        save_path: str = "/tmp",
        dest_host: str = "localhost",
        remote_port: int | None = None,
        progress: Callable[[MigrationProgress], None] | None = None,
    ) -> MigrationResult:
        raise VMNotSupportedError("migrate", self.BACKEND, "an in-memory VM lives in one process")

    # --- tools ------------------------------------------------------------------------------
    @classmethod
    def adopt(
        cls,
        name: str,
        params: dict[str, str],
        root_dir: str | Path = ".",
        attach_console: bool = False,
    ) -> MemoryVM:
        extra = params if isinstance(params, Params) else Params(params)
        uri = extra.get("connect_uri", "qemu:///system")
        machine = _find(uri, name)
        vm = cls(name, Params({**machine.state.params, **extra}), machine.state.root_dir)
        vm.instance = machine.state.instance
        vm.state = machine.state
        vm._trust(machine)
        if attach_console:
            vm._attach(machine)
        return vm

    def release(self) -> None:
        machine = self._machine_or_none()
        if machine is not None and self._buffer is not None:
            machine.detach(self._buffer.append)
        if self._buffer is not None:
            self._buffer.release()
        self._buffer = None
        self.serial_console = None
        remove_tree(self._workdir)
        self._workdir = None
        self.state = None

    def info(self) -> dict[str, Any]:
        machine = self._machine()
        state = machine.state
        return {
            "name": self.name,
            "uri": state.uri,
            "uuid": state.uuid,
            "state": machine.status,
            "vcpus": machine.cpus,
            "memory_mib": machine.mem_mib,
            "accel": state.accel,
            "macs": {f"nic{n}": mac for n, mac in state.allocations.macs},
            "forwards": {
                f"nic{nic}:{guest}": f"127.0.0.1:{port}"
                for (nic, guest), port in state.allocations.ports
            },
            "instance": state.instance,
        }

    @classmethod
    def probe(cls, uri: str) -> str | None:
        return _answers(uri)

    @classmethod
    def managed_vms(cls, uri: str) -> list[ManagedVM]:
        machines = list(_host(uri).values())
        found = []
        for machine in machines:
            ssh = machine.state.allocations.port(0, 22)
            found.append(
                ManagedVM(
                    name=machine.name,
                    uri=uri,
                    state=machine.status,
                    uuid=machine.state.uuid,
                    instance=machine.state.instance,
                    ssh=f"127.0.0.1:{ssh}" if ssh else "",
                )
            )
        return found

    @classmethod
    def remove_vms(cls, uri: str, names: Collection[str], uuids: Collection[str]) -> list[str]:
        try:
            machines = list(_host(uri).values())
        except VMError:
            return []
        removed = []
        for machine in machines:
            if machine.name in names or machine.state.uuid in uuids:
                machine.power_off("destroyed")
                removed.append(f"{machine.name} on {uri}")
        return removed
