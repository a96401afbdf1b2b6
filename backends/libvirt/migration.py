"""Live migration through libvirt's migration API (virDomainMigrate3 with typed params).

The migration runs in a worker thread while this thread watches the job
(``virDomainGetJobStats``): progress goes to the caller's callback and the
log, a timeout or ``cancel_delay`` aborts the job with virDomainAbortJob (never
by killing a process), and the VM keeps running on the source after any
failure.  On success the VM object points at the destination: URI switched,
console re-attached, forwarded ports moved, and no domain left on the source.

Forwarded ports: user-mode NICs forward guest ports to host ports on
127.0.0.1.  When the destination is on this machine (a second libvirtd, as in
the tests) the source still holds those ports while the destination QEMU
starts, so the destination gets fresh ports through the destination XML
(``VIR_MIGRATE_PARAM_DEST_XML``); for a remote destination the same ports are
kept.  ``get_port()`` answers with the new ports after the migration.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import libvirt

from virtlib.backends.libvirt import domxml, metadata
from virtlib.backends.libvirt.designer import Allocations
from virtlib.backends.libvirt.errors import message
from virtlib.backends.libvirt.host import Host, is_local_uri
from virtlib.errors import (
    VMMigrateCancelError,
    VMMigrateFailedError,
    VMMigrateProtoUnsupportedError,
    VMMigrateStateMismatchError,
    VMMigrateTimeoutError,
    VMStateError,
)

if TYPE_CHECKING:
    from virtlib.backends.libvirt.domain import LibvirtVM

log = logging.getLogger(__name__)

PROTOCOLS = ("tcp", "unix")
POLL_INTERVAL = 0.2
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1", "")


@dataclass(frozen=True)
class MigrationProgress:
    """One look at the running job."""

    elapsed_s: float
    data_total: int
    data_processed: int
    data_remaining: int
    memory_dirty_rate: int  # pages/s
    iteration: int

    @property
    def percent(self) -> float:
        if self.data_total <= 0:
            return 0.0
        return 100.0 * self.data_processed / max(self.data_total, 1)


@dataclass
class MigrationResult:
    """What a finished migration cost."""

    source_uri: str
    dest_uri: str
    total_time_ms: int
    downtime_ms: int | None
    data_transferred: int
    wall_time_s: float
    progress: list[MigrationProgress] = field(default_factory=list)
    state_hashes: tuple[str, str] | None = None


ProgressCallback = Callable[[MigrationProgress], None]


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
            "libvirt cannot migrate a domain to the host it runs on; give "
            "migration_dest_uri (e.g. a second local host from virtlib.secondhost) or dest_host"
        )
    scheme = urllib.parse.urlsplit(vm.uri).scheme.split("+")[0] or "qemu"
    return f"{scheme}+ssh://{dest_host}/system"


def check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise VMMigrateProtoUnsupportedError(
            f"migration protocol {protocol!r} is not supported by the libvirt backend "
            f"(supported: {', '.join(PROTOCOLS)})"
        )


def socket_dir(host: Host, save_path: str) -> Path:
    """A new directory under ``save_path`` for the migration socket, owned by QEMU's user
    (both QEMUs run as it: the destination listens there, the source connects)."""
    directory = Path(tempfile.mkdtemp(prefix="virtlib-migrate-", dir=save_path))
    owner = host.qemu_user()
    if owner is not None:
        os.chown(directory, *owner)
    return directory


def _tcp_uri(dest_uri: str, dest_host: str, remote_port: int | None) -> str:
    address = urllib.parse.urlsplit(dest_uri).hostname or (
        "127.0.0.1" if dest_host in LOCAL_NAMES else dest_host
    )
    if ":" in address:
        address = f"[{address}]"
    return f"tcp://{address}" + (f":{remote_port}" if remote_port else "")


def _progress(stats: dict[str, Any], started: float) -> MigrationProgress:
    return MigrationProgress(
        elapsed_s=time.monotonic() - started,
        data_total=int(stats.get("data_total", 0)),
        data_processed=int(stats.get("data_processed", 0)),
        data_remaining=int(stats.get("data_remaining", 0)),
        memory_dirty_rate=int(stats.get("memory_dirty_rate", 0)),
        iteration=int(stats.get("memory_iteration", 0)),
    )


def memory_state_hash(vm: LibvirtVM, dom: Any, directory: Path, label: str, clean: bool) -> str:
    """SHA-256 of the guest memory of a *paused* domain (a memory-only dump's contents);
    the dump file is removed when ``clean``."""
    path = directory / f"virtlib-state-{vm.name}-{vm.instance}-{label}.dump"
    try:
        dom.coreDumpWithFormat(
            str(path), libvirt.VIR_DOMAIN_CORE_DUMP_FORMAT_RAW, libvirt.VIR_DUMP_MEMORY_ONLY
        )
        digest = hashlib.sha256()
        with path.open("rb") as dump:
            for block in iter(lambda: dump.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    except libvirt.libvirtError as exc:
        raise VMMigrateFailedError(f"cannot save the state of {vm.name!r}: {message(exc)}") from exc
    finally:
        if clean:
            path.unlink(missing_ok=True)


class _Worker(threading.Thread):
    """Runs the blocking migrate call; keeps its result or libvirt error."""

    def __init__(self, call: Callable[[], Any]) -> None:
        super().__init__(name="virtlib-migrate", daemon=True)
        self._call = call
        self.result: Any = None
        self.error: libvirt.libvirtError | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self.result = self._call()
        except libvirt.libvirtError as exc:
            self.error = exc
        finally:
            self.done.set()


def migrate(
    vm: LibvirtVM,
    timeout: float = 3600,
    protocol: str = "tcp",
    cancel_delay: float | None = None,
    offline: bool = False,
    stable_check: bool = False,
    clean: bool = True,
    save_path: str = "/tmp",  # noqa: S108 - the seed's default; only a parent for mkdtemp
    dest_host: str = "localhost",
    remote_port: int | None = None,
    progress: ProgressCallback | None = None,
) -> MigrationResult:
    """Migrate ``vm``; see the module docstring and BaseVM.migrate for the parameters."""
    check_protocol(protocol)
    dest_uri = destination_uri(vm, dest_host)
    if not vm.is_alive():
        raise VMStateError(f"cannot migrate {vm.name!r}: it is not running")
    try:
        dest = Host.get(dest_uri)
        dest_conn = dest.conn
    except Exception as exc:
        raise VMMigrateFailedError(f"destination {dest_uri} unreachable: {exc}") from exc
    dom = vm._dom()
    was_paused = vm.is_paused()
    pause = (offline or stable_check) and not was_paused
    local = _is_local_destination(dest_uri)
    new_ports = _reserve_destination_ports(vm) if local else dict(vm.allocations.ports)
    dest_xml = _destination_xml(vm, dom, new_ports)
    states = Path(save_path)
    try:
        if pause:
            dom.suspend()
        before = memory_state_hash(vm, dom, states, "before", clean) if stable_check else ""
        with _data_channel(protocol, vm.host, save_path, dest_uri, dest_host, remote_port) as uri:
            params = _migration_params(vm, dest_xml, uri)
            flags = _migration_flags(dom, live=not (offline or stable_check or was_paused))
            result = _run_job(
                vm,
                dom,
                lambda: dom.migrate3(dest_conn, params, flags),
                timeout,
                cancel_delay,
                progress,
            )
        dest_dom = dest_conn.lookupByUUIDString(vm.uuid)
        if stable_check:
            result.state_hashes = (before, memory_state_hash(vm, dest_dom, states, "after", clean))
    except BaseException:
        if local:
            _free_ports(vm, new_ports)
        if pause and vm.is_alive():
            dom.resume()
        raise
    _switch_to_destination(vm, dest, dest_dom, dest_xml, new_ports, local)
    if pause:
        dest_dom.resume()
    result.dest_uri = dest_uri
    _record_final_stats(result, dest_dom)
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


@contextlib.contextmanager
def _data_channel(
    protocol: str,
    source: Host,
    save_path: str,
    dest_uri: str,
    dest_host: str,
    remote_port: int | None,
) -> Iterator[str]:
    """The migration data URI; a UNIX socket's private directory is removed afterwards."""
    if protocol != "unix":
        yield _tcp_uri(dest_uri, dest_host, remote_port)
        return
    sockets = socket_dir(source, save_path)
    try:
        yield f"unix://{sockets / 'migration.sock'}"
    finally:
        shutil.rmtree(sockets, ignore_errors=True)


def _migration_params(vm: LibvirtVM, dest_xml: str, data_uri: str) -> dict[str, Any]:
    params: dict[str, Any] = {
        libvirt.VIR_MIGRATE_PARAM_DEST_XML: dest_xml,
        libvirt.VIR_MIGRATE_PARAM_URI: data_uri,
    }
    if vm.spec.migration_bandwidth_mib > 0:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = vm.spec.migration_bandwidth_mib
    return params


def _migration_flags(dom: Any, live: bool) -> int:
    flags = libvirt.VIR_MIGRATE_LIVE if live else 0
    if dom.isPersistent():
        flags |= libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    return flags


def _switch_to_destination(
    vm: LibvirtVM,
    dest: Host,
    dest_dom: Any,
    dest_xml: str,
    new_ports: dict[tuple[int, int], int],
    local: bool,
) -> None:
    """Point the VM object at the destination: URI, ports, host keys, console."""
    old_ports = dict(vm.allocations.ports)
    vm.host.remove_reconnect_listener(vm._reconnect_listener)
    vm.uri = dest.uri
    vm.params["connect_uri"] = dest.uri
    vm.spec = dataclasses.replace(vm.spec, connect_uri=dest.uri)
    vm.allocations.ports = new_ports
    vm._trust_host_keys()
    if local:
        _free_ports(vm, old_ports, keep=new_ports)
    dest.add_reconnect_listener(vm._reconnect_listener)
    vm._attach_console(dest_dom)
    vm.xml = dest_xml


def _run_job(
    vm: LibvirtVM,
    dom: Any,
    call: Callable[[], Any],
    timeout: float,
    cancel_delay: float | None,
    progress: ProgressCallback | None,
) -> MigrationResult:
    started = time.monotonic()
    result = MigrationResult(vm.uri, "", 0, None, 0, 0.0)
    worker = _Worker(call)
    worker.start()
    aborted: str | None = None
    while not worker.done.wait(POLL_INTERVAL):
        elapsed = time.monotonic() - started
        try:
            stats = dom.jobStats()
        except libvirt.libvirtError:
            stats = {}
        if stats.get("type", 0) not in (0, libvirt.VIR_DOMAIN_JOB_NONE):
            sample = _progress(stats, started)
            result.progress.append(sample)
            if progress is not None:
                progress(sample)
            log.debug(
                "%s: migration %.0f%% (%d/%d bytes)",
                vm.name,
                sample.percent,
                sample.data_processed,
                sample.data_total,
            )
        if aborted is None and cancel_delay is not None and elapsed >= cancel_delay:
            aborted = "cancel"
        elif aborted is None and elapsed >= timeout:
            aborted = "timeout"
        else:
            continue
        try:
            dom.abortJob()
        except libvirt.libvirtError as exc:
            log.debug("%s: abortJob: %s", vm.name, message(exc))
    worker.join()
    result.wall_time_s = time.monotonic() - started
    if worker.error is None and aborted is None:
        return result
    if aborted == "cancel":
        raise VMMigrateCancelError(
            f"migration of {vm.name!r} cancelled after {cancel_delay:g} s"
            + (f": {message(worker.error)}" if worker.error else "")
        )
    if aborted == "timeout":
        raise VMMigrateTimeoutError(
            f"migration of {vm.name!r} did not finish in {timeout:g} s; "
            "aborted, the VM runs on the source"
        )
    reason = message(worker.error) if worker.error is not None else "unknown error"
    raise VMMigrateFailedError(f"migration of {vm.name!r} failed: {reason}") from worker.error


def _record_final_stats(result: MigrationResult, dest_dom: Any) -> None:
    try:
        stats = dest_dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    except libvirt.libvirtError:
        stats = {}
    result.total_time_ms = int(stats.get("time_elapsed", result.wall_time_s * 1000))
    result.downtime_ms = int(stats["downtime"]) if "downtime" in stats else None
    result.data_transferred = int(
        stats.get("data_processed", result.progress[-1].data_processed if result.progress else 0)
    )


def _reserve_destination_ports(vm: LibvirtVM) -> dict[tuple[int, int], int]:
    pool = vm.port_pool()
    suffix = f"m{time.monotonic_ns() % 10**9}"
    return {
        key: pool.reserve(vm.instance, f"nic{key[0]}/{key[1]}/{suffix}")
        for key in vm.allocations.ports
    }


def _free_ports(
    vm: LibvirtVM, ports: dict[tuple[int, int], int], keep: dict[tuple[int, int], int] | None = None
) -> None:
    """Drop the reservations of ``ports`` (except those also in ``keep``)."""
    kept = set((keep or {}).values())
    with vm.port_pool().table.locked() as rows:
        for key in [
            k
            for k, v in rows.items()
            if k.startswith(vm.instance + "/") and int(v) in ports.values() and int(v) not in kept
        ]:
            rows.pop(key)


def _destination_xml(vm: LibvirtVM, dom: Any, ports: dict[tuple[int, int], int]) -> str:
    """The running domain's migratable XML with the forwards (and the virtlib metadata
    recording them) moved to ``ports``."""
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE)
    if ports == vm.allocations.ports:
        return str(xml)
    root = domxml.parse(xml)
    for arg in root.iter(f"{{{domxml.QEMU_NS}}}arg"):
        value = arg.get("value", "")
        for (nic, guest), old in vm.allocations.ports.items():
            if value.startswith(f"user,id=vlnet{nic},"):
                value = value.replace(f":{old}-:{guest}", f":{ports[(nic, guest)]}-:{guest}")
        arg.set("value", value)
    moved = Allocations(macs=dict(vm.allocations.macs), ports=dict(ports))
    domxml.replace_metadata(root, metadata.encode(vm.instance, moved, vm.partition))
    return domxml.to_string(root)
