"""The libvirt backend's threads against the real daemon: reconnects and teardown.

- destroy() racing reconnects: several threads run the VM's reconnect handler
  (which re-attaches the console) while destroy() runs; nothing raises and
  nothing is left;
- a reconnect while another VM's console streams: a second libvirtd dies and
  its Host backs off and retries, while a guest on the first daemon prints a
  line every 0.1 s; the lines keep arriving (libvirt's one event-loop thread
  is never blocked by the reconnect).  A gap of 1.5 s is allowed for a loaded
  2-core machine; a reconnect that held a lock the event loop needs would stall
  the console for the whole back-off (4 s watched here, 120 s at most);
- discard() of a Host ends its reconnect attempts.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time

import pytest
from functional_support import VMFactory, domain_names

from virtlib.backends.libvirt.domain import LibvirtVM
from virtlib.backends.libvirt.host import Host
from virtlib.macpool import MacPool
from virtlib.ports import PortPool
from virtlib.waiting import wait_for

LOGIN_TIMEOUT = 120.0


def test_destroy_racing_reconnects_leaves_nothing(vm_factory: VMFactory, libvirt_uri: str) -> None:
    vm = vm_factory()
    assert isinstance(vm, LibvirtVM) and vm.serial_console is not None
    instance, workdir = vm.instance, vm.workdir
    errors: list[BaseException] = []
    calls = [0]
    stop = threading.Event()

    def reconnects() -> None:
        while not stop.is_set():
            try:
                vm._on_reconnect()
            except BaseException as exc:
                errors.append(exc)
                return
            calls[0] += 1

    threads = [threading.Thread(target=reconnects, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        assert wait_for(lambda: calls[0] >= 8, 30), "the reconnect handler never ran"
        vm.destroy(gracefully=False)
        time.sleep(0.2)  # reconnects after the destroy, too
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)
    vm._on_reconnect()  # a late reconnect changes nothing
    assert vm.serial_console is None and vm._serial is None and vm.state is None
    assert vm.name not in domain_names(libvirt_uri)
    assert not workdir.exists()
    assert not [k for k in MacPool().reserved() if k.startswith(instance)]
    assert not [k for k in PortPool().table.rows() if k.startswith(instance)]


@pytest.mark.skipif(os.geteuid() != 0, reason="a second libvirt host needs root")
def test_a_reconnect_does_not_stall_another_vms_console(vm_factory: VMFactory) -> None:
    from virtlib.secondhost import SecondHost

    vm = vm_factory()
    console = vm.wait_for_serial_login(timeout=LOGIN_TIMEOUT)
    second = SecondHost.start()
    try:
        other = Host.get(second.uri)
        assert other.hypervisor_kind() == "qemu"
        console.sendline("i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.1; done")
        assert wait_for(lambda: "tick-5" in console.get_output(), 30), "the guest does not tick"

        pid = int((second.state / "libvirtd.pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: other._reconnecting, 15), "the dead daemon was not noticed"

        sizes: list[tuple[float, int]] = []
        watching = time.monotonic()
        while time.monotonic() - watching < 4.0:  # several back-off rounds (0.1, 0.2, ... 2 s)
            sizes.append((time.monotonic(), len(console.get_output())))
            time.sleep(0.02)
        assert other._reconnecting, "the reconnect ended early: nothing was tested"
    finally:
        console.sendcontrol("c")
        second.stop()
    arrivals = [t for (_, before), (t, size) in itertools.pairwise(sizes) if size > before]
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert len(arrivals) > 20, f"only {len(arrivals)} bursts of console output in 4 s"
    assert max(gaps) < 1.5, f"the console stalled for {max(gaps):.2f} s during the reconnect"
    assert wait_for(lambda: not other._reconnecting, 10), "discard() did not end the reconnect"
    console.sync(timeout=30)
    assert console.cmd("echo after").strip() == "after"
