"""A second libvirt host on this machine, to migrate to without a second machine.

libvirt refuses to migrate a domain to the daemon it runs on, but a second
``libvirtd`` in its own mount namespace is another host to it: its own ``/run``
(a tmpfs), private copies of ``/etc/libvirt``, ``/var/lib/libvirt``,
``/var/cache/libvirt`` and ``/var/log/libvirt`` bind-mounted over the real ones, a
distinct ``host_uuid``, and its sockets in a directory both sides can reach
(``qemu+unix:///system?socket=<state>/sock/libvirt-sock``).

``start(network=True)`` gives it a network of its own as well: a network
namespace joined to this host by a veth pair (:mod:`.netns`, addresses from
198.18.0.0/15), its own loopback (so its guests' forwarded ports never clash with
this host's), and an sshd with keys made for the run and a pinned host key
(:mod:`.sshd`).  It is then reached as a remote host is:
``qemu+libssh2://root@198.18.N.2/system?keyfile=...&known_hosts=...`` (``uri``), and
its guests through SSH to it.

The namespaces live as long as their processes: :meth:`SecondHost.stop` destroys
the host's domains, ends its daemons (the mounts disappear with the mount
namespace), removes the network namespace with its pair, and the state directory.
A start that fails half-way stops what it had started.  Root only.

    with SecondHost.start(network=True) as host2:
        vm.params["migration_dest_uri"] = host2.uri
        vm.migrate()

``python -m virtlib.secondhost start [--network] [STATE_DIR] | stop STATE_DIR`` does the
same from a shell (``start`` prints the URI).  (``virtlib.secondhost`` is this
module's public name; it lives in the libvirt backend.)
"""

from __future__ import annotations

import json
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
from virtlib.backends.libvirt.netns import NetworkLink
from virtlib.backends.libvirt.sshd import SshFiles
from virtlib.errors import VMError
from virtlib.sessions import tunnel
from virtlib.waiting import wait_for

log = logging.getLogger(__name__)

PRIVATE_DIRS = ("/etc/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt")
COPY_FILES = ("/etc/libvirt", "/var/cache/libvirt")  # config, and QEMU's capability cache
START_TIMEOUT = 90.0
DESCRIPTION = "host.json"  # what stop() needs to find again (the network slot)
SOCKETS = ("libvirt-sock", "libvirt-sock-ro", "libvirt-admin-sock")


class SecondHostError(VMError):
    """The second libvirt host could not be started or stopped."""


def _run(argv: list[str], what: str = "") -> None:
    """Run ``argv``; SecondHostError with ``what`` (else the command) and what it said."""
    # From /: a source checkout in the working directory must not shadow the installed virtlib.
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd="/")
    if proc.returncode != 0:
        said = proc.stderr.strip() or proc.stdout.strip() or f"exit status {proc.returncode}"
        raise SecondHostError(f"{what or ' '.join(argv)}: {said}")


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
    network: NetworkLink | None = None

    @property
    def socket(self) -> Path:
        return self.state / "sock" / "libvirt-sock"

    @property
    def local_uri(self) -> str:
        """The daemon's UNIX socket, reachable from this machine whatever the network."""
        return f"qemu+unix:///system?socket={self.socket}"

    @property
    def ssh(self) -> SshFiles | None:
        """The SSH keys, known_hosts and sshd files (with a network only)."""
        return SshFiles(self.state, self.network.address) if self.network else None

    @property
    def uri(self) -> str:
        """How to reach the host: over SSH to its address with a network, else the socket."""
        return self.ssh.uri() if self.ssh is not None else self.local_uri

    @property
    def address(self) -> str | None:
        """The host's own address (with a network): migration data goes to it."""
        return self.network.address if self.network else None

    @property
    def peer_address(self) -> str | None:
        """This machine's address as the second host sees it (with a network): the data
        address of a migration back (``migrate(dest_host=host2.peer_address)``)."""
        return self.network.host_address if self.network else None

    def _pidfile(self, daemon: str) -> Path:
        return self.state / f"{daemon}.pid"

    # --- start ----------------------------------------------------------------------------
    @classmethod
    def start(
        cls, state: Path | None = None, timeout: float = START_TIMEOUT, network: bool = False
    ) -> SecondHost:
        """Prepare the state directory, start the daemons in a new mount namespace (and,
        with ``network``, a network namespace with sshd), and wait until the host answers
        (over SSH, with ``network``).  On failure everything started is stopped again.

        :raises SecondHostError: not root, or the host did not come up (the message
            names the log to read).
        """
        if os.geteuid() != 0:
            raise SecondHostError("a second libvirt host needs root (mount namespaces)")
        if state is None:
            state = Path(tempfile.mkdtemp(prefix="virtlib-host2-", dir="/var/tmp"))
        host = cls(state)
        try:
            state.mkdir(parents=True, exist_ok=True)
            host._prepare()
            if network:
                host.network = NetworkLink.create()
                host._describe()
                SshFiles(state, host.network.address).make()
            _run(host._enter_argv(), f"cannot start the second host's daemons ({state})")
            host._wait(host.local_uri, timeout, state / "libvirtd.log")
            if network:
                host._wait(host.uri, timeout, state / "sshd.log")
        except BaseException:
            host.stop()
            raise
        log.info("second libvirt host at %s", host.uri)
        return host

    def _enter_argv(self) -> list[str]:
        """The command that makes the namespaces and runs :func:`_inside` in them."""
        argv = ["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-m",
                "virtlib.backends.libvirt.secondhost", "_inside", str(self.state)]  # fmt: skip
        if self.network is not None:
            argv = ["ip", "netns", "exec", self.network.namespace, *argv, self.network.address]
        return argv

    def _wait(self, uri: str, timeout: float, log_file: Path) -> None:
        last: list[str | None] = [None]

        def answers() -> bool:
            last[0] = probe(uri)
            return last[0] is None

        if not wait_for(answers, timeout, initial=0.1, maximum=0.5):
            raise SecondHostError(
                f"the second libvirt host did not answer at {uri} within {timeout:g} s: "
                f"{last[0]} (log: {log_file})"
            )

    def _describe(self) -> None:
        data = {"network": self.network.to_json() if self.network else None}
        (self.state / DESCRIPTION).write_text(json.dumps(data))

    @classmethod
    def load(cls, state: Path) -> SecondHost:
        """The host whose state directory is ``state`` (to stop it from another process)."""
        try:
            data = json.loads((state / DESCRIPTION).read_text())
        except (OSError, ValueError):
            data = {}
        network = data.get("network")
        return cls(state, NetworkLink.from_json(network) if network else None)

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
        """Destroy the host's domains, end its daemons, remove the network namespace (with
        its pair) and the state directory.  Safe on a host that started only half-way."""
        if self.socket.exists() and probe(self.local_uri) is None:
            self._destroy_domains()
        for uri in {self.local_uri, self.uri}:
            Host.discard(uri)  # its daemon goes away on purpose: no reconnect attempts
            tunnel.forget(uri)  # nor SSH connections to reach its guests
        for daemon in ("sshd", "libvirtd", "virtlogd"):
            self._end(daemon)
        try:
            if self.network is not None:
                self.network.remove()
        finally:
            shutil.rmtree(self.state, ignore_errors=True)

    def _destroy_domains(self) -> None:
        for guest in Host.get(self.local_uri).guests():
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


def _private_run(state: Path) -> None:
    """A tmpfs over /run (its own libvirt and sshd directories), but the host's /run/lock
    kept: device lock files (libvirt locks each console's pty there) are machine-wide."""
    lock = Path("/run/lock")
    keep = state / "run-lock"
    if lock.is_dir():
        keep.mkdir()
        _run(["mount", "--rbind", str(lock), str(keep)])
    _run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/run"])
    Path("/run/libvirt").mkdir(mode=0o755)
    if keep.is_dir():
        lock.mkdir()
        _run(["mount", "--move", str(keep), str(lock)])
        keep.rmdir()


def _inside(state: Path, address: str | None) -> None:
    """Run in the new mount namespace: private mounts, then the daemons (they daemonise).

    With ``address`` (a network namespace): sshd too, with ``<state>/ssh`` as /etc/ssh,
    and libvirt's default socket paths leading to the daemon's sockets, so what
    logs in over SSH (``virt-ssh-helper``, ``nc``) finds this daemon.
    """
    _private_run(state)
    for directory in PRIVATE_DIRS:
        _run(["mount", "--bind", str(private_copy(state, directory)), directory])
    _run(["virtlogd", "-d", "-p", str(state / "virtlogd.pid")])
    _run(["libvirtd", "-d", "-p", str(state / "libvirtd.pid")])
    if address is None:
        return
    for name in SOCKETS:
        (Path("/run/libvirt") / name).symlink_to(state / "sock" / name)
    ssh = SshFiles(state, address)
    Path("/run/sshd").mkdir(mode=0o755)  # sshd's privilege separation directory
    _run(["mount", "--bind", str(ssh.config_dir), "/etc/ssh"])
    config = ["-f", "/etc/ssh/sshd_config"]
    _run(["/usr/sbin/sshd", "-t", *config], "sshd refuses its configuration")
    _run(["/usr/sbin/sshd", *config, "-E", str(ssh.log)], f"sshd did not start (log: {ssh.log})")


USAGE = "usage: python -m virtlib.secondhost start [--network] [STATE_DIR] | stop STATE_DIR"


def main(argv: list[str]) -> int:
    if len(argv) in (2, 3) and argv[0] == "_inside":
        try:
            _inside(Path(argv[1]), argv[2] if len(argv) == 3 else None)
        except SecondHostError as exc:
            print(exc, file=sys.stderr)  # the parent's error message: the one line
            return 1
        return 0
    if argv[:1] == ["start"]:
        rest = argv[1:]
        network = "--network" in rest
        rest = [a for a in rest if a != "--network"]
        if len(rest) > 1:
            print(USAGE, file=sys.stderr)
            return 2
        host = SecondHost.start(Path(rest[0]) if rest else None, network=network)
        print(host.uri)
        return 0
    if len(argv) == 2 and argv[0] == "stop":
        SecondHost.load(Path(argv[1])).stop()
        return 0
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
