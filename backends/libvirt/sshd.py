"""The SSH side of a second host: keys made for the run, a pinned host key, an sshd config.

Everything lives in the host's state directory, nothing in ``~/.ssh`` or the real
``/etc/ssh``:

- ``client/`` (0700): the run's key pair (``id_ed25519``) and a ``known_hosts`` with
  exactly the second host's key, so clients check it strictly;
- ``ssh/``: the second host's host key, ``authorized_keys`` (the run's public key) and
  ``sshd_config``; inside the host's mount namespace it is mounted over ``/etc/ssh``
  (sshd's strict modes want root-owned directories up to ``/``, which ``/var/tmp``
  is not).

The URI is ``qemu+libssh2://root@ADDRESS/system?keyfile=...&known_hosts=...&sshauth=privkey``:
libvirt's libssh2 transport takes the key and the known_hosts file from the URI, so
the test process *and* a source libvirtd migrating peer-to-peer (which opens the
URI itself, as root, without the caller's ``~/.ssh`` or agent) check the same
pinned key: an unknown or different key is refused, and the file is never written.
The alternatives, measured here (libvirt 9.0): ``qemu+ssh://`` runs OpenSSH's
``ssh``, which takes a key file from the URI but reads known hosts only from
``~/.ssh`` or a config file; ``qemu+libssh://`` pins the key as well, but stalls
5 s on every reply larger than a few KiB (the capabilities XML, a domain XML).
"""

from __future__ import annotations

import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from virtlib.errors import VMError

KEY_TYPE = "ed25519"


class SshSetupError(VMError):
    """The keys or the configuration of the second host's sshd could not be made."""


def _keygen(path: Path, comment: str) -> None:
    proc = subprocess.run(
        ["ssh-keygen", "-q", "-t", KEY_TYPE, "-N", "", "-C", comment, "-f", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SshSetupError(f"ssh-keygen {path}: {proc.stderr.strip()}")


@dataclass(frozen=True)
class SshFiles:
    """The files of one second host's SSH (see the module docstring)."""

    state: Path
    address: str

    @property
    def client_dir(self) -> Path:
        return self.state / "client"

    @property
    def config_dir(self) -> Path:
        """Mounted over /etc/ssh inside the host."""
        return self.state / "ssh"

    @property
    def identity(self) -> Path:
        return self.client_dir / f"id_{KEY_TYPE}"

    @property
    def known_hosts(self) -> Path:
        return self.client_dir / "known_hosts"

    @property
    def host_key(self) -> Path:
        return self.config_dir / f"ssh_host_{KEY_TYPE}_key"

    @property
    def pidfile(self) -> Path:
        return self.state / "sshd.pid"

    @property
    def log(self) -> Path:
        return self.state / "sshd.log"

    def uri(self, user: str = "root") -> str:
        query = urllib.parse.urlencode(
            {"keyfile": str(self.identity), "known_hosts": str(self.known_hosts),
             "sshauth": "privkey"},
            safe="/",
        )  # fmt: skip
        return f"qemu+libssh2://{user}@{self.address}/system?{query}"

    def make(self) -> None:
        """The key pairs, authorized_keys, the pinned known_hosts line and sshd_config."""
        self.client_dir.mkdir(mode=0o700)
        self.config_dir.mkdir(mode=0o755)
        _keygen(self.identity, "virtlib run key")
        _keygen(self.host_key, f"virtlib second host {self.address}")
        public = self.identity.with_suffix(".pub").read_text()
        authorized = self.config_dir / "authorized_keys"
        authorized.write_text(public)
        authorized.chmod(0o600)
        key_type, key = self.host_key.with_suffix(".pub").read_text().split()[:2]
        self.known_hosts.write_text(f"{self.address} {key_type} {key}\n")
        self.known_hosts.chmod(0o600)
        (self.config_dir / "sshd_config").write_text(self.sshd_config())

    def sshd_config(self) -> str:
        """Root by key only, on the namespace's address only, forwarding to local ports."""
        options = {
            "ListenAddress": self.address,
            "Port": "22",
            "HostKey": f"/etc/ssh/{self.host_key.name}",
            "PidFile": str(self.pidfile),
            "AuthorizedKeysFile": "/etc/ssh/authorized_keys",
            "PermitRootLogin": "prohibit-password",
            "AllowUsers": "root",
            "PubkeyAuthentication": "yes",
            "PasswordAuthentication": "no",
            "KbdInteractiveAuthentication": "no",
            "UsePAM": "no",
            "AllowTcpForwarding": "local",  # direct-tcpip to the guests' forwarded ports
            "AllowAgentForwarding": "no",
            "X11Forwarding": "no",
            "PermitTunnel": "no",
            "PrintMotd": "no",
            "MaxSessions": "64",
            "MaxStartups": "64:30:128",  # xdist workers and libvirt connect at once
        }
        return "".join(f"{key} {value}\n" for key, value in options.items())
