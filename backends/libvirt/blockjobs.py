"""Block jobs on a running libvirt domain: commit, pull and copy (a mirror), with pivot.

A job is started through the Guest wrapper and followed until it ends: libvirt's
block-job events (subscribed before the start) say when a mirror is ready and when a
job completed or failed; in between, the job's progress is read about five times a
second and handed to the caller's callback, which may abort it by returning False.  A
job over its ``timeout`` is aborted too (VMBlockJobError); after any failure or abort
the disk goes on with the image it had, and a copy's destination that the job made is
removed.

A copy, and a commit of the active image, copy while the guest writes; once they have
everything libvirt calls them ready: ``pivot`` then switches the disk to the copy (or
to the image committed into), else the job ends without switching.  When the disk
switches, the VM's state records its new image (params ``image_name_<disk>``, and the
file names must follow ``<name>.<format>`` for that), so a later design of the VM (a
migration's) uses it; a pull that leaves an overlay without backing images is recorded
the same way.

The files of the chain are given as libvirt sees them (the running domain's XML): an
overlay made with ``qemu-img create -b`` or :func:`virtlib.images.create_overlay`, or an
external snapshot's.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lxml import etree

from virtlib import hotplug
from virtlib.backends.libvirt import domxml
from virtlib.backends.libvirt.devices import (
    commit,
    designed,
    disk_value,
    find_disk,
    live_root,
    params_error,
    running,
)
from virtlib.backends.libvirt.events import BLOCK_JOB, DomainEvent, wait_event
from virtlib.devices import BlockJobProgress, Disk, ProgressCallback
from virtlib.errors import VMBlockJobError, VMError
from virtlib.spec import DISK_FORMATS, DiskSpec
from virtlib.state import VMState
from virtlib.waiting import Deadline

if TYPE_CHECKING:
    from virtlib.backends.libvirt.domain import LibvirtVM
    from virtlib.backends.libvirt.guest import Guest

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.2
FINISH_TIMEOUT = 30.0
"""How long a job may take to end after its pivot (or abort) was asked for."""
MIB = 1 << 20


@dataclass(frozen=True)
class _Job:
    """One job on one disk of a running VM."""

    vm: LibvirtVM
    guest: Guest
    state: VMState
    disk: DiskSpec
    target: str
    kind: str  # "commit", "active commit", "pull", "copy"

    def error(self, reason: str) -> VMBlockJobError:
        return VMBlockJobError(self.vm.name, self.disk.name, f"{self.kind}: {reason}")

    def refused(self, text: str) -> VMError:
        return self.error(text)


def chain(root: etree._Element, target: str) -> list[tuple[str, str]]:
    """The disk's images, the active one first: (path, format), as libvirt has them."""
    disk = root.find(f"devices/disk/target[@dev='{target}']/..")
    result: list[tuple[str, str]] = []
    if disk is None:
        return result
    source, driver = disk.find("source"), disk.find("driver")
    if source is not None:
        result.append((source.get("file", source.get("dev", "")), _format(driver)))
    store = disk.find("backingStore")
    while store is not None:
        source = store.find("source")
        if source is None:
            break
        result.append((source.get("file", source.get("dev", "")), _format(store.find("format"))))
        store = store.find("backingStore")
    return result


def _format(element: etree._Element | None) -> str:
    return element.get("type", "raw") if element is not None else "raw"


def _prepare(
    vm: LibvirtVM, disk: Disk | str, kind: str, bandwidth: int
) -> tuple[_Job, list[tuple[str, str]]]:
    """The job's VM, disk and chain; bad input is refused before libvirt is asked."""
    state, guest = running(vm, f"run a block {kind}")
    config = designed(vm, state)
    found = find_disk(state, disk, config)
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, int) or bandwidth < 0:
        raise params_error(vm, f"block_{kind}", "bandwidth", bandwidth, "must be MiB/s, 0 or more")
    target = next(d.target for d in config.disks if d.name == found.name)
    images = chain(live_root(guest), target)
    return _Job(vm, guest, state, found, target, kind), images


def _in_chain(
    vm: LibvirtVM, operation: str, argument: str, path: str | None, images: list[tuple[str, str]]
) -> int | None:
    """The place of ``path`` in the chain (None for None); VMDeviceParamsError when not in it."""
    if path is None:
        return None
    paths = [str(Path(p).absolute()) for p, _ in images]
    wanted = str(Path(path).absolute())
    if wanted not in paths:
        raise params_error(
            vm, operation, argument, path, f"is not an image of the disk ({', '.join(paths)})"
        )
    return paths.index(wanted)


def commit_disk(
    vm: LibvirtVM,
    disk: Disk | str,
    base: str | None,
    top: str | None,
    bandwidth: int,
    progress: ProgressCallback | None,
    timeout: float,
    pivot: bool,
) -> Disk:
    """See DeviceOperations.block_commit."""
    job, images = _prepare(vm, disk, "commit", bandwidth)
    top_at = _in_chain(vm, "block_commit", "top", top, images) or 0
    base_at = _in_chain(vm, "block_commit", "base", base, images)
    base_at = top_at + 1 if base_at is None else base_at
    if base_at <= top_at or base_at >= len(images):
        raise params_error(
            vm,
            "block_commit",
            "base",
            base,
            f"must be an image below the top one (the disk has {len(images)} image(s))",
        )
    active = top_at == 0
    base_path, base_format = images[base_at]
    if active and pivot:
        hotplug.image_name(vm.name, base_path, base_format, False)  # it can be recorded
    job = _Job(
        vm, job.guest, job.state, job.disk, job.target, "active commit" if active else "commit"
    )
    top_path = None if active else images[top_at][0]
    _run(
        job,
        lambda: job.guest.block_commit(
            job.target, base_path, top_path, bandwidth, active, job.refused
        ),
        active,
        pivot,
        progress,
        timeout,
    )
    if active and pivot:
        return _switched(job, base_path, base_format)
    return disk_value(designed(vm, job.state), job.disk.name)


def pull_disk(
    vm: LibvirtVM,
    disk: Disk | str,
    base: str | None,
    bandwidth: int,
    progress: ProgressCallback | None,
    timeout: float,
) -> Disk:
    """See DeviceOperations.block_pull."""
    job, images = _prepare(vm, disk, "pull", bandwidth)
    if len(images) < 2:
        raise params_error(
            vm, "block_pull", "disk", job.disk.name, "has no backing image to pull from"
        )
    base_at = _in_chain(vm, "block_pull", "base", base, images)
    if base_at == 0:
        raise params_error(vm, "block_pull", "base", base, "is the active image")
    base_path = images[base_at][0] if base_at else None
    _run(
        job,
        lambda: job.guest.block_pull(job.target, base_path, bandwidth, job.refused),
        False,
        False,
        progress,
        timeout,
    )
    if base_path is None and job.disk.snapshot:  # the overlay is whole: no backing file now
        return _switched(job, *images[0])
    return disk_value(designed(vm, job.state), job.disk.name)


def copy_disk(
    vm: LibvirtVM,
    disk: Disk | str,
    dest: str,
    dest_format: str,
    shallow: bool,
    bandwidth: int,
    progress: ProgressCallback | None,
    timeout: float,
    pivot: bool,
) -> Disk:
    """See DeviceOperations.block_copy."""
    job, _images = _prepare(vm, disk, "copy", bandwidth)
    if dest_format not in DISK_FORMATS:
        raise params_error(
            vm, "block_copy", "dest_format", dest_format, f"is not one of {', '.join(DISK_FORMATS)}"
        )
    target_file = Path(dest).absolute()
    if target_file.exists():
        raise params_error(vm, "block_copy", "dest", dest, "exists already (the copy makes it)")
    if not target_file.parent.is_dir():
        raise params_error(vm, "block_copy", "dest", dest, "is not in an existing directory")
    hotplug.image_name(vm.name, str(target_file), dest_format, False)
    element = domxml.disk_element(
        domxml.DiskConfig(
            source=str(target_file), target=job.target, bus=job.disk.bus, format=dest_format
        )
    )
    xml = domxml.to_string(element)
    try:
        _run(
            job,
            lambda: job.guest.block_copy(job.target, xml, bandwidth * MIB, shallow, job.refused),
            True,
            pivot,
            progress,
            timeout,
        )
    except BaseException:
        target_file.unlink(missing_ok=True)
        raise
    if pivot:
        return _switched(job, str(target_file), dest_format)
    return disk_value(designed(vm, job.state), job.disk.name)


def _run(
    job: _Job,
    start: Callable[[], None],
    mirror: bool,
    pivot: bool,
    progress: ProgressCallback | None,
    timeout: float,
) -> None:
    """Start the job and follow it to its end (see the module docstring)."""
    host = job.vm.host
    events = host.events.subscribe(job.state.uuid)
    try:
        start()
        deadline = Deadline(timeout)
        while True:
            event = _next_event(
                events, min(PROGRESS_INTERVAL, max(deadline.remaining(), 0.01)), job.target
            )
            if event is not None and event.block_job_ended:
                if event.block_job_completed:
                    return
                raise job.error("the job failed (libvirt's log of the domain may say why)")
            info = job.guest.block_job(job.target)
            if info is not None and progress is not None:
                kind, cur, end, mib_s = info
                if progress(BlockJobProgress(job.disk.name, kind, cur, end, mib_s)) is False:
                    _abort(job)
                    raise job.error("aborted by the progress callback")
            if mirror and event is not None and event.block_job_ready:
                _finish(job, events, pivot)
                return
            if deadline.expired():
                _abort(job)
                raise job.error(f"not done within {timeout:g} s; aborted")
    finally:
        host.events.unsubscribe(job.state.uuid, events)


def _next_event(
    events: queue.Queue[DomainEvent], timeout: float, target: str
) -> DomainEvent | None:
    return wait_event(events, timeout, lambda e: e.kind == BLOCK_JOB and e.device == target)


def _finish(job: _Job, events: queue.Queue[DomainEvent], pivot: bool) -> None:
    """A ready mirror: pivot to its result, or end it without switching."""
    job.guest.block_job_abort(job.target, pivot, job.refused)
    ended = wait_event(
        events,
        FINISH_TIMEOUT,
        lambda e: e.kind == BLOCK_JOB and e.device == job.target and e.block_job_ended,
    )
    if ended is None:
        raise job.error(f"the job did not end within {FINISH_TIMEOUT:g} s of its pivot")
    if pivot and not ended.block_job_completed:
        raise job.error("the pivot failed; the disk keeps its image")


def _abort(job: _Job) -> None:
    try:
        job.guest.block_job_abort(job.target, False, job.refused)
    except VMError as exc:
        log.warning("%s: cannot abort the %s of %s: %s", job.vm.name, job.kind, job.target, exc)


def _switched(job: _Job, path: str, fmt: str) -> Disk:
    """The disk now uses ``path``: the VM's state (and its copy in the domain) say so."""
    vm, disk = job.vm, job.disk
    state = vm.state or job.state
    image = hotplug.image_name(vm.name, path, fmt, False)
    owned = state.owned_files
    if disk.remove and not disk.raw_device and str(disk.path) != path:
        owned = (*owned, str(disk.path))  # remove_image would have removed it: it still goes

    def change(params: Mapping[str, str]) -> dict[str, str]:
        return hotplug.pointing_disk(params, disk, image, fmt)

    new = state.with_params(change(state.params), owned_files=owned)
    commit(vm, job.guest, new)
    log.info("%s: disk %s now uses %s", vm.name, disk.name, path)
    return disk_value(designed(vm, new), disk.name)
