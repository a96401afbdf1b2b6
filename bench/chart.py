"""The scaling chart (PNG, matplotlib's Agg backend): wall time and RSS per guest vs N."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

INSTALL_HINT = (
    "matplotlib is not installed, so no chart: install the bench extra "
    "(.venv/bin/pip install -e '.[bench]') or .venv/bin/pip install matplotlib"
)


def _errors(points: list[dict[str, Any]], key: str) -> tuple[list[float], list[list[float]]]:
    medians = [p[key]["median"] for p in points]
    low = [p[key]["median"] - p[key]["min"] for p in points]
    high = [p[key]["max"] - p[key]["median"] for p in points]
    return medians, [low, high]


def scale_chart(series: dict[str, Any], path: Path) -> Path | None:
    """Draw ``series`` (from bench.scale) to ``path`` and copy it to latest-scale.png;
    None (after printing how to install it) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(INSTALL_HINT)
        return None
    counts = series["n"]
    fig, (wall_ax, rss_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    for kind, label, marker in (("virtlib", "virtlib (libvirt)", "o"), ("raw", "raw QEMU", "s")):
        medians, err = _errors(series[kind], "wall")
        wall_ax.errorbar(counts, medians, yerr=err, marker=marker, capsize=4, label=label)
        medians, err = _errors(series[kind], "rss_mib")
        rss_ax.errorbar(counts, medians, yerr=err, marker=marker, capsize=4, label=label)
    cores = series.get("cores")
    if cores:
        wall_ax.axvline(cores, color="grey", linestyle=":", label=f"{cores} cores")
    wall_ax.set(
        xlabel="guests booted concurrently (N)",
        ylabel="wall time to the last serial login (s)",
        title="Concurrent boots (median, min-max)",
    )
    rss_ax.set(
        xlabel="guests booted concurrently (N)",
        ylabel="VmRSS per QEMU process (MiB)",
        title="Memory per guest",
    )
    top = max(p["rss_mib"]["max"] for kind in ("virtlib", "raw") for p in series[kind])
    rss_ax.set_ylim(0, top * 1.25)
    wall_ax.set_ylim(bottom=0)
    for ax in (wall_ax, rss_ax):
        ax.set_xscale("log", base=2)
        ax.set_xticks(counts, [str(n) for n in counts])
        ax.minorticks_off()
        ax.grid(True, alpha=0.3)
    wall_ax.legend(loc="upper left")
    rss_ax.legend(loc="upper right", ncols=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    shutil.copyfile(path, path.parent / "latest-scale.png")
    return path
