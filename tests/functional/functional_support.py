"""Helpers for functional tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

from pathlib import Path

import libvirt

import virtlib
from virtlib.pytest_plugin import VMFactory

__all__ = ["VMFactory", "domain_names", "qemu_pid"]


def domain_names(uri: str) -> set[str]:
    """Every domain libvirt has at ``uri``, running or defined."""
    conn = libvirt.open(uri)
    try:
        return {d.name() for d in conn.listAllDomains()}
    finally:
        conn.close()


def qemu_pid(vm: virtlib.BaseVM) -> int:
    """The PID of the VM's QEMU process (libvirt's pid file)."""
    return int(Path(f"/run/libvirt/qemu/{vm.name}.pid").read_text().strip())
