"""A fake guest for the session tests: a busybox-like getty/login in front of a tiny shell.

:class:`FakeGuest` is transport-agnostic: bytes typed by the host go in with
:meth:`FakeGuest.feed`, what the guest prints goes out through a ``write``
function, and ``close`` ends the stream (power off, logout).  A worker thread
handles the input, so ``feed`` never blocks, like a real console.

Helpers attach a guest to a ConsoleBuffer (the serial console), to one end of
a socket (for ``fdpexpect``, ``nc``) and to a paramiko channel (SSH).
"""

from __future__ import annotations

import contextlib
import queue
import re
import socket
import threading
from collections.abc import Callable
from typing import Any

HOSTNAME = "virtlib-guest"
USERNAME = "root"
PASSWORD = "s3cret"
LOGIN_PROMPT = f"{HOSTNAME} login: "
PROMPT = f"[root@{HOSTNAME} ~]# "
# The prompt as ShellSession/handle_prompts take it (a regular expression on a cleaned line).
PROMPT_RE = r"\[root@virtlib-guest [^\]]*\][#$]\s*$"

# Escape sequences a real guest prints: colours, bash 5.1's bracketed paste on and off.
GREEN, BLUE, BOLD, RESET = "\x1b[0;32m", "\x1b[01;34m", "\x1b[1m", "\x1b[0m"
PASTE_ON, PASTE_OFF = "\x1b[?2004h", "\x1b[?2004l\r"
COLOURED_PROMPT = f"{PASTE_ON}{BOLD}[root@{HOSTNAME} ~]#{RESET} "

MOTD = f"Last login: Mon Jan  1 00:00:00 on ttyS0\r\n{GREEN}Welcome to virtlib-guest{RESET}\r\n"
OS_RELEASE = 'NAME="Virtlib Linux"\r\nVERSION_ID=1.0\r\nID=virtlib\r\n'
OS_RELEASE_CLEAN = 'NAME="Virtlib Linux"\nVERSION_ID=1.0\nID=virtlib\n'
LS_COLOUR = f"{BLUE}bin{RESET}  {BLUE}etc{RESET}\r\n{GREEN}init{RESET}\r\n"
LS_CLEAN = "bin  etc\ninit\n"

# Canned commands: command line -> (output, exit status).
CANNED: dict[str, tuple[str, int]] = {
    "true": ("", 0),
    "false": ("", 1),
    "uname -r": ("6.6.0-virtlib\r\n", 0),
    "cat /etc/os-release": (OS_RELEASE, 0),
    "ls --color=always /": (LS_COLOUR, 0),
    "grep -q nothing /etc/os-release": ("", 1),
}
EXIT_RE = re.compile(r"^\(exit (\d+)\)$")

# A Debian 12 guest as it really shows itself on ttyS0: agetty's issue and prompt, boot
# chatter (cloud-init) right after the prompt, Debian's MOTD, bash's prompt with
# bracketed paste, and a serial line that echoes a few characters at a time.
DEBIAN_HOSTNAME = "debian-vm"
DEBIAN_ISSUE = f"\r\r\nDebian GNU/Linux 12 {DEBIAN_HOSTNAME} ttyS0\r\n\r\n"
DEBIAN_LOGIN_PROMPT = f"{DEBIAN_HOSTNAME} login: "
DEBIAN_CHATTER = (
    "[   45.947841] cloud-init[390]: Cloud-init v. 22.4.2 running 'modules:final'\r\n"
    "ci-info: no authorized SSH keys fingerprints found for user debian.\r\n"
    "[   47.305642] cloud-init[390]: Cloud-init v. 22.4.2 finished. Up 47.27 seconds\r\n"
)
DEBIAN_MOTD = (
    "Linux debian-vm 6.1.0-57-cloud-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 x86_64\r\n"
    "\r\nThe programs included with the Debian GNU/Linux system are free software;\r\n"
    "the exact distribution terms for each program are described in the\r\n"
    "individual files in /usr/share/doc/*/copyright.\r\n\r\n"
    "Debian GNU/Linux comes with ABSOLUTELY NO WARRANTY, to the extent\r\n"
    "permitted by applicable law.\r\n"
)
DEBIAN_PROMPT = f"{PASTE_ON}root@{DEBIAN_HOSTNAME}:~# "


class FakeGuest:
    """The guest side of a console or a TCP/SSH connection.

    ``state`` is where it starts: ``"login"`` (getty prompt), ``"shell"``
    (already logged in), ``"question"`` (an SSH client asking about the host
    key), ``"silent"`` (prints nothing, ever) or ``"closing"`` (prints a line
    and ends the stream).
    """

    def __init__(
        self,
        write: Callable[[bytes], None],
        close: Callable[[], None] | None = None,
        *,
        state: str = "login",
        password: str = PASSWORD,
        fail_delay: float = 0.05,
        motd: str = MOTD,
        style: str = "busybox",
    ) -> None:
        self._write = write
        self._close = close
        self.state = state
        self.password = password
        self.fail_delay = fail_delay
        self.debian = style == "debian"
        self.motd = DEBIAN_MOTD if self.debian else motd
        self.login_prompt = DEBIAN_LOGIN_PROMPT if self.debian else LOGIN_PROMPT
        self.prompt = DEBIAN_PROMPT if self.debian else COLOURED_PROMPT
        self.status = 0
        self.received = bytearray()  # every byte the host typed
        self.lines: list[str] = []  # every line the guest read, whatever the state
        self.commands: list[str] = []  # the lines the shell ran
        self.attempts: list[tuple[str, str]] = []  # (username, password) tried
        self.answers: list[str] = []  # answers to the host key question
        self.closed = threading.Event()
        self._inbox: queue.Queue[bytes | None] = queue.Queue()
        self._stopping = threading.Event()
        self._username = ""
        self._pending = b""
        self._thread = threading.Thread(target=self._run, name="fake-guest", daemon=True)

    # --- the host's side ---------------------------------------------------------
    def start(self) -> FakeGuest:
        """Print the first prompt (before returning, so tests are deterministic), then run."""
        if self.state == "login" and self.debian:
            self.emit(DEBIAN_ISSUE + self.login_prompt + DEBIAN_CHATTER)
        elif self.state == "login":
            self.emit(f"\r\nVirtlib Linux 1.0\r\n\r\n{LOGIN_PROMPT}")
        elif self.state == "shell":
            self.emit(self.prompt)
        elif self.state == "question":
            self._username = USERNAME
            self.emit(
                f"The authenticity of host '{HOSTNAME} (127.0.0.1)' can't be established.\r\n"
                "ECDSA key fingerprint is SHA256:abcdef.\r\n"
                "Are you sure you want to continue connecting (yes/no/[fingerprint])? "
            )
        elif self.state == "closing":
            self.emit("Connection to virtlib-guest closed by remote host.\r\n")
            self.end()
            return self
        self._thread.start()
        return self

    def feed(self, data: bytes) -> None:
        """What the host typed (the ``send`` function of a BufferSpawn)."""
        self._inbox.put(bytes(data))

    def stop(self) -> None:
        """Stop the worker (teardown); the stream is left as it is."""
        self._stopping.set()
        self._inbox.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    # --- the guest's side --------------------------------------------------------
    def emit(self, text: str) -> None:
        if not self.closed.is_set():
            self._write(text.encode())

    def end(self) -> None:
        """End the stream (the guest powered off or the shell exited)."""
        if not self.closed.is_set():
            self.closed.set()
            if self._close is not None:
                self._close()

    def _run(self) -> None:
        while not self._stopping.is_set() and not self.closed.is_set():
            data = self._inbox.get()
            if data is None:
                return
            self.received += data
            if b"\x03" in data and self.state == "hung":
                data = data.replace(b"\x03", b"")
                self.status = 130
                self.state = "shell"
                self.emit(f"^C\r\n{self.prompt}")
            self._pending += data
            while b"\n" in self._pending and not self.closed.is_set():
                raw, self._pending = self._pending.split(b"\n", 1)
                line = raw.decode(errors="replace").rstrip("\r")
                self.lines.append(line)
                self._line(line)

    def _line(self, line: str) -> None:
        handler = {
            "login": self._login_line,
            "password": self._password_line,
            "question": self._question_line,
            "shell": self._shell_line,
        }.get(self.state)
        if handler is not None:  # "silent" and "hung" ignore lines
            handler(line)

    def _question_line(self, line: str) -> None:
        self.answers.append(line)
        self.emit(f"{line}\r\n")
        if line != "yes":
            self.emit("Host key verification failed.\r\n")
            self.end()
            return
        self.emit(
            f"Warning: Permanently added '{HOSTNAME}' (ECDSA) to the list of known hosts.\r\n"
        )
        self.emit(f"{USERNAME}@{HOSTNAME}'s password: ")
        self.state = "password"

    def _login_line(self, line: str) -> None:
        if not line.strip():
            self.emit(f"\r\n{self.login_prompt}")
            return
        self._username = line.strip()
        self.emit(f"{line}\r\nPassword: ")
        self.state = "password"

    def _password_line(self, line: str) -> None:
        self.attempts.append((self._username, line))
        self.emit("\r\n")
        if self._username == USERNAME and line == self.password:
            self.emit(self.motd + self.prompt)
            self.state = "shell"
            return
        self._stopping.wait(self.fail_delay)  # login makes a wrong password wait
        self.emit(f"Login incorrect\r\n\r\n{self.login_prompt}")
        self.state = "login"

    def _shell_line(self, line: str) -> None:
        cmd = line.strip()
        self.commands.append(cmd)
        self._echo(line)
        if cmd in ("exit", "logout"):
            self.emit("logout\r\n")
            self.end()
            return
        if cmd == "poweroff":
            self.emit("Stopping services...\r\n")
            self.end()
            return
        if cmd.startswith("sleep "):
            self.state = "hung"  # no prompt until Ctrl+C
            return
        if cmd == "chatter":  # cloud-init's banner lands on the console mid-command
            self.emit("<14>Dec  1 20:02:13 cloud-init: ##########################\r\n")
            self._stopping.wait(0.3)
            self.emit("status: done\r\n")
            self.status = 0
            self.emit(self.prompt)
            return
        output, status = self._run_command(cmd)
        self.emit(output)
        self.status = status
        self.emit(self.prompt)

    def _echo(self, line: str) -> None:
        """The tty's echo; readline then leaves bracketed paste.  A serial line (the Debian
        style) echoes a few characters at a time, as a real one does."""
        if not self.debian:
            self.emit(f"{line}\r\n{PASTE_OFF}")
            return
        for start in range(0, len(line), 3):
            self.emit(line[start : start + 3])
            self._stopping.wait(0.02)
        self.emit(f"\r\n{PASTE_OFF}")

    def _run_command(self, cmd: str) -> tuple[str, int]:
        if not cmd:
            return "", self.status
        if cmd in CANNED:
            return CANNED[cmd]
        match = EXIT_RE.match(cmd)
        if match:
            return "", int(match.group(1))
        if cmd == "echo" or cmd.startswith("echo "):
            text = cmd[5:].replace("$?", str(self.status)).strip("'\"")
            text = ARITH_RE.sub(lambda m: str(int(m.group(1)) + int(m.group(2))), text)
            return f"{text}\r\n", 0
        name = cmd.split(maxsplit=1)[0]
        return f"-sh: {name}: not found\r\n", 127


ARITH_RE = re.compile(r"\$\(\((\d+)\+(\d+)\)\)")  # $((a+b)), as virtlib's sync sends


# --- attaching a guest to a transport -------------------------------------------------


def _pump(recv: Callable[[int], bytes], guest: FakeGuest) -> threading.Thread:
    """Feed the guest what arrives from ``recv`` until the stream ends."""

    def run() -> None:
        while True:
            try:
                data = recv(65536)
            except OSError:
                return
            if not data:
                return
            guest.feed(data)

    thread = threading.Thread(target=run, name="fake-guest-pump", daemon=True)
    thread.start()
    return thread


def on_socket(sock: socket.socket, **kwargs: Any) -> FakeGuest:
    """Run a guest on one end of a socket (a socketpair, an accepted TCP connection)."""

    def close() -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    guest = FakeGuest(sock.sendall, close, **kwargs)
    guest.start()
    _pump(sock.recv, guest)
    return guest


def on_channel(channel: Any, **kwargs: Any) -> FakeGuest:
    """Run a guest on a paramiko server channel (its "shell" request)."""

    def close() -> None:
        channel.send_exit_status(0)
        channel.close()

    guest = FakeGuest(channel.sendall, close, **kwargs)
    guest.start()
    _pump(channel.recv, guest)
    return guest
