"""VMState: one immutable record, its secrets kept out of the domain XML, round-tripped
through the domain metadata."""

from __future__ import annotations

import dataclasses
import json

import pytest

from virtlib.backends.libvirt import domxml, metadata
from virtlib.errors import VMError
from virtlib.reservations import Partition
from virtlib.state import Allocations, VMState, is_secret, public_params, secret_params

PARAMS = {
    "connect_uri": "qemu:///system",
    "mem": "384",
    "password": "s3cret",
    "password_nic1": "other",
    "cloudinit_password": "x",
    "ssh_known_hosts": "/k",
}


def make_state(**changes: object) -> VMState:
    state = VMState.designed(
        "vm1",
        PARAMS,
        "/root/dir",
        instance="20260101-000000-abcdefgh",
        uri="qemu:///system",
        uuid="6f1c1c4e-29a8-4b53-9d1e-2b4f5a6c7d8e",
        allocations=Allocations.of({0: "52:54:00:00:00:01"}, {(0, 22): 20022, (0, 80): 20080}),
        partition=Partition(1, 2),
        accel="tcg",
    )
    return state.replace(**changes) if changes else state


def test_secrets_are_told_apart() -> None:
    assert all(is_secret(k) for k in ("password", "password_nic1", "cloudinit_password"))
    assert not any(is_secret(k) for k in ("mem", "ssh_known_hosts", "username"))
    assert set(secret_params(PARAMS)) == {"password", "password_nic1", "cloudinit_password"}
    assert "password" not in public_params(PARAMS)


def test_the_state_is_immutable_and_replaced_whole() -> None:
    state = make_state()
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.uri = "elsewhere"  # type: ignore[misc]
    moved = state.moved("qemu+ssh://h2/system", state.allocations.with_ports({(0, 22): 30022}))
    assert moved.uri == moved.spec.connect_uri == "qemu+ssh://h2/system"
    assert (
        moved.allocations.port(0, 22) == 30022 and moved.allocations.macs == state.allocations.macs
    )
    assert (moved.instance, moved.uuid) == (state.instance, state.uuid)
    assert state.uri == "qemu:///system"  # the old value is untouched


def test_metadata_round_trip_keeps_everything_but_secrets() -> None:
    state = make_state(owned_files=("/var/tmp/copy.qcow2",))
    values = metadata.encode(state)
    stored = json.loads(values["params"])
    assert "password" not in stored and "password_nic1" not in stored and stored["mem"] == "384"
    root = domxml.parse("<domain><name>vm1</name></domain>")
    metadata.write(root, state)
    read = metadata.read(domxml.to_string(root))
    back = metadata.decode(read, "vm1", state.uri, state.uuid, {"password": "s3cret"})
    assert back.allocations == state.allocations
    assert back.partition == state.partition and back.accel == "tcg"
    assert back.owned_files == state.owned_files
    assert back.params["password"] == "s3cret"  # the secret came from the caller
    assert back.spec.mem_mib == 384 and back.root_dir == "/root/dir"


def test_metadata_of_a_domain_virtlib_did_not_make() -> None:
    with pytest.raises(VMError, match="not made by virtlib"):
        metadata.decode({}, "other", "qemu:///system", "u")
    with pytest.raises(VMError, match="damaged"):
        metadata.decode({"instance": "i", "forwards": "0:22=x"}, "vm", "qemu:///system", "u")
