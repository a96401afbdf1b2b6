"""One owner per libvirt URI: the connection, its events, reconnects, and every call on it.

- :meth:`Host.get` finds or makes the Host of a URI under a class lock held only
  for the dictionary; connecting happens outside it, under the URI's own lock,
  so one slow or dead URI never delays another;
- remote URIs get keepalive, so a dead peer is noticed; a close callback (on
  libvirt's event-loop thread) only flags the connection and starts a
  reconnect thread, which opens a new connection with back-off, re-registers
  the event callbacks and then tells listeners (VMs re-attach their consoles);
- the state lock guards the connection and its generation and is never held
  across a sleep, a connect or a libvirt call;
- every call on the connection is a method here that translates libvirt's
  errors (:mod:`.errors`); domains come back wrapped as :class:`~.guest.Guest`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import libvirt
from lxml import etree

from virtlib.accel import AccelChoice, decide, local_choice
from virtlib.backends.libvirt import storage_xml
from virtlib.backends.libvirt.errors import ErrorFactory, message, translated
from virtlib.backends.libvirt.events import EventHub, ensure_event_loop
from virtlib.backends.libvirt.guest import Guest
from virtlib.errors import HypervisorConnectionError, VMCreateError, VMParamsError
from virtlib.spec import UUID_RE
from virtlib.waiting import Deadline, backoff, sleep_within

log = logging.getLogger(__name__)

XML_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


def is_local_uri(uri: str) -> bool:
    """True for URIs served on this machine (no host part; test:// included)."""
    return not urllib.parse.urlsplit(uri).hostname


def require_uri(uri: str) -> str:
    if "://" not in uri:
        raise VMParamsError(f"parameter 'connect_uri' is not a libvirt URI: {uri!r}")
    return uri


def _connection_error(uri: str) -> ErrorFactory:
    return lambda e: HypervisorConnectionError(uri, message(e))


class Host:
    """The connection to one libvirt URI, shared by every VM of this process."""

    _hosts: ClassVar[dict[str, Host]] = {}
    _hosts_lock: ClassVar[threading.Lock] = threading.Lock()
    RECONNECT_TIMEOUT: ClassVar[float] = 120.0

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.events = EventHub()
        self._state_lock = threading.Lock()  # never held across blocking work
        self._reconnected = threading.Condition(self._state_lock)
        self._connect_lock = (
            threading.Lock()
        )  # one connector per URI; the event loop never takes it
        self._conn: libvirt.virConnect | None = None
        self._reconnect_listeners: list[Callable[[], None]] = []
        self._reconnecting = False
        self._closing = False
        self.generation = 0

    @classmethod
    def get(cls, uri: str) -> Host:
        """The connected Host for ``uri`` (made on first use).

        :raises HypervisorConnectionError: the URI does not answer.
        """
        with cls._hosts_lock:
            host = cls._hosts.get(uri)
            if host is None:
                host = cls._hosts[uri] = Host(uri)
        host._ensure_connected()
        return host

    @classmethod
    def discard(cls, uri: str) -> None:
        """Forget the Host of ``uri`` (its daemon is going away on purpose: no reconnect)."""
        with cls._hosts_lock:
            host = cls._hosts.pop(uri, None)
        if host is None:
            return
        with host._state_lock:
            host._closing = True
            conn, host._conn = host._conn, None
            host._reconnected.notify_all()
        if conn is not None:
            _close_quietly(conn)

    # --- the connection -------------------------------------------------------------------
    def _open(self) -> libvirt.virConnect:
        """A new connection with keepalive, close callback and event callbacks (blocking)."""
        ensure_event_loop()
        with translated("connect", self.uri, default=_connection_error(self.uri)):
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
        self.events.register(conn, self.uri)
        return conn

    def _ensure_connected(self) -> None:
        with self._state_lock:
            if self._conn is not None:
                return
        with self._connect_lock:
            with self._state_lock:
                if self._conn is not None:
                    return
                if self._closing:
                    raise HypervisorConnectionError(self.uri, "the connection was closed")
            conn = self._open()
            self._install(conn)

    def _install(self, conn: libvirt.virConnect) -> None:
        with self._state_lock:
            old, self._conn = self._conn, conn
            self.generation += 1
            self._reconnected.notify_all()
        if old is not None and old is not conn:
            _close_quietly(old)

    @property
    def conn(self) -> libvirt.virConnect:
        """The live connection; reconnects (or waits for the reconnect) when libvirtd went away."""
        with self._state_lock:
            conn = self._conn
        if conn is not None and _alive(conn):
            return conn
        self._reconnect(self.RECONNECT_TIMEOUT)
        with self._state_lock:
            if self._conn is None:
                raise HypervisorConnectionError(self.uri, "the connection was closed")
            return self._conn

    def _on_close(self, _conn: libvirt.virConnect, reason: int, _opaque: object) -> None:
        """On the event-loop thread: flag and hand the reconnect to a thread of its own."""
        with self._state_lock:
            if self._reconnecting or self._closing:
                return
            self._reconnecting = True
        log.warning("%s: connection closed (reason %d); reconnecting", self.uri, reason)
        threading.Thread(target=self._reconnect_loop, name="libvirt-reconnect", daemon=True).start()

    def _reconnect_loop(self) -> None:
        try:
            self._reconnect(self.RECONNECT_TIMEOUT)
        except HypervisorConnectionError as exc:
            log.error("%s: %s", self.uri, exc)
        finally:
            with self._state_lock:
                self._reconnecting = False

    def _reconnect(self, timeout: float) -> None:
        """Open a new connection with back-off until ``timeout``, then tell the listeners.

        Only this URI's connect lock is held while connecting and sleeping; a
        second caller waits for the first one's result instead of connecting too.
        """
        deadline = Deadline(timeout)
        if not self._connect_lock.acquire(timeout=timeout):
            raise HypervisorConnectionError(self.uri, f"no reconnect within {timeout:g} s")
        try:
            with self._state_lock:
                current = self._conn
                if self._closing:
                    raise HypervisorConnectionError(self.uri, "the connection was closed")
            if current is not None and _alive(current):
                return  # another thread reconnected meanwhile
            for delay in backoff(0.1, 2.0):
                try:
                    conn = self._open()
                    break
                except HypervisorConnectionError:
                    if deadline.expired() or self._discarded():
                        raise
                sleep_within(delay, deadline)
            if self._discarded():  # discard() came while connecting: no one wants it now
                _close_quietly(conn)
                raise HypervisorConnectionError(self.uri, "the connection was closed")
            self._install(conn)
            with self._state_lock:
                listeners = list(self._reconnect_listeners)
        finally:
            self._connect_lock.release()
        log.info("%s: reconnected", self.uri)
        for listener in listeners:
            try:
                listener()
            except Exception:
                log.exception("%s: reconnect listener failed", self.uri)

    def _discarded(self) -> bool:
        with self._state_lock:
            return self._closing

    def add_reconnect_listener(self, listener: Callable[[], None]) -> None:
        with self._state_lock:
            self._reconnect_listeners.append(listener)

    def remove_reconnect_listener(self, listener: Callable[[], None]) -> None:
        with self._state_lock:
            if listener in self._reconnect_listeners:
                self._reconnect_listeners.remove(listener)

    # --- domains ------------------------------------------------------------------------------
    def guest(self, dom: libvirt.virDomain) -> Guest:
        return Guest(self.uri, dom)

    def lookup(self, key: str) -> Guest:
        """A domain by UUID or name; VMNotFoundError when there is none."""
        with translated("look up", self.uri, key):
            if UUID_RE.match(key.lower()):
                return self.guest(self.conn.lookupByUUIDString(key))
            return self.guest(self.conn.lookupByName(key))

    def guests(self) -> list[Guest]:
        """Every domain of the host, running or defined."""
        with translated("list the domains of", self.uri, self.uri):
            return [self.guest(dom) for dom in self.conn.listAllDomains()]

    def create_guest(self, xml: str, paused: bool) -> Guest:
        """Start a transient domain; ``paused`` keeps its CPUs stopped.

        Drivers without the start-paused flag (libvirt's test driver) start it and
        pause it right after.

        :raises VMCreateError: libvirt refused (``cmd`` the XML, ``status`` the code).
        """

        def refused(exc: libvirt.libvirtError) -> VMCreateError:
            return VMCreateError(xml, exc.get_error_code(), message(exc))

        conn = self.conn
        flags = libvirt.VIR_DOMAIN_START_PAUSED if paused else 0
        try:
            return self.guest(conn.createXML(xml, flags))
        except libvirt.libvirtError as exc:
            if not paused or exc.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
                raise refused(exc) from exc
        with translated("create", self.uri, "", default=refused):
            dom = conn.createXML(xml, 0)
            dom.suspend()
        return self.guest(dom)

    def restore(self, path: str, name: str, xml: str | None = None) -> None:
        """Start a domain again, paused, from a file written by Guest.save()."""
        with translated("restore", self.uri, name):
            self.conn.restoreFlags(path, xml, libvirt.VIR_DOMAIN_SAVE_PAUSED)

    def saved_xml(self, path: str, name: str = "") -> str:
        """The domain XML inside a save file."""
        with translated("read the saved state", self.uri, name or path):
            return str(self.conn.saveImageGetXMLDesc(path, 0))

    def new_stream(self, blocking: bool = False) -> Any:
        """A stream on the connection: nonblocking (read by the event loop) by default."""
        with translated("open a stream on", self.uri, self.uri):
            return self.conn.newStream(0 if blocking else libvirt.VIR_STREAM_NONBLOCK)

    # --- storage ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _pool(self, directory: str) -> Iterator[Any]:
        """The storage pool over ``directory``: libvirt's own, else a transient one for the
        duration (calls inside are translated by the caller)."""
        conn = self.conn
        try:
            pool = conn.storagePoolLookupByTargetPath(directory)
        except libvirt.libvirtError:
            pool = conn.storagePoolCreateXML(storage_xml.pool(directory), 0)
            try:
                yield pool
            finally:
                with contextlib.suppress(libvirt.libvirtError):
                    pool.destroy()
            return
        pool.refresh(0)
        yield pool

    def create_volume(
        self, path: str, fmt: str, capacity: int, backing: tuple[str, str] | None = None
    ) -> None:
        """Create an image file at ``path`` on this host through libvirt's storage API (so it
        works on a remote host too): ``capacity`` bytes, or an overlay over ``backing``
        (path, format)."""
        with (
            translated("create the image", self.uri, path),
            self._pool(str(Path(path).parent)) as pool,
        ):
            pool.createXML(storage_xml.volume(Path(path).name, fmt, capacity, backing), 0)

    def delete_volume(self, path: str) -> None:
        """Delete an image file on this host through libvirt's storage API."""
        with (
            translated("delete the image", self.uri, path),
            self._pool(str(Path(path).parent)) as pool,
        ):
            pool.storageVolLookupByName(Path(path).name).delete(0)

    # --- host facts -----------------------------------------------------------------------
    def capabilities(self) -> etree._Element:
        with translated("read the capabilities of", self.uri, self.uri):
            xml = self.conn.getCapabilities()
        return etree.fromstring(xml.encode(), XML_PARSER)

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
        """Free huge pages of ``size_kib`` on the host (all NUMA cells); 0 when unknown."""
        conn = self.conn
        for cell in (-1, 0):
            try:
                cells = conn.getFreePages([size_kib], cell, 1) or {}
            except libvirt.libvirtError:
                continue
            return sum(int(pages.get(size_kib, 0)) for pages in cells.values())
        return 0

    def hostname(self) -> str:
        """The host's name as its libvirtd reports it (gethostname on that host)."""
        with translated("query", self.uri, self.uri):
            return str(self.conn.getHostname())

    def hypervisor_kind(self) -> str:
        """The driver behind the URI: "qemu", "xen", "test", ..."""
        with translated("query", self.uri, self.uri):
            return str(self.conn.getType()).lower()

    def versions(self) -> tuple[int, int]:
        """(libvirt's version, the hypervisor's version) as libvirt numbers (major*10^6 + ...)."""
        with translated("query", self.uri, self.uri):
            return int(self.conn.getLibVersion()), int(self.conn.getVersion())

    def pci_devices(self) -> list[etree._Element]:
        """The node device XML of every host PCI device (empty where the driver has none)."""
        try:
            devices = self.conn.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV)
            return [etree.fromstring(d.XMLDesc(0).encode(), XML_PARSER) for d in devices]
        except libvirt.libvirtError:
            return []


def probe(uri: str) -> str | None:
    """None if libvirtd at ``uri`` answers a fresh connection, else why not."""
    ensure_event_loop()  # before the first connection; it also silences libvirt's stderr
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        return f"libvirtd at {uri} does not answer: {message(exc)}"
    _close_quietly(conn)
    return None


def _alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def _close_quietly(conn: libvirt.virConnect) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        conn.unregisterCloseCallback()
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()


def xpath_strings(root: etree._Element, expression: str) -> list[str]:
    """The string values (attribute values, element texts) an XPath expression selects."""
    result = root.xpath(expression)
    if not isinstance(result, list):
        return []
    return [item.text or "" if isinstance(item, etree._Element) else str(item) for item in result]
