"""What tools ask the libvirt backend about a host: probe, virtlib's VMs, leftovers, checks."""

from __future__ import annotations

import subprocess
import urllib.parse
from collections.abc import Collection

from virtlib.backends.libvirt import metadata
from virtlib.backends.libvirt.host import Host, is_local_uri, probe
from virtlib.errors import VMError, VMNotFoundError
from virtlib.inventory import FAIL, OK, WARN, HostCheck, ManagedVM

__all__ = ["host_checks", "managed_vms", "probe", "remove_vms"]

SSH_GUEST_PORT = 22


def managed_vms(uri: str) -> list[ManagedVM]:
    """Domains on ``uri`` with virtlib's metadata (domains that vanish meanwhile are skipped).

    :raises HypervisorConnectionError: ``uri`` does not answer.
    """
    found = []
    # A remote host's forwards are on *its* loopback (reached through SSH to it).
    on = "" if is_local_uri(uri) else f" on {urllib.parse.urlsplit(uri).hostname}"
    for guest in Host.get(uri).guests():
        try:
            values = metadata.read(guest.xml())
            state = guest.state()
        except VMNotFoundError:
            continue  # gone since it was listed (another process destroyed it)
        if not values.get("instance"):
            continue
        ports = metadata.decode_allocations(values).port_map
        ssh = ports.get((0, SSH_GUEST_PORT))
        found.append(
            ManagedVM(
                name=guest.name,
                uri=uri,
                state=state.name,
                uuid=guest.uuid,
                instance=values["instance"],
                ssh=f"127.0.0.1:{ssh}{on}" if ssh else "",
            )
        )
    return found


def remove_vms(uri: str, names: Collection[str], uuids: Collection[str]) -> list[str]:
    """Destroy and undefine the domains at ``uri`` with one of ``names`` or ``uuids``."""
    try:
        guests = Host.get(uri).guests()
    except VMError:
        return []  # a host that went away (a stopped second host) keeps no domains
    removed = []
    for guest in guests:
        if guest.name not in names and guest.uuid not in uuids:
            continue
        line = f"{guest.name} on {uri}"
        try:
            guest.remove()
        except VMError as exc:
            line += f" (and it could not be removed: {exc})"
        removed.append(line)
    return removed


def _version(number: int) -> str:
    return f"{number // 1000000}.{number // 1000 % 1000}.{number % 1000}"


def _daemon(name: str) -> HostCheck:
    running = subprocess.run(["pgrep", "-x", name], capture_output=True, check=False)
    if running.returncode == 0:
        return HostCheck(name, OK, "running (pid " + running.stdout.decode().split()[0] + ")")
    return HostCheck(name, FAIL, "not running", f"start it: {name} -d (scripts/setup-host does)")


def host_checks(uri: str) -> list[HostCheck]:
    """The daemons (for a local URI), libvirt's answer and versions, and QEMU's presence."""
    local_daemons = is_local_uri(uri) and not uri.startswith("test:")
    checks = [_daemon("virtlogd"), _daemon("libvirtd")] if local_daemons else []
    problem = probe(uri)
    if problem:
        return [
            *checks,
            HostCheck(
                "libvirt",
                FAIL,
                problem,
                "run scripts/setup-host, or start libvirtd; see /var/log/libvirt/libvirtd.log",
            ),
        ]
    host = Host.get(uri)
    lib_version, hv_version = host.versions()
    checks.append(
        HostCheck(
            "libvirt",
            OK,
            f"{uri}: libvirt {_version(lib_version)}, "
            f"{host.hypervisor_kind()} {_version(hv_version)}",
        )
    )
    domain_types = host.capabilities().xpath("/capabilities/guest/arch/domain/@type")
    if isinstance(domain_types, list) and "qemu" not in [str(t) for t in domain_types]:
        checks.append(
            HostCheck("emulator", WARN, "no QEMU (TCG) guests offered", "install qemu-system-x86")
        )
    return checks
