"""Debian packages for the guest: resolve versions, download, extract, modules, libraries.

Nothing is installed on the host: ``apt-get download`` fetches the .debs into a private
directory and ``dpkg-deb -x`` unpacks them there.  Kernel modules and shared libraries are
found by reading the unpacked ELF files (:mod:`virtlib.guest.elf`), never the host's.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import posixpath
import re
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from virtlib.guest import elf
from virtlib.guest.image import GuestBuildError
from virtlib.guest.recipe import KERNEL_METAPACKAGE, LIBRARY_SOURCES, USERLAND_PACKAGES

Log = Callable[[str], None]

GUEST_ARCH = "amd64"

LIB_DIRS = (
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
)
"""Where the guest's dynamic loader looks for libraries (Debian amd64, no ld.so.cache)."""

APT_STATE_PATHS = (
    "/var/lib/apt/lists",
    "/etc/apt/sources.list",
    "/etc/apt/sources.list.d",
    "/etc/apt/preferences",
    "/etc/apt/preferences.d",
    "/etc/apt/apt.conf.d",
    "/var/lib/dpkg/status",
)
"""What decides apt's candidate versions: package lists, sources, pins, config, installed."""

HINTS = {
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg-deb": "dpkg",
    "dpkg": "dpkg",
    "cpio": "cpio",
    "openssl": "openssl",
    "zstd": "zstd",
    "mmdebstrap": "mmdebstrap",
    "mkfs.ext4": "e2fsprogs",
    "qemu-img": "qemu-utils",
}


class PackageFetchError(GuestBuildError):
    """apt could not say which packages to use, or could not download them."""


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run a command (argv list), return its stdout; failures raise GuestBuildError."""
    args = [os.fspath(a) for a in argv]
    full_env = {**os.environ, "LC_ALL": "C", **(env or {})}
    try:
        proc = subprocess.run(
            args, cwd=cwd, input=stdin, env=full_env, capture_output=True, text=True, check=False
        )
    except FileNotFoundError as exc:
        package = HINTS.get(os.path.basename(args[0]), "")
        hint = f" (install the Debian package {package!r})" if package else ""
        raise GuestBuildError(f"command not found: {args[0]}{hint}") from exc
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
        raise GuestBuildError(f"{' '.join(args)} failed (status {proc.returncode}): {detail}")
    return proc.stdout


def run_to_file(
    argv: Sequence[str | os.PathLike[str]],
    out: BinaryIO,
    *,
    cwd: Path | None = None,
    stdin: str | None = None,
) -> None:
    """Run a command with its stdout going to ``out``; failures raise GuestBuildError."""
    args = [os.fspath(a) for a in argv]
    try:
        proc = subprocess.run(
            args,
            cwd=cwd,
            input=None if stdin is None else stdin.encode(),
            stdout=out,
            stderr=subprocess.PIPE,
            env={**os.environ, "LC_ALL": "C"},
            check=False,
        )
    except FileNotFoundError as exc:
        raise GuestBuildError(f"command not found: {args[0]}") from exc
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip()[-2000:]
        raise GuestBuildError(f"{' '.join(args)} failed (status {proc.returncode}): {detail}")


# --- apt: which versions ------------------------------------------------------


@dataclass(frozen=True)
class ResolvedPackages:
    """The exact Debian packages a build uses (apt's candidate versions)."""

    kernel_package: str
    versions: tuple[tuple[str, str], ...]
    """(package, version), sorted by package."""
    arch: str = "amd64"

    def as_dict(self) -> dict[str, str]:
        """Package name -> version."""
        return dict(self.versions)

    def to_json(self) -> dict[str, object]:
        """JSON-able form (see :meth:`from_json`)."""
        return {
            "kernel_package": self.kernel_package,
            "packages": self.as_dict(),
            "arch": self.arch,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> ResolvedPackages:
        """Inverse of :meth:`to_json`; raises ValueError on malformed data."""
        kernel = data.get("kernel_package")
        packages = data.get("packages")
        arch = data.get("arch", "amd64")
        if not isinstance(kernel, str) or not isinstance(packages, dict):
            raise ValueError("malformed package resolution")
        if not isinstance(arch, str) or kernel not in packages:
            raise ValueError("malformed package resolution")
        versions = tuple(sorted((str(k), str(v)) for k, v in packages.items()))
        return cls(kernel, versions, arch)


def parse_control(text: str) -> list[dict[str, str]]:
    """Parse deb822 stanzas (``apt-cache show`` output) into dicts."""
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        if not line.strip():
            if current:
                stanzas.append(current)
            current, last = {}, ""
        elif line[0] in " \t":
            if last:
                current[last] += "\n" + line.strip()
        else:
            key, _, value = line.partition(":")
            last = key.strip()
            current[last] = value.strip()
    if current:
        stanzas.append(current)
    return stanzas


def parse_depends(value: str) -> list[list[str]]:
    """``a (>= 1) | b, c:any`` -> ``[["a", "b"], ["c"]]`` (names only)."""
    groups: list[list[str]] = []
    for group in value.split(","):
        names = []
        for alternative in group.split("|"):
            name = re.split(r"[\s(\[<]", alternative.strip(), maxsplit=1)[0]
            name = name.split(":", 1)[0]
            if name:
                names.append(name)
        if names:
            groups.append(names)
    return groups


def is_library_package(name: str) -> bool:
    """Debian's shared-library packages (what a binary's DT_NEEDED may come from)."""
    return name.startswith("lib") or name == "zlib1g"


def native_arch() -> str:
    """``dpkg --print-architecture``."""
    return run(["dpkg", "--print-architecture"]).strip()


def apt_show(names: Iterable[str], arch: str) -> dict[str, dict[str, str]]:
    """apt's candidate record of each package; names apt does not know are left out."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return {}
    try:
        text = run(["apt-cache", "show", "--no-all-versions", *wanted])
    except GuestBuildError:
        if len(wanted) == 1:
            return {}
        found: dict[str, dict[str, str]] = {}
        for name in wanted:
            found.update(apt_show([name], arch))
        return found
    records: dict[str, dict[str, str]] = {}
    for stanza in parse_control(text):
        name = stanza.get("Package", "")
        if name in wanted and stanza.get("Architecture") in (arch, "all"):
            records.setdefault(name, stanza)
    return records


def resolve_packages(log: Log | None = None) -> ResolvedPackages:
    """Ask apt for the candidate versions of everything the guest is made of.

    The kernel metapackage is resolved to the versioned image package it depends on; the
    library dependencies of :data:`LIBRARY_SOURCES` are followed (library packages only).
    """
    try:
        return _resolve_packages(log)
    except PackageFetchError:
        raise
    except GuestBuildError as exc:
        raise PackageFetchError(str(exc)) from exc


def _resolve_packages(log: Log | None) -> ResolvedPackages:
    arch = native_arch()
    if arch != GUEST_ARCH:
        raise GuestBuildError(f"the test guest is {GUEST_ARCH}; this host's dpkg is {arch}")
    meta = apt_show([KERNEL_METAPACKAGE], arch).get(KERNEL_METAPACKAGE)
    if meta is None:
        raise PackageFetchError(f"apt does not know {KERNEL_METAPACKAGE} (run apt-get update?)")
    kernel_package = next(
        (
            name
            for group in parse_depends(meta.get("Depends", ""))
            for name in group
            if name.startswith("linux-image-")
        ),
        None,
    )
    if kernel_package is None:
        raise GuestBuildError(f"{KERNEL_METAPACKAGE} depends on no linux-image package")
    roots = [kernel_package, *USERLAND_PACKAGES]
    records = apt_show(roots, arch)
    missing = [name for name in roots if name not in records]
    if missing:
        raise PackageFetchError(f"apt has no candidate for {', '.join(missing)}")
    pending = list(LIBRARY_SOURCES)
    expanded: set[str] = set()
    while pending:
        wanted: list[str] = []
        for name in pending:
            if name in expanded:
                continue
            expanded.add(name)
            record = records[name]
            deps = record.get("Pre-Depends", "") + "," + record.get("Depends", "")
            for group in parse_depends(deps):
                # The first alternative apt knows (alternatives of libraries are rare).
                choice = next((n for n in group if n in records), group[0])
                if is_library_package(choice) and choice not in records:
                    wanted.append(choice)
        records.update(apt_show(wanted, arch))
        pending = [name for name in records if name not in expanded and is_library_package(name)]
    versions = tuple(sorted((name, rec["Version"]) for name, rec in records.items()))
    if log:
        log("packages: " + ", ".join(f"{n}={v}" for n, v in versions))
    return ResolvedPackages(kernel_package, versions, arch)


def apt_state_fingerprint(paths: Sequence[str] = APT_STATE_PATHS) -> str:
    """A hash of the names, sizes and mtimes of apt's state files (cheap: stat only).

    It changes whenever ``apt-get update`` fetches new lists, sources or pins change or a
    package is installed, i.e. whenever apt's candidate versions may have changed.
    """
    digest = hashlib.sha256()
    for path in paths:
        entries = [path]
        if os.path.isdir(path):
            entries = sorted(
                os.path.join(path, name)
                for name in os.listdir(path)
                if name != "lock" and not os.path.isdir(os.path.join(path, name))
            )
        for entry in entries:
            try:
                info = os.stat(entry)
            except OSError:
                digest.update(f"{entry}:-\n".encode())
                continue
            digest.update(f"{entry}:{info.st_size}:{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


# --- downloading and unpacking ------------------------------------------------


def download(resolved: ResolvedPackages, dest: Path, log: Log | None = None) -> dict[str, Path]:
    """``apt-get download`` the exact versions into ``dest``; returns package -> .deb."""
    dest.mkdir(parents=True, exist_ok=True)
    argv = ["apt-get", "download", "-q"]
    if os.geteuid() == 0:
        # apt's _apt user cannot write into our private directory: download as root.
        argv += ["-o", "APT::Sandbox::User=root"]
    argv += [f"{name}={version}" for name, version in resolved.versions]
    try:
        run(argv, cwd=dest)
    except GuestBuildError as exc:
        raise PackageFetchError(f"{exc} (is the package list stale? try apt-get update)") from exc
    debs: dict[str, Path] = {}
    wanted = resolved.as_dict()
    for deb in sorted(dest.glob("*.deb")):
        name, version = run(["dpkg-deb", "-f", deb, "Package", "Version"]).splitlines()[:2]
        name = name.partition(":")[2].strip()
        version = version.partition(":")[2].strip()
        if wanted.get(name) == version:
            debs[name] = deb
    missing = sorted(set(wanted) - set(debs))
    if missing:
        raise PackageFetchError(f"apt-get download did not fetch {', '.join(missing)}")
    if log:
        size = sum(deb.stat().st_size for deb in debs.values())
        log(f"downloaded {len(debs)} packages ({size / 2**20:.1f} MiB)")
    return debs


def extract(debs: Iterable[Path], dest: Path) -> None:
    """``dpkg-deb -x`` each package into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        run(["dpkg-deb", "-x", deb, dest])


# --- paths inside an unpacked tree --------------------------------------------


def resolve_in_root(root: Path, path: str, _depth: int = 0) -> str | None:
    """Follow symlinks of guest path ``path`` inside ``root``; the real file's guest path."""
    if _depth > 40:
        raise GuestBuildError(f"too many levels of symbolic links at {path}")
    parts = PurePosixPath(posixpath.normpath(path)).parts[1:]
    current = "/"
    for index, part in enumerate(parts):
        candidate = posixpath.join(current, part)
        host = root / candidate.lstrip("/")
        if host.is_symlink():
            target = os.readlink(host)
            base = target if target.startswith("/") else posixpath.join(current, target)
            rest = posixpath.join(base, *parts[index + 1 :])
            return resolve_in_root(root, posixpath.normpath(rest), _depth + 1)
        current = candidate
    return current if (root / current.lstrip("/")).is_file() else None


def host_path(root: Path, guest_path: str) -> Path:
    """Where guest path ``guest_path`` is in the tree ``root``."""
    return root / guest_path.lstrip("/")


# --- kernel -----------------------------------------------------------------------


@dataclass(frozen=True)
class Kernel:
    """An unpacked kernel package."""

    release: str
    vmlinuz: Path
    moddir: Path


def find_kernel(root: Path) -> Kernel:
    """The vmlinuz and module directory of the unpacked kernel package in ``root``."""
    images = sorted((root / "boot").glob("vmlinuz-*"))
    if len(images) != 1:
        raise GuestBuildError(f"expected one vmlinuz in the kernel package, found {images}")
    release = images[0].name.removeprefix("vmlinuz-")
    for base in ("lib/modules", "usr/lib/modules"):
        moddir = root / base / release
        if moddir.is_dir():
            return Kernel(release, images[0], moddir)
    raise GuestBuildError(f"no modules directory for kernel {release}")


MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.gz", ".ko.zst")


def module_name(filename: str) -> str:
    """``virtio-rng.ko.xz`` -> ``virtio_rng`` (the kernel treats - and _ alike)."""
    for suffix in MODULE_SUFFIXES:
        if filename.endswith(suffix):
            return filename[: -len(suffix)].replace("-", "_")
    raise ValueError(f"not a kernel module: {filename}")


def index_modules(moddir: Path) -> dict[str, Path]:
    """Module name -> file, for every module of the kernel."""
    index: dict[str, Path] = {}
    for dirpath, _dirs, files in os.walk(moddir):
        for filename in files:
            if filename.endswith(MODULE_SUFFIXES):
                index[module_name(filename)] = Path(dirpath) / filename
    return index


def builtin_modules(moddir: Path) -> set[str]:
    """Names of the modules built into the kernel (``modules.builtin``)."""
    path = moddir / "modules.builtin"
    if not path.exists():
        return set()
    return {module_name(line.rsplit("/", 1)[-1]) for line in path.read_text().split()}


def read_module(path: Path) -> bytes:
    """A module's ELF image, decompressed (busybox insmod wants plain .ko files)."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        proc = subprocess.run(["zstd", "-dc", path], capture_output=True, check=False)
        if proc.returncode != 0:
            raise GuestBuildError(f"cannot decompress {path} (install zstd)")
        return proc.stdout
    return data


def module_load_order(
    required: Sequence[str],
    optional: Sequence[str],
    index: Mapping[str, Path],
    builtin: set[str],
    log: Log | None = None,
) -> list[tuple[str, bytes]]:
    """Modules to insmod, each after its dependencies; built-in ones are skipped."""
    order: list[tuple[str, bytes]] = []
    done: set[str] = set()

    def visit(name: str, chain: tuple[str, ...], must: bool) -> None:
        name = name.replace("-", "_")
        if name in done:
            return
        if name in chain:
            raise GuestBuildError(f"module dependency loop: {' -> '.join((*chain, name))}")
        if name in builtin:
            done.add(name)
            if log:
                log(f"module {name} is built into the kernel")
            return
        path = index.get(name)
        if path is None:
            if must:
                raise GuestBuildError(f"the kernel has no module {name}")
            if log:
                log(f"module {name} not available; skipped")
            done.add(name)
            return
        data = read_module(path)
        try:
            depends = elf.module_depends(data)
        except elf.ELFError as exc:
            raise GuestBuildError(f"{path}: {exc}") from exc
        for dep in depends:
            visit(dep, (*chain, name), True)
        done.add(name)
        order.append((name, data))

    for name in required:
        visit(name, (), True)
    for name in optional:
        visit(name, (), False)
    return order


# --- shared libraries ---------------------------------------------------------


def library_closure(root: Path, binaries: Sequence[str]) -> dict[str, str]:
    """Files the guest needs to run ``binaries``: guest path -> real file's guest path.

    Includes the binaries, their ELF interpreter and every DT_NEEDED library, recursively,
    each placed where the guest's dynamic loader will look (the first of :data:`LIB_DIRS`
    that has it in the unpacked packages).
    """
    files: dict[str, str] = {}
    queue = list(binaries)
    while queue:
        path = queue.pop()
        if path in files:
            continue
        real = resolve_in_root(root, path)
        if real is None:
            raise GuestBuildError(f"{path} is not in the unpacked packages")
        files[path] = real
        data = host_path(root, real).read_bytes()
        try:
            info = elf.dynamic_info(data)
        except elf.ELFError as exc:
            raise GuestBuildError(f"{path}: {exc}") from exc
        if info.interpreter and info.interpreter not in files:
            queue.append(info.interpreter)
        origin = posixpath.dirname(path)
        search = [p.replace("$ORIGIN", origin) for p in info.runpath] + list(LIB_DIRS)
        for soname in info.needed:
            found = next(
                (
                    posixpath.join(d, soname)
                    for d in search
                    if resolve_in_root(root, posixpath.join(d, soname)) is not None
                ),
                None,
            )
            if found is None:
                raise GuestBuildError(f"{path} needs {soname}, which no package provides")
            queue.append(found)
    return files


def compiled_sftp_server_paths(dropbear: bytes) -> list[str]:
    """The sftp-server path(s) compiled into dropbear (like ``strings | grep sftp-server``)."""
    pattern = re.compile(r"/[\w./+-]*sftp-server")
    return [s for s in elf.strings(dropbear) if pattern.fullmatch(s)]
