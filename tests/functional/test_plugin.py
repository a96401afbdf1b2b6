"""virtlib's pytest plugin, from the outside: small pytest sessions that use its fixtures.

Each test writes a test file, runs it in a pytest subprocess (the plugin loads
through its pytest11 entry point, as for any user) and checks the outcome and
what the inner tests recorded.  Guest boots are kept to the few that prove
something: creating a domain is enough where no login is needed.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
from functional_support import domain_names

from virtlib.ports import PORT_RANGE
from virtlib.reservations import Partition
from virtlib.secondhost import SecondHost

pytest_plugins = ["pytester"]

INNER_TIMEOUT = 300
#: The inner sessions' VM names start with it (they inherit $VIRTLIB_TEST_NAME_PREFIX).
PREFIX = os.environ.get("VIRTLIB_TEST_NAME_PREFIX", "vt-")
NO_HYPERVISOR = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"

# The inner sessions' conftest: a ``record`` fixture writing what a test saw to RECORDS.
INNER_CONFTEST = """
import json
import os
import pathlib

import pytest

RECORDS = pathlib.Path({records!r})


def describe(vm):
    return {{
        "name": vm.name,
        "uri": vm.uri,
        "mac": vm.get_mac_address(),
        "port": vm.get_port(22),
        "partition": os.environ.get("VIRTLIB_PARTITION", ""),
    }}


def runs_on(vm):
    import libvirt

    conn = libvirt.open(vm.uri)
    try:
        return conn.lookupByName(vm.name).isActive() == 1
    finally:
        conn.close()


@pytest.fixture
def record(request, worker_id):
    def write(**data):
        data["worker"] = worker_id
        path = RECORDS / f"{{request.node.name}}-{{worker_id}}.json"
        path.write_text(json.dumps(data))

    return write
"""


@pytest.fixture
def records(pytester: pytest.Pytester, tmp_path: Path) -> Path:
    """The directory the inner tests record into (their conftest is written here too)."""
    path = tmp_path / "records"
    path.mkdir()
    pytester.makeconftest(INNER_CONFTEST.format(records=str(path)))
    return path


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(path.glob("*.json"))]


def run_inner(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_inner=textwrap.dedent(source))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=INNER_TIMEOUT)


def test_vm_boots_runs_commands_and_is_gone_afterwards(
    pytester: pytest.Pytester, records: Path, libvirt_host: str
) -> None:
    result = run_inner(
        pytester,
        """
        from conftest import describe, runs_on

        def test_vm(vm, record):
            assert runs_on(vm)
            assert vm.serial_console.cmd("echo $((6*7))").strip() == "42"
            ssh = vm.wait_for_login(timeout=120)
            try:
                assert ssh.cmd("hostname").strip() == "virtlib-guest"
            finally:
                ssh.close()
            record(**describe(vm))
        """,
        "--virtlib-uri",
        libvirt_host,
    )
    result.assert_outcomes(passed=1)
    [seen] = read_records(records)
    assert seen["uri"] == libvirt_host
    assert seen["name"].startswith(f"{PREFIX}main-vm-")
    assert seen["name"] not in domain_names(libvirt_host)


def test_failing_tests_and_a_failing_destroy_leave_no_domain(
    pytester: pytest.Pytester, records: Path, libvirt_host: str
) -> None:
    result = run_inner(
        pytester,
        """
        from conftest import describe, runs_on

        def test_a_fails(vm_factory, record):
            vm = vm_factory("doomed")
            record(name=vm.name, alive=runs_on(vm))
            assert False, "this test fails on purpose"

        def test_b_destroy_breaks(vm_factory, record):
            vm = vm_factory("stubborn")
            record(name=vm.name, alive=runs_on(vm))

            def broken(*args, **kwargs):
                raise RuntimeError("destroy is broken on purpose")

            vm.destroy = broken
            assert False, "this test fails too"
        """,
        "--virtlib-uri",
        libvirt_host,
    )
    # Both tests keep their own failure; the broken destroy and the domain it left
    # are errors of the last teardown, and the run's exit code says so.
    result.assert_outcomes(failed=2, errors=1)
    assert result.ret != 0
    for line in (
        "*AssertionError: this test fails on purpose",
        "*AssertionError: this test fails too",
        f"*vm_factory could not destroy: {PREFIX}main-stubborn-*: destroy is broken on purpose",
        f"*still defined at its end (now destroyed): {PREFIX}main-stubborn-* on {libvirt_host}",
    ):
        result.stdout.fnmatch_lines([line])
    seen = read_records(records)
    assert [r["alive"] for r in seen] == [True, True]
    assert not {r["name"] for r in seen} & domain_names(libvirt_host)


def test_xdist_workers_get_distinct_names_macs_and_ports(
    pytester: pytest.Pytester, records: Path, libvirt_host: str
) -> None:
    result = run_inner(
        pytester,
        """
        from conftest import describe

        def test_one(vm, record):
            record(**describe(vm))

        def test_two(vm, record):
            record(**describe(vm))
        """,
        "-n",
        "2",
        "--virtlib-uri",
        libvirt_host,
    )
    result.assert_outcomes(passed=2)
    seen = {r["worker"]: r for r in read_records(records)}
    assert sorted(seen) == ["gw0", "gw1"]
    for worker, info in seen.items():
        index = int(worker[2:])
        low, high = Partition(index, 2).slice(*PORT_RANGE)
        assert info["name"].startswith(f"{PREFIX}{worker}-vm-")
        assert info["mac"].startswith(f"52:54:00:{index:02x}:")
        assert low <= info["port"] <= high
        assert info["partition"] == f"{index}/2"
    for key in ("name", "mac", "port"):
        assert seen["gw0"][key] != seen["gw1"][key]
    assert not {r["name"] for r in seen.values()} & domain_names(libvirt_host)


def test_vms_spread_over_two_hosts(
    pytester: pytest.Pytester, records: Path, libvirt_host: str, second_host: SecondHost
) -> None:
    hosts = ["--virtlib-uri", libvirt_host, "--virtlib-uri", second_host.uri]
    # One host per xdist worker: each boots its guest on its own host.
    source = """
        from conftest import describe, runs_on

        def test_one(vm, record):
            assert runs_on(vm)
            record(**describe(vm))

        def test_two(vm, record):
            assert runs_on(vm)
            record(**describe(vm))
        """
    run_inner(pytester, source, "-n", "2", *hosts).assert_outcomes(passed=2)
    seen = {r["worker"]: r for r in read_records(records)}
    assert {worker: info["uri"] for worker, info in seen.items()} == {
        "gw0": libvirt_host,
        "gw1": second_host.uri,
    }

    # Round-robin without xdist: each new VM goes to the next host (no boot needed).
    for path in records.iterdir():
        path.unlink()
    source = """
        from conftest import runs_on

        def test_three(vm_factory, record):
            vms = [vm_factory(f"rr{i}") for i in range(3)]
            assert all(runs_on(vm) for vm in vms)
            record(uris=[vm.uri for vm in vms], names=[vm.name for vm in vms])
        """
    run_inner(pytester, source, "--virtlib-spread", "round-robin", *hosts).assert_outcomes(passed=1)
    [seen_rr] = read_records(records)
    assert seen_rr["uris"] == [libvirt_host, second_host.uri, libvirt_host]
    names = {r["name"] for r in seen.values()} | set(seen_rr["names"])
    assert not names & (domain_names(libvirt_host) | domain_names(second_host.uri))


def test_no_hypervisor_skips_with_the_reason_or_errors_when_required(
    pytester: pytest.Pytester,
) -> None:
    source = """
        import pytest

        def test_uses_vm(vm):
            pass

        @pytest.mark.virtlib
        def test_marked():
            pass

        def test_needs_nothing():
            pass
        """
    skipped = run_inner(pytester, source, "-rs", "--virtlib-uri", NO_HYPERVISOR)
    skipped.assert_outcomes(passed=1, skipped=2)
    skipped.stdout.fnmatch_lines([f"SKIPPED*libvirtd at {NO_HYPERVISOR} does not answer: *"])

    required = run_inner(pytester, source, "--virtlib-uri", NO_HYPERVISOR, "--virtlib-require")
    required.assert_outcomes(passed=1, errors=2)
    required.stdout.fnmatch_lines([f"*libvirtd at {NO_HYPERVISOR} does not answer*"])


def test_params_file_applies_to_every_vm(
    pytester: pytest.Pytester, records: Path, libvirt_host: str
) -> None:
    params = pytester.makefile(".cfg", vm="mem = 300\nsmp = 2\n")
    source = """
        def test_params(vm_factory, record):
            vm = vm_factory(start=False, smp="1")
            record(mem=vm.params["mem"], smp=vm.params["smp"], uri=vm.params["connect_uri"])
        """
    result = run_inner(
        pytester, source, "--virtlib-params", str(params), "--virtlib-uri", libvirt_host
    )
    result.assert_outcomes(passed=1)
    [seen] = read_records(records)
    assert (seen["mem"], seen["smp"], seen["uri"]) == ("300", "1", libvirt_host)

    broken = pytester.makefile(".cfg", broken="this is not a params line\n")
    result = run_inner(pytester, source, "--virtlib-params", str(broken))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--virtlib-params: *broken.cfg*"])
