"""Device commands on a running VM: ``disk attach|detach|list``, ``nic attach|detach|list``,
``set vcpus|memory``.  Each adopts the VM (the contract and the registry, as every
command) and calls one device operation of :class:`~virtlib.vmdevices.DeviceOperations`."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from virtlib.cli.output import emit, table
from virtlib.cli.vms import load_vm, released
from virtlib.devices import Disk, Nic


def _disk_data(disk: Disk) -> dict[str, Any]:
    return {**dataclasses.asdict(disk), "by_id": disk.by_id}


def _nic_data(nic: Nic) -> dict[str, Any]:
    data = dataclasses.asdict(nic)
    data["forwards"] = {str(k): v for k, v in nic.forwards.items()}
    return data


# --- disk -------------------------------------------------------------------------------------
def cmd_disk_attach(args: argparse.Namespace) -> int:
    with released(load_vm(args)) as vm:
        disk = vm.attach_disk(
            path=args.path,
            size=args.size,
            image_format=args.format,
            bus=args.bus,
            readonly=args.readonly,
            name=args.disk_name,
            persistent=args.persistent,
        )
    text = f"{vm.name}: disk {disk.name} attached as {disk.target} ({disk.path})"
    emit(args.json, {"vm": vm.name, **_disk_data(disk)}, text)
    return 0


def cmd_disk_detach(args: argparse.Namespace) -> int:
    with released(load_vm(args)) as vm:
        vm.detach_disk(args.disk, timeout=args.timeout, persistent=args.persistent)
    data = {"vm": vm.name, "disk": args.disk, "detached": True}
    emit(args.json, data, f"{vm.name}: disk {args.disk} detached")
    return 0


def cmd_disk_list(args: argparse.Namespace) -> int:
    with released(load_vm(args)) as vm:
        disks = vm.disks()
    rows = [[d.name, d.target, d.bus, d.format, d.path] for d in disks]
    text = table(["NAME", "TARGET", "BUS", "FORMAT", "PATH"], rows) if rows else "no disks"
    emit(args.json, [_disk_data(d) for d in disks], text)
    return 0


# --- nic ----------------------------------------------------------------------------------------
def cmd_nic_attach(args: argparse.Namespace) -> int:
    with released(load_vm(args)) as vm:
        nic = vm.attach_nic(
            nettype=args.nettype,
            mac=args.mac,
            model=args.model,
            redirs=tuple(args.redir or ()),
            name=args.nic_name,
            netdst=args.netdst,
            persistent=args.persistent,
        )
    ports = ", ".join(f"{g}->127.0.0.1:{h}" for g, h in nic.forwards.items()) or "no forwards"
    text = f"{vm.name}: NIC {nic.name} (index {nic.index}, {nic.mac}) attached; {ports}"
    emit(args.json, {"vm": vm.name, **_nic_data(nic)}, text)
    return 0


def _nic_key(text: str) -> str | int:
    """A NIC named on the command line: its index when a number, else its name."""
    return int(text) if text.isdigit() else text


def cmd_nic_detach(args: argparse.Namespace) -> int:
    with released(load_vm(args)) as vm:
        vm.detach_nic(_nic_key(args.nic), timeout=args.timeout, persistent=args.persistent)
    data = {"vm": vm.name, "nic": args.nic, "detached": True}
    emit(args.json, data, f"{vm.name}: NIC {args.nic} detached")
    return 0


def cmd_nic_list(args: argparse.Namespace) -> int:
    with released(load_vm(args)) as vm:
        nics = vm.nics()
    rows = [[n.index, n.name, n.mac, n.nettype, n.forwards or ""] for n in nics]
    text = table(["INDEX", "NAME", "MAC", "NETTYPE", "FORWARDS"], rows) if rows else "no NICs"
    emit(args.json, [_nic_data(n) for n in nics], text)
    return 0


# --- set ------------------------------------------------------------------------------------------
def cmd_set_vcpus(args: argparse.Namespace) -> int:
    with released(load_vm(args)) as vm:
        vm.set_vcpus(args.count, guest=args.guest, persistent=args.persistent)
    data = {"vm": vm.name, "vcpus": args.count, "guest": args.guest}
    emit(args.json, data, f"{vm.name}: {args.count} vCPUs")
    return 0


def cmd_set_memory(args: argparse.Namespace) -> int:
    with released(load_vm(args)) as vm:
        vm.set_memory(args.mib, persistent=args.persistent)
    emit(args.json, {"vm": vm.name, "memory_mib": args.mib}, f"{vm.name}: {args.mib} MiB")
    return 0


# --- parser ---------------------------------------------------------------------------------------
def _action(
    actions: Any, name: str, common: argparse.ArgumentParser, text: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = actions.add_parser(name, parents=[common], help=text)
    parser.add_argument("name", help="the VM")
    return parser


def _persistent(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--persistent", action="store_true", help="also for the next boot (the VM's config)"
    )


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    disk = commands.add_parser("disk", help="attach, detach or list disks of a running VM")
    disks = disk.add_subparsers(dest="disk_command", required=True, metavar="ACTION")
    attach = _action(disks, "attach", common, "attach a disk (a new image by default)")
    attach.add_argument("--path", help="an image or block device (default: a new image)")
    attach.add_argument("--size", default="1G", help="of the new image (default 1G)")
    attach.add_argument("--format", default="qcow2", help="image format (default qcow2)")
    attach.add_argument("--bus", default="virtio", help="virtio (default) or scsi")
    attach.add_argument("--readonly", action="store_true")
    attach.add_argument("--disk-name", help="the disk's name, or an images entry not attached")
    _persistent(attach)
    attach.set_defaults(func=cmd_disk_attach)
    detach = _action(disks, "detach", common, "detach a disk once the guest released it")
    detach.add_argument("disk", help="the disk's name or target (vdb)")
    detach.add_argument("--timeout", type=float, default=30)
    _persistent(detach)
    detach.set_defaults(func=cmd_disk_detach)
    _action(disks, "list", common, "the VM's disks").set_defaults(func=cmd_disk_list)

    nic = commands.add_parser("nic", help="attach, detach or list NICs of a running VM")
    nics = nic.add_subparsers(dest="nic_command", required=True, metavar="ACTION")
    attach = _action(nics, "attach", common, "attach a NIC (user networking by default)")
    attach.add_argument("--nettype", default="user", help="user (default), network or bridge")
    attach.add_argument("--netdst", default="", help="the network or bridge")
    attach.add_argument("--mac", help="default: one reserved from the pool")
    attach.add_argument("--model", default="virtio")
    attach.add_argument(
        "--redir", type=int, action="append", metavar="PORT",
        help="a guest port to forward to 127.0.0.1 (repeatable; user networking)",
    )  # fmt: skip
    attach.add_argument("--nic-name", help="the NIC's name, or a nics entry not attached")
    _persistent(attach)
    attach.set_defaults(func=cmd_nic_attach)
    detach = _action(nics, "detach", common, "detach a NIC once the guest released it")
    detach.add_argument("nic", help="the NIC's name or index")
    detach.add_argument("--timeout", type=float, default=30)
    _persistent(detach)
    detach.set_defaults(func=cmd_nic_detach)
    _action(nics, "list", common, "the VM's NICs").set_defaults(func=cmd_nic_list)

    setter = commands.add_parser("set", help="vCPUs or memory of a running VM")
    setters = setter.add_subparsers(dest="set_command", required=True, metavar="WHAT")
    vcpus = _action(setters, "vcpus", common, "plug or unplug vCPUs (up to vcpus_max)")
    vcpus.add_argument("count", type=int)
    vcpus.add_argument(
        "--guest", action="store_true", help="online/offline them in the guest (guest agent)"
    )
    _persistent(vcpus)
    vcpus.set_defaults(func=cmd_set_vcpus)
    memory = _action(setters, "memory", common, "the memory balloon's target")
    memory.add_argument("mib", type=int, help="MiB the guest keeps")
    _persistent(memory)
    memory.set_defaults(func=cmd_set_memory)
