"""Guest addresses from libvirt's virDomainInterfaceAddresses answer (matched by MAC)."""

from __future__ import annotations

import libvirt

from virtlib.backends.libvirt.evidence import pick_address

MAC = "52:54:00:12:34:56"


def iface(mac: str, *addrs: tuple[int, str]) -> dict[str, object]:
    return {"hwaddr": mac, "addrs": [{"type": t, "addr": a, "prefix": 24} for t, a in addrs]}


V4, V6 = libvirt.VIR_IP_ADDR_TYPE_IPV4, libvirt.VIR_IP_ADDR_TYPE_IPV6


def test_ipv4_of_the_matching_mac_wins() -> None:
    answer = {
        "vnet0": iface("52:54:00:aa:bb:cc", (V4, "192.0.2.9")),
        "vnet1": iface(MAC.upper(), (V6, "2001:db8::5"), (V4, "192.0.2.10")),
    }
    assert pick_address(list(answer.values()), MAC) == "192.0.2.10"


def test_link_local_addresses_are_dropped() -> None:
    answer = {"vnet0": iface(MAC, (V6, "fe80::1"), (V4, "169.254.3.4"), (V6, "2001:db8::7"))}
    assert pick_address(list(answer.values()), MAC) == "2001:db8::7"


def test_no_address_for_the_mac() -> None:
    assert pick_address([iface(MAC, (V6, "fe80::1"))], MAC) is None
    assert pick_address([iface("52:54:00:00:00:01", (V4, "192.0.2.1"))], MAC) is None
    assert pick_address([], MAC) is None
