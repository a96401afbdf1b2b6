"""ShellSession: the command API VM tests already use (aexpect's), over any pexpect transport.

A session sends a command line, reads until the last line matches the shell
prompt, removes the echoed command and the prompt, and asks the shell for the
exit status with ``status_test_command``.

The API is aexpect's ``ShellSession`` (what avocado-vt tests call), name for
name and argument for argument; where virtlib differs it says so in the
method's docstring (the README's "Porting tests from avocado-vt" lists them).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence
from typing import IO, Any, Literal, overload

from pexpect import EOF, TIMEOUT
from pexpect.spawnbase import SpawnBase

from virtlib.errors import (
    ExpectProcessTerminatedError,
    ExpectTimeoutError,
    ShellCmdError,
    ShellError,
    ShellProcessTerminatedError,
    ShellStatusError,
    ShellTimeoutError,
)
from virtlib.waiting import Deadline

# Escape sequences a shell or getty may print: CSI (colour, cursor moves, queries), OSC
# (window titles), character set selection, and the other two-byte escapes.
_ANSI_RE = re.compile(
    r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()*+][0-9A-Za-z]|[@-Z\\-_])"
)
PrintFunc = Callable[[str], None]
MatchFunc = Callable[[Any, Sequence[str]], "int | None"]
# aexpect's control characters beyond Ctrl+letter (two spellings each, as on a terminal).
_CONTROL_CHARS = {
    "@": 0, "`": 0, "[": 27, "{": 27, "\\": 28, "|": 28,
    "]": 29, "}": 29, "^": 30, "~": 30, "_": 31, "?": 127,
}  # fmt: skip
_STATUS_LINE_RE = re.compile(r"^-?[0-9]+$")


class UnknownControlCharError(KeyError, ValueError):
    """sendcontrol() got a character with no control code (aexpect raises KeyError here)."""

    def __str__(self) -> str:
        return f"no control character for {self.args[0]!r}"


def clean_text(text: str) -> str:
    """Terminal output as lines: CR-LF to LF, lone CRs and escape sequences dropped."""
    text = _ANSI_RE.sub("", text)
    return text.replace("\r\n", "\n").replace("\r", "")


def last_nonempty_line(text: str) -> str:
    lines = [line for line in text.split("\n") if line.strip()]
    return lines[-1] if lines else ""


def _compile(patterns: Sequence[str] | str) -> list[re.Pattern[str]]:
    if isinstance(patterns, str):
        patterns = [patterns]
    return [re.compile(p) for p in patterns]


class ShellSession:
    """A shell reached through ``spawn`` (serial console, SSH channel, telnet or nc process)."""

    def __init__(
        self,
        spawn: SpawnBase,
        prompt: str = r"[\#\$]\s*$",
        linesep: str = "\n",
        status_test_command: str = "echo $?",
        output_source: Callable[[], str] | None = None,
    ) -> None:
        self.spawn = spawn
        self.prompt = prompt
        self.linesep = linesep
        self.status_test_command = status_test_command
        self._output: list[str] = []
        self._output_source = output_source
        #: Files (the session log) this session closes with itself.
        self._owned_files: list[IO[str]] = []

    def own(self, handle: IO[str]) -> None:
        """Close ``handle`` (e.g. the session's log file) when the session closes."""
        self._owned_files.append(handle)

    # --- configuration -------------------------------------------------------------
    def set_prompt(self, prompt: str) -> None:
        self.prompt = prompt

    def set_linesep(self, linesep: str) -> None:
        self.linesep = linesep

    def set_status_test_command(self, command: str) -> None:
        self.status_test_command = command

    # --- raw I/O ---------------------------------------------------------------------
    def send(self, text: str = "") -> None:
        self.spawn.send(text)

    def sendline(self, line: str = "") -> None:
        self.spawn.send(line + self.linesep)

    def sendcontrol(self, char: str) -> None:
        """Send Ctrl+<char> (``sendcontrol("c")`` interrupts the running command).

        Letters, and ``@[\\]^_`` (or ``` `{|}~ ```) as on a terminal; ``?`` is DEL.

        :raises UnknownControlCharError: (a KeyError, as aexpect's, and a ValueError)
            for any other character.
        """
        char = char.lower()
        if len(char) == 1 and "a" <= char <= "z":
            self.spawn.send(chr(ord(char) - ord("a") + 1))
        elif char in _CONTROL_CHARS:
            self.spawn.send(chr(_CONTROL_CHARS[char]))
        else:
            raise UnknownControlCharError(char)

    def expect(self, pattern: Any, timeout: float = 30) -> int:
        """pexpect's expect() on the transport, for dialogues the command API does not cover."""
        index: int = self.spawn.expect(pattern, timeout=timeout)
        consumed = (self.spawn.before or "") + (
            self.spawn.after if isinstance(self.spawn.after, str) else ""
        )
        self._record(consumed)
        return index

    def _record(self, text: str) -> None:
        if self._output_source is None and text:
            self._output.append(text)

    def _read_chunk(self, timeout: float) -> str | None:
        """Some text within ``timeout`` ("" if none); None at end of stream.

        Text pexpect's expect() read past its match (kept in ``spawn.buffer``) comes first.
        """
        pending: str = self.spawn.buffer
        if pending:
            self.spawn.buffer = ""
            self._record(pending)
            return pending
        try:
            text: str = self.spawn.read_nonblocking(65536, timeout)
        except TIMEOUT:
            return ""
        except EOF:
            return None
        self._record(text)
        return text

    def read_nonblocking(self, internal_timeout: float = 0.05, timeout: float | None = None) -> str:
        """Read what arrives until ``internal_timeout`` passes with nothing new (or ``timeout``)."""
        deadline = Deadline(timeout if timeout is not None else 3600)
        parts = []
        while True:
            chunk = self._read_chunk(min(internal_timeout, deadline.remaining()))
            if not chunk:
                break
            parts.append(chunk)
            if deadline.expired():
                break
        return "".join(parts)

    def get_output(self) -> str:
        """Everything this session has seen (for the serial console: since it was attached)."""
        if self._output_source is not None:
            return self._output_source()
        return "".join(self._output)

    def is_alive(self) -> bool:
        return bool(self.spawn.isalive())

    def close(self) -> None:
        self.spawn.close()
        for handle in self._owned_files:
            handle.close()
        self._owned_files.clear()

    # --- reading until something matches ---------------------------------------------
    def _read_until(
        self,
        found: Callable[[str], tuple[int, str] | None],
        timeout: float,
        print_func: PrintFunc | None,
        what: str,
        patterns: Sequence[str] | None = None,
    ) -> tuple[int, str]:
        """Read until ``found`` answers; with ``patterns`` the errors are the Expect* ones."""
        deadline = Deadline(timeout)
        text = ""
        while True:
            result = found(clean_text(text))
            if result is not None:
                return result
            if deadline.expired():
                if patterns is not None:
                    raise ExpectTimeoutError(patterns, clean_text(text))
                raise ShellTimeoutError(what, clean_text(text))
            chunk = self._read_chunk(min(0.5, deadline.remaining()))
            if chunk is None:
                if patterns is not None:
                    raise ExpectProcessTerminatedError(patterns, None, clean_text(text))
                raise ShellProcessTerminatedError(what, None, clean_text(text))
            if chunk and print_func is not None:
                for line in clean_text(chunk).splitlines():
                    print_func(line)
            text += chunk

    def read_until_last_line_matches(
        self,
        patterns: Sequence[str] | str,
        timeout: float = 60,
        internal_timeout: float | None = None,
        print_func: PrintFunc | None = None,
    ) -> tuple[int, str]:
        """Read until the last non-empty line matches one of ``patterns``.

        :return: (index of the pattern, the text read).
        :raises ShellTimeoutError: nothing matched within ``timeout``.
        :raises ShellProcessTerminatedError: the transport ended.
        """
        compiled = _compile(patterns)

        def found(text: str) -> tuple[int, str] | None:
            line = last_nonempty_line(text)
            for index, pattern in enumerate(compiled):
                if line and pattern.search(line):
                    return index, text
            return None

        return self._read_until(
            found, timeout, print_func, f"last line matching {patterns!r}", _as_list(patterns)
        )

    def read_until_any_line_matches(
        self,
        patterns: Sequence[str] | str,
        timeout: float = 60,
        internal_timeout: float | None = None,
        print_func: PrintFunc | None = None,
    ) -> tuple[int, str]:
        """Read until any line matches one of ``patterns``: (index, text read)."""
        compiled = _compile(patterns)

        def found(text: str) -> tuple[int, str] | None:
            for line in text.split("\n"):
                for index, pattern in enumerate(compiled):
                    if pattern.search(line):
                        return index, text
            return None

        return self._read_until(
            found, timeout, print_func, f"a line matching {patterns!r}", _as_list(patterns)
        )

    @staticmethod
    def match_patterns(cont: str, patterns: Sequence[str]) -> int | None:
        """The index of the first pattern found in ``cont`` (None and "" patterns are skipped)."""
        for index, pattern in enumerate(patterns):
            if pattern and re.search(pattern, cont):
                return index
        return None

    @staticmethod
    def match_patterns_multiline(cont: Sequence[str], patterns: Sequence[str]) -> int | None:
        """The index of the first pattern found in any of the lines ``cont``.

        aexpect returns that index counted from the end (negative); virtlib
        returns it counted from the start, as read_until_any_line_matches always has.
        """
        for index, pattern in enumerate(patterns):
            if pattern and any(re.search(pattern, line) for line in cont):
                return index
        return None

    def read_until_output_matches(
        self,
        patterns: Sequence[str] | str,
        filter_func: Callable[[str], Any] = lambda text: text,
        timeout: float = 60.0,
        internal_timeout: float | None = None,
        print_func: PrintFunc | None = None,
        match_func: MatchFunc | None = None,
    ) -> tuple[int, str]:
        """Read until ``match_func(filter_func(output), patterns)`` gives an index.

        ``output`` is everything read by this call (terminal escapes removed,
        line ends normalised); ``match_func`` defaults to :meth:`match_patterns`.

        :return: (the index, the output).
        :raises ExpectTimeoutError: no match within ``timeout``.
        :raises ExpectProcessTerminatedError: the transport ended first.
        """
        wanted = _as_list(patterns)
        match = match_func or self.match_patterns

        def found(text: str) -> tuple[int, str] | None:
            index = match(filter_func(text), wanted) if text else None
            return None if index is None else (index, text)

        return self._read_until(found, timeout, print_func, f"output matching {wanted!r}", wanted)

    def read_until_last_word_matches(
        self,
        patterns: Sequence[str] | str,
        timeout: float = 60.0,
        internal_timeout: float | None = None,
        print_func: PrintFunc | None = None,
    ) -> tuple[int, str]:
        """Read until the last word of the output matches one of ``patterns``."""

        def last_word(text: str) -> str:
            words = text.split()
            return words[-1] if words else ""

        return self.read_until_output_matches(
            patterns, last_word, timeout, internal_timeout, print_func
        )

    def read_up_to_prompt(
        self,
        timeout: float = 60,
        internal_timeout: float | None = None,
        print_func: PrintFunc | None = None,
    ) -> str:
        """Read until the last line is the shell prompt; return the text read.

        :raises ExpectTimeoutError: no prompt within ``timeout``.
        :raises ExpectProcessTerminatedError: the transport ended first.
        """
        return self.read_until_last_line_matches([self.prompt], timeout, print_func=print_func)[1]

    def _read_up_to_prompt_after(
        self, cmd: str, timeout: float, print_func: PrintFunc | None
    ) -> str:
        """Read until the prompt follows what ``cmd`` printed.

        A serial line echoes ``echo $?`` a few characters at a time: ``echo $`` alone
        already looks like a prompt ending in ``$``.  So a first line that is still a
        prefix of the command (its echo, not yet complete) is never taken for the prompt.
        """
        prompt = re.compile(self.prompt)
        sent = cmd.strip()

        def found(text: str) -> tuple[int, str] | None:
            line = last_nonempty_line(text)
            if not line or not prompt.search(line):
                return None
            if sent and "\n" not in text.strip() and sent.startswith(text.strip()):
                return None  # a partial echo of the command
            return 0, text

        return self._read_until(found, timeout, print_func, f"the prompt {self.prompt!r}")[1]

    def is_responsive(self, timeout: float = 5.0) -> bool:
        """True if the shell answers an empty command line with a prompt."""
        try:
            self.read_nonblocking(0.01)
            self.sendline()
            self.read_up_to_prompt(timeout)
        except (ShellTimeoutError, ShellProcessTerminatedError, OSError):
            return False
        return True

    def sync(self, timeout: float = 10.0) -> None:
        """Get in step with the shell: everything it printed so far is read and dropped.

        A prompt printed twice (an extra newline during login, a banner) would
        otherwise end the *next* command early and shift every output by one.
        The marker's output ("..._2_...") differs from its echo ("..._$((1+1))_..."),
        so only the shell's answer matches.
        """
        token = secrets.token_hex(4)
        marker = f"virtlib-sync-2-{token}"
        prompt = re.compile(self.prompt)

        def found(text: str) -> tuple[int, str] | None:
            lines = text.split("\n")
            if marker not in (line.strip() for line in lines):
                return None
            after = text.split(marker, 1)[1]
            return (0, text) if prompt.search(last_nonempty_line(after) or "\x00") else None

        try:
            self.read_nonblocking(0.0)
            self.sendline(f"echo virtlib-sync-$((1+1))-{token}")
            self._read_until(found, timeout, None, "sync with the shell")
        except OSError as exc:
            raise ShellProcessTerminatedError("sync", None, str(exc)) from None

    # --- commands ----------------------------------------------------------------------
    def cmd_output(
        self,
        cmd: str,
        timeout: float = 60,
        internal_timeout: float | None = None,
        print_func: PrintFunc | None = None,
        safe: bool = False,
        strip_console_codes: bool = False,
    ) -> str:
        """Run ``cmd``; return its output without the echoed command and the prompt.

        ``safe``: run it with :meth:`cmd_output_safe` (for serial consoles).
        Terminal escape sequences are always removed, so ``strip_console_codes``
        (aexpect's opt-in for that) changes nothing.

        :raises ShellTimeoutError: no prompt within ``timeout``.
        :raises ShellProcessTerminatedError: the session ended.
        """
        if safe:
            return self.cmd_output_safe(cmd, timeout, strip_console_codes)
        self.read_nonblocking(0.0)
        try:
            self.sendline(cmd)
            text = self._read_up_to_prompt_after(cmd, timeout, print_func)
        except ShellTimeoutError as exc:
            raise ShellTimeoutError(cmd, exc.output) from None
        except ShellProcessTerminatedError as exc:
            raise ShellProcessTerminatedError(cmd, exc.status, exc.output) from None
        except OSError as exc:
            raise ShellProcessTerminatedError(cmd, None, str(exc)) from None
        return strip_echo_and_prompt(text, cmd)

    def cmd_output_safe(
        self, cmd: str, timeout: float = 60, strip_console_codes: bool = False
    ) -> str:
        """Run ``cmd`` on a console where kernel messages may hide the prompt; return its output.

        Whenever half a second passes without a prompt, an empty line is sent
        to make the shell print it again, until ``timeout``.  Afterwards the
        session is synced with the shell, so the prompts those empty lines
        caused cannot end the next command early.

        :raises ShellTimeoutError: no prompt within ``timeout``.
        :raises ShellProcessTerminatedError: the session ended.
        """
        deadline = Deadline(timeout)
        text, nudged = "", False
        try:
            self.read_nonblocking(0.0)
            self.sendline(cmd)
            while True:
                try:
                    text += self.read_up_to_prompt(min(0.5, deadline.remaining()))
                    break
                except ExpectTimeoutError as exc:
                    text += exc.output
                    if deadline.expired():
                        raise ShellTimeoutError(cmd, text) from None
                    self.sendline()
                    nudged = True
            if nudged:
                self.sync(max(deadline.remaining(), 5.0))
        except ShellProcessTerminatedError as exc:
            raise ShellProcessTerminatedError(cmd, exc.status, text + exc.output) from None
        except ShellTimeoutError as exc:
            if exc.cmd == cmd:
                raise
            raise ShellTimeoutError(cmd, text + exc.output) from None
        except OSError as exc:
            raise ShellProcessTerminatedError(cmd, None, str(exc)) from None
        return strip_echo_and_prompt(text, cmd)

    def cmd_status_output(
        self,
        cmd: str,
        timeout: float = 60,
        internal_timeout: float | None = None,
        print_func: PrintFunc | None = None,
        safe: bool = False,
    ) -> tuple[int, str]:
        """Run ``cmd``; return (exit status, output).

        The status is the first line of ``status_test_command``'s output that is
        only a number (so a kernel message on a serial console does not spoil it),
        else a number that ends the output (``status=1``).

        :raises ShellTimeoutError, ShellProcessTerminatedError: running ``cmd`` failed.
        :raises ShellStatusError: the status could not be read.
        """
        output = self.cmd_output(cmd, timeout, internal_timeout, print_func, safe)
        try:
            status_text = self.cmd_output(
                self.status_test_command, min(timeout, 30), internal_timeout, None, safe
            )
        except ShellError:
            raise ShellStatusError(cmd, output) from None
        for line in status_text.splitlines():
            if _STATUS_LINE_RE.match(line.strip()):
                return int(line.strip()), output
        # virtlib's older rule: a number ending the output ("status=1" from a custom command).
        match = re.search(r"(-?\d+)\s*$", status_text.strip())
        if match is None:
            raise ShellStatusError(cmd, output)
        return int(match.group(1)), output

    def cmd_status(
        self,
        cmd: str,
        timeout: float = 60,
        internal_timeout: float | None = None,
        print_func: PrintFunc | None = None,
        safe: bool = False,
    ) -> int:
        """Run ``cmd``; return its exit status."""
        return self.cmd_status_output(cmd, timeout, internal_timeout, print_func, safe)[0]

    @overload
    def cmd(
        self,
        cmd: str,
        timeout: float = ...,
        internal_timeout: float | None = ...,
        print_func: PrintFunc | None = ...,
        ok_status: Sequence[int] | None = ...,
        ignore_all_errors: Literal[False] = ...,
    ) -> str: ...
    @overload
    def cmd(
        self,
        cmd: str,
        timeout: float = ...,
        internal_timeout: float | None = ...,
        print_func: PrintFunc | None = ...,
        ok_status: Sequence[int] | None = ...,
        ignore_all_errors: bool = ...,
    ) -> str | None: ...

    def cmd(
        self,
        cmd: str,
        timeout: float = 60,
        internal_timeout: float | None = None,
        print_func: PrintFunc | None = None,
        ok_status: Sequence[int] | None = None,
        ignore_all_errors: bool = False,
    ) -> str | None:
        """Run ``cmd``; return its output.

        :param ok_status: the statuses that count as success (default ``[0]``).
        :param ignore_all_errors: return None instead of raising any ShellError
            (a failed command, a timeout, a lost session), as aexpect does.
        :raises ShellCmdError: the status is not in ``ok_status``, carrying the
            command, status and output.
        """
        accepted = [0] if ok_status is None else list(ok_status)
        try:
            status, output = self.cmd_status_output(cmd, timeout, internal_timeout, print_func)
            if status not in accepted:
                raise ShellCmdError(cmd, status, output)
        except ShellError:
            if ignore_all_errors:
                return None
            raise
        return output

    # --- aexpect's old names ---------------------------------------------------------
    def get_command_output(
        self,
        cmd: str,
        timeout: float = 60,
        internal_timeout: float | None = None,
        print_func: PrintFunc | None = None,
    ) -> str:
        """cmd_output() under its old name."""
        return self.cmd_output(cmd, timeout, internal_timeout, print_func)

    def get_command_status_output(
        self,
        cmd: str,
        timeout: float = 60,
        internal_timeout: float | None = None,
        print_func: PrintFunc | None = None,
    ) -> tuple[int, str]:
        """cmd_status_output() under its old name."""
        return self.cmd_status_output(cmd, timeout, internal_timeout, print_func)

    def get_command_status(
        self,
        cmd: str,
        timeout: float = 60,
        internal_timeout: float | None = None,
        print_func: PrintFunc | None = None,
    ) -> int:
        """cmd_status() under its old name."""
        return self.cmd_status(cmd, timeout, internal_timeout, print_func)

    @classmethod
    def remove_command_echo(cls, cont: str, cmd: str) -> str:
        """``cont`` without its first line when that line is ``cmd`` (the terminal's echo)."""
        if cont and cont.splitlines()[0] == cmd:
            return "".join(cont.splitlines(True)[1:])
        return cont

    @classmethod
    def remove_last_nonempty_line(cls, cont: str) -> str:
        """``cont`` without its last non-empty line (the prompt) and the empty lines after it."""
        return "".join(cont.rstrip().splitlines(True)[:-1])

    def __enter__(self) -> ShellSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _as_list(patterns: Sequence[str] | str) -> list[str]:
    return [patterns] if isinstance(patterns, str) else list(patterns)


def strip_echo_and_prompt(text: str, cmd: str) -> str:
    """Drop the echoed command line (if the terminal echoed it) and the final prompt line.

    The echo is compared without whitespace: on a terminal of 80 columns (a serial
    console) readline wraps a long command line with a space and a carriage return.
    """
    lines = clean_text(text).split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if lines:
        lines.pop()  # the prompt
    if (lines and cmd.strip() and _squeezed(lines[0]).endswith(_squeezed(cmd))) or (
        lines and not cmd.strip() and not lines[0].strip()
    ):
        lines.pop(0)
    return "\n".join(lines) + ("\n" if lines else "")


def _squeezed(text: str) -> str:
    """``text`` without any whitespace."""
    return "".join(text.split())
