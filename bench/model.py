"""What a benchmark returns: rows (virtlib vs a baseline, with a target) and series for charts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.stats import Summary, ratio


@dataclass(frozen=True)
class Target:
    """A goal a row is reported against (never asserted).

    ``kind``: ``ratio_max`` (virtlib/baseline <= limit), ``speedup_min``
    (baseline/virtlib >= limit) or ``value_max`` (virtlib's median <= limit, in its unit).
    """

    kind: str
    limit: float
    text: str

    def met(self, row: Row) -> bool | None:
        if self.kind == "value_max":
            return row.value.median <= self.limit
        r = row.ratio
        if r is None:
            return None
        if self.kind == "ratio_max":
            return r <= self.limit
        if self.kind == "speedup_min":
            return r > 0 and 1 / r >= self.limit
        raise ValueError(f"unknown target kind {self.kind!r}")


@dataclass
class Row:
    """One figure: virtlib's summary, optionally a baseline's, a target and a finding."""

    bench: str
    metric: str
    value: Summary
    label: str = "virtlib"
    baseline: Summary | None = None
    baseline_label: str = ""
    target: Target | None = None
    finding: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return ratio(self.value, self.baseline)

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self)

    def to_json(self) -> dict[str, Any]:
        return {
            "bench": self.bench,
            "metric": self.metric,
            "label": self.label,
            "value": self.value.to_json(),
            "baseline_label": self.baseline_label,
            "baseline": self.baseline.to_json() if self.baseline else None,
            "ratio": self.ratio,
            "target": self.target.text if self.target else None,
            "met": self.met,
            "finding": self.finding,
            "extra": self.extra,
        }


@dataclass
class BenchResult:
    """Everything one benchmark measured."""

    name: str
    rows: list[Row] = field(default_factory=list)
    series: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""
