"""``virtlib snapshot create|list|revert|delete``: a VM's snapshots (through the contract)."""

from __future__ import annotations

import argparse
from typing import Any

from virtlib.cli.output import emit, table
from virtlib.cli.vms import load_vm, released
from virtlib.snapshot import Snapshot


def _summary(snapshot: Snapshot, current: str | None) -> dict[str, Any]:
    data = snapshot.to_json()
    data["current"] = snapshot.name == current
    return data


def cmd_create(args: argparse.Namespace) -> int:
    with released(load_vm(args, attach_console=True)) as vm:
        snapshot = vm.create_snapshot(
            args.snapshot,
            memory=not args.disk_only,
            disk_only=args.disk_only,
            description=args.description,
            kind=args.kind,
        )
    holds = "disks only" if snapshot.disk_only else "memory and disks"
    text = f"{vm.name}: snapshot {snapshot.name} taken ({snapshot.kind}, {holds})"
    emit(args.json, _summary(snapshot, snapshot.name), text)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with released(load_vm(args)) as vm:
        snapshots = vm.list_snapshots()
        current = vm.current_snapshot()
    name = current.name if current else None
    rows = [
        (
            "*" if s.name == name else "",
            s.name,
            s.kind,
            "no" if s.disk_only else "yes",
            s.created_text,
            s.parent or "-",
            s.description,
        )
        for s in snapshots
    ]
    headers = ("", "NAME", "KIND", "MEMORY", "CREATED", "PARENT", "DESCRIPTION")
    text = table(headers, rows) if rows else f"{vm.name} has no snapshots"
    emit(args.json, [_summary(s, name) for s in snapshots], text)
    return 0


def cmd_revert(args: argparse.Namespace) -> int:
    with released(load_vm(args, attach_console=True)) as vm:
        vm.revert_snapshot(args.snapshot)
    emit(
        args.json,
        {"name": vm.name, "snapshot": args.snapshot},
        f"{vm.name} reverted to {args.snapshot}",
    )
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    with released(load_vm(args)) as vm:
        vm.delete_snapshot(args.snapshot, children=args.children)
    emit(
        args.json,
        {"name": vm.name, "snapshot": args.snapshot, "children": args.children},
        f"{vm.name}: snapshot {args.snapshot} deleted",
    )
    return 0


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    snapshot = commands.add_parser("snapshot", help="take, list, revert and delete snapshots")
    actions = snapshot.add_subparsers(dest="snapshot_command", required=True, metavar="ACTION")

    create = actions.add_parser("create", parents=[common], help="take a snapshot")
    create.add_argument("name", help="the VM")
    create.add_argument("snapshot", help="the snapshot's name")
    create.add_argument("--disk-only", action="store_true", help="the disks, not the memory")
    create.add_argument("--kind", choices=["auto", "internal", "external"], default="auto")
    create.add_argument("--description", default="")
    create.set_defaults(func=cmd_create)

    lst = actions.add_parser("list", parents=[common], help="the VM's snapshots, oldest first")
    lst.add_argument("name", help="the VM")
    lst.set_defaults(func=cmd_list)

    revert = actions.add_parser("revert", parents=[common], help="go back to a snapshot")
    revert.add_argument("name", help="the VM")
    revert.add_argument("snapshot")
    revert.set_defaults(func=cmd_revert)

    delete = actions.add_parser("delete", parents=[common], help="delete a snapshot")
    delete.add_argument("name", help="the VM")
    delete.add_argument("snapshot")
    delete.add_argument("--children", action="store_true", help="and the ones taken after it")
    delete.set_defaults(func=cmd_delete)
