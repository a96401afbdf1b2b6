"""The ``virtlib`` command, run for real against the real daemon (and bad input)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import virtlib
from virtlib.params import Params
from virtlib.secondhost import SecondHost
from virtlib.sessions.login import LOGIN_PROMPT
from virtlib.textutil import random_string

VIRTLIB = str(Path(sys.executable).parent / "virtlib")


class CLI:
    """Runs ``virtlib`` with its own state directory, from a neutral working directory."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = dict(os.environ, XDG_STATE_HOME=str(home / "state"))

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [VIRTLIB, *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.home,
            timeout=300,
            check=False,
        )
        if ok and proc.returncode != 0:
            raise AssertionError(f"virtlib {' '.join(args)} -> {proc.returncode}\n{proc.stderr}")
        return proc

    def json(self, *args: str) -> object:
        return json.loads(self(*args, "--json").stdout)


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    return CLI(tmp_path)


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["frobnicate"], 2, "invalid choice"),
        (["up", "--set", "no-equals-sign"], 2, "key = value"),
        (["up", "--set", "mem=0"], 2, "'mem'"),
        (["up", "-p", "/nonexistent/vm.cfg"], 2, "params file not found"),
        (["info", "no-such-vm"], 3, "no VM named 'no-such-vm'"),
        (["destroy", "no-such-vm"], 3, "no VM named 'no-such-vm'"),
        (["exec", "no-such-vm", "--", "true"], 3, "no VM named"),
        (["image", "create", "x.qcow2", "--size", "10Q"], 2, "invalid image size"),
        (["image", "info", "missing.qcow2"], 1, "not found"),
    ],
)
def test_bad_input_is_one_clear_line(cli: CLI, args: list[str], code: int, words: str) -> None:
    proc = cli(*args, ok=False)
    assert proc.returncode == code
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("virtlib: error: "), proc.stderr
    assert words in lines[0]
    assert "Traceback" not in proc.stderr
    assert not list(cli.home.glob("*.qcow2"))


def console_answers_with_login_prompt(name: str, uri: str) -> bool:
    """Attach to the VM's serial console from here and press Enter: a login prompt (no
    shell left logged in) answers."""
    vm = virtlib.backend_class("libvirt").adopt(name, Params(connect_uri=uri), ".", True)
    try:
        console = vm.serial_console
        assert console is not None
        console.sendline("")
        index, _ = console.read_until_last_line_matches([LOGIN_PROMPT, r"[#$]\s*$"], 20)
        return index == 0
    finally:
        vm.release()


def test_vm_lifecycle_through_the_command(cli: CLI, libvirt_uri: str, tmp_path: Path) -> None:
    name = f"vt-cli-{random_string(5)}"
    up = cli.json("up", name, "--set", "mem=256")
    try:
        assert up["name"] == name and up["state"] == "running"  # type: ignore[index]
        listed = cli.json("list")
        assert any(row["name"] == name for row in listed)  # type: ignore[attr-defined]
        info = cli.json("info", name)
        assert info["forwards"]["nic0:22"].startswith("127.0.0.1:")  # type: ignore[index]
        assert console_answers_with_login_prompt(name, libvirt_uri)  # up logged out of it

        assert cli("exec", name, "--", "echo", "hello from the guest").stdout == (
            "hello from the guest\n"
        )
        assert cli("exec", name, "--", "sh", "-c", "exit 7", ok=False).returncode == 7

        local = tmp_path / "up.txt"
        local.write_text("there and back\n")
        cli("cp", str(local), f"{name}:/root/up.txt")
        back = tmp_path / "back.txt"
        cli("cp", f"{name}:/root/up.txt", str(back))
        assert back.read_text() == "there and back\n"

        cli("send-key", name, "shift")
        cli("reboot", name, "--method", "system_reset")
        state = tmp_path / "saved.state"
        cli("save", name, str(state))
        assert name not in cli("list").stdout  # saved: no domain until restored
        cli("restore", name, str(state))
        assert cli("exec", name, "--", "uptime").returncode == 0
    finally:
        cli("destroy", name, "--force")
    assert name not in cli("list").stdout
    assert not (cli.home / "state" / "virtlib" / "vms" / f"{name}.json").exists()


def test_snapshots_through_the_command(cli: CLI) -> None:
    name = f"vt-cli-{random_string(5)}"
    cli("up", name, "--set", "mem=256")
    try:
        cli("exec", name, "--", "sh", "-c", "echo kept > /tmp/mark")
        taken = cli.json("snapshot", "create", name, "first", "--description", "before rm")
        assert taken["name"] == "first" and taken["memory"] and taken["current"]  # type: ignore[index]
        cli("exec", name, "--", "rm", "/tmp/mark")
        [row] = cli.json("snapshot", "list", name)  # type: ignore[misc]
        assert (row["name"], row["description"], row["current"]) == ("first", "before rm", True)
        assert "first" in cli("snapshot", "list", name).stdout

        cli("snapshot", "revert", name, "first")
        assert cli("exec", name, "--", "cat", "/tmp/mark").stdout == "kept\n"

        missing = cli("snapshot", "revert", name, "nosuch", ok=False)
        assert missing.returncode == 1 and "nosuch" in missing.stderr and name in missing.stderr
        cli("snapshot", "delete", name, "first")
        assert cli.json("snapshot", "list", name) == []
        assert not any(Path(f).exists() for f in taken["files"])  # type: ignore[index]
    finally:
        cli("destroy", name, "--force")


def test_migrate_through_the_command(cli: CLI, second_host: SecondHost) -> None:
    name = f"vt-cli-{random_string(5)}"
    cli("up", name, "--set", "mem=256")
    try:
        moved = cli.json("migrate", name, "--to", second_host.uri)
        assert moved["uri"] == second_host.uri  # type: ignore[index]
        assert cli("exec", name, "--", "echo", "moved").stdout == "moved\n"
        rows = cli.json("list", "--host", second_host.uri)
        assert [r["uri"] for r in rows if r["name"] == name] == [second_host.uri]  # type: ignore[attr-defined]
    finally:
        cli("destroy", name, "--force")


def test_image_commands(cli: CLI, tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    cli("image", "create", str(base), "--size", "64M")
    overlay = tmp_path / "overlay.qcow2"
    cli("image", "create", str(overlay), "--backing", str(base), "--backing-format", "qcow2")
    info = cli.json("image", "info", str(overlay))
    assert info["backing-filename"] == str(base)  # type: ignore[index]
    assert cli.json("image", "check", str(base))["status"] == 0  # type: ignore[index]
    raw = tmp_path / "base.raw"
    cli("image", "convert", str(base), str(raw), "-O", "raw")
    assert cli.json("image", "info", str(raw))["format"] == "raw"  # type: ignore[index]
    cli("image", "resize", str(base), "128M")
    assert cli.json("image", "info", str(base))["virtual-size"] == 128 << 20  # type: ignore[index]


def test_host_check_and_guest_build(cli: CLI) -> None:
    checks = cli.json("host", "check")
    names = {c["name"]: c["status"] for c in checks}  # type: ignore[attr-defined]
    assert names["libvirtd"] == "ok" and names["libvirt"] == "ok"
    assert "accelerator" in names
    assert "kernel:" in cli("guest", "build").stdout


def test_demo_runs_to_its_summary(cli: CLI) -> None:
    proc = cli("demo", ok=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "demo passed" in proc.stdout
    for step in ("serial login", "SSH login", "live migration", "kernel crash detection"):
        assert step in proc.stdout
