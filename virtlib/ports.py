"""Host ports for forwards to the guest, free and unique across virtlib processes.

Ports come from a range below Linux's ephemeral range (so outgoing connections
do not take them meanwhile), are probed by binding on 127.0.0.1, and are
reserved in a shared table keyed ``<instance>/<guest port>/<nic>`` until the
VM is destroyed.  In a :class:`~virtlib.reservations.Partition` the default
range is cut into equal slices, one per partition, and the table is the
partition's own file; ports are still probed by binding.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Collection
from pathlib import Path

from virtlib.errors import VMError
from virtlib.reservations import Partition, ReservationTable

PORT_RANGE = (20000, 32767)
BIND_ADDRESS = "127.0.0.1"


def port_is_free(port: int, address: str = BIND_ADDRESS) -> bool:
    """True if a listener could bind the port now (with SO_REUSEADDR, as QEMU does, so
    connections lingering in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


class PortPool:
    """Reserve and free forwarded host ports.

    ``port_range`` (inclusive) defaults to the partition's slice of :data:`PORT_RANGE`;
    an explicit range is used as given.
    """

    def __init__(
        self,
        path: Path | None = None,
        port_range: tuple[int, int] | None = None,
        partition: Partition | None = None,
    ) -> None:
        self.table = ReservationTable("port-pool.json", path, partition)
        self.partition = self.table.partition
        self.low, self.high = port_range or self.partition.slice(*PORT_RANGE)

    def reserve(self, instance: str, label: str) -> int:
        """A free port for ``label`` (e.g. "nic0/22"); an existing reservation is kept."""
        key = f"{instance}/{label}"
        with self.table.locked() as rows:
            if key in rows:
                return int(rows[key])
            taken = {int(v) for v in rows.values()}
            span = self.high - self.low + 1
            start = secrets.randbelow(span)
            for offset in range(span):
                port = self.low + (start + offset) % span
                if port not in taken and port_is_free(port):
                    rows[key] = str(port)
                    return port
        raise VMError(f"no free port in {self.low}-{self.high} on {BIND_ADDRESS}")

    def lookup(self, instance: str, label: str) -> int | None:
        with self.table.locked() as rows:
            value = rows.get(f"{instance}/{label}")
        return int(value) if value else None

    def release(self, instance: str, ports: Collection[int]) -> None:
        """Drop the reservations of ``instance`` for ``ports`` (the rest stay)."""
        wanted = {str(port) for port in ports}
        with self.table.locked() as rows:
            for key in [k for k, v in rows.items() if k.startswith(f"{instance}/") and v in wanted]:
                rows.pop(key)

    def free(self, instance: str) -> list[int]:
        return [int(p) for p in self.table.free(instance)]
