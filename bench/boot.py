"""Boot to login: the bundled guest through virtlib vs on a bare QEMU, interleaved A B A B.

virtlib: ``create()`` + ``wait_for_serial_login()`` (shell prompt on the
serial console), then ``wait_for_login()`` (shell prompt over SSH).  Raw:
spawn QEMU, log in on its serial pty, then paramiko to the forward, timed to
the same two points.  Destroying/killing is not timed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench import cpu
from bench.context import LOGIN_TIMEOUT, MEM_MIB, VCPUS, Context
from bench.diagnose import Profiled, profile_call
from bench.model import BenchResult, Row, Target
from bench.rawqemu import RawGuest
from bench.stats import summarize

if TYPE_CHECKING:
    from virtlib import BaseVM

TARGET = Target("ratio_max", 1.03, "virtlib/raw <= 1.03")


@dataclass(frozen=True)
class Boot:
    serial_s: float
    ssh_s: float
    output_s: float  # the guest's first serial output (the login banner: the kernel is quiet)
    created_s: float  # virtlib: create() returned; raw: 0
    cpu: dict[str, float]
    password_echoed: bool  # the password shows on the console (typed before echo was off)


class FirstOutput(threading.Thread):
    """Notes when a VM's serial console first has output (polls get_output() every 5 ms)."""

    def __init__(self, vm: BaseVM, start: float) -> None:
        super().__init__(name="bench-first-output", daemon=True)
        self.vm = vm
        self.start_time = start
        self.seconds: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.005):
            console = self.vm.serial_console
            if console is not None and console.get_output().strip():
                self.seconds = time.perf_counter() - self.start_time
                return


def boot_virtlib(ctx: Context) -> Boot:
    vm = ctx.new_vm("boot")
    try:
        meter = cpu.CpuMeter.start()
        start = time.perf_counter()
        watch = FirstOutput(vm, start)
        watch.start()
        try:
            vm.create()
            created = time.perf_counter() - start
            console = vm.wait_for_serial_login(timeout=LOGIN_TIMEOUT)
            serial = time.perf_counter() - start
            echoed = f"Password: {ctx.guest.password}" in console.get_output()
        finally:
            watch.stop.set()
            watch.join()
        session = vm.wait_for_login(timeout=LOGIN_TIMEOUT)
        ssh = time.perf_counter() - start
        used = meter.stop()
        session.close()
        pid = cpu.libvirt_qemu_pid(vm.name)
        guest_cpu = cpu.process_cpu(pid) if pid else None
        if guest_cpu is not None:
            used["guest qemu"] = guest_cpu
        used["others"] = cpu.others(used)
        used["other VMs"] = cpu.other_vms(used, "guest qemu")
        return Boot(serial, ssh, watch.seconds or serial, created, used, echoed)
    finally:
        ctx.tracker.destroy_vm(vm)


def boot_raw(ctx: Context) -> Boot:
    raw = RawGuest(ctx.guest, ctx.name("raw"), MEM_MIB, VCPUS, ctx.raw_cgroup)
    ctx.tracker.add_raw(raw)
    try:
        meter = cpu.CpuMeter.start()
        raw.start()
        output, serial = raw.wait_serial_login(LOGIN_TIMEOUT)
        shell = raw.ssh_login(LOGIN_TIMEOUT)
        ssh = time.perf_counter() - raw.started
        used = meter.stop()
        shell.close()
        guest_cpu = raw.cpu_seconds()
        if guest_cpu is not None:
            used["guest qemu"] = guest_cpu
        used["others"] = cpu.others(used)
        used["other VMs"] = cpu.other_vms(used, "guest qemu")
        return Boot(serial, ssh, output, 0.0, used, raw.password_echoed)
    finally:
        ctx.tracker.kill_raw(raw)


def _median_cpu(boots: list[Boot]) -> dict[str, float]:
    keys = sorted({k for b in boots for k in b.cpu})
    return {
        k: round(summarize([b.cpu[k] for b in boots if k in b.cpu], "s").median, 3) for k in keys
    }


def run(ctx: Context) -> BenchResult:
    """Boot both ways in alternating pairs and record the ratios.

    Long on purpose: a benchmark reads as its one measured sequence, top to bottom."""
    result = BenchResult("boot")
    pairs = ctx.reps(5, 2)
    ours: list[Boot] = []
    raws: list[Boot] = []
    for _ in range(pairs):
        ours.append(boot_virtlib(ctx))
        raws.append(boot_raw(ctx))
    v_serial = summarize([b.serial_s for b in ours], "s")
    r_serial = summarize([b.serial_s for b in raws], "s")
    v_ssh = summarize([b.ssh_s for b in ours], "s")
    r_ssh = summarize([b.ssh_s for b in raws], "s")
    v_create = summarize([b.created_s for b in ours], "s")
    v_output = summarize([b.output_s for b in ours], "s")
    r_output = summarize([b.output_s for b in raws], "s")
    v_login = summarize([b.serial_s - b.output_s for b in ours], "s")
    r_login = summarize([b.serial_s - b.output_s for b in raws], "s")
    cpu_ours, cpu_raw = _median_cpu(ours), _median_cpu(raws)
    phases = {
        "virtlib_create_s": v_create.to_json(),
        "virtlib_first_output_s": v_output.to_json(),
        "raw_first_output_s": r_output.to_json(),
        "virtlib_login_dialogue_s": v_login.to_json(),
        "raw_login_dialogue_s": r_login.to_json(),
    }
    extra = {"cpu_s_virtlib": cpu_ours, "cpu_s_raw": cpu_raw, "pairs": pairs} | phases
    echoes = (sum(b.password_echoed for b in ours), sum(b.password_echoed for b in raws))
    extra["password_echoed_on_console"] = {"virtlib": echoes[0], "raw": echoes[1], "of": pairs}
    if any(echoes):
        result.notes.append(
            f"boot: the root password was echoed on the serial console (so it is in the "
            f"serial log) in {echoes[0]}/{pairs} virtlib boots and {echoes[1]}/{pairs} raw boots"
        )
    serial_row = Row(
        "boot",
        "start -> shell prompt on serial",
        v_serial,
        baseline=r_serial,
        baseline_label="raw qemu (pty)",
        target=TARGET,
        extra=extra,
    )
    ssh_row = Row(
        "boot",
        "start -> shell prompt over SSH",
        v_ssh,
        baseline=r_ssh,
        baseline_label="raw qemu (paramiko)",
        target=TARGET,
    )
    result.rows += [serial_row, ssh_row]
    if serial_row.met is False or ssh_row.met is False:
        profiled = _profile_create(ctx)
        gap = v_serial.median - r_serial.median
        finding = (
            f"gap {gap:.2f} s = first serial output {v_output.median:.2f} s vs raw "
            f"{r_output.median:.2f} s (of it create() {v_create.median:.2f} s, "
            f"{profiled.libvirt_seconds / profiled.seconds:.0%} in libvirt: "
            f"{profiled.describe(1)}) + login dialogue {v_login.median:.3f} vs "
            f"{r_login.median:.3f} s; CPU s virtlib/raw: libvirtd "
            f"{cpu_ours.get('libvirtd', 0):.2f}/{cpu_raw.get('libvirtd', 0):.2f}, others "
            f"{cpu_ours.get('others', 0):.2f}/{cpu_raw.get('others', 0):.2f} (other VMs "
            f"{cpu_ours.get('other VMs', 0):.2f}/{cpu_raw.get('other VMs', 0):.2f})"
        )
        result.notes.append(f"boot: profiled create(): {profiled.describe(5)}")
        for row in (serial_row, ssh_row):
            if row.met is False:
                row.finding = finding
        if ssh_row.met is False:
            ssh_row.finding += (
                f"; SSH after serial: virtlib +{v_ssh.median - v_serial.median:.2f} s, "
                f"raw +{r_ssh.median - r_serial.median:.2f} s"
            )
    return result


def _profile_create(ctx: Context) -> Profiled:
    """One extra create() under cProfile (the domain is destroyed at once, not booted)."""
    vm = ctx.new_vm("prof")
    try:
        return profile_call(vm.create)
    finally:
        ctx.tracker.destroy_vm(vm)
