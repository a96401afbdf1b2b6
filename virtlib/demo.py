"""``virtlib demo``: the main job on the embedded default, step by step, timed.

Boots the bundled guest through the local libvirtd, logs in over the serial
console and over SSH, runs commands, and destroys it; prints a summary table
and exits non-zero if any step failed.  Nothing is left behind, even on failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from virtlib.contract import BaseVM
from virtlib.params import Params
from virtlib.registry import new_vm
from virtlib.textutil import random_string


@dataclass
class Step:
    name: str
    seconds: float = 0.0
    ok: bool = False
    detail: str = ""


@dataclass
class Demo:
    """Runs steps in order; the first failure skips the rest (cleanup always runs)."""

    out: TextIO
    steps: list[Step] = field(default_factory=list)

    def run(self, name: str, action: Callable[[], Any], detail: Callable[[Any], str] = str) -> Any:
        step = Step(name)
        self.steps.append(step)
        self.out.write(f"-> {name} ... ")
        self.out.flush()
        started = time.monotonic()
        try:
            result = action()
        except Exception as exc:
            step.seconds = time.monotonic() - started
            step.detail = f"{type(exc).__name__}: {exc}"
            self.out.write(f"FAILED ({step.seconds:.2f} s)\n   {step.detail}\n")
            raise
        step.seconds = time.monotonic() - started
        step.ok = True
        step.detail = detail(result) if result is not None else ""
        self.out.write(f"ok ({step.seconds:.2f} s) {step.detail}\n")
        return result

    def table(self) -> str:
        width = max(len(s.name) for s in self.steps) if self.steps else 10
        lines = [
            f"{'step':<{width}}  {'result':<6}  {'seconds':>8}  detail",
            f"{'-' * width}  ------  --------  ------",
        ]
        for s in self.steps:
            lines.append(
                f"{s.name:<{width}}  {'ok' if s.ok else 'FAILED':<6}  "
                f"{s.seconds:>8.2f}  {s.detail[:70]}"
            )
        return "\n".join(lines)


def run_demo(out: TextIO, uri: str = "qemu:///system") -> int:
    """The demo; returns the exit status."""
    demo = Demo(out)
    vm: BaseVM | None = None
    status = 1
    try:
        from virtlib.guest import ensure_guest

        demo.run(
            "build or find the bundled guest",
            ensure_guest,
            lambda g: (
                f"{g.kernel_release or g.kernel.name}, {g.initrd.stat().st_size >> 10} KiB initrd"
            ),
        )
        params = Params(vm_type="libvirt", connect_uri=uri)
        vm = new_vm(f"virtlib-demo-{random_string(6)}", params)
        demo.run(
            "create (boot through libvirt)", vm.create, lambda _: str(getattr(vm, "accel", ""))
        )
        demo.run(
            "serial login",
            lambda: vm.wait_for_serial_login(timeout=120),
            lambda _: "prompt reached on the serial console",
        )
        demo.run(
            "serial command",
            lambda: vm.serial_console.cmd("uname -sr").strip() if vm.serial_console else "",
            str,
        )
        session = demo.run(
            "SSH login",
            lambda: vm.wait_for_login(timeout=120),
            lambda _: f"127.0.0.1:{vm.get_port(22)}",
        )
        demo.run("SSH command", lambda: session.cmd("echo $((6*7)) from $(hostname)").strip())
        session.close()
        status = 0
    except Exception:
        status = 1
    finally:
        if vm is not None:
            try:
                demo.run("destroy", vm.destroy, lambda _: "no domain left")
            except Exception:
                status = 1
    out.write("\n" + demo.table() + "\n")
    out.write(f"\ndemo {'passed' if status == 0 else 'FAILED'}\n")
    return status
