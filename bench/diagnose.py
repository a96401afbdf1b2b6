"""Measurements behind the findings: cProfile of one virtlib call, split by where time went."""

from __future__ import annotations

import cProfile
import pstats
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Profiled:
    """One profiled call: its wall time and the libvirt C calls it made."""

    seconds: float
    libvirt_calls: dict[str, tuple[int, float]]  # libvirtmod function -> (calls, seconds)

    @property
    def libvirt_seconds(self) -> float:
        return sum(seconds for _, seconds in self.libvirt_calls.values())

    @property
    def libvirt_count(self) -> int:
        return sum(calls for calls, _ in self.libvirt_calls.values())

    def describe(self, top: int = 3) -> str:
        """``virDomainCreateXML 1x 286 ms, ...``: the costliest libvirt calls."""
        ranked = sorted(self.libvirt_calls.items(), key=lambda kv: -kv[1][1])[:top]
        return ", ".join(f"{name} {n}x {s * 1000:.3g} ms" for name, (n, s) in ranked)


def profile_call(call: Callable[[], object]) -> Profiled:
    """Run ``call`` once under cProfile; collect the time spent inside libvirt-python's C
    functions (libvirtmod.*), i.e. waiting for libvirtd."""
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    try:
        call()
    finally:
        profiler.disable()
    seconds = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    calls: dict[str, tuple[int, float]] = {}
    for (filename, _line, function), row in stats.stats.items():  # type: ignore[attr-defined]
        primitive_calls, _total_calls, own_time = row[0], row[1], row[2]
        if filename == "~" and "libvirtmod." in function:
            name = function.split("libvirtmod.", 1)[1].rstrip(">}")
            calls[name] = (int(primitive_calls), float(own_time))
    return Profiled(seconds, calls)
