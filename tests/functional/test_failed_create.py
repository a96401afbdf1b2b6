"""Every failed create() leaves nothing: no domain, private directory, image it made, or
reservation -- whichever step failed.  And errors name the VM, the param and the value."""

from __future__ import annotations

from pathlib import Path

import pytest
from functional_support import VMFactory, domain_names

import virtlib
from virtlib.macpool import MacPool
from virtlib.ports import PortPool
from virtlib.workdir import default_base


def private_dirs(instance: str) -> list[Path]:
    base = default_base()
    return [p for p in base.iterdir() if instance in p.name] if base.is_dir() else []


def assert_nothing_left(vm: virtlib.BaseVM, *files: Path) -> None:
    assert vm.name not in domain_names(vm.uri)
    assert not any(k.startswith(vm.instance) for k in MacPool().reserved())
    assert not any(k.startswith(vm.instance) for k in PortPool().table.rows())
    assert private_dirs(vm.instance) == []
    for path in files:
        assert not path.exists(), f"{path} was left behind"
    vm.destroy()  # nothing to stop: must not raise
    vm.destroy(gracefully=False)


def test_bad_params_name_the_vm_the_param_and_the_value(vm_factory: VMFactory) -> None:
    with pytest.raises(virtlib.VMParamsError, match=r"VM '.*-badmem-.*'.*'mem'.*'lots'"):
        vm_factory("badmem", start=False, mem="lots")
    with pytest.raises(virtlib.VMParamsError, match=r"'image_size' of image 'disk1'.*'10Q'"):
        vm_factory(start=False, images="disk1", create_image="yes", image_size="10Q")
    with pytest.raises(virtlib.VMParamsError, match=r"'initrd'.*needs 'kernel'"):
        vm_factory(start=False, initrd="/boot/initrd.img")


def test_image_creation_failure(vm_factory: VMFactory, tmp_path: Path) -> None:
    # The image's directory does not exist: qemu-img cannot make it.
    vm = vm_factory(
        start=False,
        guest="bundled",
        images="disk1",
        create_image="yes",
        image_size="16M",
        image_name=str(tmp_path / "nowhere" / "disk1"),
    )
    with pytest.raises(virtlib.VMError):
        vm.create()
    assert_nothing_left(vm)


def test_created_image_is_removed_when_a_later_step_fails(
    vm_factory: VMFactory, tmp_path: Path
) -> None:
    image = tmp_path / "disk1.qcow2"
    vm = vm_factory(
        start=False,
        guest="bundled",
        images="disk1",
        create_image="yes",
        image_size="16M",
        image_name=str(tmp_path / "disk1"),
        cdroms="cd1",
        cdrom_cd1=str(tmp_path / "missing.iso"),  # the design step fails after the image
    )
    with pytest.raises(virtlib.VMImageMissingError, match="CD image 'cd1'"):
        vm.create()
    assert_nothing_left(vm, image)


def test_create_image_makes_the_image_before_it_is_checked(
    vm_factory: VMFactory, qemu_dir: Path
) -> None:
    image = qemu_dir / "disk1.qcow2"
    vm = vm_factory(
        guest="bundled",
        images="disk1",
        create_image="yes",
        remove_image="yes",
        image_size="16M",
        image_name=str(qemu_dir / "disk1"),
    )
    assert vm.is_alive() and image.exists()
    console = vm.wait_for_serial_login(timeout=120)
    assert console.cmd("cat /sys/block/vda/size").strip() == str(16 * 2048)
    vm.destroy()
    assert not image.exists()


def test_missing_disk_image_names_the_disk_and_the_appended_format(
    vm_factory: VMFactory, tmp_path: Path
) -> None:
    vm = vm_factory(start=False, images="disk1", image_name=str(tmp_path / "disk.qcow2"))
    with pytest.raises(virtlib.VMImageMissingError) as info:
        vm.create()
    text = str(info.value)
    assert vm.name in text and "disk image 'disk1'" in text and "disk.qcow2.qcow2" in text
    assert "appended" in text
    assert_nothing_left(vm)


def test_missing_kernel_is_named(vm_factory: VMFactory, tmp_path: Path) -> None:
    vm = vm_factory(start=False, kernel=str(tmp_path / "vmlinuz"))
    with pytest.raises(virtlib.VMImageMissingError, match="kernel not found"):
        vm.create()
    assert_nothing_left(vm)


def test_unavailable_resources(vm_factory: VMFactory) -> None:
    for params, error in (
        ({"hugepage": "yes"}, virtlib.VMHugePageError),
        ({"pci_assignable": "vf"}, virtlib.VMPAError),
        ({"pci_assignable": "bogus"}, virtlib.VMBadPATypeError),
    ):
        vm = vm_factory(start=False, **params)
        with pytest.raises(error):
            vm.create()
        assert_nothing_left(vm)


def test_libvirt_refusals(vm_factory: VMFactory) -> None:
    too_much = str(64 * 1024 * 1024)  # 64 TiB: beyond what libvirt accepts here
    for params in ({"mem": too_much}, {"machine_type": "no-such-machine"}):
        vm = vm_factory(start=False, **params)
        with pytest.raises(virtlib.VMCreateError) as info:
            vm.create()
        assert info.value.output
        assert_nothing_left(vm)


def test_duplicate_name_fails_and_leaves_the_other_vm_alone(vm_factory: VMFactory) -> None:
    first = vm_factory()
    second = virtlib.new_vm(first.name, first.params.copy())
    with pytest.raises(virtlib.VMCreateError):
        second.create()
    assert first.is_alive()
    assert not any(k.startswith(second.instance) for k in PortPool().table.rows())
    assert private_dirs(second.instance) == []
    second.destroy()
    assert first.is_alive()
