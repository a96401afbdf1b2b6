"""Params' avocado-vt accessors (virttest/utils_params.py) and the cfg reader (the
``key = value`` subset of virttest/cartesian_config.py)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest

from virtlib.compat.avocado import load_cfg, parse_cfg
from virtlib.errors import VMParamsError
from virtlib.params import Params
from virtlib.spec import CpuFeature, VMSpec, parse_cpu_flags

# --- utils_params.Params --------------------------------------------------------------------


def test_get_list_defaults_are_avocado_vts() -> None:
    p = Params(a="1 2  3", b="x,y", empty="")
    assert p.get_list("a") == ["1", "2", "3"]
    assert p.get_list("a", elem_type=int) == [1, 2, 3]
    assert p.get_list("a", target_type=int) == [1, 2, 3]  # avocado-vt's current name
    assert p.get_list("b", delimiter=",") == ["x", "y"]
    assert p.get_list("missing") == [] and p.get_list("empty") == []
    assert p.get_list("missing", "4 5", elem_type=int) == [4, 5]  # a string default is parsed
    assert p.get_list("missing", ["k"]) == ["k"]


def test_get_list_bad_item_names_the_key() -> None:
    with pytest.raises(VMParamsError, match="'a'"):
        Params(a="1 x").get_list("a", elem_type=int)


def test_get_dict_defaults_are_avocado_vts() -> None:
    p = Params(opts="a=1 b=2 c=x=y", csv="a=1,b=2")
    assert p.get_dict("opts") == {"a": "1", "b": "2", "c": "x=y"}  # whitespace-delimited
    assert p.get_dict("csv", delimiter=",") == {"a": "1", "b": "2"}
    ordered = p.get_dict("opts", need_order=True)
    assert isinstance(ordered, OrderedDict) and list(ordered) == ["a", "b", "c"]
    assert p.get_dict("missing") == {}
    assert p.get_dict("missing", "k=v") == {"k": "v"}  # a string default is parsed
    with pytest.raises(ValueError, match="'opts'"):  # avocado-vt raises ValueError too
        Params(opts="a=1 b").get_dict("opts")


def test_get_numeric_target_type() -> None:
    p = Params(n="0x10", f="2.5")
    assert p.get_numeric("n") == 16
    assert p.get_numeric("f", 0.0, float) == 2.5
    assert p.get_numeric("missing", 1.5, float) == 1.5


def test_object_counts_yields_numbered_keys() -> None:
    p = Params(nr_disks="3", disk1="a", disk3="c")
    counts = p.object_counts("nr_disks", "disk")
    assert next(counts) == ("disk1", "a")
    p["disk2"] = "added while iterating"  # avocado-vt reads a copy taken when iteration starts
    assert list(counts) == [("disk2", None), ("disk3", "c")]
    assert list(Params(disk1="a").object_counts("nr_disks", "disk")) == [("disk1", "a")]


def test_copy_from_keys_keeps_only_set_keys() -> None:
    p = Params(a="1", b="", c="3")
    copied = p.copy_from_keys(["a", "b", "missing"])
    assert copied == {"a": "1"} and isinstance(copied, Params)


def test_drop_dict_internals() -> None:
    p = Params({"_name_map_file": "x", "name": "vm1", "_short_name_map_file": "y"})
    dropped = p.drop_dict_internals()
    assert dropped == {"name": "vm1"} and isinstance(dropped, Params)
    assert "_name_map_file" in p, "the original is not changed"


# --- the two VMSpec params --------------------------------------------------------------------


@pytest.mark.parametrize("client", ["scp", "sftp"])
def test_file_transfer_client_scp_and_sftp_are_accepted(client: str) -> None:
    VMSpec.from_params("ha-spec", Params(file_transfer_client=client))


@pytest.mark.parametrize("client", ["rss", "rsync"])
def test_other_file_transfer_clients_are_refused_naming_the_key(client: str) -> None:
    with pytest.raises(VMParamsError, match=rf"file_transfer_client.*sftp, scp.*{client}"):
        VMSpec.from_params("ha-spec", Params(file_transfer_client=client))


def test_cpu_model_flags_become_features() -> None:
    assert parse_cpu_flags(",+sse4.2,-avx, x2apic=on,lm=off,vmx") == (
        CpuFeature("sse4.2", "require"),
        CpuFeature("avx", "disable"),
        CpuFeature("x2apic", "require"),
        CpuFeature("lm", "disable"),
        CpuFeature("vmx", "require"),
    )
    assert parse_cpu_flags("+avx,-avx") == (CpuFeature("avx", "disable"),)
    assert parse_cpu_flags("") == ()
    spec = VMSpec.from_params("ha-spec", Params(cpu_model_flags=",-kvmclock"))
    assert spec.cpu_features == (CpuFeature("kvmclock", "disable"),)


@pytest.mark.parametrize("flags", ["vendor=GenuineIntel", "hv-spinlocks=0x1fff", "+", "a b"])
def test_cpu_model_flags_that_are_not_switches_are_refused(flags: str) -> None:
    with pytest.raises(VMParamsError, match="cpu_model_flags"):
        VMSpec.from_params("ha-spec", Params(cpu_model_flags=flags))


# --- the cfg reader ---------------------------------------------------------------------------


def test_cfg_operators_quotes_substitution_and_comments() -> None:
    p = parse_cfg(
        """
# a comment
// another
main_vm = ha-vm1
vms = ${main_vm}
extra = " -a"
extra += " -b"
extra <= "-z"
lazy ~= first
lazy ~= second
image_name_disk1 = one
image_name_disk2 = two
image_name_.* ?+= .qcow2
image_name_disk1 ?<= /images/
unknown = ${nothing} stays
del image_name_disk2
"""
    )
    assert p["vms"] == "ha-vm1"
    assert p["extra"] == "-z -a -b"
    assert p["lazy"] == "first"
    assert p["image_name_disk1"] == "/images/one.qcow2"
    assert "image_name_disk2" not in p
    assert p["unknown"] == "${nothing} stays"


def test_cfg_include_is_relative_to_the_including_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "base.cfg").write_text("mem = 256\nsmp = 1\n")
    (tmp_path / "test.cfg").write_text("include sub/base.cfg\nsmp = 2\n")
    assert load_cfg(tmp_path / "test.cfg") == {"mem": "256", "smp": "2"}


def test_cfg_include_loop_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.cfg").write_text("include a.cfg\n")
    with pytest.raises(VMParamsError, match="nested deeper"):
        load_cfg(tmp_path / "a.cfg")


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("a = 1\nvariants:\n    - one:\n", 2, "variants"),
        ("a = 1\n    b = 2\n", 2, "indented"),
        ("only qcow2\n", 1, "variants and filters"),
        ("no Windows\n", 1, "variants and filters"),
        ("Linux:\n", 1, "variants and filters"),
        ("just words\n", 1, "expected 'key = value'"),
        ("bad(.* ?= 1\n", 1, "bad regular expression"),
    ],
)
def test_cfg_what_is_left_out_fails_naming_file_and_line(
    tmp_path: Path, text: str, line: int, words: str
) -> None:
    path = tmp_path / "t.cfg"
    path.write_text(text)
    with pytest.raises(VMParamsError, match=rf"t\.cfg:{line}: .*{words}"):
        load_cfg(path)


def test_cfg_missing_file() -> None:
    with pytest.raises(VMParamsError, match="cfg file not found"):
        load_cfg("/nonexistent/x.cfg")
