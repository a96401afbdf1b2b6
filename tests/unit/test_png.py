"""The PNG encoder for screenshots: pictures an independent decoder (Pillow) reads back."""

from __future__ import annotations

import io

import pytest

from virtlib.png import ImageFormatError, encode_rgb, png_size, ppm_to_png, to_png

Image = pytest.importorskip("PIL.Image")


def ppm(width: int, height: int, pixel: bytes, comment: bytes = b"") -> bytes:
    return b"P6\n" + comment + f"{width} {height}\n255\n".encode() + pixel * (width * height)


def test_a_ppm_becomes_a_png_with_the_same_pixels() -> None:
    width, height = 7, 3
    rows = bytes(range(width * height * 3))
    png = encode_rgb(width, height, rows)
    picture = Image.open(io.BytesIO(png))
    assert picture.size == (width, height) and picture.mode == "RGB"
    assert picture.tobytes() == rows
    assert png_size(png) == (width, height)


def test_ppm_with_a_comment_and_png_passthrough() -> None:
    png = ppm_to_png(ppm(4, 2, b"\x10\x20\x30", comment=b"# QEMU screendump\n"))
    picture = Image.open(io.BytesIO(png))
    assert picture.getpixel((3, 1)) == (0x10, 0x20, 0x30)
    assert to_png(png) == png


@pytest.mark.parametrize(
    "data",
    [b"", b"P3\n1 1\n255\n0 0 0\n", b"P6\n2 2\n65535\n" + b"\0" * 24, b"P6\n2 2\n255\n\0\0"],
)
def test_what_is_not_a_picture_is_said_so(data: bytes) -> None:
    with pytest.raises(ImageFormatError):
        to_png(data)
