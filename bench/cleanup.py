"""Leave nothing behind: every VM and raw QEMU the bench makes is tracked and torn down.

Benchmarks destroy what they made in their own ``finally``; the tracker is the
safety net for errors and Ctrl-C (``__main__`` calls :meth:`Tracker.cleanup`
in its ``finally``), and :func:`sweep` removes any domain whose name carries
this run's prefix from every host, whoever made it.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from typing import TYPE_CHECKING, Protocol

import libvirt

if TYPE_CHECKING:
    from virtlib import BaseVM


class Killable(Protocol):
    def kill(self) -> None: ...


class Tracker:
    """VMs and raw QEMU processes made by this run, until they are torn down."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._vms: list[BaseVM] = []
        self._raws: list[Killable] = []

    def add_vm(self, vm: BaseVM) -> BaseVM:
        with self._lock:
            self._vms.append(vm)
        return vm

    def add_raw(self, raw: Killable) -> None:
        with self._lock:
            self._raws.append(raw)

    def destroy_vm(self, vm: BaseVM) -> None:
        """Destroy ``vm`` (hard: the bench never needs a graceful shutdown) and forget it."""
        try:
            vm.destroy(gracefully=False)
        finally:
            with self._lock:
                if vm in self._vms:
                    self._vms.remove(vm)

    def kill_raw(self, raw: Killable) -> None:
        try:
            raw.kill()
        finally:
            with self._lock:
                if raw in self._raws:
                    self._raws.remove(raw)

    def cleanup(self) -> list[str]:
        """Tear down everything still tracked; returns the errors (never raises)."""
        errors = []
        with self._lock:
            vms, raws = list(self._vms), list(self._raws)
        for raw in raws:
            try:
                self.kill_raw(raw)
            except Exception as exc:
                errors.append(f"raw qemu: {exc}")
        for vm in vms:
            try:
                self.destroy_vm(vm)
            except Exception as exc:
                errors.append(f"{vm.name}: {exc}")
        return errors


def sweep(prefix: str, uris: list[str]) -> list[str]:
    """Destroy (and undefine) every domain named ``<prefix>...`` on ``uris``; their names."""
    removed = []
    for uri in uris:
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError:
            continue
        try:
            for dom in conn.listAllDomains():
                if not dom.name().startswith(prefix):
                    continue
                removed.append(f"{dom.name()} ({uri})")
                with contextlib.suppress(libvirt.libvirtError):
                    if dom.isActive():
                        dom.destroy()
                with contextlib.suppress(libvirt.libvirtError):
                    if dom.isPersistent():
                        dom.undefine()
        finally:
            conn.close()
    return removed


def virsh_list(uri: str) -> str:
    """``virsh -c URI list --all`` as it prints (or its error)."""
    proc = subprocess.run(
        ["virsh", "-c", uri, "list", "--all"], capture_output=True, text=True, check=False
    )
    return (proc.stdout + proc.stderr).rstrip()
