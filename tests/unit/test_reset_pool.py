"""The reset pool's decisions, on a stand-in VM that records what it was asked: boot and
checkpoint once, revert after, boot again when the revert fails, clean up a test's own
snapshots and params, and fall back to boots for a backend without snapshots."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from virtlib.contract import BaseVM
from virtlib.errors import VMNotSupportedError, VMSnapshotNotFoundError
from virtlib.params import Params
from virtlib.reset import (
    CHECKPOINT,
    KeeperPool,
    is_bundled_diskless,
    scratch_disk_params,
)
from virtlib.snapshot import Snapshot


@dataclass
class Spec:
    nics: tuple[str, ...] = ("nic1",)


@dataclass
class StandIn:
    """The contract calls a Keeper makes, recorded."""

    name: str
    snapshots: bool = True
    calls: list[str] = field(default_factory=list)
    params: Params = field(default_factory=lambda: Params(mem="256"))
    spec: Spec = field(default_factory=Spec)
    taken: list[Snapshot] = field(default_factory=list)
    revert_fails: bool = False

    def create(self) -> None:
        self.calls.append("create")

    def wait_for_serial_login(self, timeout: float = 0) -> None:
        self.calls.append("serial")

    def wait_for_login(self, timeout: float = 0) -> StandIn:
        self.calls.append("ssh")
        return self

    def close(self) -> None:
        pass

    def create_snapshot(self, name: str, **_: Any) -> Snapshot:
        if not self.snapshots:
            raise VMNotSupportedError("snapshots", "standin")
        parent = self.taken[-1].name if self.taken else None
        self.taken.append(Snapshot(name, parent=parent))
        self.calls.append(f"snapshot {name}")
        return self.taken[-1]

    def revert_snapshot(self, name: str) -> None:
        if self.revert_fails:
            raise VMSnapshotNotFoundError(self.name, name)
        self.calls.append(f"revert {name}")

    def list_snapshots(self) -> list[Snapshot]:
        return list(self.taken)

    def delete_snapshot(self, name: str, children: bool = False) -> None:
        self.calls.append(f"delete {name}{' +children' if children else ''}")
        self.taken = [s for s in self.taken if s.name != name]

    def destroy(self, gracefully: bool = True) -> None:
        self.calls.append("destroy")


@dataclass
class Maker:
    made: list[StandIn] = field(default_factory=list)
    snapshots: bool = True

    def __call__(self) -> BaseVM:
        vm = StandIn(f"vm{len(self.made)}", snapshots=self.snapshots)
        self.made.append(vm)
        return cast(BaseVM, vm)


KEY = (("name", ""),)


def test_first_take_boots_and_checkpoints_the_next_ones_revert() -> None:
    pool, maker = KeeperPool(), Maker()
    keeper = pool.keeper(KEY, maker)
    vm = keeper.take()
    assert maker.made[0].calls == ["create", "serial", "ssh", f"snapshot {CHECKPOINT}"]
    assert keeper.last[0] == "boot"
    keeper.release()
    assert pool.keeper(KEY, maker) is keeper
    vm.params["mem"] = "4096"  # a test's changes to params do not stay
    assert keeper.take() is vm
    assert maker.made[0].calls[-2:] == [f"revert {CHECKPOINT}", "serial"]
    assert vm.params["mem"] == "256" and keeper.last[0] == "revert"
    assert len(maker.made) == 1


def test_a_busy_keeper_is_not_shared() -> None:
    pool, maker = KeeperPool(), Maker()
    first = pool.keeper(KEY, maker)
    first.take()
    second = pool.keeper(KEY, maker)
    assert second is not first
    assert pool.keeper((("name", "other"),), maker) is not first


def test_a_failed_revert_boots_a_new_vm() -> None:
    pool, maker = KeeperPool(), Maker()
    keeper = pool.keeper(KEY, maker)
    keeper.take()
    keeper.release()
    maker.made[0].revert_fails = True
    vm = keeper.take()
    assert maker.made[0].calls[-1] == "destroy"
    assert cast(StandIn, vm) is maker.made[1]
    assert maker.made[1].calls[-1] == f"snapshot {CHECKPOINT}"


def test_snapshots_a_test_took_are_deleted_at_the_next_revert() -> None:
    pool, maker = KeeperPool(), Maker()
    keeper = pool.keeper(KEY, maker)
    vm = keeper.take()
    keeper.release()
    vm.create_snapshot("mine")
    keeper.take()
    assert "delete mine +children" in maker.made[0].calls
    assert [s.name for s in vm.list_snapshots()] == [CHECKPOINT]


def test_without_snapshots_every_take_boots() -> None:
    pool, maker = KeeperPool(), Maker(snapshots=False)
    keeper = pool.keeper(KEY, maker)
    keeper.take()
    keeper.release()
    keeper.take()
    assert len(maker.made) == 2 and maker.made[0].calls[-1] == "destroy"


def test_destroy_all_reports_failures_and_forgets() -> None:
    pool, maker = KeeperPool(), Maker()
    pool.keeper(KEY, maker).take()
    broken = pool.keeper(KEY, maker)
    broken.take()

    def fail(gracefully: bool = True) -> None:
        raise RuntimeError("stuck")

    maker.made[1].destroy = fail  # type: ignore[method-assign]
    failures = pool.destroy_all()
    assert failures == ["vm1: RuntimeError: stuck"]
    assert maker.made[0].calls[-1] == "destroy" and pool.vms() == []


@pytest.mark.parametrize(
    ("params", "diskless"),
    [
        ({}, True),
        ({"guest": "bundled"}, True),
        ({"images": "d1"}, False),
        ({"cdroms": "cd1"}, False),
        ({"kernel": "vmlinuz"}, False),
        ({"guest": "none"}, False),
    ],
)
def test_which_guests_get_a_scratch_disk(params: dict[str, str], diskless: bool) -> None:
    assert is_bundled_diskless(Params(params)) is diskless


def test_scratch_disk_params_make_a_bundled_guest_with_a_qcow2_disk() -> None:
    params = Params(scratch_disk_params("vt-vm-abc", Path("/var/tmp/s")))
    assert params["guest"] == "bundled"
    disk = params.object_params(params.objects("images")[0])
    assert disk["image_name"] == "/var/tmp/s/vt-vm-abc-scratch"
    assert (disk["image_format"], disk["create_image"], disk["remove_image"]) == (
        "qcow2",
        "yes",
        "yes",
    )
