"""Disk images from params: the seed's functions, over the raw QEMU (qemu-img) driver.

``get_image_filename``, ``create_image``, ``remove_image`` and ``check_image``
keep the seed's signatures and params (``image_name``, ``image_format``,
``image_size``, ``image_cluster_size``, ``image_raw_device``,
``qemu_img_binary``).  Path-level helpers (``image_info``, ``convert_image``,
``resize_image``, ``create_overlay``) serve the CLI and tests.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

from virtlib.errors import VMImageCheckError, VMImageMissingError, VMParamsError
from virtlib.image_types import (
    CHECK_CORRUPT,
    CHECK_INCOMPLETE,
    CHECK_LEAKS,
    CHECK_UNSUPPORTED,
    CheckResult,
    ImageTool,
    check_size,
)
from virtlib.params import Params
from virtlib.registry import image_tool
from virtlib.spec import DISK_FORMATS, image_filename, resolve_path

log = logging.getLogger(__name__)


class ImageCheckWarning(UserWarning):
    """qemu-img check found something that is not corruption (leaks, or an incomplete check)."""

    def __init__(self, result: CheckResult) -> None:
        self.result = result
        if result.status == CHECK_LEAKS:
            what = f"{result.leaks} leaked cluster(s); no data integrity problem was found"
        else:
            what = "the check did not complete; some bad data may have gone unnoticed"
        super().__init__(f"qemu-img check of {result.filename}: {what}")


def _params(params: dict[str, str]) -> Params:
    return params if isinstance(params, Params) else Params(params)


def qemu_img(params: dict[str, str], root_dir: str | Path = ".") -> ImageTool:
    """The qemu-img of ``qemu_img_binary``: a bare name is looked up on PATH, a path
    relative to ``root_dir``."""
    binary = _params(params).get("qemu_img_binary", "qemu-img")
    return image_tool(str(resolve_path(root_dir, binary)) if os.sep in binary else binary)


def get_image_filename(params: dict[str, str], root_dir: str | Path) -> str:
    """The image path for params: ``image_name`` itself for a raw device, else
    ``<root_dir>/<image_name>.<image_format>``."""
    return str(image_filename(_params(params), root_dir))


def create_image(params: dict[str, str], root_dir: str | Path) -> str:
    """Create the image params describe (``image_size`` default 10G); return its path.

    :raises VMParamsError: a bad size or format (nothing is created).
    :raises ImageError: qemu-img failed (a half-made file is removed).
    """
    p = _params(params)
    path = image_filename(p, root_dir)
    size = check_size(p.get("image_size", "10G"))
    fmt = p.get("image_format", "qcow2")
    if fmt not in DISK_FORMATS:
        raise VMParamsError(
            f"parameter 'image_format' must be one of {', '.join(DISK_FORMATS)}; got {fmt!r}"
        )
    qemu_img(p, root_dir).create(
        path,
        fmt,
        size,
        cluster_size=p.get("image_cluster_size") or None,
    )
    return str(path)


def remove_image(params: dict[str, str], root_dir: str | Path) -> None:
    """Remove the image file params describe, if it exists (never a raw device)."""
    p = _params(params)
    if p.get_boolean("image_raw_device"):
        log.debug("not removing raw device %s", p.get("image_name"))
        return
    path = image_filename(p, root_dir)
    log.debug("removing image file %s", path)
    if path.exists():
        path.unlink()
    else:
        log.debug("image file %s not found", path)


def check_image(params: dict[str, str], root_dir: str | Path) -> CheckResult | None:
    """Check the image with ``qemu-img check``.

    Returns the result, or None for a format qemu-img cannot check (raw).
    Leaked clusters (exit 3) and an incomplete check (exit 1) emit an
    :class:`ImageCheckWarning` the caller can catch or turn into an error.

    :raises VMImageMissingError: the image file does not exist.
    :raises VMImageCheckError: the image is corrupt (exit 2).
    """
    p = _params(params)
    path = image_filename(p, root_dir)
    if not path.exists():
        raise VMImageMissingError(str(path))
    fmt = p.get("image_format", "qcow2")
    if fmt == "raw" or p.get_boolean("image_raw_device"):
        log.debug("image %s is raw: nothing to check", path)
        return None
    result = qemu_img(p, root_dir).check(path, fmt)
    if result.status == CHECK_UNSUPPORTED:
        log.debug("qemu-img cannot check %s images: %s", fmt, path)
        return None
    if result.status == CHECK_CORRUPT:
        for line in result.output.splitlines():
            log.error("[qemu-img check] %s", line)
        raise VMImageCheckError(str(path))
    if result.status in (CHECK_LEAKS, CHECK_INCOMPLETE):
        warnings.warn(ImageCheckWarning(result), stacklevel=2)
    return result


def image_info(path: str | Path, backing_chain: bool = False) -> Any:
    """``qemu-img info --output=json`` of one image (``--force-share``: works on images in use)."""
    return image_tool().info(Path(path), backing_chain=backing_chain, force_share=True)


def convert_image(
    src: str | Path,
    dst: str | Path,
    dst_format: str = "qcow2",
    src_format: str | None = None,
    compress: bool = False,
) -> str:
    """Convert ``src`` into a new image ``dst``."""
    return str(image_tool().convert(Path(src), Path(dst), dst_format, src_format, compress))


def resize_image(path: str | Path, size: str, shrink: bool = False) -> None:
    """Resize an image (``10G``, ``+1G``; shrinking needs ``shrink=True``)."""
    image_tool().resize(Path(path), size, shrink=shrink)


def create_overlay(
    backing: str | Path, overlay: str | Path, backing_format: str, fmt: str = "qcow2"
) -> str:
    """A new ``fmt`` image whose reads fall through to ``backing`` (format given explicitly)."""
    path = image_tool().create(
        Path(overlay), fmt, None, backing_file=Path(backing), backing_format=backing_format
    )
    return str(path)
