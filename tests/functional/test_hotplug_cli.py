"""``virtlib disk|nic|set`` run for real: each invocation adopts the VM ``up`` left running,
changes it, and the guest (through ``virtlib exec``) sees the change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from virtlib.textutil import random_string
from virtlib.waiting import wait_for

VIRTLIB = str(Path(sys.executable).parent / "virtlib")


class CLI:
    """Runs ``virtlib`` with its own state directory."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = dict(os.environ, XDG_STATE_HOME=str(home / "state"))

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [VIRTLIB, *args], capture_output=True, text=True, env=self.env, cwd=self.home,
            timeout=300, check=False,
        )  # fmt: skip
        if ok and proc.returncode != 0:
            raise AssertionError(f"virtlib {' '.join(args)} -> {proc.returncode}\n{proc.stderr}")
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)

    def guest(self, name: str, command: str) -> str:
        return self("exec", name, "--", "sh", "-c", command).stdout


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    return CLI(tmp_path)


def test_device_commands(cli: CLI) -> None:
    prefix = os.environ.get("VIRTLIB_TEST_NAME_PREFIX", "vt-")
    name = f"{prefix}cli-hp-{random_string(5)}"
    cli("up", name, "--set", "mem=256", "--set", "vcpus_max=2")
    try:
        disk = cli.json("disk", "attach", name, "--size", "32M")
        assert disk["vm"] == name and disk["by_id"].endswith(disk["serial"])
        sectors = cli.guest(name, f"cat /sys/block/{disk['target']}/size")
        assert int(sectors) * 512 == 32 << 20
        assert [d["name"] for d in cli.json("disk", "list", name)] == [disk["name"]]
        assert cli.json("disk", "detach", name, disk["name"])["detached"] is True
        assert disk["target"] not in cli.guest(name, "ls /sys/block").split()
        assert not Path(disk["path"]).exists()

        nic = cli.json("nic", "attach", name, "--redir", "22")
        assert nic["index"] == 1 and "22" in nic["forwards"]
        show = f"ip -4 addr show $(grep -l {nic['mac']} /sys/class/net/*/address | cut -d/ -f5)"
        assert wait_for(lambda: "inet 10.0.3." in cli.guest(name, show), 30, 0.5, 2)
        assert len(cli.json("nic", "list", name)) == 2
        cli("nic", "detach", name, nic["name"])
        assert nic["mac"] not in cli.guest(name, "cat /sys/class/net/*/address")

        assert cli.json("set", "vcpus", name, "2")["vcpus"] == 2
        online = "cat /sys/devices/system/cpu/online"
        assert wait_for(lambda: cli.guest(name, online).strip() == "0-1", 20, 0.5, 2)
        assert cli.json("set", "memory", name, "200")["memory_mib"] == 200

        for args, words in (
            (["set", "vcpus", name, "5"], "count 5"),
            (["disk", "attach", name, "--size", "10Q"], "size '10Q'"),
            (["disk", "detach", name, "vdz"], "'vdz'"),
            (["nic", "attach", name, "--nettype", "pigeon"], "nettype 'pigeon'"),
        ):
            proc = cli(*args, ok=False)
            assert proc.returncode == 2, proc.stderr
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and name in lines[0] and words in lines[0], proc.stderr
        assert cli.json("disk", "list", name) == []
    finally:
        cli("destroy", name, "--force")
