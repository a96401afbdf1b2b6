"""What virtlib did to each VM, with times: the record a failure report shows.

Every :class:`~virtlib.contract.BaseVM` subclass gets its lifecycle operations
(:data:`RECORDED`) wrapped once, at class creation, so any backend records the same
way: the operation, when it started, how long it took, and how it ended (the error's
class and message).  :func:`live_vms` lists the VMs of this process that exist on a
hypervisor (created or adopted, not yet destroyed), for tools that collect evidence.
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from virtlib.contract import BaseVM
    from virtlib.vmcore import VMCore

F = TypeVar("F", bound=Callable[..., Any])

#: The operations recorded for every backend.
RECORDED = (
    "create",
    "destroy",
    "reboot",
    "migrate",
    "save_to_file",
    "restore_from_file",
    "pause",
    "resume",
    "wait_for_login",
    "wait_for_serial_login",
    "create_snapshot",
    "revert_snapshot",
    "delete_snapshot",
    "attach_disk",
    "detach_disk",
    "attach_nic",
    "detach_nic",
    "change_media",
    "eject_media",
    "set_vcpus",
    "set_memory",
    "attach_memory",
    "detach_memory",
    "block_commit",
    "block_pull",
    "block_copy",
)
MAX_ACTIONS = 1000  # per VM: a long-lived VM keeps the newest

_lock = threading.Lock()
_live: weakref.WeakSet[VMCore] = weakref.WeakSet()


@dataclass(frozen=True)
class Action:
    """One recorded operation."""

    name: str
    started: float  # time.time()
    seconds: float
    ok: bool
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def live_vms() -> list[BaseVM]:
    """The VMs of this process that have a state (created or adopted, not destroyed)."""
    return [vm for vm in seen_vms() if vm.state is not None]


def seen_vms() -> list[BaseVM]:
    """Every VM of this process that existed on a hypervisor, destroyed ones too (while
    something still refers to them)."""
    with _lock:
        return list(_live)  # type: ignore[arg-type]  # every VMCore made is a BaseVM


def note_live(vm: VMCore) -> None:
    with _lock:
        _live.add(vm)


def recorded(name: str, method: F) -> F:
    """``method`` of a VM, recording each call in ``vm.history`` (nested calls too: a reboot
    records its login; a call made by the recording machinery itself is not recorded)."""

    @functools.wraps(method)
    def wrapper(self: BaseVM, *args: Any, **kwargs: Any) -> Any:
        started, clock = time.time(), time.monotonic()
        try:
            result = method(self, *args, **kwargs)
        except BaseException as exc:
            self._record(Action(name, started, time.monotonic() - clock, False, _describe(exc)))
            raise
        self._record(Action(name, started, time.monotonic() - clock, True))
        if self.state is not None:
            note_live(self)
        return result

    wrapper.__virtlib_recorded__ = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def wrap_recorded(cls: type, inherited: bool = False) -> None:
    """Wrap the :data:`RECORDED` methods ``cls`` defines itself (once per class); with
    ``inherited`` also those it inherits (the base class, whose mixins define them)."""
    for name in RECORDED:
        method = getattr(cls, name, None) if inherited else cls.__dict__.get(name)
        if callable(method) and not getattr(method, "__virtlib_recorded__", False):
            setattr(cls, name, recorded(name, method))


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:500]}"
