"""The designer's policy: which template and type, which CPU, disk targets, and the checks it makes
before anything is created (media, hashes, huge pages, PCI devices, NIC kinds)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from virtlib import (
    Params,
    VMBadPATypeError,
    VMHashMismatchError,
    VMHugePageError,
    VMImageMissingError,
    VMPAError,
    VMParamsError,
    VMSpec,
)
from virtlib.accel import AccelChoice
from virtlib.backends.libvirt import designer, domxml
from virtlib.backends.libvirt.designer import HostFacts, PciDevice
from virtlib.state import Allocations

KVM = HostFacts("qemu", AccelChoice("kvm", "test"))
TCG = HostFacts("qemu", AccelChoice("tcg", "test"))
XEN = HostFacts("xen", AccelChoice("tcg", "not used by Xen"))


def make_spec(root: Path, **params: Any) -> VMSpec:
    """A spec without the bundled guest (and so without its default user NIC)."""
    values: dict[str, Any] = {"guest": "none"}
    values.update(params)
    return VMSpec.from_params("vm1", Params(values), root)


def allocations(spec: VMSpec) -> Allocations:
    macs, ports = {}, {}
    for nic in spec.nics:
        macs[nic.index] = f"52:54:00:00:01:{nic.index:02x}"
        for port in nic.guest_ports:
            ports[(nic.index, port)] = 30000 + 100 * nic.index + port
    return Allocations.of(macs, ports)


def design(spec: VMSpec, facts: HostFacts = TCG, **kw: Any) -> domxml.DomainConfig:
    return designer.design(spec, facts, allocations(spec), designer.boot_media(spec), **kw)


def touch(root: Path, *names: str, data: bytes = b"") -> None:
    for name in names:
        (root / name).write_bytes(data)


def never_called() -> Any:
    raise AssertionError("the designer asked the host although nothing needed it")


# --- template and domain type -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("driver", "accel", "params", "expected"),
    [
        ("qemu", "kvm", {}, ("kvm", "kvm")),
        ("qemu", "tcg", {}, ("qemu", "qemu")),
        ("qemu", "tcg", {"hvm_or_pv": "pv"}, ("qemu", "qemu")),  # pv is Xen's only
        ("xen", "tcg", {}, ("xen-hvm", "xen")),
        ("xen", "kvm", {}, ("xen-hvm", "xen")),  # Xen ignores the QEMU accelerator
        ("libxl", "tcg", {}, ("xen-hvm", "xen")),
        ("xen", "tcg", {"hvm_or_pv": "pv"}, ("xen-pv", "xen")),
        ("xen", "tcg", {"hypervisor": "qemu"}, ("qemu", "qemu")),
        ("test", "tcg", {}, ("qemu", "qemu")),
        ("test", "kvm", {}, ("kvm", "kvm")),
        ("test", "tcg", {"hypervisor": "xen"}, ("xen-hvm", "xen")),
        ("test", "tcg", {"hypervisor": "xen", "hvm_or_pv": "pv"}, ("xen-pv", "xen")),
        ("qemu", "tcg", {"hypervisor": "xen"}, ("xen-hvm", "xen")),
    ],
)
def test_template_and_type(
    tmp_path: Path, driver: str, accel: str, params: dict[str, str], expected: tuple[str, str]
) -> None:
    facts = HostFacts(driver, AccelChoice(accel, "test"))
    spec = make_spec(tmp_path, **params)
    assert designer.template_and_type(spec, facts) == expected
    config = design(spec, facts)
    assert (config.template, config.domain_type) == expected
    assert domxml.parse(domxml.render(config)).get("type") == expected[1]


def test_design_carries_spec_values(tmp_path: Path) -> None:
    touch(tmp_path, "vmlinuz", "initrd")
    spec = make_spec(
        tmp_path,
        kernel="vmlinuz",
        initrd="initrd",
        kernel_args="console=ttyS0",
        mem="768",
        smp="3",
        machine_type="q35",
        on_poweroff="preserve",
        on_reboot="destroy",
        on_crash="coredump-destroy",
    )
    uuid = "11111111-1111-1111-1111-111111111111"
    config = design(spec, KVM, metadata={"instance": "i1"}, uuid=uuid)
    assert (config.name, config.memory_mib, config.vcpus, config.machine) == ("vm1", 768, 3, "q35")
    assert (config.kernel, config.initrd, config.cmdline) == (
        str(tmp_path / "vmlinuz"),
        str(tmp_path / "initrd"),
        "console=ttyS0",
    )
    assert (config.on_poweroff, config.on_reboot, config.on_crash) == (
        "preserve",
        "destroy",
        "coredump-destroy",
    )
    assert config.metadata == {"instance": "i1"}
    assert config.uuid == uuid


# --- CPU ----------------------------------------------------------------------------------------


def test_kvm_defaults_to_host_passthrough(tmp_path: Path) -> None:
    config = design(make_spec(tmp_path), KVM)
    assert (config.cpu_mode, config.cpu_model) == ("host-passthrough", "")
    cpu = domxml.parse(domxml.render(config)).find("cpu")
    assert cpu is not None
    assert cpu.get("mode") == "host-passthrough"
    assert cpu.find("model") is None


@pytest.mark.parametrize(
    ("params", "mode", "model"),
    [
        ({"cpu_mode": "host-model"}, "host-model", None),
        ({"cpu_model": "Skylake-Client"}, "custom", "Skylake-Client"),
        ({"cpu_mode": "custom", "cpu_model": "EPYC"}, "custom", "EPYC"),
    ],
)
def test_kvm_cpu_given_in_params(
    tmp_path: Path, params: dict[str, str], mode: str, model: str | None
) -> None:
    cpu = domxml.parse(domxml.render(design(make_spec(tmp_path, **params), KVM))).find("cpu")
    assert cpu is not None
    assert cpu.get("mode") == mode
    assert cpu.findtext("model") == model


@pytest.mark.parametrize("facts", [TCG, XEN], ids=["tcg", "xen"])
def test_no_cpu_element_without_cpu_params(tmp_path: Path, facts: HostFacts) -> None:
    config = design(make_spec(tmp_path), facts)
    assert (config.cpu_mode, config.cpu_model) == ("", "")
    assert domxml.parse(domxml.render(config)).find("cpu") is None


def test_tcg_cpu_model_given(tmp_path: Path) -> None:
    cpu = domxml.parse(domxml.render(design(make_spec(tmp_path, cpu_model="qemu64")))).find("cpu")
    assert cpu is not None
    assert (cpu.get("mode"), cpu.get("match")) == ("custom", "exact")
    assert cpu.findtext("model") == "qemu64"


# --- disk targets -------------------------------------------------------------------------------


def disk_params(root: Path, buses: list[str]) -> dict[str, str]:
    names = [f"d{i}" for i in range(len(buses))]
    params = {"images": " ".join(names)}
    for name, bus in zip(names, buses, strict=True):
        touch(root, f"{name}.qcow2")
        params[f"image_name_{name}"] = name
        params[f"drive_format_{name}"] = bus
    return params


@pytest.mark.parametrize(
    ("buses", "targets"),
    [
        (["virtio"], ["vda"]),
        (["virtio", "virtio"], ["vda", "vdb"]),
        (["ide", "ide"], ["hda", "hdb"]),
        (["scsi"], ["sda"]),
        (["scsi", "sata", "usb"], ["sda", "sdb", "sdc"]),  # one sd* namespace
        (["virtio", "ide", "virtio", "scsi"], ["vda", "hda", "vdb", "sda"]),
        (["xen"], ["xvda"]),
    ],
)
def test_disk_targets(tmp_path: Path, buses: list[str], targets: list[str]) -> None:
    config = design(make_spec(tmp_path, **disk_params(tmp_path, buses)))
    assert [d.target for d in config.disks] == targets
    assert [d.bus for d in config.disks] == buses


def test_xen_pv_puts_every_disk_and_cdrom_on_the_xen_bus(tmp_path: Path) -> None:
    touch(tmp_path, "cd.iso")
    params = disk_params(tmp_path, ["virtio", "ide", "scsi"])
    params.update(cdroms="cd1", cdrom_cd1="cd.iso", hvm_or_pv="pv")
    config = design(make_spec(tmp_path, **params), XEN)
    assert [(d.target, d.bus) for d in config.disks] == [
        ("xvda", "xen"),
        ("xvdb", "xen"),
        ("xvdc", "xen"),
        ("xvdd", "xen"),
    ]
    assert config.disks[-1].device == "cdrom"


def test_27th_disk_is_vdaa(tmp_path: Path) -> None:
    config = design(make_spec(tmp_path, **disk_params(tmp_path, ["virtio"] * 28)))
    targets = [d.target for d in config.disks]
    assert targets[0] == "vda"
    assert targets[25] == "vdz"
    assert targets[26] == "vdaa"
    assert targets[27] == "vdab"
    assert len(set(targets)) == len(targets)


def test_cdroms_come_after_disks_and_are_readonly_raw(tmp_path: Path) -> None:
    touch(tmp_path, "a.iso", "b.iso")
    params = disk_params(tmp_path, ["scsi"])
    params.update(cdroms="cd1 cd2", cdrom_cd1="a.iso", cdrom_cd2="b.iso", cd_format_cd2="ide")
    disks = design(make_spec(tmp_path, **params)).disks
    assert [(d.target, d.device) for d in disks] == [
        ("sda", "disk"),
        ("sdb", "cdrom"),
        ("hda", "cdrom"),
    ]
    assert all(d.readonly and d.format == "raw" for d in disks[1:])


def test_cdrom_without_media_is_an_empty_drive(tmp_path: Path) -> None:
    (cdrom,) = design(make_spec(tmp_path, cdroms="cd1")).disks
    assert (cdrom.device, cdrom.source, cdrom.readonly) == ("cdrom", "", True)


def test_raw_device_is_not_checked_and_is_a_block_disk(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, images="r", image_raw_device="yes", image_name="/dev/nonexistent0")
    (disk,) = design(spec).disks
    assert (disk.source, disk.block, disk.format) == ("/dev/nonexistent0", True, "raw")


def test_xen_hvm_default_disk_gets_a_target_xen_knows(tmp_path: Path) -> None:
    (disk,) = design(make_spec(tmp_path, **disk_params(tmp_path, ["virtio"])), XEN).disks
    assert disk.target.startswith(("xvd", "hd", "sd"))


# --- media checks -------------------------------------------------------------------------------


def test_missing_disk_image(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, images="d1", image_name="nothere")
    with pytest.raises(VMImageMissingError) as info:
        design(spec)
    assert info.value.filename == str(tmp_path / "nothere.qcow2")


def test_missing_cdrom(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, cdroms="cd1", cdrom="nothere.iso")
    with pytest.raises(VMImageMissingError) as info:
        design(spec)
    assert info.value.filename == str(tmp_path / "nothere.iso")


def test_cdrom_that_is_a_directory_is_missing(tmp_path: Path) -> None:
    (tmp_path / "dir.iso").mkdir()
    with pytest.raises(VMImageMissingError):
        design(make_spec(tmp_path, cdroms="cd1", cdrom="dir.iso"))


@pytest.mark.parametrize(("key", "algorithm"), [("md5sum", "md5"), ("sha1sum", "sha1")])
def test_cdrom_hash_mismatch(tmp_path: Path, key: str, algorithm: str) -> None:
    touch(tmp_path, "cd.iso", data=b"iso contents")
    actual = hashlib.new(algorithm, b"iso contents").hexdigest()
    expected = "0" * len(actual)
    spec = make_spec(tmp_path, cdroms="cd1", cdrom="cd.iso", **{key: expected})
    with pytest.raises(VMHashMismatchError) as info:
        design(spec)
    assert (info.value.actual_hash, info.value.expected_hash) == (actual, expected)


@pytest.mark.parametrize(("key", "algorithm"), [("md5sum", "md5"), ("sha1sum", "sha1")])
def test_cdrom_hash_match_any_case(tmp_path: Path, key: str, algorithm: str) -> None:
    touch(tmp_path, "cd.iso", data=b"iso contents")
    digest = hashlib.new(algorithm, b"iso contents").hexdigest().upper()
    (cdrom,) = design(make_spec(tmp_path, cdroms="cd1", cdrom="cd.iso", **{key: digest})).disks
    assert cdrom.source == str(tmp_path / "cd.iso")


def test_boot_media(tmp_path: Path) -> None:
    touch(tmp_path, "vmlinuz", "initrd")
    assert designer.boot_media(make_spec(tmp_path)) is None
    media = designer.boot_media(make_spec(tmp_path, kernel="vmlinuz", kernel_args="quiet"))
    assert media == designer.BootMedia(tmp_path / "vmlinuz", None, "quiet")
    with pytest.raises(VMParamsError, match="needs 'kernel'"):
        designer.boot_media(make_spec(tmp_path, initrd="initrd"))
    with pytest.raises(VMImageMissingError):
        designer.boot_media(make_spec(tmp_path, kernel="nokernel"))
    with pytest.raises(VMImageMissingError):
        designer.boot_media(make_spec(tmp_path, kernel="vmlinuz", initrd="noinitrd"))


# --- huge pages ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("mem", "needed"), [("1024", 512), ("3", 2), ("1", 1)])
def test_hugepages_too_few(tmp_path: Path, mem: str, needed: int) -> None:
    facts = HostFacts("qemu", TCG.accel, free_hugepages=lambda: needed - 1)
    with pytest.raises(VMHugePageError) as info:
        design(make_spec(tmp_path, hugepage="yes", mem=mem), facts)
    assert f"{needed} pages needed, {needed - 1} free" in str(info.value.output)


def test_hugepages_enough(tmp_path: Path) -> None:
    facts = HostFacts("qemu", TCG.accel, free_hugepages=lambda: 512)
    config = design(make_spec(tmp_path, hugepage="yes", mem="1024"), facts)
    assert config.hugepages
    assert domxml.parse(domxml.render(config)).find("memoryBacking/hugepages") is not None


def test_host_is_not_asked_for_resources_nobody_wants(tmp_path: Path) -> None:
    facts = HostFacts("qemu", TCG.accel, free_hugepages=never_called, pci_devices=never_called)
    config = design(make_spec(tmp_path, pci_assignable="no"), facts)
    assert (config.hugepages, config.hostdevs) == (False, ())


# --- PCI assignment -----------------------------------------------------------------------------

VF1 = PciDevice(0, 0x03, 0x10, 1, is_vf=True)
VF2 = PciDevice(0, 0x03, 0x10, 2, is_vf=True)
PF = PciDevice(0, 0x02, 0x00, 0, is_pf=True)
PLAIN = PciDevice(0, 0x00, 0x1F, 3)


def pci_facts(*devices: PciDevice) -> HostFacts:
    return HostFacts("qemu", KVM.accel, pci_devices=lambda: list(devices))


@pytest.mark.parametrize("pa_type", ["bogus", "VF", "yes"])
def test_bad_pci_assignable_type(tmp_path: Path, pa_type: str) -> None:
    with pytest.raises(VMBadPATypeError) as info:
        design(make_spec(tmp_path, pci_assignable=pa_type), pci_facts(VF1))
    assert info.value.pa_type == pa_type


@pytest.mark.parametrize("devices", [(), (PF, PLAIN)], ids=["none", "no-vf"])
def test_vf_without_devices(tmp_path: Path, devices: tuple[PciDevice, ...]) -> None:
    with pytest.raises(VMPAError) as info:
        design(make_spec(tmp_path, pci_assignable="vf"), pci_facts(*devices))
    assert info.value.pa_type == "vf"


def test_too_few_devices_for_the_request(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, pci_assignable="vf", devices_requested="3")
    with pytest.raises(VMPAError):
        design(spec, pci_facts(VF1, VF2, PF))


@pytest.mark.parametrize(
    ("pa_type", "requested", "expected"),
    [
        ("vf", "2", [VF1, VF2]),
        ("vf", "1", [VF1]),
        ("pf", "1", [PF]),
        ("mixed", "3", [VF1, VF2, PF]),
    ],
)
def test_assigned_devices_become_hostdevs(
    tmp_path: Path, pa_type: str, requested: str, expected: list[PciDevice]
) -> None:
    spec = make_spec(tmp_path, pci_assignable=pa_type, devices_requested=requested)
    config = design(spec, pci_facts(VF1, PLAIN, VF2, PF))
    assert [(h.domain, h.bus, h.slot, h.function) for h in config.hostdevs] == [
        (d.domain, d.bus, d.slot, d.function) for d in expected
    ]
    # Each gets its own guest slot, clear of the chipset and of the user-net NICs.
    guest_slots = [h.guest_slot for h in config.hostdevs]
    assert len(set(guest_slots)) == len(guest_slots)
    assert all(slot >= designer.FIRST_MANAGED_SLOT for slot in guest_slots)
    hostdevs = domxml.parse(domxml.render(config)).findall("devices/hostdev")
    addresses = [dict(h.find("source/address").attrib) for h in hostdevs]
    assert addresses == [
        {
            "domain": f"{d.domain:#06x}",
            "bus": f"{d.bus:#04x}",
            "slot": f"{d.slot:#04x}",
            "function": f"{d.function:#x}",
        }
        for d in expected
    ]
    assert all(h.get("managed") == "yes" and h.get("type") == "pci" for h in hostdevs)


# --- NICs ---------------------------------------------------------------------------------------


def test_user_nic_becomes_qemu_args(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path, nics="a b", redirs_a="web", guest_port_web="8080", nic_model_b="e1000"
    )
    config = design(spec)
    assert config.interfaces == ()
    first, second = config.user_nets
    assert first.qemu_args() == [
        "-netdev",
        "user,id=vlnet0,hostfwd=tcp:127.0.0.1:38080-:8080,hostfwd=tcp:127.0.0.1:30022-:22",
        "-device",
        "virtio-net-pci,id=vlnic0,netdev=vlnet0,mac=52:54:00:00:01:00,addr=0x3",
    ]
    assert second.forwards == ()  # only the first NIC forwards the shell port
    assert second.qemu_args()[-1] == "e1000,id=vlnic1,netdev=vlnet1,mac=52:54:00:00:01:01,addr=0x4"


def test_network_and_bridge_nics_are_interfaces(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path,
        nics="a b",
        nettype_a="network",
        nettype_b="bridge",
        netdst_b="br7",
        nic_model_b="e1000",
    )
    config = design(spec)
    assert config.user_nets == ()
    assert config.interfaces == (
        domxml.InterfaceConfig("network", "default", "52:54:00:00:01:00", "virtio", 0x09),
        domxml.InterfaceConfig("bridge", "br7", "52:54:00:00:01:01", "e1000", 0x0A),
    )


def test_xen_virtio_nic_is_netfront(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, nics="a b", nettype="bridge", netdst="xenbr0", nic_model_b="e1000")
    assert [i.model for i in design(spec, XEN).interfaces] == ["netfront", "e1000"]


@pytest.mark.parametrize("mode", ["hvm", "pv"])
def test_user_nic_on_xen(tmp_path: Path, mode: str) -> None:
    with pytest.raises(VMParamsError, match="user networking"):
        design(make_spec(tmp_path, nics="a", hvm_or_pv=mode), XEN)


def test_unknown_model_on_user_nic(tmp_path: Path) -> None:
    with pytest.raises(VMParamsError, match="nic_model 'ne2k_isa'"):
        design(make_spec(tmp_path, nics="a", nic_model="ne2k_isa"))


def test_model_of_libvirt_nic_is_passed_through(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, nics="a", nettype="network", nic_model="ne2k_pci")
    assert design(spec).interfaces[0].model == "ne2k_pci"
