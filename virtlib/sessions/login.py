"""The login dialogue: answer username and password prompts until the shell prompt shows.

Written once for every transport (serial console, telnet, nc; SSH authenticates
in paramiko and then only waits for the prompt).
"""

from __future__ import annotations

import re

from virtlib.errors import (
    LoginAuthenticationError,
    LoginError,
    LoginProcessTerminatedError,
    LoginTimeoutError,
    ShellProcessTerminatedError,
    ShellTimeoutError,
)
from virtlib.sessions.shell import ShellSession, clean_text
from virtlib.waiting import Deadline

LOGIN_PROMPT = r"(?<![Ll]ast )[Ll]ogin:\s*$"
PASSWORD_PROMPT = r"[Pp]assword:\s*$"  # noqa: S105 - a prompt, not a password
CONTINUE_CONNECTING = r"[Aa]re you sure you want to continue connecting"
CLOSED = r"[Cc]onnection.*(closed|refused)|[Cc]onnection reset"
# Checked on every new line (these are not the last line: a new login prompt follows them).
AUTH_FAILED = re.compile(r"[Ll]ogin incorrect|[Pp]ermission denied|[Aa]uthentication failure")


def handle_prompts(
    session: ShellSession,
    username: str,
    password: str,
    prompt: str,
    timeout: float = 10,
) -> str:
    """Drive the dialogue until ``prompt``; return everything read.

    :raises LoginAuthenticationError: the guest refused the credentials.
    :raises LoginTimeoutError: no prompt within ``timeout`` (of silence or in total).
    :raises LoginProcessTerminatedError: the connection ended.
    """
    deadline = Deadline(timeout)
    patterns = [CONTINUE_CONNECTING, PASSWORD_PROMPT, LOGIN_PROMPT, CLOSED, prompt]
    sent_password = sent_username = 0
    output = ""
    while True:
        start = len(output)
        try:
            index, text = session.read_until_last_line_matches(patterns, deadline.remaining())
        except ShellTimeoutError as exc:
            raise LoginTimeoutError(output + exc.output, timeout) from None
        except ShellProcessTerminatedError as exc:
            raise LoginProcessTerminatedError(exc.status, output + exc.output) from None
        output += text
        if AUTH_FAILED.search(clean_text(output[start:])) and (sent_password or sent_username):
            raise LoginAuthenticationError(
                "Login incorrect: the guest refused the credentials", output
            )
        if index == 0:
            session.sendline("yes")
        elif index == 1:
            if sent_password:
                raise LoginAuthenticationError("Got password prompt twice", output)
            # login prints the prompt, *then* flushes input and turns echo off: answering at
            # once can echo the password (into the serial log) or lose it.  Wait for quiet.
            output += session.read_nonblocking(internal_timeout=0.05, timeout=1.0)
            session.sendline(password)
            sent_password += 1
        elif index == 2:
            if sent_username:
                raise LoginAuthenticationError("Got username prompt twice", output)
            session.sendline(username)
            sent_username += 1
        elif index == 3:
            raise LoginProcessTerminatedError(None, output)
        else:
            return output


def console_login(
    session: ShellSession, username: str, password: str, prompt: str, timeout: float = 10
) -> ShellSession:
    """Log in on a console that may show a login prompt, or already a shell.

    Sends an empty line first to make the getty (or the shell) print its prompt.
    """
    session.set_prompt(prompt)
    try:
        session.read_nonblocking(0.0)
        session.sendline()
    except OSError as exc:
        raise LoginError(f"cannot write to the console: {exc}") from None
    handle_prompts(session, username, password, prompt, timeout)
    sync_after_login(session, timeout)
    return session


def sync_after_login(session: ShellSession, timeout: float) -> None:
    """After the login, read away any further prompt (see ShellSession.sync)."""
    try:
        session.sync(timeout)
    except ShellTimeoutError as exc:
        raise LoginTimeoutError(exc.output, timeout) from None
    except ShellProcessTerminatedError as exc:
        raise LoginProcessTerminatedError(exc.status, exc.output) from None
