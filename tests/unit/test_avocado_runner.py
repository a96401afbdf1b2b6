"""virtlib.compat.avocado: Env (utils_env.Env), the test object and the runner, on fake VMs.

The registry serves ``vm_type = fake`` from tests/unit/fake_vm.py here, so the
runner's VM handling (vms, main_vm, start_vm, per-VM params, destroy
afterwards) runs without a hypervisor.
"""

from __future__ import annotations

import json
import logging
import textwrap
from collections.abc import Iterator
from pathlib import Path

import fake_vm
import pytest
from fake_vm import FakeVM

from virtlib import registry
from virtlib.cli import main
from virtlib.compat.avocado import Env, TestCancel, TestError, TestFail, run_test
from virtlib.compat.avocado.test import Test, status_of
from virtlib.errors import VMNotSupportedError, VMParamsError, VMParamsKeyError
from virtlib.params import Params


@pytest.fixture(autouse=True)
def fake_backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FakeVM]]:
    monkeypatch.setitem(registry.BUILTIN_BACKENDS, "fake", "fake_vm:FakeVM")
    fake_vm.MADE.clear()
    yield fake_vm.MADE
    for vm in fake_vm.MADE:
        vm.destroy()


def write(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


# --- Env ----------------------------------------------------------------------------------


def test_env_is_a_dict_with_vms_under_vm_prefix(tmp_path: Path) -> None:
    env = Env()
    assert env["version"] == 0 and env.get("missing") is None
    env["address_cache"] = {}
    vm = env.create_vm("fake", None, "ha-env1", {"mem": "128"}, tmp_path)
    assert isinstance(vm, FakeVM) and vm.params["vm_type"] == "fake"
    assert vm.root_dir == tmp_path
    assert env.get_vm("ha-env1") is vm and env["vm__ha-env1"] is vm
    other = FakeVM("ha-env2", {})
    env.register_vm("ha-env2", other)
    assert env.get_all_vms() == [vm, other]
    env.unregister_vm("ha-env2")
    assert env.get_vm("ha-env2") is None
    with pytest.raises(KeyError):
        env.unregister_vm("ha-env2")
    vm.create()
    env.clean_objects()
    assert vm.destroyed and dict(env) == {}


def test_env_create_vm_takes_vm_type_from_params_and_checks_it(tmp_path: Path) -> None:
    env = Env()
    assert isinstance(env.create_vm(None, None, "ha-env3", {"vm_type": "fake"}, tmp_path), FakeVM)
    with pytest.raises(VMParamsError, match=r"unknown vm_type 'qemu'.*fake.*libvirt"):
        env.create_vm("qemu", None, "ha-env4", {}, tmp_path)
    with pytest.raises(VMNotSupportedError, match="ovirt"):
        env.create_vm("fake", "ovirt", "ha-env5", {}, tmp_path)


def test_env_files_are_not_supported() -> None:
    with pytest.raises(VMNotSupportedError):
        Env("/tmp/env")
    with pytest.raises(VMNotSupportedError):
        Env().save()


# --- the test object and statuses -----------------------------------------------------------


def test_test_object_verdicts(tmp_path: Path) -> None:
    test = Test("t", Params(), tmp_path, tmp_path)
    for method, cls, status in [
        (test.fail, TestFail, "FAIL"),
        (test.error, TestError, "ERROR"),
        (test.cancel, TestCancel, "CANCEL"),
    ]:
        with pytest.raises(cls, match="why") as info:
            method("why")
        assert status_of(info.value) == status
    assert isinstance(TestFail("x"), AssertionError)
    assert test.log.name == "avocado.test" and test.workdir.is_dir()


def test_status_of_other_exceptions() -> None:
    class AvocadosOwn(Exception):
        status = "CANCEL"  # what avocado.core.exceptions.TestCancel carries

    assert status_of(AvocadosOwn()) == "CANCEL"
    assert status_of(AssertionError()) == "FAIL"
    assert status_of(VMParamsKeyError("x")) == "SKIP"  # avocado-vt's ParamNotFound skips
    assert status_of(RuntimeError()) == "ERROR"
    from virtlib.errors import ShellCmdError

    assert status_of(ShellCmdError("false", 1, "")) == "ERROR", "an int status is not a verdict"


# --- the runner ---------------------------------------------------------------------------------


def test_runner_starts_the_vms_runs_and_destroys_them(
    tmp_path: Path, fake_backend: list[FakeVM]
) -> None:
    module = write(
        tmp_path,
        "mytest.py",
        """
        import helper  # a module next to the test, as tp-qemu's provider helpers

        def run(test, params, env):
            vm = env.get_vm(params["main_vm"])
            vm.verify_alive()
            session = vm.wait_for_serial_login(timeout=5)
            test.log.info("kernel %s", session.cmd("uname -r").strip())
            assert env.get_vm("ha-run2").is_paused()
            assert env.get_vm("ha-run3").is_dead()
            helper.note(test)
        """,
    )
    write(tmp_path, "helper.py", "def note(test):\n    test.log.info('helper ran')\n")
    params = Params(
        {
            "vm_type": "fake",
            "vms": "ha-run1 ha-run2 ha-run3",
            "paused_after_start_vm_ha-run2": "yes",
            "start_vm_ha-run3": "no",
            "vm_create_timeout": "33",
        }
    )
    result = run_test(module, params, outputdir=tmp_path / "out")
    assert (result.status, result.reason, result.exit_code) == ("PASS", "", 0)
    assert params["main_vm"] == "ha-run1"
    assert [vm.name for vm in fake_backend] == ["ha-run1", "ha-run2", "ha-run3"]
    assert all(vm.destroyed for vm in fake_backend)
    assert fake_backend[0].create_calls == [{"timeout": 33.0}]
    assert fake_backend[2].create_calls == []
    log = result.logfile.read_text()
    assert "kernel 6.6.0-virtlib" in log and "helper ran" in log
    assert (tmp_path / "out").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    ("body", "status", "code", "reason"),
    [
        ("test.fail('it broke')", "FAIL", 1, "TestFail: it broke"),
        ("assert 1 == 2, 'plain assert'", "FAIL", 1, "plain assert"),
        ("test.error('no setup')", "ERROR", 4, "TestError: no setup"),
        ("raise RuntimeError('boom')", "ERROR", 4, "RuntimeError: boom"),
        ("test.cancel('not here')", "CANCEL", 5, "TestCancel: not here"),
        ("params['no_such_key']", "SKIP", 5, "no_such_key"),
    ],
)
def test_runner_verdicts(
    tmp_path: Path, fake_backend: list[FakeVM], body: str, status: str, code: int, reason: str
) -> None:
    module = write(tmp_path, "verdict.py", f"def run(test, params, env):\n    {body}\n")
    result = run_test(module, Params(vm_type="fake", main_vm="ha-verdict"))
    assert (result.status, result.exit_code) == (status, code)
    assert reason in result.reason
    assert fake_backend and all(vm.destroyed for vm in fake_backend)


def test_runner_old_entry_point_name_and_missing_one(tmp_path: Path) -> None:
    old = write(tmp_path, "old.py", "def run_boot(test, params, env):\n    pass\n")
    assert run_test(old, Params(type="boot", vms="")).status == "PASS"
    none = write(tmp_path, "none.py", "x = 1\n")
    result = run_test(none, Params(vms=""))
    assert result.status == "ERROR" and "no run(test, params, env)" in result.reason


def test_runner_vm_start_failure_is_an_error_and_leaves_nothing(
    tmp_path: Path, fake_backend: list[FakeVM], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: FakeVM, *args: object, **kwargs: object) -> None:
        raise VMParamsError("bad mem")

    monkeypatch.setattr(FakeVM, "create", refuse)
    module = write(tmp_path, "m.py", "def run(test, params, env):\n    raise AssertionError\n")
    result = run_test(module, Params(vm_type="fake", vms="ha-a ha-b"))
    assert result.status == "ERROR" and "bad mem" in result.reason
    assert [vm.destroyed for vm in fake_backend] == [True]


def test_runner_missing_module_is_a_params_error(tmp_path: Path) -> None:
    with pytest.raises(VMParamsError, match="no test module"):
        run_test(tmp_path / "absent.py", Params())


def test_runner_restores_logging_and_sys_path(tmp_path: Path) -> None:
    import sys

    logger = logging.getLogger("virtlib")
    before = (logger.level, logger.propagate, list(logger.handlers), list(sys.path))
    run_test(write(tmp_path, "t.py", "def run(test, params, env):\n    pass\n"), Params(vms=""))
    assert (logger.level, logger.propagate, list(logger.handlers), list(sys.path)) == before


# --- the command line ---------------------------------------------------------------------------


def test_cli_prints_the_verdict_and_exits_with_its_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_backend: list[FakeVM]
) -> None:
    module = write(
        tmp_path,
        "cli_test.py",
        """
        def run(test, params, env):
            if params["answer"] != "42":
                test.fail("wrong answer " + params["answer"])
            vm = env.get_vm(params["main_vm"])
            if vm.params["mem"] != "128":
                test.fail("per-VM params not applied")
        """,
    )
    cfg = write(tmp_path, "t.cfg", "vm_type = fake\nvms = ha-cli\nmem = 256\nmem_ha-cli = 128\n")
    argv = [
        "run-avocado-test",
        str(module),
        "--cfg",
        str(cfg),
        "--results-dir",
        str(tmp_path / "r"),
    ]
    assert main([*argv, "--set", "answer=42"]) == 0
    assert capsys.readouterr().out.startswith("PASS cli_test (")
    assert main([*argv, "--set", "answer=41", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["status"] == "FAIL" and "wrong answer 41" in data["reason"]
    assert Path(data["logfile"]).is_file()


def test_cli_bad_cfg_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = write(tmp_path, "t.py", "def run(test, params, env):\n    pass\n")
    cfg = write(tmp_path, "bad.cfg", "variants:\n    - a:\n")
    assert main(["run-avocado-test", str(module), "--cfg", str(cfg)]) == 2
    assert "bad.cfg:1" in capsys.readouterr().err
