"""The plugin across two hosts with their own addresses: an xdist run puts each worker's VMs
on its own host, the guests on the remote one are logged into and copied to, a test migrates
a VM from one host to the other, and the summary says where the VMs ran."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from functional_support import domain_names

from virtlib.secondhost import SecondHost

pytest_plugins = ["pytester"]

INNER_TIMEOUT = 600

INNER_TESTS = """
import hashlib
import json
import os
import pathlib

RECORDS = pathlib.Path({records!r})


def record(test, worker_id, **data):
    (RECORDS / f"{{test}}-{{worker_id}}.json").write_text(json.dumps(dict(data, worker=worker_id)))


def log_in_and_copy(vm, tmp_path):
    session = vm.wait_for_login(timeout=120)
    try:
        session.cmd(f"echo {{vm.name}} > /tmp/who")
        payload = tmp_path / "payload"
        payload.write_bytes(os.urandom(256 * 1024))
        vm.copy_files_to(str(payload), "/tmp/payload")
        assert session.cmd("md5sum /tmp/payload").split()[0] == hashlib.md5(
            payload.read_bytes()
        ).hexdigest()
    finally:
        session.close()
    vm.copy_files_from("/tmp/who", str(tmp_path / "who"))
    assert (tmp_path / "who").read_text().strip() == vm.name


def test_one(vm, tmp_path, worker_id):
    log_in_and_copy(vm, tmp_path)
    record("one", worker_id, uri=vm.uri, name=vm.name)


def test_two(vm, tmp_path, worker_id):
    log_in_and_copy(vm, tmp_path)
    record("two", worker_id, uri=vm.uri, name=vm.name)


def test_migrates_from_one_host_to_the_other(vm_factory, pytestconfig, tmp_path, worker_id):
    first, second = pytestconfig.getoption("virtlib_uri")
    vm = vm_factory("mover", connect_uri=first, migration_dest_uri=second)
    vm.wait_for_serial_login(timeout=120).cmd("echo moved > /tmp/marker")
    vm.migrate(p2p=True)
    assert vm.uri == second
    session = vm.wait_for_login(timeout=60)
    try:
        assert session.cmd("cat /tmp/marker").strip() == "moved"
    finally:
        session.close()
    log_in_and_copy(vm, tmp_path)
    record("mover", worker_id, uri=vm.uri, name=vm.name)
"""


def test_an_xdist_run_spreads_its_vms_over_both_hosts(
    pytester: pytest.Pytester, tmp_path: Path, libvirt_host: str, networked_host: SecondHost
) -> None:
    records = tmp_path / "records"
    records.mkdir()
    pytester.makepyfile(test_inner=textwrap.dedent(INNER_TESTS.format(records=str(records))))
    hosts = ["--virtlib-uri", libvirt_host, "--virtlib-uri", networked_host.uri]
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-n", "2", *hosts, timeout=INNER_TIMEOUT
    )
    print(result.stdout.str())  # the run's own output, for the report
    result.assert_outcomes(passed=3)

    seen = [json.loads(p.read_text()) for p in sorted(records.glob("*.json"))]
    by_worker = {r["worker"]: r["uri"] for r in seen if not r["name"].count("-mover-")}
    assert set(by_worker.items()) == {("gw0", libvirt_host), ("gw1", networked_host.uri)}
    [mover] = [r for r in seen if "-mover-" in r["name"]]
    assert mover["uri"] == networked_host.uri
    # The summary names both hosts.
    result.stdout.fnmatch_lines(
        [
            "*virtlib: VMs started per host*",
            f"gw0: * VM(s) on {libvirt_host}",
            f"gw1: * VM(s) on {networked_host.uri}",
        ],
        consecutive=False,
    )
    names = {r["name"] for r in seen}
    assert not names & (domain_names(libvirt_host) | domain_names(networked_host.uri))
