"""Where the CPU went: user+system seconds of processes, from /proc (for the findings).

On this 2-core machine every CPU second libvirtd, virtlogd or the bench
process spends is a second a TCG guest does not get, so the findings quote
these numbers next to wall times.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
DAEMON_PIDFILES = {"libvirtd": Path("/run/libvirtd.pid"), "virtlogd": Path("/run/virtlogd.pid")}


def process_cpu(pid: int) -> float | None:
    """User+system CPU seconds of ``pid`` so far (None when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command: state is field 0, utime field 11, stime field 12.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int | None:
    """VmRSS of ``pid`` in KiB, from /proc/<pid>/status."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def read_pidfile(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def libvirt_qemu_pid(name: str, run_dir: Path = Path("/run/libvirt/qemu")) -> int | None:
    """The QEMU pid of a running libvirt domain (qemu:///system writes it there)."""
    return read_pidfile(run_dir / f"{name}.pid")


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def qemu_cpu() -> dict[int, float]:
    """CPU seconds so far of every QEMU process on the host (ours and anyone else's)."""
    found = {}
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if not comm.read_text().startswith("qemu-system"):
                continue
        except OSError:
            continue
        pid = int(comm.parent.name)
        cpu = process_cpu(pid)
        if cpu is not None:
            found[pid] = cpu
    return found


@dataclass
class CpuMeter:
    """CPU seconds of the daemons, this process, the host and all QEMUs between start() and
    stop() ("all qemus": QEMUs that ended meanwhile are missed)."""

    start_values: dict[str, float]
    start_qemus: dict[int, float]

    @classmethod
    def start(cls) -> CpuMeter:
        return cls(_snapshot(), qemu_cpu())

    def stop(self) -> dict[str, float]:
        end = _snapshot()
        used = {k: round(end[k] - v, 3) for k, v in self.start_values.items() if k in end}
        qemus = qemu_cpu()
        used["all qemus"] = round(
            sum(v - self.start_qemus.get(pid, 0.0) for pid, v in qemus.items()), 3
        )
        return used


def host_busy() -> float:
    """CPU seconds all CPUs spent busy since boot (/proc/stat: all but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / CLK_TCK


def _snapshot() -> dict[str, float]:
    values = {"bench process": self_cpu(), "host busy": host_busy()}
    for name, pidfile in DAEMON_PIDFILES.items():
        pid = read_pidfile(pidfile)
        cpu = process_cpu(pid) if pid else None
        if cpu is not None:
            values[name] = cpu
    return values


def others(used: dict[str, float]) -> float:
    """CPU seconds of everything else on the host in a measured span (other engineers' VMs
    and tests, kernel threads): "host busy" minus every other entry of ``used``."""
    ours = sum(v for k, v in used.items() if k not in ("host busy", "others", "all qemus"))
    return round(max(used.get("host busy", 0.0) - ours, 0.0), 3)


def other_vms(used: dict[str, float], ours_key: str) -> float:
    """CPU seconds of QEMUs that are not ours (other engineers' guests) in the span."""
    return round(max(used.get("all qemus", 0.0) - used.get(ours_key, 0.0), 0.0), 3)
