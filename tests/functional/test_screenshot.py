"""Screenshots of the display: the bundled guest's screen shows its login prompt."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from functional_support import VMFactory

import virtlib
from virtlib.png import png_size
from virtlib.waiting import wait_for

Image = pytest.importorskip("PIL.Image")


def test_a_vnc_display_gives_a_screenshot_with_text(vm_factory: VMFactory, tmp_path: Path) -> None:
    vm = vm_factory(display="vnc")
    vm.wait_for_serial_login(timeout=120)
    assert vm.state is not None and len(vm.state.params["display_password"]) == 8
    assert "passwd" not in vm.definition()  # the password is not in what virtlib shows
    shot = tmp_path / "screen.png"

    def lit_pixels() -> int:
        vm.screenshot(shot)
        picture = Image.open(io.BytesIO(shot.read_bytes())).convert("L")
        return sum(1 for value in picture.tobytes() if value > 128)  # mode L: a byte a pixel

    # Text on the screen: the getty on tty1 ("virtlib-guest login:") lights some pixels, a
    # blank frame none.
    assert wait_for(lambda: lit_pixels() > 500, 60), "the screenshot shows no text"
    width, height = png_size(shot.read_bytes())
    assert width >= 640 and height >= 400


def test_no_display_no_screenshot(vm_factory: VMFactory, tmp_path: Path) -> None:
    vm = vm_factory()
    with pytest.raises(virtlib.VMNotSupportedError, match="display = vnc"):
        vm.screenshot(tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
