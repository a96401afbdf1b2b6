"""A BaseVM backend without a hypervisor, for testing what BaseVM builds from primitives.

Its serial console is a fake guest (tests/unit/fake_guest.py) behind a
ConsoleBuffer, as LibvirtVM's is behind libvirt's console stream; its network
logins follow a script (``network``: sessions to return or errors to raise).
The registry can load it (``fake_vm:FakeVM``) for the runner's tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fake_guest import PASSWORD, PROMPT_RE, FakeGuest

from virtlib.contract import BaseVM
from virtlib.errors import LoginTimeoutError, VMDeadError, VMNotSupportedError
from virtlib.params import Params
from virtlib.sessions.buffer import ConsoleBuffer
from virtlib.sessions.shell import ShellSession
from virtlib.sessions.transport import BufferSpawn

#: Every FakeVM made (the runner's tests look at the VMs a run made).
MADE: list[FakeVM] = []


def fake_params(**params: str) -> Params:
    """Params a FakeVM logs in with (the fake guest's prompt and password)."""
    return Params({"shell_prompt": PROMPT_RE, "password": PASSWORD, **params})


class FakeVM(BaseVM):
    BACKEND = "fake"

    def __init__(self, name: str, params: dict[str, str], root_dir: str | Path = ".") -> None:
        merged = fake_params()
        merged.update(params)
        super().__init__(name, merged, root_dir)
        self.power = "shut off"
        self.guest: FakeGuest | None = None
        self._buffer: ConsoleBuffer | None = None
        #: What login() does, attempt by attempt: an exception to raise or "ok"; then "ok".
        self.network: list[BaseException | str] = []
        self.login_calls: list[tuple[int, float, str | None, str | None]] = []
        self.sessions: list[ShellSession] = []
        self.destroyed = False
        self.create_calls: list[dict[str, Any]] = []
        MADE.append(self)

    # --- the console and the "network": fake guests ------------------------------------
    def _console_guest(self) -> None:
        self._buffer = ConsoleBuffer()
        self.guest = FakeGuest(self._buffer.append, self._buffer.close, state="login")
        spawn = BufferSpawn(self._buffer, self.guest.feed, name=f"{self.name} console")
        self.serial_console = ShellSession(
            spawn, prompt=PROMPT_RE, output_source=self._buffer.get_output
        )
        self.guest.start()

    def login(
        self,
        nic_index: int = 0,
        timeout: float = 10,
        username: str | None = None,
        password: str | None = None,
    ) -> ShellSession:
        self.login_calls.append((nic_index, timeout, username, password))
        outcome = self.network.pop(0) if self.network else "ok"
        if isinstance(outcome, BaseException):
            raise outcome
        if self.is_dead():
            raise LoginTimeoutError("", timeout)
        buffer = ConsoleBuffer()
        guest = FakeGuest(buffer.append, buffer.close, state="shell")
        session = ShellSession(BufferSpawn(buffer, guest.feed, name="ssh"), prompt=PROMPT_RE)
        guest.start()
        session.guest = guest  # type: ignore[attr-defined]
        self.sessions.append(session)
        return session

    # --- primitives ----------------------------------------------------------------------
    def create(
        self,
        name: str | None = None,
        params: dict[str, str] | None = None,
        root_dir: str | Path | None = None,
        timeout: float = 120.0,
        migration_mode: str | None = None,
        mac_source: BaseVM | None = None,
    ) -> None:
        self.create_calls.append({"timeout": timeout})
        self.power = "running"
        self._console_guest()
        self._note_started()

    def is_alive(self) -> bool:
        return self.power in ("running", "paused")

    def is_dead(self) -> bool:
        return not self.is_alive()

    def is_paused(self) -> bool:
        return self.power == "paused"

    def pause(self) -> bool:
        self.verify_alive()
        self.power = "paused"
        return True

    def resume(self, timeout: float | None = None) -> bool:
        self.verify_alive()
        self.power = "running"
        return True

    def get_address(self, index: int = 0) -> str:
        return "127.0.0.1"

    def get_port(self, port: int, nic_index: int = 0) -> int:
        return 40000 + port

    def clone(self, name: str | None = None, **params: Any) -> FakeVM:
        return FakeVM(name or self.name, {**self.params, **params}, self.root_dir)

    def destroy(self, gracefully: bool = True, free_mac_addresses: bool = True) -> None:
        self.power = "shut off"
        self.destroyed = True
        if self.guest is not None:
            self.guest.stop()
        if self._buffer is not None:
            self._buffer.release()

    def migrate(self, *args: Any, **kwargs: Any) -> Any:
        raise VMNotSupportedError("migrate", self.BACKEND)

    def reboot(
        self,
        session: ShellSession | None = None,
        method: str = "shell",
        nic_index: int = 0,
        timeout: float = 240,
        serial: bool = False,
    ) -> ShellSession:
        raise VMNotSupportedError("reboot", self.BACKEND)

    def send_key(self, keystr: str) -> None:
        pass

    def save_to_file(self, path: str) -> None:
        if self.is_dead():
            raise VMDeadError("no domain")
        self.power = "shut off"

    def needs_restart(self, name: str, params: dict[str, str], basedir: str | Path) -> bool:
        return True

    def power_off(self) -> None:
        """The guest shuts itself down (as after ``poweroff``)."""
        self.power = "shut off"
