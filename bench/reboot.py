"""A shell reboot against what it cannot beat: the guest's own shutdown plus a cold boot.

For each repetition one bundled guest is timed three ways:

- cold boot: ``create()`` + ``wait_for_login()`` (shell prompt over SSH);
- shell reboot: ``reboot(session)`` (``reboot`` typed in the SSH session, until the
  shell prompt over SSH again);
- the guest's own shutdown: ``poweroff`` typed over SSH until libvirt reports the
  domain stopped.

The target: reboot <= 1.2 x (shutdown + cold boot).  A reboot that retried logins
slowly (a user-net forward accepts while the guest is down, and an SSH client then
waits for a banner that never comes) would miss it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench.context import LOGIN_TIMEOUT, Context
from bench.model import BenchResult, Row, Target
from bench.stats import summarize
from virtlib.waiting import wait_for

TARGET = Target("ratio_max", 1.2, "reboot <= 1.2 x (shutdown + cold boot)")


@dataclass(frozen=True)
class Timing:
    cold_boot_s: float
    reboot_s: float
    shutdown_s: float


def measure(ctx: Context) -> Timing:
    vm = ctx.new_vm("reboot")
    try:
        start = time.perf_counter()
        vm.create()
        session = vm.wait_for_login(timeout=LOGIN_TIMEOUT)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        session = vm.reboot(session, method="shell", timeout=LOGIN_TIMEOUT)
        rebooted = time.perf_counter() - start
        start = time.perf_counter()
        session.sendline("poweroff")
        stopped = wait_for(vm.is_dead, LOGIN_TIMEOUT, initial=0.01, maximum=0.02)
        shutdown = time.perf_counter() - start
        session.close()
        if not stopped:
            raise TimeoutError(f"{vm.name} did not power off within {LOGIN_TIMEOUT} s")
        return Timing(cold, rebooted, shutdown)
    finally:
        ctx.tracker.destroy_vm(vm)


def run(ctx: Context) -> BenchResult:
    result = BenchResult("reboot")
    timings = [measure(ctx) for _ in range(ctx.reps(4, 2))]
    reboot = summarize([t.reboot_s for t in timings], "s")
    floor = summarize([t.shutdown_s + t.cold_boot_s for t in timings], "s")
    result.rows.append(
        Row(
            "reboot",
            "shell reboot -> SSH prompt",
            reboot,
            baseline=floor,
            baseline_label="guest shutdown + cold boot",
            target=TARGET,
            extra={
                "cold_boot_s": summarize([t.cold_boot_s for t in timings], "s").to_json(),
                "shutdown_s": summarize([t.shutdown_s for t in timings], "s").to_json(),
            },
        )
    )
    return result
