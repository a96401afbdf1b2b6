"""pexpect transports: small SpawnBase subclasses (read_nonblocking, send, close, isalive).

``expect()`` and the ShellSession logic are written once on top of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from paramiko import SSHException
from pexpect import EOF, TIMEOUT
from pexpect.spawnbase import SpawnBase

from virtlib.sessions.buffer import ConsoleBuffer


class _TextSpawn(SpawnBase):  # type: ignore[misc]
    """Common part: text mode (UTF-8, undecodable bytes replaced), no send delay."""

    def __init__(self, name: str, timeout: float = 30) -> None:
        super().__init__(timeout=timeout, maxread=65536, encoding="utf-8", codec_errors="replace")
        self.name = name
        self.closed = False

    def _deliver(self, data: bytes) -> str:
        text: str = self._decoder.decode(data, final=False)
        self._log(text, "read")
        return text

    def _raw_send(self, data: bytes) -> None:
        raise NotImplementedError

    def send(self, s: str | bytes) -> int:
        if self.closed:
            raise OSError(f"{self.name} is closed")
        data = s.encode("utf-8") if isinstance(s, str) else s
        self._log(s if isinstance(s, str) else s.decode("utf-8", "replace"), "send")
        self._raw_send(data)
        return len(data)

    def sendline(self, s: str = "") -> int:
        return self.send(s + "\n")

    def write(self, s: str) -> None:
        self.send(s)

    def isalive(self) -> bool:
        return not self.closed and not self.flag_eof


class BufferSpawn(_TextSpawn):
    """Reads a ConsoleBuffer from a cursor; writes with a send function (the console stream)."""

    def __init__(
        self,
        buffer: ConsoleBuffer,
        send: Callable[[bytes], None],
        name: str = "console",
        start_at_end: bool = False,
    ) -> None:
        super().__init__(name)
        self.console = buffer
        self._send = send
        self.cursor = buffer.size if start_at_end else 0
        self.flag_eof = False

    def read_nonblocking(self, size: int = 1, timeout: float | None = -1) -> str:
        if timeout == -1:
            timeout = self.timeout
        data = self.console.read(self.cursor, size, timeout)
        if data is None:
            self.flag_eof = True
            raise EOF(f"{self.name}: end of stream")
        if not data:
            raise TIMEOUT(f"{self.name}: no data within {timeout} s")
        self.flag_eof = False  # the stream may have been re-attached (reboot, restore, ...)
        self.cursor += len(data)
        return self._deliver(data)

    def _raw_send(self, data: bytes) -> None:
        self._send(data)

    def skip_pending(self) -> None:
        """Forget what arrived but was not read (the whole output stays in the buffer)."""
        self.cursor = self.console.size

    def close(self, force: bool = True) -> None:
        self.closed = True


class ChannelSpawn(_TextSpawn):
    """A paramiko channel (an interactive shell); closing it closes its SSH client too."""

    def __init__(self, channel: Any, owner: Any = None, name: str = "ssh") -> None:
        super().__init__(name)
        self.channel = channel
        self.owner = owner
        self.flag_eof = False

    def read_nonblocking(self, size: int = 1, timeout: float | None = -1) -> str:
        if timeout == -1:
            timeout = self.timeout
        self.channel.settimeout(timeout)
        try:
            data = self.channel.recv(size)
        except TimeoutError:
            raise TIMEOUT(f"{self.name}: no data within {timeout} s") from None
        except OSError as exc:
            self.flag_eof = True
            raise EOF(f"{self.name}: {exc}") from None
        if not data:
            self.flag_eof = True
            raise EOF(f"{self.name}: channel closed")
        return self._deliver(data)

    def _raw_send(self, data: bytes) -> None:
        self.channel.sendall(data)

    def isalive(self) -> bool:
        return super().isalive() and not self.channel.closed

    def exit_status(self) -> int | None:
        return int(self.channel.recv_exit_status()) if self.channel.exit_status_ready() else None

    def close(self, force: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.channel.close()
        except (EOFError, OSError, SSHException):
            pass  # the peer went first (a reboot, a poweroff): there is nothing left to close
        finally:
            if self.owner is not None:
                self.owner.close()
