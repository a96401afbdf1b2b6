"""``env``: the dict-like object avocado-vt tests find their VMs in."""

from __future__ import annotations

import logging
import threading
from collections import UserDict
from pathlib import Path
from typing import Any

from virtlib.contract import BaseVM
from virtlib.errors import VMNotSupportedError
from virtlib.params import Params
from virtlib.registry import DEFAULT_VM_TYPE, new_vm

log = logging.getLogger(__name__)


class Env(UserDict[str, Any]):
    """avocado-vt's ``utils_env.Env``: VMs under ``vm__<name>``, anything else a test keeps.

    It holds the live objects of one run and is never written to a file:
    ``filename`` must be None and save() is not supported (a VM with its
    console thread and sessions cannot be pickled; virtlib finds running
    domains again with ``LibvirtVM.adopt`` instead).
    """

    def __init__(self, filename: str | None = None, version: int = 0) -> None:
        super().__init__()
        if filename:
            raise VMNotSupportedError("loading an env file", "avocado compat", filename)
        self.data = {"version": version}
        self.save_lock = threading.RLock()

    def save(self, filename: str | None = None) -> None:
        """Not supported (see the class docstring)."""
        raise VMNotSupportedError("saving the env", "avocado compat", "it holds live objects")

    # --- VMs ------------------------------------------------------------------------
    def get_vm(self, name: str) -> BaseVM | None:
        """The VM registered as ``name``, or None."""
        vm = self.data.get(f"vm__{name}")
        return vm if isinstance(vm, BaseVM) else None

    def register_vm(self, name: str, vm: BaseVM) -> None:
        with self.save_lock:
            self.data[f"vm__{name}"] = vm

    def unregister_vm(self, name: str) -> None:
        """Forget the VM (it keeps running); KeyError when there is none of that name."""
        with self.save_lock:
            del self.data[f"vm__{name}"]

    def get_all_vms(self) -> list[BaseVM]:
        return [vm for key, vm in self.data.items() if key.startswith("vm__")]

    def create_vm(
        self,
        vm_type: str | None,
        target: str | None,
        name: str,
        params: dict[str, str],
        bindir: str | Path,
    ) -> BaseVM:
        """A new, unstarted VM through virtlib's registry, registered as ``name``.

        ``vm_type`` (else the params', else ``libvirt``) picks the backend;
        ``bindir`` is the root directory relative paths in params hang off.
        avocado-vt's ``target`` (for v2v) has no meaning here: only None, ""
        and "libvirt" are accepted.

        :raises VMParamsError: an unknown vm_type (the message lists the known ones)
            or bad params.
        """
        if target not in (None, "", "libvirt"):
            raise VMNotSupportedError(f"create_vm with target {target!r}", "avocado compat")
        vm_params = params if isinstance(params, Params) else Params(params)
        vm_params["vm_type"] = vm_type or vm_params.get("vm_type") or DEFAULT_VM_TYPE
        vm = new_vm(name, vm_params, bindir)
        self.register_vm(name, vm)
        return vm

    def clean_objects(self) -> None:
        """Destroy every VM (not gracefully) and forget everything, as avocado-vt's does.

        Every VM is tried; the failures are logged.
        """
        for vm in self.get_all_vms():
            try:
                vm.destroy(gracefully=False)
            except Exception as exc:  # one VM's failure must not leave the others behind
                log.error("cannot destroy VM %r: %s: %s", vm.name, type(exc).__name__, exc)
        self.data = {}

    def destroy(self) -> None:
        """clean_objects() (there is no backing file to remove)."""
        self.clean_objects()
