"""The hypervisor's own limit: the bundled guest on a bare ``qemu-system-x86_64``.

Same kernel, initrd and command line, same memory and vCPUs, TCG, and the
same guest-visible devices as the domain virtlib generates (i440fx, the
serial port, the UHCI controller and balloon libvirt adds, and the virtio-net
user NIC at slot 0x10 with an SSH forward on 127.0.0.1).  The serial port is
QEMU's stdio on a pexpect pty; SSH is paramiko straight to the forward.
Processes get SIGKILL when the bench's main thread dies (PR_SET_PDEATHSIG) and
are killed by :meth:`RawGuest.kill` in the callers' ``finally``.
"""

from __future__ import annotations

import ctypes
import os
import re
import secrets
import signal
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko
import pexpect

from bench import cgroup, cpu
from virtlib.guest import PASSWORD_PROMPT
from virtlib.ports import PortPool

if TYPE_CHECKING:
    from virtlib.guest import GuestImage

QEMU = "qemu-system-x86_64"
PR_SET_PDEATHSIG = 1
POLL = 0.02


class RawError(RuntimeError):
    """A raw QEMU guest did not do what the bench expected."""


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def random_mac() -> str:
    return "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


def qemu_argv(
    guest: GuestImage, name: str, ssh_port: int, mac: str, mem_mib: int, vcpus: int
) -> list[str]:
    """The QEMU command line (without the program) mirroring virtlib's domain."""
    return [
        "-name", name,
        "-machine", "pc,usb=off,dump-guest-core=off",
        "-accel", "tcg",
        "-cpu", "qemu64",
        "-m", str(mem_mib),
        "-smp", str(vcpus),
        "-display", "none",
        "-no-user-config",
        "-nodefaults",
        "-rtc", "base=utc",
        "-kernel", str(guest.kernel),
        "-initrd", str(guest.initrd),
        "-append", guest.kernel_args,
        "-chardev", "stdio,id=charserial0,signal=off",
        "-device", "isa-serial,chardev=charserial0,id=serial0,index=0",
        "-device", "piix3-usb-uhci,id=usb,bus=pci.0,addr=0x1.0x2",
        "-device", "virtio-balloon-pci,id=balloon0,bus=pci.0,addr=0x2",
        "-netdev", f"user,id=vlnet0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
        "-device", f"virtio-net-pci,netdev=vlnet0,mac={mac},addr=0x10",
    ]  # fmt: skip


class RawShell:
    """An interactive SSH shell (paramiko channel) on a raw guest."""

    def __init__(self, client: paramiko.SSHClient, prompt: re.Pattern[str]) -> None:
        self.client = client
        self.prompt = prompt
        self.channel = client.invoke_shell(term="dumb", width=4096, height=1000)

    def read_until_prompt(self, timeout: float = 30) -> str:
        self.channel.settimeout(timeout)
        text = ""
        while True:
            data = self.channel.recv(65536)
            if not data:
                raise RawError("SSH channel closed")
            text += data.decode("utf-8", "replace")
            if self.prompt.search(text.replace("\r", "").rsplit("\n", 1)[-1]):
                return text

    def roundtrip(self, command: str) -> None:
        self.channel.sendall((command + "\n").encode())
        self.read_until_prompt()

    def start_cat(self) -> None:
        """Run ``cat`` in the shell (for echo timings) and drain what it printed."""
        self.channel.sendall(b"cat\n")
        time.sleep(0.2)
        self.channel.settimeout(1.0)
        self.channel.recv(65536)

    def echo(self, token: str) -> None:
        """Send ``token`` to a ``cat`` and wait for the echo and cat's copy."""
        self.channel.sendall((token + "\n").encode())
        text = ""
        while text.count(token) < 2:
            data = self.channel.recv(65536)
            if not data:
                raise RawError("SSH channel closed")
            text += data.decode("utf-8", "replace")

    def close(self) -> None:
        self.channel.close()
        self.client.close()


class RawGuest:
    """One bundled guest on a bare QEMU process."""

    def __init__(
        self, guest: GuestImage, name: str, mem_mib: int, vcpus: int, in_machine_cgroup: bool
    ) -> None:
        self.guest = guest
        self.in_machine_cgroup = in_machine_cgroup
        self.cgroups: list[Path] = []
        self.name = name
        self.mem_mib = mem_mib
        self.vcpus = vcpus
        self.port = PortPool().reserve(name, "nic0/22")
        self.mac = random_mac()
        self.spawn: pexpect.spawn | None = None
        self.started = 0.0
        self.prompt = re.compile(guest.shell_prompt, re.MULTILINE)
        self.password_echoed = False
        self._known_hosts = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".known_hosts")[1])
        self._known_hosts.write_text(guest.known_hosts("127.0.0.1", self.port))

    @property
    def pid(self) -> int:
        if self.spawn is None:
            raise RawError(f"{self.name} is not running")
        return int(self.spawn.pid)

    def argv(self) -> list[str]:
        return qemu_argv(self.guest, self.name, self.port, self.mac, self.mem_mib, self.vcpus)

    def start(self) -> None:
        """Spawn QEMU (call from the main thread: PDEATHSIG follows the forking thread).

        With ``in_machine_cgroup`` the process joins ``/machine/<name>`` before exec,
        as libvirt's QEMUs are in ``/machine/qemu-...`` (see bench.cgroup)."""
        groups = self.cgroups = cgroup.create(self.name) if self.in_machine_cgroup else []

        def before_exec() -> None:
            _die_with_parent()
            cgroup.join(groups)

        self.started = time.perf_counter()
        self.spawn = pexpect.spawn(
            QEMU,
            self.argv(),
            encoding="utf-8",
            codec_errors="replace",
            timeout=60,
            echo=False,
            maxread=65536,
            preexec_fn=before_exec,
        )
        self.spawn.delaybeforesend = None

    def _serial(self) -> pexpect.spawn:
        if self.spawn is None:
            raise RawError(f"{self.name} is not running")
        return self.spawn

    def wait_serial_login(self, timeout: float) -> tuple[float, float]:
        """Log in on the serial console; (seconds to the first output, to the shell prompt)
        since start()."""
        serial = self._serial()
        serial.expect(r"(?=\S)", timeout=timeout)  # zero-width: the login prompt stays
        first_output = time.perf_counter() - self.started
        serial.expect(self.guest.login_prompt, timeout=timeout)
        serial.sendline(self.guest.username)
        serial.expect(PASSWORD_PROMPT, timeout=30)
        serial.sendline(self.guest.password)
        serial.expect(self.prompt, timeout=30)
        self.password_echoed = self.guest.password in (serial.before or "")
        return first_output, time.perf_counter() - self.started

    def serial_roundtrip(self, command: str) -> None:
        serial = self._serial()
        serial.sendline(command)
        serial.expect(self.prompt, timeout=30)

    def serial_start_cat(self) -> None:
        """Run ``cat`` on the console (for echo timings) and drain what it printed."""
        serial = self._serial()
        serial.sendline("cat")
        time.sleep(0.2)
        serial.read_nonblocking(65536, 1.0)

    def serial_echo(self, token: str) -> None:
        """Send ``token`` to a ``cat`` on the console; wait for the echo and cat's copy."""
        serial = self._serial()
        serial.send(token + "\n")
        serial.expect(f"{token}\r*\n{token}\r*\n", timeout=30)

    def ssh_login(self, timeout: float) -> RawShell:
        """Connect until dropbear answers (retrying every 50 ms), log in, wait for the prompt."""
        deadline = time.monotonic() + timeout
        while True:
            client = paramiko.SSHClient()
            client.load_host_keys(str(self._known_hosts))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            try:
                client.connect(
                    "127.0.0.1",
                    port=self.port,
                    username=self.guest.username,
                    password=self.guest.password,
                    timeout=5,
                    banner_timeout=5,
                    auth_timeout=5,
                    look_for_keys=False,
                    allow_agent=False,
                )
                shell = RawShell(client, self.prompt)
                shell.read_until_prompt()
                return shell
            except (paramiko.SSHException, OSError, EOFError):
                client.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def rss_kib(self) -> int | None:
        return cpu.rss_kib(self.pid)

    def cpu_seconds(self) -> float | None:
        return cpu.process_cpu(self.pid)

    def kill(self) -> None:
        """SIGKILL QEMU, reap it, free the port and the known_hosts file."""
        try:
            if self.spawn is not None:
                if self.spawn.isalive():
                    os.kill(self.spawn.pid, signal.SIGKILL)
                self.spawn.close(force=True)
        finally:
            self.spawn = None
            cgroup.remove(self.cgroups)
            PortPool().free(self.name)
            self._known_hosts.unlink(missing_ok=True)
