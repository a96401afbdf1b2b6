"""Evidence from a libvirt domain: its XML, QEMU's log, memory dumps, screenshots, info."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from virtlib.backends.libvirt.guest import IPV4, GuestState
from virtlib.backends.libvirt.host import is_local_uri
from virtlib.errors import HypervisorError, VMError, VMNotSupportedError, VMStateError
from virtlib.png import to_png

if TYPE_CHECKING:
    from virtlib.backends.libvirt.domain import LibvirtVM

QEMU_LOG_DIR = "/var/log/libvirt/qemu"
LINK_LOCAL_PREFIXES = ("fe80:", "169.254.")


def definition(vm: LibvirtVM) -> str:
    try:
        return vm.guest().xml()
    except VMError:
        return vm.xml


def hypervisor_log(vm: LibvirtVM, max_bytes: int) -> str:
    path = Path(QEMU_LOG_DIR) / f"{vm.name}.log"
    if not is_local_uri(vm.uri) or "socket=" in vm.uri or not path.is_file():
        raise VMNotSupportedError(
            "hypervisor log", vm.BACKEND, f"no QEMU log of {vm.name!r} here ({path})"
        )
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - max_bytes))
        return handle.read().decode("utf-8", errors="replace")


def memory_dump(vm: LibvirtVM, target: Path, max_bytes: int) -> Path:
    vm.guest().memory_dump(str(target), compressed=True)
    size = target.stat().st_size
    if size > max_bytes:
        target.unlink()
        raise VMError(
            f"the memory dump of {vm.name!r} is {size} bytes, over its cap of {max_bytes}"
        )
    return target


def screenshot(vm: LibvirtVM, target: Path) -> Path:
    guest = vm.guest()
    try:
        dump = guest.screenshot(vm.host.new_stream(blocking=True))
    except (HypervisorError, VMStateError) as exc:
        raise VMNotSupportedError(
            "screenshot",
            vm.BACKEND,
            f"{vm.name!r} shows nothing to take ({exc}); give it a display: display = vnc",
        ) from exc
    target.write_bytes(to_png(dump))
    return target


def info(vm: LibvirtVM) -> dict[str, Any]:
    """What ``virtlib info`` shows."""
    state = vm._require_state()
    domain_state, _max_mem, memory_kib, vcpus = vm.guest().info()
    return {
        "name": vm.name,
        "uri": state.uri,
        "uuid": state.uuid,
        "state": GuestState(domain_state, 0).name,
        "vcpus": vcpus,
        "memory_mib": memory_kib // 1024,
        "accel": state.accel,
        "macs": {f"nic{n}": mac for n, mac in state.allocations.macs},
        "forwards": {
            f"nic{nic}:{guest_port}": f"127.0.0.1:{host_port}"
            for (nic, guest_port), host_port in state.allocations.ports
        },
        "instance": state.instance,
    }


def death_detail(vm: LibvirtVM, reason: str, state: GuestState | None) -> str:
    """VMDeadError's detail: the panic text for a crash, what "killed" means, or the state."""
    crash = vm.kernel_crash()
    where = f"{vm.name!r} on {vm.uri}"
    if reason == "crashed":
        text = crash.text if crash else "no panic text on the serial console"
        return f"the guest of {where} crashed: {text}"
    if reason == "killed":
        return f"QEMU of {where} ended without the guest shutting down (killed, or it crashed)"
    if state is None:
        return f"{where} is not running"
    return f"{where} is {state.name} ({state.reason_name})"


def pick_address(interfaces: list[dict[str, Any]], mac: str) -> str | None:
    """The first non-link-local address (IPv4 preferred) of the interface with ``mac``."""
    for info in interfaces:
        if str(info.get("hwaddr", "")).lower() != mac.lower():
            continue
        addrs = [
            a
            for a in info.get("addrs") or []
            if not str(a.get("addr", "")).lower().startswith(LINK_LOCAL_PREFIXES)
        ]
        addrs.sort(key=lambda a: a.get("type") != IPV4)
        if addrs:
            return str(addrs[0]["addr"])
    return None
