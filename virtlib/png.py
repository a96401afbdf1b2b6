"""PNG from the screen dumps hypervisors return (PPM), with the standard library only.

A screenshot is a truecolour picture without transparency: a PNG encoder for that is a
page of code (the signature, IHDR, zlib-compressed scanlines in IDAT, IEND, each chunk
with its CRC-32), so virtlib carries one instead of depending on an imaging library for
a single conversion.  :func:`to_png` also passes PNG through unchanged (newer QEMU and
libvirt can dump PNG themselves).
"""

from __future__ import annotations

import re
import struct
import zlib

from virtlib.errors import VMError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PPM_HEADER = re.compile(rb"\AP6\s+(?:#[^\n]*\n\s*)*(\d+)\s+(\d+)\s+(\d+)\s")


class ImageFormatError(VMError):
    """The screen dump is not a picture virtlib can read."""


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_rgb(width: int, height: int, rgb: bytes) -> bytes:
    """A PNG of ``width`` x ``height`` pixels of 8-bit RGB (``rgb``: rows top to bottom)."""
    stride = width * 3
    if width <= 0 or height <= 0 or len(rgb) != stride * height:
        raise ImageFormatError(f"{len(rgb)} bytes are not {width}x{height} RGB pixels")
    rows = b"".join(b"\x00" + rgb[y * stride : (y + 1) * stride] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bit, truecolour
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows, 6))
        + _chunk(b"IEND", b"")
    )


def ppm_to_png(ppm: bytes) -> bytes:
    """A binary PPM (P6, maxval 255) as PNG."""
    match = _PPM_HEADER.match(ppm)
    if match is None:
        raise ImageFormatError("not a binary PPM (P6) picture")
    width, height, maxval = (int(g) for g in match.groups())
    if maxval != 255:
        raise ImageFormatError(f"PPM with maxval {maxval}: only 8-bit pictures are supported")
    pixels = ppm[match.end() : match.end() + width * height * 3]
    return encode_rgb(width, height, pixels)


def to_png(data: bytes) -> bytes:
    """A screen dump (PPM or PNG) as PNG."""
    if data.startswith(PNG_SIGNATURE):
        return data
    return ppm_to_png(data)


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's header."""
    if not png.startswith(PNG_SIGNATURE) or png[12:16] != b"IHDR":
        raise ImageFormatError("not a PNG picture")
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)
