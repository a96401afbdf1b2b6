"""The QEMU guest agent's channel: in every QEMU domain unless ``guest_agent = no``, and the
agent itself runs in the bundled guest (libvirt-qemu's agent command answers)."""

from __future__ import annotations

import json
import time

import libvirt
import libvirt_qemu
from functional_support import VMFactory

AGENT_TIMEOUT = 30


def agent_command(uri: str, name: str, command: str, wait: float = AGENT_TIMEOUT) -> object:
    """The agent's answer to ``command`` (retried while the agent is not up yet)."""
    conn = libvirt.open(uri)
    try:
        dom = conn.lookupByName(name)
        deadline = time.monotonic() + wait
        while True:
            try:
                return json.loads(libvirt_qemu.qemuAgentCommand(dom, command, 5, 0))
            except libvirt.libvirtError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        conn.close()


def test_the_bundled_guest_runs_the_agent(vm_factory: VMFactory, libvirt_uri: str) -> None:
    vm = vm_factory()
    serial = vm.wait_for_serial_login(timeout=120)
    assert agent_command(libvirt_uri, vm.name, '{"execute":"guest-ping"}') == {"return": {}}
    link = serial.cmd("readlink /dev/virtio-ports/org.qemu.guest_agent.0").strip()
    assert link.startswith("../vport")
    info = agent_command(libvirt_uri, vm.name, '{"execute":"guest-info"}')
    assert isinstance(info, dict) and info["return"]["version"]


def test_guest_agent_no_means_no_channel(vm_factory: VMFactory, libvirt_uri: str) -> None:
    vm = vm_factory(guest_agent="no")
    vm.wait_for_serial_login(timeout=120)
    conn = libvirt.open(libvirt_uri)
    try:
        dom = conn.lookupByName(vm.name)
        assert "org.qemu.guest_agent.0" not in dom.XMLDesc(0)
        try:
            libvirt_qemu.qemuAgentCommand(dom, '{"execute":"guest-ping"}', 5, 0)
        except libvirt.libvirtError as exc:
            assert exc.get_error_code() == libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED
        else:
            raise AssertionError("an agent answered without a channel")
    finally:
        conn.close()
