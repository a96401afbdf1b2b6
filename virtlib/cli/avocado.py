"""``virtlib run-avocado-test MODULE.py --cfg FILE``: one avocado-vt style test on virtlib VMs.

Prints the result (PASS, FAIL, ERROR, CANCEL, SKIP or WARN, with the reason
and the log file) and exits 0 (PASS, WARN), 1 (FAIL), 4 (ERROR) or 5 (CANCEL,
SKIP); 2 for a bad command line or cfg file, as every virtlib command.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from virtlib.cli.output import emit
from virtlib.params import Params, parse_assignment


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    run = commands.add_parser(
        "run-avocado-test",
        parents=[common],
        help="run an avocado-vt style run(test, params, env) test module",
        description="Run MODULE's run(test, params, env) with params from an avocado-vt "
        "style cfg file; the VMs the params name (vms, main_vm) are started first and "
        "destroyed afterwards.  Exit status: 0 PASS/WARN, 1 FAIL, 4 ERROR, 5 CANCEL/SKIP.",
    )
    run.add_argument("module", type=Path, help="the test module (a .py file)")
    run.add_argument("--cfg", type=Path, action="append", default=[], metavar="FILE",
                     help="cfg file (key = value lines; repeat to layer several)")  # fmt: skip
    run.add_argument("--set", dest="assignments", action="append", default=[],
                     metavar="KEY=VALUE", help="set a param after the cfg files")  # fmt: skip
    run.add_argument("--results-dir", type=Path, help="where debug.log and test.outputdir go")
    run.add_argument(
        "--root-dir", type=Path, help="where relative paths in params start (default: MODULE's)"
    )
    run.add_argument("-v", "--verbose", action="store_true", help="show the test's log on stderr")
    run.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from virtlib.compat.avocado import load_cfg, run_test

    params = Params()
    for cfg in args.cfg:
        load_cfg(cfg, params)
    for assignment in args.assignments:
        key, value = parse_assignment(assignment, f"--set {assignment!r}")
        params[key] = value
    if args.uri:
        params["connect_uri"] = args.uri
    echo = logging.DEBUG if args.debug else logging.INFO if args.verbose else None
    result = run_test(args.module, params, args.root_dir, args.results_dir, echo_level=echo)
    reason = f": {result.reason}" if result.reason else ""
    emit(
        args.json,
        result.as_dict(),
        f"{result.status} {result.name}{reason} ({result.seconds:.2f} s)\nlog: {result.logfile}",
    )
    return result.exit_code
