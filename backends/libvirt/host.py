"""One owner per libvirt URI: the connection, the event loop, domain events, reconnects.

- libvirt's default event loop is registered before the first connection and
  run in a daemon thread (console streams and events need it);
- remote URIs get keepalive, so a dead peer is noticed;
- a close callback notices libvirtd going away; a reconnect thread opens a
  new connection with back-off, re-registers the event callbacks and tells
  listeners (VMs re-attach their consoles), so running VMs stay manageable.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import libvirt
from lxml import etree

from virtlib.accel import AccelChoice, decide, local_choice
from virtlib.backends.libvirt.errors import translated
from virtlib.errors import HypervisorConnectionError, VMParamsError
from virtlib.spec import UUID_RE
from virtlib.waiting import Deadline, backoff, sleep_within

log = logging.getLogger(__name__)

_event_loop_lock = threading.Lock()
_event_loop_threads: list[threading.Thread] = []


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


@dataclass(frozen=True)
class DomainEvent:
    """A lifecycle or reboot event of one domain."""

    uuid: str
    kind: str  # "lifecycle" or "reboot"
    event: int = -1
    detail: int = -1


def is_local_uri(uri: str) -> bool:
    """True for URIs served on this machine (no host part; test:// included)."""
    return not urllib.parse.urlsplit(uri).hostname


class Host:
    """The connection to one libvirt URI, shared by every VM of this process."""

    _hosts: ClassVar[dict[str, Host]] = {}
    _hosts_lock: ClassVar[threading.Lock] = threading.Lock()
    RECONNECT_TIMEOUT: ClassVar[float] = 120.0

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._lock = threading.RLock()
        self._conn: libvirt.virConnect | None = None
        self._callback_ids: list[int] = []
        self._subscribers: dict[str, list[queue.Queue[DomainEvent]]] = {}
        self._reconnect_listeners: list[Callable[[], None]] = []
        self._reconnecting = False
        self._closing = False
        self.generation = 0
        ensure_event_loop()
        self._connect()

    @classmethod
    def get(cls, uri: str) -> Host:
        """The Host for ``uri`` (made on first use)."""
        with cls._hosts_lock:
            host = cls._hosts.get(uri)
            if host is None:
                host = cls._hosts[uri] = Host(uri)
            return host

    @classmethod
    def discard(cls, uri: str) -> None:
        """Forget the Host of ``uri`` (its daemon is going away on purpose: no reconnect)."""
        with cls._hosts_lock:
            host = cls._hosts.pop(uri, None)
        if host is None:
            return
        with host._lock:
            host._closing = True
            conn, host._conn = host._conn, None
        if conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                conn.unregisterCloseCallback()
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()

    # --- the connection ---------------------------------------------------------------
    def _connect(self) -> None:
        with translated(
            "connect", self.uri, default=lambda e: HypervisorConnectionError(self.uri, str(e))
        ):
            conn = libvirt.open(self.uri)
        if not is_local_uri(self.uri) or self.uri.startswith(("qemu", "xen")):
            try:
                conn.setKeepAlive(5, 3)
            except libvirt.libvirtError:
                log.debug("%s: keepalive not supported", self.uri)
        try:
            conn.registerCloseCallback(self._on_close, None)
        except libvirt.libvirtError:
            log.debug("%s: close callback not supported", self.uri)
        self._conn = conn
        self._register_events(conn)
        self.generation += 1

    def _register_events(self, conn: libvirt.virConnect) -> None:
        self._callback_ids = []
        try:
            self._callback_ids.append(
                conn.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None
                )
            )
            self._callback_ids.append(
                conn.domainEventRegisterAny(
                    None, libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._on_reboot, None
                )
            )
        except libvirt.libvirtError:
            log.debug("%s: domain events not supported", self.uri)

    @property
    def conn(self) -> libvirt.virConnect:
        """The live connection; waits for a reconnect when libvirtd went away."""
        with self._lock:
            conn = self._conn
        if conn is not None:
            try:
                if conn.isAlive():
                    return conn
            except libvirt.libvirtError:
                pass
        self._reconnect_now()
        with self._lock:
            if self._conn is None:
                raise HypervisorConnectionError(self.uri, "the connection was closed")
            return self._conn

    def _on_close(self, _conn: libvirt.virConnect, reason: int, _opaque: object) -> None:
        log.warning("%s: connection closed (reason %d); reconnecting", self.uri, reason)
        with self._lock:
            if self._reconnecting or self._closing:
                return
            self._reconnecting = True
        threading.Thread(target=self._reconnect_loop, name="libvirt-reconnect", daemon=True).start()

    def _reconnect_loop(self) -> None:
        try:
            self._reconnect_now()
        except HypervisorConnectionError as exc:
            log.error("%s: %s", self.uri, exc)
        finally:
            with self._lock:
                self._reconnecting = False

    def _reconnect_now(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return
                except libvirt.libvirtError:
                    pass
            deadline = Deadline(self.RECONNECT_TIMEOUT)
            for delay in backoff(0.1, 2.0):
                try:
                    self._connect()
                    break
                except HypervisorConnectionError:
                    if deadline.expired():
                        raise
                sleep_within(delay, deadline)
            listeners = list(self._reconnect_listeners)
        log.info("%s: reconnected", self.uri)
        for listener in listeners:
            try:
                listener()
            except Exception:
                log.exception("%s: reconnect listener failed", self.uri)

    def add_reconnect_listener(self, listener: Callable[[], None]) -> None:
        with self._lock:
            self._reconnect_listeners.append(listener)

    def remove_reconnect_listener(self, listener: Callable[[], None]) -> None:
        with self._lock:
            if listener in self._reconnect_listeners:
                self._reconnect_listeners.remove(listener)

    # --- domain events ----------------------------------------------------------------
    def _publish(self, event: DomainEvent) -> None:
        with self._lock:
            subscribers = list(self._subscribers.get(event.uuid, ()))
        for q in subscribers:
            q.put(event)

    def _on_lifecycle(
        self, _c: object, dom: libvirt.virDomain, event: int, detail: int, _o: object
    ) -> None:
        self._publish(DomainEvent(dom.UUIDString(), "lifecycle", event, detail))

    def _on_reboot(self, _c: object, dom: libvirt.virDomain, _o: object) -> None:
        self._publish(DomainEvent(dom.UUIDString(), "reboot"))

    def subscribe(self, uuid: str) -> queue.Queue[DomainEvent]:
        """A queue receiving the events of one domain; subscribe *before* acting."""
        q: queue.Queue[DomainEvent] = queue.Queue()
        with self._lock:
            self._subscribers.setdefault(uuid, []).append(q)
        return q

    def unsubscribe(self, uuid: str, q: queue.Queue[DomainEvent]) -> None:
        with self._lock:
            subscribers = self._subscribers.get(uuid, [])
            if q in subscribers:
                subscribers.remove(q)
            if not subscribers:
                self._subscribers.pop(uuid, None)

    # --- host facts ---------------------------------------------------------------------
    def capabilities(self) -> etree._Element:
        with translated("read the capabilities of", self.uri, self.uri):
            xml = self.conn.getCapabilities()
        return etree.fromstring(
            xml.encode(), etree.XMLParser(resolve_entities=False, no_network=True)
        )

    def accel_choice(self, requested: str = "auto") -> AccelChoice:
        """KVM or TCG for this host (local: device and CPU flags; remote: libvirt's view)."""
        if is_local_uri(self.uri):
            return local_choice(requested)
        caps = self.capabilities()
        flags = frozenset(xpath_strings(caps, "/capabilities/host/cpu/feature/@name"))
        kvm = xpath_strings(caps, "/capabilities/guest/arch/domain[@type='kvm']/@type")
        return decide(requested, None if kvm else f"{self.uri} offers no KVM domains", flags)

    def qemu_user(self) -> tuple[int, int] | None:
        """(uid, gid) libvirt runs QEMU as (its DAC base label), if it says."""
        caps = self.capabilities()
        for label in xpath_strings(caps, "/capabilities/host/secmodel[model='dac']/baselabel"):
            uid, _, gid = label.partition(":")
            try:
                return int(uid.lstrip("+")), int(gid.lstrip("+"))
            except ValueError:
                continue
        return None

    def free_hugepages(self, size_kib: int = 2048) -> int:
        """Free huge pages of ``size_kib`` on the host (all NUMA cells)."""
        try:
            cells = self.conn.getFreePages([size_kib], -1, 1) or {}
        except libvirt.libvirtError:
            try:
                cells = self.conn.getFreePages([size_kib], 0, 1) or {}
            except libvirt.libvirtError:
                return 0
        return sum(int(pages.get(size_kib, 0)) for pages in cells.values())

    def hypervisor_kind(self) -> str:
        """The driver behind the URI: "qemu", "xen", "test", ..."""
        with translated("query", self.uri, self.uri):
            return str(self.conn.getType()).lower()

    def lookup(self, key: str) -> Any:
        """A virDomain by UUID or name; VMNotFoundError when there is none."""
        with translated("look up", self.uri, key):
            if UUID_RE.match(key.lower()):
                return self.conn.lookupByUUIDString(key)
            return self.conn.lookupByName(key)


def xpath_strings(root: etree._Element, expression: str) -> list[str]:
    """The string values (attribute values, element texts) an XPath expression selects."""
    result = root.xpath(expression)
    if not isinstance(result, list):
        return []
    return [item.text or "" if isinstance(item, etree._Element) else str(item) for item in result]


def require_uri(uri: str) -> str:
    if "://" not in uri:
        raise VMParamsError(f"parameter 'connect_uri' is not a libvirt URI: {uri!r}")
    return uri
