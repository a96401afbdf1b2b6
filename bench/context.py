"""The run's shared context: names, repetitions, the guest, the hosts and the tracker."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import virtlib
from bench.cleanup import Tracker
from virtlib.textutil import random_string

if TYPE_CHECKING:
    from virtlib.guest import GuestImage
    from virtlib.secondhost import SecondHost

URI = "qemu:///system"
MEM_MIB = 256
VCPUS = 1
LOGIN_TIMEOUT = 180.0


@dataclass
class Context:
    """Passed to every benchmark."""

    quick: bool
    prefix: str
    guest: GuestImage
    tracker: Tracker
    uri: str = URI
    second_host: SecondHost | None = None
    raw_cgroup: bool = True  # raw QEMUs in /machine/<name>, like libvirt's (bench.cgroup)

    @classmethod
    def make(cls, quick: bool, raw_cgroup: bool = True, prefix: str = "bench") -> Context:
        from virtlib.guest import ensure_guest

        prefix = f"{prefix}-{random_string(6)}"
        return cls(quick, prefix, ensure_guest(), Tracker(), raw_cgroup=raw_cgroup)

    @property
    def cores(self) -> int:
        return os.cpu_count() or 1

    def reps(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def name(self, label: str) -> str:
        """A unique domain name carrying the run's prefix (the sweep finds it by that)."""
        return f"{self.prefix}-{label}-{random_string(4)}"

    def new_vm(self, label: str, **params: str) -> virtlib.BaseVM:
        """An unstarted, tracked VM of the bundled guest: 256 MiB, 1 vCPU, on ``uri``."""
        p = virtlib.Params(vm_type="libvirt", connect_uri=self.uri, mem=str(MEM_MIB))
        p["smp"] = str(VCPUS)
        p.update(params)
        return self.tracker.add_vm(virtlib.new_vm(self.name(label), p))
