"""A fresh guest for every test in a fraction of a boot: booted once, checkpointed, reverted.

The pytest plugin keeps, per worker process, one :class:`Keeper` for each kind of VM
tests ask for (the same params).  The first request boots the VM, logs in on the
serial console, waits until SSH answers and takes a snapshot with memory, the
*checkpoint*.  Every later request reverts the VM to it: whatever earlier tests did
to memory and disks is gone, the shell on the serial console is the one logged in at
the checkpoint, and SSH answers at once.  A test that broke the guest (a panic, a
poweroff, a destroy) does not spoil the next one: the revert brings a dead guest back,
and when even that fails the VM is booted and checkpointed again.

Only the contract and the registry are used (``virtlib.new_vm``, ``create_snapshot``,
``revert_snapshot``, ``delete_snapshot``...), so any backend with snapshots works;
one without them gets a fresh boot for every request.

The bundled guest has no disk, and a diskless guest's checkpoint can only be an
external memory file, which a revert restores into a new QEMU (about 2 s here).  With
a small scratch qcow2 disk the checkpoint is internal and reverts inside the running
QEMU (about 0.1 s), so :func:`scratch_disk_params` gives the bundled guest one
(``/dev/vda`` in the guest, 64 MiB, removed with the VM).
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from virtlib.contract import BaseVM
from virtlib.errors import LoginError, VMError, VMNotSupportedError
from virtlib.params import Params

log = logging.getLogger(__name__)

CHECKPOINT = "virtlib-checkpoint"
RESETS = ("checkpoint", "boot")
SCRATCH_DISK = "vlscratch"
SCRATCH_SIZE = "64M"
QEMU_GROUPS = ("libvirt-qemu", "qemu")
BOOT_TIMEOUT = 300.0  # a real distribution under TCG boots in 35-60 s
LOGIN_TIMEOUT = 60.0


def is_bundled_diskless(params: Params) -> bool:
    """Params that make the bundled guest with no disk (no images, kernel or CD-ROM)."""
    guest = params.get("guest", "")
    media = params.objects("images") or params.objects("cdroms") or params.get("kernel")
    return guest in ("", "bundled") and not media


def scratch_disk_params(name: str, directory: Path) -> dict[str, str]:
    """A 64 MiB qcow2 scratch disk for the bundled guest (made by create(), removed by
    destroy()), so its checkpoint is an internal snapshot."""
    disk = SCRATCH_DISK
    return {
        "guest": "bundled",
        "images": disk,
        f"image_name_{disk}": str(directory / f"{name}-scratch"),
        f"image_format_{disk}": "qcow2",
        f"image_size_{disk}": SCRATCH_SIZE,
        f"create_image_{disk}": "yes",
        f"remove_image_{disk}": "yes",
    }


@contextlib.contextmanager
def scratch_directory() -> Iterator[Path]:
    """A directory for scratch disks that libvirt's QEMU can reach: 0700, or 0710 with the
    group of QEMU's user when we are root (search only: nobody else lists or reads it);
    removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="virtlib-scratch-", dir="/var/tmp"))
    try:
        gid = _qemu_gid()
        if gid is not None:
            os.chown(path, -1, gid)
            path.chmod(0o710)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _qemu_gid() -> int | None:
    if os.geteuid() != 0:
        return None  # an unprivileged libvirt runs QEMU as this very user
    for name in QEMU_GROUPS:
        with contextlib.suppress(KeyError):
            return grp.getgrnam(name).gr_gid
    return None


def wait_until_ready(vm: BaseVM, timeout: float = BOOT_TIMEOUT) -> None:
    """Logged in on the serial console, and SSH answering (when the VM has a NIC)."""
    vm.wait_for_serial_login(timeout=timeout)
    if vm.spec.nics:
        vm.wait_for_login(timeout=timeout).close()


@dataclass
class Keeper:
    """One VM kept across tests, with its checkpoint (see the module docstring)."""

    key: tuple[tuple[str, str], ...]
    make: Callable[[], BaseVM]
    vm: BaseVM | None = None
    in_use: bool = False
    checkpointed: bool = False
    params: dict[str, str] = field(default_factory=dict)
    #: How the last request was served ("boot" or "revert") and what it cost (seconds).
    last: tuple[str, float] = ("", 0.0)

    def take(self) -> BaseVM:
        """The VM at its checkpoint: reverted, or booted (and checkpointed) when there is
        none or the revert failed."""
        started = time.monotonic()
        self.in_use = True
        if self.vm is not None and self.checkpointed:
            try:
                self._revert(self.vm)
                self.last = ("revert", time.monotonic() - started)
                return self.vm
            except (VMError, LoginError) as exc:
                log.warning("%s: no revert to its checkpoint (%s); booting it again",
                            self.vm.name, exc)  # fmt: skip
        vm = self._boot()
        self.last = ("boot", time.monotonic() - started)
        return vm

    def _revert(self, vm: BaseVM) -> None:
        vm.revert_snapshot(CHECKPOINT)
        vm.params = Params(self.params)  # a test's changes to params go too
        for snap in vm.list_snapshots():  # a test's own snapshots go
            if snap.name != CHECKPOINT and snap.parent == CHECKPOINT:
                vm.delete_snapshot(snap.name, children=True)
        vm.wait_for_serial_login(timeout=LOGIN_TIMEOUT)

    def _boot(self) -> BaseVM:
        if self.vm is not None:
            self.destroy()
        vm = self.vm = self.make()
        self.params = dict(vm.params)
        vm.create()
        wait_until_ready(vm)
        try:
            vm.create_snapshot(CHECKPOINT, description="virtlib's per-test reset point")
            self.checkpointed = True
        except VMNotSupportedError as exc:
            log.warning("%s: no checkpoint (%s): each test boots it", vm.name, exc)
            self.checkpointed = False
        return vm

    def release(self) -> None:
        self.in_use = False

    def destroy(self) -> None:
        vm, self.vm = self.vm, None
        self.checkpointed = False
        if vm is not None:
            vm.destroy(gracefully=False)


@dataclass
class KeeperPool:
    """The keepers of one process, by the params their VM is made from."""

    keepers: list[Keeper] = field(default_factory=list)

    def keeper(self, key: tuple[tuple[str, str], ...], make: Callable[[], BaseVM]) -> Keeper:
        """A free keeper for ``key`` (a new one when all of them are in use)."""
        for keeper in self.keepers:
            if keeper.key == key and not keeper.in_use:
                return keeper
        keeper = Keeper(key, make)
        self.keepers.append(keeper)
        return keeper

    def vms(self) -> list[BaseVM]:
        return [k.vm for k in self.keepers if k.vm is not None]

    def destroy_all(self) -> list[str]:
        """Destroy every kept VM; the failures, one line each."""
        failures = []
        for keeper in self.keepers:
            name = keeper.vm.name if keeper.vm is not None else "?"
            try:
                keeper.destroy()
            except Exception as exc:
                failures.append(f"{name}: {type(exc).__name__}: {exc}")
        self.keepers.clear()
        return failures
