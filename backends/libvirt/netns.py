"""A network namespace joined to this host by a veth pair: the network of a second host.

Addresses come from 198.18.0.0/15, the range reserved for benchmarking network
devices (RFC 2544): never a lab's, a NAT's or the host's own.  Slot ``N`` is the
/30 ``198.18.0.0 + 4N``: ``.1`` on the host side (``vlhNa``), ``.2`` inside
the namespace (``vlhNb``, in namespace ``virtlib-hN``).  Nothing else is
configured: no route beyond the pair, no forwarding, so what runs inside reaches
only this host's end of the pair (and its own loopback).

Slots are taken without a lock: ``ip netns add`` fails when the name exists, so two
processes never get the same one; a slot whose /30 is on any interface is skipped.
:meth:`NetworkLink.remove` ends every process still inside, deletes the namespace
(the pair goes with it) and the host side if it survived.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import signal
import subprocess
from dataclasses import asdict, dataclass

from virtlib.errors import VMError
from virtlib.waiting import wait_for

log = logging.getLogger(__name__)

RANGE = ipaddress.ip_network("198.18.0.0/15")
PREFIX = 30
SLOTS = RANGE.num_addresses // 4
NAMESPACE_PREFIX = "virtlib-h"


class NetworkLinkError(VMError):
    """The namespace or its veth pair could not be made or removed."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise NetworkLinkError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def host_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network configured on this host's interfaces."""
    data = json.loads(_ip("-j", "-4", "addr", "show").stdout or "[]")
    return [
        ipaddress.IPv4Interface(f"{info['local']}/{info['prefixlen']}").network
        for link in data
        for info in link.get("addr_info", [])
        if "local" in info
    ]


@dataclass(frozen=True)
class NetworkLink:
    """Slot ``index``: the namespace, the pair, and the two addresses."""

    index: int

    @property
    def namespace(self) -> str:
        return f"{NAMESPACE_PREFIX}{self.index}"

    @property
    def host_interface(self) -> str:
        return f"vlh{self.index}a"

    @property
    def inner_interface(self) -> str:
        return f"vlh{self.index}b"

    @property
    def network(self) -> ipaddress.IPv4Network:
        base = int(RANGE.network_address) + 4 * self.index
        return ipaddress.IPv4Network((base, PREFIX))

    @property
    def host_address(self) -> str:
        """This host's end of the pair (how the namespace reaches this host)."""
        return str(self.network.network_address + 1)

    @property
    def address(self) -> str:
        """The namespace's end of the pair (how this host reaches the namespace)."""
        return str(self.network.network_address + 2)

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, int]) -> NetworkLink:
        return cls(int(data["index"]))

    # --- making and removing ------------------------------------------------------------
    @classmethod
    def create(cls) -> NetworkLink:
        """Take the first free slot and set it up.

        :raises NetworkLinkError: no slot is free, or ``ip`` refused (nothing is left).
        """
        used = host_networks()
        for index in range(SLOTS):
            link = cls(index)
            if any(link.network.overlaps(net) for net in used):
                continue
            if _ip("netns", "add", link.namespace, check=False).returncode != 0:
                continue  # another process has it (or a leftover of a crashed run)
            try:
                link._configure()
            except BaseException:
                link.remove()
                raise
            log.info("network namespace %s: %s <-> %s", link.namespace, link.host_address,
                     link.address)  # fmt: skip
            return link
        raise NetworkLinkError(f"no free /30 in {RANGE} for a network namespace")

    def _configure(self) -> None:
        prefix = f"/{PREFIX}"
        _ip("link", "add", self.host_interface, "type", "veth", "peer", "name",
            self.inner_interface, "netns", self.namespace)  # fmt: skip
        _ip("addr", "add", self.host_address + prefix, "dev", self.host_interface)
        _ip("link", "set", self.host_interface, "up")
        inside = ("-n", self.namespace)
        _ip(*inside, "addr", "add", self.address + prefix, "dev", self.inner_interface)
        _ip(*inside, "link", "set", self.inner_interface, "up")
        _ip(*inside, "link", "set", "lo", "up")

    def pids(self) -> list[int]:
        """The processes running inside the namespace."""
        proc = _ip("netns", "pids", self.namespace, check=False)
        return [int(word) for word in proc.stdout.split() if word.isdigit()]

    def exists(self) -> bool:
        return self.namespace in _ip("netns", "list", check=False).stdout.split()

    def remove(self) -> None:
        """End what still runs inside, delete the namespace and the pair (idempotent)."""
        if self.exists():
            self._end_processes()
            _ip("netns", "del", self.namespace, check=False)
        if _ip("link", "show", self.host_interface, check=False).returncode == 0:
            _ip("link", "del", self.host_interface, check=False)
        if self.exists():
            raise NetworkLinkError(f"network namespace {self.namespace} could not be deleted")

    def _end_processes(self) -> None:
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            pids = self.pids()
            if not pids:
                return
            log.debug("%s: %s to %s", self.namespace, sig.name, pids)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            wait_for(lambda: not self.pids(), wait, maximum=0.2)
