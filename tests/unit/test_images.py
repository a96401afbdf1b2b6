"""Images: the seed's functions and the path helpers, with the real qemu-img on real files."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import warnings
from pathlib import Path

import pytest

import virtlib
from virtlib import (
    ImageCheckWarning,
    ImageError,
    VMError,
    VMImageCheckError,
    VMImageMissingError,
    VMParamsError,
    check_image,
    convert_image,
    create_image,
    create_overlay,
    get_image_filename,
    image_info,
    remove_image,
    resize_image,
)

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img not installed")

MiB = 1024 * 1024


def qcow2_params(name: str = "disk", **extra: str) -> dict[str, str]:
    return {"image_name": name, "image_format": "qcow2", "image_size": "1M", **extra}


def files_in(path: Path) -> list[str]:
    return sorted(os.listdir(path))


# --- get_image_filename (the seed's semantics) ------------------------------------------


def test_image_filename_defaults() -> None:
    assert get_image_filename({}, "/images") == os.path.join("/images", "image.qcow2")


def test_image_filename_relative_name_and_format() -> None:
    params = {"image_name": "sub/disk1", "image_format": "raw"}
    assert get_image_filename(params, "/images") == os.path.join("/images", "sub/disk1.raw")


def test_image_filename_absolute_name_ignores_root_dir() -> None:
    params = {"image_name": "/abs/disk1", "image_format": "vmdk"}
    assert get_image_filename(params, "/images") == "/abs/disk1.vmdk"


def test_image_filename_raw_device_is_the_name_itself() -> None:
    params = {"image_name": "/dev/sdz", "image_format": "qcow2", "image_raw_device": "yes"}
    assert get_image_filename(params, "/images") == "/dev/sdz"
    params["image_raw_device"] = "no"
    assert get_image_filename(params, "/images") == "/dev/sdz.qcow2"


def test_image_filename_accepts_params_and_returns_str(tmp_path: Path) -> None:
    result = get_image_filename(virtlib.Params(image_name="x"), tmp_path)
    assert isinstance(result, str)
    assert result == str(tmp_path / "x.qcow2")


# --- create / info / remove -----------------------------------------------------------------


def test_create_qcow2_with_size_and_cluster_size(tmp_path: Path) -> None:
    path = create_image(qcow2_params(image_size="2M", image_cluster_size="4096"), tmp_path)
    assert path == str(tmp_path / "disk.qcow2")
    info = image_info(path)
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == 2 * MiB
    assert info["cluster-size"] == 4096


def test_create_raw(tmp_path: Path) -> None:
    params = {"image_name": "disk", "image_format": "raw", "image_size": "3M"}
    path = create_image(params, tmp_path)
    assert path == str(tmp_path / "disk.raw")
    assert image_info(path)["format"] == "raw"
    assert image_info(path)["virtual-size"] == 3 * MiB
    assert os.path.getsize(path) == 3 * MiB


def test_create_default_cluster_size_differs(tmp_path: Path) -> None:
    """Guard for the test above: 4096 is not simply the default."""
    path = create_image(qcow2_params(), tmp_path)
    assert image_info(path)["cluster-size"] != 4096


def test_image_info_of_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VMImageMissingError):
        image_info(tmp_path / "nope.qcow2")


def test_image_info_of_garbage_is_probed_as_raw(tmp_path: Path) -> None:
    path = tmp_path / "junk.bin"
    path.write_bytes(b"not an image" * 100)
    assert image_info(path)["format"] == "raw"


def test_remove_image(tmp_path: Path) -> None:
    params = qcow2_params()
    path = Path(create_image(params, tmp_path))
    assert path.exists()
    remove_image(params, tmp_path)
    assert not path.exists()
    remove_image(params, tmp_path)  # already gone: no error


def test_remove_image_never_removes_a_raw_device(tmp_path: Path) -> None:
    device = tmp_path / "fake-device"
    device.write_bytes(b"\0" * 512)
    params = {"image_name": str(device), "image_raw_device": "yes"}
    remove_image(params, tmp_path)
    assert device.exists()


# --- bad input leaves nothing behind ----------------------------------------------------------


def test_bad_size_is_a_params_error_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(VMParamsError, match="10Q"):
        create_image(qcow2_params(image_size="10Q"), tmp_path)
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("size", ["-1G", "1G; rm -rf /", "", "ten"])
def test_other_bad_sizes(tmp_path: Path, size: str) -> None:
    with pytest.raises(VMParamsError):
        create_image(qcow2_params(image_size=size), tmp_path)
    assert files_in(tmp_path) == []


def test_bad_format_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(VMError) as info:
        create_image(qcow2_params(image_format="bogus"), tmp_path)
    assert isinstance(info.value, ImageError | VMParamsError)
    assert "bogus" in str(info.value)
    assert files_in(tmp_path) == []


def test_bad_format_is_a_params_error(tmp_path: Path) -> None:
    with pytest.raises(VMParamsError):
        create_image(qcow2_params(image_format="bogus"), tmp_path)


def test_format_that_could_inject_arguments_is_refused(tmp_path: Path) -> None:
    with pytest.raises(VMParamsError):
        create_image(qcow2_params(image_format="qcow2 -o preallocation=full"), tmp_path)
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("cluster_size", ["3", "100", "4M"])
def test_bad_cluster_size_is_an_image_error_and_creates_nothing(
    tmp_path: Path, cluster_size: str
) -> None:
    with pytest.raises(ImageError) as info:
        create_image(qcow2_params(image_cluster_size=cluster_size), tmp_path)
    err = info.value
    assert err.status not in (0, None)
    assert "qemu-img" in err.argv[0]
    assert "create" in err.argv
    assert err.output.strip()
    assert files_in(tmp_path) == []


def test_failed_create_keeps_an_existing_file(tmp_path: Path) -> None:
    path = Path(create_image(qcow2_params(), tmp_path))
    with pytest.raises(ImageError):
        create_image(qcow2_params(image_cluster_size="3"), tmp_path)
    assert path.exists()


# --- convert / resize / overlay -------------------------------------------------------------


def test_convert_image(tmp_path: Path) -> None:
    src = create_image(qcow2_params(image_size="2M"), tmp_path)
    dst = tmp_path / "copy.raw"
    assert convert_image(src, dst, "raw") == str(dst)
    info = image_info(dst)
    assert info["format"] == "raw"
    assert info["virtual-size"] == 2 * MiB
    back = tmp_path / "back.qcow2"
    convert_image(dst, back, "qcow2", src_format="raw", compress=True)
    assert image_info(back)["format"] == "qcow2"


def test_convert_missing_source(tmp_path: Path) -> None:
    with pytest.raises(VMImageMissingError):
        convert_image(tmp_path / "nope.qcow2", tmp_path / "out.raw", "raw")
    assert files_in(tmp_path) == []


def test_convert_failure_leaves_no_destination(tmp_path: Path) -> None:
    src = create_image(qcow2_params(), tmp_path)
    with pytest.raises(ImageError):
        convert_image(src, tmp_path / "out.img", "bogus")
    assert files_in(tmp_path) == ["disk.qcow2"]


def test_resize_grow_and_shrink(tmp_path: Path) -> None:
    path = create_image(qcow2_params(image_size="2M"), tmp_path)
    resize_image(path, "4M")
    assert image_info(path)["virtual-size"] == 4 * MiB
    resize_image(path, "+1M")
    assert image_info(path)["virtual-size"] == 5 * MiB
    with pytest.raises(ImageError):
        resize_image(path, "1M")
    assert image_info(path)["virtual-size"] == 5 * MiB
    resize_image(path, "1M", shrink=True)
    assert image_info(path)["virtual-size"] == 1 * MiB


def test_resize_raw_shrink(tmp_path: Path) -> None:
    path = create_image({"image_name": "r", "image_format": "raw", "image_size": "4M"}, tmp_path)
    resize_image(path, "-2M", shrink=True)
    assert image_info(path)["virtual-size"] == 2 * MiB


def test_resize_bad_size_and_missing_file(tmp_path: Path) -> None:
    path = create_image(qcow2_params(), tmp_path)
    with pytest.raises(VMParamsError):
        resize_image(path, "big")
    with pytest.raises(VMImageMissingError):
        resize_image(tmp_path / "nope.qcow2", "2M")


def test_create_overlay(tmp_path: Path) -> None:
    base = Path(create_image(qcow2_params("base", image_size="3M"), tmp_path))
    overlay = tmp_path / "top.qcow2"
    assert create_overlay(base, overlay, "qcow2") == str(overlay)
    info = image_info(overlay)
    assert info["format"] == "qcow2"
    assert info["backing-filename"] == str(base.resolve())
    assert info["backing-filename-format"] == "qcow2"
    assert info["virtual-size"] == 3 * MiB
    chain = image_info(overlay, backing_chain=True)
    assert [i["filename"] for i in chain] == [str(overlay), str(base.resolve())]


def test_create_overlay_on_raw_backing(tmp_path: Path) -> None:
    base = create_image({"image_name": "b", "image_format": "raw", "image_size": "1M"}, tmp_path)
    overlay = tmp_path / "top.qcow2"
    create_overlay(base, overlay, "raw")
    assert image_info(overlay)["backing-filename-format"] == "raw"


def test_create_overlay_with_relative_backing_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_image(qcow2_params("base"), tmp_path)
    monkeypatch.chdir(tmp_path)
    create_overlay("base.qcow2", "top.qcow2", "qcow2")
    monkeypatch.chdir("/")
    info = image_info(tmp_path / "top.qcow2", backing_chain=True)
    assert len(info) == 2


def test_create_overlay_missing_backing_leaves_no_overlay(tmp_path: Path) -> None:
    overlay = tmp_path / "top.qcow2"
    with pytest.raises(VMImageMissingError) as info:
        create_overlay(tmp_path / "missing.qcow2", overlay, "qcow2")
    assert "missing.qcow2" in info.value.filename
    assert not overlay.exists()
    assert files_in(tmp_path) == []


def test_create_overlay_needs_backing_format(tmp_path: Path) -> None:
    base = create_image(qcow2_params("base"), tmp_path)
    with pytest.raises(VMParamsError):
        create_overlay(base, tmp_path / "top.qcow2", "")
    assert not (tmp_path / "top.qcow2").exists()


# --- check_image ------------------------------------------------------------------------------


def _qcow2_layout(path: Path) -> tuple[int, int, int]:
    """(cluster size, offset of the first refcount block, bytes per refcount entry)."""
    with path.open("rb") as f:
        header = f.read(104)
        assert header[:4] == b"QFI\xfb"
        version = struct.unpack(">I", header[4:8])[0]
        cluster_bits = struct.unpack(">I", header[20:24])[0]
        refcount_table_offset = struct.unpack(">Q", header[48:56])[0]
        refcount_order = struct.unpack(">I", header[96:100])[0] if version >= 3 else 4
        f.seek(refcount_table_offset)
        refblock_offset = struct.unpack(">Q", f.read(8))[0]
    assert refblock_offset
    return 1 << cluster_bits, refblock_offset, (1 << refcount_order) // 8


def _set_refcount(path: Path, cluster: int, refcount: int) -> None:
    _, refblock, width = _qcow2_layout(path)
    with path.open("r+b") as f:
        f.seek(refblock + cluster * width)
        f.write(refcount.to_bytes(width, "big"))


def corrupt(path: Path) -> None:
    """Cluster 0 (the header) is in use, but its refcount says free: real corruption."""
    _set_refcount(path, 0, 0)


def leak(path: Path) -> None:
    """Append one cluster nobody references and count it as used: a leaked cluster."""
    cluster_size, _, _ = _qcow2_layout(path)
    index = (path.stat().st_size + cluster_size - 1) // cluster_size
    with path.open("r+b") as f:
        f.seek(index * cluster_size)
        f.write(b"\0" * cluster_size)
    _set_refcount(path, index, 1)


def qemu_img_check_status(path: Path) -> int:
    proc = subprocess.run(["qemu-img", "check", str(path)], capture_output=True, check=False)
    return proc.returncode


def test_check_clean_image(tmp_path: Path) -> None:
    params = qcow2_params(vm_type="libvirt")
    path = create_image(params, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = check_image(params, tmp_path)
    assert result is not None
    assert result.ok
    assert result.status == 0
    assert (result.corruptions, result.leaks) == (0, 0)
    assert result.filename == path


def test_check_missing_image(tmp_path: Path) -> None:
    with pytest.raises(VMImageMissingError) as info:
        check_image(qcow2_params("nope"), tmp_path)
    assert info.value.filename == str(tmp_path / "nope.qcow2")


def test_check_raw_image_is_skipped(tmp_path: Path) -> None:
    params = {"image_name": "r", "image_format": "raw", "image_size": "1M"}
    create_image(params, tmp_path)
    assert check_image(params, tmp_path) is None


def test_check_corrupt_image_raises(tmp_path: Path) -> None:
    params = qcow2_params()
    path = Path(create_image(params, tmp_path))
    corrupt(path)
    assert qemu_img_check_status(path) == 2, "the corruption helper must really corrupt"
    with pytest.raises(VMImageCheckError) as info:
        check_image(params, tmp_path)
    assert info.value.filename == str(path)
    assert repr(str(path)) in str(info.value)


def test_check_leaked_clusters_warn(tmp_path: Path) -> None:
    params = qcow2_params()
    path = Path(create_image(params, tmp_path))
    leak(path)
    assert qemu_img_check_status(path) == 3, "the leak helper must really leak"
    with pytest.warns(ImageCheckWarning) as record:
        result = check_image(params, tmp_path)
    assert result is not None
    assert result.status == 3
    assert not result.ok
    assert result.leaks > 0
    assert result.corruptions == 0
    warning = record[0].message
    assert isinstance(warning, ImageCheckWarning)
    assert warning.result.leaks == result.leaks
    assert str(path) in str(warning)


def test_leak_warning_can_be_made_an_error(tmp_path: Path) -> None:
    params = qcow2_params()
    leak(Path(create_image(params, tmp_path)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImageCheckWarning)
        with pytest.raises(ImageCheckWarning):
            check_image(params, tmp_path)


def test_check_uses_qemu_img_binary_param(tmp_path: Path) -> None:
    params = qcow2_params()
    create_image(params, tmp_path)
    with pytest.raises(VMParamsError, match="no-such-qemu-img"):
        check_image({**params, "qemu_img_binary": "no-such-qemu-img"}, tmp_path)


def test_check_format_without_check_support_is_skipped(tmp_path: Path) -> None:
    params = {"image_name": "v", "image_format": "vpc", "image_size": "1M"}
    create_image(params, tmp_path)
    assert check_image(params, tmp_path) is None
