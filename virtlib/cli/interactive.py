"""Commands that talk to the guest: console, ssh, exec, cp."""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import shlex
import sys
import termios
import threading
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from virtlib import transfer
from virtlib.cli.output import Progress, emit
from virtlib.cli.vms import load_vm
from virtlib.contract import BaseVM
from virtlib.errors import VMError, VMParamsError
from virtlib.sessions.transport import BufferSpawn

ESCAPE = b"\x1d"  # Ctrl-]


@contextlib.contextmanager
def raw_terminal() -> Iterator[None]:
    """Put stdin in raw mode when it is a terminal (restored afterwards)."""
    if not sys.stdin.isatty():
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def pump(
    read_input: Callable[[], bytes], send: Callable[[bytes], object], stop: threading.Event
) -> None:
    """Copy stdin to ``send`` until Ctrl-], end of input, or ``stop``."""
    fd = sys.stdin.fileno()
    while not stop.is_set():
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        data = read_input()
        before_escape = data.split(ESCAPE)[0]
        if before_escape:
            send(before_escape)
        if not data or ESCAPE in data:
            return


# --- console ---
def cmd_console(args: argparse.Namespace) -> int:
    vm = load_vm(args, attach_console=True)
    try:
        if vm.serial_console is None:
            raise VMError(f"{vm.name} has no serial console")
        spawn = vm.serial_console.spawn
        if not isinstance(spawn, BufferSpawn):
            raise VMError("unexpected console transport")
        spawn.skip_pending()
        sys.stderr.write(f"Connected to the serial console of {vm.name} (Ctrl-] leaves)\r\n")
        stop = threading.Event()
        printer = threading.Thread(target=_print_console, args=(spawn, stop), daemon=True)
        printer.start()
        with raw_terminal():
            spawn.send("\n")
            pump(lambda: os.read(sys.stdin.fileno(), 1024), spawn.send, stop)
        stop.set()
        printer.join(timeout=1)
        sys.stderr.write("\r\nDisconnected.\r\n")
    finally:
        vm.release()
    return 0


def _print_console(spawn: BufferSpawn, stop: threading.Event) -> None:
    out = sys.stdout.buffer
    while not stop.is_set():
        data = spawn.console.read(spawn.cursor, 65536, 0.2)
        if data is None:
            return
        if data:
            spawn.cursor += len(data)
            out.write(data)
            out.flush()


# --- ssh / exec ---
def _connect(vm: BaseVM, timeout: float) -> Any:
    """SSH to the guest (through its hypervisor host when that is remote)."""
    return vm.ssh_client(timeout=timeout)


def _command(args: argparse.Namespace) -> list[str]:
    words = list(args.command or [])
    return words[1:] if words[:1] == ["--"] else words


def cmd_exec(args: argparse.Namespace) -> int:
    """Run a command in the guest over SSH; exit with its status, output streamed."""
    args.command = _command(args)
    if not args.command:
        raise VMParamsError("exec needs a command: virtlib exec NAME -- CMD [ARG...]")
    vm = load_vm(args)
    try:
        client = _connect(vm, args.timeout)
        try:
            command = args.command[0] if len(args.command) == 1 else shlex.join(args.command)
            channel = client.get_transport().open_session()
            channel.exec_command(command)
            while True:
                if channel.recv_ready():
                    sys.stdout.buffer.write(channel.recv(65536))
                    sys.stdout.flush()
                elif channel.recv_stderr_ready():
                    sys.stderr.buffer.write(channel.recv_stderr(65536))
                    sys.stderr.flush()
                elif (
                    channel.exit_status_ready()
                    and not channel.recv_ready()
                    and not channel.recv_stderr_ready()
                ):
                    break
                else:
                    select.select([channel], [], [], 0.2)
            status = int(channel.recv_exit_status())
        finally:
            client.close()
    finally:
        vm.release()
    if args.json:
        emit(True, {"name": vm.name, "status": status}, "")
    return status


def cmd_ssh(args: argparse.Namespace) -> int:
    """An interactive shell over SSH (a command after -- runs like exec)."""
    if _command(args):
        return cmd_exec(args)
    vm = load_vm(args)
    try:
        client = _connect(vm, args.timeout)
        try:
            size = os.get_terminal_size() if sys.stdout.isatty() else os.terminal_size((80, 24))
            channel = client.invoke_shell(
                term=os.environ.get("TERM", "vt100"), width=size.columns, height=size.lines
            )
            stop = threading.Event()
            printer = threading.Thread(target=_print_channel, args=(channel, stop), daemon=True)
            printer.start()
            with raw_terminal():
                pump(lambda: os.read(sys.stdin.fileno(), 1024), channel.sendall, stop)
            stop.set()
            status = int(channel.recv_exit_status()) if channel.exit_status_ready() else 0
        finally:
            client.close()
    finally:
        vm.release()
    return status


def _print_channel(channel: Any, stop: threading.Event) -> None:
    while not stop.is_set():
        ready, _, _ = select.select([channel], [], [], 0.2)
        if ready:
            data = channel.recv(65536)
            if not data:
                stop.set()
                return
            sys.stdout.buffer.write(data)
            sys.stdout.flush()


# --- cp ---
def split_remote(path: str) -> tuple[str | None, str]:
    """``NAME:/path`` -> (NAME, /path); a local path -> (None, path)."""
    head, sep, tail = path.partition(":")
    if sep and head and "/" not in head:
        return head, tail
    return None, path


def cmd_cp(args: argparse.Namespace) -> int:
    src_vm, src = split_remote(args.source)
    dst_vm, dst = split_remote(args.dest)
    if (src_vm is None) == (dst_vm is None):
        raise VMParamsError(
            "cp copies between the host and one guest: one of SOURCE and DEST "
            "must be NAME:/path, the other a local path"
        )
    args.name = src_vm or dst_vm
    vm = load_vm(args)
    bar = _progress_bar(f"cp {args.source}") if sys.stdout.isatty() else contextlib.nullcontext()
    try:
        with bar:
            if dst_vm:
                vm.copy_files_to(src, dst, timeout=args.timeout)
            else:
                vm.copy_files_from(src, dst, timeout=args.timeout)
    finally:
        vm.release()
    emit(
        args.json,
        {"name": vm.name, "source": args.source, "dest": args.dest},
        f"copied {args.source} -> {args.dest}",
    )
    return 0


@contextlib.contextmanager
def _progress_bar(label: str) -> Iterator[None]:
    """A bar with bytes and rate (on stderr) for the copies made inside the block."""
    bar = Progress(label)

    def show(progress: transfer.TransferProgress) -> None:
        if progress.finished:
            bar.done(progress.text())
        else:
            bar.update(progress.fraction, progress.text())

    with transfer.watching(show):
        yield


# --- screenshot ---
def cmd_screenshot(args: argparse.Namespace) -> int:
    """A PNG of the VM's display (VMs started with ``display = vnc`` or ``spice``)."""
    vm = load_vm(args)
    try:
        path = vm.screenshot(Path(args.file).resolve())
    finally:
        vm.release()
    emit(args.json, {"name": vm.name, "file": str(path)}, f"{vm.name}: {path}")
    return 0


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    console = commands.add_parser(
        "console", parents=[common], help="the serial console, interactive (Ctrl-] leaves)"
    )
    console.add_argument("name")
    console.set_defaults(func=cmd_console)

    for name, func, text in (
        ("ssh", cmd_ssh, "a shell over SSH (or run a command after --)"),
        ("exec", cmd_exec, "run a command over SSH; exit with its status"),
    ):
        parser = commands.add_parser(name, parents=[common], help=text)
        parser.add_argument("name")
        parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARG...]")
        parser.add_argument("--timeout", type=float, default=30)
        parser.set_defaults(func=func)

    shot = commands.add_parser(
        "screenshot", parents=[common], help="a PNG of the VM's display (display = vnc)"
    )
    shot.add_argument("name")
    shot.add_argument("file")
    shot.set_defaults(func=cmd_screenshot)

    cp = commands.add_parser("cp", parents=[common], help="copy files: NAME:/path <-> local")
    cp.add_argument("source")
    cp.add_argument("dest")
    cp.add_argument("--timeout", type=float, default=600)
    cp.set_defaults(func=cmd_cp)
