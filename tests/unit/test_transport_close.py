"""ChannelSpawn.close() when the guest already went away (a reboot closed the connection)."""

from __future__ import annotations

import paramiko
import pytest

from virtlib.sessions.shell import ShellSession
from virtlib.sessions.transport import ChannelSpawn


class DeadChannel:
    """A paramiko channel whose transport's socket is gone: sending the close fails."""

    closed = False

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def close(self) -> None:
        raise self.error


class Owner:
    closed = 0

    def close(self) -> None:
        self.closed += 1


@pytest.mark.parametrize(
    "error", [EOFError(), BrokenPipeError(32, "Broken pipe"), paramiko.SSHException("gone")]
)
def test_closing_a_session_whose_peer_is_gone_does_not_raise(error: BaseException) -> None:
    owner = Owner()
    spawn = ChannelSpawn(DeadChannel(error), owner, name="ssh root@127.0.0.1:2222")
    session = ShellSession(spawn, prompt=r"# $")
    session.close()
    assert owner.closed == 1, "the SSH client was not closed"
    assert not session.is_alive()
    session.close()
    assert owner.closed == 1
