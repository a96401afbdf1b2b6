"""What virtlib knows about disk images, whatever tool makes them: check results, sizes, formats.

The image driver (``qemu-img``, in ``virtlib.backends.qemu_img``) is found through
the registry (:func:`virtlib.registry.image_tool`) and must offer
:class:`ImageTool`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from virtlib.errors import VMParamsError

SIZE_RE = re.compile(r"^[0-9]+(\.[0-9]+)?[bBkKmMgGtTpPeE]?$")
FORMAT_RE = re.compile(r"^[a-z0-9]+$")

# qemu-img check's exit statuses (see qemu-img(1)).
CHECK_OK = 0
CHECK_INCOMPLETE = 1
CHECK_CORRUPT = 2
CHECK_LEAKS = 3
CHECK_UNSUPPORTED = 63


@dataclass(frozen=True)
class CheckResult:
    """What ``qemu-img check`` found; ``status`` is its exit status."""

    filename: str
    status: int
    corruptions: int
    leaks: int
    report: dict[str, Any]
    output: str

    @property
    def ok(self) -> bool:
        return self.status == CHECK_OK


def check_size(size: str) -> str:
    """A size qemu-img understands (``10G``, ``512M``, ``1048576``) or VMParamsError."""
    if not SIZE_RE.match(str(size).strip()):
        raise VMParamsError(f"invalid image size {size!r} (expected e.g. 10G, 512M, 1048576)")
    return str(size).strip()


def check_format(fmt: str) -> str:
    if not FORMAT_RE.match(fmt):
        raise VMParamsError(f"invalid image format {fmt!r}")
    return fmt


class ImageTool(Protocol):
    """The operations virtlib's image functions need from an image driver."""

    def create(
        self,
        path: Path,
        fmt: str,
        size: str | None,
        cluster_size: str | None = None,
        backing_file: Path | None = None,
        backing_format: str | None = None,
        options: dict[str, str] | None = None,
    ) -> Path: ...

    def info(self, path: Path, backing_chain: bool = False, force_share: bool = False) -> Any: ...

    def check(self, path: Path, fmt: str | None = None) -> CheckResult: ...

    def convert(
        self,
        src: Path,
        dst: Path,
        dst_format: str,
        src_format: str | None = None,
        compress: bool = False,
    ) -> Path: ...

    def resize(
        self, path: Path, size: str, fmt: str | None = None, shrink: bool = False
    ) -> None: ...

    def delete_snapshot(self, path: Path, name: str) -> None: ...

    def commit(self, top: Path, base: Path) -> None: ...
