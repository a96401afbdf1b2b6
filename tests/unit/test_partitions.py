"""Partitions of the MAC and port pools: xdist workers share no table and no lock."""

from __future__ import annotations

import itertools
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest

from virtlib import VMParamsError, reservations
from virtlib.macpool import MacPool
from virtlib.ports import PORT_RANGE, PortPool
from virtlib.reservations import (
    ENV_PARTITION,
    WHOLE,
    Partition,
    ReservationTable,
    current_partition,
    set_partition,
)


@pytest.fixture(autouse=True)
def no_partition(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts without a partition (and leaves none behind), even under xdist."""
    monkeypatch.delenv(ENV_PARTITION, raising=False)
    monkeypatch.setattr(reservations, "_partition", None)
    yield


def test_two_partitions_never_hand_out_the_same_mac() -> None:
    first, second = MacPool(partition=Partition(0, 2)), MacPool(partition=Partition(1, 2))
    macs0 = [first.reserve(f"vm-{i}", nic) for i in range(200) for nic in range(2)]
    macs1 = [second.reserve(f"vm-{i}", nic) for i in range(200) for nic in range(2)]
    assert len(set(macs0)) == len(macs0) and len(set(macs1)) == len(macs1)
    assert not set(macs0) & set(macs1)
    assert all(mac.startswith("52:54:00:00:") for mac in macs0)
    assert all(mac.startswith("52:54:00:01:") for mac in macs1)


def test_two_partitions_never_hand_out_the_same_port() -> None:
    first, second = PortPool(partition=Partition(0, 2)), PortPool(partition=Partition(1, 2))
    assert first.high < second.low
    assert (first.low, second.high) == PORT_RANGE
    ports0 = {first.reserve(f"vm-{i}", "nic0/22") for i in range(50)}
    ports1 = {second.reserve(f"vm-{i}", "nic0/22") for i in range(50)}
    assert len(ports0) == len(ports1) == 50
    assert not ports0 & ports1
    assert all(first.low <= p <= first.high for p in ports0)
    assert all(second.low <= p <= second.high for p in ports1)


def test_each_partition_has_its_own_table_file(run_dir: Path) -> None:
    parts = [Partition(i, 3) for i in range(3)]
    files = {MacPool(partition=p).table.path for p in parts}
    files |= {PortPool(partition=p).table.path for p in parts}
    files |= {MacPool().table.path, PortPool().table.path}  # the unpartitioned tables
    assert len(files) == 8
    assert all(path.parent == run_dir for path in files)
    assert MacPool(partition=Partition(2, 3)).table.path.name == "mac-pool.p2.json"
    MacPool(partition=Partition(0, 3)).reserve("vm-a", 0)
    assert MacPool(partition=Partition(1, 3)).reserved() == {}
    assert MacPool().reserved() == {}


def test_port_slices_cover_the_range_without_overlap() -> None:
    for count in (1, 2, 3, 7, 256):
        slices = [Partition(i, count).slice(*PORT_RANGE) for i in range(count)]
        assert slices[0][0] == PORT_RANGE[0] and slices[-1][1] == PORT_RANGE[1]
        for (_, high), (low, _) in itertools.pairwise(slices):
            assert low == high + 1
        assert all(low <= high for low, high in slices)


def test_without_partition_nothing_changes(run_dir: Path) -> None:
    assert current_partition() == WHOLE
    assert MacPool().table.path == run_dir / "mac-pool.json"
    assert PortPool().table.path == run_dir / "port-pool.json"
    assert (PortPool().low, PortPool().high) == PORT_RANGE
    assert MacPool().reserve("vm-a", 0).startswith("52:54:00:")


def test_set_partition_and_environment(monkeypatch: pytest.MonkeyPatch, run_dir: Path) -> None:
    monkeypatch.setenv(ENV_PARTITION, "3/4")
    assert current_partition() == Partition(3, 4)
    assert MacPool().table.path == run_dir / "mac-pool.p3.json"
    assert MacPool().reserve("vm-a", 0).startswith("52:54:00:03:")
    assert PortPool().low == Partition(3, 4).slice(*PORT_RANGE)[0]
    set_partition(1, 2)  # the process's own setting wins over the environment
    assert current_partition() == Partition(1, 2)
    reservations.clear_partition()
    assert current_partition() == Partition(3, 4)


def test_explicit_path_and_range_are_used_as_given(tmp_path: Path) -> None:
    set_partition(1, 2)
    path = tmp_path / "ports.json"
    pool = PortPool(path, port_range=(40000, 40009))
    assert pool.table.path == path
    assert (pool.low, pool.high) == (40000, 40009)


@pytest.mark.parametrize("text", ["", "1", "2/2", "-1/2", "a/b", "0/0", "0/257"])
def test_bad_partitions_are_refused(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    if not text:  # an empty variable means no partition
        monkeypatch.setenv(ENV_PARTITION, text)
        assert current_partition() == WHOLE
        return
    monkeypatch.setenv(ENV_PARTITION, text)
    with pytest.raises(VMParamsError):
        current_partition()


def _reserve_in_partition(args: tuple[int, int]) -> tuple[str, list[str], list[int]]:
    index, count = args
    set_partition(index, count)
    macs, ports = MacPool(), PortPool()
    return (
        str(ReservationTable("mac-pool.json").path),
        [macs.reserve(f"vm-{i}", 0) for i in range(30)],
        [ports.reserve(f"vm-{i}", "nic0/22") for i in range(10)],
    )


def test_worker_processes_with_partitions_share_nothing() -> None:
    workers = 3
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        results = pool.map(_reserve_in_partition, [(w, workers) for w in range(workers)])
    tables = [table for table, _, _ in results]
    macs = [mac for _, result, _ in results for mac in result]
    ports = [port for _, _, result in results for port in result]
    assert len(set(tables)) == workers
    assert len(set(macs)) == len(macs) == workers * 30
    assert len(set(ports)) == len(ports) == workers * 10
