"""The built guest as virtlib sees it: :class:`GuestImage`, its SSH host keys, its error."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from virtlib.errors import VMError
from virtlib.guest.recipe import HOSTNAME, LOGIN_PROMPT


class GuestBuildError(VMError):
    """Building (or finding) the test guest failed."""


def sha256_fingerprint(key_base64: str) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a public key blob given in base64."""
    digest = hashlib.sha256(base64.b64decode(key_base64)).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class HostKey:
    """One public SSH host key of the guest (dropbear serves all of them)."""

    keytype: str
    """``ssh-ed25519``, ``ecdsa-sha2-nistp256``, ``ssh-rsa``."""
    key: str
    """The public key blob, base64 (as in known_hosts)."""
    fingerprint: str
    """``SHA256:...`` as ``ssh-keygen -l`` prints it."""

    @property
    def openssh(self) -> str:
        """``<keytype> <base64>``, the authorized_keys/known_hosts form."""
        return f"{self.keytype} {self.key}"

    def known_hosts_line(self, host: str, port: int = 22) -> str:
        """A known_hosts line for the guest reached at ``host:port``."""
        name = host if port == 22 else f"[{host}]:{port}"
        return f"{name} {self.openssh}"


@dataclass(frozen=True)
class GuestImage:
    """A built test guest: boot ``kernel`` + ``initrd`` with ``kernel_args`` (no disk)."""

    kernel: Path
    initrd: Path
    username: str
    password: str = field(repr=False)
    kernel_args: str
    host_keys: tuple[HostKey, ...]
    shell_prompt: str
    """Regex for the last line of output while the shell waits (``^...$``)."""
    build_key: str
    login_prompt: str = LOGIN_PROMPT
    hostname: str = HOSTNAME
    kernel_release: str = ""
    directory: Path | None = None
    """The cache directory of this build (holds manifest.json)."""

    @property
    def ssh_host_keys(self) -> tuple[str, ...]:
        """The public host keys as ``<keytype> <base64>`` strings."""
        return tuple(key.openssh for key in self.host_keys)

    @property
    def ssh_host_key_fingerprints(self) -> tuple[str, ...]:
        """The ``SHA256:...`` fingerprints of the host keys."""
        return tuple(key.fingerprint for key in self.host_keys)

    def known_hosts(self, host: str = "127.0.0.1", port: int = 22) -> str:
        """known_hosts text that trusts exactly this guest's keys at ``host:port``."""
        return "".join(key.known_hosts_line(host, port) + "\n" for key in self.host_keys)
