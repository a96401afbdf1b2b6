"""What the contract suite knows about backends beyond the contract, and how it makes VMs.

Imported by name (pytest puts this folder on sys.path), like functional_support.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

import virtlib
from virtlib.contract import BaseVM
from virtlib.params import Params
from virtlib.textutil import random_string

LOGIN_TIMEOUT = 120.0


def _kill_libvirt(vm: BaseVM) -> None:
    """Destroy the domain behind the VM's back (as a crashed QEMU would end)."""
    import libvirt

    assert vm.uuid is not None
    conn = libvirt.open(vm.uri)
    try:
        conn.lookupByUUIDString(vm.uuid).destroy()
    finally:
        conn.close()


def _kill_memory(vm: BaseVM) -> None:
    import memory_backend

    memory_backend.kill(vm)


@dataclass(frozen=True)
class Profile:
    """What the suite needs to know about a backend beyond the contract."""

    #: Params every VM of the suite gets (the backend's defaults fill the rest).
    params: dict[str, str] = field(default_factory=dict)
    #: Make a running VM die from outside; None: the tests that need it skip.
    kill: Callable[[BaseVM], None] | None = None
    #: A URI whose hypervisor cannot answer (probe must say why).
    dead_uri: str = "qemu+tcp://127.0.0.1:1/system"
    #: Drives a real hypervisor (marked ``functional``) rather than this process.
    functional: bool = True
    #: The plugin's ``--virtlib-uri`` is this backend's URI.
    uses_virtlib_uri: bool = False


PROFILES: dict[str, Profile] = {
    "libvirt": Profile(params={"mem": "256"}, kill=_kill_libvirt, uses_virtlib_uri=True),
    "memory": Profile(params={"connect_uri": "memory:///"}, kill=_kill_memory, functional=False),
}


@dataclass(frozen=True)
class Backend:
    """One backend under test: its vm_type, class, profile and the params of its VMs."""

    vm_type: str
    cls: type[BaseVM]
    profile: Profile
    params: Params

    @property
    def uri(self) -> str:
        return self.params.get("connect_uri", "qemu:///system")


class Maker:
    """Makes VMs of one backend with unique names, and destroys every one of them."""

    def __init__(self, backend: Backend, config: pytest.Config) -> None:
        self.backend = backend
        workerinput = getattr(config, "workerinput", None)
        self.worker = str(workerinput["workerid"]) if workerinput else "main"
        self.made: list[BaseVM] = []

    def name(self, name: str) -> str:
        prefix = os.environ.get("VIRTLIB_TEST_NAME_PREFIX", "vt-")
        return f"{prefix}{self.worker}-{name or 'vm'}-{random_string(6)}"

    def __call__(self, name: str = "", start: bool = True, **params: str) -> BaseVM:
        vm_params = self.backend.params.copy()
        vm_params.update(params)
        vm = virtlib.new_vm(self.name(name), vm_params)
        self.made.append(vm)
        if start:
            vm.create()
        return vm

    def cleanup(self) -> None:
        failures = []
        for vm in reversed(self.made):
            try:
                vm.destroy(gracefully=False)
            except Exception as exc:
                failures.append(f"{vm.name}: {type(exc).__name__}: {exc}")
        left = self.backend.cls.remove_vms(
            self.backend.uri,
            {vm.name for vm in self.made},
            {vm.uuid for vm in self.made if vm.uuid},
        )
        if failures or left:
            pytest.fail(f"could not destroy {failures}; left behind {left}", pytrace=False)


def supported(backend: Backend, exc: virtlib.VMNotSupportedError) -> None:
    """An optional operation the backend lacks: the error names it and the backend; skip."""
    assert exc.backend == backend.cls.BACKEND and exc.operation
    pytest.skip(str(exc))
