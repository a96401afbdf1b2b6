"""Live migration between the two local hosts: ``vm.migrate()`` vs ``virsh migrate --live``.

Each run boots a fresh bundled guest per tool (through virtlib, so both
domains are alike), migrates it host 1 -> host 2 -> host 1, and destroys it.
virsh gets a destination XML made as virtlib makes its own: the migratable
XML with the SSH forward moved to a free port (both hosts share the
loopback).  Tools alternate which goes first from run to run.  Times: the
wall time around ``vm.migrate()`` / the virsh subprocess, and libvirt's own
job statistics on the destination (total time, downtime, bytes).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import cpu
from bench.context import LOGIN_TIMEOUT, Context
from bench.model import BenchResult, Row, Target
from bench.stats import summarize
from virtlib.backends.libvirt import domxml
from virtlib.ports import PortPool

TARGET = Target("ratio_max", 1.05, "virtlib/virsh <= 1.05")
HOSTFWD_RE = re.compile(r"(hostfwd=tcp:127\.0\.0\.1:)(\d+)(-:)(\d+)")
DATA_URI = "tcp://127.0.0.1"


@dataclass(frozen=True)
class Leg:
    tool: str
    direction: str
    wall_s: float
    total_ms: float | None
    downtime_ms: float | None
    data_bytes: int | None
    job_wall_s: float | None = None  # virtlib: around virDomainMigrate3 itself
    others_cpu_s: float = 0.0  # CPU of everything not ours meanwhile (bench.cpu.others)


def virsh(uri: str, *args: str, check: bool = True) -> str:
    proc = subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"virsh {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def destination_xml(xml: str, ports: dict[int, int]) -> str:
    """``xml`` with each ``hostfwd=tcp:127.0.0.1:<old>-:<guest>`` moved to ``ports[guest]``
    (what virtlib's migration._destination_xml does for a local destination)."""
    root = domxml.parse(xml)
    for arg in root.iter(f"{{{domxml.QEMU_NS}}}arg"):
        value = arg.get("value", "")
        arg.set(
            "value",
            HOSTFWD_RE.sub(lambda m: f"{m[1]}{ports[int(m[4])]}{m[3]}{m[4]}", value),
        )
    return str(domxml.to_string(root))


def job_stats(uri: str, name: str) -> dict[str, int]:
    """The completed job's raw statistics on ``uri`` (virsh domjobinfo --completed)."""
    text = virsh(uri, "domjobinfo", "--completed", "--rawstats", name)
    stats = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        value = value.strip()
        if sep and value.lstrip("-").isdigit():
            stats[key.strip()] = int(value)
    return stats


def migrate_with_virsh(src: str, dest: str, name: str, port_owner: str, leg: int) -> Leg:
    xml = virsh(src, "dumpxml", "--migratable", name)
    guest_ports = {int(m[4]) for m in HOSTFWD_RE.finditer(xml)}
    pool = PortPool()
    ports = {g: pool.reserve(port_owner, f"leg{leg}/{g}") for g in guest_ports}
    with tempfile.TemporaryDirectory(prefix="bench-mig-") as tmp:
        dest_file = Path(tmp) / "dest.xml"
        dest_file.write_text(destination_xml(xml, ports))
        argv = ["virsh", "-c", src, "migrate", "--live", "--xml", str(dest_file), name]
        meter = cpu.CpuMeter.start()
        start = time.perf_counter()
        subprocess.run([*argv, dest, DATA_URI], check=True, capture_output=True)
        wall = time.perf_counter() - start
        used = meter.stop()
    stats = job_stats(dest, name)
    return Leg(
        "virsh",
        _direction(src, dest),
        wall,
        stats.get("time_elapsed"),
        stats.get("downtime"),
        stats.get("data_processed"),
        others_cpu_s=cpu.others(used),
    )


def _direction(src: str, dest: str) -> str:
    return "host1->host2" if src.startswith("qemu:///") else "host2->host1"


def run_virtlib(ctx: Context, host2_uri: str) -> list[Leg]:
    vm = ctx.new_vm("migl", migration_dest_uri=host2_uri)
    legs = []
    try:
        vm.create()
        vm.wait_for_serial_login(timeout=LOGIN_TIMEOUT)
        for src, dest in ((ctx.uri, host2_uri), (host2_uri, ctx.uri)):
            vm.params["migration_dest_uri"] = dest
            meter = cpu.CpuMeter.start()
            start = time.perf_counter()
            result = vm.migrate()
            wall = time.perf_counter() - start
            used = meter.stop()
            legs.append(
                Leg(
                    "virtlib",
                    _direction(src, dest),
                    wall,
                    result.total_time_ms,
                    result.downtime_ms,
                    result.data_transferred,
                    result.wall_time_s,
                    cpu.others(used),
                )
            )
        if vm.serial_console is not None:
            vm.serial_console.cmd_output("true", timeout=30)  # alive after two moves
    finally:
        ctx.tracker.destroy_vm(vm)
    return legs


def run_virsh(ctx: Context, host2_uri: str) -> list[Leg]:
    vm = ctx.new_vm("migv")
    owner = f"{vm.name}-virsh"
    legs = []
    try:
        vm.create()
        vm.wait_for_serial_login(timeout=LOGIN_TIMEOUT)
        legs.append(migrate_with_virsh(ctx.uri, host2_uri, vm.name, owner, 1))
        legs.append(migrate_with_virsh(host2_uri, ctx.uri, vm.name, owner, 2))
        state = virsh(ctx.uri, "domstate", vm.name).strip()
        if state != "running":
            raise RuntimeError(f"{vm.name} is {state!r} after two virsh migrations")
    finally:
        for uri in (host2_uri, ctx.uri):
            with contextlib.suppress(RuntimeError):
                virsh(uri, "destroy", vm.name, check=False)
        ctx.tracker.destroy_vm(vm)
        PortPool().free(owner)
    return legs


def run(ctx: Context) -> BenchResult:
    """Migrate back and forth between the hosts with virtlib and virsh, and record ratios.

    Long on purpose: a benchmark reads as its one measured sequence, top to bottom."""
    result = BenchResult("migration")
    if ctx.second_host is None:
        raise RuntimeError("the migration bench needs the second host (started by __main__)")
    host2 = ctx.second_host.uri
    legs: list[Leg] = []
    for index in range(ctx.reps(3, 1)):
        tools = (run_virtlib, run_virsh) if index % 2 == 0 else (run_virsh, run_virtlib)
        for tool in tools:
            legs += tool(ctx, host2)
    ours = [leg for leg in legs if leg.tool == "virtlib"]
    theirs = [leg for leg in legs if leg.tool == "virsh"]
    wall = Row(
        "migration",
        "live migration, wall time (both directions)",
        summarize([leg.wall_s for leg in ours], "s"),
        label="virtlib vm.migrate()",
        baseline=summarize([leg.wall_s for leg in theirs], "s"),
        baseline_label="virsh migrate --live",
        target=TARGET,
        extra={"legs": [leg.__dict__ for leg in legs]},
    )
    total = Row(
        "migration",
        "libvirt job total time",
        summarize([float(leg.total_ms or 0) for leg in ours], "ms"),
        baseline=summarize([float(leg.total_ms or 0) for leg in theirs], "ms"),
        baseline_label="virsh migrate --live",
        target=TARGET,
    )
    down = Row(
        "migration",
        "downtime",
        summarize([float(leg.downtime_ms or 0) for leg in ours], "ms"),
        baseline=summarize([float(leg.downtime_ms or 0) for leg in theirs], "ms"),
        baseline_label="virsh migrate --live",
    )
    job_wall = summarize([leg.job_wall_s or 0.0 for leg in ours], "s")
    around = wall.value.median - job_wall.median
    others = {
        tool: round(summarize([leg.others_cpu_s for leg in group], "s").median, 2)
        for tool, group in (("virtlib", ours), ("virsh", theirs))
    }
    wall.extra["others_cpu_s_per_leg"] = others
    if wall.met is False:
        wall.finding = (
            f"virtlib adds {around * 1000:.0f} ms outside virDomainMigrate3 (destination XML, "
            f"ports, console re-attach, job stats); the call itself takes "
            f"{job_wall.median:.2f} s; others' CPU per leg virtlib/virsh "
            f"{others['virtlib']:.2f}/{others['virsh']:.2f} s"
        )
    if total.met is False:
        total.finding = (
            "libvirt's own job time; both tools make the same virDomainMigrate3 call "
            f"(LIVE, {DATA_URI}, destination XML): per leg virtlib "
            f"{[leg.total_ms for leg in ours]} ms, virsh {[leg.total_ms for leg in theirs]} ms"
        )
    outside = {
        tool: round(
            summarize([leg.wall_s - (leg.total_ms or 0) / 1000 for leg in group], "s").median, 3
        )
        for tool, group in (("virtlib", ours), ("virsh", theirs))
    }
    wall.extra["wall_minus_job_time_s"] = outside
    result.notes.append(
        "migration: wall time minus libvirt's job time (destination QEMU start, source QEMU "
        f"teardown): virtlib {outside['virtlib']:.2f} s, virsh {outside['virsh']:.2f} s"
    )
    wall.extra["virtlib_migrate3_wall_s"] = job_wall.to_json()
    result.rows += [wall, total, down]
    return result
