"""VMs on this host and on a host with its own address: logins, copies and the command line
reach each guest (the remote one's forwarded ports through SSH to its host)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from functional_support import VMFactory, domain_names

import virtlib
from virtlib.secondhost import SecondHost
from virtlib.sessions import tunnel
from virtlib.textutil import random_string

VIRTLIB = str(Path(sys.executable).parent / "virtlib")


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``virtlib ...`` with its own state directory, from a neutral working directory."""
    proc = subprocess.run(
        [VIRTLIB, *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, XDG_STATE_HOME=str(home / "state")),
        cwd=home,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"virtlib {' '.join(args)} -> {proc.returncode}\n{proc.stderr}"
    return proc


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()  # noqa: S324 - a checksum


def test_guests_on_both_hosts_log_in_copy_and_answer_the_cli(
    vm_factory: VMFactory, networked_host: SecondHost, libvirt_uri: str, tmp_path: Path
) -> None:
    here = vm_factory("here", connect_uri=libvirt_uri)
    there = vm_factory("there", connect_uri=networked_host.uri)
    payload = tmp_path / "payload"
    payload.write_bytes(os.urandom(1 << 20))
    for vm, uri, other in ((here, libvirt_uri, networked_host.uri),
                           (there, networked_host.uri, libvirt_uri)):  # fmt: skip
        assert vm.uri == uri and vm.name in domain_names(uri)
        assert vm.name not in domain_names(other)
        session = vm.wait_for_login(timeout=120)
        try:
            session.cmd(f"echo {vm.name} > /tmp/who")
            vm.copy_files_to(str(payload), "/tmp/payload")
            assert session.cmd("md5sum /tmp/payload").split()[0] == md5(payload)
        finally:
            session.close()
        back = tmp_path / f"back-{vm.name}"
        vm.copy_files_from("/tmp/who", str(back))
        assert back.read_text().strip() == vm.name

    # The remote guest's forward is on that host's loopback, not on this one's.
    route = there.guest_route(22)
    assert route.host == "127.0.0.1" and route.via is not None
    assert route.via.hostname == networked_host.address
    assert here.guest_route(22).via is None

    # The command line: one list over both hosts; exec and cp reach the remote guest.
    listed = json.loads(
        cli(tmp_path, "list", "--uri", libvirt_uri, "--uri", networked_host.uri, "--json").stdout
    )
    rows = {row["name"]: row for row in listed}
    assert rows[here.name]["uri"] == libvirt_uri
    assert rows[there.name]["uri"] == networked_host.uri
    assert rows[there.name]["ssh"].endswith(f" on {networked_host.address}")
    remote = ("--uri", networked_host.uri)
    ran = cli(tmp_path, "exec", *remote, there.name, "--", "cat", "/tmp/who")
    assert ran.stdout.strip() == there.name
    assert cli(tmp_path, "ssh", *remote, there.name, "--", "hostname").stdout.strip() == (
        "virtlib-guest"
    )
    cli(tmp_path, "cp", *remote, str(payload), f"{there.name}:/tmp/by-cli")
    cli(tmp_path, "cp", *remote, f"{there.name}:/tmp/by-cli", str(tmp_path / "by-cli"))
    assert md5(tmp_path / "by-cli") == md5(payload)


def test_a_hypervisor_host_with_another_key_is_refused(
    networked_host: SecondHost, tmp_path: Path
) -> None:
    """The SSH hop to a guest checks the host's key like libvirt does: strictly."""
    ssh = networked_host.ssh
    assert ssh is not None
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, key = other.with_suffix(".pub").read_text().split()[:2]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{networked_host.address} {kind} {key}\n")
    uri = networked_host.uri.replace(str(ssh.known_hosts), str(wrong))
    jump = tunnel.JumpHost.of(uri)
    assert jump is not None
    try:
        with pytest.raises(virtlib.LoginHostKeyError, match="host key changed"):
            tunnel.open_channel(jump, "127.0.0.1", 22, timeout=10)
        wrong.write_text("")
        with pytest.raises(virtlib.LoginHostKeyError, match="not in"):
            tunnel.open_channel(jump, "127.0.0.1", 22, timeout=10)
    finally:
        tunnel.forget(uri)


def test_the_cli_migrates_tunnelled_there_and_back(
    networked_host: SecondHost, libvirt_uri: str, tmp_path: Path
) -> None:
    name = f"hm-cli-{random_string(5)}"
    cli(tmp_path, "up", name, "--set", "mem=256")
    try:
        there = ["--to", networked_host.uri, "--tunnelled", "--json"]
        moved = json.loads(cli(tmp_path, "migrate", name, *there).stdout)
        assert moved["uri"] == networked_host.uri
        assert cli(tmp_path, "exec", name, "--", "echo", "there").stdout == "there\n"
        back = ["--to", libvirt_uri, "--dest-host", networked_host.peer_address or "", "--json"]
        assert json.loads(cli(tmp_path, "migrate", name, *back).stdout)["uri"] == libvirt_uri
        assert cli(tmp_path, "exec", name, "--", "echo", "back").stdout == "back\n"
    finally:
        cli(tmp_path, "destroy", name, "--force")
    assert name not in domain_names(libvirt_uri) | domain_names(networked_host.uri)
