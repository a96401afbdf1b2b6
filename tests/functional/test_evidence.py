"""The evidence plugin, from the outside: inner pytest sessions whose VMs leave artifacts."""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

INNER_TIMEOUT = 300


def run_inner(
    pytester: pytest.Pytester, source: str, artifacts: Path, *args: str
) -> pytest.RunResult:
    pytester.makepyfile(test_inner=textwrap.dedent(source))
    return pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--virtlib-artifacts",
        str(artifacts),
        *args,
        timeout=INNER_TIMEOUT,
    )


def vm_dirs(artifacts: Path, test: str) -> list[Path]:
    [test_dir] = [p for p in artifacts.iterdir() if p.name.endswith(test)]
    return sorted(p for p in test_dir.iterdir() if p.is_dir())


def test_every_test_gets_its_vms_evidence_and_a_failure_more(
    pytester: pytest.Pytester, tmp_path: Path, libvirt_host: str
) -> None:
    artifacts = tmp_path / "artifacts"
    junit = tmp_path / "junit.xml"
    result = run_inner(
        pytester,
        """
        def test_passes(vm):
            assert vm.serial_console.cmd("echo fine").strip() == "fine"

        def test_fails(vm):
            vm.serial_console.cmd("echo about to fail")
            assert False, "the test's own failure"
        """,
        artifacts,
        "--virtlib-uri",
        libvirt_host,
        f"--junitxml={junit}",
        "--virtlib-reset=boot",  # a guest of its own for each test: its log from the first byte
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*virtlib evidence*", "*about to fail*", "virtlib artifacts: *"])
    for test, failed in (("test_passes", False), ("test_fails", True)):
        [vm_dir] = vm_dirs(artifacts, test)
        serial = (vm_dir / "serial.log").read_text(errors="replace")
        assert "virtlib test guest" in serial and "login:" in serial  # from the first byte
        assert "<domain" in (vm_dir / "domain.xml").read_text()
        assert "qemu-system" in (vm_dir / "qemu.log").read_text()
        actions = [a["name"] for a in json.loads((vm_dir / "history.json").read_text())]
        assert actions[:2] == ["create", "wait_for_serial_login"]
        assert (vm_dir / "dmesg.txt").exists() == failed
        assert (vm_dir / "state.txt").exists() == failed
    [failing] = vm_dirs(artifacts, "test_fails")
    assert "Linux version" in (failing / "dmesg.txt").read_text()  # the guest's whole dmesg
    assert (failing / "state.txt").read_text().startswith("alive")
    properties = [p.get("name") for p in ET.parse(junit).iter("property")]  # noqa: S314
    assert any(name.startswith("virtlib_artifacts:") for name in properties)


def test_a_guest_oops_fails_a_test_that_checks_dmesg(
    pytester: pytest.Pytester, tmp_path: Path, libvirt_host: str
) -> None:
    result = run_inner(
        pytester,
        """
        import pytest
        from virtlib.waiting import wait_for

        @pytest.mark.virtlib_check_dmesg
        def test_oopses(vm):
            vm.serial_console.sendline("virtlib-oops")
            assert wait_for(lambda: "end trace" in vm.serial_console.get_output(), 30)

        @pytest.mark.virtlib_check_dmesg
        def test_clean(vm):
            assert vm.serial_console.cmd("echo clean").strip() == "clean"
        """,
        tmp_path / "artifacts",
        "--virtlib-uri",
        libvirt_host,
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*logged kernel problems*", "*BUG: kernel NULL pointer*"])


def test_the_dump_option_writes_a_dump_within_its_cap(
    pytester: pytest.Pytester, tmp_path: Path, libvirt_host: str
) -> None:
    artifacts = tmp_path / "artifacts"
    cap_mib = 128
    result = run_inner(
        pytester,
        """
        def test_fails(vm):
            assert False
        """,
        artifacts,
        "--virtlib-uri",
        libvirt_host,
        "--virtlib-dump-on-failure",
        f"--virtlib-dump-max-mib={cap_mib}",
    )
    result.assert_outcomes(failed=1)
    [vm_dir] = vm_dirs(artifacts, "test_fails")
    dump = vm_dir / "memory.dump"
    assert dump.is_file() and 0 < dump.stat().st_size <= cap_mib << 20
    # kdump-compressed (QEMU writes makedumpfile's flattened format), as crash(8) reads
    assert dump.read_bytes()[:12] in (b"makedumpfile", b"KDUMP       ")


def test_the_screenshots_marker_gives_a_failing_test_a_picture(
    pytester: pytest.Pytester, tmp_path: Path, libvirt_host: str
) -> None:
    artifacts = tmp_path / "artifacts"
    result = run_inner(
        pytester,
        """
        import pytest

        @pytest.mark.virtlib_screenshots
        def test_fails_with_a_display(vm_factory):
            vm = vm_factory()
            assert vm.params["display"] == "vnc"
            vm.wait_for_serial_login().close()
            assert False, "the test's own failure"

        def test_fails_without(vm_factory):
            vm = vm_factory()
            assert "display" not in vm.params
            assert False, "the test's own failure"
        """,
        artifacts,
        "--virtlib-uri",
        libvirt_host,
    )
    result.assert_outcomes(failed=2)
    [with_display] = vm_dirs(artifacts, "test_fails_with_a_display")
    assert (with_display / "screenshot.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    [without] = vm_dirs(artifacts, "test_fails_without")
    assert not (without / "screenshot.png").exists()
