"""The QEMU guest agent of a libvirt domain: libvirt's own agent APIs where they exist
(fsfreeze, passwords, guest info, time, agent shutdown/reboot), ``qemuAgentCommand``
otherwise (ping, guest-exec, files, interfaces).  ``wait()`` waits on libvirt's agent
lifecycle event, then pings."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from virtlib.agent import ExecResult, GuestAgent, GuestInterface
from virtlib.backends.libvirt.events import wait_event
from virtlib.errors import VMAgentError, VMAgentTimeoutError, VMParamsError
from virtlib.waiting import Deadline, backoff, sleep_within

if TYPE_CHECKING:
    from virtlib.backends.libvirt.domain import LibvirtVM
    from virtlib.backends.libvirt.guest import Guest

CHUNK = 48 * 1024  # guest-file-read/write count per call (base64 inflates it by a third)


class LibvirtGuestAgent(GuestAgent):
    """The agent behind one LibvirtVM (looked up afresh for each call: reconnects, migration)."""

    def __init__(self, vm: LibvirtVM) -> None:
        self.vm = vm

    def _guest(self) -> Guest:
        return self.vm.guest()

    def _run(self, execute: str, timeout: float, **arguments: Any) -> Any:
        command: dict[str, Any] = {"execute": execute}
        if arguments:
            command["arguments"] = arguments
        return self._guest().agent_command(command, timeout)

    # --- liveness ---------------------------------------------------------------------------
    def ping(self, timeout: float = GuestAgent.DEFAULT_TIMEOUT) -> None:
        self._run("guest-ping", timeout)

    def wait(self, timeout: float = 120.0) -> None:
        """Ping until the agent answers; between tries, wait for libvirt's "agent connected"
        event (the agent starts late in a boot) rather than sleeping."""
        deadline = Deadline(timeout)
        guest = self._guest()
        events = self.vm.host.events.subscribe(guest.uuid)
        try:
            while True:
                try:
                    self.ping(min(5.0, max(1.0, deadline.remaining())))
                    return
                except VMAgentTimeoutError as exc:
                    if deadline.expired():
                        raise VMAgentTimeoutError(
                            f"no guest agent answered on {self.vm.name!r} within {timeout:g} s "
                            f"(is qemu-guest-agent installed and running?): {exc}"
                        ) from None
                self.vm.verify_alive()
                wait_event(events, min(deadline.remaining(), 2.0), lambda e: e.agent_connected)
        finally:
            self.vm.host.events.unsubscribe(guest.uuid, events)

    # --- commands ---------------------------------------------------------------------------
    def run(
        self,
        argv: Sequence[str],
        input_data: bytes = b"",
        timeout: float = 60.0,
    ) -> ExecResult:
        """guest-exec ``argv`` (no shell), then guest-exec-status until it exits."""
        if not argv:
            raise VMParamsError(f"guest agent exec on {self.vm.name!r}: an empty command")
        arguments: dict[str, Any] = {
            "path": argv[0],
            "arg": list(argv[1:]),
            "capture-output": True,
        }
        if input_data:
            arguments["input-data"] = base64.b64encode(input_data).decode()
        started = self._run("guest-exec", min(timeout, 30.0), **arguments)
        pid = int(started["pid"])
        deadline = Deadline(timeout)
        for delay in backoff(0.01, 0.2):
            status = self._run("guest-exec-status", max(1.0, deadline.remaining()), pid=pid)
            if status.get("exited"):
                return ExecResult(
                    status=int(status.get("exitcode", -1)),
                    stdout=_decoded(status.get("out-data")),
                    stderr=_decoded(status.get("err-data")),
                    signal=status.get("signal"),
                )
            if deadline.expired():
                raise VMAgentTimeoutError(
                    f"{' '.join(argv)!r} in {self.vm.name!r} did not end within {timeout:g} s"
                )
            sleep_within(delay, deadline)
        raise AssertionError("unreachable")  # pragma: no cover

    def read_file(self, path: str, timeout: float = GuestAgent.DEFAULT_TIMEOUT) -> bytes:
        handle = self._run("guest-file-open", timeout, path=path, mode="r")
        data = bytearray()
        try:
            while True:
                chunk = self._run("guest-file-read", timeout, handle=handle, count=CHUNK)
                data += base64.b64decode(chunk.get("buf-b64", ""))
                if chunk.get("eof") or not chunk.get("count"):
                    return bytes(data)
        finally:
            self._run("guest-file-close", timeout, handle=handle)

    def write_file(
        self, path: str, data: bytes, timeout: float = GuestAgent.DEFAULT_TIMEOUT
    ) -> None:
        handle = self._run("guest-file-open", timeout, path=path, mode="w")
        try:
            for offset in range(0, len(data), CHUNK):
                piece = base64.b64encode(data[offset : offset + CHUNK]).decode()
                self._run("guest-file-write", timeout, handle=handle, **{"buf-b64": piece})
            self._run("guest-file-flush", timeout, handle=handle)
        finally:
            self._run("guest-file-close", timeout, handle=handle)

    def interfaces(self, timeout: float = GuestAgent.DEFAULT_TIMEOUT) -> list[GuestInterface]:
        found = self._run("guest-network-get-interfaces", timeout) or []
        return [
            GuestInterface(
                name=str(item.get("name", "")),
                mac=str(item.get("hardware-address", "")).lower(),
                addresses=tuple(
                    f"{a['ip-address']}/{a.get('prefix', '')}".rstrip("/")
                    for a in item.get("ip-addresses") or []
                ),
            )
            for item in found
        ]

    # --- libvirt's own agent APIs ------------------------------------------------------------
    def fsfreeze(self, timeout: float = GuestAgent.DEFAULT_TIMEOUT) -> int:
        return self._guest().fs_freeze()

    def fsthaw(self, timeout: float = GuestAgent.DEFAULT_TIMEOUT) -> int:
        return self._guest().fs_thaw()

    def set_password(self, user: str, password: str) -> None:
        self._guest().set_user_password(user, password)

    def os_info(self, timeout: float = GuestAgent.DEFAULT_TIMEOUT) -> dict[str, str]:
        return self._guest().guest_os_info()

    def sync_time(self) -> None:
        self._guest().set_time_now()

    def shutdown(self) -> None:
        self._guest().agent_shutdown()

    def reboot(self) -> None:
        self._guest().agent_reboot()


def _decoded(data: object) -> str:
    if not data:
        return ""
    try:
        return base64.b64decode(str(data)).decode("utf-8", errors="replace")
    except ValueError as exc:
        raise VMAgentError(f"the guest agent sent undecodable output: {exc}") from None
