"""VMSpec.from_params: defaults, per-object params, and bad values failing early by key."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtlib import Params, VMParamsError, VMSpec
from virtlib.guest import recipe


def spec(root_dir: str | Path = "/root-dir", **params: str) -> VMSpec:
    return VMSpec.from_params("vm1", Params(params), root_dir)


# --- defaults ---------------------------------------------------------------------------------


def test_defaults() -> None:
    s = spec()
    assert s.name == "vm1"
    assert s.vm_type == "libvirt"
    assert s.connect_uri == "qemu:///system"
    assert s.mem_mib == 512
    assert s.vcpus == 1
    assert s.accel == "auto"
    assert s.uuid == ""
    assert s.hugepages is False
    assert s.kernel is None
    assert s.disks == ()
    assert s.cdroms == ()


def test_bundled_guest_when_no_boot_media() -> None:
    s = spec()
    assert s.guest == "bundled"
    assert s.login.username == recipe.USERNAME
    assert s.login.password == recipe.DEFAULT_PASSWORD
    assert s.login.shell_prompt == recipe.SHELL_PROMPT
    assert [n.name for n in s.nics] == ["nic1"]
    nic = s.nics[0]
    assert nic.index == 0
    assert nic.nettype == "user"
    assert s.login.shell_port in nic.guest_ports


def test_bundled_defaults_give_way_to_user_params() -> None:
    s = spec(username="admin", password="secret", nics="a b", shell_prompt="\\$ ")
    assert s.guest == "bundled"
    assert (s.login.username, s.login.password, s.login.shell_prompt) == (
        "admin",
        "secret",
        "\\$ ",
    )
    assert [n.name for n in s.nics] == ["a", "b"]


@pytest.mark.parametrize(
    "media",
    [{"kernel": "vmlinuz"}, {"images": "disk1"}, {"cdroms": "cd1", "cdrom_cd1": "x.iso"}],
)
def test_no_bundled_guest_when_boot_media_given(media: dict[str, str]) -> None:
    s = spec(**media)
    assert s.guest == "none"
    assert s.nics == ()
    assert s.login.username == "root"
    assert s.login.password == ""


def test_bad_guest_value() -> None:
    with pytest.raises(VMParamsError, match="'guest'"):
        spec(guest="windows")


def test_given_values() -> None:
    s = spec(
        vm_type="libvirt",
        connect_uri="test:///default",
        mem="2048",
        smp="0x4",
        accel="tcg",
        uuid="01234567-89AB-cdef-0123-456789abcdef",
        hugepage="yes",
        kernel="boot/vmlinuz",
        initrd="/abs/initrd.img",
    )
    assert s.connect_uri == "test:///default"
    assert (s.mem_mib, s.vcpus, s.accel, s.hugepages) == (2048, 4, "tcg", True)
    assert s.uuid == "01234567-89ab-cdef-0123-456789abcdef"
    assert s.kernel == Path("/root-dir/boot/vmlinuz")
    assert s.initrd == Path("/abs/initrd.img")
    assert spec(uuid="random").uuid == "random"


# --- per-object params ---------------------------------------------------------------------------


def test_images_use_their_object_params(tmp_path: Path) -> None:
    s = spec(
        tmp_path,
        images="disk1 disk2",
        image_name_disk1="first",
        image_name_disk2="/abs/second",
        image_format_disk2="raw",
        image_size="4G",
        image_size_disk1="1G",
        drive_format_disk2="ide",
        image_readonly_disk2="yes",
        image_cluster_size_disk1="4096",
    )
    d1, d2 = s.disks
    assert (d1.name, d2.name) == ("disk1", "disk2")
    assert d1.path == tmp_path / "first.qcow2"
    assert (d1.format, d1.size, d1.bus, d1.readonly, d1.cluster_size) == (
        "qcow2",
        "1G",
        "virtio",
        False,
        "4096",
    )
    assert d2.path == Path("/abs/second.raw")
    assert (d2.format, d2.size, d2.bus, d2.readonly) == ("raw", "4G", "ide", True)


def test_raw_device_image_is_taken_as_is() -> None:
    s = spec(images="disk1", image_name_disk1="/dev/sdz", image_raw_device_disk1="yes")
    assert s.disks[0].path == Path("/dev/sdz")
    assert s.disks[0].raw_device is True
    assert s.disks[0].format == "raw"


def test_cdroms_use_their_object_params(tmp_path: Path) -> None:
    s = spec(
        tmp_path,
        cdroms="cd1 cd2",
        cdrom_cd1="isos/a.iso",
        md5sum_cd1="ABCDEF",
        cd_format_cd2="ide",
    )
    cd1, cd2 = s.cdroms
    assert cd1.path == tmp_path / "isos/a.iso"
    assert cd1.md5sum == "abcdef"
    assert cd2.path is None
    assert cd2.bus == "ide"


def test_nics_use_their_object_params() -> None:
    s = spec(
        kernel="k",
        nics="n0 n1 n2",
        nic_mac_n0="52:54:00:AA:BB:CC",
        nettype_n1="network",
        nettype_n2="bridge",
        netdst_n2="br0",
        nic_model_n2="e1000",
    )
    n0, n1, n2 = s.nics
    assert [n.index for n in s.nics] == [0, 1, 2]
    assert n0.mac == "52:54:00:aa:bb:cc"
    assert (n1.nettype, n1.netdst) == ("network", "default")
    assert (n2.nettype, n2.netdst, n2.model) == ("bridge", "br0", "e1000")
    assert s.nic(1) is n1
    assert s.nic(3) is None
    assert s.nic(-1) is None


# --- forwarded guest ports ------------------------------------------------------------------------


def test_redirs_forward_guest_ports_on_user_nics() -> None:
    s = spec(
        kernel="k",
        nics="n0 n1 n2",
        nettype_n2="network",
        redirs="web dns",
        guest_port_web="8080",
        guest_port_dns="53",
        shell_port="2222",
        file_transfer_port="2223",
    )
    n0, n1, n2 = s.nics
    # nic 0 also forwards the shell and file-transfer ports
    assert set(n0.guest_ports) == {8080, 53, 2222, 2223}
    assert set(n1.guest_ports) == {8080, 53}
    # a NIC that is not user networking forwards nothing
    assert n2.guest_ports == ()
    assert s.login.shell_port == 2222
    assert s.login.file_transfer_port == 2223


def test_guest_ports_have_no_duplicates() -> None:
    s = spec(kernel="k", nics="n0", redirs="ssh", guest_port_ssh="22")
    assert sorted(s.nics[0].guest_ports) == [22]


def test_per_nic_redirs() -> None:
    s = spec(kernel="k", nics="n0 n1", redirs_n1="web", guest_port_web="80")
    assert 80 not in s.nics[0].guest_ports
    assert s.nics[1].guest_ports == (80,)


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"redirs": "web"}, "guest_port_web"),
        ({"redirs": "web", "guest_port_web": "70000"}, "guest_port_web"),
        ({"redirs": "web", "guest_port_web": "http"}, "guest_port_web"),
        ({"shell_port": "0"}, "shell_port"),
        ({"file_transfer_port": "65536"}, "file_transfer_port"),
    ],
)
def test_bad_ports(params: dict[str, str], key: str) -> None:
    with pytest.raises(VMParamsError, match=f"'{key}'"):
        spec(**params)


# --- bad values name the key -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"mem": "0"}, "mem"),
        ({"mem": "-512"}, "mem"),
        ({"mem": "lots"}, "mem"),
        ({"smp": "abc"}, "smp"),
        ({"smp": "0"}, "smp"),
        ({"nic_mac": "52:54:00:12:34"}, "nic_mac"),
        ({"nic_mac": "52-54-00-12-34-56"}, "nic_mac"),
        ({"nic_mac": "52:54:00:12:34:zz"}, "nic_mac"),
        ({"nettype": "bogus"}, "nettype"),
        ({"nettype": "bridge"}, "netdst"),
        ({"shell_client": "rsh"}, "shell_client"),
        ({"file_transfer_client": "rcp"}, "file_transfer_client"),
        ({"uuid": "not-a-uuid"}, "uuid"),
        ({"uuid": "0123456789abcdef0123456789abcdef"}, "uuid"),
        ({"accel": "hax"}, "accel"),
        ({"hugepage": "maybe"}, "hugepage"),
        ({"cpu_mode": "fast"}, "cpu_mode"),
        ({"on_crash": "explode"}, "on_crash"),
        ({"images": "d", "image_format": "bogus"}, "image_format"),
        ({"images": "d", "drive_format_d": "floppy"}, "drive_format"),
        ({"shutdown_timeout": "soon"}, "shutdown_timeout"),
        ({"ssh_host_key_policy": "trust-all"}, "ssh_host_key_policy"),
    ],
)
def test_bad_values_raise_naming_the_key(params: dict[str, str], key: str) -> None:
    with pytest.raises(VMParamsError, match=f"'{key}'"):
        spec(**params)


@pytest.mark.parametrize("name", ["", "a/b", " vm", "vm "])
def test_bad_vm_name(name: str) -> None:
    with pytest.raises(VMParamsError):
        VMSpec.from_params(name, Params())


# --- shell_linesep ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (r"\n", "\n"),
        (r"\r\n", "\r\n"),
        (r"\t", "\t"),
        (r"\x0d\x0a", "\r\n"),
        ("\\\\", "\\"),
        ("plain", "plain"),
    ],
)
def test_shell_linesep_is_unescaped(raw: str, expected: str) -> None:
    assert spec(shell_linesep=raw).login.linesep == expected


def test_shell_linesep_default_is_newline() -> None:
    assert spec().login.linesep == "\n"


def test_shell_linesep_unknown_escape_is_an_error() -> None:
    with pytest.raises(VMParamsError):
        spec(shell_linesep=r"\q")


def test_shell_linesep_unknown_escape_names_the_key() -> None:
    with pytest.raises(VMParamsError, match="'shell_linesep'"):
        spec(shell_linesep=r"\q")


@pytest.mark.parametrize(
    "code",
    [
        "__import__('os').system('touch PWNED')",
        "' + __import__('os').getcwd() + '",
        "\\n' + str(1+1) + '",
    ],
)
def test_shell_linesep_is_never_evaluated(
    code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seed ran ``eval("'%s'" % shell_linesep)``; virtlib must keep such text literal."""
    monkeypatch.chdir(tmp_path)
    linesep = spec(shell_linesep=code).login.linesep
    assert linesep == code.replace("\\n", "\n")
    assert not (tmp_path / "PWNED").exists()
