"""Live migration through libvirt's migration API (virDomainMigrate3 with typed params).

The migration runs in a worker thread while this thread watches the job
(``virDomainGetJobStats``): progress goes to the caller's callback and the
log, a timeout or ``cancel_delay`` aborts the job with virDomainAbortJob (never
by killing a process), and the VM keeps running on the source after any
failure.  The worker is joined with a bound: a job that does not stop after
the abort is reported, not waited for forever.  On success the VM's state is
replaced by the destination's: URI, forwarded ports, console, no domain left
on the source.

Who drives it and where the data goes (virsh's ``--p2p`` and ``--tunnelled``):

- *direct* (the default): this process holds connections to both hosts and
  drives the phases; QEMU sends the data straight to the destination's QEMU at
  ``tcp://<address>`` (the destination URI's host, else ``dest_host``; its QEMU
  listens on that address only) or through a UNIX socket (``protocol = unix``);
- *peer-to-peer* (``p2p``): the source's libvirtd opens the destination URI
  itself (``VIR_MIGRATE_PEER2PEER``), so that URI must work *on the source host*
  (its keys and known_hosts there); the data still goes QEMU to QEMU;
- *tunnelled* (``tunnelled``, peer-to-peer too): the data travels inside the
  libvirtd-to-libvirtd connection (``VIR_MIGRATE_TUNNELLED``), so only the
  libvirt port (SSH for ``qemu+ssh``) has to be open; no data address applies.

The destination XML is *designed* from the VM's state moved to the
destination (new allocations), by the same designer that made the original
(``VIR_MIGRATE_PARAM_DEST_XML``).  Forwarded ports: user-mode NICs forward
guest ports to host ports on 127.0.0.1.  When the destination shares this
machine's loopback (a local URI: a second libvirtd in a mount namespace only)
the source still holds those ports while the destination QEMU starts, so the
destination gets fresh ports; any other destination (a remote host, or one in
its own network namespace) has a loopback of its own and keeps the same ports.
Disks copied for ``migration_storage`` get new file names when the destination
is on this machine (the same hostname: the same filesystem).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import os
import shutil
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import libvirt

from virtlib.backends.libvirt import domxml, storage
from virtlib.backends.libvirt.guest import Guest
from virtlib.backends.libvirt.host import Host, is_local_uri
from virtlib.errors import (
    VMError,
    VMMigrateCancelError,
    VMMigrateFailedError,
    VMMigrateProtoUnsupportedError,
    VMMigrateStateMismatchError,
    VMMigrateTimeoutError,
    VMParamsError,
    VMStateError,
)
from virtlib.migration import MigrationProgress, MigrationResult, ProgressCallback
from virtlib.spec import VMSpec
from virtlib.state import PortKey, VMState

if TYPE_CHECKING:
    from virtlib.backends.libvirt.domain import LibvirtVM

log = logging.getLogger(__name__)

PROTOCOLS = ("tcp", "unix")
POLL_INTERVAL = 0.2
ABORT_GRACE = 30.0  # how long a job may take to stop after virDomainAbortJob
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1", "")

__all__ = ["PROTOCOLS", "MigrationProgress", "MigrationRequest", "MigrationResult", "migrate"]


@dataclass(frozen=True)
class MigrationRequest:
    """The arguments of BaseVM.migrate (see there), plus the progress callback."""

    timeout: float = 3600
    protocol: str = "tcp"
    cancel_delay: float | None = None
    offline: bool = False
    stable_check: bool = False
    clean: bool = True
    save_path: str = "/tmp"  # noqa: S108 - the seed's default; only a parent for mkdtemp
    dest_host: str = "localhost"
    remote_port: int | None = None
    progress: ProgressCallback | None = None
    p2p: bool = False
    tunnelled: bool = False  # implies p2p

    @property
    def peer_to_peer(self) -> bool:
        return self.p2p or self.tunnelled


def _is_local_destination(dest_uri: str) -> bool:
    host = urllib.parse.urlsplit(dest_uri).hostname
    return is_local_uri(dest_uri) or (host or "") in LOCAL_NAMES


def destination_uri(vm: LibvirtVM, dest_host: str) -> str:
    """``migration_dest_uri`` from params, else ``qemu+ssh://<dest_host>/system``."""
    uri = vm.params.get("migration_dest_uri", "").strip()
    if uri:
        return uri
    if dest_host in LOCAL_NAMES:
        raise VMMigrateFailedError(
            f"cannot migrate {vm.name!r}: libvirt cannot migrate a domain to the host it runs "
            "on; give migration_dest_uri (e.g. a second local host from virtlib.secondhost) "
            "or dest_host"
        )
    scheme = urllib.parse.urlsplit(vm.uri).scheme.split("+")[0] or "qemu"
    return f"{scheme}+ssh://{dest_host}/system"


def check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise VMMigrateProtoUnsupportedError(
            f"migration protocol {protocol!r} is not supported by the libvirt backend "
            f"(supported: {', '.join(PROTOCOLS)})"
        )


def check_request(vm_name: str, request: MigrationRequest) -> None:
    """The protocol is known, and a tunnelled migration is not given a data channel."""
    check_protocol(request.protocol)
    if not request.tunnelled:
        return
    for param, value, unset in (("protocol", request.protocol, "tcp"),
                                ("remote_port", request.remote_port, None)):  # fmt: skip
        if value != unset:
            raise VMParamsError(
                f"cannot migrate {vm_name!r}: {param}={value!r} does not apply to a "
                "tunnelled migration (the data travels inside the libvirt connection)"
            )


def socket_dir(host: Host, save_path: str) -> Path:
    """A new directory under ``save_path`` for the migration socket, owned by QEMU's user
    (both QEMUs run as it: the destination listens there, the source connects)."""
    directory = Path(tempfile.mkdtemp(prefix="virtlib-migrate-", dir=save_path))
    owner = host.qemu_user()
    if owner is not None:
        os.chown(directory, *owner)
    return directory


def data_address(dest_uri: str, dest_host: str) -> str:
    """Where the destination's QEMU receives the data: the URI's host, else ``dest_host``
    (the address the *source* reaches the destination by), else 127.0.0.1."""
    return urllib.parse.urlsplit(dest_uri).hostname or (
        "127.0.0.1" if dest_host in LOCAL_NAMES else dest_host
    )


def _tcp_uri(address: str, remote_port: int | None) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"tcp://{host}" + (f":{remote_port}" if remote_port else "")


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _same_machine(source: Host, dest: Host) -> bool:
    """Both libvirtds run on this one machine (they share its filesystem)."""
    try:
        return source.hostname() == dest.hostname()
    except VMError:
        return False


def _progress(stats: dict[str, Any], started: float) -> MigrationProgress:
    return MigrationProgress(
        elapsed_s=time.monotonic() - started,
        data_total=int(stats.get("data_total", 0)),
        data_processed=int(stats.get("data_processed", 0)),
        data_remaining=int(stats.get("data_remaining", 0)),
        memory_dirty_rate=int(stats.get("memory_dirty_rate", 0)),
        iteration=int(stats.get("memory_iteration", 0)),
    )


def memory_state_hash(vm: LibvirtVM, guest: Guest, directory: Path, label: str, clean: bool) -> str:
    """SHA-256 of the guest memory of a *paused* domain (a memory-only dump's contents);
    the dump file is removed when ``clean``."""
    path = directory / f"virtlib-state-{vm.name}-{vm.instance}-{label}.dump"
    try:
        guest.memory_dump(str(path))
        digest = hashlib.sha256()
        with path.open("rb") as dump:
            for block in iter(lambda: dump.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    except (VMError, OSError) as exc:
        raise VMMigrateFailedError(f"cannot save the state of {vm.name!r}: {exc}") from exc
    finally:
        if clean:
            path.unlink(missing_ok=True)


class _Worker(threading.Thread):
    """Runs the blocking migrate call; keeps any exception it raised."""

    def __init__(self, call: Callable[[], None]) -> None:
        super().__init__(name="virtlib-migrate", daemon=True)
        self._call = call
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self._call()
        except BaseException as exc:  # surfaced by the watcher as a migration error
            self.error = exc
        finally:
            self.done.set()


@dataclass
class _Move:
    """Everything decided before the transfer starts."""

    state: VMState
    dest: Host
    local: bool
    ports: dict[PortKey, int]
    disks: storage.StoragePlan
    moved: VMState | None = None
    dest_xml: str = ""

    def release(self, vm: LibvirtVM) -> None:
        """Undo the reservations and files made for a migration that failed."""
        if self.local:
            old = set(self.state.allocations.port_map.values())
            vm.port_pool().release(vm.instance, set(self.ports.values()) - old)
        storage.remove_files(self.dest, self.disks.created)


def migrate(vm: LibvirtVM, request: MigrationRequest) -> MigrationResult:
    """Migrate ``vm``; see the module docstring and BaseVM.migrate for the parameters.

    Long on purpose: the order (check, design, reserve, run, adopt the new state, free the
    old) is the point, and each step undoes what the ones before it did when it fails."""
    check_request(vm.name, request)
    dest_uri = destination_uri(vm, request.dest_host)
    if not vm.is_alive() or vm.state is None:
        raise VMStateError(f"cannot migrate {vm.name!r}: it is not running")
    state = vm.state
    now = VMSpec.from_params(vm.name, vm.params, vm.root_dir)  # the params as they are now
    storage.check(vm.name, state.spec, now.migration_storage)
    try:
        dest = Host.get(dest_uri)
        dest_conn = dest.conn
    except VMError as exc:
        raise VMMigrateFailedError(f"destination {dest_uri} unreachable: {exc}") from exc
    guest = vm.guest()
    was_paused = vm.is_paused()
    pause = (request.offline or request.stable_check) and not was_paused
    local = _is_local_destination(dest_uri)
    ports = _reserve_destination_ports(vm, state) if local else state.allocations.port_map
    move = _Move(state, dest, local, ports, storage.StoragePlan())
    try:
        same_machine = local or _same_machine(vm.host, dest)
        move.disks = storage.plan(vm, state, dest, same_machine, now.migration_storage)
        owned = tuple(f for f in state.owned_files if f not in move.disks.replaced)
        move.moved = state.moved(
            dest_uri,
            state.allocations.with_ports(ports),
            move.disks.params,
            owned + tuple(move.disks.created),
        )
        move.dest_xml = domxml.render(vm.design(move.moved, check_resources=False))
        if pause:
            guest.suspend()
        result, dest_guest = _transfer(
            vm,
            guest,
            dest_conn,
            move,
            request,
            live=not (request.offline or request.stable_check or was_paused),
        )
    except BaseException:
        move.release(vm)
        if pause and vm.is_alive():
            guest.resume()
        raise
    _switch(vm, move, dest_guest)
    if pause:
        dest_guest.resume()
    result.dest_uri = dest_uri
    _record_final_stats(result, dest_guest)
    log.info(
        "%s: migrated to %s in %.2f s (downtime %s ms)",
        vm.name,
        dest_uri,
        result.wall_time_s,
        result.downtime_ms,
    )
    if result.state_hashes is not None and len(set(result.state_hashes)) != 1:
        raise VMMigrateStateMismatchError(*result.state_hashes)
    return result


def _transfer(
    vm: LibvirtVM,
    guest: Guest,
    dest_conn: libvirt.virConnect,
    move: _Move,
    request: MigrationRequest,
    live: bool,
) -> tuple[MigrationResult, Guest]:
    """The migration job itself (with the memory hashes of ``stable_check`` around it)."""
    states = Path(request.save_path)
    before = ""
    if request.stable_check:
        before = memory_state_hash(vm, guest, states, "before", request.clean)
    with _data_channel(request, vm.host, move.dest.uri) as (data_uri, listen):
        params = _migration_params(vm, move.dest_xml, data_uri, listen, move.disks.targets)
        flags = _migration_flags(guest, live, request) | move.disks.flags
        if request.peer_to_peer:
            call = partial(guest.migrate_to_uri, move.dest.uri, params, flags)
        else:
            call = partial(guest.migrate, dest_conn, params, flags)
        result = _run_job(vm, guest, call, request)
    dest_guest = move.dest.lookup(move.state.uuid)
    if request.stable_check:
        after = memory_state_hash(vm, dest_guest, states, "after", request.clean)
        result.state_hashes = (before, after)
    return result, dest_guest


def _switch(vm: LibvirtVM, move: _Move, dest_guest: Guest) -> None:
    """The VM now lives on the destination: its new state; the source's ports and the
    copies of its disks that it no longer uses are freed."""
    source = vm.host
    if move.moved is None:  # pragma: no cover - set before any transfer starts
        raise VMMigrateFailedError(f"migration of {vm.name!r}: no destination state")
    vm.moved_to(move.moved, dest_guest)
    if move.local:
        new = set(move.ports.values())
        vm.port_pool().release(vm.instance, set(move.state.allocations.port_map.values()) - new)
    storage.remove_files(source, move.disks.replaced)


@contextlib.contextmanager
def _data_channel(
    request: MigrationRequest, source: Host, dest_uri: str
) -> Iterator[tuple[str, str]]:
    """(the migration data URI, the address the destination listens on); both "" when
    tunnelled.  A UNIX socket's private directory is removed afterwards."""
    if request.tunnelled:
        yield "", ""
        return
    if request.protocol != "unix":
        address = data_address(dest_uri, request.dest_host)
        yield _tcp_uri(address, request.remote_port), address if _is_ip(address) else ""
        return
    sockets = socket_dir(source, request.save_path)
    try:
        yield f"unix://{sockets / 'migration.sock'}", ""
    finally:
        shutil.rmtree(sockets, ignore_errors=True)


def _migration_params(
    vm: LibvirtVM, dest_xml: str, data_uri: str, listen: str, disks: list[str]
) -> dict[str, Any]:
    params: dict[str, Any] = {libvirt.VIR_MIGRATE_PARAM_DEST_XML: dest_xml}
    if data_uri:
        params[libvirt.VIR_MIGRATE_PARAM_URI] = data_uri
    if listen:
        params[libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS] = listen
    if disks:
        params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = disks
    bandwidth = VMSpec.from_params(vm.name, vm.params, vm.root_dir).migration_bandwidth_mib
    if bandwidth > 0:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = bandwidth
    return params


def _migration_flags(guest: Guest, live: bool, request: MigrationRequest) -> int:
    flags = libvirt.VIR_MIGRATE_LIVE if live else 0
    if request.peer_to_peer:
        flags |= libvirt.VIR_MIGRATE_PEER2PEER
    if request.tunnelled:
        flags |= libvirt.VIR_MIGRATE_TUNNELLED
    if guest.is_persistent():
        flags |= libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    return flags


def _run_job(
    vm: LibvirtVM, guest: Guest, call: Callable[[], None], request: MigrationRequest
) -> MigrationResult:
    """Run ``call`` in a worker, watch the job, abort it on timeout or cancel_delay.

    Long because it is one loop with its exits (success, cancel, timeout, a job that
    will not stop, failure) side by side; each is a single raise.  A job that
    completes although it was aborted is a success: the VM is on the destination.
    """
    started = time.monotonic()
    result = MigrationResult(vm.uri, "", 0, None, 0, 0.0)
    worker = _Worker(call)
    worker.start()
    aborted: str | None = None
    abort_deadline: float | None = None
    while not worker.done.wait(POLL_INTERVAL):
        now = time.monotonic()
        stats = guest.job_stats()
        if guest.job_running(stats):
            sample = _progress(stats, started)
            result.progress.append(sample)
            if request.progress is not None:
                request.progress(sample)
            log.debug(
                "%s: migration %.0f%% (%d/%d bytes)",
                vm.name,
                sample.percent,
                sample.data_processed,
                sample.data_total,
            )
        if abort_deadline is not None and now >= abort_deadline:
            break  # the job ignores the abort: do not wait for it forever
        if (
            aborted is None
            and request.cancel_delay is not None
            and now - started >= request.cancel_delay
        ):
            aborted = "cancel"
        elif aborted is None and now - started >= request.timeout:
            aborted = "timeout"
        else:
            continue
        abort_deadline = now + ABORT_GRACE
        try:
            guest.abort_job()
        except VMError as exc:
            log.debug("%s: abortJob: %s", vm.name, exc)
    result.wall_time_s = time.monotonic() - started
    stuck = "" if worker.done.is_set() else f"; the job did not stop within {ABORT_GRACE:g} s"
    if worker.done.is_set() and worker.error is None:
        if aborted is not None:  # migrate3 returned: the VM is on the destination
            log.warning("%s: the migration finished before the %s took effect", vm.name, aborted)
        return result
    if aborted == "cancel":
        raise VMMigrateCancelError(
            f"migration of {vm.name!r} cancelled after {request.cancel_delay:g} s{stuck}"
            + (f": {worker.error}" if worker.error else "")
        )
    if aborted == "timeout":
        raise VMMigrateTimeoutError(
            f"migration of {vm.name!r} did not finish in {request.timeout:g} s; "
            f"aborted{stuck or ', the VM runs on the source'}"
        )
    raise VMMigrateFailedError(f"migration of {vm.name!r} failed: {worker.error}") from worker.error


def _record_final_stats(result: MigrationResult, dest_guest: Guest) -> None:
    stats = dest_guest.job_stats(completed=True)
    result.total_time_ms = int(stats.get("time_elapsed", result.wall_time_s * 1000))
    result.downtime_ms = int(stats["downtime"]) if "downtime" in stats else None
    result.data_transferred = int(
        stats.get("data_processed", result.progress[-1].data_processed if result.progress else 0)
    )


def _reserve_destination_ports(vm: LibvirtVM, state: VMState) -> dict[PortKey, int]:
    pool = vm.port_pool()
    suffix = f"m{time.monotonic_ns() % 10**9}"
    return {
        key: pool.reserve(vm.instance, f"nic{key[0]}/{key[1]}/{suffix}")
        for key in state.allocations.port_map
    }
