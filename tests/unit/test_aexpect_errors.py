"""virtlib's shell errors are caught by ``except aexpect.<Name>:`` when aexpect is installed,
and are virtlib's own, with nothing of aexpect imported, when it is not.

The test extra installs aexpect, so CI runs the first half in-process and the
second in a subprocess where aexpect cannot be imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from virtlib import errors

NAMES = [
    "ShellError",
    "ShellTimeoutError",
    "ShellProcessTerminatedError",
    "ShellStatusError",
    "ShellCmdError",
    "ExpectTimeoutError",
    "ExpectProcessTerminatedError",
]
INSTANCES = {
    "ShellError": ("ls", "out"),
    "ShellTimeoutError": ("sleep 9", "out"),
    "ShellProcessTerminatedError": ("reboot", 255, "bye"),
    "ShellStatusError": ("ls", "out"),
    "ShellCmdError": ("false", 1, "out"),
    "ExpectTimeoutError": (["prompt"], "out"),
    "ExpectProcessTerminatedError": (["prompt"], None, "out"),
}


@pytest.mark.parametrize("name", NAMES)
def test_caught_by_aexpects_except_clause(name: str) -> None:
    aexpect = pytest.importorskip("aexpect")
    assert errors.AEXPECT
    exc = getattr(errors, name)(*INSTANCES[name])
    try:
        raise exc
    except getattr(aexpect, name) as caught:  # the clause tp-qemu tests write
        assert caught is exc
    root = aexpect.ShellError if name.startswith("Shell") else aexpect.ExpectError
    assert isinstance(exc, root)
    assert isinstance(exc, errors.VMError), "still virtlib's VMError"


def test_session_errors_reach_aexpect_clauses() -> None:
    aexpect = pytest.importorskip("aexpect")
    from test_sessions import scripted_console

    _, _, session = scripted_console()
    with pytest.raises(aexpect.ShellTimeoutError):
        session.cmd_output("true", timeout=0.1)
    with pytest.raises(aexpect.ExpectTimeoutError):
        session.read_up_to_prompt(timeout=0.1)


def test_attributes_and_messages_are_the_same_either_way() -> None:
    exc = errors.ShellCmdError("false", 1, "out")
    assert (exc.cmd, exc.status, exc.output) == ("false", 1, "out")
    assert str(exc) == "Shell command failed: 'false'    (status: 1,    output: 'out')"
    assert (
        str(errors.ShellError("ls", "x")) == "Could not execute shell command 'ls'    (output: 'x')"
    )
    expect = errors.ExpectTimeoutError(["a", "b"], "x")
    assert expect.patterns == ["a", "b"] and expect.output == "x"
    assert "patterns ['a', 'b']" in str(expect)


HIDDEN = textwrap.dedent(
    """
    import json, sys
    sys.modules["aexpect"] = None  # import aexpect now raises ImportError: "not installed"
    from virtlib import errors
    import virtlib
    try:
        raise errors.ShellCmdError("false", 1, "out")
    except virtlib.ShellError as exc:
        caught = str(exc)
    print(json.dumps({
        "aexpect": errors.AEXPECT,
        "loaded": sorted(m for m in sys.modules if m.startswith("aexpect") and sys.modules[m]),
        "mro": {n: [c.__module__ for c in getattr(errors, n).__mro__] for n in NAMES},
        "caught": caught,
    }))
    """
).replace("NAMES", repr(NAMES))


def test_without_aexpect_the_errors_are_virtlibs_own() -> None:
    result = subprocess.run(
        [sys.executable, "-c", HIDDEN], capture_output=True, text=True, timeout=60, check=True
    )
    found = json.loads(result.stdout)
    assert found["aexpect"] is False
    assert found["loaded"] == []
    for name, modules in found["mro"].items():
        assert set(modules) <= {"virtlib.errors", "builtins"}, name
    assert found["caught"].startswith("Shell command failed")
