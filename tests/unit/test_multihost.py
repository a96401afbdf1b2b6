"""Several hosts without a daemon: network slots, the second host's SSH files, migration modes."""

from __future__ import annotations

import getpass
import ipaddress
import shlex
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import libvirt
import pytest

from virtlib.backends.libvirt import migration
from virtlib.backends.libvirt.netns import RANGE, SLOTS, NetworkLink
from virtlib.backends.libvirt.sshd import SshFiles
from virtlib.errors import VMMigrateProtoUnsupportedError, VMParamsError
from virtlib.params import Params
from virtlib.sessions import tunnel
from virtlib.transfer.sshproc import Endpoint, ssh_argv

BENCHMARK = ipaddress.ip_network("198.18.0.0/15")
PRIVATE = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]


# --- network slots ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("index", "host", "inner"),
    [(0, "198.18.0.1", "198.18.0.2"), (1, "198.18.0.5", "198.18.0.6"),
     (64, "198.18.1.1", "198.18.1.2"), (SLOTS - 1, "198.19.255.253", "198.19.255.254")],
)  # fmt: skip
def test_a_slot_is_a_slash_30_of_the_benchmarking_range(index: int, host: str, inner: str) -> None:
    link = NetworkLink(index)
    assert (link.host_address, link.address) == (host, inner)
    assert link.network.prefixlen == 30 and link.network.subnet_of(BENCHMARK)  # type: ignore[arg-type]
    assert not any(link.network.overlaps(net) for net in PRIVATE)
    assert RANGE == BENCHMARK


def test_slot_names_fit_the_kernel_limits() -> None:
    last = NetworkLink(SLOTS - 1)
    assert len(last.host_interface) <= 15 and len(last.inner_interface) <= 15  # IFNAMSIZ - 1
    assert last.namespace == f"virtlib-h{SLOTS - 1}"
    assert NetworkLink.from_json(last.to_json()) == last


# --- the second host's SSH files ------------------------------------------------------------
def test_ssh_files_pin_the_host_key_and_allow_only_the_run_key(tmp_path: Path) -> None:
    files = SshFiles(tmp_path, "198.18.0.6")
    files.make()
    assert stat.S_IMODE(files.client_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(files.identity.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.known_hosts.stat().st_mode) == 0o600
    host_key = files.host_key.with_suffix(".pub").read_text().split()[:2]
    assert files.known_hosts.read_text() == f"198.18.0.6 {host_key[0]} {host_key[1]}\n"
    authorized = (files.config_dir / "authorized_keys").read_text()
    assert authorized == files.identity.with_suffix(".pub").read_text()
    config = dict(
        line.split(" ", 1) for line in (files.config_dir / "sshd_config").read_text().splitlines()
    )
    assert config["ListenAddress"] == "198.18.0.6"
    assert config["PasswordAuthentication"] == "no"
    assert config["KbdInteractiveAuthentication"] == "no"
    assert config["PermitRootLogin"] == "prohibit-password"
    assert config["AllowTcpForwarding"] == "local"


def test_the_uri_names_the_key_and_the_known_hosts(tmp_path: Path) -> None:
    files = SshFiles(tmp_path, "198.18.0.6")
    uri = files.uri()
    assert uri.startswith("qemu+libssh2://root@198.18.0.6/system?")
    assert f"keyfile={files.identity}" in uri
    assert f"known_hosts={files.known_hosts}" in uri
    assert "sshauth=privkey" in uri
    assert "no_verify" not in uri


# --- migration modes --------------------------------------------------------------------------
def test_tunnelled_refuses_a_data_channel() -> None:
    with pytest.raises(VMParamsError, match=r"'vm1'.*protocol='unix'.*tunnelled"):
        migration.check_request("vm1", migration.MigrationRequest(protocol="unix", tunnelled=True))
    with pytest.raises(VMParamsError, match=r"'vm1'.*remote_port=4444"):
        migration.check_request("vm1", migration.MigrationRequest(remote_port=4444, tunnelled=True))
    with pytest.raises(VMMigrateProtoUnsupportedError):
        migration.check_request("vm1", migration.MigrationRequest(protocol="exec"))
    migration.check_request("vm1", migration.MigrationRequest(protocol="unix", p2p=True))


@pytest.mark.parametrize(
    ("dest_uri", "dest_host", "address"),
    [
        ("qemu+libssh2://root@198.18.0.6/system?keyfile=/k", "localhost", "198.18.0.6"),
        ("qemu+ssh://hv2.lab/system", "10.1.1.1", "hv2.lab"),
        ("qemu:///system", "198.18.0.5", "198.18.0.5"),
        ("qemu+unix:///system?socket=/s", "localhost", "127.0.0.1"),
    ],
)
def test_the_data_address(dest_uri: str, dest_host: str, address: str) -> None:
    assert migration.data_address(dest_uri, dest_host) == address


class _Guest:
    def __init__(self, persistent: bool) -> None:
        self.persistent = persistent

    def is_persistent(self) -> bool:
        return self.persistent


@pytest.mark.parametrize(
    ("request_args", "wanted", "unwanted"),
    [
        ({}, 0, libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_TUNNELLED),
        ({"p2p": True}, libvirt.VIR_MIGRATE_PEER2PEER, libvirt.VIR_MIGRATE_TUNNELLED),
        ({"tunnelled": True}, libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_TUNNELLED, 0),
    ],
)
def test_flags_of_each_mode(request_args: dict[str, Any], wanted: int, unwanted: int) -> None:
    request = migration.MigrationRequest(**request_args)
    flags = migration._migration_flags(_Guest(False), True, request)  # type: ignore[arg-type]
    assert flags & wanted == wanted
    assert flags & unwanted == 0
    assert flags & libvirt.VIR_MIGRATE_LIVE


def _channel(request: migration.MigrationRequest, dest_uri: str) -> tuple[str, str]:
    with migration._data_channel(request, None, dest_uri) as channel:  # type: ignore[arg-type]
        return channel


def test_data_channel_and_listen_address_of_each_mode() -> None:
    dest = "qemu+libssh2://root@198.18.0.6/system"
    assert _channel(migration.MigrationRequest(), dest) == ("tcp://198.18.0.6", "198.18.0.6")
    assert _channel(migration.MigrationRequest(p2p=True, remote_port=49200), dest) == (
        "tcp://198.18.0.6:49200",
        "198.18.0.6",
    )
    assert _channel(migration.MigrationRequest(tunnelled=True), dest) == ("", "")
    # A name is not an address QEMU may be told to listen on: libvirt's default stays.
    assert _channel(migration.MigrationRequest(), "qemu+ssh://hv2/system") == ("tcp://hv2", "")


def test_params_leave_out_what_a_mode_does_not_use() -> None:
    vm: Any = SimpleNamespace(name="vm1", params=Params(), root_dir="")
    tunnelled = migration._migration_params(vm, "<domain/>", "", "", [])
    assert tunnelled == {libvirt.VIR_MIGRATE_PARAM_DEST_XML: "<domain/>"}
    direct = migration._migration_params(vm, "<domain/>", "tcp://198.18.0.6", "198.18.0.6", [])
    assert direct[libvirt.VIR_MIGRATE_PARAM_URI] == "tcp://198.18.0.6"
    assert direct[libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS] == "198.18.0.6"


# --- reaching guests through their hypervisor host --------------------------------------------
@pytest.mark.parametrize(
    "uri", ["qemu:///system", "qemu+unix:///system?socket=/s", "qemu+ssh://localhost/system"]
)
def test_guests_of_this_machine_are_reached_directly(uri: str) -> None:
    assert tunnel.route(uri, "127.0.0.1", 2222).via is None


def test_a_libssh2_uri_names_the_host_its_key_and_known_hosts() -> None:
    uri = (
        "qemu+libssh2://root@198.18.0.6:2200/system?keyfile=/k/id&known_hosts=/k/kh&sshauth=privkey"
    )
    where = tunnel.route(uri, "127.0.0.1", 2222, "vm1")
    assert (where.host, where.port) == ("127.0.0.1", 2222)
    assert where.via == tunnel.JumpHost(
        uri, "198.18.0.6", 2200, "root", Path("/k/id"), Path("/k/kh"), accept_new=False
    )
    auto = tunnel.JumpHost.of(uri + "&known_hosts_verify=auto")
    assert auto is not None and auto.accept_new


def test_an_ssh_uri_without_a_user_is_the_current_user_on_port_22(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/config
    jump = tunnel.JumpHost.of("qemu+ssh://hv2.lab/system")
    assert jump is not None
    assert (jump.hostname, jump.port, jump.keyfile, jump.known_hosts) == ("hv2.lab", 22, None, None)
    assert jump.username == getpass.getuser()


def test_an_ssh_uri_follows_the_users_ssh_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text(
        "Host hv2\n  HostName 198.18.0.10\n  User lab\n  Port 2022\n"
        "  IdentityFile ~/.ssh/lab_key\n  UserKnownHostsFile ~/.ssh/lab_hosts\n"
    )
    jump = tunnel.JumpHost.of("qemu+ssh://hv2/system")
    assert jump is not None
    assert (jump.hostname, jump.port, jump.username) == ("198.18.0.10", 2022, "lab")
    assert jump.keyfile == tmp_path / ".ssh" / "lab_key"
    assert jump.known_hosts == tmp_path / ".ssh" / "lab_hosts"


def test_addresses_off_the_loopback_are_reached_directly() -> None:
    assert tunnel.route("qemu+tls://hv2/system", "192.0.2.50", 22).via is None


@pytest.mark.parametrize(
    ("uri", "transport"),
    [("qemu+tcp://hv2/system", "tcp"), ("qemu+tls://hv2/system", "tls"),
     ("qemu://hv2/system", "tls")],
)  # fmt: skip
def test_other_remote_transports_say_what_is_needed(uri: str, transport: str) -> None:
    with pytest.raises(tunnel.GuestRouteError) as raised:
        tunnel.route(uri, "127.0.0.1", 2222, "vm1")
    text = str(raised.value)
    assert "'vm1'" in text and uri in text and f"{transport!r} transport" in text
    assert "qemu+ssh://" in text and "nettype = bridge" in text


def test_host_keys_are_always_checked() -> None:
    with pytest.raises(VMParamsError, match="known_hosts_verify='ignore'"):
        tunnel.JumpHost.of("qemu+libssh2://root@hv2/system?known_hosts_verify=ignore", "vm1")


def test_copies_go_through_the_host_with_openssh_and_the_same_checks() -> None:
    jump = tunnel.JumpHost.of(
        "qemu+libssh2://root@198.18.0.6/system?keyfile=/k/id%25x&known_hosts=/k/kh"
    )
    assert jump is not None
    argv = tunnel.proxy_argv(jump, "127.0.0.1", 2222, 10)
    options = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-o")
    assert options["StrictHostKeyChecking"] == "yes"
    assert options["UserKnownHostsFile"] == "/k/kh"
    assert options["GlobalKnownHostsFile"] == "/dev/null"
    assert options["BatchMode"] == "yes"  # never a password prompt, never the copy's askpass
    assert argv[argv.index("-i") + 1] == "/k/id%x"
    assert argv[-4:] == ["-W", "127.0.0.1:2222", "--", "198.18.0.6"]

    endpoint = Endpoint("127.0.0.1", 2222, "root", "pw", Path("/vm/kh"), "strict", 10, tuple(argv))
    outer = ssh_argv(endpoint)
    proxy = next(a for a in outer if a.startswith("ProxyCommand="))
    assert shlex.split(proxy.removeprefix("ProxyCommand=").replace("%%", "%")) == argv
    assert "%%x" in proxy  # ssh expands %-tokens in a ProxyCommand: the % is escaped
    assert "pw" not in " ".join(outer)
