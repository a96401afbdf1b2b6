"""The ``virtlib`` command: a thin layer over the library."""

from __future__ import annotations

import argparse
import logging
import sys

from virtlib.errors import VMError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="virtlib", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="log everything; tracebacks on error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    guest = commands.add_parser("guest", help="the bundled test guest")
    guest_commands = guest.add_subparsers(dest="guest_command", required=True, metavar="ACTION")
    from virtlib.guest.cli import build_parser as guest_build_parser

    guest_build_parser(guest_commands.add_parser("build", help="build (or find) the test guest"))

    demo = commands.add_parser("demo", help="boot, log in, run commands, destroy: timed")
    demo.add_argument("--uri", default="qemu:///system", help="libvirt URI (default %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "guest":
            from virtlib.guest.cli import build_command

            rest = ["--rebuild"] if args.rebuild else []
            if args.cache_dir:
                rest += ["--cache-dir", str(args.cache_dir)]
            return build_command(rest)
        if args.command == "demo":
            from virtlib.demo import run_demo

            return run_demo(sys.stdout, args.uri)
    except VMError as exc:
        if args.debug:
            raise
        print(f"virtlib: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
