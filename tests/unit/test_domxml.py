"""Domain XML: golden files per hypervisor kind, libvirt's RelaxNG schema, metacharacters as data.

The golden cases run the whole chain a real create() runs (Params -> VMSpec -> designer ->
domxml) with fixed host facts and allocations.  Their media live in a fixed directory so the
golden files do not depend on tmp_path.  ``VIRTLIB_REGEN_GOLDEN=1`` rewrites the golden files
instead of comparing (read the diff before committing it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from virtlib import Params, VMHashMismatchError, VMSpec
from virtlib.accel import AccelChoice
from virtlib.backends.libvirt import designer, domxml
from virtlib.state import Allocations

GOLDEN_DIR = Path(__file__).parent / "golden"
REGEN = os.environ.get("VIRTLIB_REGEN_GOLDEN") == "1"
# Fixed, so that paths in the golden files are the same on every machine and run.
MEDIA_DIR = Path("/tmp/virtlib-golden-media")
KINDS = ("kvm", "qemu", "xen-hvm", "xen-pv")
UUID = "0d2b7f5e-3c4a-4b8e-9f1a-2a6c5d7e8f90"
CDROM_BYTES = b"virtlib golden cdrom\n" * 64
RAW_DEVICE = "/dev/virtlib-golden-raw"

FACTS = {
    "kvm": designer.HostFacts("qemu", AccelChoice("kvm", "fixed for the golden files")),
    "qemu": designer.HostFacts("qemu", AccelChoice("tcg", "fixed for the golden files")),
    "xen-hvm": designer.HostFacts("xen", AccelChoice("tcg", "not used by Xen")),
    "xen-pv": designer.HostFacts("xen", AccelChoice("tcg", "not used by Xen")),
}


# --- helpers ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def schema() -> etree.RelaxNG:
    path = domxml.schema_path()
    if not path.is_file():
        pytest.skip(f"libvirt's domain schema {path} is not installed (package libvirt-daemon)")
    return etree.RelaxNG(file=str(path))


def assert_valid(schema: etree.RelaxNG, xml: str) -> None:
    root = etree.fromstring(xml.encode())
    assert schema.validate(root), f"{schema.error_log}\n{xml}"


def _write_atomically(path: Path, data: bytes) -> None:
    """Same bytes every time; atomic so parallel workers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@pytest.fixture(scope="session")
def media() -> Path:
    """Kernel, initrd, a qcow2 disk and an ISO at fixed paths (kept for the next run)."""
    MEDIA_DIR.mkdir(mode=0o755, exist_ok=True)
    info = os.lstat(MEDIA_DIR)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        pytest.skip(f"{MEDIA_DIR} exists but is not a directory of this user")
    _write_atomically(MEDIA_DIR / "vmlinuz", b"not a kernel\n")
    _write_atomically(MEDIA_DIR / "initrd.img", b"not an initrd\n")
    _write_atomically(MEDIA_DIR / "cd.iso", CDROM_BYTES)
    disk = MEDIA_DIR / "disk1.qcow2"
    if shutil.which("qemu-img"):
        tmp = MEDIA_DIR / f".disk1.{os.getpid()}.qcow2"
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(tmp), "16M"],
            check=True,
            capture_output=True,
        )
        os.replace(tmp, disk)
    else:
        disk.touch()  # the designer only checks that it exists
    return MEDIA_DIR


def golden_params(kind: str) -> Params:
    """A representative VM of one kind: kernel boot, qcow2 + raw device + cdrom, NICs."""
    params = Params(
        kernel="vmlinuz",
        initrd="initrd.img",
        kernel_args="console=ttyS0 quiet",
        images="disk1 raw1",
        image_name_disk1="disk1",
        image_format_disk1="qcow2",
        image_raw_device_raw1="yes",
        image_name_raw1=RAW_DEVICE,
        drive_format_raw1="scsi",
        cdroms="cd1",
        cdrom_cd1="cd.iso",
        md5sum_cd1=hashlib.md5(CDROM_BYTES).hexdigest(),  # noqa: S324 - the seed's md5sum
        uuid=UUID,
        on_crash="coredump-restart",
        on_reboot="destroy",
        smp="2",
        mem="1024",
        cpu_model="Haswell",
    )
    if kind.startswith("xen"):
        params.update(
            nics="nic1 nic2",
            nettype_nic1="network",
            netdst_nic1="default",
            nettype_nic2="bridge",
            netdst_nic2="br0",
            hvm_or_pv="pv" if kind == "xen-pv" else "hvm",
        )
    else:
        params.update(nics="nic1", redirs="http", guest_port_http="80")
    return params


def fixed_allocations(spec: VMSpec) -> Allocations:
    """MACs 52:54:00:00:00:<n+1>, host port 20000 + guest port (as if reserved)."""
    macs, ports = {}, {}
    for nic in spec.nics:
        macs[nic.index] = f"52:54:00:00:00:{nic.index + 1:02x}"
        for port in nic.guest_ports:
            ports[(nic.index, port)] = 20000 + port
    return Allocations.of(macs, ports)


def render_golden(kind: str, media_dir: Path) -> str:
    spec = VMSpec.from_params(f"golden-{kind}", golden_params(kind), media_dir)
    allocations = fixed_allocations(spec)
    forwards = " ".join(f"{n}:{g}={h}" for (n, g), h in allocations.ports)
    config = designer.design(
        spec,
        FACTS[kind],
        allocations,
        designer.boot_media(spec),
        {"instance": f"golden-{kind}", "forwards": forwards},
        uuid=spec.uuid,
    )
    return domxml.render(config)


# --- golden files -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_golden_domain_validates_against_libvirt_schema(
    kind: str, media: Path, schema: etree.RelaxNG
) -> None:
    assert_valid(schema, render_golden(kind, media))


@pytest.mark.parametrize("kind", KINDS)
def test_golden_domain_matches_golden_file(kind: str, media: Path) -> None:
    xml = render_golden(kind, media)
    golden = GOLDEN_DIR / f"{kind}.xml"
    if REGEN:
        GOLDEN_DIR.mkdir(exist_ok=True)
        golden.write_text(xml)
    assert golden.is_file(), f"{golden} is missing: run with VIRTLIB_REGEN_GOLDEN=1 to write it"
    assert domxml.canonical(xml) == domxml.canonical(golden.read_text())


@pytest.mark.parametrize("kind", KINDS)
def test_golden_files_validate_against_libvirt_schema(kind: str, schema: etree.RelaxNG) -> None:
    assert_valid(schema, (GOLDEN_DIR / f"{kind}.xml").read_text())


@pytest.mark.parametrize("kind", KINDS)
def test_golden_domain_values(kind: str, media: Path) -> None:
    """The values the golden files were checked for, spelled out."""
    root = domxml.parse(render_golden(kind, media))
    xen = kind.startswith("xen")
    assert root.get("type") == ("xen" if xen else kind)
    assert root.findtext("name") == f"golden-{kind}"
    assert root.findtext("uuid") == UUID
    assert (root.findtext("memory"), root.find("memory").get("unit")) == ("1024", "MiB")
    assert root.findtext("vcpu") == "2"
    assert root.findtext("os/type") == ("linux" if kind == "xen-pv" else "hvm")
    assert root.findtext("os/kernel") == str(media / "vmlinuz")
    assert root.findtext("os/initrd") == str(media / "initrd.img")
    assert root.findtext("os/cmdline") == "console=ttyS0 quiet"
    assert root.find("os/boot") is None  # kernel boot: no boot order
    assert root.find("cpu").get("mode") == "custom"
    assert root.findtext("cpu/model") == "Haswell"
    actions = [root.findtext(a) for a in ("on_poweroff", "on_reboot", "on_crash")]
    assert actions == ["destroy", "destroy", "coredump-restart"]
    assert domxml.read_metadata(root)["instance"] == f"golden-{kind}"

    disks = root.findall("devices/disk")
    targets = [(d.find("target").get("dev"), d.find("target").get("bus")) for d in disks]
    if kind == "xen-pv":
        assert targets == [("xvda", "xen"), ("xvdb", "xen"), ("xvdc", "xen")]
    elif kind == "xen-hvm":  # no virtio disks on Xen; HVM CD-ROMs are IDE
        assert targets == [("xvda", "xen"), ("sda", "scsi"), ("hda", "ide")]
    else:
        assert targets == [("vda", "virtio"), ("sda", "scsi"), ("sdb", "sata")]
    qcow2, raw, cdrom = disks
    assert (qcow2.get("type"), qcow2.get("device")) == ("file", "disk")
    assert qcow2.find("driver").get("type") == "qcow2"
    assert qcow2.find("source").get("file") == str(media / "disk1.qcow2")
    assert (raw.get("type"), raw.find("driver").get("type")) == ("block", "raw")
    assert raw.find("source").get("dev") == RAW_DEVICE
    assert cdrom.get("device") == "cdrom"
    assert cdrom.find("readonly") is not None
    assert cdrom.find("source").get("file") == str(media / "cd.iso")

    commandline = root.find(f"{{{domxml.QEMU_NS}}}commandline")
    if xen:
        assert commandline is None
        interfaces = root.findall("devices/interface")
        assert [(i.get("type"), i.find("mac").get("address")) for i in interfaces] == [
            ("network", "52:54:00:00:00:01"),
            ("bridge", "52:54:00:00:00:02"),
        ]
        assert interfaces[0].find("source").get("network") == "default"
        assert interfaces[1].find("source").get("bridge") == "br0"
        assert {i.find("model").get("type") for i in interfaces} == {"netfront"}
    else:
        assert root.find("devices/interface") is None
        args = [a.get("value") for a in commandline]
        assert args == [
            "-netdev",
            "user,id=vlnet0,hostfwd=tcp:127.0.0.1:20080-:80,hostfwd=tcp:127.0.0.1:20022-:22",
            "-device",
            "virtio-net-pci,id=vlnic0,netdev=vlnet0,mac=52:54:00:00:00:01,addr=0x3",
        ]


def test_golden_media_hash_is_checked(media: Path) -> None:
    """The golden cdrom's md5sum is really compared (a wrong one fails)."""
    params = golden_params("kvm")
    params["md5sum_cd1"] = "0" * 32
    spec = VMSpec.from_params("golden-kvm", params, media)
    with pytest.raises(VMHashMismatchError):
        designer.design(spec, FACTS["kvm"], fixed_allocations(spec), designer.boot_media(spec))


# --- metacharacters stay data -------------------------------------------------------------------

NASTY = "a<b&c\"d'e]]>f"


@pytest.mark.parametrize("kind", KINDS)
def test_metacharacters_in_name_and_paths_round_trip(
    kind: str, tmp_path: Path, schema: etree.RelaxNG
) -> None:
    folder = tmp_path / NASTY
    folder.mkdir()
    for name in ("vmlinuz", "initrd", "disk.qcow2", "cd.iso"):
        (folder / f"{NASTY}{name}").write_bytes(b"x")
    params = Params(
        kernel=f"{NASTY}vmlinuz",
        initrd=f"{NASTY}initrd",
        kernel_args=f"console=ttyS0 x={NASTY}",
        images="disk1",
        image_name=f"{NASTY}disk",
        cdroms="cd1",
        cdrom_cd1=f"{NASTY}cd.iso",
        nics="nic1",
        nettype="bridge",
        netdst="br0",  # libvirt's schema allows no metacharacters in device names
        hvm_or_pv="pv" if kind == "xen-pv" else "hvm",
    )
    vm_name = f"vm{NASTY}"
    spec = VMSpec.from_params(vm_name, params, folder)
    config = designer.design(
        spec,
        FACTS[kind],
        fixed_allocations(spec),
        designer.boot_media(spec),
        {"instance": NASTY},
    )
    xml = domxml.render(config)
    assert "]]>" not in xml  # escaped, never a CDATA end in the text
    root = etree.fromstring(xml.encode())  # a plain parser: the text is plain XML
    assert root.findtext("name") == vm_name
    assert root.findtext("os/kernel") == str(folder / f"{NASTY}vmlinuz")
    assert root.findtext("os/initrd") == str(folder / f"{NASTY}initrd")
    assert root.findtext("os/cmdline") == f"console=ttyS0 x={NASTY}"
    sources = [d.find("source").get("file") for d in root.findall("devices/disk")]
    assert sources == [str(folder / f"{NASTY}disk.qcow2"), str(folder / f"{NASTY}cd.iso")]
    assert domxml.read_metadata(root) == {"instance": NASTY}
    assert_valid(schema, xml)


# --- templates and the hardened parser ----------------------------------------------------------


@pytest.mark.parametrize("name", domxml.TEMPLATES)
def test_template_parses_with_hardened_parser(name: str) -> None:
    tree = domxml.load_template(name)
    root = tree.getroot()
    assert root.tag == "domain"
    assert root.get("type") in ("kvm", "qemu", "xen")
    for path in ("name", "memory", "vcpu", "os/type", "on_poweroff", "on_crash", "devices"):
        assert root.find(path) is not None, f"{name}.xml has no {path}"
    assert root.find("devices/console") is not None
    # remove_comments / remove_blank_text: nothing but elements and their text
    assert not [n for n in root.iter() if not isinstance(n.tag, str)]


def test_templates_match_the_list_of_files() -> None:
    folder = importlib.resources.files("virtlib.xml_templates")
    names = [p.name[: -len(".xml")] for p in folder.iterdir() if p.name.endswith(".xml")]
    assert sorted(names) == sorted(domxml.TEMPLATES)


def test_load_template_gives_a_fresh_tree_each_time() -> None:
    first = domxml.load_template("kvm").getroot()
    first.find("name").text = "changed"
    assert domxml.load_template("kvm").getroot().findtext("name") != "changed"


@pytest.mark.parametrize("name", ["", "KVM", "xen", "lxc", "../kvm", "kvm.xml"])
def test_unknown_template_raises(name: str) -> None:
    with pytest.raises(ValueError, match="no domain template"):
        domxml.load_template(name)


def test_parse_does_not_resolve_external_entities(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("SECRET")
    xml = (
        f'<!DOCTYPE domain [<!ENTITY x SYSTEM "file://{secret}">]><domain><name>&x;</name></domain>'
    )
    root = domxml.parse(xml)
    assert "SECRET" not in etree.tostring(root, encoding="unicode")
    assert not root.findtext("name")


# --- canonical form and metadata ----------------------------------------------------------------


SMALL = domxml.DomainConfig(
    template="qemu",
    domain_type="qemu",
    name="vm1",
    memory_mib=256,
    vcpus=1,
    uuid="11111111-2222-3333-4444-555555555555",
    metadata={"instance": "inst-1", "forwards": "0:22=20022"},
)


def small_config(**changes: Any) -> domxml.DomainConfig:
    return dataclasses.replace(SMALL, **changes)


def test_canonical_ignores_uuid_when_asked() -> None:
    one = domxml.render(small_config())
    other = domxml.render(small_config(uuid="99999999-2222-3333-4444-555555555555"))
    assert domxml.canonical(one) != domxml.canonical(other)
    assert domxml.canonical(one, ignore=("uuid",)) == domxml.canonical(other, ignore=("uuid",))
    assert "uuid" not in domxml.canonical(one, ignore=("uuid",))


def test_canonical_ignores_layout_and_attribute_order() -> None:
    pretty = (
        '<domain type="qemu">\n  <name>vm1</name>\n  <vcpu placement="static">1</vcpu>\n</domain>'
    )
    flat = "<domain type='qemu'><name>vm1</name><vcpu placement='static'>1</vcpu></domain>"
    assert domxml.canonical(pretty) == domxml.canonical(flat)
    changed = flat.replace(">1<", ">2<")
    assert domxml.canonical(changed) != domxml.canonical(flat)


def test_canonical_still_sees_other_differences() -> None:
    one = domxml.render(small_config())
    other = domxml.render(small_config(memory_mib=512))
    assert domxml.canonical(one, ignore=("uuid",)) != domxml.canonical(other, ignore=("uuid",))


def test_read_metadata_returns_virtlib_values() -> None:
    root = domxml.parse(domxml.render(small_config()))
    assert domxml.read_metadata(root) == {"instance": "inst-1", "forwards": "0:22=20022"}
    assert root.find("metadata").getprevious().tag == "uuid"


def test_read_metadata_of_foreign_domain_is_empty() -> None:
    assert domxml.read_metadata(domxml.parse(domxml.render(small_config(metadata={})))) == {}
    foreign = '<domain><name>x</name><metadata><other:vm xmlns:other="urn:x"/></metadata></domain>'
    assert domxml.read_metadata(domxml.parse(foreign)) == {}


def test_uuid_is_left_out_when_not_given() -> None:
    root = domxml.parse(domxml.render(small_config(uuid="")))
    assert root.find("uuid") is None
    assert root.find("metadata").getprevious().tag == "name"


def test_hostdevs_and_hugepages_render(schema: etree.RelaxNG) -> None:
    config = small_config(
        hugepages=True,
        hostdevs=(domxml.HostdevConfig(0, 0x3, 0x1F, 0x7),),
    )
    xml = domxml.render(config)
    root = domxml.parse(xml)
    assert root.find("memoryBacking/hugepages") is not None
    hostdev = root.find("devices/hostdev")
    assert (hostdev.get("mode"), hostdev.get("type"), hostdev.get("managed")) == (
        "subsystem",
        "pci",
        "yes",
    )
    assert dict(hostdev.find("source/address").attrib) == {
        "domain": "0x0000",
        "bus": "0x03",
        "slot": "0x1f",
        "function": "0x7",
    }
    assert_valid(schema, xml)


@pytest.mark.parametrize(
    ("disks", "boot"),
    [
        ((), ["hd"]),
        ((domxml.DiskConfig("", "sda", "sata", "raw", device="cdrom"),), ["cdrom", "hd"]),
    ],
)
def test_boot_order_without_kernel(disks: tuple[domxml.DiskConfig, ...], boot: list[str]) -> None:
    root = domxml.parse(domxml.render(small_config(disks=disks)))
    assert [b.get("dev") for b in root.findall("os/boot")] == boot
    if disks:
        assert root.find("devices/disk/source") is None  # an empty drive
