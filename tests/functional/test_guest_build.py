"""The bundled test guest, built (or reused) and booted with raw QEMU under TCG.

No libvirt here: these tests prove the guest itself (serial login, SSH with a pinned
host key, SFTP, ACPI power button, reboot, poweroff, the fake oops).  Traffic goes only
to 127.0.0.1 (QEMU user networking with ``restrict=on`` and a loopback port forward).
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import re
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pexpect
import pytest

from virtlib.guest import CRASH_REGEX, GuestImage, ensure_guest

pytestmark = pytest.mark.functional

BOOT_TIMEOUT = 90
COMMAND_TIMEOUT = 30


@pytest.fixture(scope="module")
def guest() -> GuestImage:
    """The cached guest (built on first use; the build log goes to pytest's output)."""
    started = time.monotonic()
    image = ensure_guest(log=print)
    print(f"ensure_guest took {time.monotonic() - started:.2f} s")
    return image


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Booted:
    """A QEMU running the guest, driven through its serial console."""

    child: pexpect.spawn
    console: io.StringIO
    ssh_port: int
    monitor: Path
    started: float

    def login(self, image: GuestImage) -> None:
        self.child.expect(image.login_prompt, timeout=BOOT_TIMEOUT)
        self.child.sendline(image.username)
        self.child.expect("Password: ", timeout=COMMAND_TIMEOUT)
        self.child.sendline(image.password)
        self.child.expect(re.compile(image.shell_prompt, re.MULTILINE), timeout=COMMAND_TIMEOUT)

    def run(self, image: GuestImage, command: str) -> str:
        """Run a shell command on the serial console; its output without the echo."""
        self.child.sendline(command)
        self.child.expect(re.compile(image.shell_prompt, re.MULTILINE), timeout=COMMAND_TIMEOUT)
        text = str(self.child.before).replace("\r", "")
        echo, _, output = text.partition("\n")
        assert echo.strip() == command
        return output

    def monitor_command(self, command: str) -> None:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.monitor))
            sock.sendall(command.encode() + b"\n")
            time.sleep(0.2)

    def wait_exit(self, timeout: float = 30) -> int | None:
        self.child.expect(pexpect.EOF, timeout=timeout)
        self.child.close()
        status: int | None = self.child.exitstatus
        return status


@contextlib.contextmanager
def boot(image: GuestImage, *extra: str) -> Iterator[Booted]:
    """Boot the guest with raw qemu-system-x86_64 (TCG); QEMU is always killed after."""
    workdir = Path(tempfile.mkdtemp(prefix="virtlib-guest-test-"))
    port = free_port()
    monitor = workdir / "monitor.sock"
    args = [
        "-accel", "tcg", "-m", "256", "-nographic", "-no-reboot",
        "-kernel", str(image.kernel), "-initrd", str(image.initrd),
        "-append", image.kernel_args,
        "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-pci,netdev=n0",
        "-monitor", f"unix:{monitor},server=on,wait=off",
        *extra,
    ]  # fmt: skip
    console = io.StringIO()
    child = pexpect.spawn(
        "qemu-system-x86_64", args, encoding="utf-8", codec_errors="replace", timeout=30
    )
    child.logfile_read = console
    try:
        yield Booted(child, console, port, monitor, time.monotonic())
    except BaseException:
        print("console output:\n" + console.getvalue()[-4000:])
        raise
    finally:
        if child.isalive():
            child.terminate(force=True)
        child.close()
        shutil.rmtree(workdir, ignore_errors=True)


def pinned_client(image: GuestImage, port: int, keys: list[tuple[str, str]]) -> paramiko.SSHClient:
    """An SSH client that trusts exactly ``keys`` (type, base64) for the guest."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    for keytype, blob in keys:
        key = paramiko.PKey.from_type_string(keytype, base64.b64decode(blob))
        client.get_host_keys().add(f"[127.0.0.1]:{port}", keytype, key)
    return client


def connect(image: GuestImage, client: paramiko.SSHClient, port: int) -> None:
    client.connect(
        "127.0.0.1",
        port=port,
        username=image.username,
        password=image.password,
        look_for_keys=False,
        allow_agent=False,
        timeout=30,
        banner_timeout=30,
        auth_timeout=30,
    )


# --- the build ------------------------------------------------------------------------------


def test_build_is_cached_and_readable_by_qemu(guest: GuestImage) -> None:
    started = time.monotonic()
    again = ensure_guest()
    warm = time.monotonic() - started
    print(f"warm ensure_guest: {warm * 1000:.1f} ms")
    assert again == guest
    assert warm < 1.0
    for path in (guest.kernel, guest.initrd):
        assert path.stat().st_mode & 0o444 == 0o444
        for parent in path.parents:  # libvirt-qemu must reach it
            assert parent.stat().st_mode & stat.S_IXOTH, parent
    assert 1 << 20 < guest.initrd.stat().st_size < 8 << 20
    assert guest.initrd.read_bytes()[:2] == b"\x1f\x8b"  # gzip
    assert guest.username == "root"
    # The serial line is the last console= (the kernel's /dev/console); tty1 gets output too.
    assert guest.kernel_args.split()[:2] == ["console=tty0", "console=ttyS0"]
    assert {k.keytype for k in guest.host_keys} >= {"ssh-ed25519"}
    assert all(f.startswith("SHA256:") for f in guest.ssh_host_key_fingerprints)


# --- booting it --------------------------------------------------------------------------------


def test_serial_login_ssh_sftp_and_poweroff(guest: GuestImage) -> None:
    with boot(guest) as vm:
        vm.child.expect(guest.login_prompt, timeout=BOOT_TIMEOUT)
        print(f"login prompt after {time.monotonic() - vm.started:.2f} s")
        vm.child.sendline(guest.username)
        vm.child.expect("Password: ")
        vm.child.sendline(guest.password)
        vm.child.expect(re.compile(guest.shell_prompt, re.MULTILINE))
        assert "\x1b[6n" not in vm.console.getvalue()  # busybox's cursor query is silenced

        assert vm.run(guest, "echo $((6*7))").strip() == "42"
        long_word = "x" * 300  # no line wrapping on the console
        assert vm.run(guest, f"echo {long_word} | wc -c").strip() == "301"
        assert vm.run(guest, "cd /tmp && pwd").strip() == "/tmp"

        # A client pinned to some other key must refuse the guest (the check is real).
        other = paramiko.ECDSAKey.generate()
        bad = pinned_client(guest, vm.ssh_port, [(other.get_name(), other.get_base64())])
        with pytest.raises(paramiko.BadHostKeyException):
            connect(guest, bad, vm.ssh_port)
        bad.close()

        client = pinned_client(guest, vm.ssh_port, [(k.keytype, k.key) for k in guest.host_keys])
        started = time.monotonic()
        connect(guest, client, vm.ssh_port)
        print(f"ssh login took {time.monotonic() - started:.2f} s")
        try:
            transport = client.get_transport()
            assert transport is not None
            served = transport.get_remote_server_key()
            assert served.get_base64() in {k.key for k in guest.host_keys}
            _, stdout, _ = client.exec_command("uname -n; id -u")
            assert stdout.read().decode().split() == ["virtlib-guest", "0"]
            assert stdout.channel.recv_exit_status() == 0

            payload = os.urandom(200_000)
            sftp = client.open_sftp()
            sftp.putfo(io.BytesIO(payload), "/tmp/payload.bin")
            assert sftp.stat("/tmp/payload.bin").st_size == len(payload)
            back = io.BytesIO()
            sftp.getfo("/tmp/payload.bin", back)
            assert back.getvalue() == payload
            sftp.close()
        finally:
            client.close()

        vm.child.sendline("poweroff")
        assert vm.wait_exit() == 0


def test_oops_helper_prints_a_crash_and_reboot_works(guest: GuestImage) -> None:
    with boot(guest) as vm:
        vm.login(guest)
        vm.child.sendline("virtlib-oops")
        vm.child.expect(r"---\[ end trace [0-9a-f]+ \]---")
        assert re.search(CRASH_REGEX, vm.console.getvalue(), re.DOTALL)
        assert "Call Trace:" in vm.console.getvalue()
        vm.child.expect(re.compile(guest.shell_prompt, re.MULTILINE))
        vm.child.sendline("reboot")  # -no-reboot: QEMU exits when the guest reboots
        assert vm.wait_exit() == 0
        assert "Restarting system" in vm.console.getvalue()


def test_acpi_power_button_powers_off(guest: GuestImage) -> None:
    with boot(guest) as vm:
        vm.child.expect(guest.login_prompt, timeout=BOOT_TIMEOUT)
        vm.monitor_command("system_powerdown")  # what libvirt's shutdown (ACPI mode) does
        assert vm.wait_exit(timeout=30) == 0
        assert "Power down" in vm.console.getvalue()
