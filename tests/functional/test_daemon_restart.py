"""libvirtd going away and coming back mid-test: running VMs stay manageable.

Marked ``disruptive``: scripts/test runs it alone, after the parallel suite.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import libvirt
import pytest
from functional_support import VMFactory

import virtlib
from virtlib.waiting import wait_for

pytestmark = pytest.mark.disruptive


def libvirtd_pid() -> int:
    return int(Path("/run/libvirtd.pid").read_text().strip())


def daemon_answers(uri: str) -> bool:
    try:
        libvirt.open(uri).close()
    except libvirt.libvirtError:
        return False
    return True


def restart_libvirtd(uri: str) -> None:
    pid = libvirtd_pid()
    os.kill(pid, signal.SIGTERM)
    assert wait_for(lambda: not Path(f"/proc/{pid}").exists(), 30), "libvirtd did not stop"
    subprocess.run(["libvirtd", "-d"], check=True)
    assert wait_for(lambda: daemon_answers(uri), 60), "libvirtd did not come back"


def test_vm_stays_manageable_across_a_libvirtd_restart(
    vm_factory: VMFactory, libvirt_uri: str
) -> None:
    vm = vm_factory()
    console = vm.wait_for_serial_login(timeout=120)
    console.cmd("echo before > /tmp/mark")

    restart_libvirtd(libvirt_uri)

    assert wait_for(vm.is_alive, 60)
    # The console is re-attached by the reconnect: the same session answers.
    assert wait_for(lambda: console.cmd("cat /tmp/mark", timeout=5).strip() == "before", 60)
    vm.pause()
    assert vm.is_paused()
    vm.resume()
    session = vm.wait_for_login(timeout=60)
    assert session.cmd("cat /tmp/mark").strip() == "before"
    session.close()
    vm.destroy(gracefully=False)
    assert vm.is_dead()
    assert isinstance(vm, virtlib.BaseVM)
