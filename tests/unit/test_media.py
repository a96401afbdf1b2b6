"""Per-VM media without a daemon: params, cloud-init seeds, overlays, and their domain XML."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from virtlib import Params, VMImageMissingError, VMParamsError, VMSpec, cloudinit, media
from virtlib.accel import AccelChoice
from virtlib.backends.libvirt import designer, domxml
from virtlib.state import Allocations

TCG = designer.HostFacts("qemu", AccelChoice("tcg", "test"))
needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="no qemu-img")
needs_iso_tool = pytest.mark.skipif(
    not any(shutil.which(t) for t in cloudinit.ISO_TOOLS), reason="no genisoimage"
)


def spec_of(root: Path, name: str = "vm1", **params: Any) -> VMSpec:
    values: dict[str, Any] = {"guest": "none"}
    values.update(params)
    return VMSpec.from_params(name, Params(values), root)


def base_image(root: Path) -> Path:
    path = root / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    path.chmod(0o444)
    return path


def cloud_image_params(**extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "images": "disk1",
        "image_name": "base",
        "image_snapshot": "yes",
        "cloudinit": "yes",
        "password": "pw",
        "nics": "nic1",
    }
    params.update(extra)
    return params


def allocations(spec: VMSpec) -> Allocations:
    macs, ports = {}, {}
    for nic in spec.nics:
        macs[nic.index] = f"52:54:00:00:02:{nic.index:02x}"
        for port in nic.guest_ports:
            ports[(nic.index, port)] = 31000 + port
    return Allocations.of(macs, ports)


# --- params ------------------------------------------------------------------------------


def test_cloudinit_params_are_parsed(tmp_path: Path) -> None:
    spec = spec_of(
        tmp_path,
        name="web_1.example",
        cloudinit="yes",
        password="pw",
        cloudinit_ssh_authorized_keys="keys.pub",
        cloudinit_user_data="/abs/user-data",
    )
    assert spec.cloudinit.enabled
    assert spec.cloudinit.hostname == "web-1-example"  # made from the VM name
    assert spec.cloudinit.authorized_keys_file == tmp_path / "keys.pub"
    assert spec.cloudinit.user_data == Path("/abs/user-data")
    assert spec.guest_agent  # on unless turned off
    assert not spec_of(tmp_path, guest_agent="no").guest_agent


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"cloudinit": "yes"}, "needs a 'password'"),
        ({"cloudinit_user_data": "u"}, "'cloudinit' is not 'yes'"),
        ({"cloudinit": "yes", "password": "p", "cloudinit_hostname": "a_b"}, "host name"),
        ({"nics": "a", "nic_pci_slot": "40"}, "PCI slot"),
        ({"nics": "a", "nic_pci_slot": "ens3"}, "PCI slot"),
        ({"images": "d", "image_snapshot": "yes", "image_raw_device": "yes"}, "raw device"),
    ],
)
def test_bad_media_params_name_the_vm_or_key(
    tmp_path: Path, params: dict[str, str], message: str
) -> None:
    with pytest.raises(VMParamsError, match=message):
        spec_of(tmp_path, **params)


# --- cloud-init seeds ----------------------------------------------------------------------


def test_user_data_for_root_allows_its_password_over_ssh() -> None:
    text = cloudinit.user_data("root", "$6$salt$hash", ["ssh-ed25519 AAAA k"])
    assert text.startswith("#cloud-config\n")
    config = json.loads(text.split("\n", 1)[1])  # JSON is YAML
    assert config["users"] == [
        {
            "name": "root",
            "lock_passwd": False,
            "hashed_passwd": "$6$salt$hash",
            "ssh_authorized_keys": ["ssh-ed25519 AAAA k"],
        }
    ]
    assert config["ssh_pwauth"] is True and config["disable_root"] is False
    assert "PermitRootLogin yes" in config["write_files"][0]["content"]


def test_user_data_for_a_user_with_keys_only() -> None:
    config = json.loads(cloudinit.user_data("qe", "", ["ssh-rsa AAAA"]).split("\n", 1)[1])
    (user,) = config["users"]
    assert user["lock_passwd"] is True and "hashed_passwd" not in user
    assert user["sudo"] == "ALL=(ALL) NOPASSWD:ALL"
    assert config["ssh_pwauth"] is False and "write_files" not in config


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl")
def test_seed_hashes_the_password_and_reads_keys(tmp_path: Path) -> None:
    (tmp_path / "keys.pub").write_text("# mine\nssh-ed25519 AAAAC3 me@host\n\n")
    spec = spec_of(
        tmp_path,
        cloudinit="yes",
        password="not in clear",
        cloudinit_ssh_authorized_keys="keys.pub",
        cloudinit_hostname="guest7",
    )
    seed = cloudinit.build_seed(spec, "inst-1")
    assert "not in clear" not in seed.user_data
    config = json.loads(seed.user_data.split("\n", 1)[1])
    assert config["users"][0]["hashed_passwd"].startswith("$6$")
    assert config["users"][0]["ssh_authorized_keys"] == ["ssh-ed25519 AAAAC3 me@host"]
    assert json.loads(seed.meta_data) == {
        "instance-id": "virtlib-inst-1",
        "local-hostname": "guest7",
    }
    assert seed.network_config is None


def test_seed_files_from_params_replace_virtlibs(tmp_path: Path) -> None:
    (tmp_path / "ud").write_text("#cloud-config\nruncmd: [true]\n")
    (tmp_path / "net").write_text("version: 2\n")
    spec = spec_of(
        tmp_path,
        cloudinit="yes",
        cloudinit_user_data="ud",
        cloudinit_network_config="net",
    )
    seed = cloudinit.build_seed(spec, "i")
    assert seed.user_data == "#cloud-config\nruncmd: [true]\n"
    assert seed.files()["network-config"] == "version: 2\n"


def test_unreadable_key_file_is_a_params_error(tmp_path: Path) -> None:
    spec = spec_of(
        tmp_path, cloudinit="yes", password="p", cloudinit_ssh_authorized_keys="missing.pub"
    )
    with pytest.raises(VMParamsError, match=r"VM 'vm1'.*cloudinit_ssh_authorized_keys.*missing"):
        cloudinit.build_seed(spec, "i")


@needs_iso_tool
def test_seed_iso_is_a_cidata_volume_with_the_files(tmp_path: Path) -> None:
    seed = cloudinit.Seed("instance-id: x\n", "#cloud-config\n{}\n", "version: 2\n")
    iso = cloudinit.write_seed_iso(seed, tmp_path / "seed.iso")
    assert stat.S_IMODE(iso.stat().st_mode) == 0o600
    data = iso.read_bytes()
    assert data[0x8001:0x8006] == b"CD001"  # the primary volume descriptor
    assert data[0x8028:0x8030] == b"CIDATA  " or data[0x8028:0x8030] == b"cidata  "
    if shutil.which("isoinfo"):
        listing = subprocess.run(
            ["isoinfo", "-R", "-f", "-i", str(iso)], capture_output=True, text=True, check=True
        ).stdout.split()
        assert sorted(listing) == ["/meta-data", "/network-config", "/user-data"]
    assert [p.name for p in tmp_path.iterdir()] == ["seed.iso"]  # no staging left


# --- prepare / cleanup ---------------------------------------------------------------------


@needs_qemu_img
@needs_iso_tool
def test_prepare_makes_overlay_and_seed_and_cleanup_removes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(media, "qemu_group", lambda: None)  # QEMU runs as us (tmp_path: 0700)
    base = base_image(tmp_path)
    before = base.read_bytes()
    run = tmp_path / "run"
    spec = spec_of(tmp_path, **cloud_image_params())
    made = media.prepare(spec, "inst-1", run)
    assert made == media.planned(spec, "inst-1", run)  # the paths follow from name + instance
    assert made.directory == tmp_path / "run-media" / "vm1-inst-1"
    assert not run.exists()  # the private base is not QEMU's business
    overlay = made.overlays["disk1"]
    assert overlay.path.parent == made.directory and overlay.base == base
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(overlay.path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert info["backing-filename"] == str(base)
    assert info["backing-filename-format"] == "qcow2"  # explicit, never probed
    assert made.seed is not None and made.seed.is_file()

    media.remove("vm1", "inst-1", run)

    assert not made.directory.exists()
    assert base.read_bytes() == before
    media.remove("vm1", "inst-1", run)  # nothing there is fine


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another group needs root")
def test_private_dirs_open_to_qemus_group_for_search_only(tmp_path: Path) -> None:
    directory = tmp_path / "vm"
    directory.mkdir(mode=0o700)
    media._open_for_qemu(directory, 65534)
    info = directory.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o710, 65534)


def test_nothing_to_prepare_makes_nothing(tmp_path: Path) -> None:
    made = media.prepare(spec_of(tmp_path), "i", tmp_path / "run")
    assert made == media.PreparedMedia()
    assert not (tmp_path / "run").exists()


def test_missing_base_leaves_nothing(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, **cloud_image_params())
    with pytest.raises(VMImageMissingError):
        media.prepare(spec, "i", tmp_path / "run")
    assert list((tmp_path / "run-media").iterdir()) == []


@needs_qemu_img
def test_a_failed_seed_removes_the_overlay_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(media, "qemu_group", lambda: None)
    base_image(tmp_path)
    spec = spec_of(tmp_path, **cloud_image_params(cloudinit_ssh_authorized_keys="none.pub"))
    with pytest.raises(VMParamsError, match=r"none\.pub"):
        media.prepare(spec, "i", tmp_path / "run")
    assert list((tmp_path / "run-media").iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0 or media.qemu_group() is None, reason="root + libvirt")
@needs_qemu_img
def test_base_qemu_cannot_read_is_refused(tmp_path: Path) -> None:
    base_image(tmp_path).chmod(0o600)
    spec = spec_of(tmp_path, **cloud_image_params(cloudinit="no"))
    with pytest.raises(VMParamsError, match="not readable by libvirt's QEMU"):
        media.prepare(spec, "i", tmp_path / "run")


# --- domain XML ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema() -> etree.RelaxNG:
    path = domxml.schema_path()
    if not path.is_file():
        pytest.skip(f"libvirt's schema {path} is not installed")
    return etree.RelaxNG(file=str(path))


def render(tmp_path: Path, prepared: media.PreparedMedia, **params: Any) -> etree._Element:
    (tmp_path / "base.qcow2").touch()
    spec = spec_of(tmp_path, **cloud_image_params(**params))
    config = designer.design(spec, TCG, allocations(spec), None, media=prepared)
    return domxml.build(config)


def prepared_media(tmp_path: Path) -> media.PreparedMedia:
    run = tmp_path / "run" / "media"
    overlay = media.Overlay("disk1", run / "disk1.overlay.qcow2", tmp_path / "base.qcow2", "raw")
    return media.PreparedMedia(run, {"disk1": overlay}, run / "cloudinit-seed.iso")


def test_overlay_disk_names_its_read_only_base(tmp_path: Path, schema: etree.RelaxNG) -> None:
    root = render(tmp_path, prepared_media(tmp_path))
    assert schema.validate(root), schema.error_log
    disk = root.find("devices/disk[@device='disk']")
    assert disk is not None
    assert disk.find("source").get("file").endswith("disk1.overlay.qcow2")
    assert disk.find("driver").get("type") == "qcow2"
    backing = disk.find("backingStore")
    assert backing.find("format").get("type") == "raw"
    assert backing.find("source").get("file") == str(tmp_path / "base.qcow2")
    assert backing.find("source/seclabel").attrib == {"model": "dac", "relabel": "no"}
    assert len(backing.find("backingStore")) == 0  # the chain ends there


def test_seed_is_a_read_only_ide_cdrom_that_is_not_booted(tmp_path: Path) -> None:
    root = render(tmp_path, prepared_media(tmp_path))
    cdrom = root.find("devices/disk[@device='cdrom']")
    assert cdrom.find("source").get("file").endswith("cloudinit-seed.iso")
    assert cdrom.find("target").attrib == {"dev": "hda", "bus": "ide"}
    assert cdrom.find("readonly") is not None
    assert [b.get("dev") for b in root.findall("os/boot")] == ["hd"]
    q35 = render(tmp_path, prepared_media(tmp_path), machine_type="q35")
    assert q35.find("devices/disk[@device='cdrom']/target").get("bus") == "sata"


def slots(root: etree._Element) -> dict[str, int]:
    found = {}
    for element in root.iter():
        address = element.find("address[@type='pci']")
        if address is not None and element.tag != "source":
            found[element.tag + "/" + (element.get("type") or element.get("model") or "")] = int(
                address.get("slot"), 16
            )
    return found


def test_user_net_nic_sits_at_slot_3_and_libvirt_devices_clear_of_it(
    tmp_path: Path, schema: etree.RelaxNG
) -> None:
    root = render(tmp_path, prepared_media(tmp_path), nics="a b", nettype_b="network")
    assert schema.validate(root), schema.error_log
    args = [a.get("value") for a in root.iter(f"{{{domxml.QEMU_NS}}}arg")]
    assert any(a.endswith("addr=0x3") for a in args)
    placed = slots(root)
    assert set(placed) == {
        "disk/file",
        "controller/virtio-serial",
        "interface/network",
        "memballoon/virtio",
    }
    assert all(slot >= designer.FIRST_MANAGED_SLOT for slot in placed.values())
    assert len(set(placed.values())) == len(placed)
    assert root.find("devices/channel/target").get("name") == "org.qemu.guest_agent.0"


def test_nic_pci_slot_and_restrict_are_honoured(tmp_path: Path) -> None:
    root = render(tmp_path, media.PreparedMedia(), nic_pci_slot="0x8", user_net_restrict="yes")
    args = [a.get("value") for a in root.iter(f"{{{domxml.QEMU_NS}}}arg")]
    assert args[1].startswith("user,id=vlnet0,restrict=on,")
    assert args[3].endswith("addr=0x8")
    assert 8 not in slots(root).values()  # the managed devices move out of its way


def test_two_nics_on_one_slot_are_refused(tmp_path: Path) -> None:
    with pytest.raises(VMParamsError, match=r"VM 'vm1', NIC 'b'.*0x5 is taken"):
        render(tmp_path, media.PreparedMedia(), nics="a b", nic_pci_slot="5")
    with pytest.raises(VMParamsError, match="chipset"):
        render(tmp_path, media.PreparedMedia(), nic_pci_slot="2")


def test_guest_agent_no_drops_the_channel_and_its_controller(tmp_path: Path) -> None:
    root = render(tmp_path, media.PreparedMedia(), guest_agent="no")
    assert root.find("devices/channel") is None
    assert root.find("devices/controller[@type='virtio-serial']") is None


def test_q35_leaves_placement_to_libvirt(tmp_path: Path) -> None:
    root = render(tmp_path, media.PreparedMedia(), machine_type="q35")
    assert slots(root) == {}
    assert root.find("devices/channel") is not None
