"""Hotplug without a daemon: the params a hotplug writes (virtlib.hotplug), what the spec
makes of them (boot_drive = no, vcpus_max, mem_slots), the values handed back, the errors,
and the CLI's parser."""

from __future__ import annotations

import pickle

import pytest

import virtlib
from virtlib import hotplug
from virtlib.cli import build_parser
from virtlib.devices import BlockJobProgress, Disk
from virtlib.params import Params
from virtlib.spec import VMSpec


def spec(**params: str) -> VMSpec:
    return VMSpec.from_params("vm1", Params(params), "/srv")


# --- the spec: boot_drive, vcpus_max, mem_slots --------------------------------------------------
def test_boot_drive_no_keeps_disks_and_nics_out_of_the_domain() -> None:
    parsed = spec(
        images="root spare",
        image_name_root="root",
        image_name_spare="spare",
        boot_drive_spare="no",
        nics="nic1 nic2",
        boot_drive_nic2="no",
    )
    assert [d.name for d in parsed.disks] == ["root"]
    assert [d.name for d in parsed.standby_disks] == ["spare"]
    assert [(n.name, n.present) for n in parsed.nics] == [("nic1", True), ("nic2", False)]
    assert [d.name for d in parsed.planned_disks()] == ["root", "spare"]


def test_growth_params() -> None:
    parsed = spec(smp="1", vcpus_max="4", mem="512", mem_max="2048", mem_slots="4")
    assert (parsed.vcpus, parsed.growth.vcpus_max) == (1, 4)
    assert (parsed.growth.mem_max_mib, parsed.growth.mem_slots) == (2048, 4)
    assert spec(smp="2").growth.vcpus_max == 2  # default: what it boots with
    assert spec(vcpu_maxcpus="3").growth.vcpus_max == 3  # avocado-vt's key


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"smp": "2", "vcpus_max": "1"}, "vcpus_max"),
        ({"mem": "512", "mem_slots": "2"}, "mem"),  # slots without mem_max
        ({"mem": "512", "mem_max": "256", "mem_slots": "2"}, "mem"),
    ],
)
def test_bad_growth_params(params: dict[str, str], key: str) -> None:
    with pytest.raises(virtlib.VMParamsError) as info:
        spec(**params)
    assert key in str(info.value)


# --- the params a hotplug writes -----------------------------------------------------------------
def test_a_hotplugged_disk_in_params_and_out_again() -> None:
    params = hotplug.with_disk(
        {"mem": "256"}, [], "hotdisk1", "/var/tmp/d", "qcow2", "virtio", False, False,
        "hotdisk1", "vda", 10,
    )  # fmt: skip
    params["guest"] = "bundled"
    parsed = spec(**params)
    (disk,) = parsed.disks
    assert (disk.name, disk.hotplugged, disk.target) == ("hotdisk1", True, "vda")
    assert disk.pci_slot == 10
    assert str(disk.path) == "/var/tmp/d.qcow2" and not disk.create and not disk.remove
    back = hotplug.without_disk(params, disk)
    assert spec(**back).disks == () and not any(k.endswith("_hotdisk1") for k in back)


def test_detaching_a_configured_disk_keeps_it_configured() -> None:
    params = {"images": "spare", "image_name_spare": "spare", "guest": "bundled"}
    (disk,) = spec(**params).disks
    back = hotplug.without_disk(params, disk)
    assert back["boot_drive_spare"] == "no"
    assert [d.name for d in spec(**back).standby_disks] == ["spare"]


def test_a_hotplugged_nic_takes_the_place_of_a_detached_one() -> None:
    first = hotplug.with_nic({}, ["nic1"], "hotnic1", "user", "virtio", "", "", (22,), 16)
    parsed = spec(**first)
    assert [n.name for n in parsed.nics] == ["nic1", "hotnic1"]
    assert parsed.nics[1].guest_ports == (22,) and parsed.nics[1].hotplugged
    detached = hotplug.with_disk_attached(first, "hotnic1", False)
    reuse = spec(**detached).nics[1]
    again = hotplug.with_nic(
        detached, ["nic1", "hotnic1"], "hotnic2", "user", "virtio", "", "", (), 17, reuse
    )
    assert [(n.name, n.index) for n in spec(**again).nics] == [("nic1", 0), ("hotnic2", 1)]


def test_names() -> None:
    assert hotplug.new_name("hotdisk", ["hotdisk1", "hotdisk3"]) == "hotdisk2"
    assert hotplug.check_name("vm1", "data", ["root"], "disk") == "data"
    for name, taken in (("bad name", []), ("9lives", []), ("root", ["root"])):
        with pytest.raises(virtlib.VMDeviceParamsError) as info:
            hotplug.check_name("vm1", name, taken, "disk")
        assert (info.value.vm, info.value.param, info.value.value) == ("vm1", "name", name)


def test_image_names_follow_name_and_format() -> None:
    assert hotplug.image_name("vm1", "/srv/a.qcow2", "qcow2", False) == "/srv/a"
    assert hotplug.image_name("vm1", "/dev/sdb", "raw", True) == "/dev/sdb"
    with pytest.raises(virtlib.VMDeviceParamsError) as info:
        hotplug.image_name("vm1", "/srv/a.img", "qcow2", False)
    assert info.value.param == "path" and "/srv/a.img" in str(info.value)


def test_vcpus_memory_and_dimms_in_params() -> None:
    params = {"mem": "512", "mem_max": "1024", "mem_slots": "2", "vcpus_max": "2"}
    assert spec(**hotplug.with_vcpus(params, 2)).vcpus == 2
    assert spec(**hotplug.with_balloon(params, 256)).growth.balloon_mib == 256
    plugged = hotplug.with_dimm(params, "dimm1", 128, 0, 0x40000000)
    (dimm,) = spec(**plugged).growth.dimms
    assert (dimm.name, dimm.size_mib, dimm.slot, dimm.base) == ("dimm1", 128, 0, 0x40000000)
    assert spec(**plugged).memory_mib == 640
    assert spec(**hotplug.without_dimm(plugged, "dimm1")).growth.dimms == ()


def test_media_change_drops_the_old_hashes() -> None:
    params = hotplug.with_medium({"cdroms": "cd1", "md5sum_cd1": "abc"}, "cd1", "/srv/new.iso")
    assert params["cdrom_cd1"] == "/srv/new.iso" and params["md5sum_cd1"] == ""


# --- values and errors ---------------------------------------------------------------------------
def test_disk_by_id_and_job_progress() -> None:
    disk = Disk("data", "vdb", "virtio", "/srv/d.qcow2", "qcow2", serial="data")
    assert disk.by_id == "/dev/disk/by-id/virtio-data"
    scsi = Disk("d", "sda", "scsi", "/p", "raw", serial="s1")
    assert scsi.by_id.endswith("HARDDISK_s1")
    assert Disk("d", "vdb", "virtio", "/p", "raw").by_id == ""
    job = BlockJobProgress("data", "copy", 5, 10)
    assert job.fraction == 0.5 and not job.ready
    assert BlockJobProgress("data", "copy", 10, 10).ready


def test_device_params_error_names_vm_param_and_value() -> None:
    error = virtlib.VMDeviceParamsError("vm1", "attach_disk", "size", "10Q", "is no size")
    assert isinstance(error, virtlib.VMDeviceError) and isinstance(error, virtlib.VMParamsError)
    assert str(error) == "VM 'vm1': attach_disk: size '10Q' is no size"
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own data
    assert (copy.vm, copy.operation, copy.param, copy.value) == (
        "vm1",
        "attach_disk",
        "size",
        "10Q",
    )


# --- the CLI's parser ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["disk", "attach", "vm1", "--size", "64M", "--json"], {"size": "64M", "json": True}),
        (["disk", "detach", "vm1", "vdb", "--timeout", "5"], {"disk": "vdb", "timeout": 5.0}),
        (["nic", "attach", "vm1", "--redir", "22", "--redir", "80"], {"redir": [22, 80]}),
        (["nic", "detach", "vm1", "1"], {"nic": "1"}),
        (["set", "vcpus", "vm1", "2", "--guest"], {"count": 2, "guest": True}),
        (["set", "memory", "vm1", "384", "--json"], {"mib": 384, "json": True}),
    ],
)
def test_cli_device_commands_parse(argv: list[str], expected: dict[str, object]) -> None:
    args = build_parser().parse_args(argv)
    assert args.name == "vm1" and callable(args.func)
    for key, value in expected.items():
        assert getattr(args, key) == value


# --- unplug waits for the device-removed event, up to a deadline --------------------------------
def test_unplug_waits_for_the_removed_event_of_its_device() -> None:
    import queue
    import threading
    import time

    from virtlib.backends.libvirt.devices import wait_removed
    from virtlib.backends.libvirt.events import DEVICE_REMOVED, DomainEvent
    from virtlib.waiting import Deadline

    events: queue.Queue[DomainEvent] = queue.Queue()
    events.put(DomainEvent("u", DEVICE_REMOVED, device="virtio-disk9"))  # another device
    started = time.monotonic()
    with pytest.raises(virtlib.VMDeviceTimeoutError) as info:
        wait_removed(events, "vm1", "hotdisk1", "virtio-disk1", Deadline(0.3))
    assert 0.3 <= time.monotonic() - started < 2
    assert (info.value.vm, info.value.device) == ("vm1", "hotdisk1")
    assert "still attached" in str(info.value)

    later = threading.Timer(0.1, events.put, [DomainEvent("u", DEVICE_REMOVED, device="d1")])
    later.start()
    started = time.monotonic()
    wait_removed(
        events, "vm1", "hotdisk1", "d1", Deadline(10)
    )  # returns on the event, not the deadline
    assert time.monotonic() - started < 5
