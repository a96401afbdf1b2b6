"""The contract suite: behaviour every backend must show, run against every registered backend.

``backend`` is parametrised over :func:`virtlib.known_backends` at collection
time, so a backend registered through the ``virtlib.backends`` entry-point
group is picked up without editing the suite.  The in-memory backend
(:mod:`memory_backend`) is registered exactly that way, for this test session
only: a throwaway ``.dist-info`` with its entry point is put on ``sys.path``.

What the suite cannot learn through the contract comes from a :class:`Profile`
per backend (params its VMs need, how to kill one from outside); a backend
without a profile runs with its defaults, and the tests that need a profile's
hook skip, naming it.  Every VM made is destroyed after its test (or module),
and the session fails if one is left.

VM names start with ``$VIRTLIB_TEST_NAME_PREFIX`` (default ``vt-``).
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import virtlib
from virtlib.contract import BaseVM
from virtlib.params import Params

HERE = Path(__file__).resolve().parent
# The in-memory backend's guest is the fake getty/login/shell of the unit tests.
sys.path.insert(0, str(HERE.parent / "unit"))

from contract_support import LOGIN_TIMEOUT, PROFILES, Backend, Maker, Profile  # noqa: E402

MEMORY_ENTRY_POINT = "memory = memory_backend:MemoryVM"


def _register_memory_backend() -> None:
    """Register the in-memory backend through the entry-point group, for this process."""
    site = Path(tempfile.mkdtemp(prefix="virtlib-contract-"))
    info = site / "virtlib_contract_memory-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: virtlib-contract-memory\nVersion: 0\n"
    )
    (info / "entry_points.txt").write_text(f"[virtlib.backends]\n{MEMORY_ENTRY_POINT}\n")
    sys.path.append(str(site))
    atexit.register(shutil.rmtree, site, True)


_register_memory_backend()


def profile_of(vm_type: str) -> Profile:
    return PROFILES.get(vm_type, Profile())


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize(
            "backend",
            [
                pytest.param(
                    name,
                    id=name,
                    marks=[pytest.mark.functional] if profile_of(name).functional else [],
                )
                for name in sorted(virtlib.known_backends())
            ],
            indirect=True,
            scope="session",
        )


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest, virtlib_params: Params) -> Backend:
    """The backend under test; skipped (failed with --virtlib-require) when it cannot answer."""
    vm_type = str(request.param)
    profile = profile_of(vm_type)
    params = virtlib_params.copy() if profile.uses_virtlib_uri else Params()
    params.update(profile.params)
    params["vm_type"] = vm_type
    if profile.uses_virtlib_uri:
        uris = request.config.getoption("virtlib_uri") or ["qemu:///system"]
        params["connect_uri"] = uris[0]
    cls = virtlib.backend_class(vm_type)
    problem = cls.probe(params.get("connect_uri", "qemu:///system"))
    if problem:
        if request.config.getoption("virtlib_require"):
            pytest.fail(f"{vm_type}: {problem} (--virtlib-require)", pytrace=False)
        pytest.skip(f"{vm_type}: {problem}")
    return Backend(vm_type, cls, profile, params)


@pytest.fixture
def make_vm(backend: Backend, pytestconfig: pytest.Config) -> Iterator[Maker]:
    """``make_vm(name="", start=True, **params)``: a VM of the backend, destroyed after the test."""
    maker = Maker(backend, pytestconfig)
    yield maker
    maker.cleanup()


@pytest.fixture(scope="module")
def shared_vm(backend: Backend, pytestconfig: pytest.Config) -> Iterator[BaseVM]:
    """One running VM per backend and module, logged in on its serial console, for the tests
    that leave it as they found it."""
    maker = Maker(backend, pytestconfig)
    try:
        vm = maker("shared")
        vm.wait_for_serial_login(timeout=LOGIN_TIMEOUT)
        yield vm
    finally:
        maker.cleanup()
