"""A second libvirt host with a network of its own: made, reached over SSH, torn down whole."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import tempfile
from pathlib import Path

import libvirt
import pytest

from virtlib.backends.libvirt.netns import NetworkLink
from virtlib.backends.libvirt.sshd import SshFiles
from virtlib.secondhost import SecondHost, SecondHostError

BENCHMARK_RANGE = ipaddress.ip_network("198.18.0.0/15")


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def veths() -> set[str]:
    out = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True, check=True)
    return {line.split()[0].split("@")[0] for line in out.stdout.splitlines() if "vlh" in line}


def processes_of(state: Path) -> list[str]:
    """Command lines that mention the host's state directory (its daemons do)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(state) in cmdline:
            found.append(cmdline)
    return found


def ssh_argv(host: SecondHost, known_hosts: Path, *command: str) -> list[str]:
    """OpenSSH with the run's key and strict checking against ``known_hosts`` only."""
    ssh = host.ssh
    assert ssh is not None and host.address is not None
    return ["ssh", "-F", "/dev/null", "-i", str(ssh.identity), "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null", f"root@{host.address}", *command]  # fmt: skip


def assert_gone(link: NetworkLink, state: Path) -> None:
    """Nothing of a stopped host is left: namespace, pair, processes, files."""
    assert link.namespace not in namespaces()
    assert not {link.host_interface, link.inner_interface} & veths()
    assert not processes_of(state)
    assert not state.exists()


def test_a_host_in_its_own_network_namespace_reached_over_ssh(tmp_path: Path) -> None:
    before_ns = namespaces()
    host = SecondHost.start(network=True)
    state, link = host.state, host.network
    try:
        assert host.address is not None and host.peer_address is not None and link
        assert ipaddress.ip_address(host.address) in BENCHMARK_RANGE
        assert ipaddress.ip_address(host.peer_address) in BENCHMARK_RANGE
        assert host.uri.startswith(f"qemu+libssh2://root@{host.address}/system?")
        assert link.namespace in namespaces() - before_ns
        assert link.host_interface in veths()

        # libvirt over SSH, the host key checked against the run's known_hosts.
        conn = libvirt.open(host.uri)
        try:
            assert conn.getType() == "QEMU" and conn.listAllDomains() == []
        finally:
            conn.close()

        # Inside: only loopback and this end of the pair; sshd listens on that address only.
        ssh = host.ssh
        assert ssh is not None
        inside = subprocess.run(
            ssh_argv(host, ssh.known_hosts, "ip", "-4", "-o", "addr"),
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        addresses = {line.split()[3] for line in inside.splitlines()}
        assert addresses == {"127.0.0.1/8", f"{host.address}/30"}

        # Strict: a known_hosts with another key for the address is refused.
        other = tmp_path / "other"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                       check=True)  # fmt: skip
        wrong = tmp_path / "known_hosts"
        kind, key = other.with_suffix(".pub").read_text().split()[:2]
        wrong.write_text(f"{host.address} {kind} {key}\n")
        refused = subprocess.run(ssh_argv(host, wrong, "true"), capture_output=True,
                                 text=True, timeout=30, check=False)  # fmt: skip
        assert refused.returncode == 255 and "host key" in refused.stderr.lower()
        wrong_uri = host.uri.replace(str(ssh.known_hosts), str(wrong))
        with pytest.raises(libvirt.libvirtError, match=r"(?i)host key"):
            libvirt.open(wrong_uri)
    finally:
        host.stop()
    assert_gone(link, state)


def test_a_start_that_fails_half_way_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """sshd refuses its configuration after libvirtd and virtlogd already run."""
    monkeypatch.setattr(SshFiles, "sshd_config", lambda self: "NoSuchSshdOption yes\n")
    made: list[NetworkLink] = []
    create = NetworkLink.create

    def recorded() -> NetworkLink:
        made.append(create())
        return made[-1]

    monkeypatch.setattr(NetworkLink, "create", recorded)
    state = Path(tempfile.mkdtemp(prefix="virtlib-test-host-", dir="/var/tmp"))
    with pytest.raises(SecondHostError, match="sshd refuses its configuration"):
        SecondHost.start(state, network=True)
    [link] = made
    assert_gone(link, state)


def test_stop_from_another_process_finds_the_network() -> None:
    """``python -m virtlib.secondhost start --network`` / ``stop DIR``, as from a shell."""
    state = Path(tempfile.mkdtemp(prefix="virtlib-test-host-", dir="/var/tmp"))
    module = [sys.executable, "-m", "virtlib.secondhost"]
    link = None
    started = subprocess.run([*module, "start", "--network", str(state)], capture_output=True,
                             text=True, timeout=120, check=False, cwd="/")  # fmt: skip
    try:
        assert started.returncode == 0, started.stderr
        uri = started.stdout.strip()
        assert uri.startswith("qemu+libssh2://root@198.1")
        link = SecondHost.load(state).network
        assert link is not None and link.namespace in namespaces()
        conn = libvirt.open(uri)
        conn.close()
    finally:
        stopped = subprocess.run([*module, "stop", str(state)], capture_output=True, text=True,
                                 timeout=120, check=False, cwd="/")  # fmt: skip
    assert stopped.returncode == 0, stopped.stderr
    assert link is not None
    assert_gone(link, state)
