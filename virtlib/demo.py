"""``virtlib demo``: the main job on the embedded default, step by step, timed.

Boots the bundled guest through the local libvirtd, logs in on the serial
console and over SSH, copies files both ways, saves and restores, reboots,
live-migrates to a second local libvirt host (with progress), catches a kernel
crash, and destroys everything; prints a summary table and exits non-zero if
any step failed.  Nothing is left behind, even on failure.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from virtlib.contract import BaseVM
from virtlib.errors import VMDeadKernelCrashError, VMError
from virtlib.params import Params
from virtlib.registry import new_vm
from virtlib.sessions.shell import ShellSession
from virtlib.textutil import random_string
from virtlib.waiting import wait_for


@dataclass
class Step:
    name: str
    seconds: float = 0.0
    ok: bool = False
    detail: str = ""


@dataclass
class Demo:
    """Runs steps in order and keeps their timings; a failing step stops the run."""

    out: TextIO
    steps: list[Step] = field(default_factory=list)

    def run(
        self,
        name: str,
        action: Callable[[], Any],
        detail: Callable[[Any], str] = lambda r: "" if r is None else str(r),
    ) -> Any:
        step = Step(name)
        self.steps.append(step)
        self.out.write(f"-> {name} ... ")
        self.out.flush()
        started = time.monotonic()
        try:
            result = action()
        except Exception as exc:
            step.seconds = time.monotonic() - started
            step.detail = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            self.out.write(f"FAILED ({step.seconds:.2f} s)\n   {step.detail}\n")
            raise
        step.seconds = time.monotonic() - started
        step.ok = True
        step.detail = detail(result)
        self.out.write(f"ok ({step.seconds:.2f} s) {step.detail}\n")
        self.out.flush()
        return result

    def table(self) -> str:
        width = max((len(s.name) for s in self.steps), default=10)
        lines = [
            f"{'step':<{width}}  {'result':<6}  {'seconds':>8}  detail",
            f"{'-' * width}  ------  --------  {'-' * 40}",
        ]
        for s in self.steps:
            lines.append(
                f"{s.name:<{width}}  {'ok' if s.ok else 'FAILED':<6}  {s.seconds:>8.2f}  "
                f"{s.detail[:80]}"
            )
        total = sum(s.seconds for s in self.steps)
        lines.append(f"{'total':<{width}}  {'':<6}  {total:>8.2f}")
        return "\n".join(lines)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()  # noqa: S324 - a checksum, not security


GUEST_FILE = "/root/payload"


def run_demo(out: TextIO, uri: str = "qemu:///system", migrate: bool = True) -> int:
    """The demo; returns the exit status (0 when every step passed)."""
    from virtlib.guest import ensure_guest

    demo = Demo(out)
    scratch = Path(tempfile.mkdtemp(prefix="virtlib-demo-"))
    vm = None
    hosts: list[Any] = []
    status = 1
    try:
        demo.run(
            "build or find the bundled guest",
            ensure_guest,
            lambda g: f"{g.kernel_release}, initrd {g.initrd.stat().st_size >> 10} KiB",
        )
        vm = new_vm(f"virtlib-demo-{random_string(6)}", Params(connect_uri=uri, mem="256"))
        demo.run(
            "create (boot through libvirt)", vm.create, lambda _: f"{getattr(vm, 'accel', '')}"
        )
        _login_steps(demo, vm)
        _file_steps(demo, vm, scratch)
        _state_steps(demo, vm, scratch)
        if migrate:
            _migration_steps(demo, vm, hosts, out)
        vm.wait_for_serial_login(timeout=60)  # the reboot left the console at its login prompt
        _console(vm).sendline("virtlib-oops")
        demo.run(
            "kernel crash detection",
            lambda: _crash_detected(vm),
            lambda trace: trace.splitlines()[0][:60],
        )
        status = 0
    except Exception:
        status = 1  # the step recorded the error; the table shows it
    finally:
        if vm is not None and not _cleanup(demo, "destroy", vm.destroy):
            status = 1
        for host in hosts:
            if not _cleanup(demo, "stop the second host", host.stop):
                status = 1
        shutil.rmtree(scratch, ignore_errors=True)
    out.write("\n" + demo.table() + "\n")
    out.write(f"\ndemo {'passed' if status == 0 else 'FAILED'}\n")
    return status


def _console(vm: BaseVM) -> ShellSession:
    if vm.serial_console is None:
        raise VMError(f"{vm.name} has no serial console")
    return vm.serial_console


def _cleanup(demo: Demo, name: str, action: Callable[[], Any]) -> bool:
    try:
        demo.run(name, action, lambda _: "nothing left behind")
    except Exception:
        return False
    return True


def _login_steps(demo: Demo, vm: Any) -> None:
    console = demo.run(
        "serial login",
        lambda: vm.wait_for_serial_login(timeout=120),
        lambda _: "shell prompt on the serial console",
    )
    demo.run("serial command", lambda: console.cmd("uname -sr").strip())
    session = demo.run(
        "SSH login",
        lambda: vm.wait_for_login(timeout=120),
        lambda _: f"127.0.0.1:{vm.get_port(22)}, host key verified",
    )
    demo.run("SSH command", lambda: session.cmd("echo $((6*7)) from $(hostname)").strip())
    session.close()


def _file_steps(demo: Demo, vm: Any, scratch: Path) -> None:
    payload = scratch / "payload.bin"
    payload.write_bytes(os.urandom(1 << 20))
    demo.run(
        "copy a file to the guest",
        lambda: vm.copy_files_to(str(payload), GUEST_FILE),
        lambda _: "1 MiB over SFTP",
    )
    back = scratch / "back.bin"
    demo.run(
        "copy it back",
        lambda: vm.copy_files_from(GUEST_FILE, str(back)),
        lambda _: "checksums match" if _md5(back) == _md5(payload) else "DIFFER",
    )
    if _md5(back) != _md5(payload):
        raise VMError("the file copied back differs from the one sent")


def _state_steps(demo: Demo, vm: Any, scratch: Path) -> None:
    console = vm.serial_console
    console.cmd("echo kept > /root/state")
    state = scratch / "vm.state"
    demo.run(
        "save to a file",
        lambda: vm.save_to_file(str(state)),
        lambda _: f"{state.stat().st_size >> 20} MiB of state",
    )
    demo.run(
        "restore",
        lambda: (vm.restore_from_file(str(state)), console.cmd("cat /root/state").strip())[1],
        lambda text: f"guest state after restore: {text!r}",
    )
    session = demo.run(
        "reboot",
        lambda: vm.reboot(timeout=120),
        lambda _: "went down, came back, logged in over SSH",
    )
    session.close()


def _migration_steps(demo: Demo, vm: Any, hosts: list[Any], out: TextIO) -> None:
    from virtlib.secondhost import SecondHost

    host2 = demo.run("start a second libvirt host", SecondHost.start, lambda h: h.uri)
    hosts.append(host2)
    vm.params["migration_dest_uri"] = host2.uri
    shown: list[int] = []

    def progress(sample: Any) -> None:
        percent = int(sample.percent) // 25 * 25
        if percent not in shown:
            shown.append(percent)
            out.write(f"{percent}%.. ")
            out.flush()

    demo.run(
        "live migration",
        lambda: vm.migrate(progress=progress),
        lambda r: (
            f"{r.total_time_ms} ms, downtime {r.downtime_ms} ms, {r.data_transferred >> 20} MiB"
        ),
    )
    demo.run(
        "guest answers after migration",
        lambda: _ssh_echo(vm),
        lambda text: f"on {vm.uri.split('?')[0]}...: {text}",
    )


def _ssh_echo(vm: Any) -> str:
    session = vm.wait_for_login(timeout=60)
    try:
        return str(session.cmd("echo alive").strip())
    finally:
        session.close()


def _crash_detected(vm: Any) -> str:
    wait_for(lambda: "end trace" in vm.serial_console.get_output(), 30)
    try:
        vm.verify_kernel_crash()
    except VMDeadKernelCrashError as exc:
        return exc.kernel_crash
    raise VMError("the oops on the serial console was not detected")
