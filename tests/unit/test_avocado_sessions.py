"""ShellSession's aexpect API (aexpect/client.py ShellSession), on the fake guest."""

from __future__ import annotations

import inspect
import re
import time
from typing import Any

import fake_guest
import pytest
from fake_guest import COLOURED_PROMPT, PROMPT_RE
from test_sessions import (  # the session tests' fixtures: the fake guest on each transport
    Guest,
    MakeGuest,
    make_console,
    make_guest,
    make_socket_guest,
    scripted_console,
    shell,
)

from virtlib.errors import (
    ExpectProcessTerminatedError,
    ExpectTimeoutError,
    ShellCmdError,
    ShellError,
    ShellProcessTerminatedError,
    ShellStatusError,
    ShellTimeoutError,
)
from virtlib.sessions.shell import ShellSession, UnknownControlCharError

__all__ = ["make_console", "make_guest", "make_socket_guest", "shell"]
EMPTY = inspect.Parameter.empty

AEXPECT_SIGNATURES: dict[str, list[tuple[str, Any]]] = {
    "cmd_output": [
        ("cmd", EMPTY), ("timeout", 60), ("internal_timeout", None), ("print_func", None),
        ("safe", False), ("strip_console_codes", False),
    ],
    "cmd_output_safe": [("cmd", EMPTY), ("timeout", 60), ("strip_console_codes", False)],
    "cmd_status_output": [
        ("cmd", EMPTY), ("timeout", 60), ("internal_timeout", None), ("print_func", None),
        ("safe", False),
    ],
    "cmd_status": [
        ("cmd", EMPTY), ("timeout", 60), ("internal_timeout", None), ("print_func", None),
        ("safe", False),
    ],
    "cmd": [
        ("cmd", EMPTY), ("timeout", 60), ("internal_timeout", None), ("print_func", None),
        ("ok_status", None), ("ignore_all_errors", False),
    ],
    "get_command_output": [
        ("cmd", EMPTY), ("timeout", 60), ("internal_timeout", None), ("print_func", None),
    ],
    "get_command_status_output": [
        ("cmd", EMPTY), ("timeout", 60), ("internal_timeout", None), ("print_func", None),
    ],
    "get_command_status": [
        ("cmd", EMPTY), ("timeout", 60), ("internal_timeout", None), ("print_func", None),
    ],
    "read_up_to_prompt": [("timeout", 60), ("internal_timeout", None), ("print_func", None)],
    "read_until_last_line_matches": [
        ("patterns", EMPTY), ("timeout", 60), ("internal_timeout", None), ("print_func", None),
    ],
    "read_until_any_line_matches": [
        ("patterns", EMPTY), ("timeout", 60), ("internal_timeout", None), ("print_func", None),
    ],
    "read_until_last_word_matches": [
        ("patterns", EMPTY), ("timeout", 60), ("internal_timeout", None), ("print_func", None),
    ],
    "set_prompt": [("prompt", EMPTY)],
    "set_status_test_command": [("command", EMPTY)],
    "sendcontrol": [("char", EMPTY)],
    "is_responsive": [("timeout", 5.0)],
}  # fmt: skip


@pytest.mark.parametrize("method", sorted(AEXPECT_SIGNATURES))
def test_signature_is_aexpects(method: str) -> None:
    found = [
        (p.name, p.default)
        for p in inspect.signature(getattr(ShellSession, method)).parameters.values()
        if p.name != "self"
    ]
    expected = AEXPECT_SIGNATURES[method]
    # set_status_test_command's argument is "status_test_command" in aexpect: positional use
    assert [d for _, d in found] == [d for _, d in expected]
    if method != "set_status_test_command":
        assert [n for n, _ in found] == [n for n, _ in expected]


def test_read_until_output_matches_signature_is_aexpects() -> None:
    names = list(inspect.signature(ShellSession.read_until_output_matches).parameters)
    assert names == [
        "self", "patterns", "filter_func", "timeout", "internal_timeout", "print_func",
        "match_func",
    ]  # fmt: skip


# --- commands ---------------------------------------------------------------------------------


def test_cmd_output_safe_nudges_a_console_whose_prompt_was_lost(
    make_console: MakeGuest,
) -> None:
    """A kernel message after the prompt hides it: the safe variant sends newlines until one."""
    g = make_console("shell")
    g.session.read_up_to_prompt(timeout=2)
    original = g.guest._shell_line

    def noisy(line: str) -> None:
        if line == "uname -r":
            g.guest.emit("6.6.0-virtlib\r\n" + COLOURED_PROMPT + "[  12.3] virtio_net: link up\r\n")
            return
        original(line)

    g.guest._shell_line = noisy  # type: ignore[method-assign]
    with pytest.raises(ShellTimeoutError):
        g.session.cmd_output("uname -r", timeout=0.7)
    start = time.monotonic()
    assert "6.6.0-virtlib" in g.session.cmd_output_safe("uname -r", timeout=5)
    assert time.monotonic() - start < 3
    assert g.session.cmd("echo after") == "after\n", "in step with the shell afterwards"


def test_cmd_output_safe_times_out_as_a_shell_timeout(make_console: MakeGuest) -> None:
    g = make_console("shell")
    with pytest.raises(ShellTimeoutError) as info:
        g.session.cmd_output_safe("sleep 100", timeout=1.2)
    assert info.value.cmd == "sleep 100"
    assert len([c for c in g.guest.received.split(b"\n") if c == b""]) >= 2, "it nudged"


def test_cmd_output_safe_flag_of_cmd_output(make_console: MakeGuest) -> None:
    g = make_console("shell")
    assert g.session.cmd_output("uname -r", safe=True) == "6.6.0-virtlib\n"
    assert g.session.cmd_status_output("false", safe=True) == (1, "")


def test_cmd_ok_status(shell: Guest) -> None:
    assert shell.session.cmd("false", ok_status=[0, 1]) == ""
    with pytest.raises(ShellCmdError) as info:
        shell.session.cmd("(exit 3)", ok_status=[0, 1])
    assert info.value.status == 3


def test_old_command_names(shell: Guest) -> None:
    assert shell.session.get_command_output("uname -r") == "6.6.0-virtlib\n"
    assert shell.session.get_command_status_output("false") == (1, "")
    assert shell.session.get_command_status("(exit 7)") == 7


def test_status_is_the_first_line_that_is_only_a_number(
    make_console: MakeGuest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aexpect: a kernel message after the status (a serial console) does not spoil it."""
    monkeypatch.setitem(fake_guest.CANNED, "status-then-noise", ("3\r\n[  1.0] eth0 link 9\r\n", 0))
    g = make_console("shell")
    g.session.set_status_test_command("status-then-noise")
    assert g.session.cmd_status("true") == 3


def test_status_command_failing_is_a_status_error(shell: Guest) -> None:
    shell.session.set_status_test_command("sleep 100")
    with pytest.raises(ShellStatusError) as info:
        shell.session.cmd_status_output("uname -r", timeout=0.3)
    assert info.value.cmd == "uname -r" and info.value.output == "6.6.0-virtlib\n"


def test_remove_command_echo_and_last_line() -> None:
    assert ShellSession.remove_command_echo("ls\nbin\n", "ls") == "bin\n"
    assert ShellSession.remove_command_echo("bin\n", "ls") == "bin\n"
    assert ShellSession.remove_last_nonempty_line("a\nb\n# \n\n") == "a\nb\n"


# --- reading ----------------------------------------------------------------------------------


def test_read_up_to_prompt_returns_the_text_and_raises_expect_timeout(shell: Guest) -> None:
    shell.session.read_up_to_prompt(timeout=2)  # the prompt the guest starts with
    shell.session.sendline("uname -r")
    text = shell.session.read_up_to_prompt(timeout=2)
    assert "6.6.0-virtlib" in text and re.search(PROMPT_RE, text.splitlines()[-1])
    with pytest.raises(ExpectTimeoutError) as info:
        shell.session.read_up_to_prompt(timeout=0.2)
    assert info.value.patterns == [shell.session.prompt]
    assert isinstance(info.value, ShellTimeoutError), "virtlib's older callers still catch it"


def test_read_until_output_matches_with_filter_and_match_functions(shell: Guest) -> None:
    shell.session.read_up_to_prompt(timeout=2)  # the prompt the guest starts with
    shell.session.sendline("echo alpha beta")
    index, text = shell.session.read_until_output_matches(["gamma", r"\bbeta\b"], timeout=2)
    assert index == 1 and "alpha beta" in text
    shell.session.read_nonblocking(0.2)
    shell.session.sendline("echo one two")
    seen: list[Any] = []

    def words(text: str) -> list[str]:
        return text.split()

    def match(filtered: list[str], patterns: list[str]) -> int | None:
        seen.append(filtered)
        return 0 if filtered.count("two") >= 2 else None  # echo + output

    index, _ = shell.session.read_until_output_matches(["x"], words, 2, None, None, match)
    assert index == 0 and all(isinstance(f, list) for f in seen)


def test_read_until_last_word_matches(shell: Guest) -> None:
    shell.session.read_up_to_prompt(timeout=2)  # the prompt the guest starts with
    shell.session.sendline("echo the end")
    assert shell.session.read_until_last_word_matches([r"^end$", "#"], timeout=2)[0] in (0, 1)


def test_read_until_any_line_matches_counts_patterns_from_the_start(shell: Guest) -> None:
    shell.session.read_up_to_prompt(timeout=2)  # the prompt the guest starts with
    shell.session.sendline("echo needle")
    index, _ = shell.session.read_until_any_line_matches(["nothing", "^needle$"], timeout=2)
    assert index == 1  # aexpect would say -1 (counted from the end)


def test_match_patterns_skip_empty_patterns() -> None:
    assert ShellSession.match_patterns("abc", ["", "z", "b"]) == 2
    assert ShellSession.match_patterns("abc", ["z"]) is None
    assert ShellSession.match_patterns_multiline(["a", "b"], ["", "b"]) == 1


def test_stream_end_while_reading_is_expect_process_terminated(
    make_console: MakeGuest,
) -> None:
    g = make_console("shell")
    g.session.read_up_to_prompt(timeout=2)
    g.guest.end()
    with pytest.raises(ExpectProcessTerminatedError) as info:
        g.session.read_until_output_matches(["never"], timeout=2)
    assert isinstance(info.value, ShellProcessTerminatedError)
    assert isinstance(info.value, ShellError)


def test_print_func_sees_each_line(shell: Guest) -> None:
    lines: list[str] = []
    shell.session.cmd_output("uname -r", print_func=lines.append)
    assert "6.6.0-virtlib" in lines


# --- prompt and control characters -----------------------------------------------------------


def test_set_prompt_changes_what_ends_a_command(shell: Guest) -> None:
    shell.session.read_up_to_prompt(timeout=2)  # the prompt the guest starts with
    shell.session.set_prompt(r"will-never-match$")
    with pytest.raises(ShellTimeoutError):
        shell.session.cmd_output("true", timeout=0.3)
    shell.session.set_prompt(PROMPT_RE)
    assert shell.session.cmd("uname -r") == "6.6.0-virtlib\n"


@pytest.mark.parametrize(
    ("char", "code"),
    [("c", 3), ("C", 3), ("a", 1), ("z", 26), ("@", 0), ("`", 0), ("[", 27), ("{", 27),
     ("\\", 28), ("|", 28), ("]", 29), ("}", 29), ("^", 30), ("~", 30), ("_", 31), ("?", 127)],
)  # fmt: skip
def test_sendcontrol_maps_as_aexpect(char: str, code: int) -> None:
    _, sent, session = scripted_console()
    session.sendcontrol(char)
    assert sent == [bytes([code])]


@pytest.mark.parametrize("char", ["1", "cc", "", "é"])
def test_sendcontrol_unknown_is_a_key_error_as_aexpect(char: str) -> None:
    _, sent, session = scripted_console()
    with pytest.raises(KeyError):
        session.sendcontrol(char)
    with pytest.raises(ValueError):
        session.sendcontrol(char)
    with pytest.raises(UnknownControlCharError, match="no control character"):
        session.sendcontrol(char)
    assert sent == []


def test_sendcontrol_c_interrupts(make_console: MakeGuest) -> None:
    g = make_console("shell")
    g.session.read_up_to_prompt(timeout=2)
    g.session.sendline("sleep 100")
    g.session.sendcontrol("c")
    g.session.read_until_any_line_matches([r"\^C"], timeout=2)
    assert g.session.cmd_status("true") == 0
    assert g.guest.status == 0 and b"\x03" in bytes(g.guest.received)
