"""Checkpoint reset against a cold boot; snapshot create and revert against ``virsh``.

- **reset**: what the pytest plugin's ``vm`` fixture costs per test, from the request to
  a guest logged in on the serial console with SSH answering.  Cold boot: the fixture
  with ``--virtlib-reset boot`` (``create()`` + serial login + SSH); its destroy at the
  test's end is timed apart (``per test`` adds it).  Reset: a kept guest
  (:class:`virtlib.reset.Keeper`) reverted to its checkpoint + serial login, after a
  "test" wrote a file and started a process in it.  Interleaved, cold then reset.
  For the bundled guest (with the plugin's scratch qcow2 disk) and, when the tree has
  it, the Debian disk-image guest (``virtlib.guest.debian``).
- **create / revert**: on one running guest (the bundled one with a qcow2 disk),
  ``vm.create_snapshot()`` against ``virsh snapshot-create-as DOMAIN NAME`` (both
  internal, with memory) and ``vm.revert_snapshot()`` against ``virsh snapshot-revert
  DOMAIN NAME``: each round both tools take, revert to and delete a snapshot in turn
  (alternating which goes first).  And an external memory snapshot of the
  diskless bundled guest against ``virsh snapshot-create-as --memspec``; libvirt 9.0
  cannot revert those (virsh says so), so virtlib's revert is reported alone.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from bench.context import LOGIN_TIMEOUT, Context
from bench.model import BenchResult, Row, Target
from bench.stats import Summary, summarize
from virtlib.errors import VMError
from virtlib.reset import Keeper, scratch_directory, scratch_disk_params, wait_until_ready
from virtlib.textutil import random_string

if TYPE_CHECKING:
    from virtlib import BaseVM

BUNDLED_TARGET = Target("speedup_min", 5.0, "reset >= 5x faster than a cold boot")
DISTRO_TARGET = Target("speedup_min", 20.0, "reset >= 20x faster than a cold boot")
VIRSH_TARGET = Target("ratio_max", 1.0, "virtlib/virsh <= 1.0")
DISTRO_BOOT_TIMEOUT = 400.0
DEBIAN_PASSWORD = "virtlib-debian"  # noqa: S105 - the test guest's, set by its cloud-init seed
DAMAGE = "echo damage > /root/bench-damage; (sleep 4545 &)"


def run(ctx: Context) -> BenchResult:
    result = BenchResult("snapshots")
    with scratch_directory() as scratch:
        _reset_rows(ctx, result, "bundled guest", lambda: _bundled(scratch), BUNDLED_TARGET)
        distro = _debian_params(result)
        if distro is not None:
            _reset_rows(ctx, result, "Debian disk-image guest", distro.copy, DISTRO_TARGET)
        _internal_rows(ctx, result, _bundled(scratch))
        _external_rows(ctx, result)
    return result


def _bundled(scratch: Path) -> dict[str, str]:
    """The plugin's bundled guest: a scratch disk of its own for each VM."""
    return scratch_disk_params(f"bench-{random_string(6)}", scratch)


def _debian_params(result: BenchResult) -> dict[str, str] | None:
    """The Debian guest's params (cloud image, overlay, seed), when this tree builds it."""
    try:
        from virtlib.guest import debian  # type: ignore[attr-defined, unused-ignore]
    except ImportError:
        result.notes.append(
            "no disk-image guest: virtlib.guest.debian is not in this tree (branch "
            "guest-debian); the 20x target is not measured"
        )
        return None
    image = debian.ensure_debian_guest(log=lambda *_: None)
    params: dict[str, str] = dict(image.params())
    params.update(mem="768", user_net_restrict="yes")
    params["password"] = DEBIAN_PASSWORD
    return params


# --- reset against a cold boot ------------------------------------------------------------
def _cold(ctx: Context, label: str, params: dict[str, str], timeout: float) -> tuple[float, float]:
    """The fixture with --virtlib-reset boot: (request -> ready, destroy) in seconds."""
    vm = ctx.new_vm(label, **params)
    try:
        start = time.perf_counter()
        vm.create()
        wait_until_ready(vm, timeout)
        ready = time.perf_counter() - start
    finally:
        start = time.perf_counter()
        ctx.tracker.destroy_vm(vm)
        destroyed = time.perf_counter() - start
    return ready, destroyed


def _reset_rows(
    ctx: Context,
    result: BenchResult,
    what: str,
    params: Callable[[], dict[str, str]],
    target: Target,
) -> None:
    timeout = DISTRO_BOOT_TIMEOUT if target is DISTRO_TARGET else LOGIN_TIMEOUT
    reps = ctx.reps(5, 2) if target is BUNDLED_TARGET else ctx.reps(3, 1)
    keeper = Keeper((("bench", what),), lambda: ctx.new_vm("reset", **params()))
    colds: list[float] = []
    destroys: list[float] = []
    resets: list[float] = []
    try:
        first = time.perf_counter()
        vm = keeper.take()  # boot, login, checkpoint: once per worker
        checkpointed = time.perf_counter() - first
        for _ in range(reps):
            ready, destroyed = _cold(ctx, "cold", params(), timeout)
            colds.append(ready)
            destroys.append(destroyed)
            _damage(vm)
            keeper.release()
            start = time.perf_counter()
            vm = keeper.take()
            resets.append(time.perf_counter() - start)
            if keeper.last[0] != "revert":
                raise RuntimeError(f"{vm.name}: the checkpoint was not reverted ({keeper.last})")
            _check_clean(vm)
    finally:
        if keeper.vm is not None:
            ctx.tracker.destroy_vm(keeper.vm)
    cold, reset = summarize(colds, "s"), summarize(resets, "s")
    per_test = summarize([c + d for c, d in zip(colds, destroys, strict=True)], "s")
    result.rows.append(
        Row(
            "snapshots",
            f"{what}: fixture request -> logged in (serial + SSH)",
            reset,
            label="checkpoint reset",
            baseline=cold,
            baseline_label="cold boot",
            target=target,
            finding=_reset_finding(reset, cold, per_test, target),
            extra={
                "first_boot_with_checkpoint_s": checkpointed,
                "cold_boot_plus_destroy_s": per_test.to_json(),
                "destroy_s": summarize(destroys, "s").to_json(),
            },
        )
    )


def _damage(vm: BaseVM) -> None:
    console = vm.serial_console
    if console is not None:
        console.cmd(DAMAGE)


def _check_clean(vm: BaseVM) -> None:
    console = vm.serial_console
    if console is None or console.cmd_status("test -e /root/bench-damage") == 0:
        raise RuntimeError(f"{vm.name}: the reset left an earlier run's file")


def _reset_finding(reset: Summary, cold: Summary, per_test: Summary, target: Target) -> str:
    speedup = cold.median / reset.median if reset.median else 0.0
    whole = per_test.median / reset.median if reset.median else 0.0
    text = f"{speedup:.1f}x at the request; {whole:.1f}x per test counting the cold VM's destroy"
    if speedup < target.limit:
        text += " -- the revert restarts QEMU?" if reset.median > 1.0 else ""
    return text


# --- create and revert against virsh ----------------------------------------------------------
def _virsh(ctx: Context, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run(["virsh", "-q", "-c", ctx.uri, *args], check=True, capture_output=True)
    return time.perf_counter() - start


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


@contextlib.contextmanager
def _running(ctx: Context, label: str, params: dict[str, str]) -> Iterator[BaseVM]:
    vm = ctx.new_vm(label, **params)
    try:
        vm.create()
        wait_until_ready(vm)
        yield vm
    finally:
        ctx.tracker.destroy_vm(vm)


def _internal_rows(ctx: Context, result: BenchResult, params: dict[str, str]) -> None:
    """Each round takes a snapshot, reverts to it and deletes it, one tool after the
    other (alternating which goes first), so both work on the same image: the cost of
    ``savevm`` grows with the snapshots an image holds."""
    reps = ctx.reps(6, 3)
    created: dict[str, list[float]] = {"virtlib": [], "virsh": []}
    reverted: dict[str, list[float]] = {"virtlib": [], "virsh": []}
    with _running(ctx, "snapops", params) as vm:
        for i in range(reps):
            for who in ("virtlib", "virsh") if i % 2 == 0 else ("virsh", "virtlib"):
                name = f"{who}{i}"
                if who == "virtlib":
                    created[who].append(_timed(partial(vm.create_snapshot, name)))
                    reverted[who].append(_timed(partial(vm.revert_snapshot, name)))
                    vm.delete_snapshot(name)
                else:
                    created[who].append(_virsh(ctx, "snapshot-create-as", vm.name, name))
                    reverted[who].append(_virsh(ctx, "snapshot-revert", vm.name, name))
                    _virsh(ctx, "snapshot-delete", vm.name, name)
    for metric, values in (("create (internal, with memory)", created),
                           ("revert (internal, with memory)", reverted)):  # fmt: skip
        result.rows.append(
            Row(
                "snapshots",
                metric,
                summarize(values["virtlib"], "s"),
                baseline=summarize(values["virsh"], "s"),
                baseline_label=f"virsh snapshot-{metric.split()[0]}",
                target=VIRSH_TARGET,
            )
        )


def _external_rows(ctx: Context, result: BenchResult) -> None:
    """The diskless bundled guest: an external memory snapshot each way, then virtlib's
    revert (libvirt 9.0 has none)."""
    from virtlib.backends.libvirt.snapshots import memory_dir

    reps = ctx.reps(5, 3)
    created: dict[str, list[float]] = {"virtlib": [], "virsh": []}
    reverts: list[float] = []
    with _running(ctx, "snapext", {}) as vm:
        for i in range(reps):
            for who in ("virtlib", "virsh") if i % 2 == 0 else ("virsh", "virtlib"):
                if who == "virtlib":
                    created[who].append(_timed(partial(vm.create_snapshot, f"vl{i}")))
                    continue
                path = memory_dir() / f"{vm.name}-virsh-{i}.mem"
                try:
                    spec = f"file={path},snapshot=external"
                    created[who].append(
                        _virsh(ctx, "snapshot-create-as", vm.name, f"vs{i}", "--memspec", spec)
                    )
                    _virsh(ctx, "snapshot-delete", vm.name, f"vs{i}", "--metadata")
                finally:
                    path.unlink(missing_ok=True)
            reverts.append(_timed(partial(vm.revert_snapshot, f"vl{i}")))
            with contextlib.suppress(VMError):
                vm.delete_snapshot(f"vl{i}")
    result.rows.append(
        Row(
            "snapshots",
            "create (external, memory of a diskless guest)",
            summarize(created["virtlib"], "s"),
            baseline=summarize(created["virsh"], "s"),
            baseline_label="virsh snapshot-create-as --memspec",
            target=VIRSH_TARGET,
        )
    )
    result.rows.append(
        Row(
            "snapshots",
            "revert (external, memory of a diskless guest)",
            summarize(reverts, "s"),
            baseline_label="virsh: not supported by libvirt 9.0",
            finding="QEMU is restarted from the memory file (the running one is saved first)",
        )
    )
