"""MAC addresses unique across every virtlib process on the host.

Addresses use the locally-administered prefix ``52:54:00`` that QEMU and
libvirt use; reservations are keyed ``<instance>/<nic index>``.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from virtlib.errors import VMParamsError
from virtlib.reservations import ReservationTable
from virtlib.spec import MAC_RE

PREFIX = "52:54:00"


class MacPool:
    """Reserve, look up and free MAC addresses."""

    def __init__(self, path: Path | None = None) -> None:
        self.table = ReservationTable("mac-pool.json", path)

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
                mac = _random_mac(set(owners))
            rows[key] = mac
            return mac

    def free(self, instance: str) -> list[str]:
        """Free every address of one VM; returns them."""
        return self.table.free(instance)

    def reserved(self) -> dict[str, str]:
        return self.table.rows()


def _random_mac(taken: set[str]) -> str:
    while True:
        mac = PREFIX + "".join(f":{b:02x}" for b in secrets.token_bytes(3))
        if mac not in taken:
            return mac
