"""The raw QEMU driver for images: ``qemu-img`` run as an argv list, JSON output parsed.

Every call is ``[binary, subcommand, ...]``; nothing goes through a shell.  A
failed command raises :class:`~virtlib.errors.ImageError` carrying the argv,
status and qemu-img's message.  A failed ``create`` removes the file it was
making, so bad input leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from virtlib.errors import ImageError, VMImageMissingError, VMParamsError
from virtlib.image_types import (
    CHECK_CORRUPT,
    CHECK_INCOMPLETE,
    CHECK_LEAKS,
    CHECK_OK,
    CHECK_UNSUPPORTED,
    CheckResult,
    check_format,
    check_size,
)


class QemuImg:
    """One qemu-img binary."""

    def __init__(self, binary: str = "qemu-img") -> None:
        resolved = shutil.which(binary)
        if resolved is None:
            raise VMParamsError(f"qemu-img binary not found: {binary!r}")
        self.binary = resolved

    def run(
        self, *args: str, ok_statuses: tuple[int, ...] = (0,)
    ) -> subprocess.CompletedProcess[str]:
        argv = [self.binary, *args]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode not in ok_statuses:
            raise ImageError(argv, proc.returncode, proc.stderr or proc.stdout)
        return proc

    def create(
        self,
        path: Path,
        fmt: str,
        size: str | None,
        cluster_size: str | None = None,
        backing_file: Path | None = None,
        backing_format: str | None = None,
        options: dict[str, str] | None = None,
    ) -> Path:
        """Create an image (an overlay when ``backing_file`` is given: its format is explicit).

        The image is made under a temporary name in the same directory and renamed
        into place, so a failure leaves neither a half-made file nor (qemu-img
        deletes its target on some failures) a damaged earlier image.
        """
        opts = dict(options or {})
        if cluster_size:
            opts["cluster_size"] = check_size(cluster_size)
        for key, value in opts.items():
            if "," in key or "," in str(value) or "=" in key:
                raise VMParamsError(f"invalid image option {key}={value!r}")
        args = ["create", "-q", "-f", check_format(fmt)]
        if backing_file is not None:
            if not backing_format:
                raise VMParamsError("an overlay needs the backing file's format (backing_format)")
            if not backing_file.exists():
                raise VMImageMissingError(str(backing_file))
            args += ["-b", str(backing_file.resolve()), "-F", check_format(backing_format)]
        if opts:
            args += ["-o", ",".join(f"{k}={v}" for k, v in opts.items())]
        size_arg = [check_size(size)] if size is not None else []
        if not path.parent.is_dir():
            raise VMParamsError(f"cannot create {path}: {path.parent} is not a directory")
        fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        temp = Path(temp_name)
        try:
            self.run(*args, str(temp), *size_arg)
            os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)
        return path

    def info(self, path: Path, backing_chain: bool = False, force_share: bool = False) -> Any:
        """``qemu-img info --output=json`` as a dict (a list of dicts with ``backing_chain``)."""
        _require(path)
        args = ["info", "--output=json"]
        if backing_chain:
            args.append("--backing-chain")
        if force_share:
            args.append("--force-share")
        return json.loads(self.run(*args, str(path)).stdout)

    def check(self, path: Path, fmt: str | None = None) -> CheckResult:
        """``qemu-img check --output=json``; statuses 0-3 and 63 are results, not errors."""
        _require(path)
        args = ["check", "--output=json"]
        if fmt:
            args += ["-f", check_format(fmt)]
        ok = (CHECK_OK, CHECK_INCOMPLETE, CHECK_CORRUPT, CHECK_LEAKS, CHECK_UNSUPPORTED)
        proc = self.run(*args, str(path), ok_statuses=ok)
        try:
            report = json.loads(proc.stdout) if proc.stdout.strip() else {}
        except json.JSONDecodeError:
            report = {}
        return CheckResult(
            filename=str(path),
            status=proc.returncode,
            corruptions=int(report.get("corruptions", 0)),
            leaks=int(report.get("leaks", 0)),
            report=report,
            output=(proc.stdout + proc.stderr).strip(),
        )

    def convert(
        self,
        src: Path,
        dst: Path,
        dst_format: str,
        src_format: str | None = None,
        compress: bool = False,
    ) -> Path:
        """Copy ``src`` into a new image ``dst`` of ``dst_format``; a failure removes ``dst``."""
        _require(src)
        args = ["convert", "-q", "-O", check_format(dst_format)]
        if src_format:
            args += ["-f", check_format(src_format)]
        if compress:
            args.append("-c")
        existed = dst.exists()
        try:
            self.run(*args, str(src), str(dst))
        except ImageError:
            if not existed:
                dst.unlink(missing_ok=True)
            raise
        return dst

    def resize(self, path: Path, size: str, fmt: str | None = None, shrink: bool = False) -> None:
        """Grow (or, with ``shrink``, shrink) an image; ``+1G``/``-1G`` are relative."""
        _require(path)
        sign = size[:1] if size[:1] in "+-" else ""
        args = ["resize", "-q"]
        if fmt:
            args += ["-f", check_format(fmt)]
        if shrink:
            args.append("--shrink")
        self.run(*args, str(path), sign + check_size(size[len(sign) :]))

    def delete_snapshot(self, path: Path, name: str) -> None:
        """Delete the internal snapshot ``name`` of a qcow2 image no VM has open."""
        _require(path)
        self.run("snapshot", "-d", name, str(path))

    def commit(self, top: Path, base: Path) -> None:
        """Write the data of ``top`` and every overlay between it and ``base`` into ``base``
        (images no VM has open); ``top`` stays as it is."""
        _require(top)
        _require(base)
        self.run("commit", "-q", "-b", str(base), str(top))


def _require(path: Path) -> None:
    if not path.exists():
        raise VMImageMissingError(str(path))
