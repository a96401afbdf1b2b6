"""Crashes are seen and reported as what they are: real kernel panics (sysrq) through the
pvpanic device, on_crash honoured, a killed QEMU reported as killed."""

from __future__ import annotations

import glob
import os
import signal
from pathlib import Path

import pytest
from functional_support import VMFactory, domain_names, qemu_pid

import virtlib
from virtlib.backends.libvirt import domain as libvirt_domain
from virtlib.waiting import wait_for

PANIC = "Kernel panic - not syncing: sysrq triggered crash"
DUMP_DIR = "/var/lib/libvirt/qemu/dump"


def panic(vm: virtlib.BaseVM) -> None:
    """A real kernel panic of the guest's own kernel (not text written to /dev/kmsg)."""
    console = vm.wait_for_serial_login(timeout=120)
    console.sendline("echo c > /proc/sysrq-trigger")


def no_graceful_shutdown(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record (and fail) any attempt at a graceful shutdown during destroy()."""
    attempts: list[str] = []

    def refuse(vm: virtlib.BaseVM, guest: object) -> bool:
        attempts.append(vm.name)
        return False

    monkeypatch.setattr(libvirt_domain, "shutdown_gracefully", refuse)
    return attempts


def test_real_panic_is_seen_by_verify_alive_and_verify_kernel_crash(
    vm_factory: VMFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    vm = vm_factory()  # on_crash = destroy (the default): the transient domain vanishes
    panic(vm)
    assert wait_for(vm.is_dead, 30), "the panicked guest still counts as alive"
    with pytest.raises(virtlib.VMDeadError) as dead:
        vm.verify_alive()
    assert dead.value.reason == "crashed"
    assert PANIC in dead.value.detail
    with pytest.raises(virtlib.VMDeadKernelCrashError) as crash:
        vm.verify_kernel_crash()
    assert PANIC in crash.value.kernel_crash
    attempts = no_graceful_shutdown(monkeypatch)
    vm.destroy(gracefully=True)
    assert attempts == []


def test_on_crash_preserve_keeps_the_crashed_guest_and_destroy_skips_the_waits(
    vm_factory: VMFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    vm = vm_factory(on_crash="preserve")
    panic(vm)
    assert wait_for(vm.is_dead, 30)
    assert isinstance(vm, libvirt_domain.LibvirtVM)
    state = vm.guest().state()
    assert state.crashed  # still there, in libvirt's crashed state
    with pytest.raises(virtlib.VMDeadError) as dead:
        vm.verify_alive()
    assert dead.value.reason == "crashed" and PANIC in dead.value.detail
    attempts = no_graceful_shutdown(monkeypatch)
    vm.destroy(gracefully=True)
    assert attempts == []
    assert vm.name not in domain_names(vm.uri)


def test_on_crash_restart_brings_the_guest_back(vm_factory: VMFactory) -> None:
    vm = vm_factory(on_crash="restart")
    panic(vm)

    def booted_again() -> bool:
        console = vm.serial_console
        return console is not None and console.get_output().count("virtlib-guest login:") >= 2

    assert wait_for(booted_again, 60), "the guest did not boot again after its panic"
    console = vm.wait_for_serial_login(timeout=120)
    assert console.cmd("echo back").strip() == "back"
    vm.verify_alive()


def test_on_crash_coredump_destroy_writes_libvirts_dump(vm_factory: VMFactory) -> None:
    vm = vm_factory(on_crash="coredump-destroy")
    before = set(glob.glob(f"{DUMP_DIR}/*"))
    panic(vm)
    try:
        assert wait_for(lambda: set(glob.glob(f"{DUMP_DIR}/*-{vm.name}-*")) - before, 60)
        with pytest.raises(virtlib.VMDeadError) as dead:
            vm.verify_alive()
        assert dead.value.reason == "crashed"
    finally:
        vm.destroy()
        for path in set(glob.glob(f"{DUMP_DIR}/*-{vm.name}-*")) - before:
            Path(path).unlink()


def test_sigkill_of_qemu_is_reported_as_killed(vm_factory: VMFactory) -> None:
    vm = vm_factory()
    os.kill(qemu_pid(vm), signal.SIGKILL)
    assert wait_for(vm.is_dead, 30)
    with pytest.raises(virtlib.VMDeadError) as dead:
        vm.verify_alive()
    assert dead.value.reason == "killed"
    assert "killed" in dead.value.detail
    vm.destroy()  # nothing to stop; must not raise
