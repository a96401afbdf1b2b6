"""Login and commands on a guest that looks like a real Debian 12 on its serial console,
with virtlib's *default* prompt (no override): agetty's ``HOSTNAME login:``, boot chatter
right after it, Debian's MOTD, bash's ``root@host:~#`` prompt with bracketed paste, and a
serial echo that arrives a few characters at a time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_guest import DEBIAN_HOSTNAME, PASSWORD, USERNAME, FakeGuest

from virtlib import Params, ShellCmdError, VMSpec
from virtlib.sessions import console_login
from virtlib.sessions.buffer import ConsoleBuffer
from virtlib.sessions.shell import ShellSession
from virtlib.sessions.transport import BufferSpawn
from virtlib.spec import LoginSpec

DEFAULT_PROMPT = LoginSpec().shell_prompt


@pytest.fixture
def debian(tmp_path: Path) -> Iterator[tuple[FakeGuest, ShellSession]]:
    """A Debian-like guest at its getty, behind a console like LibvirtVM's."""
    buffer = ConsoleBuffer(tmp_path / "serial.log")
    guest = FakeGuest(buffer.append, buffer.close, state="login", style="debian")
    session = ShellSession(
        BufferSpawn(buffer, guest.feed, name="debian console"),
        prompt=DEFAULT_PROMPT,
        output_source=buffer.get_output,
    )
    guest.start()
    yield guest, session
    guest.stop()
    buffer.release()


def test_the_default_prompt_is_anchored() -> None:
    spec = VMSpec.from_params("vm1", Params(guest="none"))
    assert spec.login.shell_prompt == DEFAULT_PROMPT
    assert DEFAULT_PROMPT.endswith("$")


def test_login_through_agetty_chatter_and_motd(debian: tuple[FakeGuest, ShellSession]) -> None:
    guest, session = debian
    console_login(session, USERNAME, PASSWORD, DEFAULT_PROMPT, timeout=5)
    assert guest.attempts == [(USERNAME, PASSWORD)]
    assert session.cmd("uname -r") == "6.6.0-virtlib\n"


def test_commands_have_their_status_with_a_slow_echo(
    debian: tuple[FakeGuest, ShellSession],
) -> None:
    """``echo $?`` echoed as ``ech``, ``o $``, ``?``: ``echo $`` is no prompt."""
    guest, session = debian
    console_login(session, USERNAME, PASSWORD, DEFAULT_PROMPT, timeout=5)
    assert session.cmd_status_output("false") == (1, "")
    assert session.cmd_status_output("true") == (0, "")
    assert session.cmd_status_output("(exit 3)") == (3, "")
    # In step afterwards: each command gets its own output, not the previous one's.
    assert session.cmd("echo one") == "one\n"
    assert session.cmd("echo two") == "two\n"
    with pytest.raises(ShellCmdError) as caught:
        session.cmd("no-such-command")
    assert caught.value.status == 127
    assert guest.commands[-1] == "echo $?"


def test_output_keeps_no_prompt_echo_or_escape(debian: tuple[FakeGuest, ShellSession]) -> None:
    _, session = debian
    console_login(session, USERNAME, PASSWORD, DEFAULT_PROMPT, timeout=5)
    output = session.cmd("cat /etc/os-release")
    assert output.startswith('NAME="Virtlib Linux"')
    assert "\x1b" not in output and DEBIAN_HOSTNAME not in output


def test_a_banner_of_hashes_on_the_console_is_no_prompt(
    debian: tuple[FakeGuest, ShellSession],
) -> None:
    _, session = debian
    console_login(session, USERNAME, PASSWORD, DEFAULT_PROMPT, timeout=5)
    output = session.cmd("chatter")
    assert output.endswith("status: done\n") and "####" in output
    assert session.cmd("echo next") == "next\n"  # still in step


def test_a_console_line_after_the_status_does_not_hide_it() -> None:
    buffer = ConsoleBuffer()
    replies = {
        b"true\n": b"true\r\nroot@vm:~# ",
        b"echo $?\n": b"echo $?\r\n0\r\n[  163.3] cloud-init[387]: up 163 s\r\nroot@vm:~# ",
    }
    session = ShellSession(
        BufferSpawn(buffer, lambda data: buffer.append(replies[bytes(data)])),
        prompt=DEFAULT_PROMPT,
    )
    assert session.cmd_status_output("true") == (0, "")


def test_a_long_command_wrapped_by_readline_is_still_its_echo() -> None:
    """readline on an 80-column serial terminal wraps the echo with " \\r"."""
    command = "echo " + "x" * 150
    wrapped = (command[:75] + " \r" + command[75:]).encode()
    buffer = ConsoleBuffer()
    replies = {
        (command + "\n").encode(): wrapped + b"\r\n" + b"x" * 150 + b"\r\nroot@vm:~# ",
        b"echo $?\n": b"echo $?\r\n0\r\nroot@vm:~# ",
    }
    session = ShellSession(
        BufferSpawn(buffer, lambda data: buffer.append(replies[bytes(data)])),
        prompt=DEFAULT_PROMPT,
    )
    assert session.cmd(command) == "x" * 150 + "\n"
