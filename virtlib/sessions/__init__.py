"""Remote shell sessions: SSH (paramiko), telnet and nc (pexpect), serial console.

Every session is a :class:`~virtlib.sessions.shell.ShellSession` over a small
pexpect transport, so the command API is the same whatever carries it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pexpect

from virtlib.errors import LoginBadClientError, LoginError
from virtlib.sessions import ssh
from virtlib.sessions.login import console_login, handle_prompts, sync_after_login
from virtlib.sessions.shell import ShellSession
from virtlib.sessions.transport import ChannelSpawn
from virtlib.sessions.tunnel import JumpHost, open_channel

__all__ = ["ShellSession", "console_login", "handle_prompts", "remote_login"]

SHELL_CLIENTS = ("ssh", "telnet", "nc")


def _client_argv(client: str, host: str, port: int, username: str) -> list[str]:
    if client == "telnet":
        return ["telnet", "-l", username, host, str(port)]
    return ["nc", host, str(port)]


def _ssh_spawn(
    target: ssh.Target,
    timeout: float,
    banner_timeout: float | None,
    quiet: bool,
    via: JumpHost | None,
) -> ChannelSpawn:
    """An SSH connection with a shell channel, as a pexpect spawn (closed on failure)."""
    sock = open_channel(via, target.host, target.port, timeout) if via is not None else None
    try:
        connection = ssh.connect(
            target.host,
            target.port,
            target.username,
            target.password,
            timeout,
            target.known_hosts,
            target.host_key_policy,
            banner_timeout=banner_timeout,
            quiet=quiet,
            sock=sock,
        )
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    try:
        channel = ssh.open_shell(connection)
    except Exception as exc:
        connection.close()
        raise LoginError(f"cannot open a shell on {target.host}:{target.port}: {exc}") from None
    return ChannelSpawn(
        channel, connection, name=f"ssh {target.username}@{target.host}:{target.port}"
    )


def _client_spawn(
    client: str, host: str, port: int, username: str, timeout: float
) -> pexpect.spawn:
    """telnet or nc run locally, under pexpect."""
    argv = _client_argv(client, host, port, username)
    if shutil.which(argv[0]) is None:
        raise LoginError(f"{argv[0]} is not installed on this host")
    # echo=False: the guest's terminal echoes; a local echo would double every line
    # and put the password into the output and the log.
    spawn = pexpect.spawn(
        argv[0], argv[1:], encoding="utf-8", codec_errors="replace", timeout=timeout, echo=False
    )
    spawn.delaybeforesend = None
    return spawn


def remote_login(
    client: str,
    host: str,
    port: int,
    username: str,
    password: str,
    prompt: str,
    linesep: str = "\n",
    timeout: float = 10,
    known_hosts: Path | None = None,
    host_key_policy: str = "accept-new",
    log_file: Path | None = None,
    banner_timeout: float | None = None,
    quiet: bool = False,
    via: JumpHost | None = None,
) -> ShellSession:
    """Log in with ``client`` (ssh, telnet or nc) and return a session at the shell prompt.

    ``banner_timeout`` and ``quiet`` are for retried SSH attempts (see ssh.connect).
    ``via``: ``host:port`` is on that hypervisor host's loopback; the session runs over
    a channel through it (:mod:`virtlib.sessions.tunnel`): SSH inside it, or the raw
    stream for nc.

    :raises LoginBadClientError: an unknown client, or telnet through ``via``.
    :raises LoginError: (and subclasses) the login failed.
    """
    if client not in SHELL_CLIENTS or (via is not None and client == "telnet"):
        raise LoginBadClientError(client, list(SHELL_CLIENTS if via is None else ("ssh", "nc")))
    if client == "ssh":
        if known_hosts is None:
            raise LoginError("SSH needs a known_hosts file (per VM) to verify the guest's key")
        spawn: pexpect.spawn | ChannelSpawn = _ssh_spawn(
            ssh.Target(host, port, username, password, known_hosts, host_key_policy),
            timeout,
            banner_timeout,
            quiet,
            via,
        )
    elif via is not None:  # nc: the channel is the stream
        spawn = ChannelSpawn(open_channel(via, host, port, timeout), name=f"nc {host}:{port}")
    else:
        spawn = _client_spawn(client, host, port, username, timeout)
    session = ShellSession(spawn, prompt=prompt, linesep=linesep)
    if log_file is not None:
        spawn.logfile_read = open(log_file, "a", encoding="utf-8")  # noqa: SIM115 - owned below
        session.own(spawn.logfile_read)
    try:
        handle_prompts(session, username, password, prompt, timeout)
        sync_after_login(session, timeout)
    except BaseException:
        session.close()
        raise
    return session
