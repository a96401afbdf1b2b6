"""The Debian guest's recipe without building it: the boot sector, GRUB's core image check,
the apt sources taken from the host, the build key and the cache."""

from __future__ import annotations

import json
import struct
import uuid
from pathlib import Path

import pytest

from virtlib.guest import bootdisk, debian
from virtlib.guest.cli import build_parser
from virtlib.guest.image import GuestBuildError
from virtlib.guest.packages import PackageFetchError


def fake_boot_img() -> bytes:
    code = bytearray(512)
    code[0x66:0x68] = b"\xeb\x05"  # the jmp over the drive check
    code[0x1FE:] = b"\x55\xaa"
    return bytes(code)


def test_mbr_keeps_the_code_and_has_one_bootable_linux_partition() -> None:
    sector = bootdisk.mbr(fake_boot_img(), total_sectors=4194304, disk_signature=0x12345678)
    assert len(sector) == 512 and sector[-2:] == b"\x55\xaa"
    assert sector[0x66:0x68] == b"\x90\x90"  # as grub-bios-setup does for hard disks
    assert struct.unpack_from("<I", sector, 0x1B8)[0] == 0x12345678
    entry = sector[0x1BE : 0x1BE + 16]
    assert entry[0] == 0x80 and entry[4] == 0x83
    assert struct.unpack_from("<II", entry, 8) == (2048, 4194304 - 2048)
    assert sector[0x1CE:0x1FE] == bytes(48)  # no other partition


def test_mbr_refuses_what_is_no_boot_sector() -> None:
    with pytest.raises(GuestBuildError, match="boot sector"):
        bootdisk.mbr(bytes(512), 4096, 0)


def core_image(sectors: int, start: int = 2) -> bytes:
    data = bytearray(sectors * 512)
    struct.pack_into("<QHH", data, 512 - 12, start, sectors - 1, 0x820)
    return bytes(data)


def test_core_image_blocklist_must_describe_sector_one() -> None:
    bootdisk.check_core_image(core_image(55))
    with pytest.raises(GuestBuildError, match="blocklist"):
        bootdisk.check_core_image(core_image(55, start=34))
    with pytest.raises(GuestBuildError, match="does not fit"):
        bootdisk.check_core_image(core_image(2100))


def test_early_config_finds_the_root_by_uuid() -> None:
    text = bootdisk.early_config("abcd")
    assert "search.fs_uuid abcd root" in text and "prefix=($root)/boot/grub" in text


def test_host_sources_keep_only_the_debian_suite(tmp_path: Path) -> None:
    (tmp_path / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb-src\nURIs: http://mirror.example/debian\nSuites: bookworm\n"
        "Components: main\n\n"
        "Types: deb\nURIs: http://old.example/debian\nSuites: bullseye\nComponents: main\n"
    )
    (tmp_path / "other.sources").write_text(
        "Enabled: no\nTypes: deb\nURIs: http://off.example\nSuites: bookworm\nComponents: x\n"
    )
    (tmp_path / "nodesource.list").write_text("deb https://deb.example/node nodistro main\n")
    listing = tmp_path / "sources.list"
    listing.write_text(
        "# comment\ndeb [signed-by=/k.gpg] http://security.example/debian-security "
        "bookworm-security main\n"
    )
    text = debian.host_sources(tmp_path, listing)
    assert "bullseye" not in text and "deb-src" not in text and "nodistro" not in text
    assert "off.example" not in text
    assert "Suites: bookworm bookworm-updates" in text
    assert "URIs: http://security.example/debian-security" in text
    assert "Signed-By: /k.gpg" in text


def test_host_without_debian_sources_says_so(tmp_path: Path) -> None:
    with pytest.raises(PackageFetchError, match="no Debian bookworm entry"):
        debian.host_sources(tmp_path, tmp_path / "sources.list")


def test_build_key_follows_the_versions_and_fixes_the_root_uuid() -> None:
    versions = {"cloud-init": "22.4.2-1", "linux-image-cloud-amd64": "6.1.1"}
    key = debian.build_key(versions)
    assert key == debian.build_key(dict(versions))
    assert key != debian.build_key({**versions, "cloud-init": "22.4.2-1+deb12u1"})
    fs_uuid = uuid.UUID(debian.root_uuid(key))
    assert fs_uuid.version == 4 and debian.root_uuid(key) == debian.root_uuid(key)


def write_build(cache: Path, key: str) -> Path:
    build = cache / key[:16]
    build.mkdir(parents=True)
    (build / debian.DISK_FILE).write_bytes(b"qcow2")
    manifest = {
        "format": debian.MANIFEST_FORMAT,
        "flavor": "debian",
        "build_key": key,
        "disk": debian.DISK_FILE,
        "disk_format": "qcow2",
        "kernel_release": "6.1.0-57-cloud-amd64",
        "root_uuid": debian.root_uuid(key),
        "build_seconds": 61.8,
    }
    (build / debian.MANIFEST).write_text(json.dumps(manifest))
    return build


def test_a_cached_build_is_found_without_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    versions = {"cloud-init": "1"}
    key = debian.build_key(versions)
    build = write_build(tmp_path / "debian", key)
    monkeypatch.setattr(debian, "resolve_versions", lambda cache, log: versions)

    def no_build(*args: object) -> None:
        raise AssertionError("built although cached")

    monkeypatch.setattr(debian, "build_image", no_build)
    image = debian.ensure_debian_guest(tmp_path)
    assert image.disk == build / "disk.qcow2" and image.build_key == key
    params = image.params()
    assert params["image_snapshot_image1"] == "yes" and params["cloudinit"] == "yes"
    assert params["image_name_image1"] + ".qcow2" == str(image.disk)


def test_without_apt_an_older_build_serves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_build(tmp_path / "debian", debian.build_key({"old": "1"}))

    def no_apt(cache: Path, log: object) -> dict[str, str]:
        raise PackageFetchError("no lists")

    monkeypatch.setattr(debian, "resolve_versions", no_apt)
    warnings: list[str] = []
    image = debian.ensure_debian_guest(tmp_path, log=warnings.append)
    assert image.build_key == debian.build_key({"old": "1"})
    assert any("older Debian guest build" in w for w in warnings)
    with pytest.raises(PackageFetchError):
        debian.ensure_debian_guest(tmp_path, rebuild=True)


def test_build_option_chooses_the_flavour() -> None:
    assert build_parser().parse_args([]).flavor == "busybox"
    assert build_parser().parse_args(["--flavor", "debian"]).flavor == "debian"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--flavor", "fedora"])


def test_the_virtlib_command_passes_the_flavour_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import virtlib.cli
    import virtlib.guest.cli

    seen: list[list[str]] = []
    monkeypatch.setattr(virtlib.guest.cli, "build_command", lambda argv: seen.append(argv) or 0)
    assert virtlib.cli.main(["guest", "build", "--flavor", "debian"]) == 0
    assert seen == [["--flavor", "debian"]]
