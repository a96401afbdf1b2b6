"""Put raw QEMU where libvirt puts its QEMUs: a child of the ``machine`` cgroup.

libvirt (without systemd) places every domain in ``/machine/qemu-<id>-<name>...``
of the cpu, cpuacct and cpuset controllers.  All domains then share the CPU
weight of ``/machine`` against every process of the root group.  On an idle
host that changes nothing, but on a shared one (other engineers' test VMs
are in ``/machine`` too) a raw QEMU left in the root group would be favoured
over libvirt's.  So each raw QEMU gets ``/machine/<name>`` (its process moves
itself there before exec) and the group is removed when it is killed.  Where
the cgroup v1 ``cpu`` controller has no ``machine`` group, nothing is done.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("cpu", "cpuacct", "cpuset")
PARENT = "machine"


def available() -> bool:
    return (ROOT / "cpu" / PARENT).is_dir() and os.geteuid() == 0


def create(name: str) -> list[Path]:
    """Make ``/machine/<name>`` in each controller; the directories made."""
    if not available():
        return []
    made = []
    for controller in CONTROLLERS:
        parent = ROOT / controller / PARENT
        if not parent.is_dir():
            continue
        group = parent / name
        group.mkdir(exist_ok=True)
        made.append(group)
        if controller == "cpuset":
            for knob in ("cpuset.cpus", "cpuset.mems"):
                (group / knob).write_text((parent / knob).read_text())
    return made


def join(groups: list[Path]) -> None:
    """Move the calling process into ``groups`` (run in the child before exec)."""
    for group in groups:
        (group / "cgroup.procs").write_text(str(os.getpid()))


def remove(groups: list[Path]) -> None:
    """Remove the (now empty) groups; a group still in use stays (the sweep retries)."""
    for group in groups:
        with contextlib.suppress(OSError):
            group.rmdir()


def sweep(prefix: str) -> list[str]:
    """Remove leftover ``/machine/<prefix>*`` groups of this run."""
    removed = []
    for controller in CONTROLLERS:
        parent = ROOT / controller / PARENT
        if not parent.is_dir():
            continue
        for group in parent.glob(f"{prefix}*"):
            with contextlib.suppress(OSError):
                group.rmdir()
                removed.append(str(group))
    return removed
