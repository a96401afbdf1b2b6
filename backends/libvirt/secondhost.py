"""A second libvirt host on this machine, to migrate to without a second machine.

libvirt refuses to migrate a domain to the daemon it runs on, but a second
``libvirtd`` in its own mount namespace is another host to it: its own
``/run/libvirt`` (a tmpfs), private copies of ``/etc/libvirt``,
``/var/lib/libvirt``, ``/var/cache/libvirt`` and ``/var/log/libvirt``
bind-mounted over the real ones, a distinct ``host_uuid``, and its sockets in
a directory both sides can reach.  Connect to it as
``qemu+unix:///system?socket=<state>/sock/libvirt-sock``.

The namespace lives as long as its daemons: :meth:`SecondHost.stop` destroys
its domains, ends the daemons (so every mount disappears with the
namespace) and removes the state directory.  Root only (mount namespaces).

    with SecondHost.start() as host2:
        vm.migrate(dest_uri=host2.uri)   # or params migration_dest_uri

``python -m virtlib.secondhost start|stop <state dir>`` does the same from a shell.
(``virtlib.secondhost`` is this module's public name; it lives in the libvirt backend.)
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from virtlib.backends.libvirt.host import Host, probe
from virtlib.errors import VMError
from virtlib.waiting import wait_for

log = logging.getLogger(__name__)

PRIVATE_DIRS = ("/etc/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt")
COPY_FILES = ("/etc/libvirt", "/var/cache/libvirt")  # config, and QEMU's capability cache
START_TIMEOUT = 90.0


class SecondHostError(VMError):
    """The second libvirt host could not be started or stopped."""


def _run(argv: list[str]) -> None:
    # From /: a source checkout in the working directory must not shadow the installed virtlib.
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd="/")
    if proc.returncode != 0:
        raise SecondHostError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip()}")


def private_copy(state: Path, directory: str) -> Path:
    """The second host's copy of ``directory``: /var/lib/libvirt -> <state>/lib/libvirt."""
    parent = Path(directory).parent.name  # "etc" for /etc/libvirt, "lib" for /var/lib/libvirt
    return state / parent / "libvirt"


def _copy_skeleton(source: Path, dest: Path, with_files: bool) -> None:
    """Copy a directory tree's directories (and files, when asked) keeping owners and modes."""
    for root, dirs, files in os.walk(source):
        rel = Path(root).relative_to(source)
        target = dest / rel
        target.mkdir(exist_ok=True)
        shutil.copystat(root, target)
        info = os.stat(root)
        os.chown(target, info.st_uid, info.st_gid)
        if with_files:
            for name in files:
                src = Path(root) / name
                if src.is_symlink() or not src.is_file():
                    continue
                shutil.copy2(src, target / name)
                os.chown(target / name, os.stat(src).st_uid, os.stat(src).st_gid)
        dirs.sort()


@dataclass
class SecondHost:
    """A running second libvirtd (see the module docstring)."""

    state: Path

    @property
    def socket(self) -> Path:
        return self.state / "sock" / "libvirt-sock"

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.socket}"

    def _pidfile(self, daemon: str) -> Path:
        return self.state / f"{daemon}.pid"

    # --- start ----------------------------------------------------------------------------
    @classmethod
    def start(cls, state: Path | None = None, timeout: float = START_TIMEOUT) -> SecondHost:
        """Prepare the state directory, start the daemons in a new mount namespace, and wait
        until the host answers.  On failure everything started is stopped again."""
        if os.geteuid() != 0:
            raise SecondHostError("a second libvirt host needs root (mount namespaces)")
        if state is None:
            state = Path(tempfile.mkdtemp(prefix="virtlib-host2-", dir="/var/tmp"))
        host = cls(state)
        try:
            state.mkdir(parents=True, exist_ok=True)
            host._prepare()
            _run(
                [
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "--",
                    sys.executable,
                    "-m",
                    "virtlib.backends.libvirt.secondhost",
                    "_inside",
                    str(state),
                ]
            )
            if not wait_for(host.answers, timeout, initial=0.1, maximum=0.5):
                raise SecondHostError(
                    f"the second libvirtd did not answer within {timeout:g} s "
                    f"(log: {state / 'libvirtd.log'})"
                )
        except BaseException:
            host.stop()
            raise
        return host

    def _prepare(self) -> None:
        self.state.chmod(0o755)
        (self.state / "sock").mkdir(mode=0o755, exist_ok=True)
        for directory in PRIVATE_DIRS:
            copy = private_copy(self.state, directory)
            copy.parent.mkdir(exist_ok=True)
            _copy_skeleton(Path(directory), copy, with_files=directory in COPY_FILES)
        etc = self.state / "etc" / "libvirt"
        for pattern in (
            "qemu/*.xml",
            "qemu/autostart/*",
            "qemu/networks/autostart/*",
            "storage/autostart/*",
        ):
            for path in etc.glob(pattern):
                path.unlink()
        with (etc / "libvirtd.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# virtlib second host\n")
            conf.write(f'host_uuid = "{uuid.uuid4()}"\n')
            conf.write(f'unix_sock_dir = "{self.state / "sock"}"\n')
            conf.write(f'log_outputs = "3:file:{self.state / "libvirtd.log"}"\n')

    def answers(self) -> bool:
        return probe(self.uri) is None

    # --- stop -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Destroy the host's domains, end its daemons, remove the state directory."""
        if self.socket.exists() and self.answers():
            self._destroy_domains()
        Host.discard(self.uri)  # its daemon goes away on purpose: no reconnect attempts
        for daemon in ("libvirtd", "virtlogd"):
            self._end(daemon)
        shutil.rmtree(self.state, ignore_errors=True)

    def _destroy_domains(self) -> None:
        for guest in Host.get(self.uri).guests():
            try:
                guest.remove()
            except VMError as exc:
                log.warning("second host: cannot remove %s: %s", guest.name, exc)

    def _end(self, daemon: str) -> None:
        try:
            pid = int(self._pidfile(daemon).read_text().strip())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if not wait_for(lambda: not _alive(pid), 15):
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not _alive(pid), 5)

    def __enter__(self) -> SecondHost:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _inside(state: Path) -> None:
    """Run in the new mount namespace: private mounts, then the daemons (they daemonise)."""
    _run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run/libvirt"])
    for directory in PRIVATE_DIRS:
        _run(["mount", "--bind", str(private_copy(state, directory)), directory])
    _run(["virtlogd", "-d", "-p", str(state / "virtlogd.pid")])
    _run(["libvirtd", "-d", "-p", str(state / "libvirtd.pid")])


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "_inside":
        _inside(Path(argv[1]))
        return 0
    if len(argv) >= 1 and argv[0] == "start":
        host = SecondHost.start(Path(argv[1]) if len(argv) > 1 else None)
        print(host.uri)
        return 0
    if len(argv) == 2 and argv[0] == "stop":
        SecondHost(Path(argv[1])).stop()
        return 0
    print("usage: python -m virtlib.secondhost start [STATE_DIR] | stop STATE_DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
