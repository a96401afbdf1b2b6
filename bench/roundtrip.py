"""Session round trips: ``cmd_output("true")`` over the serial console and over SSH.

Baselines on the same guest image booted on a bare QEMU: the same command and
prompt wait on QEMU's serial pty (pexpect) and on a paramiko shell channel.
To split guest time from transport time, a line echoed by ``cat`` (no shell
prompt involved) is timed through virtlib's sessions and the raw transports.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bench import cpu
from bench.context import LOGIN_TIMEOUT, MEM_MIB, VCPUS, Context
from bench.model import BenchResult, Row, Target
from bench.rawqemu import RawGuest
from bench.stats import Summary, summarize
from virtlib.sessions.shell import ShellSession

SERIAL_TARGET = Target("value_max", 20.0, "<= 20 ms")
SSH_TARGET = Target("value_max", 10.0, "<= 10 ms")


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _echo(session: ShellSession, token: str) -> None:
    session.send(token + "\n")
    session.expect(f"{token}\r*\n{token}\r*\n", timeout=30)


def _ms(samples: list[float]) -> Summary:
    return summarize(samples, "s").scaled(1000, "ms")


def run(ctx: Context) -> BenchResult:
    """Command round trips on virtlib's sessions and the raw guest's, and their ratios.

    Long on purpose: a benchmark reads as its one measured sequence, top to bottom."""
    result = BenchResult("roundtrip")
    count = ctx.reps(60, 20)
    vm = ctx.new_vm("rt")
    raw = RawGuest(ctx.guest, ctx.name("rawrt"), MEM_MIB, VCPUS, ctx.raw_cgroup)
    ctx.tracker.add_raw(raw)
    samples: dict[str, list[float]] = {}
    try:
        vm.create()
        raw.start()
        serial = vm.wait_for_serial_login(timeout=LOGIN_TIMEOUT)
        raw.wait_serial_login(LOGIN_TIMEOUT)
        ssh = vm.wait_for_login(timeout=LOGIN_TIMEOUT)
        raw_ssh = raw.ssh_login(LOGIN_TIMEOUT)
        try:
            commands: dict[str, Callable[[], object]] = {
                "serial": lambda: serial.cmd_output("true"),
                "raw serial": lambda: raw.serial_roundtrip("true"),
                "ssh": lambda: ssh.cmd_output("true"),
                "raw ssh": lambda: raw_ssh.roundtrip("true"),
            }
            _interleave(commands, count, samples)
            for session in (serial, ssh):
                session.sendline("cat")
                session.read_nonblocking(0.2, 2.0)
            raw.serial_start_cat()
            raw_ssh.start_cat()
            counter = iter(range(1_000_000))
            echoes: dict[str, Callable[[], object]] = {
                "serial echo": lambda: _echo(serial, f"p{next(counter)}x"),
                "raw serial echo": lambda: raw.serial_echo(f"p{next(counter)}x"),
                "ssh echo": lambda: _echo(ssh, f"p{next(counter)}x"),
                "raw ssh echo": lambda: raw_ssh.echo(f"p{next(counter)}x"),
            }
            _interleave(echoes, count, samples)
            for session in (serial, ssh):
                session.sendcontrol("c")
                session.read_up_to_prompt(timeout=30)
            costs = {
                "serial": _cpu_per_call(lambda: serial.cmd_output("true"), count),
                "ssh": _cpu_per_call(lambda: ssh.cmd_output("true"), count),
            }
        finally:
            ssh.close()
            raw_ssh.close()
    finally:
        ctx.tracker.kill_raw(raw)
        ctx.tracker.destroy_vm(vm)
    s = {k: _ms(v) for k, v in samples.items()}
    for kind, target, raw_label in (
        ("serial", SERIAL_TARGET, "raw qemu pty (pexpect)"),
        ("ssh", SSH_TARGET, "raw paramiko channel"),
    ):
        transport = f"{kind} echo"
        row = Row(
            "roundtrip",
            f"cmd_output('true') {'serial' if kind == 'serial' else 'SSH'}",
            s[kind],
            baseline=s[f"raw {kind}"],
            baseline_label=raw_label + ", same guest",
            target=target,
        )
        echo_row = Row(
            "roundtrip",
            f"line echoed by cat over {'serial' if kind == 'serial' else 'SSH'} (transport)",
            s[transport],
            baseline=s[f"raw {transport}"],
            baseline_label=raw_label,
        )
        if row.met is False:
            raw_rt = s[f"raw {kind}"].median
            raw_echo = s[f"raw {transport}"].median
            row.finding = (
                f"guest-bound: the same command on raw QEMU takes {raw_rt:.1f} ms, while a line "
                f"echoed by cat takes {s[transport].median:.2f} ms via virtlib "
                f"({raw_echo:.2f} ms raw): ~{raw_rt - raw_echo:.0f} ms is the guest's shell "
                "prompt cycle (busybox ash under TCG); virtlib's CPU per call "
                f"{costs[kind].get('bench process', 0):.2f} ms, libvirtd "
                f"{costs[kind].get('libvirtd', 0):.2f} ms"
            )
        row.extra["cpu_ms_per_call"] = costs[kind]
        result.rows += [row, echo_row]
    return result


def _cpu_per_call(call: Callable[[], object], count: int) -> dict[str, float]:
    """CPU milliseconds per call of the bench process (virtlib) and the daemons, measured
    over ``count`` back-to-back calls (nothing else running in the bench meanwhile)."""
    meter = cpu.CpuMeter.start()
    for _ in range(count):
        call()
    return {k: round(v * 1000 / count, 3) for k, v in meter.stop().items()}


def _interleave(
    calls: dict[str, Callable[[], object]], count: int, samples: dict[str, list[float]]
) -> None:
    for call in calls.values():  # warm up
        for _ in range(3):
            call()
    for _ in range(count):
        for key, call in calls.items():
            samples.setdefault(key, []).append(_timed(call))
