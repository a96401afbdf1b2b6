"""Several hosts without a daemon: network slots, the second host's SSH files, migration modes."""

from __future__ import annotations

import ipaddress
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
    vm: Any = SimpleNamespace(spec=SimpleNamespace(migration_bandwidth_mib=0))
    tunnelled = migration._migration_params(vm, "<domain/>", "", "", [])
    assert tunnelled == {libvirt.VIR_MIGRATE_PARAM_DEST_XML: "<domain/>"}
    direct = migration._migration_params(vm, "<domain/>", "tcp://198.18.0.6", "198.18.0.6", [])
    assert direct[libvirt.VIR_MIGRATE_PARAM_URI] == "tcp://198.18.0.6"
    assert direct[libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS] == "198.18.0.6"
