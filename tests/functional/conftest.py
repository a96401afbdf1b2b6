"""Fixtures for functional tests: the real libvirtd, the bundled guest, and cleanup.

Every VM made through ``vm_factory`` is destroyed after its test, whatever
happened; at the end of the session no domain made by this run may remain.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import libvirt
import pytest
from functional_support import VMFactory

import virtlib
from virtlib.backends.libvirt.domxml import parse, read_metadata
from virtlib.secondhost import SecondHost
from virtlib.textutil import random_string

URI = os.environ.get("VIRTLIB_TEST_URI", "qemu:///system")
RUN_TAG = random_string(6)

pytestmark = pytest.mark.functional


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "functional" in str(item.fspath):
            item.add_marker(pytest.mark.functional)


@pytest.fixture(scope="session")
def libvirt_uri() -> str:
    """The real daemon; the functional suite fails (not skips) when it does not answer."""
    try:
        conn = libvirt.open(URI)
    except libvirt.libvirtError as exc:
        pytest.fail(f"libvirtd at {URI} does not answer ({exc}); run scripts/setup-host")
    conn.close()
    return URI


@pytest.fixture(scope="session")
def bundled_guest() -> virtlib.BaseVM:
    from virtlib.guest import ensure_guest

    return ensure_guest()  # type: ignore[return-value]


@pytest.fixture
def vm_factory(libvirt_uri: str, bundled_guest: object) -> Iterator[VMFactory]:
    """make(**params) -> an unstarted VM with a unique name; destroyed after the test."""
    made: list[virtlib.BaseVM] = []

    def make(name: str = "", start: bool = True, **params: str) -> virtlib.BaseVM:
        p = virtlib.Params(vm_type="libvirt", connect_uri=libvirt_uri, mem="256")
        p.update(params)
        vm = virtlib.new_vm(f"vt-{RUN_TAG}-{name or 'vm'}-{random_string(4)}", p)
        made.append(vm)
        if start:
            vm.create()
        return vm

    yield make
    for vm in made:
        vm.destroy(gracefully=False)


@pytest.fixture
def vm(vm_factory: VMFactory) -> virtlib.BaseVM:
    """A running bundled guest, logged in on the serial console."""
    machine = vm_factory()
    machine.wait_for_serial_login(timeout=120)
    return machine


@pytest.fixture(scope="session", autouse=True)
def no_domains_left(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "functional" not in " ".join(str(a) for a in request.config.args) and not any(
        "functional" in str(i.fspath) for i in request.session.items
    ):
        return
    try:
        conn = libvirt.open(URI)
    except libvirt.libvirtError:
        return
    try:
        left = [
            d.name()
            for d in conn.listAllDomains()
            if d.name().startswith(f"vt-{RUN_TAG}-")
            or read_metadata(parse(d.XMLDesc(0))).get("instance", "").endswith(RUN_TAG)
        ]
    finally:
        conn.close()
    assert not left, f"domains left behind by this test run: {left}"


@pytest.fixture(scope="session")
def second_host(libvirt_uri: str) -> Iterator[SecondHost]:
    """A second libvirt host on this machine (its own libvirtd in a mount namespace)."""
    host = SecondHost.start()
    try:
        yield host
    finally:
        host.stop()
