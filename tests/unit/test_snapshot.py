"""Snapshots without a daemon: the value and its record, the tree rules, names, the snapshot
XML (validated against libvirt's schema) and the errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from lxml import etree

import virtlib
from virtlib.backends.libvirt import domxml, metadata, snapshot_xml
from virtlib.errors import VMError
from virtlib.snapshot import (
    Snapshot,
    SnapshotDisk,
    SnapshotOverlay,
    SnapshotTree,
    check_kind,
    check_name,
    decode,
    encode,
)
from virtlib.state import Allocations, VMState

GOLDEN = Path(__file__).parent / "golden"


def snap(name: str, parent: str | None = None, **fields: object) -> Snapshot:
    return Snapshot(name=name, parent=parent, created=float(len(name)), **fields)  # type: ignore[arg-type]


def tree_of(*snapshots: Snapshot, current: str = "") -> SnapshotTree:
    return SnapshotTree(tuple(snapshots), current or snapshots[-1].name, "vm1")


# --- the value --------------------------------------------------------------------------
def test_snapshot_record_round_trips_through_json() -> None:
    full = Snapshot(
        name="s1",
        kind="external",
        memory=True,
        description="with <xml> & 'quotes'",
        created=1700000000.5,
        parent="s0",
        state="paused",
        disks=(SnapshotDisk("d1", "/images/d1.qcow2", "qcow2", survives=True),),
        memory_file="/run/virtlib/s1.mem",
        overlays=(SnapshotOverlay("d1", "/images/d1.snap-s1-abc.qcow2"),),
        files=("/run/virtlib/s1.mem", "/images/d1.snap-s1-abc.qcow2"),
    )
    assert decode(encode([full])) == (full,)
    assert full.external and not full.internal and not full.disk_only
    assert full.created_text == "2023-11-14T22:13:20Z"


def test_records_without_survives_read_as_not_surviving() -> None:
    old = Snapshot("s0", disks=(SnapshotDisk("d1", "/i/d1.qcow2"),)).to_json()
    old["disks"] = [d[:3] for d in old["disks"]]
    assert Snapshot.from_json(old).disks[0].survives is False


@pytest.mark.parametrize(
    "broken",
    [{}, {"name": "x", "kind": "sideways", "disks": []}, {"name": "x", "kind": "internal"}],
)
def test_a_broken_record_is_a_value_error(broken: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="snapshot"):
        Snapshot.from_json(broken)


# --- the tree -------------------------------------------------------------------------------
def test_deleting_a_snapshot_hangs_its_children_from_its_parent() -> None:
    tree = tree_of(snap("a"), snap("b", "a"), snap("c", "b"), snap("d", "b"), current="c")
    after = tree.without("b")
    assert [(s.name, s.parent) for s in after.snapshots] == [
        ("a", None),
        ("c", "a"),
        ("d", "a"),
    ]
    assert after.current == "c"
    assert tree.without("c").current == "b"  # the current one's parent becomes current
    assert tree.without("a").get("b").parent is None


def test_descendants_come_leaves_first_and_ancestry_parents_first() -> None:
    tree = tree_of(snap("c", "b"), snap("a"), snap("d", "b"), snap("b", "a"))
    below = [s.name for s in tree.descendants("a")]
    assert set(below) == {"b", "c", "d"} and below.index("b") > below.index("c")
    order = [s.name for s in tree.ancestry()]
    assert order.index("a") < order.index("b") < min(order.index("c"), order.index("d"))


def test_adding_makes_a_child_of_the_current_one_current() -> None:
    tree = SnapshotTree(vm="vm1").added(snap("a"))
    tree = tree.added(snap("b", "a"))
    assert tree.current == "b" and tree.current_snapshot() == tree.get("b")
    assert tree.reverted_to("a").current == "a"
    assert [s.name for s in tree.children("a")] == ["b"]
    assert tree.replaced(snap("b", "a", description="new")).get("b").description == "new"


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(virtlib.VMSnapshotNotFoundError) as info:
        tree_of(snap("a"), snap("b", "a")).get("zz")
    assert info.value.known == ("a", "b")
    assert (info.value.vm, info.value.snapshot) == ("vm1", "zz")
    assert "'a', 'b'" in str(info.value) and "'zz'" in str(info.value)
    with pytest.raises(virtlib.VMSnapshotNotFoundError, match="none"):
        SnapshotTree(vm="vm1").reverted_to("a")


# --- names and kinds ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a", "checkpoint-1", "v1.2_rc", "X" * 64])
def test_good_names(name: str) -> None:
    assert check_name("vm1", name) == name


@pytest.mark.parametrize("name", ["", ".x", "-x", "a b", "a/b", "../up", "é", "X" * 65, None, 3])
def test_bad_names_name_the_param_and_the_value(name: object) -> None:
    with pytest.raises(virtlib.VMSnapshotError, match="parameter 'name'") as info:
        check_name("vm1", name)
    assert info.value.vm == "vm1" and repr(name) in str(info.value)


def test_a_taken_name_and_a_bad_kind() -> None:
    with pytest.raises(virtlib.VMSnapshotError, match="already"):
        check_name("vm1", "a", ["a"])
    assert check_kind("vm1", "s", "external") == "external"
    with pytest.raises(virtlib.VMSnapshotError, match=r"parameter 'kind'.*'sideways'"):
        check_kind("vm1", "s", "sideways")


# --- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "exc",
    [
        virtlib.VMSnapshotError("vm1", "s", "why"),
        virtlib.VMSnapshotKindError("vm1", "s", "no qcow2"),
        virtlib.VMSnapshotRevertError("vm1", "s", "QEMU said no"),
        virtlib.VMSnapshotNotFoundError("vm1", "s", ["a"]),
    ],
)
def test_snapshot_errors_name_vm_and_snapshot_and_pickle(exc: virtlib.VMSnapshotError) -> None:
    assert isinstance(exc, virtlib.VMSnapshotError) and isinstance(exc, VMError)
    assert "'vm1'" in str(exc) and "'s'" in str(exc)
    again = pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own bytes
    assert type(again) is type(exc) and str(again) == str(exc)


# --- the record in the domain's metadata --------------------------------------------------------
def state_with(*snapshots: Snapshot, current: str = "") -> VMState:
    return VMState.designed(
        "vm1",
        {"mem": "256"},
        ".",
        instance="i-1",
        uri="qemu:///system",
        uuid="u",
        allocations=Allocations(),
        snapshots=snapshots,
        current_snapshot=current,
        owned_files=("/x/a.mem",),
    )


def test_snapshots_travel_in_the_domain_metadata() -> None:
    state = state_with(snap("a", memory_file="/x/a.mem", kind="external"), current="a")
    values = metadata.encode(state)
    back = metadata.decode(values, "vm1", "qemu:///system", "u")
    assert back.snapshots == state.snapshots and back.current_snapshot == "a"
    assert back.snapshot_tree.current_snapshot() == state.snapshots[0]
    element = etree.fromstring(metadata.element(state))  # what virDomainSetMetadata gets
    assert element.tag == "vm" and element.nsmap == {}
    assert {child.tag: child.text or "" for child in element} == values


def test_damaged_snapshot_metadata_is_reported() -> None:
    values = metadata.encode(state_with())
    values["snapshots"] = '[{"name": "a"}]'
    with pytest.raises(VMError, match="damaged"):
        metadata.decode(values, "vm1", "qemu:///system", "u")


# --- snapshot XML ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def schema() -> etree.RelaxNG:
    path = domxml.schema_path("domainsnapshot.rng")
    if not path.exists():
        pytest.skip(f"libvirt's snapshot schema {path} is not installed (package libvirt-daemon)")
    return etree.RelaxNG(file=str(path))


def valid(schema: etree.RelaxNG, xml: str) -> etree._Element:
    root = etree.fromstring(xml.encode())
    assert schema.validate(root), f"{schema.error_log}\n{xml}"
    return root


def test_internal_snapshot_xml(schema: etree.RelaxNG) -> None:
    config = snapshot_xml.SnapshotConfig(
        name="s1",
        description="a & b <c>",
        memory=snapshot_xml.INTERNAL,
        disks=(
            snapshot_xml.DiskSnapshotConfig("vda", snapshot_xml.INTERNAL),
            snapshot_xml.DiskSnapshotConfig("hdc", snapshot_xml.NO),
        ),
    )
    root = valid(schema, snapshot_xml.render(config))
    assert root.findtext("description") == "a & b <c>"
    assert root.find("memory").get("snapshot") == "internal"  # type: ignore[union-attr]
    assert [(d.get("name"), d.get("snapshot")) for d in root.iter("disk")] == [
        ("vda", "internal"),
        ("hdc", "no"),
    ]


def test_external_snapshot_xml_keeps_paths_as_data(schema: etree.RelaxNG) -> None:
    odd = '/images/it\'s <odd> & "quoted".qcow2'
    config = snapshot_xml.SnapshotConfig(
        name="s2",
        memory=snapshot_xml.EXTERNAL,
        memory_file="/run/virtlib/s2 & co.mem",
        disks=(snapshot_xml.DiskSnapshotConfig("vda", snapshot_xml.EXTERNAL, odd),),
    )
    root = valid(schema, snapshot_xml.render(config))
    assert root.find("memory").get("file") == "/run/virtlib/s2 & co.mem"  # type: ignore[union-attr]
    disk = root.find("disks/disk")
    assert disk is not None and disk.get("type") == "file"
    assert disk.find("source").get("file") == odd  # type: ignore[union-attr]
    assert disk.find("driver").get("type") == "qcow2"  # type: ignore[union-attr]


def test_redefinition_xml_carries_the_domain(schema: etree.RelaxNG) -> None:
    domain = (GOLDEN / "qemu.xml").read_text()
    config = snapshot_xml.SnapshotConfig(
        name="s3",
        memory=snapshot_xml.NO,
        disks=(snapshot_xml.DiskSnapshotConfig("vda", snapshot_xml.EXTERNAL, "/i/o.qcow2"),),
        state="disk-snapshot",
        created=1700000000,
        parent="s2",
        domain=domain,
    )
    root = valid(schema, snapshot_xml.render(config))
    assert root.findtext("parent/name") == "s2"
    assert root.findtext("creationTime") == "1700000000"
    assert root.findtext("state") == "disk-snapshot"
    assert root.find("domain") is not None


def test_disks_are_read_from_domain_xml_in_order() -> None:
    xml = """<domain><devices>
      <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
        <source file='/i/top.qcow2' index='2'/><target dev='vda' bus='virtio'/></disk>
      <disk type='file' device='cdrom'><driver name='qemu' type='raw'/>
        <source file='/i/seed.iso'/><target dev='hdc' bus='ide'/><readonly/></disk>
      <disk type='block' device='disk'><source dev='/dev/sdz'/><target dev='vdb'/></disk>
    </devices></domain>"""
    disks = snapshot_xml.disk_elements(xml)
    assert [d.target for d in disks] == ["vda", "hdc", "vdb"]
    assert (disks[0].source, disks[0].format, disks[0].readonly) == ("/i/top.qcow2", "qcow2", False)
    assert (disks[1].device, disks[1].readonly) == ("cdrom", True)
    assert (disks[2].source, disks[2].block, disks[2].format) == ("/dev/sdz", True, "raw")


def test_the_vms_disks_are_named_from_params_in_designer_order() -> None:
    from virtlib.backends.libvirt.snapshots import disks_in
    from virtlib.spec import VMSpec

    spec = VMSpec.from_params(
        "vm1",
        virtlib.Params(images="root data", image_name_root="/i/root", image_name_data="/i/data"),
        "/",
    )
    xml = """<domain><devices>
      <disk device='disk'><driver type='qcow2'/><source file='/i/root.snap-x.qcow2'/>
        <target dev='vda'/></disk>
      <disk device='cdrom'><source file='/i/seed.iso'/><target dev='hdc'/><readonly/></disk>
      <disk device='disk'><driver type='qcow2'/><source file='/i/data.qcow2'/>
        <target dev='vdb'/><readonly/></disk>
    </devices></domain>"""
    disks, targets = disks_in(spec, xml)
    assert [(d.name, d.target, d.path, d.writable) for d in disks] == [
        ("root", "vda", "/i/root.snap-x.qcow2", True),
        ("data", "vdb", "/i/data.qcow2", False),
    ]
    assert targets == ["vda", "hdc", "vdb"]


# --- the VM's state after a snapshot moved its disks ------------------------------------------
def test_with_disks_points_the_disk_at_the_new_file_and_keeps_remove_image() -> None:
    from virtlib.backends.libvirt.snapshots import state_at, with_disks

    state = VMState.designed(
        "vm1",
        {"images": "d1", "image_name_d1": "/i/d1", "remove_image_d1": "yes", "mem": "256"},
        "/",
        instance="i-1",
        uri="qemu:///system",
        uuid="u",
        allocations=Allocations(),
    )
    tree = SnapshotTree(vm="vm1").added(
        snap("s1", kind="external", disks=(SnapshotDisk("d1", "/i/d1.qcow2"),))
    )
    moved = with_disks(state, {"d1": ("/i/d1.snap-s1-x.qcow2", "qcow2")}, tree, ("/m/s1.mem",))
    disk = moved.spec.disks[0]
    assert str(disk.path) == "/i/d1.snap-s1-x.qcow2" and disk.format == "qcow2"
    assert not disk.remove and not disk.create
    # the image remove_image would have removed goes with the VM still, as an owned file
    assert moved.owned_files == ("/m/s1.mem", "/i/d1.qcow2")
    assert moved.snapshots == tree.snapshots and moved.current_snapshot == "s1"
    assert (moved.instance, moved.uuid, moved.uri) == (state.instance, state.uuid, state.uri)
    back = state_at(moved, tree.get("s1"))
    assert str(back.spec.disks[0].path) == "/i/d1.qcow2" and back.snapshots == ()


def test_a_file_that_is_not_of_its_format_is_refused() -> None:
    from virtlib.backends.libvirt.snapshots import point_disk

    params: dict[str, str] = {}
    point_disk(params, "d1", "/i/x.qcow2")
    assert params["image_name_d1"] == "/i/x" and params["image_snapshot_d1"] == "no"
    with pytest.raises(VMError, match=r"'d1'.*no \.qcow2"):
        point_disk(params, "d1", "/i/x.raw")
