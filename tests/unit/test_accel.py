"""Choosing KVM or TCG: KVM only when the device works and the CPU has vmx/svm."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from virtlib import VMParamsError
from virtlib.accel import AccelChoice, cpu_flags, decide, kvm_device_problem

VMX = frozenset({"fpu", "vme", "vmx", "sse2"})
SVM = frozenset({"fpu", "svm"})
NO_HW = frozenset({"fpu", "vme", "sse2", "hypervisor"})
DEVICE_PROBLEM = "/dev/kvm does not exist (test)"


def test_tcg_when_requested() -> None:
    for problem, flags in [(None, VMX), (DEVICE_PROBLEM, NO_HW)]:
        choice = decide("tcg", problem, flags)
        assert choice.accel == "tcg"
        assert "tcg" in choice.reason


@pytest.mark.parametrize("flags", [VMX, SVM])
def test_kvm_when_device_fine_and_hw_virt(flags: frozenset[str]) -> None:
    choice = decide("auto", None, flags)
    assert choice.accel == "kvm"
    assert choice.reason
    assert "kvm" in str(choice).lower()


def test_tcg_without_vmx_or_svm_says_so() -> None:
    choice = decide("auto", None, NO_HW)
    assert choice.accel == "tcg"
    assert "vmx" in choice.reason
    assert "svm" in choice.reason


def test_tcg_when_device_unusable_gives_the_device_problem() -> None:
    choice = decide("auto", DEVICE_PROBLEM, VMX)
    assert choice.accel == "tcg"
    assert DEVICE_PROBLEM in choice.reason


def test_kvm_requested_with_unusable_device_is_an_error() -> None:
    for flags in (VMX, NO_HW):
        with pytest.raises(VMParamsError, match="does not exist"):
            decide("kvm", DEVICE_PROBLEM, flags)


def test_kvm_requested_and_usable() -> None:
    choice = decide("kvm", None, VMX)
    assert choice.accel == "kvm"
    assert "accel=kvm" in choice.reason


def test_kvm_requested_without_hw_virt_is_honoured_with_a_warning_reason() -> None:
    choice = decide("kvm", None, NO_HW)
    assert choice.accel == "kvm"
    assert "vmx" in choice.reason


@pytest.mark.parametrize("requested", ["hax", "KVM", ""])
def test_unknown_accel_is_an_error(requested: str) -> None:
    with pytest.raises(VMParamsError, match="'accel'"):
        decide(requested, None, VMX)


def test_choice_str() -> None:
    text = str(AccelChoice("tcg", "because"))
    assert "tcg" in text
    assert "because" in text


# --- cpu_flags ----------------------------------------------------------------------------

CPUINFO = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Fake CPU
flags\t\t: fpu vme de pse vmx sse2 hypervisor
vmx flags\t: vnmi preemption_timer
bugs\t\t: spectre_v1

processor\t: 1
vendor_id\t: GenuineIntel
flags\t\t: fpu sse4_2
"""


def test_cpu_flags_of_the_first_cpu(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO)
    flags = cpu_flags(cpuinfo)
    assert flags == {"fpu", "vme", "de", "pse", "vmx", "sse2", "hypervisor"}
    assert decide("auto", None, flags).accel == "kvm"


def test_cpu_flags_without_flags_line(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm\n")
    assert cpu_flags(cpuinfo) == frozenset()
    assert decide("auto", None, cpu_flags(cpuinfo)).accel == "tcg"


def test_cpu_flags_missing_file(tmp_path: Path) -> None:
    assert cpu_flags(tmp_path / "nope") == frozenset()


# --- kvm_device_problem ----------------------------------------------------------------------


def test_missing_device(tmp_path: Path) -> None:
    device = tmp_path / "kvm"
    problem = kvm_device_problem(device)
    assert problem is not None
    assert str(device) in problem


@pytest.mark.skipif(os.getuid() != 0, reason="the group-mode check applies to root only")
def test_root_needs_group_access_for_qemu(tmp_path: Path) -> None:
    device = tmp_path / "kvm"
    device.touch()
    device.chmod(0o600)
    problem = kvm_device_problem(device)
    assert problem is not None
    assert "600" in problem
    device.chmod(0o660)
    assert kvm_device_problem(device) is None


@pytest.mark.skipif(os.getuid() == 0, reason="root can read and write anything")
def test_unreadable_device(tmp_path: Path) -> None:
    device = tmp_path / "kvm"
    device.touch()
    device.chmod(0o000)
    problem = kvm_device_problem(device)
    assert problem is not None
    assert "readable" in problem
    device.chmod(0o660)
    assert kvm_device_problem(device) is None
