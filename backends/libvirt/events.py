"""libvirt's event loop thread, and domain events handed to whoever waits for them.

libvirt's default event loop is registered before the first connection and run
in one daemon thread shared by every connection and stream of the process
(console streams and domain events need it).  Nothing that runs on it may
block: the callbacks here only build a :class:`DomainEvent` and hand it to the
subscribers' queues and watchers, under a lock that nobody holds for longer
than a list copy.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import libvirt
import libvirt_qemu

from virtlib.waiting import Deadline

log = logging.getLogger(__name__)

_event_loop_lock = threading.Lock()
_event_loop_threads: list[threading.Thread] = []

LIFECYCLE, REBOOT, AGENT, DEVICE_REMOVED = "lifecycle", "reboot", "agent", "device-removed"
BLOCK_JOB = "block-job"
QEMU_DEVICE_DELETED = "qemu-device-deleted"
"""QEMU's own DEVICE_DELETED (a device libvirt does not know: a user-networking NIC
virtlib plugged through QMP), where libvirt's device-removed is for its own devices."""

Watcher = Callable[["DomainEvent"], None]
T = TypeVar("T")


def _ignore_libvirt_errors(_ctx: object, _err: object) -> None:
    """libvirt prints every error to stderr by default; virtlib raises them instead."""


def ensure_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread (once)."""
    with _event_loop_lock:
        if _event_loop_threads:
            return
        libvirt.registerErrorHandler(_ignore_libvirt_errors, None)
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        thread = threading.Thread(target=run, name="libvirt-event-loop", daemon=True)
        thread.start()
        _event_loop_threads.append(thread)


def on_event_loop() -> bool:
    """True when called from libvirt's event-loop thread (where nothing may block)."""
    return threading.current_thread() in _event_loop_threads


@dataclass(frozen=True)
class DomainEvent:
    """An event of one domain: ``kind`` is lifecycle, reboot, agent, device-removed,
    qemu-device-deleted or block-job (``event`` the job's type, ``detail`` its status)."""

    uuid: str
    kind: str
    event: int = -1
    detail: int = -1
    device: str = ""  # the alias (QEMU's id) of a removed device; a block job's disk target

    @property
    def stopped(self) -> bool:
        """The domain stopped (shut down, destroyed, crashed, migrated, saved, failed)."""
        return self.kind == LIFECYCLE and self.event in (
            libvirt.VIR_DOMAIN_EVENT_STOPPED,
            libvirt.VIR_DOMAIN_EVENT_UNDEFINED,
        )

    @property
    def crashed(self) -> bool:
        """The guest crashed (a panic through pvpanic) or its emulator did."""
        if self.kind != LIFECYCLE:
            return False
        if self.event == libvirt.VIR_DOMAIN_EVENT_CRASHED:
            return True
        return bool(
            self.event == libvirt.VIR_DOMAIN_EVENT_STOPPED
            and self.detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED
        )

    @property
    def stop_reason(self) -> str | None:
        """Why the domain stopped, in a word ("crashed", "killed", "shutdown", ...); None for
        events that are not a stop.  QEMU ending without the guest shutting down (SIGKILL,
        an emulator crash) is "killed"."""
        if self.crashed:
            return "crashed"
        if not self.stopped:
            return None
        return STOP_DETAILS.get(self.detail, "stopped")

    @property
    def block_job_ended(self) -> bool:
        """A block job completed, failed or was cancelled (READY is not an end)."""
        return self.kind == BLOCK_JOB and self.detail in (
            libvirt.VIR_DOMAIN_BLOCK_JOB_COMPLETED,
            libvirt.VIR_DOMAIN_BLOCK_JOB_FAILED,
            libvirt.VIR_DOMAIN_BLOCK_JOB_CANCELED,
        )

    @property
    def block_job_ready(self) -> bool:
        """A mirror (copy, active commit) has everything and waits for its pivot."""
        return self.kind == BLOCK_JOB and self.detail == libvirt.VIR_DOMAIN_BLOCK_JOB_READY

    @property
    def block_job_completed(self) -> bool:
        return self.kind == BLOCK_JOB and self.detail == libvirt.VIR_DOMAIN_BLOCK_JOB_COMPLETED

    @property
    def agent_connected(self) -> bool:
        return (
            self.kind == AGENT
            and self.event == libvirt.VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_CONNECTED
        )


STOP_DETAILS = {
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: "destroyed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED: "migrated",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED: "saved",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: "killed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT: "from snapshot",
}


class EventHub:
    """Subscribers of one connection's domain events, by domain UUID.

    ``subscribe`` gives a queue for a caller that waits (subscribe *before*
    acting); ``watch`` registers a callback run on the event-loop thread, which
    must only record what it is told.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, list[queue.Queue[DomainEvent]]] = {}
        self._watchers: dict[str, list[Watcher]] = {}

    def subscribe(self, uuid: str) -> queue.Queue[DomainEvent]:
        q: queue.Queue[DomainEvent] = queue.Queue()
        with self._lock:
            self._queues.setdefault(uuid, []).append(q)
        return q

    def unsubscribe(self, uuid: str, q: queue.Queue[DomainEvent]) -> None:
        with self._lock:
            _remove(self._queues, uuid, q)

    def watch(self, uuid: str, watcher: Watcher) -> None:
        with self._lock:
            self._watchers.setdefault(uuid, []).append(watcher)

    def unwatch(self, uuid: str, watcher: Watcher) -> None:
        with self._lock:
            _remove(self._watchers, uuid, watcher)

    def publish(self, event: DomainEvent) -> None:
        with self._lock:
            queues = list(self._queues.get(event.uuid, ()))
            watchers = list(self._watchers.get(event.uuid, ()))
        for watcher in watchers:
            try:
                watcher(event)
            except Exception:  # a watcher's bug must not kill the event loop
                log.exception("event watcher failed for %s", event)
        for q in queues:
            q.put(event)

    # --- libvirt callbacks (on the event-loop thread) -----------------------------------
    def on_lifecycle(
        self, _c: object, dom: libvirt.virDomain, event: int, detail: int, _o: object
    ) -> None:
        self.publish(DomainEvent(dom.UUIDString(), LIFECYCLE, event, detail))

    def on_reboot(self, _c: object, dom: libvirt.virDomain, _o: object) -> None:
        self.publish(DomainEvent(dom.UUIDString(), REBOOT))

    def on_agent(
        self, _c: object, dom: libvirt.virDomain, state: int, reason: int, _o: object
    ) -> None:
        self.publish(DomainEvent(dom.UUIDString(), AGENT, state, reason))

    def on_device_removed(self, _c: object, dom: libvirt.virDomain, alias: str, _o: object) -> None:
        self.publish(DomainEvent(dom.UUIDString(), DEVICE_REMOVED, device=alias))

    def on_block_job(
        self, _c: object, dom: libvirt.virDomain, disk: str, job: int, status: int, _o: object
    ) -> None:
        self.publish(DomainEvent(dom.UUIDString(), BLOCK_JOB, job, status, device=disk))

    def on_qemu_event(
        self,
        _c: object,
        dom: libvirt.virDomain,
        event: str,
        _seconds: int,
        _micros: int,
        details: str | None,
        _o: object,
    ) -> None:
        """QEMU's DEVICE_DELETED of a device with an id (its parts have only a path)."""
        try:
            device = json.loads(details or "{}").get("device", "")
        except ValueError:
            return
        if event == "DEVICE_DELETED" and device:
            self.publish(DomainEvent(dom.UUIDString(), QEMU_DEVICE_DELETED, device=device))

    def register(self, conn: libvirt.virConnect, uri: str) -> None:
        """Register the callbacks on a (new) connection; events a driver lacks are skipped."""
        for event_id, callback in (
            (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self.on_lifecycle),
            (libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self.on_reboot),
            (libvirt.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE, self.on_agent),
            (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, self.on_device_removed),
            (libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2, self.on_block_job),
        ):
            try:
                conn.domainEventRegisterAny(None, event_id, callback, None)
            except libvirt.libvirtError:
                log.debug("%s: domain event %d not supported", uri, event_id)
        if conn.getType() == "QEMU":
            try:
                libvirt_qemu.qemuMonitorEventRegister(
                    conn, None, "DEVICE_DELETED", self.on_qemu_event, None, 0
                )
            except libvirt.libvirtError:
                log.debug("%s: QEMU monitor events not supported", uri)


def _remove(table: dict[str, list[T]], key: str, item: T) -> None:
    items = table.get(key, [])
    if item in items:
        items.remove(item)
    if not items:
        table.pop(key, None)


def wait_event(
    events: queue.Queue[DomainEvent], timeout: float, wanted: Callable[[DomainEvent], bool]
) -> DomainEvent | None:
    """The first event from ``events`` that is ``wanted`` within ``timeout`` s, else None."""
    deadline = Deadline(timeout)
    while not deadline.expired():
        try:
            event = events.get(timeout=deadline.remaining())
        except queue.Empty:
            return None
        if wanted(event):
            return event
    return None
