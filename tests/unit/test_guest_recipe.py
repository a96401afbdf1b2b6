"""Unit tests of the test-guest recipe, build key, cache and helpers (nothing is built)."""

from __future__ import annotations

import os
import re
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from virtlib.guest import builder, cli, elf, recipe
from virtlib.guest import packages as pkgs
from virtlib.guest.image import GuestBuildError, GuestImage, HostKey, sha256_fingerprint

RESOLVED = pkgs.ResolvedPackages(
    kernel_package="linux-image-6.1.0-56-cloud-amd64",
    versions=(
        ("busybox-static", "1:1.35.0-4+deb12u1+b1"),
        ("dropbear-bin", "2022.83-1+deb12u3"),
        ("libc6", "2.36-9+deb12u14"),
        ("linux-image-6.1.0-56-cloud-amd64", "6.1.192-2"),
        ("openssh-sftp-server", "1:9.2p1-2+deb12u10"),
    ),
)


def _with_version(resolved: pkgs.ResolvedPackages, name: str, version: str) -> Any:
    versions = tuple((n, version if n == name else v) for n, v in resolved.versions)
    return pkgs.ResolvedPackages(resolved.kernel_package, versions, resolved.arch)


# --- build key ------------------------------------------------------------------------


def test_same_inputs_give_the_same_key() -> None:
    text = recipe.recipe_text()
    assert recipe.recipe_text() == text
    key = builder.compute_build_key(RESOLVED, text)
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    same = pkgs.ResolvedPackages(RESOLVED.kernel_package, tuple(reversed(RESOLVED.versions)))
    assert builder.compute_build_key(same, text) == key


def test_package_versions_change_the_key() -> None:
    text = recipe.recipe_text()
    key = builder.compute_build_key(RESOLVED, text)
    newer = _with_version(RESOLVED, "linux-image-6.1.0-56-cloud-amd64", "6.1.193-1")
    assert builder.compute_build_key(newer, text) != key
    other_libc = _with_version(RESOLVED, "libc6", "2.36-9+deb12u15")
    assert builder.compute_build_key(other_libc, text) != key
    other_kernel = pkgs.ResolvedPackages("linux-image-other", RESOLVED.versions)
    assert builder.compute_build_key(other_kernel, text) != key


def test_recipe_changes_change_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    key = builder.compute_build_key(RESOLVED, recipe.recipe_text())
    assert builder.compute_build_key(RESOLVED, recipe.recipe_text("other")) != key
    monkeypatch.setattr(recipe, "KERNEL_ARGS", "console=ttyS0")
    assert builder.compute_build_key(RESOLVED, recipe.recipe_text()) != key
    monkeypatch.undo()
    monkeypatch.setattr(recipe, "RECIPE_VERSION", recipe.RECIPE_VERSION + 1)
    assert builder.compute_build_key(RESOLVED, recipe.recipe_text()) != key


def test_recipe_text_covers_every_file() -> None:
    text = recipe.recipe_text()
    for item in recipe.STATIC_FILES:
        assert item.path in text
    assert "::sysinit:/etc/init.d/rcS" in text
    assert "virtlib-oops" in text
    assert "pw-4f9a2c" not in recipe.recipe_text("pw-4f9a2c")  # only its hash


# --- recipe contents -------------------------------------------------------------------


@pytest.mark.parametrize("cwd", ["~", "/", "/tmp", "/usr/share/udhcpc"])
def test_shell_prompt_matches_what_the_console_shows(cwd: str) -> None:
    line = f"[root@virtlib-guest {cwd}]# "
    assert re.search(recipe.SHELL_PROMPT, line)
    assert re.search(recipe.SHELL_PROMPT, line + "\x1b[6n")  # busybox's unpatched query
    buffer = f"42\r\n{line}"
    assert re.search(recipe.SHELL_PROMPT, buffer, re.MULTILINE)
    assert not re.search(recipe.SHELL_PROMPT, line + "echo hi", re.MULTILINE)
    assert not re.search(recipe.SHELL_PROMPT, "[root@other ~]# ")


def test_profile_prompt_is_what_the_regex_expects() -> None:
    assert r"PS1='[\u@\h \w]\$ '" in recipe.PROFILE
    assert "stty columns 4096" in recipe.PROFILE


def test_login_prompt() -> None:
    assert re.search(recipe.LOGIN_PROMPT, "\r\nvirtlib-guest login: ")


def test_oops_text_matches_the_crash_regex() -> None:
    body = recipe.OOPS.split("<<EOF\n", 1)[1].rsplit("EOF", 1)[0]
    assert re.search(recipe.CRASH_REGEX, body, re.DOTALL)
    assert "printf '<1>%s\\n'" in recipe.OOPS  # level 1: shown even with "quiet"


def test_inittab() -> None:
    assert "ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100" in recipe.INITTAB
    assert "::ctrlaltdel:/sbin/reboot" in recipe.INITTAB
    assert "::shutdown:" in recipe.INITTAB


def test_module_order_puts_dependencies_first() -> None:
    order = list(recipe.REQUIRED_MODULES)
    assert order.index("virtio_ring") < order.index("virtio") < order.index("virtio_pci")
    assert order.index("failover") < order.index("net_failover") < order.index("virtio_net")
    assert {"button", "evdev"} <= set(order)


def test_passwd_file() -> None:
    text = recipe.passwd_file("$6$salt$hash")
    assert text.startswith("root:$6$salt$hash:0:0:root:/root:/bin/sh\n")
    with pytest.raises(ValueError):
        recipe.passwd_file("bad:hash")


def test_kernel_args() -> None:
    consoles = [a for a in recipe.KERNEL_ARGS.split() if a.startswith("console=")]
    assert consoles[-1] == "console=ttyS0"  # the last one is /dev/console: the serial line
    assert "console=tty0" in consoles  # and the screen, for screenshots


# --- default_cache_dir --------------------------------------------------------------------


def test_cache_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VIRTLIB_CACHE_DIR", str(tmp_path / "c"))
    assert builder.default_cache_dir() == tmp_path / "c"


def test_cache_dir_for_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIRTLIB_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert builder.default_cache_dir() == Path("/var/cache/virtlib/guest")


def test_cache_dir_for_users(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("VIRTLIB_CACHE_DIR", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert builder.default_cache_dir() == tmp_path / "xdg" / "virtlib" / "guest"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert builder.default_cache_dir() == tmp_path / ".cache" / "virtlib" / "guest"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert builder.default_cache_dir() == tmp_path / ".cache" / "virtlib" / "guest"


def test_cache_dirs_are_world_traversable(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        builder.ensure_public_dir(tmp_path / "a" / "b")
    finally:
        os.umask(old)
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "a" / "b").stat().st_mode & 0o777 == 0o755


def test_closed_ancestor_is_reported(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    messages: list[str] = []
    builder.ensure_public_dir(closed / "cache", messages.append)
    assert any("not world-traversable" in m for m in messages)


# --- apt parsing and resolution cache ---------------------------------------------------


def test_parse_control_and_depends() -> None:
    text = (
        "Package: dropbear-bin\nVersion: 2022.83-1\nDepends: libc6 (>= 2.34), zlib1g | libz\n"
        "Description: x\n more\n\nPackage: libc6\nVersion: 2.36\n"
    )
    stanzas = pkgs.parse_control(text)
    assert [s["Package"] for s in stanzas] == ["dropbear-bin", "libc6"]
    assert stanzas[0]["Description"] == "x\nmore"
    assert pkgs.parse_depends(stanzas[0]["Depends"]) == [["libc6"], ["zlib1g", "libz"]]
    assert pkgs.parse_depends("libgcc-s1:any (>= 3) [amd64], foo") == [["libgcc-s1"], ["foo"]]


def test_resolved_packages_json_roundtrip() -> None:
    assert pkgs.ResolvedPackages.from_json(RESOLVED.to_json()) == RESOLVED
    with pytest.raises(ValueError):
        pkgs.ResolvedPackages.from_json({"kernel_package": "x", "packages": {}})


def test_apt_state_fingerprint_follows_mtimes(tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "a_Packages").write_text("x")
    paths = (str(lists), str(tmp_path / "missing"))
    first = pkgs.apt_state_fingerprint(paths)
    assert pkgs.apt_state_fingerprint(paths) == first
    (lists / "lock").write_text("")
    assert pkgs.apt_state_fingerprint(paths) == first  # apt's lock file does not count
    os.utime(lists / "a_Packages", ns=(1, 1))
    assert pkgs.apt_state_fingerprint(paths) != first


def test_resolution_is_cached_until_apt_state_changes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[int] = []
    state = ["one"]

    def fake_resolve(log: Any = None) -> pkgs.ResolvedPackages:
        calls.append(1)
        return RESOLVED

    monkeypatch.setattr(pkgs, "resolve_packages", fake_resolve)
    monkeypatch.setattr(pkgs, "apt_state_fingerprint", lambda: state[0])
    assert builder.resolve_inputs(tmp_path) == RESOLVED
    assert builder.resolve_inputs(tmp_path) == RESOLVED
    assert len(calls) == 1
    state[0] = "two"
    assert builder.resolve_inputs(tmp_path) == RESOLVED
    assert len(calls) == 2
    (tmp_path / builder.RESOLUTION).write_text("{broken")
    assert builder.resolve_inputs(tmp_path) == RESOLVED
    assert len(calls) == 3


# --- ensure_guest with a fake build -------------------------------------------------------


class FakeBuild:
    """Stands in for build_guest: writes the files and manifest, counts calls."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(
        self, dest: Path, resolved: pkgs.ResolvedPackages, key: str, log: Any = None
    ) -> dict[str, Any]:
        with self.lock:
            self.calls += 1
        time.sleep(self.delay)
        (dest / "vmlinuz").write_bytes(b"kernel")
        (dest / "initrd.img").write_bytes(b"initrd")
        manifest = {
            "format": builder.MANIFEST_FORMAT,
            "build_key": key,
            "recipe_sha256": builder.recipe_digest(recipe.recipe_text()),
            "kernel": "vmlinuz",
            "initrd": "initrd.img",
            "username": "root",
            "password": "virtlib",
            "kernel_args": recipe.KERNEL_ARGS,
            "shell_prompt": recipe.SHELL_PROMPT,
            "login_prompt": recipe.LOGIN_PROMPT,
            "hostname": recipe.HOSTNAME,
            "kernel_release": "6.1.0-test",
            "host_keys": [{"type": "ssh-ed25519", "key": "AAAA", "fingerprint": "SHA256:x"}],
        }
        builder._write_json_atomic(dest / builder.MANIFEST, manifest)
        return manifest


@pytest.fixture
def fake_apt(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[pkgs.ResolvedPackages]]:
    current = [RESOLVED]
    monkeypatch.setattr(pkgs, "resolve_packages", lambda log=None: current[0])
    monkeypatch.setattr(pkgs, "apt_state_fingerprint", lambda: repr(current[0]))
    yield current


def test_ensure_guest_builds_once_and_reuses(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_apt: list[pkgs.ResolvedPackages]
) -> None:
    fake = FakeBuild()
    monkeypatch.setattr(builder, "build_guest", fake)
    cache = tmp_path / "cache"
    image = builder.ensure_guest(cache)
    assert fake.calls == 1
    assert isinstance(image, GuestImage)
    assert image.kernel.read_bytes() == b"kernel"
    assert image.directory == cache / image.build_key[:16]
    assert image.directory.stat().st_mode & 0o777 == 0o755
    assert (cache / builder.MANIFEST).exists() is False

    started = time.monotonic()
    again = builder.ensure_guest(cache)
    assert time.monotonic() - started < 0.5
    assert again == image
    assert fake.calls == 1

    assert builder.ensure_guest(cache, rebuild=True).build_key == image.build_key
    assert fake.calls == 2

    fake_apt[0] = _with_version(RESOLVED, "dropbear-bin", "2024.1")
    newer = builder.ensure_guest(cache)
    assert fake.calls == 3
    assert newer.build_key != image.build_key
    assert not list(cache.glob(".build-*"))


def test_concurrent_callers_build_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_apt: list[pkgs.ResolvedPackages]
) -> None:
    fake = FakeBuild(delay=0.3)
    monkeypatch.setattr(builder, "build_guest", fake)
    results: list[GuestImage] = []
    threads = [
        threading.Thread(target=lambda: results.append(builder.ensure_guest(tmp_path)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fake.calls == 1
    assert len(results) == 4
    assert len({r.build_key for r in results}) == 1


def test_failed_build_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_apt: list[pkgs.ResolvedPackages]
) -> None:
    def failing(dest: Path, *args: Any) -> dict[str, Any]:
        (dest / "partial").write_text("x")
        raise GuestBuildError("boom")

    monkeypatch.setattr(builder, "build_guest", failing)
    with pytest.raises(GuestBuildError, match="boom"):
        builder.ensure_guest(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", builder.RESOLUTION]


def test_download_failure_falls_back_to_an_older_build(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake_apt: list[pkgs.ResolvedPackages]
) -> None:
    monkeypatch.setattr(builder, "build_guest", FakeBuild())
    old = builder.ensure_guest(tmp_path)

    def unreachable(*args: Any) -> dict[str, Any]:
        raise pkgs.PackageFetchError("404 Not Found")

    monkeypatch.setattr(builder, "build_guest", unreachable)
    fake_apt[0] = _with_version(RESOLVED, "libc6", "9.9")
    messages: list[str] = []
    assert builder.ensure_guest(tmp_path, log=messages.append) == old
    assert any("404 Not Found" in m for m in messages)
    with pytest.raises(pkgs.PackageFetchError):
        builder.ensure_guest(tmp_path, rebuild=True)


def test_stale_manifest_is_not_used(tmp_path: Path) -> None:
    FakeBuild()(tmp_path, RESOLVED, "k" * 64)
    assert builder.image_from_manifest(tmp_path, "k" * 64) is not None
    assert builder.image_from_manifest(tmp_path, "x" * 64) is None
    (tmp_path / "initrd.img").unlink()
    assert builder.image_from_manifest(tmp_path, "k" * 64) is None


# --- image -----------------------------------------------------------------------------------


def test_host_key_helpers() -> None:
    blob = "AAAAC3NzaC1lZDI1NTE5AAAAIH2Fdf9H5hUrj/m6rKrUPz1cldn2yML+IPaQ7fc9lbos"
    # What dropbearkey (and ssh-keygen -l) print for this key:
    assert sha256_fingerprint(blob) == "SHA256:gZfV36wSBb/ygl3cgMVxnSsH1qpTo8i0nEIO1My95fw"
    key = HostKey("ssh-ed25519", blob, sha256_fingerprint(blob))
    assert key.known_hosts_line("127.0.0.1", 2222) == f"[127.0.0.1]:2222 ssh-ed25519 {blob}"
    assert key.known_hosts_line("host") == f"host ssh-ed25519 {blob}"
    image = GuestImage(
        kernel=Path("k"),
        initrd=Path("i"),
        username="root",
        password="secret",
        kernel_args="console=ttyS0",
        host_keys=(key,),
        shell_prompt=recipe.SHELL_PROMPT,
        build_key="0" * 64,
    )
    assert image.ssh_host_keys == (f"ssh-ed25519 {blob}",)
    assert image.ssh_host_key_fingerprints == (key.fingerprint,)
    assert image.known_hosts("127.0.0.1", 2222).endswith("\n")
    assert "secret" not in repr(image)


# --- build helpers -----------------------------------------------------------------------------


def test_patch_busybox() -> None:
    data = b"xx\x1b[999;999H\x1b[6n\x00yy"
    patched, done = builder.patch_busybox(data)
    assert done
    assert b"\x1b[6n" not in patched
    assert len(patched) == len(data)
    assert builder.patch_busybox(b"nothing here") == (b"nothing here", False)


def test_sftp_server_path_from_strings() -> None:
    data = b"\x00\x01sftp\x00/usr/lib/sftp-server\x00/etc/motd\x00"
    assert pkgs.compiled_sftp_server_paths(data) == ["/usr/lib/sftp-server"]


def test_module_names() -> None:
    assert pkgs.module_name("virtio-rng.ko") == "virtio_rng"
    assert pkgs.module_name("virtio_net.ko.xz") == "virtio_net"
    with pytest.raises(ValueError):
        pkgs.module_name("README")


def _fake_module(depends: str) -> bytes:
    """A minimal ELF64 file with a .modinfo section, like a kernel module."""
    modinfo = f"license=GPL\0depends={depends}\0name=x\0".encode()
    shstrtab = b"\0.modinfo\0.shstrtab\0"
    header_size, section_size = 64, 64
    modinfo_off = header_size
    shstr_off = modinfo_off + len(modinfo)
    shoff = shstr_off + len(shstrtab)
    ident = b"\x7fELF\x02\x01\x01" + bytes(9)
    header = struct.pack(
        "<16sHHIQQQIHHHHHH", ident, 1, 62, 1, 0, 0, shoff, 0, header_size, 0, 0,
        section_size, 3, 2,
    )  # fmt: skip
    null = bytes(section_size)
    info = struct.pack("<IIQQQQIIQQ", 1, 1, 0, 0, modinfo_off, len(modinfo), 0, 0, 1, 0)
    names = struct.pack("<IIQQQQIIQQ", 10, 3, 0, 0, shstr_off, len(shstrtab), 0, 0, 1, 0)
    return header + modinfo + shstrtab + null + info + names


def test_modinfo_depends() -> None:
    assert elf.module_depends(_fake_module("virtio,virtio_ring")) == ["virtio", "virtio_ring"]
    assert elf.module_depends(_fake_module("")) == []
    with pytest.raises(elf.ELFError):
        elf.modinfo(b"not an elf file at all, clearly not" * 3)


def test_module_load_order(tmp_path: Path) -> None:
    deps = {"virtio_ring": "", "virtio": "virtio_ring", "virtio_net": "virtio,virtio_ring"}
    index: dict[str, Path] = {}
    for name, dep in deps.items():
        index[name] = tmp_path / f"{name}.ko"
        index[name].write_bytes(_fake_module(dep))
    order = pkgs.module_load_order(["virtio_net"], ["virtio_rng"], index, set())
    assert [name for name, _ in order] == ["virtio_ring", "virtio", "virtio_net"]
    order = pkgs.module_load_order(["virtio_net"], [], index, {"virtio_ring"})
    assert [name for name, _ in order] == ["virtio", "virtio_net"]
    with pytest.raises(GuestBuildError, match="no module"):
        pkgs.module_load_order(["missing"], [], index, set())


def test_resolve_in_root(tmp_path: Path) -> None:
    (tmp_path / "lib" / "x86_64-linux-gnu").mkdir(parents=True)
    (tmp_path / "lib" / "x86_64-linux-gnu" / "ld.so").write_text("")
    (tmp_path / "lib64").mkdir()
    (tmp_path / "lib64" / "ld").symlink_to("/lib/x86_64-linux-gnu/ld.so")  # absolute
    (tmp_path / "usr").mkdir()
    (tmp_path / "usr" / "lib").symlink_to("../lib")  # relative, a directory
    assert pkgs.resolve_in_root(tmp_path, "/lib64/ld") == "/lib/x86_64-linux-gnu/ld.so"
    assert pkgs.resolve_in_root(tmp_path, "/usr/lib/x86_64-linux-gnu/ld.so") == (
        "/lib/x86_64-linux-gnu/ld.so"
    )
    assert pkgs.resolve_in_root(tmp_path, "/nothing") is None
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(GuestBuildError, match="symbolic links"):
        pkgs.resolve_in_root(tmp_path, "/loop")


def test_library_closure_of_a_host_binary() -> None:
    true = "/usr/bin/true" if Path("/usr/bin/true").exists() else "/bin/true"
    closure = pkgs.library_closure(Path("/"), [true])
    info = elf.dynamic_info(Path(true).read_bytes())
    assert info.interpreter in closure
    assert "libc.so.6" in info.needed
    assert any(path.endswith("/libc.so.6") for path in closure)


# --- command line ----------------------------------------------------------------------------


def test_build_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}
    image = GuestImage(
        kernel=tmp_path / "vmlinuz",
        initrd=tmp_path / "initrd.img",
        username="root",
        password="virtlib",
        kernel_args="console=ttyS0",
        host_keys=(HostKey("ssh-ed25519", "AAAA", "SHA256:abc"),),
        shell_prompt=recipe.SHELL_PROMPT,
        build_key="f" * 64,
    )

    def fake(cache_dir: Path | None, rebuild: bool = False, log: Any = None) -> GuestImage:
        seen.update(cache_dir=cache_dir, rebuild=rebuild)
        return image

    monkeypatch.setattr(cli, "ensure_guest", fake)
    assert cli.build_command(["--rebuild", "--cache-dir", str(tmp_path)]) == 0
    assert seen == {"cache_dir": tmp_path, "rebuild": True}
    out = capsys.readouterr().out
    assert str(tmp_path / "vmlinuz") in out
    assert "SHA256:abc" in out

    def broken(*args: Any, **kwargs: Any) -> GuestImage:
        raise GuestBuildError("no apt")

    monkeypatch.setattr(cli, "ensure_guest", broken)
    assert cli.build_command([]) == 1
    assert "no apt" in capsys.readouterr().err
    assert cli.main(["frobnicate"]) == 2
