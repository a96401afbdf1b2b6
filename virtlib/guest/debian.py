"""The Debian guest: a Debian 12 disk image that boots like a cloud image, built and cached.

``virtlib guest build --flavor debian`` (or :func:`ensure_debian_guest`) makes a qcow2
disk with systemd, udev, OpenSSH, qemu-guest-agent, cloud-init with ifupdown, the cloud
kernel and GRUB in the MBR (:mod:`virtlib.guest.bootdisk`): it boots from its own disk,
with ``console=tty0 console=ttyS0`` on the kernel command line and no kernel params
from virtlib.  It has no password and no SSH host keys: a VM gets its credentials
from its cloud-init seed (``cloudinit = yes``) and its host keys on first boot.

Packages come from the host's own apt sources (its Debian ``bookworm*`` entries) through
``mmdebstrap`` (root only: it runs maintainer scripts in a chroot).  The image is cached
like the bundled guest (``<cache>/debian/<key[:16]>/disk.qcow2``, world-readable, the
disk itself read-only): the key hashes this recipe and the candidate versions of the
packages it names, so it is rebuilt when either changes (a changed dependency alone,
e.g. a libc update, does not trigger a rebuild).  Use it through an overlay
(``image_snapshot = yes``): the cached disk is never written.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from virtlib.guest import bootdisk
from virtlib.guest import packages as pkgs
from virtlib.guest.builder import (
    Log,
    _locked,
    _quiet,
    _read_json,
    _write_json_atomic,
    default_cache_dir,
    ensure_public_dir,
)
from virtlib.guest.image import GuestBuildError

RECIPE_VERSION = 2
FLAVOR = "debian"
SUITE = "bookworm"
KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
PACKAGES = (
    "systemd-sysv",
    "udev",
    "dbus",
    "openssh-server",
    "qemu-guest-agent",
    "cloud-init",
    "ifupdown",
    "isc-dhcp-client",
    "iproute2",
    "sudo",
    "e2fsprogs",
    "grub-pc-bin",
    "netbase",
    "procps",
)
"""Besides the kernel.  cloud-init renders ifupdown (ENI) configuration on Debian 12, as
Debian's own cloud images do; isc-dhcp-client is what ifupdown's ``dhcp`` method runs."""
DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
)
"""Documentation and translations stay out (smaller and faster to build)."""
DISK_BYTES = 2 << 30
KERNEL_ARGS = "ro console=tty0 console=ttyS0,115200n8"
"""The kernel console on the screen and on the serial port (the last one is
/dev/console, where systemd prints and a serial getty runs)."""
HOSTNAME = "debian"
LOGIN_PROMPT = r"login:\s*$"
DISK_FILE = "disk.qcow2"
MANIFEST = "manifest.json"
RESOLUTION = "resolved.json"
MANIFEST_FORMAT = 1
KEEP_BUILDS = 2

CLOUD_CFG = """\
# virtlib's Debian guest: only the NoCloud seed (a CD-ROM labelled cidata) is
# looked for, so no network datasource is ever probed.
datasource_list: [ NoCloud, None ]
# No locales are installed: C.UTF-8 is built in (and /etc/default/locale says so, so
# nothing is generated); no grub-pc debconf to set.
locale: C.UTF-8
grub_dpkg:
  enabled: false
"""
GRUB_CFG = """\
# virtlib's Debian guest (written at build time; grub-mkconfig is not used)
set default=0
set timeout=0
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
menuentry 'Debian GNU/Linux 12' {{
    search --no-floppy --fs-uuid --set=root {uuid}
    linux /boot/vmlinuz-{release} root=UUID={uuid} {args}
    initrd /boot/initrd.img-{release}
}}
"""
FSTAB = "UUID={uuid}\t/\text4\terrors=remount-ro\t0\t1\n"
INITRAMFS_CONF = """\
# virtlib's Debian guest: the root file system is ext4.  Said here, the initramfs gets
# fsck.ext4 (initramfs-tools cannot probe a root device that does not exist yet).
FSTYPE=ext4
"""


@dataclass(frozen=True)
class DebianImage:
    """A built Debian guest: boot ``disk`` (qcow2, read-only: use an overlay)."""

    disk: Path
    build_key: str
    kernel_release: str
    root_uuid: str
    directory: Path
    format: str = "qcow2"
    build_seconds: float = 0.0

    def params(self, disk: str = "image1") -> dict[str, str]:
        """Params that boot a VM from this image through an overlay and a cloud-init seed."""
        return {
            "images": disk,
            f"image_name_{disk}": str(self.disk.with_suffix("")),
            f"image_format_{disk}": self.format,
            f"image_snapshot_{disk}": "yes",
            "cloudinit": "yes",
            "nics": "nic1",
        }


def recipe_description() -> dict[str, object]:
    """Every recipe input of the build key, as JSON-able data."""
    return {
        "recipe_version": RECIPE_VERSION,
        "suite": SUITE,
        "kernel_metapackage": KERNEL_METAPACKAGE,
        "packages": list(PACKAGES),
        "dpkg_options": list(DPKG_OPTIONS),
        "disk_bytes": DISK_BYTES,
        "kernel_args": KERNEL_ARGS,
        "hostname": HOSTNAME,
        "cloud_cfg": CLOUD_CFG,
        "grub_cfg": GRUB_CFG,
        "fstab": FSTAB,
        "initramfs_conf": INITRAMFS_CONF,
        "core_modules": list(bootdisk.CORE_MODULES),
        "early_config": bootdisk.early_config("UUID"),
    }


def debian_cache_dir(cache_dir: Path | None = None) -> Path:
    """``<default cache>/debian``; the bundled guest's builds are its siblings."""
    return (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / FLAVOR


# --- apt sources and versions -----------------------------------------------------------


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas = pkgs.parse_control(text)
    return [s for s in stanzas if "URIs" in s and "Suites" in s]


def host_sources(
    sources_dir: Path = Path("/etc/apt/sources.list.d"),
    sources_list: Path = Path("/etc/apt/sources.list"),
) -> str:
    """The host's apt sources for ``bookworm*`` suites, as deb822 text (only those: other
    repositories the host uses stay out of the guest).

    :raises PackageFetchError: the host has no such source.
    """
    entries: list[tuple[str, str, str, str]] = []  # (uris, suites, components, signed-by)
    files = sorted(sources_dir.glob("*.sources")) if sources_dir.is_dir() else []
    for path in files:
        for stanza in _deb822_stanzas(path.read_text()):
            if stanza.get("Enabled", "yes").lower() == "no":
                continue
            if "deb" not in stanza.get("Types", "deb").split():
                continue
            wanted = [s for s in stanza["Suites"].split() if s.split("-")[0] == SUITE]
            if wanted:
                entries.append(
                    (
                        stanza["URIs"],
                        " ".join(wanted),
                        stanza.get("Components", "main"),
                        stanza.get("Signed-By", ""),
                    )
                )
    lists = [sources_list, *(sorted(sources_dir.glob("*.list")) if sources_dir.is_dir() else [])]
    for path in lists:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            match = re.match(r"^\s*deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s+(.*)$", line)
            if match and match[3].split("-")[0] == SUITE:
                signed = re.search(r"signed-by=(\S+)", match[1] or "")
                entries.append((match[2], match[3], match[4].strip(), signed[1] if signed else ""))
    if not entries:
        raise pkgs.PackageFetchError(
            f"the host's apt sources have no Debian {SUITE} entry to build the guest from"
        )
    stanzas = []
    for uris, suites, components, signed_by in dict.fromkeys(entries):
        lines = ["Types: deb", f"URIs: {uris}", f"Suites: {suites}", f"Components: {components}"]
        if signed_by:
            lines.append(f"Signed-By: {signed_by}")
        stanzas.append("\n".join(lines) + "\n")
    return "\n".join(stanzas)


def resolve_versions(cache: Path, log: Log = _quiet) -> dict[str, str]:
    """Candidate versions of the kernel image and :data:`PACKAGES` (apt only when its state
    changed, as for the bundled guest)."""
    fingerprint = pkgs.apt_state_fingerprint()
    inputs = json.dumps([RECIPE_VERSION, KERNEL_METAPACKAGE, PACKAGES])
    cached = _read_json(cache / RESOLUTION)
    if cached and cached.get("apt_state") == fingerprint and cached.get("inputs") == inputs:
        versions = cached.get("versions")
        if isinstance(versions, dict) and versions:
            return {str(k): str(v) for k, v in versions.items()}
    log("resolving the Debian guest's package versions with apt-cache")
    arch = pkgs.native_arch()
    if arch != pkgs.GUEST_ARCH:
        raise GuestBuildError(f"the Debian guest is {pkgs.GUEST_ARCH}; this host is {arch}")
    meta = pkgs.apt_show([KERNEL_METAPACKAGE], arch).get(KERNEL_METAPACKAGE)
    if meta is None:
        raise pkgs.PackageFetchError(f"apt does not know {KERNEL_METAPACKAGE} (apt-get update?)")
    kernel = next(
        (n for g in pkgs.parse_depends(meta.get("Depends", "")) for n in g if "image" in n), None
    )
    if kernel is None:
        raise GuestBuildError(f"{KERNEL_METAPACKAGE} depends on no linux-image package")
    names = [KERNEL_METAPACKAGE, kernel, *PACKAGES]
    records = pkgs.apt_show(names, arch)
    missing = [name for name in names if name not in records]
    if missing:
        raise pkgs.PackageFetchError(f"apt has no candidate for {', '.join(missing)}")
    versions = {name: records[name]["Version"] for name in names}
    data = {"apt_state": fingerprint, "inputs": inputs, "versions": versions}
    with contextlib.suppress(OSError):  # a read-only cache still works, only slower
        _write_json_atomic(cache / RESOLUTION, data)
    return versions


def build_key(versions: dict[str, str]) -> str:
    """sha256 over the recipe and the package versions (hex)."""
    text = json.dumps(
        {"recipe": recipe_description(), "versions": sorted(versions.items())},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(text.encode()).hexdigest()


def root_uuid(key: str) -> str:
    """The root file system's UUID, fixed by the build key (a reproducible disk)."""
    return str(uuid.UUID(hex=key[:32], version=4))


# --- building ---------------------------------------------------------------------------


def _mmdebstrap(root: Path, sources: Path, initramfs_conf: Path, log: Log) -> None:
    """Install the packages; ``initramfs_conf`` (a tree for /etc/initramfs-tools) is in
    place before the kernel's initramfs is made."""
    argv: list[str | os.PathLike[str]] = [
        "mmdebstrap",
        "--variant=minbase",
        "--mode=root",
        "--format=directory",
        # The host's lists may come from a dated snapshot of the archive: accept it.
        '--aptopt=Acquire::Check-Valid-Until "false"',
        *(f"--dpkgopt={option}" for option in DPKG_OPTIONS),
        f"--include={','.join([KERNEL_METAPACKAGE, *PACKAGES])}",
        # mmdebstrap's own copy command (no shell): after the Essential packages, before
        # the kernel's initramfs.
        f"--essential-hook=copy-in {initramfs_conf} /etc",
        SUITE,
        root,
        sources,
    ]
    log(f"mmdebstrap {SUITE} ({len(PACKAGES) + 1} packages and their dependencies)")
    pkgs.run(argv)


def _kernel_release(root: Path) -> str:
    releases = sorted(p.name[len("vmlinuz-") :] for p in (root / "boot").glob("vmlinuz-*"))
    if len(releases) != 1:
        raise GuestBuildError(f"expected one kernel in the guest's /boot, found {releases}")
    if not (root / "boot" / f"initrd.img-{releases[0]}").is_file():
        raise GuestBuildError(f"the guest has no initrd for kernel {releases[0]}")
    return releases[0]


def customize(root: Path, fs_uuid: str) -> str:
    """Make the installed tree a cloud image: no host keys, no machine id, fstab, cloud-init
    and GRUB configuration.  Returns the kernel release."""
    release = _kernel_release(root)
    for key in (root / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()  # each VM makes its own on first boot (cloud-init)
    (root / "etc" / "machine-id").write_text("")  # systemd makes one on first boot
    (root / "var" / "lib" / "dbus" / "machine-id").unlink(missing_ok=True)
    (root / "etc" / "hostname").write_text(HOSTNAME + "\n")
    (root / "etc" / "fstab").write_text(FSTAB.format(uuid=fs_uuid))
    (root / "etc" / "cloud" / "cloud.cfg.d" / "90_virtlib.cfg").write_text(CLOUD_CFG)
    (root / "etc" / "default" / "locale").write_text("LANG=C.UTF-8\n")
    for leftover in (root / "etc" / "apt" / "sources.list.d").glob("*.sources"):
        leftover.rename(leftover.with_name("debian.sources"))
    bootdisk.install_grub_files(
        root, GRUB_CFG.format(uuid=fs_uuid, release=release, args=KERNEL_ARGS)
    )
    return release


def build_image(dest: Path, key: str, versions: dict[str, str], log: Log) -> dict[str, Any]:
    """Build into the empty directory ``dest``; return the manifest."""
    if os.geteuid() != 0:
        raise GuestBuildError(
            "building the Debian guest needs root (mmdebstrap runs the packages' "
            "maintainer scripts in a chroot)"
        )
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=".work-", dir=dest))
    try:
        sources = work / "debian.sources"
        sources.write_text(host_sources())
        root = work / "root"
        root.mkdir()
        fs_uuid = root_uuid(key)
        conf = work / "initramfs-tools"
        (conf / "conf.d").mkdir(parents=True)
        (conf / "conf.d" / "virtlib-root").write_text(INITRAMFS_CONF)
        _mmdebstrap(root, sources, conf, log)
        release = customize(root, fs_uuid)
        raw = work / "disk.raw"
        log("writing the disk: MBR, GRUB, ext4 from the tree")
        bootdisk.build_disk(root, raw, DISK_BYTES, fs_uuid)
        shutil.rmtree(root)
        pkgs.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, dest / DISK_FILE])
        os.chmod(dest / DISK_FILE, 0o444)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.monotonic() - started
    manifest = {
        "format": MANIFEST_FORMAT,
        "flavor": FLAVOR,
        "build_key": key,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "build_seconds": round(seconds, 2),
        "disk": DISK_FILE,
        "disk_format": "qcow2",
        "disk_bytes": (dest / DISK_FILE).stat().st_size,
        "kernel_release": release,
        "root_uuid": fs_uuid,
        "kernel_args": KERNEL_ARGS,
        "packages": versions,
    }
    _write_json_atomic(dest / MANIFEST, manifest)
    log(f"built the Debian guest {key[:16]} in {seconds:.1f} s")
    return manifest


def image_from_manifest(directory: Path, key: str | None = None) -> DebianImage | None:
    """The image ``directory/manifest.json`` describes; None if absent, stale or broken."""
    data = _read_json(directory / MANIFEST)
    if data is None or data.get("format") != MANIFEST_FORMAT or data.get("flavor") != FLAVOR:
        return None
    if key is not None and data.get("build_key") != key:
        return None
    try:
        image = DebianImage(
            disk=directory / str(data["disk"]),
            build_key=str(data["build_key"]),
            kernel_release=str(data["kernel_release"]),
            root_uuid=str(data["root_uuid"]),
            directory=directory,
            format=str(data["disk_format"]),
            build_seconds=float(data["build_seconds"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
    return image if image.disk.is_file() else None


def _builds(cache: Path) -> list[Path]:
    found = [p for p in cache.iterdir() if not p.name.startswith(".") and p.is_dir()]
    found = [p for p in found if (p / MANIFEST).is_file()]
    return sorted(found, key=lambda p: (p / MANIFEST).stat().st_mtime, reverse=True)


def _build_locked(
    cache: Path, key: str, versions: dict[str, str], rebuild: bool, log: Log
) -> DebianImage:
    target = cache / key[:16]
    with _locked(cache / ".lock"):
        if not rebuild:
            image = image_from_manifest(target, key)
            if image is not None:  # another process built it while we waited
                return image
        for stale in cache.iterdir():
            if stale.name.startswith((".build-", ".old-")):
                shutil.rmtree(stale, ignore_errors=True)
        log(f"building the Debian guest {key[:16]} in {cache}")
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
        try:
            build_image(tmp, key, versions, log)
            os.chmod(tmp, 0o755)  # noqa: S103 - libvirt's QEMU reads the disk
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=".old-", dir=cache))
                os.rename(target, old / "build")
                shutil.rmtree(old, ignore_errors=True)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for old_build in _builds(cache)[KEEP_BUILDS:]:
            log(f"removing the old Debian guest build {old_build}")
            shutil.rmtree(old_build, ignore_errors=True)
    image = image_from_manifest(target, key)
    if image is None:
        raise GuestBuildError(f"the build in {target} left no valid manifest")
    return image


def ensure_debian_guest(
    cache_dir: Path | None = None, rebuild: bool = False, log: Log | None = None
) -> DebianImage:
    """The cached Debian guest, built first when missing, when its inputs changed or on
    ``rebuild`` (about a minute and a half; root only).  Concurrent callers wait for one
    build (flock).  When apt cannot answer, the newest earlier build is used, with a
    warning, unless ``rebuild``.

    :raises GuestBuildError: the build failed (or needs root).
    """
    say = log or _quiet
    cache = debian_cache_dir(cache_dir)
    try:
        ensure_public_dir(cache, say)
        try:
            versions = resolve_versions(cache, say)
        except pkgs.PackageFetchError as exc:
            builds = [] if rebuild else _builds(cache)
            fallback = next(filter(None, map(image_from_manifest, builds)), None)
            if fallback is None:
                raise
            say(f"warning: {exc}; using the older Debian guest build {fallback.directory}")
            return fallback
        key = build_key(versions)
        if not rebuild:
            image = image_from_manifest(cache / key[:16], key)
            if image is not None:
                return image
        return _build_locked(cache, key, versions, rebuild, say)
    except OSError as exc:
        raise GuestBuildError(f"cannot build the Debian guest in {cache}: {exc}") from exc
