"""Run one avocado-vt test module: params in, VMs up, ``run(test, params, env)``, VMs gone.

What avocado-vt's ``env_process.preprocess`` does for VMs, reduced to what a
single test needs: every name in ``vms`` (default: ``main_vm``) becomes a VM
made from ``params.object_params(name)`` through virtlib's registry; it is
started when its ``start_vm`` is yes (the default, as in avocado-vt's base
config) and paused when ``paused_after_start_vm`` is yes.  Whatever happens,
every VM in the env is destroyed afterwards (avocado-vt's ``kill_vm`` keeps VMs
for the next test of a job; a run here is one test).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from virtlib.compat.avocado.env import Env
from virtlib.compat.avocado.test import Test, status_of
from virtlib.errors import VMParamsError
from virtlib.params import Params

log = logging.getLogger(__name__)

#: The command line's exit status for each test status.
EXIT_CODES = {"PASS": 0, "WARN": 0, "FAIL": 1, "ERROR": 4, "CANCEL": 5, "SKIP": 5}
#: Loggers whose records go to the run's debug.log (avocado-vt tests log to "avocado.*").
CAPTURED_LOGGERS = ("avocado", "virtlib", "aexpect")


@dataclass(frozen=True)
class Result:
    """How a test ended."""

    name: str
    status: str
    reason: str
    seconds: float
    outputdir: Path

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    @property
    def logfile(self) -> Path:
        return self.outputdir / "debug.log"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "reason": self.reason,
            "seconds": round(self.seconds, 3),
            "outputdir": str(self.outputdir),
            "logfile": str(self.logfile),
        }


def run_test(
    module_path: str | Path,
    params: Params,
    root_dir: str | Path | None = None,
    outputdir: str | Path | None = None,
    echo_level: int | None = None,
) -> Result:
    """Run the test in ``module_path`` with ``params``; never raises for what the test does.

    :param root_dir: what relative paths in params hang off (avocado-vt's
        ``test.bindir``); default: the module's directory.
    :param outputdir: where debug.log and ``test.outputdir`` go (made 0700);
        default: a new private directory.
    :param echo_level: also show the captured log records of this level on stderr.
    :raises VMParamsError: the module file does not exist.
    """
    path = Path(module_path)
    if not path.is_file():
        raise VMParamsError(f"no test module {path}")
    name = path.stem
    outdir = _output_dir(name, outputdir)
    test = Test(name, params, outdir, Path(root_dir) if root_dir else path.parent.resolve())
    env = Env()
    start = time.monotonic()
    status, reason = "PASS", ""
    with _captured_logs(outdir / "debug.log", echo_level):
        test.log.info("running %s (%s) with %d params", name, path, len(params))
        try:
            with _on_sys_path(path.parent):
                entry = _entry_point(_load_module(path), params.get("type", ""))
                _start_vms(test, params, env)
                entry(test, params, env)
        except KeyboardInterrupt:
            _clean(env)
            raise
        except BaseException as exc:  # the test's end, whatever it is, is its result
            status, reason = status_of(exc), f"{type(exc).__name__}: {exc}"
            level = logging.INFO if status in ("CANCEL", "SKIP", "WARN") else logging.ERROR
            test.log.log(level, "%s: %s", status, reason, exc_info=level == logging.ERROR)
        _clean(env)
        seconds = time.monotonic() - start
        test.log.info("%s %s (%.2f s)", status, name, seconds)
    return Result(name, status, reason, seconds, outdir)


def _output_dir(name: str, outputdir: str | Path | None) -> Path:
    if outputdir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return Path(tempfile.mkdtemp(prefix=f"virtlib-avocado-{name}-{stamp}-"))
    path = Path(outputdir)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise VMParamsError(f"cannot make the results directory {path}: {exc}") from None
    return path


def _load_module(path: Path) -> ModuleType:
    """Import the test module from its file (as avocado-vt does, under its own name)."""
    spec = importlib.util.spec_from_file_location(f"virtlib_avocado_test_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise VMParamsError(f"{path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _entry_point(module: ModuleType, test_type: str) -> Callable[[Test, Params, Env], None]:
    """``run``, else ``run_<type>`` (the older name avocado-vt still looks for)."""
    for attr in ("run", f"run_{test_type}" if test_type else ""):
        entry = getattr(module, attr, None) if attr else None
        if callable(entry):
            return entry  # type: ignore[no-any-return]
    raise AttributeError(f"{module.__file__} has no run(test, params, env) function")


def vm_names(params: Params) -> list[str]:
    """The VMs a test wants: ``vms``, else ``main_vm``."""
    return params.objects("vms") or params.objects("main_vm")


def _start_vms(test: Test, params: Params, env: Env) -> None:
    names = vm_names(params)
    if names and not params.get("main_vm"):
        params["main_vm"] = names[0]
    for name in names:
        vm_params = params.object_params(name)
        vm = env.create_vm(
            vm_params.get("vm_type"), vm_params.get("target"), name, vm_params, test.bindir
        )
        if not vm_params.get_boolean("start_vm", True):
            continue
        test.log.info("starting VM %s", name)
        vm.create(timeout=vm_params.get_float("vm_create_timeout", 90))
        if vm_params.get_boolean("paused_after_start_vm"):
            vm.pause()


def _clean(env: Env) -> None:
    for vm in env.get_all_vms():
        log.info("destroying VM %s", vm.name)
    env.clean_objects()


@contextlib.contextmanager
def _on_sys_path(folder: Path) -> Iterator[None]:
    """The module's folder first on sys.path (its helper modules import), for the run only."""
    entry = str(folder.resolve())
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


@contextlib.contextmanager
def _captured_logs(logfile: Path, echo_level: int | None) -> Iterator[None]:
    """Every record of CAPTURED_LOGGERS into ``logfile``; those of ``echo_level`` on stderr."""
    formatter = logging.Formatter("%(asctime)s %(levelname)-5s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.FileHandler(logfile, encoding="utf-8")]
    if echo_level is not None:
        handlers.append(logging.StreamHandler(sys.stderr))
        handlers[-1].setLevel(echo_level)
    for handler in handlers:
        handler.setFormatter(formatter)
    saved = []
    for name in CAPTURED_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        for handler in handlers:
            logger.addHandler(handler)
    try:
        yield
    finally:
        for logger, level, propagate in saved:
            for handler in handlers:
                logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate
        for handler in handlers:
            handler.close()
