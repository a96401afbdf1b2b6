"""Sessions without a VM: ShellSession, the login dialogue, BufferSpawn with the fake guest
(ConsoleBuffer alone: test_console_buffer).

A fake guest (tests/unit/fake_guest.py) plays a busybox getty/login and a
small shell.  It is reached the way the serial console is (a ConsoleBuffer read
by a BufferSpawn, written with a send function), over a socketpair through
pexpect's ``fdspawn`` (any pexpect transport works), and through ``nc``.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pexpect
import pytest
from fake_guest import (
    LOGIN_PROMPT,
    LS_CLEAN,
    OS_RELEASE_CLEAN,
    PASSWORD,
    PROMPT,
    PROMPT_RE,
    USERNAME,
    FakeGuest,
    on_socket,
)
from pexpect import fdpexpect

from virtlib.errors import (
    LoginAuthenticationError,
    LoginBadClientError,
    LoginError,
    LoginProcessTerminatedError,
    LoginTimeoutError,
    RemoteError,
    ShellCmdError,
    ShellError,
    ShellProcessTerminatedError,
    ShellStatusError,
    ShellTimeoutError,
)
from virtlib.sessions import console_login, handle_prompts, remote_login
from virtlib.sessions.buffer import ConsoleBuffer
from virtlib.sessions.shell import ShellSession, clean_text, strip_echo_and_prompt
from virtlib.sessions.transport import BufferSpawn

# --- transports to the fake guest ------------------------------------------------------


@dataclass
class Guest:
    """A fake guest and a ShellSession on it."""

    guest: FakeGuest
    session: ShellSession
    transport: str
    buffer: ConsoleBuffer | None = None

    @property
    def spawn(self) -> Any:
        return self.session.spawn


MakeGuest = Callable[..., Guest]


@pytest.fixture
def make_console(tmp_path: Path) -> Iterator[MakeGuest]:
    """A fake guest behind a serial console: ConsoleBuffer + BufferSpawn, like LibvirtVM's."""
    made: list[tuple[FakeGuest, ConsoleBuffer]] = []

    def make(state: str = "login", log: Path | None = None, **kwargs: Any) -> Guest:
        buffer = ConsoleBuffer(log)
        guest = FakeGuest(buffer.append, buffer.close, state=state, **kwargs)
        spawn = BufferSpawn(buffer, guest.feed, name="fake console")
        session = ShellSession(spawn, prompt=PROMPT_RE, output_source=buffer.get_output)
        made.append((guest, buffer))
        guest.start()
        return Guest(guest, session, "console", buffer)

    yield make
    for guest, buffer in made:
        guest.stop()
        buffer.release()


@pytest.fixture
def make_socket_guest() -> Iterator[MakeGuest]:
    """A fake guest on a socketpair, read through pexpect's fdspawn."""
    made: list[tuple[FakeGuest, socket.socket, Any]] = []

    def make(state: str = "login", **kwargs: Any) -> Guest:
        ours, theirs = socket.socketpair()
        guest = on_socket(theirs, state=state, **kwargs)
        spawn = fdpexpect.fdspawn(
            ours.detach(), encoding="utf-8", codec_errors="replace", timeout=5
        )
        made.append((guest, theirs, spawn))
        return Guest(guest, ShellSession(spawn, prompt=PROMPT_RE), "fdpexpect")

    yield make
    for guest, theirs, spawn in made:
        guest.stop()
        spawn.close()
        with contextlib.suppress(OSError):
            theirs.shutdown(socket.SHUT_RDWR)
        theirs.close()


@pytest.fixture(params=["console", "fdpexpect"])
def make_guest(
    request: pytest.FixtureRequest, make_console: MakeGuest, make_socket_guest: MakeGuest
) -> MakeGuest:
    """Both transports: the command API is the same whatever carries it."""
    return make_console if request.param == "console" else make_socket_guest


@pytest.fixture
def shell(make_guest: MakeGuest) -> Guest:
    """A guest already at its shell prompt."""
    return make_guest("shell")


def scripted_console(
    output: bytes = b"", reply: Callable[[bytes], bytes] | None = None, closed: bool = False
) -> tuple[ConsoleBuffer, list[bytes], ShellSession]:
    """A console whose output is given: ``reply`` answers what is sent (None: nothing)."""
    buffer = ConsoleBuffer()
    buffer.append(output)
    if closed:
        buffer.close()
    sent: list[bytes] = []

    def send(data: bytes) -> None:
        sent.append(data)
        if reply is not None:
            buffer.append(reply(data))

    session = ShellSession(BufferSpawn(buffer, send), prompt=PROMPT_RE)
    return buffer, sent, session


# --- console_login / handle_prompts ------------------------------------------------------


def test_console_login_answers_username_and_password(make_guest: MakeGuest) -> None:
    g = make_guest("login")
    assert console_login(g.session, USERNAME, PASSWORD, PROMPT_RE, timeout=2) is g.session
    assert g.guest.attempts == [(USERNAME, PASSWORD)]
    assert g.guest.state == "shell"
    assert g.session.prompt == PROMPT_RE
    assert g.session.cmd("uname -r") == "6.6.0-virtlib\n"


def test_console_login_at_a_shell_prompt_sends_no_credentials(make_console: MakeGuest) -> None:
    g = make_console("shell")
    start = time.monotonic()
    console_login(g.session, USERNAME, PASSWORD, PROMPT_RE, timeout=2)
    assert time.monotonic() - start < 1
    # Only the empty line that wakes the console, then virtlib's sync marker: no credentials.
    assert re.fullmatch(rb"\necho virtlib-sync-\$\(\(1\+1\)\)-[0-9a-f]+\n", bytes(g.guest.received))
    assert g.guest.attempts == []
    assert g.guest.commands[0] == "" and len(g.guest.commands) == 2


def test_wrong_password_fails_at_once_without_retrying(make_guest: MakeGuest) -> None:
    g = make_guest("login", fail_delay=0.1)
    start = time.monotonic()
    with pytest.raises(LoginAuthenticationError) as info:
        console_login(g.session, USERNAME, "wrong", PROMPT_RE, timeout=5)
    assert time.monotonic() - start < 1.5
    assert "Login incorrect" in info.value.output
    assert g.guest.attempts == [(USERNAME, "wrong")]
    assert g.guest.lines == ["", USERNAME, "wrong"]  # nothing typed after the refusal


def test_no_prompt_at_all_times_out_within_the_timeout(make_guest: MakeGuest) -> None:
    g = make_guest("silent")
    start = time.monotonic()
    with pytest.raises(LoginTimeoutError) as info:
        console_login(g.session, USERNAME, PASSWORD, PROMPT_RE, timeout=0.3)
    assert 0.25 <= time.monotonic() - start < 1.3
    assert info.value.timeout == 0.3
    assert "0.3 s" in str(info.value)


def test_stream_ending_during_login_is_process_terminated(make_console: MakeGuest) -> None:
    g = make_console("closing")
    with pytest.raises(LoginProcessTerminatedError) as info:
        console_login(g.session, USERNAME, PASSWORD, PROMPT_RE, timeout=2)
    assert info.value.status is None
    assert isinstance(info.value, LoginError)


def test_stream_ending_after_the_username_keeps_the_output() -> None:
    _, sent, session = scripted_console(LOGIN_PROMPT.encode(), closed=True)
    with pytest.raises(LoginProcessTerminatedError) as info:
        handle_prompts(session, USERNAME, PASSWORD, PROMPT_RE, timeout=2)
    assert sent == [f"{USERNAME}\n".encode()]
    assert "login:" in info.value.output


def test_connection_closed_message_ends_the_login_quickly() -> None:
    _, _, session = scripted_console(
        b"Trying 127.0.0.1...\r\nConnection closed by foreign host.\r\n"
    )
    start = time.monotonic()
    with pytest.raises(LoginProcessTerminatedError):
        handle_prompts(session, USERNAME, PASSWORD, PROMPT_RE, timeout=5)
    assert time.monotonic() - start < 1


def test_host_key_question_is_answered_yes(make_guest: MakeGuest) -> None:
    g = make_guest("question")
    output = handle_prompts(g.session, USERNAME, PASSWORD, PROMPT_RE, timeout=2)
    assert g.guest.answers == ["yes"]
    assert g.guest.attempts == [(USERNAME, PASSWORD)]
    assert "continue connecting" in output
    assert "Welcome to virtlib-guest" in output


def test_handle_prompts_returns_everything_read(make_console: MakeGuest) -> None:
    g = make_console("login")
    output = handle_prompts(g.session, USERNAME, PASSWORD, PROMPT_RE, timeout=2)
    assert "Virtlib Linux 1.0" in output
    assert "Password:" in output
    assert clean_text(output).rstrip().endswith("]#")


def test_stale_login_incorrect_before_any_credentials_is_ignored() -> None:
    def guest(data: bytes) -> bytes:
        if data == f"{USERNAME}\n".encode():
            return b"root\r\nPassword: "
        return b"\r\n" + PROMPT.encode()

    stale = b"Login incorrect\r\n\r\n" + LOGIN_PROMPT.encode()
    _, sent, session = scripted_console(stale, reply=guest)
    handle_prompts(session, USERNAME, PASSWORD, PROMPT_RE, timeout=2)
    assert sent == [f"{USERNAME}\n".encode(), f"{PASSWORD}\n".encode()]


def test_password_prompt_twice_is_an_authentication_error() -> None:
    _, sent, session = scripted_console(b"Password: ", reply=lambda data: b"\r\nPassword: ")
    with pytest.raises(LoginAuthenticationError, match="password prompt twice"):
        handle_prompts(session, USERNAME, PASSWORD, PROMPT_RE, timeout=2)
    assert sent == [f"{PASSWORD}\n".encode()]


def test_console_login_on_a_closed_transport_is_a_login_error(make_console: MakeGuest) -> None:
    g = make_console("login")
    g.session.close()
    with pytest.raises(LoginError, match="cannot write to the console"):
        console_login(g.session, USERNAME, PASSWORD, PROMPT_RE, timeout=1)


# --- ShellSession: commands -------------------------------------------------------------


def test_cmd_output_strips_echo_and_prompt(shell: Guest) -> None:
    assert shell.session.cmd_output("uname -r") == "6.6.0-virtlib\n"
    assert shell.guest.commands == ["uname -r"]


def test_cmd_output_multi_line_crlf_normalised(shell: Guest) -> None:
    output = shell.session.cmd_output("cat /etc/os-release")
    assert output == OS_RELEASE_CLEAN
    assert "\r" not in output


def test_cmd_output_drops_ansi_escapes(shell: Guest) -> None:
    output = shell.session.cmd_output("ls --color=always /")
    assert output == LS_CLEAN
    assert "\x1b" not in output


def test_cmd_output_of_a_silent_command_is_empty(shell: Guest) -> None:
    assert shell.session.cmd_output("true") == ""
    assert shell.session.cmd_output("") == ""


def test_cmd_status_output(shell: Guest) -> None:
    assert shell.session.cmd_status_output("false") == (1, "")
    assert shell.session.cmd_status_output("(exit 3)") == (3, "")
    assert shell.session.cmd_status_output("cat /etc/os-release") == (0, OS_RELEASE_CLEAN)
    assert shell.guest.commands[:2] == ["false", "echo $?"]


def test_cmd_status(shell: Guest) -> None:
    assert shell.session.cmd_status("true") == 0
    assert shell.session.cmd_status("false") == 1
    assert shell.session.cmd_status("no-such-tool") == 127


def test_cmd_returns_the_output_on_status_zero(shell: Guest) -> None:
    assert shell.session.cmd("cat /etc/os-release") == OS_RELEASE_CLEAN


def test_cmd_raises_shell_cmd_error_with_cmd_status_and_output(shell: Guest) -> None:
    with pytest.raises(ShellCmdError) as info:
        shell.session.cmd("no-such-tool --flag")
    assert info.value.cmd == "no-such-tool --flag"
    assert info.value.status == 127
    assert info.value.output == "-sh: no-such-tool: not found\n"
    assert isinstance(info.value, ShellError)
    assert isinstance(info.value, RemoteError)


def test_cmd_accepts_ok_status(shell: Guest) -> None:
    assert shell.session.cmd("(exit 3)", ok_status=[0, 3]) == ""
    with pytest.raises(ShellCmdError) as info:
        shell.session.cmd("true", ok_status=[3])
    assert info.value.status == 0


def test_cmd_ignore_all_errors_returns_none_on_any_error_as_aexpect(shell: Guest) -> None:
    assert shell.session.cmd("no-such-tool", ignore_all_errors=True) is None
    assert shell.session.cmd("sleep 100", timeout=0.2, ignore_all_errors=True) is None
    shell.session.sendcontrol("c")
    shell.session.read_up_to_prompt(timeout=2)
    assert shell.session.cmd("uname -r", ignore_all_errors=True) == "6.6.0-virtlib\n"


def test_no_prompt_is_a_shell_timeout_then_ctrl_c_recovers(shell: Guest) -> None:
    start = time.monotonic()
    with pytest.raises(ShellTimeoutError) as info:
        shell.session.cmd_output("sleep 1000", timeout=0.3)
    assert 0.25 <= time.monotonic() - start < 1.3
    assert info.value.cmd == "sleep 1000"
    assert "sleep 1000" in info.value.output
    shell.session.sendcontrol("c")
    shell.session.read_up_to_prompt(timeout=2)
    assert shell.session.cmd_status("echo $?") == 0
    assert shell.guest.status == 0
    assert b"\x03" in shell.guest.received


def test_status_after_ctrl_c_is_130(shell: Guest) -> None:
    with pytest.raises(ShellTimeoutError):
        shell.session.cmd_output("sleep 1000", timeout=0.2)
    shell.session.sendcontrol("C")
    shell.session.read_up_to_prompt(timeout=2)
    assert shell.session.cmd_output("echo $?") == "130\n"


def test_transport_ending_mid_command_is_process_terminated(shell: Guest) -> None:
    with pytest.raises(ShellProcessTerminatedError) as info:
        shell.session.cmd_output("poweroff", timeout=2)
    assert info.value.cmd == "poweroff"
    assert info.value.status is None
    assert "Stopping services" in info.value.output


def test_cmd_on_a_closed_transport_is_process_terminated(make_console: MakeGuest) -> None:
    g = make_console("shell")
    g.session.close()
    with pytest.raises(ShellProcessTerminatedError) as info:
        g.session.cmd("true", timeout=1)
    assert info.value.cmd == "true"
    assert "closed" in info.value.output


def test_garbage_from_the_status_command_is_a_status_error(shell: Guest) -> None:
    shell.session.set_status_test_command("echo oops")
    with pytest.raises(ShellStatusError) as info:
        shell.session.cmd_status("uname -r")
    assert info.value.cmd == "uname -r"
    assert info.value.output == "6.6.0-virtlib\n"
    with pytest.raises(ShellStatusError):
        shell.session.cmd("true")
    assert shell.session.cmd("true", ignore_all_errors=True) is None


def test_set_status_test_command_is_honoured(shell: Guest) -> None:
    shell.session.set_status_test_command("echo status=$?")
    assert shell.session.cmd_status("false") == 1
    assert shell.guest.commands == ["false", "echo status=$?"]


def test_default_linesep_is_lf(shell: Guest) -> None:
    shell.session.cmd("true")
    assert bytes(shell.guest.received) == b"true\necho $?\n"


def test_set_linesep_crlf_is_sent(shell: Guest) -> None:
    shell.session.set_linesep("\r\n")
    assert shell.session.cmd("uname -r") == "6.6.0-virtlib\n"
    assert bytes(shell.guest.received) == b"uname -r\r\necho $?\r\n"


def test_sendline_uses_the_session_linesep(shell: Guest) -> None:
    shell.session.set_linesep("\r\n")
    shell.session.read_nonblocking(0.0)  # the first prompt
    shell.session.sendline("true")
    shell.session.read_up_to_prompt(timeout=2)
    assert bytes(shell.guest.received) == b"true\r\n"


def test_read_until_last_line_matches_returns_index_and_text(shell: Guest) -> None:
    shell.session.read_nonblocking(0.0)
    shell.session.sendline("cat /etc/os-release")
    index, text = shell.session.read_until_last_line_matches(["no-such-line", PROMPT_RE], 2)
    assert index == 1
    assert "ID=virtlib" in text
    assert "\x1b" not in text
    assert "\r" not in text


def test_read_until_last_line_matches_single_pattern(shell: Guest) -> None:
    shell.session.read_nonblocking(0.0)
    shell.session.sendline("uname -r")
    assert shell.session.read_until_last_line_matches(PROMPT_RE, 2)[0] == 0


def test_read_until_any_line_matches_returns_index_and_text(shell: Guest) -> None:
    shell.session.read_nonblocking(0.0)
    shell.session.sendline("cat /etc/os-release")
    index, text = shell.session.read_until_any_line_matches(["no-such-line", "^VERSION_ID="], 2)
    assert index == 1
    assert "VERSION_ID=1.0" in text


def test_read_until_prints_lines_with_print_func(shell: Guest) -> None:
    printed: list[str] = []
    shell.session.cmd_output("cat /etc/os-release", print_func=printed.append)
    assert 'NAME="Virtlib Linux"' in printed
    assert all("\x1b" not in line and "\r" not in line for line in printed)


def test_read_until_times_out(shell: Guest) -> None:
    shell.session.read_nonblocking(0.0)
    start = time.monotonic()
    with pytest.raises(ShellTimeoutError):
        shell.session.read_until_any_line_matches("never printed", timeout=0.2)
    assert time.monotonic() - start < 1.2


def test_read_until_at_end_of_stream_is_process_terminated() -> None:
    _, _, session = scripted_console(b"partial output\r\n", closed=True)
    with pytest.raises(ShellProcessTerminatedError) as info:
        session.read_until_last_line_matches(PROMPT_RE, timeout=2)
    assert info.value.output == "partial output\n"


def test_read_nonblocking_returns_what_arrived_raw() -> None:
    buffer, _, session = scripted_console(b"one\r\n\x1b[1mtwo\x1b[0m\r\n")
    assert session.read_nonblocking(0.01) == "one\r\n\x1b[1mtwo\x1b[0m\r\n"
    start = time.monotonic()
    assert session.read_nonblocking(0.05) == ""
    assert time.monotonic() - start < 1
    buffer.append(b"three")
    buffer.close()
    assert session.read_nonblocking(0.01) == "three"
    assert session.read_nonblocking(0.01) == ""  # at end of stream: nothing, no exception


def test_read_nonblocking_total_timeout_bounds_a_chatty_stream() -> None:
    buffer = ConsoleBuffer()
    stop = threading.Event()

    def chatter() -> None:
        while not stop.is_set():
            buffer.append(b"x")
            stop.wait(0.005)

    thread = threading.Thread(target=chatter, daemon=True)
    thread.start()
    try:
        session = ShellSession(BufferSpawn(buffer, lambda data: None))
        start = time.monotonic()
        text = session.read_nonblocking(internal_timeout=0.5, timeout=0.2)
        assert time.monotonic() - start < 1
        assert text and set(text) == {"x"}
    finally:
        stop.set()
        thread.join()


def test_get_output_with_output_source_is_the_whole_console(make_console: MakeGuest) -> None:
    g = make_console("login")
    assert g.buffer is not None
    # Nothing was read yet, yet the whole console is there.
    assert LOGIN_PROMPT in g.session.get_output()
    console_login(g.session, USERNAME, PASSWORD, PROMPT_RE, timeout=2)
    g.session.cmd("uname -r")
    assert g.session.get_output() == g.buffer.get_output()
    assert "6.6.0-virtlib" in g.session.get_output()


def test_get_output_without_source_is_what_the_session_read(make_socket_guest: MakeGuest) -> None:
    g = make_socket_guest("shell")
    g.session.cmd_output("uname -r")
    output = g.session.get_output()
    assert output.startswith("\x1b[?2004h")  # the raw first prompt
    assert "uname -r\r\n" in output
    assert "6.6.0-virtlib\r\n" in output


def test_is_alive_and_close_on_the_console(make_console: MakeGuest) -> None:
    g = make_console("shell")
    assert g.session.is_alive()
    g.session.close()
    assert not g.session.is_alive()
    with pytest.raises(OSError, match="closed"):
        g.session.sendline("true")


def test_is_alive_is_false_after_end_of_stream(make_console: MakeGuest) -> None:
    g = make_console("shell")
    with pytest.raises(ShellProcessTerminatedError):
        g.session.cmd("exit")
    assert not g.session.is_alive()


def test_session_as_context_manager_closes(make_console: MakeGuest) -> None:
    g = make_console("shell")
    with g.session as session:
        assert session.cmd("true") == ""
    assert not g.session.is_alive()


def test_is_responsive(make_guest: MakeGuest) -> None:
    assert make_guest("shell").session.is_responsive(timeout=2)
    start = time.monotonic()
    assert not make_guest("silent").session.is_responsive(timeout=0.2)
    assert time.monotonic() - start < 1.2


def test_is_responsive_false_when_closed(make_console: MakeGuest) -> None:
    g = make_console("shell")
    g.session.close()
    assert not g.session.is_responsive(timeout=0.2)


def test_sendcontrol_sends_the_control_character() -> None:
    _, sent, session = scripted_console()
    session.sendcontrol("c")
    session.sendcontrol("D")
    session.send("raw")
    assert sent == [b"\x03", b"\x04", b"raw"]


def test_expect_is_pexpect_expect_on_the_transport(make_guest: MakeGuest) -> None:
    g = make_guest("login")
    assert g.session.expect(["no-such-thing", "login: "], timeout=2) == 1
    g.session.sendline(USERNAME)
    assert g.session.expect("Password: ", timeout=2) == 0
    with pytest.raises(pexpect.TIMEOUT):
        g.session.expect("never", timeout=0.1)


def test_text_read_past_an_expect_match_is_not_lost() -> None:
    _, _, session = scripted_console(b"Welcome to virtlib-guest\r\n" + PROMPT.encode())
    session.expect("Welcome", timeout=1)
    text = session.read_up_to_prompt(timeout=0.3)
    assert text.rstrip().endswith("]#")


# --- the text helpers ---------------------------------------------------------------------


def test_clean_text_normalises_line_ends_and_drops_escapes() -> None:
    raw = "a\r\n\x1b[01;34mb\x1b[0m\r\r\nc\x1b[?2004l\rd\x1b[K\x1bM\n"
    assert clean_text(raw) == "a\nb\ncd\n"


@pytest.mark.parametrize(
    "raw",
    [
        "\x1b]0;root@virtlib-guest:~\x07done\r\n",  # xterm window title (OSC ... BEL)
        "\x1b]0;root@virtlib-guest:~\x1b\\done\r\n",  # OSC ... ST
        "\x1b(B\x1b[mdone\r\n",  # tput sgr0 on xterm: charset G0 = ASCII, then SGR reset
    ],
    ids=["osc-bel", "osc-st", "charset"],
)
def test_clean_text_drops_osc_and_charset_escapes(raw: str) -> None:
    assert clean_text(raw) == "done\n"


def test_strip_echo_and_prompt() -> None:
    text = "ls -l\r\ntotal 0\r\n[root@virtlib-guest ~]# "
    assert strip_echo_and_prompt(text, "ls -l") == "total 0\n"
    # No echo (the terminal did not echo): the first line is output, kept.
    assert strip_echo_and_prompt("total 0\n[root@g ~]# ", "ls -l") == "total 0\n"
    # An empty command line: its empty echo line goes.
    assert strip_echo_and_prompt("\r\n[root@g ~]# ", "") == ""
    assert strip_echo_and_prompt("", "true") == ""


# --- BufferSpawn as a pexpect spawn -------------------------------------------------------


def test_buffer_spawn_pexpect_dialogue(make_console: MakeGuest) -> None:
    g = make_console("login")
    spawn = g.spawn
    assert spawn.expect("login: ", timeout=2) == 0
    assert "Virtlib Linux 1.0" in spawn.before
    spawn.sendline(USERNAME)
    assert spawn.expect(["Login incorrect", "Password: "], timeout=2) == 1
    spawn.sendline(PASSWORD)
    spawn.expect(r"\]#", timeout=2)
    assert "Welcome to virtlib-guest" in spawn.before


# --- remote_login ----------------------------------------------------------------------


def test_remote_login_unknown_client() -> None:
    with pytest.raises(LoginBadClientError) as info:
        remote_login("rsh", "127.0.0.1", 1, USERNAME, PASSWORD, PROMPT_RE)
    assert info.value.client == "rsh"
    assert info.value.known == ["ssh", "telnet", "nc"]
    assert isinstance(info.value, LoginError)


def test_remote_login_ssh_needs_known_hosts() -> None:
    with pytest.raises(LoginError, match="known_hosts"):
        remote_login("ssh", "127.0.0.1", 1, USERNAME, PASSWORD, PROMPT_RE, known_hosts=None)


@pytest.fixture
def tcp_guest() -> Iterator[Callable[..., tuple[int, list[FakeGuest]]]]:
    """A TCP server on 127.0.0.1 that runs a fake guest on each connection."""
    servers: list[tuple[socket.socket, threading.Thread]] = []
    guests: list[FakeGuest] = []
    connections: list[socket.socket] = []

    def start(**kwargs: Any) -> tuple[int, list[FakeGuest]]:
        server = socket.create_server(("127.0.0.1", 0))

        def accept() -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                connections.append(conn)
                guests.append(on_socket(conn, **kwargs))

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        servers.append((server, thread))
        return server.getsockname()[1], guests

    yield start
    for server, thread in servers:
        server.shutdown(socket.SHUT_RDWR)
        server.close()
        thread.join(timeout=2)
    for guest in guests:
        guest.stop()
    for conn in connections:
        conn.close()


needs_nc = pytest.mark.skipif(shutil.which("nc") is None, reason="nc is not installed")


@needs_nc
def test_remote_login_nc_logs_in_and_runs_commands(
    tcp_guest: Callable[..., tuple[int, list[FakeGuest]]], tmp_path: Path
) -> None:
    port, guests = tcp_guest(state="login")
    log = tmp_path / "session.log"
    session = remote_login(
        "nc", "127.0.0.1", port, USERNAME, PASSWORD, PROMPT_RE, timeout=3, log_file=log
    )
    try:
        assert guests[0].attempts == [(USERNAME, PASSWORD)]
        assert session.cmd_status("false") == 1
        assert "6.6.0-virtlib" in session.cmd("uname -r")
    finally:
        session.close()
    assert session.spawn.logfile_read.closed
    assert "Welcome to virtlib-guest" in log.read_text()


@needs_nc
def test_remote_login_nc_wrong_password(
    tcp_guest: Callable[..., tuple[int, list[FakeGuest]]],
) -> None:
    port, guests = tcp_guest(state="login")
    with pytest.raises(LoginAuthenticationError):
        remote_login("nc", "127.0.0.1", port, USERNAME, "wrong", PROMPT_RE, timeout=3)
    assert guests[0].attempts == [(USERNAME, "wrong")]


@needs_nc
def test_remote_login_nc_does_not_echo_locally(
    tcp_guest: Callable[..., tuple[int, list[FakeGuest]]],
) -> None:
    port, _ = tcp_guest(state="login")
    session = remote_login("nc", "127.0.0.1", port, USERNAME, PASSWORD, PROMPT_RE, timeout=3)
    try:
        assert PASSWORD not in session.get_output()
        assert session.cmd_output("uname -r") == "6.6.0-virtlib\n"
    finally:
        session.close()


@needs_nc
def test_remote_login_log_file_is_closed_with_the_session(
    tcp_guest: Callable[..., tuple[int, list[FakeGuest]]], tmp_path: Path
) -> None:
    port, _ = tcp_guest(state="login")
    session = remote_login(
        "nc",
        "127.0.0.1",
        port,
        USERNAME,
        PASSWORD,
        PROMPT_RE,
        timeout=3,
        log_file=tmp_path / "session.log",
    )
    log = session.spawn.logfile_read
    session.close()
    closed = log.closed
    log.close()  # do not leak it from the test either
    assert closed


def test_remote_login_nc_missing_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(LoginError, match="not installed"):
        remote_login("nc", "127.0.0.1", 1, USERNAME, PASSWORD, PROMPT_RE)
