"""pytest plugin (entry point ``pytest11``): libvirt hosts, bundled-guest VMs, and cleanup.

Options: ``--virtlib-uri URI`` (repeatable; default ``qemu:///system``),
``--virtlib-spread worker|round-robin``, ``--virtlib-params FILE``,
``--virtlib-require``, ``--virtlib-reset checkpoint|boot`` and
``--virtlib-name-prefix``.  Fixtures: ``libvirt_host``, ``virtlib_params``,
``vm_factory``, ``vm``, ``second_host`` and ``networked_host``.

Reset (:mod:`virtlib.reset`): ``vm`` and ``vm_factory(..., reset="checkpoint")`` give
each test a guest at a checkpoint taken once per worker after the first boot and
login (earlier tests' changes gone, logged in on the serial console, SSH ready);
such VMs are kept for the next test and destroyed at the end of the session.
``--virtlib-reset boot`` boots a new guest for every test instead.  The marker ``virtlib`` skips a
test (with the reason) when its hypervisor does not answer; tests using the
fixtures get it automatically.  With ``--virtlib-require`` those skips are
errors.

Several hosts: each URI is a libvirt host reached through libvirt's own remote
protocol (``qemu+ssh://host/system``, ``qemu+tcp://...``).  ``worker`` spread
puts every VM of xdist worker ``gwN`` on ``uris[N % len(uris)]``;
``round-robin`` sends each new VM to the next URI.

Under pytest-xdist each worker takes its own partition of the MAC and port
pools (:mod:`virtlib.reservations`): no lock is shared between workers.  At the
end of each process's session every domain its ``vm_factory`` made must be gone
from every host; one that is not is destroyed and reported as an error.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import pytest

from virtlib import reservations
from virtlib.errors import VMError
from virtlib.params import Params
from virtlib.registry import DEFAULT_VM_TYPE, backend_class
from virtlib.reset import (
    RESETS,
    Keeper,
    KeeperPool,
    is_bundled_diskless,
    scratch_directory,
    scratch_disk_params,
    wait_until_ready,
)
from virtlib.textutil import random_string

if TYPE_CHECKING:
    from virtlib.contract import BaseVM
    from virtlib.secondhost import SecondHost

DEFAULT_URI = "qemu:///system"
SPREADS = ("worker", "round-robin")
ENV_NAME_PREFIX = "VIRTLIB_TEST_NAME_PREFIX"  # the contract suite's too
DEFAULT_NAME_PREFIX = "vt-"
LOGIN_TIMEOUT = 120.0
FIXTURES_NEEDING_A_HOST = frozenset({"vm", "vm_factory", "libvirt_host"})


class VMFactory(Protocol):
    """``make(name="", start=True, reset=None, **params) -> BaseVM``: the ``vm_factory``
    fixture (``reset="checkpoint"``: a kept VM at its checkpoint, see the module)."""

    def __call__(
        self, name: str = "", start: bool = True, reset: str | None = None, **params: str
    ) -> BaseVM: ...


@dataclass(frozen=True)
class Worker:
    """This process: xdist worker ``gw<index>`` of ``count``, or ``main`` without xdist."""

    id: str = "main"
    index: int = 0
    count: int = 1

    @classmethod
    def of(cls, config: pytest.Config) -> Worker:
        workerinput = getattr(config, "workerinput", None)
        if not workerinput:
            return cls()
        worker_id = str(workerinput["workerid"])
        digits = worker_id.removeprefix("gw")
        index = int(digits) if digits.isdigit() else 0
        return cls(worker_id, index, max(int(workerinput.get("workercount", 1)), index + 1))


@dataclass
class Plan:
    """The plugin's state in one pytest process: hosts, choices, and every VM made."""

    uris: list[str]
    spread: str
    worker: Worker
    require: bool
    params: Params
    reset: str = "checkpoint"
    name_prefix: str = DEFAULT_NAME_PREFIX
    made: list[BaseVM] = field(default_factory=list)
    kept: KeeperPool = field(default_factory=KeeperPool)
    _scratch: Path | None = None
    _scratch_context: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _turn: int = 0
    _problems: dict[str, str | None] = field(default_factory=dict)

    @property
    def home(self) -> str:
        """The URI of this worker (``uris[index % len]``)."""
        return self.uris[self.worker.index % len(self.uris)]

    def uris_in_use(self) -> list[str]:
        return list(self.uris) if self.spread == "round-robin" else [self.home]

    def next_uri(self) -> str:
        """Where the next VM goes: this worker's host, or the next one in turn."""
        if self.spread == "worker":
            return self.home
        uri = self.uris[(self.worker.index + self._turn) % len(self.uris)]
        self._turn += 1
        return uri

    def vm_name(self, name: str) -> str:
        prefix = self.name_prefix if self.name_prefix.endswith("-") else f"{self.name_prefix}-"
        return f"{prefix}{self.worker.id}-{name or 'vm'}-{random_string(6)}"

    def scratch(self) -> Path:
        """The session's directory for scratch disks (made on first use)."""
        if self._scratch is None:
            self._scratch = self._scratch_context.enter_context(scratch_directory())
        return self._scratch

    def finish(self) -> list[str]:
        """The session ends: kept VMs destroyed, the scratch directory removed; failures."""
        failures = self.kept.destroy_all()
        self._scratch_context.close()
        self._scratch = None
        return failures

    @property
    def vm_type(self) -> str:
        return self.params.get("vm_type", DEFAULT_VM_TYPE)

    def problem(self, uri: str) -> str | None:
        """Why ``uri`` is not usable (None when its hypervisor answers); asked once per URI."""
        if uri not in self._problems:
            self._problems[uri] = probe(uri, self.vm_type)
        return self._problems[uri]

    def unavailable(self, reason: str) -> NoReturn:
        """Skip the test with ``reason``; fail it with --virtlib-require."""
        if self.require:
            pytest.fail(f"{reason} (--virtlib-require)", pytrace=False)
        pytest.skip(reason)

    def require_hosts(self, uris: list[str]) -> None:
        for uri in uris:
            reason = self.problem(uri)
            if reason:
                self.unavailable(reason)

    def leftovers(self) -> list[str]:
        """Domains made here that a host still has; each is destroyed (and named)."""
        if not self.made:
            return []
        names = {vm.name for vm in self.made}
        uuids = {vm.uuid for vm in self.made if vm.uuid}
        hosts = {uri for uri in self.uris if uri in self._problems and not self._problems[uri]}
        hosts |= {vm.uri for vm in self.made}
        left: list[str] = []
        for backend in {type(vm) for vm in self.made}:
            for uri in sorted(hosts):
                left += backend.remove_vms(uri, names, uuids)
        return left


def probe(uri: str, vm_type: str = DEFAULT_VM_TYPE) -> str | None:
    """None if the hypervisor at ``uri`` answers (through the backend), else why not."""
    try:
        cls = backend_class(vm_type)
    except ImportError as exc:
        return f"the {vm_type} backend cannot be loaded: {exc}"
    except VMError as exc:
        return str(exc)
    return cls.probe(uri)


# --- hooks ----------------------------------------------------------------------------------
PLAN = pytest.StashKey[Plan]()
SAVED_PARTITION = pytest.StashKey[str | None]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("virtlib", "virtlib: VMs through libvirt")
    group.addoption(
        "--virtlib-uri",
        action="append",
        default=[],
        metavar="URI",
        help=f"a libvirt host to run VMs on; repeat for several (default {DEFAULT_URI})",
    )
    group.addoption(
        "--virtlib-spread",
        choices=SPREADS,
        default="worker",
        help="worker: xdist worker N uses URI N %% count; round-robin: each VM the next URI",
    )
    group.addoption(
        "--virtlib-params", metavar="FILE", help="a params file applied to every VM made"
    )
    group.addoption(
        "--virtlib-require",
        action="store_true",
        help="fail, instead of skipping, tests whose hypervisor is not usable",
    )
    group.addoption(
        "--virtlib-reset",
        choices=RESETS,
        default="checkpoint",
        help="how the vm fixture (and vm_factory(reset='checkpoint')) gives each test a fresh "
        "guest: checkpoint (default): revert a guest kept for the session to a checkpoint "
        "taken after its first boot and login; boot: boot a new guest every time",
    )
    group.addoption(
        "--virtlib-name-prefix",
        default=os.environ.get(ENV_NAME_PREFIX, DEFAULT_NAME_PREFIX),
        metavar="PREFIX",
        help=f"VM names start with PREFIX<worker>- (default ${ENV_NAME_PREFIX}, else "
        f"{DEFAULT_NAME_PREFIX})",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "virtlib: needs a libvirt hypervisor; skipped with the reason when none answers "
        "(an error with --virtlib-require)",
    )
    params_file = config.getoption("virtlib_params")
    try:
        params = Params.from_file(params_file) if params_file else Params()
    except Exception as exc:
        raise pytest.UsageError(f"--virtlib-params: {exc}") from None
    worker = Worker.of(config)
    config.stash[PLAN] = Plan(
        uris=list(config.getoption("virtlib_uri")) or [DEFAULT_URI],
        spread=config.getoption("virtlib_spread"),
        worker=worker,
        require=bool(config.getoption("virtlib_require")),
        params=params,
        reset=config.getoption("virtlib_reset"),
        name_prefix=config.getoption("virtlib_name_prefix"),
    )
    if worker.count > 1:
        # This worker's own MAC/port tables and ranges; exported for its child processes.
        config.stash[SAVED_PARTITION] = os.environ.get(reservations.ENV_PARTITION)
        reservations.set_partition(worker.index, worker.count)
        os.environ[reservations.ENV_PARTITION] = f"{worker.index}/{worker.count}"


def pytest_unconfigure(config: pytest.Config) -> None:
    if SAVED_PARTITION in config.stash:
        reservations.clear_partition()
        saved = config.stash[SAVED_PARTITION]
        if saved is None:
            os.environ.pop(reservations.ENV_PARTITION, None)
        else:
            os.environ[reservations.ENV_PARTITION] = saved


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests that use the fixtures; skip marked tests when their hypervisor is unusable
    (a skip mark reports the test's own location; with --virtlib-require setup fails them)."""
    plan = config.stash[PLAN]
    for item in items:
        if FIXTURES_NEEDING_A_HOST & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.virtlib)
        if item.get_closest_marker("virtlib") is None or plan.require:
            continue
        reason = next(filter(None, map(plan.problem, plan.uris_in_use())), None)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    plan = item.config.stash[PLAN]
    if plan.require and item.get_closest_marker("virtlib") is not None:
        plan.require_hosts(plan.uris_in_use())


# --- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def libvirt_host(pytestconfig: pytest.Config) -> str:
    """The libvirt URI this worker uses (skips with the reason when it does not answer)."""
    plan = pytestconfig.stash[PLAN]
    plan.require_hosts(plan.uris_in_use())
    return plan.home


@pytest.fixture(scope="session")
def virtlib_params(pytestconfig: pytest.Config) -> Params:
    """Params every VM of ``vm_factory`` starts from (``--virtlib-params``; override to add)."""
    return pytestconfig.stash[PLAN].params.copy()


@pytest.fixture
def vm_factory(
    request: pytest.FixtureRequest, pytestconfig: pytest.Config, virtlib_params: Params
) -> Iterator[VMFactory]:
    """``make(name="", start=True, reset=None, **params)``: a VM with a unique name on the
    next host.

    By default a new VM, destroyed after the test whatever happened; a destroy that fails
    is reported as an error of the test's teardown (the test's own result stays).  With
    ``reset="checkpoint"`` (unless ``--virtlib-reset boot``): a VM kept for the session,
    at its checkpoint, logged in on the serial console and SSH ready (see virtlib.reset);
    ``reset="boot"`` is the default.  Under ``--virtlib-screenshots`` (or the test's
    ``virtlib_screenshots`` marker) VMs get ``display = vnc`` unless the test chose one.
    Long because ``make``'s closures share the test's lists of made and taken VMs.
    """
    import virtlib
    from virtlib.pytest_evidence import wants_display

    plan = pytestconfig.stash[PLAN]
    made: list[BaseVM] = []
    taken: list[Keeper] = []

    def params_for(name: str, params: dict[str, str]) -> Params:
        uri = params.pop("connect_uri", "") or plan.next_uri()
        plan.require_hosts([uri])
        vm_params = virtlib_params.copy()
        vm_params["connect_uri"] = uri
        if wants_display(request.node):  # the evidence plugin's option
            vm_params.setdefault("display", "vnc")
        vm_params.update(params)
        return vm_params

    def fresh(name: str, vm_params: Params) -> BaseVM:
        vm = virtlib.new_vm(plan.vm_name(name), vm_params)
        plan.made.append(vm)
        return vm

    def make(name: str = "", start: bool = True, reset: str | None = None, **params: str) -> BaseVM:
        if reset not in (None, *RESETS):
            raise ValueError(f"vm_factory: reset must be one of {', '.join(RESETS)}, not {reset!r}")
        vm_params = params_for(name, params)
        key = (("name", name), *sorted(vm_params.items()))
        if reset is not None and is_bundled_diskless(vm_params):
            vm_params.update(scratch_disk_params(plan.vm_name(name), plan.scratch()))
        if reset == "checkpoint" and plan.reset == "checkpoint":
            if not start:
                raise ValueError("vm_factory: reset='checkpoint' gives a running VM (start=True)")
            keeper = plan.kept.keeper(key, lambda: fresh(name, vm_params.copy()))
            taken.append(keeper)
            kept = keeper.take()
            if keeper.last[0] == "boot":
                _count_started(pytestconfig, plan.worker.id, vm_params["connect_uri"])
            return kept
        vm = fresh(name, vm_params)
        made.append(vm)
        if start:
            vm.create()
            _count_started(pytestconfig, plan.worker.id, vm_params["connect_uri"])
            if reset is not None:  # the guest a checkpoint would give
                wait_until_ready(vm)
        return vm

    yield make
    for keeper in taken:
        keeper.release()
    _destroy_all(made)


def _destroy_all(made: list[BaseVM]) -> None:
    """Destroy the test's VMs, newest first; a destroy that fails fails the teardown."""
    failures = []
    for vm in reversed(made):
        try:
            vm.destroy(gracefully=False)
        except Exception as exc:
            failures.append(f"{vm.name}: {type(exc).__name__}: {exc}")
    if failures:
        pytest.fail("vm_factory could not destroy: " + "; ".join(failures), pytrace=False)


@pytest.fixture
def vm(vm_factory: VMFactory) -> BaseVM:
    """A running bundled guest, logged in on its serial console (``vm.serial_console``) and
    SSH ready: a kept guest at its checkpoint (``--virtlib-reset checkpoint``, the default;
    it has a small scratch disk, ``/dev/vda``) or a new boot (``boot``)."""
    return vm_factory(reset="checkpoint")


@pytest.fixture(scope="session")
def second_host(pytestconfig: pytest.Config) -> Iterator[SecondHost]:
    """A second libvirtd on this machine (virtlib.secondhost), stopped at the session's end."""
    yield from _second_host(pytestconfig.stash[PLAN], network=False)


@pytest.fixture(scope="session")
def networked_host(pytestconfig: pytest.Config) -> Iterator[SecondHost]:
    """A second libvirt host with a network of its own (a network namespace, its own sshd),
    reached over SSH at ``networked_host.uri`` as a remote host is; stopped at the end."""
    yield from _second_host(pytestconfig.stash[PLAN], network=True)


def _second_host(plan: Plan, network: bool) -> Iterator[SecondHost]:
    if os.geteuid() != 0:
        plan.unavailable("a second libvirt host needs root (mount namespaces)")
    needs = {"unshare": "util-linux"}
    if network:
        needs |= {"ip": "iproute2", "sshd": "openssh-server", "ssh-keygen": "openssh-client"}
    for tool, package in needs.items():
        if shutil.which(tool, path=f"{os.environ.get('PATH', '')}:/usr/sbin") is None:
            plan.unavailable(f"a second libvirt host needs {tool} ({package}; scripts/setup-host)")
    from virtlib.secondhost import SecondHost

    host = SecondHost.start(network=network)
    try:
        yield host
    finally:
        host.stop()


@pytest.fixture(scope="session", autouse=True)
def _virtlib_no_domains_left(pytestconfig: pytest.Config) -> Iterator[None]:
    """At the session's end no domain made by ``vm_factory`` may remain on any host."""
    yield
    plan = pytestconfig.stash[PLAN]
    kept = plan.finish()
    if kept:
        pytest.fail("could not destroy the kept VMs: " + "; ".join(kept), pytrace=False)
    left = plan.leftovers()
    if left:
        pytest.fail(
            "domains made by this session were still defined at its end (now destroyed): "
            + ", ".join(left),
            pytrace=False,
        )


# --- where the VMs ran: a section of the terminal summary -------------------------------------
#: (worker, URI) -> VMs started there by ``vm_factory``; xdist workers send theirs to the
#: controller (``workeroutput``), which prints them all.
STARTED = pytest.StashKey[dict[str, dict[str, int]]]()


def _count_started(config: pytest.Config, worker: str, uri: str, count: int = 1) -> None:
    per_worker = config.stash.setdefault(STARTED, {}).setdefault(worker, {})
    per_worker[uri] = per_worker.get(uri, 0) + count


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["virtlib_started"] = session.config.stash.get(STARTED, {})


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """xdist (controller): merge what a worker started into this process's counts."""
    started = getattr(node, "workeroutput", {}).get("virtlib_started", {})
    for worker, uris in started.items():
        for uri, count in uris.items():
            _count_started(node.config, worker, uri, count)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    started = config.stash.get(STARTED, {})
    if not started:
        return
    terminalreporter.section("virtlib: VMs started per host")
    for worker in sorted(started):
        for uri, count in sorted(started[worker].items()):
            terminalreporter.write_line(f"{worker}: {count} VM(s) on {uri}")
