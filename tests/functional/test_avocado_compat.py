"""avocado-vt style tests (tests/functional/avocado_tests/) run on the bundled guest.

Each module is run twice: in this process through ``virtlib.compat.avocado``
(with aexpect, which the test extra installs) and through ``virtlib
run-avocado-test`` in a subprocess where aexpect cannot be imported (a package
of that name that refuses to load shadows it), so both ways a user can have it
are exercised.  VM names start with ``ha-``; every run must leave no domain.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from functional_support import domain_names

from virtlib.compat.avocado import load_cfg, run_test
from virtlib.textutil import random_string

HERE = Path(__file__).parent / "avocado_tests"
MODULES = ["avt_boot_reboot", "avt_transfer_pause_save", "avt_shutdown"]
pytestmark = pytest.mark.virtlib


def vm_name(module: str, mode: str) -> str:
    return f"ha-{module.removeprefix('avt_')[:12]}-{mode}-{random_string(4)}"


@pytest.mark.parametrize("module", MODULES)
def test_in_process_with_aexpect_if_installed(
    module: str, libvirt_uri: str, tmp_path: Path
) -> None:
    name = vm_name(module, "lib")
    params = load_cfg(HERE / "avt.cfg")
    params.update(main_vm=name, connect_uri=libvirt_uri)
    result = run_test(HERE / f"{module}.py", params, outputdir=tmp_path / "out")
    log = result.logfile.read_text()
    assert result.status == "PASS", f"{result.reason}\n{log[-4000:]}"
    assert name not in domain_names(libvirt_uri)
    if module == "avt_transfer_pause_save":
        assert "estimated throughput" in log
    if module == "avt_boot_reboot":
        uses = "aexpect" if _aexpect_installed() else "virtlib.errors"
        assert f"shell errors from {uses}" in log


HIDE_AEXPECT = "raise ImportError('aexpect is hidden for this test')\n"


@pytest.mark.parametrize("module", MODULES)
def test_command_line_without_aexpect(module: str, libvirt_uri: str, tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "aexpect"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(HIDE_AEXPECT)
    env = dict(os.environ, PYTHONPATH=str(shadow.parent))
    name = vm_name(module, "cli")
    argv = [
        sys.executable, "-c", "import sys; from virtlib.cli import main; sys.exit(main())",
        "run-avocado-test", str(HERE / f"{module}.py"), "--cfg", str(HERE / "avt.cfg"),
        "--set", f"main_vm={name}", "--uri", libvirt_uri, "--json",
        "--results-dir", str(tmp_path / "out"),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=False)
    data = json.loads(done.stdout)
    log = Path(data["logfile"]).read_text()
    assert (done.returncode, data["status"]) == (0, "PASS"), f"{data['reason']}\n{log[-4000:]}"
    assert name not in domain_names(libvirt_uri)
    if module == "avt_boot_reboot":
        assert "shell errors from virtlib.errors" in log


def test_a_failing_test_fails_on_the_command_line(libvirt_uri: str, tmp_path: Path) -> None:
    module = tmp_path / "avt_fails.py"
    module.write_text(
        "def run(test, params, env):\n"
        "    session = env.get_vm(params['main_vm']).wait_for_serial_login(timeout=120)\n"
        "    if session.cmd_status('test -e /no/such/file') == 0:\n"
        "        test.error('the guest has a file it should not')\n"
        "    test.fail('the file is missing, as planned')\n"
    )
    name = vm_name("fails", "cli")
    argv = [
        sys.executable, "-c", "import sys; from virtlib.cli import main; sys.exit(main())",
        "run-avocado-test", str(module), "--cfg", str(HERE / "avt.cfg"),
        "--set", f"main_vm={name}", "--uri", libvirt_uri,
        "--results-dir", str(tmp_path / "out"),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("FAIL avt_fails: TestFail: the file is missing, as planned")
    assert name not in domain_names(libvirt_uri)


def _aexpect_installed() -> bool:
    try:
        import aexpect  # noqa: F401
    except ImportError:
        return False
    return True
