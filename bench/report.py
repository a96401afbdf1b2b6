"""The printed table and the JSON files (bench/results/<timestamp>.json and latest.json)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bench.model import BenchResult, Row

RESULTS_DIR = Path(__file__).resolve().parent / "results"
HEADERS = ("bench", "metric", "virtlib", "baseline", "ratio", "target", "")


def ratio_text(row: Row) -> str:
    r = row.ratio
    if r is None:
        return "-"
    if r < 0.5:
        return f"{r:.3g} ({1 / r:.0f}x faster)"
    return f"{r:.3f}"


def verdict(row: Row) -> str:
    return {True: "ok", False: "MISSED", None: ""}[row.met]


def _cells(row: Row) -> tuple[str, ...]:
    value = row.value.text()
    if row.label != "virtlib":
        value += f" {row.label}"
    baseline = f"{row.baseline.text()} {row.baseline_label}" if row.baseline else "-"
    target = row.target.text if row.target else "-"
    return (row.bench, row.metric, value, baseline, ratio_text(row), target, verdict(row))


def render(results: list[BenchResult]) -> str:
    """A plain-text table; each finding goes on its own line under its row."""
    rows = [row for result in results for row in result.rows]
    cells = [_cells(row) for row in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(HEADERS)]

    def line(values: tuple[str, ...]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    out = [line(HEADERS), line(tuple("-" * w for w in widths))]
    for row, cell in zip(rows, cells, strict=True):
        out.append(line(cell))
        if row.finding:
            out.append(f"    -> {row.finding}")
    for result in results:
        if result.error:
            out.append(f"{result.name}: FAILED: {result.error}")
        out += [f"note: {note}" for note in result.notes]
    timings = ", ".join(f"{r.name} {r.seconds:.0f} s" for r in results)
    out.append(f"time per benchmark: {timings}")
    return "\n".join(out)


def to_json(results: list[BenchResult], meta: dict[str, Any]) -> dict[str, Any]:
    return {
        **meta,
        "benchmarks": {
            r.name: {
                "seconds": round(r.seconds, 2),
                "error": r.error,
                "notes": r.notes,
                "rows": [row.to_json() for row in r.rows],
                "series": r.series,
            }
            for r in results
        },
    }


def write(data: dict[str, Any], stamp: str, directory: Path = RESULTS_DIR) -> Path:
    """Write ``<stamp>.json`` and copy it to ``latest.json``; return the first."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stamp}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    shutil.copyfile(path, directory / "latest.json")
    return path
