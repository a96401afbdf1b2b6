"""``python -m virtlib.guest build``: build (or find) the cached test guest."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from virtlib.guest.builder import default_cache_dir, ensure_guest
from virtlib.guest.image import GuestBuildError

FLAVORS = ("busybox", "debian")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options of ``build`` (added to ``parser`` when given)."""
    parser = parser or argparse.ArgumentParser(
        prog="python -m virtlib.guest build", description="Build or find the test guest."
    )
    parser.add_argument("--rebuild", action="store_true", help="build even if cached")
    parser.add_argument(
        "--flavor",
        choices=FLAVORS,
        default=FLAVORS[0],
        help="busybox: the tiny bundled guest (default); debian: a Debian 12 disk image "
        "that boots like a cloud image (root only)",
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help=f"default: {default_cache_dir()}"
    )
    return parser


def build_command(argv: list[str] | None = None) -> int:
    """Run ``build [--rebuild] [--cache-dir D] [--flavor F]`` (``argv`` excludes ``build``)."""
    return build_from_args(build_parser().parse_args(argv))


def build_from_args(args: argparse.Namespace) -> int:
    """Build what parsed ``build`` options ask for; print where it is; exit status."""
    started = time.monotonic()
    if getattr(args, "flavor", FLAVORS[0]) == "debian":
        return _build_debian(args, started)
    try:
        image = ensure_guest(args.cache_dir, rebuild=args.rebuild, log=_log)
    except GuestBuildError as exc:
        _log(f"error: {exc}")
        return 1
    print(f"kernel:      {image.kernel}")
    print(f"initrd:      {image.initrd}")
    print(f"kernel args: {image.kernel_args}")
    print(f"login:       {image.username} / {image.password}")
    print(f"build key:   {image.build_key}")
    for key in image.host_keys:
        print(f"host key:    {key.keytype} {key.fingerprint}")
    print(f"took:        {time.monotonic() - started:.2f} s")
    return 0


def _build_debian(args: argparse.Namespace, started: float) -> int:
    from virtlib.guest.debian import ensure_debian_guest

    try:
        image = ensure_debian_guest(args.cache_dir, rebuild=args.rebuild, log=_log)
    except GuestBuildError as exc:
        _log(f"error: {exc}")
        return 1
    print(f"disk:        {image.disk} ({image.format}, read-only: boot it with image_snapshot)")
    print(f"kernel:      {image.kernel_release} (GRUB on the disk)")
    print("login:       from cloud-init (cloudinit = yes, username, password)")
    print(f"build key:   {image.build_key}")
    print(f"took:        {time.monotonic() - started:.2f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m virtlib.guest <command> ...``."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print("usage: python -m virtlib.guest build [--rebuild] [--cache-dir D] [--flavor F]")
        return 0 if args else 2
    if args[0] != "build":
        _log(f"unknown command {args[0]!r}; the command is: build")
        return 2
    return build_command(args[1:])
