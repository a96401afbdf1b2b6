"""pytest plugin (entry point ``pytest11``): when a test fails, the evidence is already there.

For every VM a test used (created during it, or alive while it ran) an artifacts
directory per test holds::

    <artifacts>/<test>/<vm>/serial.log     the serial console (from the VM's first byte, or
                                           from the test's start for a VM made earlier)
                           domain.xml      the definition it runs with
                           qemu.log        the hypervisor's own log of it (where readable)
                           history.json    what virtlib did to it, with times
    and, when the test failed or errored:
                           dmesg.txt       the guest kernel's log (agent, console or serial log)
                           screenshot.png  its display (VMs with ``display = vnc``)
                           state.txt       alive, or why not (VMDeadError's reason)
                           memory.dump     with --virtlib-dump-on-failure (kdump-compressed,
                                           at most --virtlib-dump-max-mib)

Options: ``--virtlib-artifacts DIR`` (default ``<pytest's basetemp>/virtlib-artifacts``,
printed in the summary), ``--virtlib-dump-on-failure``, ``--virtlib-dump-max-mib``,
``--virtlib-check-dmesg`` (every test; or the marker ``virtlib_check_dmesg``: kernel
warnings, oopses, panics, call traces and user-space segfaults since the test started
fail it), ``--virtlib-check-images`` (or the marker ``virtlib_check_images``: after the
test, the VMs' disk images get ``qemu-img check``; a corrupt one fails the test, naming
it), ``--virtlib-screenshots`` (every VM of the run gets a VNC display; the marker
``virtlib_screenshots`` does it for one test).

The failure report shows the last lines of each VM's serial log and the artifact
paths; the paths are also the test's ``user_properties`` (junit XML ``<property>``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from virtlib.crashscan import find_crash
from virtlib.errors import VMDeadError, VMError, VMImageCheckError
from virtlib.history import seen_vms
from virtlib.images import check_image

if TYPE_CHECKING:
    from virtlib.contract import BaseVM

TAIL_LINES = 20
DEFAULT_DUMP_MIB = 512
#: What --virtlib-check-dmesg fails a test for (besides crashscan's oopses, BUG reports
#: and panics): kernel warnings, call traces, user-space segfaults.
GUEST_PROBLEM_RE = re.compile(
    r"WARNING: CPU: \d+ PID: \d+ at .*|Call Trace:|segfault at [0-9a-f]+ ip .*|"
    r"general protection fault.*|Kernel panic - not syncing.*"
)


@dataclass
class Watch:
    """What one test saw of one VM: where its serial log and history stood at the start."""

    vm: BaseVM
    log_offset: int
    actions: int


@dataclass
class TestEvidence:
    started: float
    watches: list[Watch] = field(default_factory=list)
    written: dict[str, Path] = field(default_factory=dict)  # vm name -> its directory


EVIDENCE = pytest.StashKey[TestEvidence]()
ROOT = pytest.StashKey[Path]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("virtlib", "virtlib: VMs through libvirt")
    group.addoption("--virtlib-artifacts", metavar="DIR", help="where each test's evidence goes")
    group.addoption(
        "--virtlib-dump-on-failure",
        action="store_true",
        help="dump the memory of the VMs of a failed test (compressed)",
    )
    group.addoption(
        "--virtlib-dump-max-mib",
        type=int,
        default=DEFAULT_DUMP_MIB,
        help=f"the largest memory dump kept (default {DEFAULT_DUMP_MIB} MiB)",
    )
    group.addoption(
        "--virtlib-check-dmesg",
        action="store_true",
        help="fail tests whose guests logged kernel warnings, oopses, panics or segfaults",
    )
    group.addoption(
        "--virtlib-check-images",
        action="store_true",
        help="qemu-img check the disk images of each test's VMs afterwards",
    )
    group.addoption(
        "--virtlib-screenshots",
        action="store_true",
        help="give every VM a VNC display (on 127.0.0.1), so failures get a screenshot",
    )


def pytest_configure(config: pytest.Config) -> None:
    for marker, text in (
        ("virtlib_check_dmesg", "fail the test when its guests log kernel problems"),
        ("virtlib_check_images", "qemu-img check the test's disk images afterwards"),
        ("virtlib_screenshots", "the test's VMs get a VNC display for screenshots"),
    ):
        config.addinivalue_line("markers", f"{marker}: {text}")


def artifacts_root(config: pytest.Config) -> Path:
    if ROOT not in config.stash:
        chosen = config.getoption("virtlib_artifacts")
        if chosen:
            root = Path(chosen)
        else:
            factory = getattr(config, "_tmp_path_factory", None)
            base = factory.getbasetemp() if factory is not None else Path(".")
            root = Path(base) / "virtlib-artifacts"
        config.stash[ROOT] = root.resolve()
    return config.stash[ROOT]


def wants_display(item: pytest.Item) -> bool:
    """Whether the VMs of ``item`` should get a VNC display (read by the vm fixtures)."""
    return bool(
        item.config.getoption("virtlib_screenshots", default=False)
        or item.get_closest_marker("virtlib_screenshots")
    )


def _serial_size(vm: BaseVM) -> int:
    try:
        return Path(vm.get_serial_console_filename()).stat().st_size
    except OSError:
        return 0


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[EVIDENCE] = TestEvidence(
        started=time.time(),
        watches=[Watch(vm, _serial_size(vm), len(vm.history)) for vm in seen_vms()],
    )


def _vms_of(evidence: TestEvidence) -> list[Watch]:
    """The VMs the test used: those watched from its start that did something or still
    run, and every VM that appeared since."""
    known = {id(w.vm): w for w in evidence.watches}
    used = []
    for vm in seen_vms():
        watch = known.get(id(vm))
        if watch is None:
            used.append(Watch(vm, 0, 0))
        elif vm.state is not None or len(vm.history) > watch.actions:
            used.append(watch)
    return used


def _slug(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:150] or "test"


def _write(path: Path, text: str | bytes) -> None:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")


def _try(what: str, notes: list[str], call: Any) -> Any:
    try:
        return call()
    except VMError as exc:
        notes.append(f"{what}: {exc}")
    except OSError as exc:
        notes.append(f"{what}: {exc}")
    return None


def collect(item: pytest.Item, watch: Watch, failed: bool) -> Path:
    """Write the evidence of one VM for ``item``; returns its directory."""
    vm = watch.vm
    directory = artifacts_root(item.config) / _slug(item.nodeid) / _slug(vm.name)
    directory.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    log = _try("serial log", notes, lambda: Path(vm.get_serial_console_filename()).read_bytes())
    _write(directory / "serial.log", (log or b"")[watch.log_offset :])
    text = _try("definition", notes, vm.definition)
    if text:
        _write(directory / "domain.xml", text)
    text = _try("hypervisor log", notes, vm.hypervisor_log)
    if text:
        _write(directory / "qemu.log", text)
    actions = [a.to_json() for a in vm.history[watch.actions :]]
    _write(directory / "history.json", json.dumps(actions, indent=1))
    if failed:
        _failure_evidence(item, vm, directory, notes)
    if notes:
        _write(directory / "notes.txt", "\n".join(notes) + "\n")
    return directory


def _failure_evidence(item: pytest.Item, vm: BaseVM, directory: Path, notes: list[str]) -> None:
    alive = vm.state is not None and vm.is_alive()
    try:
        vm.verify_alive()
        state = "alive"
    except VMDeadError as exc:
        state = f"dead: {exc.reason}: {exc.detail}"
    except VMError as exc:
        state = f"unknown: {exc}"
    _write(directory / "state.txt", state + "\n")
    text = _try("dmesg", notes, vm.dmesg) if alive else None
    if text is None:
        text = _try("dmesg", notes, lambda: _kernel_lines(directory / "serial.log"))
    _write(directory / "dmesg.txt", text or "")
    if alive:
        _try("screenshot", notes, lambda: vm.screenshot(directory / "screenshot.png"))
    if alive and item.config.getoption("virtlib_dump_on_failure"):
        cap = int(item.config.getoption("virtlib_dump_max_mib")) << 20
        _try("memory dump", notes, lambda: vm.memory_dump(directory / "memory.dump", cap))


def _kernel_lines(path: Path) -> str:
    kernel = re.compile(r"^\s*(<\d>)?\[\s*\d+\.\d+\]")
    lines = path.read_text(errors="replace").splitlines()
    return "\n".join(line for line in lines if kernel.match(line))


def guest_problems(directory: Path) -> str:
    """Kernel problems in a VM's serial log and dmesg of this test (an excerpt, or "")."""
    texts = [
        (directory / name).read_text(errors="replace")
        for name in ("serial.log", "dmesg.txt")
        if (directory / name).is_file()
    ]
    for text in texts:
        crash = find_crash(text)
        if crash is not None:
            return crash.text
        match = GUEST_PROBLEM_RE.search(text)
        if match is not None:
            lines = text[match.start() :].splitlines()[:15]
            return "\n".join(lines)
    return ""


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """After setup and call: collect; after teardown: check images.  Long because it is
    the one place where the outcome can still be changed and reported; each step is small."""
    outcome: Any = yield
    report: pytest.TestReport = outcome.get_result()
    evidence = item.stash.get(EVIDENCE, None)
    if evidence is None:
        return
    if report.when == "teardown":
        _check_images(item, evidence, report)
        return
    if report.when == "setup" and report.passed:
        return
    failed = report.failed
    for watch in _vms_of(evidence):
        directory = collect(item, watch, failed)
        evidence.written[watch.vm.name] = directory
        item.user_properties.append((f"virtlib_artifacts:{watch.vm.name}", str(directory)))
    if report.when == "call" and report.passed and _checks_dmesg(item):
        for name, directory in evidence.written.items():
            problem = guest_problems(directory)
            if problem:
                report.outcome = "failed"
                report.longrepr = f"virtlib: the guest of {name} logged kernel problems:\n{problem}"
                failed = True
                break
    if failed and evidence.written:
        parts = []
        for name, directory in evidence.written.items():
            parts.append(f"--- {name}: {directory}\n{_tail(directory / 'serial.log')}")
        report.sections.append(("virtlib evidence", "\n".join(parts)))


def _checks_dmesg(item: pytest.Item) -> bool:
    return bool(
        item.config.getoption("virtlib_check_dmesg")
        or item.get_closest_marker("virtlib_check_dmesg")
    )


def _check_images(item: pytest.Item, evidence: TestEvidence, report: pytest.TestReport) -> None:
    wanted = item.config.getoption("virtlib_check_images") or item.get_closest_marker(
        "virtlib_check_images"
    )
    if not wanted:
        return
    for watch in _vms_of(evidence):
        vm = watch.vm
        for disk in vm.spec.disks:
            if disk.raw_device or not disk.path.exists():
                continue
            try:
                check_image(vm.params.object_params(disk.name), vm.root_dir)
            except VMImageCheckError as exc:
                report.outcome = "failed"
                report.longrepr = (
                    f"virtlib: disk image {disk.name!r} of {vm.name} is corrupt "
                    f"({disk.path}): {exc}"
                )
                return


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    root = config.stash.get(ROOT, None)
    if root is not None and root.exists():
        terminalreporter.write_line(f"virtlib artifacts: {root}")
