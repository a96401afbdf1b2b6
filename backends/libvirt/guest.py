"""A libvirt domain behind a small wrapper whose calls translate libvirt's errors (nova's Guest).

Code above the wrapper speaks virtlib's types: states come back as
:class:`GuestState`, errors as virtlib errors (:mod:`.errors`), and no
``libvirt`` constant is needed to read them.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import libvirt
import libvirt_qemu

from virtlib.backends.libvirt.errors import (
    STATE_CODES,
    TIMEOUT_CODES,
    UNSUPPORTED_CODES,
    ErrorFactory,
    message,
    translated,
)
from virtlib.errors import VMAgentError, VMAgentTimeoutError, VMError, VMNotFoundError

T = TypeVar("T")

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
    libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: "destroyed",
    libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED: "migrated",
    libvirt.VIR_DOMAIN_SHUTOFF_SAVED: "saved",
    libvirt.VIR_DOMAIN_SHUTOFF_FAILED: "failed",
    libvirt.VIR_DOMAIN_SHUTOFF_FROM_SNAPSHOT: "from snapshot",
    libvirt.VIR_DOMAIN_SHUTOFF_DAEMON: "daemon",
}
CRASHED_REASONS = {
    libvirt.VIR_DOMAIN_CRASHED_UNKNOWN: "crashed",
    libvirt.VIR_DOMAIN_CRASHED_PANICKED: "panicked",
}
PAUSED_REASONS = {
    libvirt.VIR_DOMAIN_PAUSED_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PAUSED_IOERROR: "I/O error",
    libvirt.VIR_DOMAIN_PAUSED_WATCHDOG: "watchdog",
    libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED: "post-copy failed",
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
INTERFACE_SOURCES = (
    libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
    libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
    libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP,
)
IPV4 = libvirt.VIR_IP_ADDR_TYPE_IPV4
#: libvirt errors of snapshot calls that are the snapshot being refused (or failing), not
#: the connection or the domain being gone.
SNAPSHOT_REFUSALS = (
    UNSUPPORTED_CODES
    | STATE_CODES
    | TIMEOUT_CODES
    | {
        libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT,
        libvirt.VIR_ERR_INVALID_DOMAIN_SNAPSHOT,
        libvirt.VIR_ERR_SNAPSHOT_REVERT_RISKY,
    }
)
HMP = libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP
#: libvirt errors of device and block-job calls that are the operation being refused (or
#: failing), not the connection or the domain being gone.
REFUSALS = UNSUPPORTED_CODES | STATE_CODES | TIMEOUT_CODES
BLOCK_JOB_KINDS = {
    libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_PULL: "pull",
    libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_COPY: "copy",
    libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_COMMIT: "commit",
    libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT: "active commit",
}
#: A refusal of a snapshot, device or block-job call, made from libvirt's message.
Refusal = Callable[[str], VMError]


@dataclass(frozen=True)
class GuestState:
    """A domain's state and its reason, as libvirt reports them."""

    state: int
    reason: int

    @property
    def alive(self) -> bool:
        return self.state in ALIVE_STATES

    @property
    def paused(self) -> bool:
        return bool(self.state == libvirt.VIR_DOMAIN_PAUSED)

    @property
    def crashed(self) -> bool:
        return self.state == libvirt.VIR_DOMAIN_CRASHED or (
            self.state in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_PAUSED)
            and self.reason_name == "crashed"
        )

    @property
    def name(self) -> str:
        return STATE_NAMES.get(self.state, str(self.state))

    @property
    def reason_name(self) -> str:
        table = {
            libvirt.VIR_DOMAIN_SHUTOFF: SHUTOFF_REASONS,
            libvirt.VIR_DOMAIN_CRASHED: CRASHED_REASONS,
            libvirt.VIR_DOMAIN_PAUSED: PAUSED_REASONS,
        }.get(self.state, {})
        return table.get(self.reason, str(self.reason))


class Guest:
    """One domain on one URI (see the module docstring)."""

    def __init__(self, uri: str, dom: libvirt.virDomain) -> None:
        self.uri = uri
        self.dom = dom
        self.name = str(dom.name())
        self.uuid = str(dom.UUIDString())

    def _call(
        self,
        what: str,
        call: Callable[[], T],
        overrides: dict[int, ErrorFactory] | None = None,
        default: ErrorFactory | None = None,
    ) -> T:
        with translated(what, self.uri, self.name, overrides, default):
            return call()

    # --- state -----------------------------------------------------------------------------
    def state(self) -> GuestState:
        state, reason = self._call("query the state of", self.dom.state)
        return GuestState(int(state), int(reason))

    def state_or_none(self) -> GuestState | None:
        """The state, or None when the domain is gone."""
        try:
            return self.state()
        except VMNotFoundError:
            return None

    def is_active(self) -> bool:
        return bool(self._call("query", self.dom.isActive))

    def is_persistent(self) -> bool:
        return bool(self._call("query", self.dom.isPersistent))

    def xml(self, migratable: bool = False) -> str:
        flags = libvirt.VIR_DOMAIN_XML_MIGRATABLE if migratable else 0
        return str(self._call("read the XML of", lambda: self.dom.XMLDesc(flags)))

    def info(self) -> tuple[int, int, int, int]:
        """(state, max memory KiB, memory KiB, vCPUs)."""
        state, max_mem, memory, vcpus, _cpu_time = self._call("query", self.dom.info)
        return int(state), int(max_mem), int(memory), int(vcpus)

    # --- lifecycle ---------------------------------------------------------------------------
    def resume(self, default: ErrorFactory | None = None) -> None:
        self._call("resume", self.dom.resume, default=default)

    def suspend(self) -> None:
        self._call("pause", self.dom.suspend)

    def destroy(self) -> None:
        self._call("destroy", self.dom.destroy)

    def undefine(self) -> None:
        self._call("undefine", lambda: self.dom.undefineFlags(UNDEFINE_FLAGS))

    def remove(self) -> None:
        """Destroy and undefine; a domain that is already gone is fine."""
        try:
            persistent = self.is_persistent()  # ask first: a transient domain ends with destroy
            if self.is_active():
                self.destroy()
            if persistent:
                self.undefine()
        except VMNotFoundError:
            return

    def shutdown(self) -> None:
        self._call("shut down", self.dom.shutdown)

    def reset(self) -> None:
        self._call("reset", lambda: self.dom.reset(0))

    def send_keys(self, codes: list[int]) -> None:
        self._call(
            "send keys to",
            lambda: self.dom.sendKey(libvirt.VIR_KEYCODE_SET_LINUX, 0, codes, len(codes), 0),
        )

    def save(self, path: str, xml: str | None = None) -> None:
        """Save the domain to ``path``; ``xml`` is the definition to restore it with (it
        must describe the same guest: virtlib's design holds the NICs QEMU was given
        outside libvirt's API, which libvirt's own definition lacks)."""
        self._call("save", lambda: self.dom.saveFlags(path, xml, 0))

    def memory_dump(self, path: str, compressed: bool = False) -> None:
        """A memory-only core dump (the guest's RAM) into ``path``: raw, or kdump-compressed
        (zlib; crash(8) reads it)."""
        fmt = (
            libvirt.VIR_DOMAIN_CORE_DUMP_FORMAT_KDUMP_ZLIB
            if compressed
            else libvirt.VIR_DOMAIN_CORE_DUMP_FORMAT_RAW
        )
        self._call(
            "dump the memory of",
            lambda: self.dom.coreDumpWithFormat(path, fmt, libvirt.VIR_DUMP_MEMORY_ONLY),
        )

    # --- jobs and migration --------------------------------------------------------------------
    def job_stats(self, completed: bool = False) -> dict[str, Any]:
        """The current (or last completed) job's statistics; {} when there is none."""
        flags = libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED if completed else 0
        try:
            stats = self._call("read the job of", lambda: self.dom.jobStats(flags))
        except VMError:  # no job, no domain, or a driver that cannot say: nothing to report
            return {}
        return dict(stats or {})

    @staticmethod
    def job_running(stats: dict[str, Any]) -> bool:
        return stats.get("type", 0) not in (0, libvirt.VIR_DOMAIN_JOB_NONE)

    def abort_job(self) -> None:
        self._call("abort the job of", self.dom.abortJob)

    def migrate(
        self,
        dest_conn: libvirt.virConnect,
        params: dict[str, Any],
        flags: int,
        default: ErrorFactory | None = None,
    ) -> None:
        self._call("migrate", lambda: self.dom.migrate3(dest_conn, params, flags), default=default)

    def migrate_to_uri(self, dest_uri: str, params: dict[str, Any], flags: int) -> None:
        """Peer-to-peer: the source's libvirtd opens ``dest_uri`` itself
        (virDomainMigrateToURI3 with VIR_MIGRATE_PEER2PEER in ``flags``)."""
        self._call("migrate", lambda: self.dom.migrateToURI3(dest_uri, params, flags))

    # --- devices and addresses -----------------------------------------------------------
    def interface_addresses(self) -> list[dict[str, Any]]:
        """Interfaces with addresses, from the DHCP lease, then the guest agent, then ARP."""
        for source in INTERFACE_SOURCES:
            try:
                found: dict[str, Any] = self._call(
                    "read the addresses of", partial(self.dom.interfaceAddresses, source, 0)
                )
            except VMError:  # this source does not know: ask the next
                continue
            if found:
                return list(found.values())
        return []

    def open_console(self, stream: Any, overrides: dict[int, ErrorFactory] | None = None) -> None:
        self._call(
            "open the console of",
            lambda: self.dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE),
            overrides,
        )

    def screenshot(self, stream: Any) -> bytes:
        """The first screen's picture (QEMU's screen dump, usually PPM) through ``stream`` (a
        blocking stream of this connection)."""
        chunks: list[bytes] = []

        def collect(_stream: Any, data: bytes, _opaque: object) -> int:
            chunks.append(data)
            return len(data)

        with translated("take a screenshot of", self.uri, self.name):
            self.dom.screenshot(stream, 0, 0)
            try:
                stream.recvAll(collect, None)
                stream.finish()
            except libvirt.libvirtError:
                with contextlib.suppress(libvirt.libvirtError):
                    stream.abort()
                raise
        return b"".join(chunks)

    # --- snapshots and metadata ------------------------------------------------------------
    def _snapshot_call(self, what: str, call: Callable[[], T], refused: Refusal) -> T:
        """A snapshot call: refusals and failures become ``refused(libvirt's message)``."""

        def factory(exc: libvirt.libvirtError) -> VMError:
            return refused(message(exc))

        overrides: dict[int, ErrorFactory] = dict.fromkeys(SNAPSHOT_REFUSALS, factory)
        return self._call(what, call, overrides, default=factory)

    def snapshot_create(self, xml: str, disk_only: bool, refused: Refusal) -> None:
        """Take a snapshot (virDomainSnapshotCreateXML), atomically: all disks or none."""
        flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
        if disk_only:
            flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
        self._snapshot_call(
            "take a snapshot of", lambda: self.dom.snapshotCreateXML(xml, flags), refused
        )

    def snapshot_redefine(self, xml: str, current: bool, refused: Refusal) -> None:
        """Give libvirt the record of a snapshot that exists already (REDEFINE)."""
        flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
        if current:
            flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT
        self._snapshot_call(
            "record a snapshot of", lambda: self.dom.snapshotCreateXML(xml, flags), refused
        )

    def snapshot_names(self) -> list[str]:
        """The snapshots libvirt has a record of."""
        found = self._call("list the snapshots of", lambda: self.dom.listAllSnapshots(0))
        return [str(snap.getName()) for snap in found]

    def snapshot_xml(self, name: str) -> str:
        """libvirt's record of one snapshot (its XML)."""
        return str(
            self._call(
                "read a snapshot of", lambda: self.dom.snapshotLookupByName(name, 0).getXMLDesc(0)
            )
        )

    def snapshot_delete(self, name: str, metadata_only: bool, refused: Refusal) -> None:
        """Delete a snapshot (its data too, unless ``metadata_only``); children are kept."""
        flags = libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY if metadata_only else 0
        self._snapshot_call(
            "delete a snapshot of",
            lambda: self.dom.snapshotLookupByName(name, 0).delete(flags),
            refused,
        )

    def snapshot_revert(self, name: str, paused: bool, refused: Refusal) -> None:
        """libvirt's own revert (virDomainRevertToSnapshot)."""
        flags = (
            libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED
            if paused
            else libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING
        )
        self._snapshot_call(
            "revert",
            lambda: self.dom.revertToSnapshot(self.dom.snapshotLookupByName(name, 0), flags),
            refused,
        )

    def monitor_command(self, command: str, refused: Refusal) -> str:
        """One human-monitor (HMP) command through libvirt-qemu; what QEMU answered.

        libvirt marks the domain tainted (custom-monitor) in its log: only for what its
        own API cannot do.
        """
        return str(
            self._snapshot_call(
                f"run {command.split(maxsplit=1)[0]!r} on",
                lambda: libvirt_qemu.qemuMonitorCommand(self.dom, command, HMP),
                refused,
            )
        )

    # --- devices on the running guest (hotplug, media, vCPUs, memory) ------------------------
    def _affect(self, persistent: bool) -> int:
        """The running domain; with ``persistent`` its config too, where it has one (a
        transient domain has none: virtlib keeps the change in the VM's params)."""
        live, config = int(libvirt.VIR_DOMAIN_AFFECT_LIVE), int(libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        return live | (config if persistent and self.is_persistent() else 0)

    def attach_device(self, xml: str, persistent: bool, refused: Refusal) -> None:
        """Attach the device of ``xml`` to the running domain (and its config)."""
        self._refusable(
            "attach a device to",
            lambda: self.dom.attachDeviceFlags(xml, self._affect(persistent)),
            refused,
        )

    def detach_device(self, xml: str, persistent: bool, refused: Refusal) -> None:
        """Ask the guest to release the device of ``xml``; libvirt removes it when the
        guest has (the device-removed event), which may be after this returns."""
        self._refusable(
            "detach a device from",
            lambda: self.dom.detachDeviceFlags(xml, self._affect(persistent)),
            refused,
        )

    def update_device(self, xml: str, persistent: bool, refused: Refusal) -> None:
        """Change a device in place (a CD-ROM's medium), even when the guest locked it."""
        flags = self._affect(persistent) | libvirt.VIR_DOMAIN_DEVICE_MODIFY_FORCE
        self._refusable(
            "change a device of", lambda: self.dom.updateDeviceFlags(xml, flags), refused
        )

    def set_vcpus(
        self, count: int, guest: bool, persistent: bool, refused: Refusal, timed_out: Refusal
    ) -> None:
        """Plug or unplug vCPUs to ``count`` (``guest``: online or offline them in the guest
        through the guest agent instead).  libvirt waiting in vain for an unplugged vCPU
        to go is ``timed_out``."""
        flags = libvirt.VIR_DOMAIN_VCPU_GUEST if guest else self._affect(persistent)

        def factory(exc: libvirt.libvirtError) -> VMError:
            return refused(message(exc))

        overrides: dict[int, ErrorFactory] = dict.fromkeys(REFUSALS, factory)
        overrides[libvirt.VIR_ERR_OPERATION_TIMEOUT] = lambda e: timed_out(message(e))
        self._call(
            "set the vCPUs of", lambda: self.dom.setVcpusFlags(count, flags), overrides, factory
        )

    def set_memory(self, kib: int, persistent: bool, refused: Refusal) -> None:
        """The balloon's target (KiB)."""
        self._refusable(
            "set the memory of",
            lambda: self.dom.setMemoryFlags(kib, self._affect(persistent)),
            refused,
        )

    def qmp(self, command: str, arguments: dict[str, Any], refused: Refusal) -> Any:
        """One QMP command through libvirt-qemu (for what libvirt's API cannot do: a
        user-networking NIC); its ``return`` value.  QEMU's refusal (an ``error``
        answer) becomes ``refused(its class and description)``.  libvirt marks the
        domain tainted (custom-monitor) in its log."""
        text = json.dumps({"execute": command, "arguments": arguments})
        answer = json.loads(
            self._refusable(
                f"run {command!r} on",
                lambda: libvirt_qemu.qemuMonitorCommand(self.dom, text, 0),
                refused,
            )
        )
        error = answer.get("error")
        if error:
            raise refused(f"{command}: {error.get('class')}: {error.get('desc')}")
        return answer.get("return")

    def set_metadata(self, element: str, key: str, namespace: str) -> None:
        """Replace the live domain's metadata element in ``namespace`` (virDomainSetMetadata)."""
        self._call(
            "write the metadata of",
            lambda: self.dom.setMetadata(
                libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                element,
                key,
                namespace,
                libvirt.VIR_DOMAIN_AFFECT_LIVE,
            ),
        )

    # --- block jobs ---------------------------------------------------------------------------
    def block_commit(
        self,
        disk: str,
        base: str | None,
        top: str | None,
        mib_s: int,
        active: bool,
        refused: Refusal,
    ) -> None:
        """Start merging ``top`` (the active image when ``active``) into ``base``."""
        flags = libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE if active else 0
        self._refusable(
            "start a block commit on",
            lambda: self.dom.blockCommit(disk, base, top, mib_s, flags),
            refused,
        )

    def block_pull(self, disk: str, base: str | None, mib_s: int, refused: Refusal) -> None:
        """Start pulling the backing images' data (down to ``base``) into the active image."""
        self._refusable(
            "start a block pull on", lambda: self.dom.blockRebase(disk, base, mib_s, 0), refused
        )

    def block_copy(
        self, disk: str, dest_xml: str, bytes_s: int, shallow: bool, refused: Refusal
    ) -> None:
        """Start mirroring the disk to the new image described by ``dest_xml``."""
        params = {libvirt.VIR_DOMAIN_BLOCK_COPY_BANDWIDTH: bytes_s} if bytes_s else {}
        flags = libvirt.VIR_DOMAIN_BLOCK_COPY_SHALLOW if shallow else 0
        self._refusable(
            "start a block copy on",
            lambda: self.dom.blockCopy(disk, dest_xml, params, flags),
            refused,
        )

    def block_job(self, disk: str) -> tuple[str, int, int, int] | None:
        """The disk's running block job: (its kind, bytes done, bytes in all, MiB/s);
        None when it has none."""
        info = self._call("read the block job of", lambda: self.dom.blockJobInfo(disk, 0))
        if not info:
            return None
        kind = BLOCK_JOB_KINDS.get(int(info.get("type", 0)), "block job")
        return kind, int(info.get("cur", 0)), int(info.get("end", 0)), int(info.get("bandwidth", 0))

    def block_job_abort(self, disk: str, pivot: bool, refused: Refusal) -> None:
        """End the disk's block job; with ``pivot`` a ready copy or active commit switches
        the disk over to its result."""
        flags = libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT if pivot else 0
        self._refusable(
            "end the block job of", lambda: self.dom.blockJobAbort(disk, flags), refused
        )

    def _refusable(self, what: str, call: Callable[[], T], refused: Refusal) -> T:
        """A call whose refusals and failures become ``refused(libvirt's message)``; a gone
        domain or connection stays what it is."""

        def factory(exc: libvirt.libvirtError) -> VMError:
            return refused(message(exc))

        overrides: dict[int, ErrorFactory] = dict.fromkeys(REFUSALS, factory)
        return self._call(what, call, overrides, default=factory)

    # --- the guest agent -----------------------------------------------------------------
    def _agent_call(self, what: str, call: Callable[[], T]) -> T:
        """Agent errors: not answering -> VMAgentTimeoutError; refusals -> VMAgentError."""
        agent_errors: dict[int, ErrorFactory] = {
            libvirt.VIR_ERR_AGENT_UNRESPONSIVE: lambda e: VMAgentTimeoutError(
                f"the guest agent of {self.name!r} does not answer ({what}): {message(e)}"
            ),
            libvirt.VIR_ERR_AGENT_UNSYNCED: lambda e: VMAgentTimeoutError(
                f"the guest agent of {self.name!r} is not in step ({what}): {message(e)}"
            ),
        }
        return self._call(
            what,
            call,
            agent_errors,
            default=lambda e: VMAgentError(f"{what} on {self.name!r}: {message(e)}"),
        )

    def agent_command(self, command: dict[str, Any], timeout: float) -> Any:
        """One guest-agent command (QMP JSON); its ``return`` value."""
        text = json.dumps(command)
        seconds = max(1, int(timeout))
        answer = self._agent_call(
            f"guest agent {command.get('execute')}",
            lambda: libvirt_qemu.qemuAgentCommand(self.dom, text, seconds, 0),
        )
        try:
            return json.loads(answer).get("return")
        except (ValueError, AttributeError) as exc:
            raise VMAgentError(f"the guest agent of {self.name!r} answered {answer!r}") from exc

    def fs_freeze(self) -> int:
        return int(self._agent_call("freeze the filesystems", lambda: self.dom.fsFreeze(None, 0)))

    def fs_thaw(self) -> int:
        return int(self._agent_call("thaw the filesystems", lambda: self.dom.fsThaw(None, 0)))

    def set_user_password(self, user: str, password: str) -> None:
        self._agent_call(
            f"set the password of {user!r}", lambda: self.dom.setUserPassword(user, password, 0)
        )

    def guest_os_info(self) -> dict[str, str]:
        info = self._agent_call(
            "read the OS of", lambda: self.dom.guestInfo(libvirt.VIR_DOMAIN_GUEST_INFO_OS, 0)
        )
        return {str(k).removeprefix("os."): str(v) for k, v in (info or {}).items()}

    def set_time_now(self) -> None:
        now = time.time()
        seconds = int(now)
        self._agent_call(
            "set the clock of",
            lambda: self.dom.setTime(
                {"seconds": seconds, "nseconds": int((now - seconds) * 1e9)}, 0
            ),
        )

    def agent_shutdown(self) -> None:
        self._agent_call(
            "shut down (agent)",
            lambda: self.dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT),
        )

    def agent_reboot(self) -> None:
        self._agent_call(
            "reboot (agent)", lambda: self.dom.reboot(libvirt.VIR_DOMAIN_REBOOT_GUEST_AGENT)
        )

    def __repr__(self) -> str:
        return f"<Guest {self.name!r} on {self.uri}>"
