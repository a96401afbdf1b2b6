"""What tools ask a backend about a host: the VMs virtlib manages there, and host checks.

Plain values, backend-neutral: the CLI (``virtlib list``, ``virtlib host check``)
and the pytest plugin read them through the contract (:class:`~virtlib.contract.BaseVM`'s
class methods), never through a backend's own types.
"""

from __future__ import annotations

from dataclasses import dataclass

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass(frozen=True)
class ManagedVM:
    """One VM virtlib made, as the hypervisor reports it."""

    name: str
    uri: str
    state: str
    uuid: str = ""
    instance: str = ""
    ssh: str = ""  # "127.0.0.1:PORT" for a user-net forward of guest port 22 (" on HOST": remote)


@dataclass(frozen=True)
class HostCheck:
    """One check of ``virtlib host check``: ``status`` is OK, WARN or FAIL."""

    name: str
    status: str
    detail: str
    todo: str = ""
