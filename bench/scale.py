"""Scale: N guests booted concurrently to serial login (one thread each), then destroyed.

virtlib: N threads each ``create()`` + ``wait_for_serial_login()``.  Raw: N
bare QEMUs spawned back to back, N threads each logging in on its pty.  Wall
time is from the start of the phase to the last login; per-guest time from
that guest's own start.  Memory is each QEMU's VmRSS once all are logged in
(libvirt's pid from /run/libvirt/qemu/<name>.pid).  The two kinds alternate
which goes first from repetition to repetition.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bench import cpu
from bench.context import LOGIN_TIMEOUT, MEM_MIB, VCPUS, Context
from bench.model import BenchResult, Row, Target
from bench.rawqemu import RawGuest
from bench.stats import summarize

TARGET = Target("ratio_max", 1.10, "virtlib/raw <= 1.10")


@dataclass
class Phase:
    wall_s: float
    per_guest_s: list[float]
    rss_mib: list[float]
    cpu: dict[str, float]
    create_s: list[float] = field(default_factory=list)


def _gather(pool: ThreadPoolExecutor, call: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    futures = [pool.submit(call, item) for item in items]
    return [future.result() for future in futures]


def boot_virtlib(ctx: Context, n: int) -> Phase:
    vms = [ctx.new_vm(f"n{n}") for _ in range(n)]
    start = time.perf_counter()

    def boot(vm: Any) -> tuple[float, float, float]:
        began = time.perf_counter()
        vm.create()
        created = time.perf_counter() - began
        vm.wait_for_serial_login(timeout=LOGIN_TIMEOUT)
        end = time.perf_counter()
        return end - began, created, end - start

    try:
        meter = cpu.CpuMeter.start()
        with ThreadPoolExecutor(n) as pool:
            try:
                results = _gather(pool, boot, vms)
            except BaseException:
                for vm in vms:  # makes the other threads' login waits fail fast
                    ctx.tracker.destroy_vm(vm)
                raise
        used = meter.stop()
        pids = [cpu.libvirt_qemu_pid(vm.name) for vm in vms]
        rss = [(cpu.rss_kib(pid) or 0) / 1024 for pid in pids if pid]
        used["guest qemus"] = round(sum(cpu.process_cpu(pid) or 0 for pid in pids if pid), 3)
        used["others"] = cpu.others(used)
        used["other VMs"] = cpu.other_vms(used, "guest qemus")
        return Phase(
            max(r[2] for r in results),
            [r[0] for r in results],
            rss,
            used,
            [r[1] for r in results],
        )
    finally:
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(ctx.tracker.destroy_vm, vms))


def boot_raw(ctx: Context, n: int) -> Phase:
    raws = []
    for _ in range(n):
        raw = RawGuest(ctx.guest, ctx.name(f"raw{n}"), MEM_MIB, VCPUS, ctx.raw_cgroup)
        ctx.tracker.add_raw(raw)
        raws.append(raw)
    try:
        meter = cpu.CpuMeter.start()
        start = time.perf_counter()
        for raw in raws:
            raw.start()  # main thread: see RawGuest.start

        def login(raw: RawGuest) -> tuple[float, float]:
            _, serial = raw.wait_serial_login(LOGIN_TIMEOUT)
            return serial, raw.started - start + serial

        with ThreadPoolExecutor(n) as pool:
            try:
                results = _gather(pool, login, raws)
            except BaseException:
                for raw in raws:
                    ctx.tracker.kill_raw(raw)
                raise
        used = meter.stop()
        rss = [(raw.rss_kib() or 0) / 1024 for raw in raws]
        used["guest qemus"] = round(sum(raw.cpu_seconds() or 0 for raw in raws), 3)
        used["others"] = cpu.others(used)
        used["other VMs"] = cpu.other_vms(used, "guest qemus")
        return Phase(max(r[1] for r in results), [r[0] for r in results], rss, used)
    finally:
        for raw in raws:
            ctx.tracker.kill_raw(raw)


def _median_cpu(phases: list[Phase]) -> dict[str, float]:
    keys = sorted({k for p in phases for k in p.cpu})
    return {k: round(summarize([p.cpu.get(k, 0.0) for p in phases], "s").median, 3) for k in keys}


def run(ctx: Context) -> BenchResult:
    """Start and stop N guests at once with virtlib and raw QEMU, for growing N.

    Long on purpose: a benchmark reads as its one measured sequence, top to bottom."""
    result = BenchResult("scale")
    counts = [1, 2, 4] if ctx.quick else [1, 2, 4, 8]
    reps = ctx.reps(3, 2)
    series: dict[str, Any] = {"n": counts, "cores": ctx.cores, "virtlib": [], "raw": []}
    for n in counts:
        ours: list[Phase] = []
        raws: list[Phase] = []
        for rep in range(reps):
            if rep % 2 == 0:
                ours.append(boot_virtlib(ctx, n))
                raws.append(boot_raw(ctx, n))
            else:
                raws.append(boot_raw(ctx, n))
                ours.append(boot_virtlib(ctx, n))
        v_wall = summarize([p.wall_s for p in ours], "s")
        r_wall = summarize([p.wall_s for p in raws], "s")
        v_guest = summarize([t for p in ours for t in p.per_guest_s], "s")
        r_guest = summarize([t for p in raws for t in p.per_guest_s], "s")
        v_rss = summarize([m for p in ours for m in p.rss_mib], "MiB")
        r_rss = summarize([m for p in raws for m in p.rss_mib], "MiB")
        v_create = summarize([t for p in ours for t in p.create_s], "s")
        cpu_ours, cpu_raw = _median_cpu(ours), _median_cpu(raws)
        for kind, phases_wall, phases_guest, rss in (
            ("virtlib", v_wall, v_guest, v_rss),
            ("raw", r_wall, r_guest, r_rss),
        ):
            series[kind].append(
                {
                    "n": n,
                    "wall": phases_wall.to_json(),
                    "per_guest": phases_guest.to_json(),
                    "rss_mib": rss.to_json(),
                }
            )
        within_cores = n <= ctx.cores
        wall = Row(
            "scale",
            f"N={n} concurrent boots to serial login, wall",
            v_wall,
            baseline=r_wall,
            baseline_label=f"{n} raw qemu",
            target=TARGET if within_cores else None,
            extra={"cpu_s_virtlib": cpu_ours, "cpu_s_raw": cpu_raw, "create_s": v_create.to_json()},
        )
        pairs = " ".join(
            f"{k} {cpu_ours.get(k, 0):.2f}/{cpu_raw.get(k, 0):.2f};"
            for k in ("guest qemus", "libvirtd", "bench process", "others", "other VMs")
        )
        evidence = (
            f"create() median {v_create.median:.2f} s (max {v_create.max:.2f}); CPU s "
            f"virtlib/raw: {pairs} per-guest {v_guest.median:.2f}/{r_guest.median:.2f} s"
        )
        if not within_cores:
            wall.finding = f"informational (N > {ctx.cores} cores, CPU-bound): {evidence}"
        elif wall.met is False:
            wall.finding = evidence
        result.rows += [
            wall,
            Row("scale", f"N={n} per-guest time", v_guest, baseline=r_guest, baseline_label="raw"),
            Row("scale", f"N={n} RSS per QEMU", v_rss, baseline=r_rss, baseline_label="raw"),
        ]
    result.series["scale"] = series
    return result
