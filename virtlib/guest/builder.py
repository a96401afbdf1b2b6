"""Build the test guest (kernel + initramfs) and keep it in a cache, one directory per key.

Cache layout (``default_cache_dir()``)::

    resolved.json          apt's resolution, valid while apt's state files are unchanged
    .lock                  flock()ed while building
    <key[:16]>/vmlinuz     the Debian cloud kernel
    <key[:16]>/initrd.img  busybox + dropbear + sftp-server + modules (gzip'd newc cpio)
    <key[:16]>/manifest.json

The build key hashes the recipe (:func:`~virtlib.guest.recipe.recipe_text`, which includes
RECIPE_VERSION) and the exact package versions.  Everything is world-readable (dirs 0755,
files 0644): libvirt's QEMU runs as ``libvirt-qemu`` and must read the kernel and initrd.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import gzip
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from virtlib.guest import elf, recipe
from virtlib.guest import packages as pkgs
from virtlib.guest.image import GuestBuildError, GuestImage, HostKey, sha256_fingerprint

Log = Callable[[str], None]

ENV_CACHE_DIR = "VIRTLIB_CACHE_DIR"
MANIFEST = "manifest.json"
RESOLUTION = "resolved.json"
KERNEL_FILE = "vmlinuz"
INITRD_FILE = "initrd.img"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
MANIFEST_FORMAT = 1
RESOLUTION_FORMAT = 1


def _quiet(_message: str) -> None:
    """The default log: say nothing."""


def default_cache_dir() -> Path:
    """``$VIRTLIB_CACHE_DIR``; else ``/var/cache/virtlib/guest`` for root (QEMU runs as
    libvirt-qemu and cannot enter /root); else ``$XDG_CACHE_HOME/virtlib/guest`` or
    ``~/.cache/virtlib/guest``."""
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/virtlib/guest")
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "virtlib" / "guest"


def compute_build_key(resolved: pkgs.ResolvedPackages, recipe_text: str) -> str:
    """sha256 over the recipe text and the exact package versions (hex)."""
    data = {
        "recipe_version": recipe.RECIPE_VERSION,
        "recipe": recipe_text,
        "arch": resolved.arch,
        "kernel_package": resolved.kernel_package,
        "packages": [list(item) for item in sorted(resolved.versions)],
    }
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def build_dir_name(build_key: str) -> str:
    """The cache subdirectory of a build."""
    return build_key[:16]


def _resolution_inputs() -> str:
    """What, besides apt's state, decides the package resolution."""
    return json.dumps(
        [
            recipe.RECIPE_VERSION,
            recipe.KERNEL_METAPACKAGE,
            recipe.USERLAND_PACKAGES,
            recipe.LIBRARY_SOURCES,
        ]
    )


# --- small file helpers ---------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2, sort_keys=True)
            out.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def ensure_public_dir(path: Path, log: Log = _quiet) -> None:
    """Create ``path`` (and missing parents) with mode 0755; warn about closed ancestors."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
            os.chmod(directory, 0o755)  # noqa: S103 - libvirt-qemu must traverse it
    for ancestor in [path, *path.parents]:
        mode = ancestor.stat().st_mode
        if not mode & stat.S_IXOTH:
            log(
                f"warning: {ancestor} is not world-traversable; libvirt's QEMU "
                "(user libvirt-qemu) will not be able to read the guest kernel"
            )
            break


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive flock on ``path`` (created if needed) for the duration."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError:
        fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# --- resolution cache -----------------------------------------------------------


def resolve_inputs(cache_dir: Path, log: Log = _quiet) -> pkgs.ResolvedPackages:
    """The package versions to build from, running apt only when apt's state changed.

    apt's answer is kept in ``resolved.json`` with a fingerprint of apt's state files
    (names, sizes and mtimes of /var/lib/apt/lists/*, sources, pins, apt.conf.d and
    dpkg's status; see :func:`~virtlib.guest.packages.apt_state_fingerprint`).  While the
    fingerprint is unchanged the candidate versions cannot have changed, so a warm call
    costs a few stat() calls instead of several ``apt-cache`` runs.
    """
    fingerprint = pkgs.apt_state_fingerprint()
    inputs = _resolution_inputs()
    cached = _read_json(cache_dir / RESOLUTION)
    if (
        cached
        and cached.get("format") == RESOLUTION_FORMAT
        and cached.get("apt_state") == fingerprint
        and cached.get("inputs") == inputs
    ):
        with contextlib.suppress(ValueError):
            return pkgs.ResolvedPackages.from_json(cached)
    log("resolving package versions with apt-cache")
    resolved = pkgs.resolve_packages(log)
    data = {"format": RESOLUTION_FORMAT, "apt_state": fingerprint, "inputs": inputs}
    data.update(resolved.to_json())
    with contextlib.suppress(OSError):  # a read-only cache still works, only slower
        _write_json_atomic(cache_dir / RESOLUTION, data)
    return resolved


# --- manifest --------------------------------------------------------------------


def image_from_manifest(directory: Path, build_key: str | None = None) -> GuestImage | None:
    """The GuestImage described by ``directory/manifest.json``; None if absent or stale."""
    data = _read_json(directory / MANIFEST)
    if data is None or data.get("format") != MANIFEST_FORMAT:
        return None
    if build_key is not None and data.get("build_key") != build_key:
        return None
    try:
        kernel = directory / str(data["kernel"])
        initrd = directory / str(data["initrd"])
        keys = tuple(
            HostKey(str(k["type"]), str(k["key"]), str(k["fingerprint"])) for k in data["host_keys"]
        )
        image = GuestImage(
            kernel=kernel,
            initrd=initrd,
            username=str(data["username"]),
            password=str(data["password"]),
            kernel_args=str(data["kernel_args"]),
            host_keys=keys,
            shell_prompt=str(data["shell_prompt"]),
            build_key=str(data["build_key"]),
            login_prompt=str(data["login_prompt"]),
            hostname=str(data["hostname"]),
            kernel_release=str(data["kernel_release"]),
            directory=directory,
        )
    except (KeyError, TypeError):
        return None
    if not (kernel.is_file() and initrd.is_file()):
        return None
    return image


# --- building ---------------------------------------------------------------------


def hash_password(password: str, busybox: Path | None = None) -> str:
    """A sha512-crypt hash (``$6$...``); the password goes on stdin, never on argv."""
    try:
        out = pkgs.run(["openssl", "passwd", "-6", "-stdin"], stdin=password + "\n")
    except GuestBuildError:
        if busybox is None:
            raise
        out = pkgs.run([busybox, "mkpasswd", "-m", "sha512"], stdin=password + "\n")
    hashed = out.strip()
    if not re.fullmatch(r"\$6\$[./0-9A-Za-z]+\$[./0-9A-Za-z]+", hashed):
        raise GuestBuildError("password hashing gave no sha512-crypt hash")
    return hashed


KEY_SIZES = {"ecdsa": "256", "rsa": "2048"}


def generate_host_keys(userland: Path, dest: Path) -> list[HostKey]:
    """Make dropbear host keys with the packaged ``dropbearkey`` (run by its own loader)."""
    tool = "/usr/bin/dropbearkey"
    real = pkgs.resolve_in_root(userland, tool)
    if real is None:
        raise GuestBuildError("dropbear-bin has no dropbearkey")
    info = elf.dynamic_info(pkgs.host_path(userland, real).read_bytes())
    loader = pkgs.resolve_in_root(userland, info.interpreter or "")
    if loader is None:
        raise GuestBuildError(f"dropbearkey's loader {info.interpreter} is not unpacked")
    libpath = ":".join(str(pkgs.host_path(userland, d)) for d in pkgs.LIB_DIRS)
    prefix: list[str | os.PathLike[str]] = [
        pkgs.host_path(userland, loader),
        "--library-path",
        libpath,
        pkgs.host_path(userland, real),
    ]
    keys: list[HostKey] = []
    for keytype in recipe.HOST_KEY_TYPES:
        path = dest / f"dropbear_{keytype}_host_key"
        size = ["-s", KEY_SIZES[keytype]] if keytype in KEY_SIZES else []
        pkgs.run([*prefix, "-t", keytype, *size, "-f", path])
        os.chmod(path, 0o600)
        out = pkgs.run([*prefix, "-y", "-f", path])
        match = re.search(r"^((?:ssh|ecdsa)-\S+) ([A-Za-z0-9+/=]+)", out, re.MULTILINE)
        if match is None:
            raise GuestBuildError(f"no public key in dropbearkey's output: {out!r}")
        keys.append(HostKey(match[1], match[2], sha256_fingerprint(match[2])))
    return keys


ASK_TERMINAL = b"\x1b[6n\x00"


def patch_busybox(data: bytes) -> tuple[bytes, bool]:
    """Silence busybox's "where is the cursor?" query (ESC[6n) after each shell prompt.

    Line editing prints it right after the prompt; nobody answers it on a serial console,
    so every prompt would end in a stray escape sequence.  Turning its first byte into NUL
    makes ``fputs`` print nothing (the string is shared with vi's terminal-size query,
    which then just goes unasked).  Returns the data and whether it was patched.
    """
    if data.count(ASK_TERMINAL) != 1:
        return data, False
    index = data.index(ASK_TERMINAL)
    return data[:index] + b"\x00" + data[index + 1 :], True


def _write(path: Path, data: bytes | str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    os.chmod(path, mode)


def _symlink(root: Path, link: str, target: str) -> None:
    path = pkgs.host_path(root, link)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() and not path.is_symlink():
        os.symlink(target, path)


def _cpio_gzip(root: Path, dest: Path, workdir: Path) -> None:
    """``cpio -o -H newc`` of ``root`` (everything owned by root:root), gzip'd to ``dest``."""
    names: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, root)
        for name in sorted(dirnames + filenames):
            names.append(name if rel == "." else os.path.join(rel, name))
    archive = workdir / "initramfs.cpio"
    with archive.open("wb") as out:
        pkgs.run_to_file(
            ["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"],
            out,
            cwd=root,
            stdin="\n".join(names) + "\n",
        )
    with (
        archive.open("rb") as src,
        dest.open("wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz,
    ):
        shutil.copyfileobj(src, gz, 1 << 20)
    os.chmod(dest, 0o644)


def _stage_busybox(userland: Path, root: Path, log: Log) -> tuple[Path, bool]:
    """busybox and a link for each applet; returns the unpacked busybox and if patched."""
    busybox = userland / "bin" / "busybox"
    if not busybox.is_file():
        raise GuestBuildError("busybox-static has no /bin/busybox")
    data, patched = patch_busybox(busybox.read_bytes())
    if not patched:
        log("warning: busybox's cursor-position query not found; prompts carry ESC[6n")
    _write(root / "bin" / "busybox", data, 0o755)
    # The static busybox of the package runs anywhere; it lists its own applets.
    for applet in pkgs.run([busybox, "--list-full"]).split():
        _symlink(root, "/" + applet, "/bin/busybox")
    return busybox, patched


def _stage_ssh(userland: Path, root: Path) -> list[str]:
    """dropbear, sftp-server, their libraries and the loader; returns dropbear's sftp paths."""
    placed: dict[str, str] = {}  # real file -> where its first copy went
    closure = pkgs.library_closure(userland, recipe.GUEST_BINARIES)
    for guest_path, real in sorted(closure.items()):
        if real in placed:  # e.g. /lib64/ld-linux-x86-64.so.2: link, do not copy twice
            _symlink(root, guest_path, placed[real])
            continue
        source = pkgs.host_path(userland, real)
        mode = stat.S_IMODE(source.stat().st_mode) | 0o444
        _write(pkgs.host_path(root, guest_path), source.read_bytes(), mode)
        placed[real] = guest_path
    dropbear = pkgs.host_path(userland, "/usr/sbin/dropbear").read_bytes()
    sftp_paths = pkgs.compiled_sftp_server_paths(dropbear)
    if not sftp_paths:
        raise GuestBuildError("cannot find the sftp-server path compiled into dropbear")
    for sftp in sftp_paths:
        if sftp != SFTP_SERVER:
            _symlink(root, sftp, SFTP_SERVER)
    return sftp_paths


def _stage_modules(kernel: pkgs.Kernel, root: Path, log: Log) -> list[str]:
    """The kernel modules, decompressed, and /etc/modules (load order); returns the names."""
    modules = pkgs.module_load_order(
        recipe.REQUIRED_MODULES,
        recipe.OPTIONAL_MODULES,
        pkgs.index_modules(kernel.moddir),
        pkgs.builtin_modules(kernel.moddir),
        log,
    )
    for name, data in modules:
        _write(root / "lib" / "modules" / f"{name}.ko", data, 0o644)
    names = [name for name, _ in modules]
    _write(root / "etc" / "modules", "".join(f"{name}\n" for name in names), 0o644)
    return names


class _Staged(NamedTuple):
    modules: list[str]
    sftp_paths: list[str]
    busybox_patched: bool
    host_keys: list[HostKey]


def _stage_root(userland: Path, root: Path, kernel: pkgs.Kernel, log: Log) -> _Staged:
    """The guest's root directory from the recipe and the unpacked packages."""
    for directory, mode in recipe.DIRECTORIES:
        path = pkgs.host_path(root, directory)
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
    busybox, patched = _stage_busybox(userland, root, log)
    sftp_paths = _stage_ssh(userland, root)
    modules = _stage_modules(kernel, root, log)
    for item in recipe.STATIC_FILES:
        _write(pkgs.host_path(root, item.path), item.content, item.mode)
    for link, target in recipe.SYMLINKS:
        _symlink(root, link, target)
    passwd = recipe.passwd_file(hash_password(recipe.DEFAULT_PASSWORD, busybox))
    _write(root / "etc" / "passwd", passwd, 0o644)
    host_keys = generate_host_keys(userland, root / "etc" / "dropbear")
    return _Staged(modules, sftp_paths, patched, host_keys)


def build_guest(
    dest: Path, resolved: pkgs.ResolvedPackages, build_key: str, log: Log = _quiet
) -> dict[str, Any]:
    """Build kernel, initrd and manifest into the existing directory ``dest``."""
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="virtlib-guest-build-"))
    try:
        debs = pkgs.download(resolved, work / "debs", log)
        kernel_root, userland, root = work / "kernel", work / "userland", work / "root"
        pkgs.extract([debs[resolved.kernel_package]], kernel_root)
        pkgs.extract([d for n, d in debs.items() if n != resolved.kernel_package], userland)
        log(f"unpacked packages ({time.monotonic() - started:.1f} s)")

        kernel = pkgs.find_kernel(kernel_root)
        staged = _stage_root(userland, root, kernel, log)
        modules, sftp_paths, patched, host_keys = staged
        password = recipe.DEFAULT_PASSWORD

        shutil.copyfile(kernel.vmlinuz, dest / KERNEL_FILE)
        os.chmod(dest / KERNEL_FILE, 0o644)
        _cpio_gzip(root, dest / INITRD_FILE, work)
        seconds = time.monotonic() - started
        manifest: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "build_key": build_key,
            "recipe_version": recipe.RECIPE_VERSION,
            "recipe_sha256": recipe_digest(recipe.recipe_text()),
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "build_seconds": round(seconds, 2),
            "kernel": KERNEL_FILE,
            "initrd": INITRD_FILE,
            "kernel_release": kernel.release,
            "initrd_bytes": (dest / INITRD_FILE).stat().st_size,
            "arch": resolved.arch,
            "kernel_package": resolved.kernel_package,
            "packages": resolved.as_dict(),
            "modules": modules,
            "sftp_server_paths": sftp_paths,
            "busybox_ask_terminal_patched": patched,
            "username": recipe.USERNAME,
            "password": password,
            "hostname": recipe.HOSTNAME,
            "kernel_args": recipe.KERNEL_ARGS,
            "shell_prompt": recipe.SHELL_PROMPT,
            "login_prompt": recipe.LOGIN_PROMPT,
            "host_keys": [
                {"type": k.keytype, "key": k.key, "fingerprint": k.fingerprint} for k in host_keys
            ],
        }
        _write_json_atomic(dest / MANIFEST, manifest)
        size = manifest["initrd_bytes"] / 2**20
        log(f"built guest {build_key[:16]} in {seconds:.1f} s (initrd {size:.1f} MiB)")
        return manifest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _remove_stale(cache_dir: Path) -> None:
    """Leftovers of builds that died (only called with the build lock held)."""
    for path in cache_dir.iterdir():
        if path.name.startswith((".build-", ".old-")) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def _builds(cache_dir: Path) -> list[Path]:
    """Build directories with a manifest, newest first."""
    found = [p for p in cache_dir.iterdir() if not p.name.startswith(".") and p.is_dir()]
    with_manifest = [p for p in found if (p / MANIFEST).is_file()]
    return sorted(with_manifest, key=lambda p: (p / MANIFEST).stat().st_mtime, reverse=True)


def _prune(cache_dir: Path, keep: int, log: Log) -> None:
    """Remove all but the ``keep`` newest builds (only called with the build lock held)."""
    for old in _builds(cache_dir)[keep:]:
        log(f"removing old guest build {old}")
        shutil.rmtree(old, ignore_errors=True)


def recipe_digest(recipe_text: str) -> str:
    """sha256 of the recipe text (kept in the manifest)."""
    return hashlib.sha256(recipe_text.encode()).hexdigest()


def latest_image(cache_dir: Path, recipe_text: str) -> GuestImage | None:
    """The newest valid build of this recipe in the cache, whatever its packages (or None)."""
    digest = recipe_digest(recipe_text)
    for directory in _builds(cache_dir):
        data = _read_json(directory / MANIFEST)
        if data is None or data.get("recipe_sha256") != digest:
            continue
        image = image_from_manifest(directory)
        if image is not None:
            return image
    return None


KEEP_BUILDS = 6  # several checkouts (and their versions) may share one cache
"""Builds kept in the cache (other checkouts or versions of virtlib may use older ones)."""


def _build_locked(
    cache: Path, resolved: pkgs.ResolvedPackages, key: str, rebuild: bool, log: Log
) -> GuestImage:
    target = cache / build_dir_name(key)
    with _locked(cache / ".lock"):
        if not rebuild:
            image = image_from_manifest(target, key)
            if image is not None:  # another process built it while we waited
                return image
        _remove_stale(cache)
        log(f"building the test guest {key[:16]} in {cache}")
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
        try:
            build_guest(tmp, resolved, key, log)
            os.chmod(tmp, 0o755)  # noqa: S103 - libvirt-qemu must read the guest
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=".old-", dir=cache))
                os.rename(target, old / "build")
                os.rename(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _prune(cache, KEEP_BUILDS, log)
    image = image_from_manifest(target, key)
    if image is None:
        raise GuestBuildError(f"the build in {target} left no valid manifest")
    return image


def ensure_guest(
    cache_dir: Path | None = None, rebuild: bool = False, log: Log | None = None
) -> GuestImage:
    """The cached test guest, built first when missing, when its inputs changed or on
    ``rebuild``.

    Inputs are the recipe and the exact Debian package versions apt would pick; see
    :func:`resolve_inputs` for why a warm call does not run apt.  Builds are serialised
    with ``flock`` on ``<cache>/.lock``, written into a temporary directory inside the
    cache and renamed into place, so concurrent callers (pytest-xdist workers) are safe.
    When apt cannot resolve or download the packages (no package lists, mirror moved on),
    an older build of the same recipe is returned with a warning, unless ``rebuild``.
    """
    say = log or _quiet
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        ensure_public_dir(cache, say)
        text = recipe.recipe_text()
        try:
            resolved = resolve_inputs(cache, say)
            key = compute_build_key(resolved, text)
            if not rebuild:
                image = image_from_manifest(cache / build_dir_name(key), key)
                if image is not None:
                    return image
            return _build_locked(cache, resolved, key, rebuild, say)
        except pkgs.PackageFetchError as exc:
            fallback = None if rebuild else latest_image(cache, text)
            if fallback is None:
                raise
            say(f"warning: {exc}; using the older guest build {fallback.directory}")
            return fallback
    except OSError as exc:
        raise GuestBuildError(f"cannot build the test guest in {cache}: {exc}") from exc
