"""Functional tests: the real libvirtd and the bundled guest, through virtlib's pytest plugin.

``vm``, ``vm_factory``, ``libvirt_host`` and ``second_host`` come from
:mod:`virtlib.pytest_plugin` (installed as a pytest11 entry point), which also
destroys every VM after its test and checks at the session's end that none is
left.  ``--virtlib-require`` (pyproject's addopts) makes a missing libvirtd a
failure here, not a skip.

Tests that take ``vm`` get the plugin's checkpoint reset (its default): one kept guest
per worker, reverted to its checkpoint for each test in a fraction of a second instead
of a boot (``--virtlib-reset boot`` gives them a new boot each, as before).  Tests that
need a guest of their own -- a boot log from its first byte, a VM to destroy, migrate
or give odd params -- use ``vm_factory()``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtlib.params import Params


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "functional" in str(item.fspath):
            item.add_marker(pytest.mark.functional)


@pytest.fixture(scope="session")
def virtlib_params(virtlib_params: Params) -> Params:
    """The plugin's params (``--virtlib-params``), with small guests unless it says otherwise."""
    params = virtlib_params.copy()
    params.setdefault("mem", "256")
    return params


@pytest.fixture(scope="session")
def libvirt_uri(libvirt_host: str) -> str:
    """The libvirt URI the tests run on (the plugin's ``libvirt_host``)."""
    return libvirt_host


@pytest.fixture
def qemu_dir() -> Iterator[Path]:
    """A directory libvirt's QEMU (user libvirt-qemu) can reach, removed after the test
    (pytest's tmp_path lives under a 0700 directory QEMU cannot enter)."""
    path = Path(tempfile.mkdtemp(prefix="virtlib-test-", dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
