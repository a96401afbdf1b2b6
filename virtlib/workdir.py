"""Private working directories: one 0700 directory per VM under a private base.

The seed wrote ``/tmp/serial-<id>`` files: predictable names in a shared
directory.  virtlib keeps a VM's files (serial log, session logs, known_hosts)
in a directory only its owner can enter.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from virtlib.errors import VMError

ENV_RUN_DIR = "VIRTLIB_RUN_DIR"


def default_base() -> Path:
    """``$VIRTLIB_RUN_DIR``, else ``$XDG_RUNTIME_DIR/virtlib``, else ``<tmp>/virtlib-<uid>``."""
    if os.environ.get(ENV_RUN_DIR):
        return Path(os.environ[ENV_RUN_DIR])
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "virtlib"
    return Path(tempfile.gettempdir()) / f"virtlib-{os.getuid()}"


def private_base(base: Path | None = None) -> Path:
    """Create (or check) the base directory: ours, a real directory, mode 0700."""
    base = base or default_base()
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(base)
    except OSError as exc:
        raise VMError(f"cannot use {base} as virtlib's private directory: {exc}") from None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise VMError(f"{base} is not a directory owned by uid {os.getuid()}; refusing to use it")
    # Search by a group other than ours (0710) stays: virtlib.media gives it to QEMU's group.
    mode, keep = stat.S_IMODE(info.st_mode), 0o010 if info.st_gid != os.getgid() else 0
    if mode & 0o077 & ~keep:
        os.chmod(base, 0o700 | (mode & keep))
    return base


def safe_name(name: str) -> str:
    """``name`` as a file name: other characters become ``_``, at most 40."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40]


def make_vm_dir(name: str, instance: str, base: Path | None = None) -> Path:
    """A new private directory for one VM (mkdtemp: unique even for equal names)."""
    return Path(tempfile.mkdtemp(prefix=f"{safe_name(name)}-{instance}-", dir=private_base(base)))


def remove_tree(path: Path | None) -> None:
    """Remove a directory tree if it exists."""
    if path is not None and path.exists():
        shutil.rmtree(path, ignore_errors=True)


SERIAL_LOGS = "serial-logs"
MAX_SERIAL_LOGS = 200  # the default serial log directory keeps this many, newest first


def serial_log_dir(base: Path | None = None, keep: int = MAX_SERIAL_LOGS) -> Path:
    """The default home of serial logs: ``<private base>/serial-logs`` (0700), where logs
    outlive their VM; the oldest beyond ``keep`` are removed as new VMs come."""
    directory = private_base(base) / SERIAL_LOGS
    directory.mkdir(mode=0o700, exist_ok=True)
    logs = sorted(directory.glob("serial-*.log"), key=_mtime, reverse=True)
    for old in logs[keep:]:
        old.unlink(missing_ok=True)
    return directory


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
