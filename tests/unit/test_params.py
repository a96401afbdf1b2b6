"""Params: autotest's string dict, its accessors and the ``key = value`` file reader."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from virtlib import Params, VMParamsError, VMParamsKeyError

# --- objects() ------------------------------------------------------------------------------


def test_objects_splits_on_any_whitespace() -> None:
    p = Params(images="disk1  disk2\tdisk3\n disk4 ")
    assert p.objects("images") == ["disk1", "disk2", "disk3", "disk4"]


def test_objects_missing_or_empty_is_empty_list() -> None:
    p = Params(nics="   ")
    assert p.objects("images") == []
    assert p.objects("nics") == []


def test_objects_drops_duplicates_keeping_first_place() -> None:
    p = Params(nics="b a b c a")
    assert p.objects("nics") == ["b", "a", "c"]


# --- object_params() ------------------------------------------------------------------------


def test_object_params_suffix_overrides_and_other_keys_pass_through() -> None:
    p = Params(
        image_format="qcow2",
        image_format_disk1="raw",
        image_size="10G",
        image_size_disk2="1G",
        mem="512",
    )
    d1 = p.object_params("disk1")
    assert d1["image_format"] == "raw"
    assert d1["image_size"] == "10G"
    assert d1["mem"] == "512"
    # the suffixed keys are still there, as in autotest
    assert d1["image_format_disk1"] == "raw"
    d2 = p.object_params("disk2")
    assert d2["image_format"] == "qcow2"
    assert d2["image_size"] == "1G"


def test_object_params_leaves_the_parent_unchanged() -> None:
    p = Params(image_format="qcow2", image_format_disk1="raw")
    before = dict(p)
    child = p.object_params("disk1")
    child["mem"] = "1024"
    assert dict(p) == before
    assert isinstance(child, Params)
    assert child is not p


def test_object_params_cuts_at_first_occurrence_of_the_suffix() -> None:
    p = Params({"a_vm1_b_vm1": "x"})
    assert p.object_params("vm1")["a"] == "x"
    assert "a_vm1_b" not in p.object_params("vm1")


def test_object_params_needs_a_real_suffix() -> None:
    """A key equal to ``_<name>`` has nothing to override (no empty key appears)."""
    p = Params({"_disk1": "x", "other": "y"})
    result = p.object_params("disk1")
    assert "" not in result
    assert dict(result) == dict(p)


def test_object_params_does_not_match_a_longer_object_name() -> None:
    p = Params(image_format="qcow2", image_format_disk10="raw")
    assert p.object_params("disk1")["image_format"] == "qcow2"
    assert p.object_params("disk10")["image_format"] == "raw"


def test_object_params_nest_one_level_at_a_time() -> None:
    p = Params(
        image_name="default",
        image_name_image1="for-any-vm",
        image_name_image1_vm1="for-vm1",
    )
    assert p.object_params("vm1").object_params("image1")["image_name"] == "for-vm1"
    assert p.object_params("vm2").object_params("image1")["image_name"] == "for-any-vm"
    assert p.object_params("vm2").object_params("image2")["image_name"] == "default"


# --- typed getters --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["yes", "YES", "On", "true", "TRUE", " yes "])
def test_get_boolean_true(value: str) -> None:
    assert Params(flag=value).get_boolean("flag") is True


@pytest.mark.parametrize("value", ["no", "No", "OFF", "false", "False"])
def test_get_boolean_false(value: str) -> None:
    assert Params(flag=value).get_boolean("flag") is False


@pytest.mark.parametrize("value", ["y", "1", "maybe", "", "yess"])
def test_get_boolean_rejects_other_values_naming_the_key(value: str) -> None:
    with pytest.raises(VMParamsError, match="'hugepage'"):
        Params(hugepage=value).get_boolean("hugepage")


def test_get_boolean_default_when_missing() -> None:
    p = Params()
    assert p.get_boolean("flag") is False
    assert p.get_boolean("flag", True) is True
    assert p.get_boolean("flag", None) is None


@pytest.mark.parametrize(("value", "expected"), [("10", 10), ("0x10", 16), ("0o10", 8), (" 7 ", 7)])
def test_get_numeric(value: str, expected: int) -> None:
    assert Params(n=value).get_numeric("n") == expected


@pytest.mark.parametrize("value", ["abc", "1.5", "", "10G"])
def test_get_numeric_rejects_non_integers_naming_the_key(value: str) -> None:
    with pytest.raises(VMParamsError, match="'smp'"):
        Params(smp=value).get_numeric("smp")


def test_get_numeric_default_when_missing() -> None:
    assert Params().get_numeric("n") == 0
    assert Params().get_numeric("n", 5) == 5
    assert Params().get_numeric("n", None) is None


def test_get_float() -> None:
    assert Params(t="2.5").get_float("t") == 2.5
    assert Params().get_float("t", 1.0) == 1.0
    with pytest.raises(VMParamsError, match="'t'"):
        Params(t="soon").get_float("t")


def test_get_list() -> None:
    p = Params(a="x  y\tz", b=" x , y ,, z ")
    assert p.get_list("a") == ["x", "y", "z"]
    assert p.get_list("b", delimiter=",") == ["x", "y", "z"]
    assert p.get_list("missing") == []
    default = ["d"]
    result = p.get_list("missing", default)
    assert result == ["d"]
    result.append("e")
    assert default == ["d"], "the default must not be shared with the caller"


def test_get_dict() -> None:
    p = Params(opts="a=1, b = 2 ,c=x=y")
    assert p.get_dict("opts", delimiter=",") == {"a": "1", "b": "2", "c": "x=y"}
    assert p.get_dict("missing") == {}
    assert p.get_dict("missing", {"k": "v"}) == {"k": "v"}
    assert Params(o="a:1;b:2").get_dict("o", delimiter=";", separator=":") == {"a": "1", "b": "2"}


@pytest.mark.parametrize("value", ["a=1,b", "=1", "a=1, =2"])
def test_get_dict_bad_item_raises_naming_the_key(value: str) -> None:
    with pytest.raises(VMParamsError, match="'opts'"):
        Params(opts=value).get_dict("opts", delimiter=",")


# --- dict behaviour ---------------------------------------------------------------------------


def test_missing_key_raises_a_key_error_naming_the_key() -> None:
    p = Params(a="1")
    with pytest.raises(KeyError) as info:
        _ = p["image_size"]
    assert isinstance(info.value, VMParamsKeyError)
    assert isinstance(info.value, VMParamsError)
    assert "image_size" in str(info.value)
    assert p.get("image_size") is None
    assert p.get("image_size", "10G") == "10G"


def test_values_are_coerced_to_strings() -> None:
    p = Params({"mem": 1024, "on": True}, off=False, ratio=1.5, path=Path("/a/b"))
    assert p["mem"] == "1024"
    assert p["on"] == "yes"
    assert p["off"] == "no"
    assert p["ratio"] == "1.5"
    assert p["path"] == "/a/b"
    p["smp"] = 4
    p.update(x=0, y=True)
    p.setdefault("z", 3)
    assert (p["smp"], p["x"], p["y"], p["z"]) == ("4", "0", "yes", "3")
    assert all(isinstance(v, str) for v in p.values())
    assert p.get_boolean("on") is True
    assert p.get_numeric("mem") == 1024


@pytest.mark.parametrize("value", [None, ["a"], {"a": 1}, object()])
def test_unsupported_value_types_are_rejected_naming_the_key(value: object) -> None:
    with pytest.raises(VMParamsError, match="'weird'"):
        Params(weird=value)


def test_copy_is_an_independent_params() -> None:
    p = Params(a="1")
    c = p.copy()
    c["a"] = "2"
    assert isinstance(c, Params)
    assert p["a"] == "1"


def test_setdefault_keeps_existing_value() -> None:
    p = Params(a="1")
    assert p.setdefault("a", "2") == "1"
    assert p.setdefault("b", "2") == "2"
    assert p["b"] == "2"


# --- from_file --------------------------------------------------------------------------------


def _write(tmp_path: Path, text: str, name: str = "vm.cfg") -> Path:
    path = tmp_path / "cfg" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_from_file_reads_key_value_lines(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "# a comment\n"
        "\n"
        "vm_type = libvirt\n"
        "   mem=1024   \n"
        "    # an indented comment\n"
        'shell_prompt = "^\\[root@.*\\]# "\n'
        "username = ' padded '\n"
        "kernel_args = console=ttyS0 root=/dev/vda\n"
        "empty =\n"
        "mem = 2048\n",
    )
    p = Params.from_file(path)
    assert isinstance(p, Params)
    assert p == {
        "vm_type": "libvirt",
        "mem": "2048",  # a later line overrides an earlier one
        "shell_prompt": "^\\[root@.*\\]# ",
        "username": " padded ",
        "kernel_args": "console=ttyS0 root=/dev/vda",
        "empty": "",
    }


def test_from_file_accepts_str_path(tmp_path: Path) -> None:
    path = _write(tmp_path, "a = 1\n")
    assert Params.from_file(str(path)) == {"a": "1"}


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a = 1\nthis line has no equals sign\n", 2),
        ("# c\n\na = 1\n\n= no key\n", 5),
        ("a = 1\nb = 2\n\n\n1bad = x\n", 5),
        ("a b = 1\n", 1),
    ],
)
def test_from_file_malformed_line_names_file_and_line(tmp_path: Path, text: str, line: int) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(VMParamsError) as info:
        Params.from_file(path)
    assert f"{path}:{line}" in str(info.value)


def test_from_file_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.cfg"
    with pytest.raises(VMParamsError, match=r"nope\.cfg"):
        Params.from_file(missing)


def test_from_file_directory_or_binary_is_a_params_error(tmp_path: Path) -> None:
    with pytest.raises(VMParamsError):
        Params.from_file(tmp_path)
    binary = tmp_path / "bin.cfg"
    binary.write_bytes(b"a = \xff\xfe\n")
    with pytest.raises(VMParamsError, match=r"bin\.cfg"):
        Params.from_file(binary)


def test_from_file_leaves_no_files_behind(tmp_path: Path) -> None:
    good = _write(tmp_path, "a = 1\n", "good.cfg")
    path = _write(tmp_path, "a = 1\nbroken\n")
    before = sorted(os.listdir(path.parent))
    Params.from_file(good)
    with pytest.raises(VMParamsError):
        Params.from_file(path)
    assert sorted(os.listdir(path.parent)) == before
    assert path.read_text() == "a = 1\nbroken\n"
