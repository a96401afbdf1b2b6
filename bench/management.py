"""Management calls: virtlib vs a ``virsh`` subprocess (how virsh-based frameworks do it)
and vs bare libvirt-python on a looked-up domain (the floor).

Calls are timed one by one, in interleaved blocks (virtlib, libvirt-python,
virsh, again ...), on one running bundled guest.
"""

from __future__ import annotations

import contextlib
import inspect
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import libvirt

from bench.context import LOGIN_TIMEOUT, Context
from bench.diagnose import profile_call
from bench.model import BenchResult, Row, Target
from bench.stats import summarize, time_calls

TARGET = Target("speedup_min", 100.0, ">= 100x faster than virsh")
SHIFT = 42  # KEY_LEFTSHIFT in the Linux key code set


@dataclass(frozen=True)
class Call:
    label: str
    virtlib: Callable[[], object]
    bare: Callable[[], object]
    bare_label: str
    virsh: list[str]


def _virsh(uri: str, args: list[str]) -> Callable[[], object]:
    argv = ["virsh", "-c", uri, *args]

    def call() -> None:
        subprocess.run(argv, check=True, capture_output=True)

    return call


def run(ctx: Context) -> BenchResult:
    result = BenchResult("management")
    rounds = ctx.reps(10, 4)
    fast_per_round, virsh_per_round = 50, 3
    vm = ctx.new_vm("mgmt")
    conn = None
    try:
        vm.create()
        vm.wait_for_serial_login(timeout=LOGIN_TIMEOUT)
        conn = libvirt.open(ctx.uri)
        dom = conn.lookupByName(vm.name)
        calls = [
            Call("is_alive()", vm.is_alive, dom.state, "dom.state()", ["domstate", vm.name]),
            Call(
                "domain state: verify_alive()",
                vm.verify_alive,
                dom.state,
                "dom.state()",
                ["domstate", "--reason", vm.name],
            ),
            Call(
                "get_uuid()", vm.get_uuid, dom.UUIDString, "dom.UUIDString()", ["domuuid", vm.name]
            ),
            Call(
                "send_key('shift')",
                lambda: vm.send_key("shift"),
                lambda: dom.sendKey(libvirt.VIR_KEYCODE_SET_LINUX, 0, [SHIFT], 1, 0),
                "dom.sendKey()",
                ["send-key", vm.name, "KEY_LEFTSHIFT"],
            ),
        ]
        for call in calls:
            result.rows += _measure(ctx, call, rounds, fast_per_round, virsh_per_round)
    finally:
        if conn is not None:
            conn.close()
        ctx.tracker.destroy_vm(vm)
    return result


def _where_dom() -> str:
    """``backends/libvirt/domain.py:NNN LibvirtVM.guest()``, from the installed source."""
    from virtlib.backends.libvirt.domain import LibvirtVM

    path = Path(inspect.getsourcefile(LibvirtVM.guest) or "?")
    line = inspect.getsourcelines(LibvirtVM.guest)[1]
    with contextlib.suppress(ValueError):
        path = path.relative_to(Path(__file__).resolve().parent.parent)
    return f"{path}:{line} LibvirtVM.guest()"


def _measure(ctx: Context, call: Call, rounds: int, fast: int, slow: int) -> list[Row]:
    virsh = _virsh(ctx.uri, call.virsh)
    for warm in (call.virtlib, call.bare, virsh):
        time_calls(warm, 2)
    ours: list[float] = []
    bare: list[float] = []
    theirs: list[float] = []
    for _ in range(rounds):
        ours += time_calls(call.virtlib, fast)
        bare += time_calls(call.bare, fast)
        theirs += time_calls(virsh, slow)
    v = summarize(ours, "s").scaled(1e6, "us")
    b = summarize(bare, "s").scaled(1e6, "us")
    t = summarize(theirs, "s").scaled(1e6, "us")
    profiled = profile_call(call.virtlib)
    made = f"{profiled.libvirt_count} libvirt call(s) per call" + (
        f": {profiled.describe(4)}" if profiled.libvirt_calls else ""
    )
    peers = Row(
        "management",
        call.label,
        v,
        baseline=t,
        baseline_label="virsh " + call.virsh[0],
        target=TARGET,
        extra={"libvirt_calls": {k: n for k, (n, _) in profiled.libvirt_calls.items()}},
    )
    floor = Row(
        "management",
        call.label,
        v,
        baseline=b,
        baseline_label="libvirt-python " + call.bare_label,
        finding=made,
    )
    if peers.met is False:
        floor_speedup = t.median / b.median
        if floor_speedup < TARGET.limit:
            peers.finding = (
                f"bound below virtlib: bare libvirt-python takes {b.median:.0f} us, itself only "
                f"{floor_speedup:.0f}x under virsh; virtlib adds {v.median - b.median:.0f} us"
            )
        else:
            peers.finding = (
                f"virtlib's own cost: bare libvirt-python is {floor_speedup:.0f}x under virsh, "
                f"virtlib {v.median / b.median:.1f}x slower than it: {made}"
            )
            if "virDomainLookupByUUIDString" in profiled.libvirt_calls:
                peers.finding += f" ({_where_dom()} looks the domain up on every call)"
    return [peers, floor]
