"""``virtlib host check``: is this host ready for virtlib, and if not, what to do."""

from __future__ import annotations

import argparse
import os
import shutil
from dataclasses import asdict
from typing import Any

from virtlib.accel import KVM_DEVICE, cpu_flags, kvm_device_problem, local_choice
from virtlib.cli.output import emit, table
from virtlib.inventory import FAIL, OK, WARN
from virtlib.inventory import HostCheck as Check
from virtlib.ports import PORT_RANGE, port_is_free
from virtlib.registry import DEFAULT_VM_TYPE, backend_class


def _kvm() -> list[Check]:
    problem = kvm_device_problem()
    flags = cpu_flags()
    choice = local_choice()
    checks = [Check("accelerator", OK, str(choice))]
    if problem:
        todo = (
            "chgrp kvm /dev/kvm; chmod 0660 /dev/kvm (or scripts/setup-host)"
            if KVM_DEVICE.exists()
            else "load the kvm module, or accept TCG"
        )
        checks.append(Check("/dev/kvm", WARN, problem, todo))
    elif KVM_DEVICE.exists():
        mode = KVM_DEVICE.stat().st_mode & 0o777
        checks.append(Check("/dev/kvm", OK, f"mode {mode:o}"))
    if not flags & {"vmx", "svm"}:
        checks.append(
            Check(
                "cpu",
                WARN,
                "no vmx/svm flag: guests run under TCG (slower)",
                "nested virtualisation needs vmx/svm exposed to this machine",
            )
        )
    return checks


def _guest() -> Check:
    from virtlib.guest.builder import default_cache_dir

    cache = default_cache_dir()
    built = sorted(cache.glob("*/manifest.json")) if cache.is_dir() else []
    if built:
        return Check("test guest", OK, f"built in {cache}")
    return Check("test guest", WARN, f"not built yet ({cache})", "virtlib guest build")


def _ports() -> Check:
    low, high = PORT_RANGE
    sample = range(low, high + 1, max(1, (high - low) // 200))
    free = sum(port_is_free(p) for p in sample)
    status = OK if free > len(sample) // 2 else WARN
    return Check(
        "ports",
        status,
        f"{free}/{len(sample)} sampled ports free in {low}-{high} on 127.0.0.1",
        "" if status == OK else "free ports in that range",
    )


def _tools() -> list[Check]:
    checks = []
    for tool, why in (
        ("qemu-img", "images"),
        ("ssh", "file copies (OpenSSH client)"),
        ("unshare", "a second local libvirt host"),
        ("telnet", "the telnet client"),
        ("nc", "the nc client"),
    ):
        if shutil.which(tool):
            checks.append(Check(tool, OK, f"found ({why})"))
        else:
            checks.append(Check(tool, WARN, f"missing: no {why}", "scripts/setup-host"))
    if os.geteuid() != 0:
        checks.append(
            Check(
                "root",
                WARN,
                "not root: qemu:///system and a second local host "
                "need root (or use qemu:///session)",
            )
        )
    return checks


def run_checks(uri: str, vm_type: str = DEFAULT_VM_TYPE) -> list[Check]:
    """The backend's checks of the host at ``uri``, then this machine's."""
    return [
        *backend_class(vm_type).host_checks(uri),
        *_kvm(),
        _guest(),
        _ports(),
        *_tools(),
    ]


def cmd_host_check(args: argparse.Namespace) -> int:
    checks = run_checks(args.uri or "qemu:///system", args.vm_type or DEFAULT_VM_TYPE)
    rows = [[c.status, c.name, c.detail + (f"  -> {c.todo}" if c.todo else "")] for c in checks]
    emit(args.json, [asdict(c) for c in checks], table(["", "CHECK", "DETAIL"], rows))
    return 1 if any(c.status == FAIL for c in checks) else 0


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    host = commands.add_parser("host", help="this host as virtlib sees it")
    actions = host.add_subparsers(dest="host_command", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check", parents=[common], help="daemons, versions, KVM or TCG and why, what to fix"
    )
    check.set_defaults(func=cmd_host_check)
