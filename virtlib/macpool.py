"""MAC addresses unique across every virtlib process on the host.

Addresses use the locally-administered prefix ``52:54:00`` that QEMU and
libvirt use; reservations are keyed ``<instance>/<nic index>``.  In a
:class:`~virtlib.reservations.Partition` the fourth byte is the partition's
index (``52:54:00:<index>:xx:xx``) and the table is the partition's own file.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from virtlib.errors import VMError, VMParamsError
from virtlib.reservations import Partition, ReservationTable
from virtlib.spec import MAC_RE

PREFIX = "52:54:00"


class MacPool:
    """Reserve, look up and free MAC addresses."""

    def __init__(self, path: Path | None = None, partition: Partition | None = None) -> None:
        self.table = ReservationTable("mac-pool.json", path, partition)
        self.partition = self.table.partition

    def lookup(self, instance: str, nic_index: int) -> str | None:
        with self.table.locked() as rows:
            return rows.get(f"{instance}/{nic_index}")

    def reserve(self, instance: str, nic_index: int, mac: str | None = None) -> str:
        """Reserve ``mac`` (or a new random one) for the NIC.

        Without ``mac`` an existing reservation of the NIC is kept; with one, it replaces it.

        :raises VMParamsError: ``mac`` is already reserved by another VM.
        """
        key = f"{instance}/{nic_index}"
        if mac is not None and not MAC_RE.match(mac.lower()):
            raise VMParamsError(f"{mac!r} is not a MAC address")
        with self.table.locked() as rows:
            if key in rows and (mac is None or rows[key] == mac.lower()):
                return rows[key]
            owners = {value: owner for owner, value in rows.items() if owner != key}
            if mac is not None:
                mac = mac.lower()
                if mac in owners:
                    raise VMParamsError(f"MAC address {mac} is already used by {owners[mac]}")
            else:
                mac = _random_mac(set(owners), self.partition)
            rows[key] = mac
            return mac

    def free(self, instance: str) -> list[str]:
        """Free every address of one VM; returns them."""
        return self.table.free(instance)

    def release(self, instance: str, nic_index: int) -> str | None:
        """Free the address of one NIC (it was unplugged); returns it."""
        with self.table.locked() as rows:
            return rows.pop(f"{instance}/{nic_index}", None)

    def reserved(self) -> dict[str, str]:
        return self.table.rows()


def _random_mac(taken: set[str], partition: Partition) -> str:
    """A random address not in ``taken``; in a partition, one with the partition's byte."""
    prefix = PREFIX if partition.whole else f"{PREFIX}:{partition.index:02x}"
    random_bytes = 3 if partition.whole else 2
    if len(taken) >= 256**random_bytes:
        raise VMError(f"no free MAC address left in {prefix}")
    while True:
        mac = prefix + "".join(f":{b:02x}" for b in secrets.token_bytes(random_bytes))
        if mac not in taken:
            return mac
