"""The guest agent API on the VM (vm.guest_agent()), on the bundled guest's qemu-ga."""

from __future__ import annotations

import hashlib

import pytest
from functional_support import VMFactory

import virtlib


def test_agent_calls_on_the_bundled_guest(vm_factory: VMFactory) -> None:
    vm = vm_factory()
    agent = vm.guest_agent()
    agent.wait(timeout=120)  # on libvirt's agent event, then a ping
    agent.ping()

    result = agent.run(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.status, result.stdout, result.stderr, result.ok) == (3, "out\n", "err\n", False)
    assert agent.run(["cat"], input_data=b"through stdin").stdout == "through stdin"

    payload = bytes(range(256)) * 400  # binary, larger than one agent read
    agent.write_file("/tmp/agent-file", payload)
    assert agent.read_file("/tmp/agent-file") == payload
    serial = vm.wait_for_serial_login(timeout=120)
    expected = hashlib.md5(payload).hexdigest()  # noqa: S324 - a checksum
    assert serial.cmd("md5sum < /tmp/agent-file").split()[0] == expected

    interfaces = {i.mac: i for i in agent.interfaces()}
    nic = interfaces[vm.get_mac_address(0)]
    assert any(address.startswith("10.0.2.") for address in nic.addresses)  # QEMU's user net

    assert agent.os_info()["kernel-release"] == serial.cmd("uname -r").strip()
    assert isinstance(agent.fsfreeze(), int) and isinstance(agent.fsthaw(), int)
    agent.sync_time()
    with pytest.raises(virtlib.VMAgentError, match="passwd"):  # busybox has no passwd program
        agent.set_password("root", "new-password")
    with pytest.raises(virtlib.VMParamsError):
        agent.run([])


def test_no_channel_no_agent(vm_factory: VMFactory) -> None:
    vm = vm_factory(guest_agent="no")
    with pytest.raises(virtlib.VMNotSupportedError, match="guest_agent = no"):
        vm.guest_agent()
