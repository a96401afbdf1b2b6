"""What ``virtlib up`` remembers between invocations: a small JSON file per VM.

The VM itself, and its state (instance, ports, MACs, the params it was made
from without their secrets), live on the hypervisor (libvirt keeps them in
the domain's metadata); the state file adds only what the hypervisor cannot
hold safely or at all: where the VM runs, its backend, and its secrets.
Files live in ``$XDG_STATE_HOME/virtlib/vms`` (default
``~/.local/state/virtlib/vms``), directory 0700 and files 0600, since they
hold a guest password.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from virtlib.errors import VMNotFoundError, VMParamsError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "virtlib" / "vms"


@dataclass
class VMRecord:
    """One VM started by ``virtlib up``."""

    name: str
    uri: str
    params: dict[str, str]  # secrets only (and the VM's own known_hosts file)
    vm_type: str = "libvirt"
    extra: dict[str, str] = field(default_factory=dict)


class StateStore:
    """The records, one file each, named after the VM."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or state_dir()

    def _path(self, name: str) -> Path:
        if not NAME_RE.match(name):
            raise VMParamsError(
                f"invalid VM name {name!r} (letters, digits and . _ + -; at most 64)"
            )
        return self.directory / f"{name}.json"

    def known_hosts(self, name: str) -> Path:
        """The VM's own known_hosts file (host keys trusted on first use stay trusted)."""
        return self._path(name).with_suffix(".known_hosts")

    def save(self, record: VMRecord) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self._path(record.name)
        temp = path.with_suffix(".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(asdict(record), handle, indent=1, sort_keys=True)
        os.replace(temp, path)

    def load(self, name: str) -> VMRecord:
        path = self._path(name)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise VMNotFoundError(name, "virtlib's state (start it with 'virtlib up')") from None
        data.pop("root_dir", None)  # written by virtlib 0.1; the hypervisor holds it now
        return VMRecord(**data)

    def remove(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)
        self.known_hosts(name).unlink(missing_ok=True)

    def records(self) -> list[VMRecord]:
        if not self.directory.is_dir():
            return []
        return [self.load(p.stem) for p in sorted(self.directory.glob("*.json"))]
