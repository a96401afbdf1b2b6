"""Summaries of repeated measurements: median with min and max, and ratios of medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Summary:
    """The median of some samples, with their min, max and count (all in ``unit``)."""

    median: float
    min: float
    max: float
    n: int
    unit: str
    samples: tuple[float, ...] = field(default=(), repr=False)

    def scaled(self, factor: float, unit: str) -> Summary:
        return summarize([s * factor for s in self.samples], unit)

    def text(self, digits: int = 3) -> str:
        """``2.91 s [2.85-3.02]``: median, then the range."""
        fmt = _formatter(self.median, digits)
        return f"{fmt(self.median)} {self.unit} [{fmt(self.min)}-{fmt(self.max)}]"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["samples"] = [round(s, 9) for s in self.samples]
        return data


def summarize(samples: Iterable[float], unit: str) -> Summary:
    values = tuple(samples)
    if not values:
        raise ValueError("no samples to summarize")
    return Summary(statistics.median(values), min(values), max(values), len(values), unit, values)


def ratio(a: Summary | None, b: Summary | None) -> float | None:
    """median(a) / median(b); None when either is missing or b is zero."""
    if a is None or b is None or b.median == 0:
        return None
    return a.median / b.median


def _formatter(value: float, digits: int) -> Callable[[float], str]:
    magnitude = abs(value)
    if magnitude >= 100:
        return lambda v: f"{v:.0f}"
    if magnitude >= 10:
        return lambda v: f"{v:.1f}"
    if magnitude >= 1:
        return lambda v: f"{v:.{max(digits - 1, 0)}f}"
    return lambda v: f"{v:.{digits}g}"


def time_calls(call: Callable[[], object], count: int) -> list[float]:
    """Seconds taken by each of ``count`` calls (perf_counter around each)."""
    taken = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        taken.append(time.perf_counter() - start)
    return taken
