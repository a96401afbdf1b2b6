"""backends/libvirt/migration.py's job loop (``_run_job``) against a fake domain.

The fake Guest reports job statistics and records abortJob; the migrate call
runs in the loop's worker thread and behaves like libvirt's migrate3: it
returns when the job completes, raises when the job is aborted, or (a stuck
job) ignores the abort.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from virtlib.backends.libvirt import migration
from virtlib.backends.libvirt.guest import Guest
from virtlib.errors import (
    HypervisorError,
    VMMigrateCancelError,
    VMMigrateFailedError,
    VMMigrateTimeoutError,
    VMTimeoutError,
)
from virtlib.migration import MigrationProgress

TOTAL = 1000


class FakeGuest:
    """A domain whose migration job advances by ``step`` bytes each time it is looked at."""

    def __init__(self, step: int = 100, abort_fails: bool = False) -> None:
        self.step = step
        self.processed = 0
        self.looks = 0
        self.abort_fails = abort_fails
        self.aborted = threading.Event()
        self.completed = threading.Event()

    def job_stats(self, completed: bool = False) -> dict[str, Any]:
        self.looks += 1
        if self.completed.is_set() or self.aborted.is_set():
            return {}
        self.processed = min(TOTAL, self.processed + self.step)
        if self.processed >= TOTAL:
            self.completed.set()
        return {
            "type": 2,  # VIR_DOMAIN_JOB_UNBOUNDED
            "data_total": TOTAL,
            "data_processed": self.processed,
            "data_remaining": TOTAL - self.processed,
            "memory_iteration": 1,
        }

    job_running = staticmethod(Guest.job_running)

    def abort_job(self) -> None:
        self.aborted.set()
        if self.abort_fails:
            raise VMTimeoutError("abort the job of 'vm1': timed out")


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(migration, "POLL_INTERVAL", 0.01)


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at the end of the test: lets a stuck worker thread finish."""
    event = threading.Event()
    yield event
    event.set()


VM = SimpleNamespace(name="vm1", uri="qemu:///system")


def run(guest: FakeGuest, call: Any, **request: Any) -> migration.MigrationResult:
    return migration._run_job(VM, guest, call, migration.MigrationRequest(**request))  # type: ignore[arg-type]


def migrate_until_done(guest: FakeGuest) -> Any:
    """migrate3: returns when the job completed, raises libvirt's (translated) abort error."""

    def call() -> None:
        while not guest.completed.is_set():
            if guest.aborted.is_set():
                raise HypervisorError("migrate", "vm1", "operation aborted: migration job")
            time.sleep(0.005)

    return call


def test_progress_is_sampled_until_the_job_completes() -> None:
    guest = FakeGuest(step=100)
    seen: list[MigrationProgress] = []
    result = run(guest, migrate_until_done(guest), progress=seen.append)
    assert seen and result.progress == seen
    processed = [sample.data_processed for sample in seen]
    assert processed == sorted(processed) and processed[0] > 0
    assert seen[-1].percent == pytest.approx(100.0 * processed[-1] / TOTAL)
    assert all(sample.data_total == TOTAL for sample in seen)
    assert not guest.aborted.is_set()
    assert result.source_uri == VM.uri and result.wall_time_s > 0


def test_a_job_over_its_timeout_is_aborted() -> None:
    guest = FakeGuest(step=1)  # would take 1000 looks
    started = time.monotonic()
    with pytest.raises(VMMigrateTimeoutError) as info:
        run(guest, migrate_until_done(guest), timeout=0.1)
    assert guest.aborted.is_set()
    assert time.monotonic() - started < 2
    assert "vm1" in str(info.value) and "the VM runs on the source" in str(info.value)


def test_cancel_delay_aborts_the_job() -> None:
    guest = FakeGuest(step=1)
    with pytest.raises(VMMigrateCancelError) as info:
        run(guest, migrate_until_done(guest), cancel_delay=0.05, timeout=60)
    assert guest.aborted.is_set()
    assert "cancelled after 0.05 s" in str(info.value)
    assert "operation aborted" in str(info.value)  # libvirt's own account of it


def test_a_worker_exception_that_is_not_libvirts_is_a_failed_migration() -> None:
    guest = FakeGuest()
    bug = RuntimeError("the worker broke")

    def call() -> None:
        raise bug

    with pytest.raises(VMMigrateFailedError) as info:
        run(guest, call)
    assert info.value.__cause__ is bug
    assert "the worker broke" in str(info.value) and "vm1" in str(info.value)


def test_a_libvirt_failure_is_a_failed_migration() -> None:
    guest = FakeGuest()
    refused = HypervisorError("migrate", "vm1", "unsafe migration (on qemu:///system)", 1)

    def call() -> None:
        raise refused

    with pytest.raises(VMMigrateFailedError) as info:
        run(guest, call)
    assert info.value.__cause__ is refused


def test_a_job_that_ignores_the_abort_is_not_waited_for_forever(
    monkeypatch: pytest.MonkeyPatch, release: threading.Event
) -> None:
    monkeypatch.setattr(migration, "ABORT_GRACE", 0.2)
    guest = FakeGuest(step=0, abort_fails=True)
    started = time.monotonic()
    with pytest.raises(VMMigrateTimeoutError) as info:
        run(guest, lambda: release.wait(30), timeout=0.05)
    elapsed = time.monotonic() - started
    assert guest.aborted.is_set()
    assert 0.2 <= elapsed < 2, elapsed
    assert "did not stop within 0.2 s" in str(info.value)


def test_a_cancelled_job_that_ignores_the_abort_says_so(
    monkeypatch: pytest.MonkeyPatch, release: threading.Event
) -> None:
    monkeypatch.setattr(migration, "ABORT_GRACE", 0.2)
    guest = FakeGuest(step=0)
    with pytest.raises(VMMigrateCancelError) as info:
        run(guest, lambda: release.wait(30), cancel_delay=0.05)
    assert "did not stop within 0.2 s" in str(info.value)


def test_a_job_that_completes_despite_the_abort_is_a_success() -> None:
    """The abort came too late: migrate3 returned normally, so the VM is on the destination;
    reporting a timeout ("the VM runs on the source") would lose track of it."""
    guest = FakeGuest(step=0)

    def call() -> None:
        guest.aborted.wait(10)  # finishes right after the abort, successfully

    result = run(guest, call, timeout=0.05)
    assert guest.aborted.is_set()
    assert result.wall_time_s >= 0.05
