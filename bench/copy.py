"""File copies: ``copy_files_to``/``copy_files_from`` against OpenSSH's ``sftp``, same guest.

One bundled guest; three transfers: a 16 MiB file to the guest, a 16 MiB
file from the guest, a tree of 300 files of 2 KB to the guest.  virtlib logs
in with the guest's password, as the contract does; the baseline is
``sftp -b`` (batch mode) with a key put into the guest for it alone, on the
same forwarded port, with the host key pinned from the guest build's own
record in a known_hosts file written here (``StrictHostKeyChecking=yes``).
Runs alternate A B / B A; each run includes connecting and logging in, as a
user's copy does.  Destinations are removed between runs (not timed).
"""

from __future__ import annotations

import hashlib
import os
import resource
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench import cpu
from bench.context import LOGIN_TIMEOUT, Context
from bench.model import BenchResult, Row, Target
from bench.stats import summarize
from virtlib.sessions.shell import ShellSession

if TYPE_CHECKING:
    from virtlib import BaseVM

TARGET = Target("ratio_max", 1.11, "virtlib/sftp <= 1.11")
BIG_MIB = 16
TREE_FILES, TREE_FILE_BYTES = 300, 2048
_GUEST_SOURCE = "/tmp/bench-copy-source.bin"


@dataclass(frozen=True)
class Sample:
    seconds: float
    guest_cpu: float  # the guest's QEMU process
    client_cpu: float  # the bench process and its children (ssh, sftp)
    others: float  # everything else on the host


def _client_cpu() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return cpu.self_cpu() + children.ru_utime + children.ru_stime


def _measure(call: Callable[[], object], qemu_pid: int) -> Sample:
    meter = cpu.CpuMeter.start()
    guest0, client0 = cpu.process_cpu(qemu_pid) or 0.0, _client_cpu()
    start = time.perf_counter()
    call()
    seconds = time.perf_counter() - start
    guest, client = (cpu.process_cpu(qemu_pid) or 0.0) - guest0, _client_cpu() - client0
    used = meter.stop()
    others = max(used.get("host busy", 0.0) - guest - client, 0.0)
    return Sample(seconds, guest, client, others)


class OpensshSftp:
    """OpenSSH's ``sftp -b`` against the guest with a key of its own and a pinned host key."""

    def __init__(self, work: Path, port: int, host_keys: str) -> None:
        self.key = work / "id_ed25519"
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "bench-copy",
                "-f",
                str(self.key),
            ],
            check=True,
        )
        self.known_hosts = work / "known_hosts"
        self.known_hosts.write_text(host_keys)
        self.port = port
        self.batch = work / "batch"

    def authorize(self, session: ShellSession) -> None:
        public = (self.key.parent / f"{self.key.name}.pub").read_text().strip()
        session.cmd(
            "mkdir -p /root/.ssh && chmod 700 /root/.ssh && "
            f"printf '%s\\n' {shlex.quote(public)} > /root/.ssh/authorized_keys && "
            "chmod 600 /root/.ssh/authorized_keys"
        )

    def run(self, command: str) -> None:
        self.batch.write_text(command + "\n")
        argv = ["sftp", "-q", "-b", str(self.batch), "-P", str(self.port), "-i", str(self.key)]
        for option in (
            f"UserKnownHostsFile={self.known_hosts}",
            "GlobalKnownHostsFile=/dev/null",
            "StrictHostKeyChecking=yes",
            "BatchMode=yes",
            "IdentitiesOnly=yes",
            "IdentityAgent=none",
        ):
            argv += ["-o", option]
        subprocess.run([*argv, "root@127.0.0.1"], check=True, stdout=subprocess.DEVNULL)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(ctx: Context) -> BenchResult:
    """Copy files and trees both ways with virtlib and scp, alternating, and record ratios.

    Long on purpose: a benchmark reads as its one measured sequence, top to bottom."""
    result = BenchResult("copy")
    reps = ctx.reps(7, 3)
    vm = ctx.new_vm("copy")
    work = Path(tempfile.mkdtemp(prefix="bench-copy-"))
    samples: dict[str, list[Sample]] = {}
    try:
        vm.create()
        session = vm.wait_for_login(timeout=LOGIN_TIMEOUT)
        qemu_pid = cpu.libvirt_qemu_pid(vm.name)
        if qemu_pid is None:
            raise RuntimeError(f"no QEMU pid for {vm.name}")
        port = vm.get_port(22)
        sftp = OpensshSftp(work, port, ctx.guest.known_hosts("127.0.0.1", port))
        sftp.authorize(session)
        big = work / "big.bin"
        big.write_bytes(os.urandom(BIG_MIB << 20))
        tree = work / "tree"
        tree.mkdir()
        for i in range(TREE_FILES):
            (tree / f"f{i:03d}").write_bytes(os.urandom(TREE_FILE_BYTES))
        session.cmd(f"dd if=/dev/urandom of={_GUEST_SOURCE} bs=1M count={BIG_MIB} 2>/dev/null")
        back = work / "back.bin"
        cases: dict[str, tuple[Callable[[], object], Callable[[], object], str]] = {
            "to": (
                lambda: vm.copy_files_to(str(big), "/tmp/v.bin"),
                lambda: sftp.run(f"put {big} /tmp/o.bin"),
                "rm -f /tmp/v.bin /tmp/o.bin",
            ),
            "from": (
                lambda: vm.copy_files_from(_GUEST_SOURCE, str(back)),
                lambda: sftp.run(f"get {_GUEST_SOURCE} {back}"),
                "true",
            ),
            "tree": (
                lambda: vm.copy_files_to(str(tree), "/tmp/vtree"),
                lambda: sftp.run(f"put -r {tree} /tmp/otree"),
                "rm -rf /tmp/vtree /tmp/otree",
            ),
        }
        _check_content(vm, session, big, back)
        for rep in range(reps + 1):  # the first round warms caches and is not kept
            for name, (ours, theirs, tidy) in cases.items():
                pair = [("virtlib", ours), ("sftp", theirs)]
                for who, call in pair if rep % 2 == 0 else pair[::-1]:
                    sample = _measure(call, qemu_pid)
                    session.cmd(tidy)
                    if rep:
                        samples.setdefault(f"{name} {who}", []).append(sample)
        session.close()
    finally:
        ctx.tracker.destroy_vm(vm)
        shutil.rmtree(work, ignore_errors=True)
    for name, metric in (
        ("to", f"one {BIG_MIB} MiB file to the guest"),
        ("from", f"one {BIG_MIB} MiB file from the guest"),
        ("tree", f"a tree of {TREE_FILES} files of {TREE_FILE_BYTES // 1024} KB to the guest"),
    ):
        mine, base = samples[f"{name} virtlib"], samples[f"{name} sftp"]
        row = Row(
            "copy",
            metric,
            summarize([s.seconds for s in mine], "s"),
            baseline=summarize([s.seconds for s in base], "s"),
            baseline_label="OpenSSH sftp -b, same forward",
            target=TARGET,
        )
        row.extra["cpu_s_median"] = {
            who: _cpu_medians(s) for who, s in (("virtlib", mine), ("sftp", base))
        }
        if row.met is False:
            row.finding = _finding(row.extra["cpu_s_median"])
        result.rows.append(row)
    result.notes.append(
        "each run includes ssh's connection and login (virtlib: password; sftp: key); "
        "CPU medians per run in extra.cpu_s_median (guest QEMU, client = bench + ssh/sftp, others)"
    )
    return result


def _check_content(vm: BaseVM, session: ShellSession, big: Path, back: Path) -> None:
    """One checked copy each way before timing (a fast wrong copy would be no result)."""
    vm.copy_files_to(str(big), "/tmp/check.bin")
    guest_sum = session.cmd_output("sha256sum /tmp/check.bin").split()[0]
    if guest_sum != _sha256(big):
        raise RuntimeError("the file copied to the guest differs from the source")
    vm.copy_files_from("/tmp/check.bin", str(back))
    if _sha256(back) != _sha256(big):
        raise RuntimeError("the file copied back from the guest differs from the source")
    session.cmd("rm -f /tmp/check.bin")


def _cpu_medians(samples: list[Sample]) -> dict[str, float]:
    def median(values: list[float]) -> float:
        return round(summarize(values, "s").median, 3)

    return {
        "guest": median([s.guest_cpu for s in samples]),
        "client": median([s.client_cpu for s in samples]),
        "others": median([s.others for s in samples]),
    }


def _finding(cpu_s: dict[str, dict[str, float]]) -> str:
    ours, theirs = cpu_s["virtlib"], cpu_s["sftp"]
    return (
        f"CPU s per run (median): guest QEMU {ours['guest']:.2f} virtlib vs {theirs['guest']:.2f} "
        f"sftp; client {ours['client']:.2f} vs {theirs['client']:.2f}; everything else on the "
        f"host {ours['others']:.2f} vs {theirs['others']:.2f}"
    )
