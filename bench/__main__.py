"""``python -m bench``: run the benchmarks, print the table, write JSON and the chart.

    cd /work/main && .venv/bin/python -m bench            # everything (a few minutes)
    .venv/bin/python -m bench --quick                     # fewer repetitions, N up to 4
    .venv/bin/python -m bench --only boot --only scale    # some of them

Whatever happens (errors, Ctrl-C, SIGTERM), every domain and QEMU process of
the run is destroyed, the second libvirt host is stopped, and ``virsh list
--all`` of each host is printed at the end.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import logging
import platform
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import libvirt

from bench import (
    boot,
    cgroup,
    chart,
    copy,
    management,
    migration,
    reboot,
    report,
    roundtrip,
    scale,
    snapshots,
    xmlgen,
)
from bench.cleanup import sweep, virsh_list
from bench.context import Context
from bench.model import BenchResult

BENCHES: dict[str, Callable[[Context], BenchResult]] = {
    "xmlgen": xmlgen.run,
    "management": management.run,
    "roundtrip": roundtrip.run,
    "boot": boot.run,
    "reboot": reboot.run,
    "migration": migration.run,
    "scale": scale.run,
    "copy": copy.run,
    "snapshots": snapshots.run,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run virtlib's benchmarks: print the table, write JSON and the chart.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer repetitions and N up to 4 (about 2-3 min)"
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only NAME (repeat or comma-separate): {', '.join(BENCHES)}",
    )
    parser.add_argument(
        "--results-dir", type=Path, default=report.RESULTS_DIR, help="where JSON and PNG go"
    )
    parser.add_argument(
        "--raw-cgroup",
        choices=("machine", "root"),
        default="machine",
        help="where raw QEMUs run: beside libvirt's in /machine (default, fair on a shared "
        "host) or in the root cgroup",
    )
    parser.add_argument(
        "--prefix",
        default="bench",
        help="the first part of every domain name the run makes (default: bench)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="virtlib's debug log")
    args = parser.parse_args(argv)
    names = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHES)}")
    args.selected = [n for n in BENCHES if n in names] if names else list(BENCHES)
    return args


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _output(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else ""


def _version(number: int) -> str:
    major, rest = divmod(number, 1_000_000)
    return f"{major}.{rest // 1000}.{rest % 1000}"


def host_facts(ctx: Context) -> dict[str, Any]:
    try:
        conn = libvirt.open(ctx.uri)
        daemon = _version(conn.getLibVersion())
        conn.close()
    except libvirt.libvirtError as exc:
        daemon = f"unknown ({exc})"
    return {
        "cores": ctx.cores,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "libvirt_python": importlib.metadata.version("libvirt-python"),
        "libvirt_client_library": _version(libvirt.getVersion()),
        "libvirtd": daemon,
        "qemu": _output(["qemu-system-x86_64", "--version"]),
        "virtlib_commit": _output(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"]),
        "guest": str(ctx.guest.kernel.parent),
    }


def run_one(name: str, ctx: Context) -> BenchResult:
    print(f"== {name} ...", flush=True)
    start = time.perf_counter()
    try:
        result = BENCHES[name](ctx)
    except Exception as exc:
        traceback.print_exc()
        result = BenchResult(name, error=f"{type(exc).__name__}: {exc}")
    result.seconds = time.perf_counter() - start
    print(report.render([result]), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks and write the report.

    Long on purpose: one straight sequence (logging, signals, hosts, each bench, report)
    reads better than helpers that would each take the whole context."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    signal.signal(signal.SIGTERM, _interrupt)
    started = datetime.datetime.now(datetime.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    ctx = Context.make(args.quick, raw_cgroup=args.raw_cgroup == "machine", prefix=args.prefix)
    print(f"run {ctx.prefix}: {', '.join(args.selected)}{' (quick)' if args.quick else ''}")
    results: list[BenchResult] = []
    uris = [ctx.uri]
    listings: dict[str, str] = {}
    interrupted = False
    try:
        if "migration" in args.selected:
            from virtlib.secondhost import SecondHost

            print("starting the second libvirt host ...", flush=True)
            ctx.second_host = SecondHost.start()
            uris.append(ctx.second_host.uri)
        for name in args.selected:
            results.append(run_one(name, ctx))
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: cleaning up", file=sys.stderr)
    finally:
        errors = ctx.tracker.cleanup()
        left = sweep(ctx.prefix, uris)
        cgroup.sweep(ctx.prefix)
        for uri in uris:
            listings[uri] = virsh_list(uri)
        if ctx.second_host is not None:
            ctx.second_host.stop()
        for error in errors:
            print(f"cleanup: {error}", file=sys.stderr)
        if left:
            print(f"cleanup: swept leftover domains: {', '.join(left)}", file=sys.stderr)
    print()
    print(report.render(results))
    print()
    for uri, text in listings.items():
        print(f"virsh -c {uri} list --all  (after the run; this run's prefix is {ctx.prefix})")
        print(text)
    meta = {
        "started": started.isoformat(),
        "command": " ".join([sys.executable, "-m", "bench", *(argv or sys.argv[1:])]),
        "quick": args.quick,
        "raw_cgroup": args.raw_cgroup,
        "prefix": ctx.prefix,
        "interrupted": interrupted,
        "host": host_facts(ctx),
        "virsh_list_after": listings,
    }
    path = report.write(report.to_json(results, meta), stamp, args.results_dir)
    print(f"results: {path} (and {path.parent / 'latest.json'})")
    for result in results:
        if "scale" in result.series:
            png = chart.scale_chart(result.series["scale"], args.results_dir / f"{stamp}-scale.png")
            if png is not None:
                print(f"chart: {png} (and {png.parent / 'latest-scale.png'})")
    if interrupted:
        return 130
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
