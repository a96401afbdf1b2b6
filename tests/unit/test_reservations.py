"""Host-wide reservations (MAC addresses, forwarded ports) and private working directories."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import socket
import stat
from pathlib import Path

import pytest

from virtlib import VMError, VMParamsError
from virtlib.macpool import MacPool
from virtlib.ports import PortPool, port_is_free
from virtlib.workdir import make_vm_dir, private_base

MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")

# --- MAC addresses ---------------------------------------------------------------------------


def test_reserve_lookup_free(run_dir: Path) -> None:
    pool = MacPool()
    mac = pool.reserve("vm-a", 0)
    assert MAC_RE.match(mac)
    first_octet = int(mac[:2], 16)
    assert first_octet & 0x02, "locally administered"
    assert not first_octet & 0x01, "unicast"
    assert pool.lookup("vm-a", 0) == mac
    assert pool.lookup("vm-a", 1) is None
    assert pool.lookup("vm-b", 0) is None
    # the table lives under VIRTLIB_RUN_DIR, shared with any other MacPool
    assert MacPool().lookup("vm-a", 0) == mac
    assert any(run_dir.iterdir())
    assert pool.free("vm-a") == [mac]
    assert pool.lookup("vm-a", 0) is None
    assert pool.free("vm-a") == []


def test_same_instance_and_nic_get_the_same_mac() -> None:
    pool = MacPool()
    mac = pool.reserve("vm-a", 0)
    assert pool.reserve("vm-a", 0) == mac
    assert MacPool().reserve("vm-a", 0) == mac
    assert pool.reserve("vm-a", 1) != mac


def test_distinct_vms_get_distinct_macs() -> None:
    pool = MacPool()
    macs = [pool.reserve(f"vm-{i}", nic) for i in range(20) for nic in range(3)]
    assert len(set(macs)) == len(macs)
    assert len(pool.reserved()) == len(macs)


def test_explicit_mac_is_reserved_lowercase() -> None:
    pool = MacPool()
    assert pool.reserve("vm-a", 0, "52:54:00:AB:CD:EF") == "52:54:00:ab:cd:ef"
    assert pool.lookup("vm-a", 0) == "52:54:00:ab:cd:ef"


def test_mac_of_another_vm_is_refused() -> None:
    pool = MacPool()
    pool.reserve("vm-a", 0, "52:54:00:12:34:56")
    with pytest.raises(VMParamsError, match="52:54:00:12:34:56"):
        pool.reserve("vm-b", 0, "52:54:00:12:34:56")
    with pytest.raises(VMParamsError):
        pool.reserve("vm-b", 0, "52:54:00:12:34:56".upper())
    assert pool.lookup("vm-b", 0) is None
    # once freed, it can be taken
    pool.free("vm-a")
    assert pool.reserve("vm-b", 0, "52:54:00:12:34:56") == "52:54:00:12:34:56"


def test_free_only_frees_that_vm() -> None:
    pool = MacPool()
    a0 = pool.reserve("vm", 0)
    a1 = pool.reserve("vm", 1)
    b = pool.reserve("vm2", 0)  # an instance id that merely starts with the other one
    assert sorted(pool.free("vm")) == sorted([a0, a1])
    assert pool.lookup("vm2", 0) == b
    assert pool.reserved() == {"vm2/0": b}


def test_explicit_path(tmp_path: Path) -> None:
    path = tmp_path / "macs.json"
    pool = MacPool(path)
    mac = pool.reserve("vm-a", 0)
    assert json.loads(path.read_text()) == {"vm-a/0": mac}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def _reserve_many(args: tuple[str, int, int]) -> list[str]:
    path, worker, count = args
    pool = MacPool(Path(path))
    return [pool.reserve(f"worker-{worker}", nic) for nic in range(count)]


def test_concurrent_reservations_from_several_processes(tmp_path: Path) -> None:
    path = tmp_path / "macs.json"
    workers, count = 4, 25
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        results = pool.map(_reserve_many, [(str(path), w, count) for w in range(workers)])
    macs = [mac for result in results for mac in result]
    assert len(macs) == workers * count
    assert len(set(macs)) == len(macs)
    # no lost updates: every reservation made it into the table, with the value handed out
    table = MacPool(path).reserved()
    assert len(table) == workers * count
    for w, result in enumerate(results):
        for nic, mac in enumerate(result):
            assert table[f"worker-{w}/{nic}"] == mac


# --- ports ----------------------------------------------------------------------------------


def _free_window(width: int) -> int:
    """The first port of ``width`` consecutive ports that are free right now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            low = probe.getsockname()[1] - width // 2
        if low > 1024 and all(port_is_free(p) for p in range(low, low + width)):
            return low
    pytest.skip("no window of free ports found")


def test_port_pool_gives_distinct_free_ports() -> None:
    low = _free_window(6)
    pool = PortPool(port_range=(low, low + 5))
    ports = [pool.reserve("vm-a", f"nic0/{guest}") for guest in (22, 80, 443)]
    ports += [pool.reserve("vm-b", "nic0/22")]
    assert len(set(ports)) == 4
    assert all(low <= p <= low + 5 for p in ports)
    assert pool.reserve("vm-a", "nic0/22") == ports[0]
    assert pool.lookup("vm-a", "nic0/80") == ports[1]
    assert pool.lookup("vm-a", "nic9/80") is None


def test_port_bound_by_another_socket_is_never_handed_out() -> None:
    low = _free_window(5)
    busy = low + 2
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", busy))
        pool = PortPool(port_range=(low, low + 4))
        ports = [pool.reserve("vm-a", f"p{i}") for i in range(4)]
        assert busy not in ports
        assert sorted(ports) == [p for p in range(low, low + 5) if p != busy]
        # the range is used up: the bound port is still refused
        with pytest.raises(VMError):
            pool.reserve("vm-a", "one-too-many")


def test_port_pool_free_returns_ports() -> None:
    low = _free_window(2)
    pool = PortPool(port_range=(low, low + 1))
    a = pool.reserve("vm-a", "x")
    b = pool.reserve("vm-b", "x")
    with pytest.raises(VMError):
        pool.reserve("vm-c", "x")
    assert pool.free("vm-a") == [a]
    assert pool.lookup("vm-a", "x") is None
    assert pool.reserve("vm-c", "x") == a
    assert pool.lookup("vm-b", "x") == b


# --- private directories -------------------------------------------------------------------


def test_make_vm_dir_is_private_inside_a_private_base(run_dir: Path) -> None:
    path = make_vm_dir("vm1", "20240101-000000-abcd")
    assert path.parent == run_dir
    assert path.is_dir()
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    assert path.name.startswith("vm1-20240101-000000-abcd-")
    assert make_vm_dir("vm1", "20240101-000000-abcd") != path


def test_make_vm_dir_name_cannot_escape_the_base(run_dir: Path) -> None:
    path = make_vm_dir("../../etc/evil name", "inst")
    assert path.parent == run_dir
    assert "/" not in path.name


def test_open_base_is_tightened_to_0700(run_dir: Path) -> None:
    run_dir.mkdir()
    os.chmod(run_dir, 0o755)  # noqa: S103 - the point of the test
    assert private_base() == run_dir
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give the base to another user")
def test_base_owned_by_someone_else_is_refused(run_dir: Path) -> None:
    run_dir.mkdir(mode=0o700)
    os.chown(run_dir, 65534, 65534)
    with pytest.raises(VMError, match="owned"):
        make_vm_dir("vm1", "inst")
    assert list(run_dir.iterdir()) == []


def test_symlinked_base_is_refused(run_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    run_dir.symlink_to(target)
    with pytest.raises(VMError):
        make_vm_dir("vm1", "inst")
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("kind", ["file", "dangling-symlink"])
def test_base_that_is_not_a_directory_is_refused_with_vm_error(
    run_dir: Path, tmp_path: Path, kind: str
) -> None:
    if kind == "file":
        run_dir.write_text("")
    else:
        run_dir.symlink_to(tmp_path / "missing")
    with pytest.raises(VMError):
        make_vm_dir("vm1", "inst")
