"""The QEMU guest agent, whatever the backend: what a test can ask the guest without a login.

``vm.guest_agent()`` returns a :class:`GuestAgent`; a backend that has no agent
channel raises VMNotSupportedError.  Every call raises :class:`VMAgentError` when
the agent refuses, and :class:`VMAgentTimeoutError` when none answers in time.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field

from virtlib.errors import VMAgentError, VMAgentTimeoutError

__all__ = ["ExecResult", "GuestAgent", "GuestInterface", "VMAgentError", "VMAgentTimeoutError"]


@dataclass(frozen=True)
class ExecResult:
    """A command the agent ran: exit status, its output and error output (bytes, decoded)."""

    status: int
    stdout: str
    stderr: str
    signal: int | None = None  # the signal that ended it, if one did

    @property
    def ok(self) -> bool:
        return self.status == 0 and self.signal is None


@dataclass(frozen=True)
class GuestInterface:
    """A network interface as the guest sees it."""

    name: str
    mac: str
    addresses: tuple[str, ...] = field(default_factory=tuple)  # "192.0.2.5/24", "fe80::1/64"


class GuestAgent(abc.ABC):
    """The guest agent of one VM (see the module docstring)."""

    DEFAULT_TIMEOUT = 10.0

    @abc.abstractmethod
    def ping(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """:raises VMAgentTimeoutError: no agent answered within ``timeout``."""

    @abc.abstractmethod
    def wait(self, timeout: float = 120.0) -> None:
        """Wait until the agent answers (on a booting guest: until it has started).

        :raises VMAgentTimeoutError: it did not within ``timeout``.
        """

    @abc.abstractmethod
    def run(
        self,
        argv: Sequence[str],
        input_data: bytes = b"",
        timeout: float = 60.0,
    ) -> ExecResult:
        """Run ``argv`` (a program and its arguments, no shell) and wait for it to end."""

    @abc.abstractmethod
    def read_file(self, path: str, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        """The whole content of a guest file."""

    @abc.abstractmethod
    def write_file(self, path: str, data: bytes, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Create or replace a guest file with ``data``."""

    @abc.abstractmethod
    def interfaces(self, timeout: float = DEFAULT_TIMEOUT) -> list[GuestInterface]:
        """The guest's network interfaces and their addresses."""

    @abc.abstractmethod
    def fsfreeze(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Freeze the guest's filesystems (for a consistent disk snapshot); how many."""

    @abc.abstractmethod
    def fsthaw(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """Thaw them again; how many."""

    @abc.abstractmethod
    def set_password(self, user: str, password: str) -> None:
        """Set a guest user's password (the password is never logged)."""

    @abc.abstractmethod
    def os_info(self, timeout: float = DEFAULT_TIMEOUT) -> dict[str, str]:
        """The guest's os-release facts (``id``, ``version-id``, ``kernel-release``, ...)."""

    @abc.abstractmethod
    def sync_time(self) -> None:
        """Set the guest's clock from the host's (after a restore or a snapshot revert)."""

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Power the guest off through the agent."""

    @abc.abstractmethod
    def reboot(self) -> None:
        """Reboot the guest through the agent."""
