"""The ``virtlib`` command: a thin layer over the library.

Exit codes: 0 success; 1 the operation failed; 2 bad usage or configuration
(an unknown command, a bad ``--set``, a missing params file); 3 no such VM;
130 interrupted.  ``exec`` (and ``ssh -- CMD``) exit with the command's status.
Errors are one line on stderr; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from virtlib.errors import VMError, VMNotFoundError, VMParamsError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"virtlib: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        sys.exit(EXIT_USAGE)


class _UriAction(argparse.Action):
    """``--uri``: the last one is the URI; all are kept in ``uris`` (``list`` looks at each)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        namespace.uri = values
        namespace.uris = [*(getattr(namespace, "uris", None) or []), values]


def common_options() -> Parser:
    """Options every command takes, before or after its name."""
    common = Parser(add_help=False)
    common.add_argument(
        "--uri",
        action=_UriAction,
        help="libvirt URI (default: the VM's, else qemu:///system); list: repeatable",
    )
    common.add_argument(
        "--vm-type", help="the backend of VMs not started by 'virtlib up' (default libvirt)"
    )
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--debug", action="store_true", help="log everything; show tracebacks")
    return common


def build_parser() -> argparse.ArgumentParser:
    from virtlib.cli import avocado, devices, hostcheck, images, interactive, snapshots, vms

    common = common_options()
    parser = Parser(
        prog="virtlib",
        parents=[common],
        description="Drive VMs through libvirt.",
        epilog="Exit codes: 0 ok, 1 failed, 2 usage, 3 no such VM; exec: the command's status.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    vms.register(commands, common)
    interactive.register(commands, common)
    snapshots.register(commands, common)
    devices.register(commands, common)
    images.register(commands, common)
    hostcheck.register(commands, common)
    avocado.register(commands, common)

    guest = commands.add_parser("guest", help="the bundled test guest")
    guest_actions = guest.add_subparsers(dest="guest_command", required=True, metavar="ACTION")
    from virtlib.guest.cli import build_parser as guest_build_parser

    build = guest_build_parser(
        guest_actions.add_parser("build", parents=[common], help="build (or find) the test guest")
    )
    build.set_defaults(func=_guest_build)

    demo = commands.add_parser(
        "demo", parents=[common], help="the main job, step by step, timed, with a summary"
    )
    demo.add_argument("--no-migrate", action="store_true", help="skip the migration steps")
    demo.set_defaults(func=_demo)
    return parser


def _guest_build(args: argparse.Namespace) -> int:
    from virtlib.guest.cli import build_command

    rest = ["--rebuild"] if args.rebuild else []
    if args.cache_dir:
        rest += ["--cache-dir", str(args.cache_dir)]
    rest += ["--flavor", args.flavor]
    return build_command(rest)


def _demo(args: argparse.Namespace) -> int:
    from virtlib.demo import run_demo

    return run_demo(sys.stdout, args.uri or "qemu:///system", migrate=not args.no_migrate)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        status: int = args.func(args)
    except KeyboardInterrupt:
        print("virtlib: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except VMError as exc:
        if args.debug:
            raise
        print(f"virtlib: error: {' '.join(str(exc).split())}", file=sys.stderr)
        if isinstance(exc, VMNotFoundError):
            return EXIT_NOT_FOUND
        return EXIT_USAGE if isinstance(exc, VMParamsError) else EXIT_FAILED
    except OSError as exc:  # a file or socket of the host: say which, no traceback
        if args.debug:
            raise
        print(f"virtlib: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # a bug: one line, and how to see more
        if args.debug:
            raise
        print(
            f"virtlib: internal error: {type(exc).__name__}: {exc} (--debug shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return status


if __name__ == "__main__":
    sys.exit(main())
