"""VM commands: up, list, info, reboot, send-key, save, restore, migrate, destroy."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from virtlib.cli.output import Progress, emit, table
from virtlib.cli.state import StateStore, VMRecord
from virtlib.contract import BaseVM
from virtlib.errors import VMError, VMNotFoundError, VMParamsError
from virtlib.migration import MigrationProgress
from virtlib.params import Params, parse_assignment
from virtlib.registry import DEFAULT_VM_TYPE, backend_class, new_vm
from virtlib.spec import BUNDLED, VMSpec
from virtlib.state import secret_params
from virtlib.textutil import random_string

DEFAULT_URI = "qemu:///system"


# --- shared -------------------------------------------------------------------------------
def build_params(
    params_file: str | None, assignments: list[str], uri: str | None, vm_type: str | None = None
) -> Params:
    """Params for a new VM: defaults, then the file, then ``--set key=value`` (in order)."""
    params = Params(vm_type=DEFAULT_VM_TYPE)
    if params_file:
        params.update(Params.from_file(params_file))
    for assignment in assignments:
        key, value = parse_assignment(assignment, f"--set {assignment!r}")
        params[key] = value
    if uri:
        params["connect_uri"] = uri
    if vm_type:
        params["vm_type"] = vm_type
    return params


def load_vm(args: argparse.Namespace, attach_console: bool = False) -> BaseVM:
    """The VM named ``args.name``, adopted from its hypervisor.

    The state file adds what the hypervisor does not hold (secrets, where the VM
    runs, its backend); without one, ``--uri`` and ``--vm-type`` say where to look.
    """
    try:
        record = StateStore().load(args.name)
    except VMNotFoundError:
        params = Params(connect_uri=args.uri or DEFAULT_URI)
        cls = backend_class(getattr(args, "vm_type", None) or DEFAULT_VM_TYPE)
        return cls.adopt(args.name, params, ".", attach_console)
    params = Params(record.params)
    params["connect_uri"] = record.uri
    return backend_class(record.vm_type).adopt(record.name, params, ".", attach_console)


def _record(vm: BaseVM) -> VMRecord:
    """What the state file keeps for ``vm``: where it runs, its backend, its secrets."""
    params = vm.params
    known_hosts = params.get("ssh_known_hosts", "")
    kept = secret_params(params) | ({"ssh_known_hosts": known_hosts} if known_hosts else {})
    return VMRecord(name=vm.name, uri=vm.uri, params=kept, vm_type=vm.BACKEND)


@contextlib.contextmanager
def released(vm: BaseVM) -> Iterator[BaseVM]:
    """Use a VM in this invocation, then forget it here (the VM keeps running)."""
    try:
        yield vm
    finally:
        vm.release()


# --- up -------------------------------------------------------------------------------------
def cmd_up(args: argparse.Namespace) -> int:
    store = StateStore()
    name = args.name or f"virtlib-{random_string(6)}"
    params = build_params(args.params, args.set or [], args.uri, args.vm_type)
    root_dir = str(Path(args.root_dir).resolve())
    spec = VMSpec.from_params(name, params, root_dir)  # bad params fail before anything exists
    try:
        store.load(name)
    except VMNotFoundError:
        pass
    else:
        raise VMParamsError(f"a VM named {name!r} is already up (virtlib destroy {name})")
    if spec.guest != BUNDLED:
        params["ssh_known_hosts"] = str(store.known_hosts(name))
    vm = new_vm(name, params, root_dir)
    progress = Progress(f"up {name}")
    vm.create()
    try:
        if not args.no_wait:
            progress.update(0.5, "booting, waiting for the serial login")
            vm.wait_for_serial_login(timeout=args.timeout)
            vm.serial_logout()  # no root shell left on the console for the next to attach
        store.save(_record(vm))
        info = vm.info()
    except BaseException:
        vm.destroy(gracefully=False)
        raise
    progress.done(f"({info['accel']})" if info.get("accel") else "")
    vm.release()
    ssh = info["forwards"].get("nic0:22", "no SSH forward")
    emit(args.json, info, f"{name} is up on {vm.uri} (ssh: {ssh})")
    return 0


# --- list / info ------------------------------------------------------------------------------
def _uris(args: argparse.Namespace, store: StateStore) -> list[str]:
    uris = [*(args.uri_list or []), *(getattr(args, "uris", None) or [])] or [DEFAULT_URI]
    uris += [r.uri for r in store.records()]
    return list(dict.fromkeys(uris))


def cmd_list(args: argparse.Namespace) -> int:
    store = StateStore()
    cls = backend_class(args.vm_type or DEFAULT_VM_TYPE)
    rows = []
    for uri in _uris(args, store):
        try:
            found = cls.managed_vms(uri)
        except VMError as exc:
            rows.append({"name": "-", "uri": uri, "state": f"unreachable: {exc}", "ssh": ""})
            continue
        rows += [{"name": v.name, "uri": uri, "state": v.state, "ssh": v.ssh} for v in found]
    text = (
        table(
            ["NAME", "STATE", "SSH", "URI"],
            [[r["name"], r["state"], r["ssh"], r["uri"]] for r in rows],
        )
        if rows
        else "no virtlib VMs"
    )
    emit(args.json, rows, text)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    with released(load_vm(args)) as vm:
        info = vm.info()
    text = "\n".join(f"{k:12} {v}" for k, v in info.items())
    emit(args.json, info, text)
    return 0


# --- operations ------------------------------------------------------------------------------
def cmd_reboot(args: argparse.Namespace) -> int:
    with released(load_vm(args, attach_console=True)) as vm:
        session = vm.reboot(method=args.method, timeout=args.timeout)
        if session is vm.serial_console:
            vm.serial_logout()
        else:
            session.close()
    emit(args.json, {"name": vm.name, "rebooted": True}, f"{vm.name} rebooted and answers")
    return 0


def cmd_send_key(args: argparse.Namespace) -> int:
    with released(load_vm(args)) as vm:
        for keys in args.keys:
            vm.send_key(keys)
    emit(args.json, {"name": vm.name, "keys": args.keys}, "")
    return 0


def cmd_save(args: argparse.Namespace) -> int:
    with released(load_vm(args)) as vm:
        vm.save_to_file(str(Path(args.file).resolve()))
    emit(args.json, {"name": vm.name, "file": args.file}, f"{vm.name} saved to {args.file}")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """A saved VM has no domain: the save file holds its state; the record adds secrets."""
    try:
        record = StateStore().load(args.name)
        params = Params(record.params, connect_uri=record.uri, vm_type=record.vm_type)
    except VMNotFoundError:
        params = Params(
            connect_uri=args.uri or DEFAULT_URI, vm_type=args.vm_type or DEFAULT_VM_TYPE
        )
    with released(new_vm(args.name, params)) as vm:
        vm.restore_from_file(str(Path(args.file).resolve()))
    emit(args.json, {"name": vm.name, "file": args.file}, f"{vm.name} restored from {args.file}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    store = StateStore()
    vm = load_vm(args, attach_console=True)
    if args.bandwidth:
        vm.params["migration_bandwidth"] = str(args.bandwidth)
        vm.spec = VMSpec.from_params(vm.name, vm.params, vm.root_dir)
    vm.params["migration_dest_uri"] = args.to
    progress = Progress(f"migrate {vm.name}")

    def show(sample: MigrationProgress) -> None:
        progress.update(
            sample.percent / 100,
            f"{sample.data_processed / 2**20:.1f}/"
            f"{sample.data_total / 2**20:.1f} MiB, pass {sample.iteration}",
        )

    try:
        result = vm.migrate(
            timeout=args.timeout,
            protocol=args.protocol,
            offline=args.offline,
            progress=show,
            dest_host=args.dest_host,
            p2p=args.p2p,
            tunnelled=args.tunnelled,
        )
        progress.done(f"(downtime {result.downtime_ms} ms)")
        store.save(_record(vm))
    finally:
        vm.release()
    data = {
        "name": vm.name,
        "uri": vm.uri,
        "total_time_ms": result.total_time_ms,
        "downtime_ms": result.downtime_ms,
        "bytes": result.data_transferred,
    }
    emit(args.json, data, f"{vm.name} now runs on {vm.uri}")
    return 0


def cmd_destroy(args: argparse.Namespace) -> int:
    store = StateStore()
    try:
        vm = load_vm(args)
    except VMNotFoundError as missing:
        # A saved VM has no domain, only its state: forget it.
        try:
            store.load(args.name)
        except VMNotFoundError:
            raise missing from None
        store.remove(args.name)
        emit(args.json, {"name": args.name, "destroyed": True}, f"{args.name} forgotten")
        return 0
    vm.destroy(gracefully=not args.force)
    store.remove(args.name)
    emit(args.json, {"name": args.name, "destroyed": True}, f"{args.name} destroyed")
    return 0


# --- parser -----------------------------------------------------------------------------------
def register(commands: Any, common: argparse.ArgumentParser) -> None:
    up = commands.add_parser(
        "up", parents=[common], help="start a VM (the bundled guest by default)"
    )
    up.add_argument("name", nargs="?", help="the VM's name (default: virtlib-<random>)")
    up.add_argument("-p", "--params", help="a params file (key = value lines)")
    up.add_argument("--set", action="append", metavar="KEY=VALUE", help="a param (repeatable)")
    up.add_argument("--root-dir", default=".", help="base for relative paths in params")
    up.add_argument("--no-wait", action="store_true", help="do not wait for the login prompt")
    up.add_argument("--timeout", type=float, default=240, help="seconds to wait for login")
    up.set_defaults(func=cmd_up)

    lst = commands.add_parser("list", parents=[common], help="the VMs virtlib started")
    lst.add_argument(
        "--host",
        dest="uri_list",
        action="append",
        metavar="URI",
        help="a libvirt URI to look at (repeatable; default qemu:///system)",
    )
    lst.set_defaults(func=cmd_list)

    for name, func, text in (("info", cmd_info, "state, addresses and forwards of a VM"),):
        parser = commands.add_parser(name, parents=[common], help=text)
        parser.add_argument("name")
        parser.set_defaults(func=func)

    reboot = commands.add_parser("reboot", parents=[common], help="reboot and wait for login")
    reboot.add_argument("name")
    reboot.add_argument("--method", choices=["shell", "system_reset"], default="shell")
    reboot.add_argument("--timeout", type=float, default=240)
    reboot.set_defaults(func=cmd_reboot)

    keys = commands.add_parser("send-key", parents=[common], help="press keys (ctrl-alt-delete)")
    keys.add_argument("name")
    keys.add_argument("keys", nargs="+", metavar="KEYS")
    keys.set_defaults(func=cmd_send_key)

    save = commands.add_parser("save", parents=[common], help="save the VM's state to a file")
    save.add_argument("name")
    save.add_argument("file")
    save.set_defaults(func=cmd_save)

    restore = commands.add_parser("restore", parents=[common], help="start a saved VM again")
    restore.add_argument("name")
    restore.add_argument("file")
    restore.set_defaults(func=cmd_restore)

    _register_migrate(commands, common)

    destroy = commands.add_parser("destroy", parents=[common], help="stop the VM, leave nothing")
    destroy.add_argument("name")
    destroy.add_argument("--force", action="store_true", help="no graceful shutdown first")
    destroy.set_defaults(func=cmd_destroy)


def _register_migrate(commands: Any, common: argparse.ArgumentParser) -> None:
    migrate = commands.add_parser("migrate", parents=[common], help="live-migrate to another host")
    migrate.add_argument("name")
    migrate.add_argument("--to", required=True, metavar="URI", help="the destination libvirt URI")
    migrate.add_argument("--protocol", choices=["tcp", "unix"], default="tcp")
    migrate.add_argument("--offline", action="store_true", help="pause during the transfer")
    migrate.add_argument("--timeout", type=float, default=3600)
    migrate.add_argument("--bandwidth", type=int, help="MiB/s")
    migrate.add_argument(
        "--p2p", action="store_true", help="the source host opens the destination URI itself"
    )
    migrate.add_argument(
        "--tunnelled", action="store_true", help="peer-to-peer, the data inside that connection"
    )
    migrate.add_argument(
        "--dest-host", default="localhost", metavar="ADDRESS",
        help="where the data goes when the --to URI names no host",
    )  # fmt: skip
    migrate.set_defaults(func=cmd_migrate)
