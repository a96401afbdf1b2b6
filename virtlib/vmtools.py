"""Optional operations of a VM: evidence (definition, logs, dumps, screenshots), the guest
agent, and what tools (the CLI, the pytest plugin) need; a backend overrides what it can
do, the rest raise VMNotSupportedError.  Mixed into :class:`~virtlib.contract.BaseVM`."""

from __future__ import annotations

import logging
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from virtlib.errors import (
    VMNotSupportedError,
)
from virtlib.inventory import HostCheck, ManagedVM

if TYPE_CHECKING:
    from virtlib.contract import BaseVM

from virtlib.vmcore import VMCore

log = logging.getLogger("virtlib.contract")  # BaseVM's behaviour logs under one name


class OptionalOperations(VMCore):
    """BaseVM's optional operations (see the module docstring)."""

    def definition(self) -> str:
        """The hypervisor's definition of the VM (libvirt: the domain XML it runs with)."""
        raise VMNotSupportedError("definition", self.BACKEND)

    def hypervisor_log(self, max_bytes: int = 1 << 20) -> str:
        """The end (at most ``max_bytes``) of the hypervisor's own log of this VM (QEMU's)."""
        raise VMNotSupportedError("hypervisor log", self.BACKEND)

    def memory_dump(self, path: str | Path, max_bytes: int) -> Path:
        """Dump the guest's memory, compressed, to ``path``; a dump over ``max_bytes`` is
        removed again and reported (VMError).  The VM keeps running."""
        raise VMNotSupportedError("memory dump", self.BACKEND)

    def screenshot(self, path: str | Path) -> Path:
        """Write a picture of the VM's display to ``path`` as PNG; returns the path.

        :raises VMNotSupportedError: the backend, or a VM without a display, cannot.
        """
        raise VMNotSupportedError("screenshot", self.BACKEND)

    # --- Operations for tools (the CLI, the pytest plugin): optional, backend-neutral ---------
    @classmethod
    def adopt(
        cls,
        name: str,
        params: dict[str, str],
        root_dir: str | Path = ".",
        attach_console: bool = False,
    ) -> BaseVM:
        """A VM object for a VM this backend started earlier, in another process.

        ``params`` add what the hypervisor does not keep (secrets such as the
        password) and say where to look (``connect_uri``).  The console is attached
        only when asked (attaching may take it over from another client).

        :raises VMNotFoundError: no such VM.
        :raises VMError: the VM was not made by virtlib.
        """
        raise VMNotSupportedError("adopt", cls.BACKEND)

    def release(self) -> None:
        """Forget the VM in this process (console, private files); it keeps running."""
        raise VMNotSupportedError("release", self.BACKEND)

    def info(self) -> dict[str, Any]:
        """What the VM is and holds: name, uri, uuid, state, vcpus, memory_mib, accel,
        macs, forwards, instance."""
        raise VMNotSupportedError("info", self.BACKEND)

    @classmethod
    def probe(cls, uri: str) -> str | None:
        """None when the hypervisor at ``uri`` answers, else why it does not."""
        raise VMNotSupportedError("probe", cls.BACKEND)

    @classmethod
    def managed_vms(cls, uri: str) -> list[ManagedVM]:
        """The VMs virtlib manages on ``uri`` (made by any process).

        :raises HypervisorConnectionError: ``uri`` does not answer.
        """
        raise VMNotSupportedError("managed_vms", cls.BACKEND)

    @classmethod
    def remove_vms(cls, uri: str, names: Collection[str], uuids: Collection[str]) -> list[str]:
        """Stop and remove the VMs on ``uri`` with one of ``names`` or ``uuids`` (leftovers of a
        crashed run); returns a line for each VM found.  A host that does not answer has none."""
        raise VMNotSupportedError("remove_vms", cls.BACKEND)

    @classmethod
    def host_checks(cls, uri: str) -> list[HostCheck]:
        """What this backend needs from the host at ``uri``, checked (``virtlib host check``)."""
        raise VMNotSupportedError("host_checks", cls.BACKEND)
