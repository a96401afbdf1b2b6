"""``virtlib image``: qemu-img through virtlib's image driver."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from virtlib.cli.output import emit
from virtlib.errors import VMImageCheckError
from virtlib.images import convert_image, create_overlay, image_info, resize_image
from virtlib.registry import image_tool


def cmd_create(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if args.backing:
        create_overlay(args.backing, path, args.backing_format, args.format)
    else:
        image_tool().create(path, args.format, args.size, cluster_size=args.cluster_size)
    emit(args.json, {"path": str(path), "format": args.format}, f"created {path}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    info = image_info(args.path, backing_chain=args.backing_chain)
    text = info if isinstance(info, list) else [info]
    lines = []
    for image in text:
        lines.append(
            f"{image.get('filename')}: {image.get('format')}, virtual size "
            f"{image.get('virtual-size', 0) / 2**30:.2f} GiB, on disk "
            f"{image.get('actual-size', 0) / 2**20:.1f} MiB"
            + (f", backing {image['backing-filename']}" if "backing-filename" in image else "")
        )
    emit(args.json, info, "\n".join(lines))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Exit 0 when clean (or uncheckable), 1 for leaks or an incomplete check; corruption
    is an error (VMImageCheckError)."""
    result = image_tool().check(Path(args.path), args.format)
    if result.status == 2:
        raise VMImageCheckError(args.path)
    data = {
        "path": args.path,
        "status": result.status,
        "corruptions": result.corruptions,
        "leaks": result.leaks,
    }
    verdict = {
        0: "no errors",
        1: "check incomplete",
        3: f"{result.leaks} leaked cluster(s), no corruption",
        63: "this format cannot be checked",
    }.get(result.status, "?")
    emit(args.json, data, f"{args.path}: {verdict}")
    return 0 if result.status in (0, 63) else 1


def cmd_convert(args: argparse.Namespace) -> int:
    convert_image(args.source, args.dest, args.output_format, compress=args.compress)
    emit(args.json, {"source": args.source, "dest": args.dest}, f"converted to {args.dest}")
    return 0


def cmd_resize(args: argparse.Namespace) -> int:
    resize_image(args.path, args.size, shrink=args.shrink)
    emit(args.json, {"path": args.path, "size": args.size}, f"resized {args.path}")
    return 0


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    image = commands.add_parser("image", help="create, inspect, check, convert, resize images")
    actions = image.add_subparsers(dest="image_command", required=True, metavar="ACTION")

    create = actions.add_parser("create", parents=[common], help="a new image (or an overlay)")
    create.add_argument("path")
    create.add_argument("--size", help="e.g. 10G (not needed for an overlay)")
    create.add_argument("-f", "--format", default="qcow2")
    create.add_argument("--cluster-size")
    create.add_argument("--backing", help="make an overlay on this image")
    create.add_argument("--backing-format", help="the backing image's format (required)")
    create.set_defaults(func=cmd_create)

    info = actions.add_parser("info", parents=[common], help="qemu-img info")
    info.add_argument("path")
    info.add_argument("--backing-chain", action="store_true")
    info.set_defaults(func=cmd_info)

    check = actions.add_parser("check", parents=[common], help="qemu-img check")
    check.add_argument("path")
    check.add_argument("-f", "--format")
    check.set_defaults(func=cmd_check)

    convert = actions.add_parser("convert", parents=[common], help="qemu-img convert")
    convert.add_argument("source")
    convert.add_argument("dest")
    convert.add_argument("-O", "--output-format", default="qcow2")
    convert.add_argument("-c", "--compress", action="store_true")
    convert.set_defaults(func=cmd_convert)

    resize = actions.add_parser("resize", parents=[common], help="qemu-img resize")
    resize.add_argument("path")
    resize.add_argument("size", help="10G, +1G, -1G")
    resize.add_argument("--shrink", action="store_true")
    resize.set_defaults(func=cmd_resize)
