"""A BIOS-bootable disk image made from a root directory, without mounting anything.

No loop devices, no ``grub-install``: the pieces a BIOS boot needs are written
into a plain file.

- an MBR partition table with one bootable Linux partition from 1 MiB to the end;
- the ext4 file system of that partition, made from the directory by ``mkfs.ext4 -d``
  at the partition's offset (``-E offset=``);
- GRUB for i386-pc: ``boot.img`` in the MBR's code area (the table is kept) and
  ``core.img`` right after it, in the gap before the partition.  ``boot.img`` loads the
  sector after the MBR (its default), and ``grub-mkimage`` writes the length of the
  rest of ``core.img`` into its first sector, so no ``grub-bios-setup`` is needed.
  An embedded config finds the root file system by UUID, whatever the disk's number.

GRUB's modules and ``grub-mkimage`` are the guest's own (package ``grub-pc-bin``,
run in a chroot of the directory), so the host needs only e2fsprogs and qemu-img.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

from virtlib.guest import packages as pkgs
from virtlib.guest.image import GuestBuildError

SECTOR = 512
PARTITION_START = 2048
"""The partition's first sector (1 MiB): the gap before it holds core.img."""
GRUB_DIR = "/usr/lib/grub/i386-pc"
CORE_MODULES = ("biosdisk", "part_msdos", "ext2", "search_fs_uuid")
"""What core.img needs to find and read /boot/grub (the rest loads from there)."""
NT_SIGNATURE_OFFSET = 0x1B8
PARTITION_TABLE_OFFSET = 0x1BE
DRIVE_CHECK_OFFSET = 0x66
"""boot.img's ``jmp`` over the boot drive check; grub-bios-setup replaces it with NOPs
for hard disks (use the BIOS's drive number when it looks like a hard disk)."""
LINUX_PARTITION = 0x83


def mbr(boot_img: bytes, total_sectors: int, disk_signature: int) -> bytes:
    """The first sector: boot.img's code, a disk signature and one bootable partition."""
    if len(boot_img) != SECTOR or boot_img[-2:] != b"\x55\xaa":
        raise GuestBuildError("boot.img is not a 512-byte boot sector")
    code = bytearray(boot_img[:NT_SIGNATURE_OFFSET])
    if code[DRIVE_CHECK_OFFSET] == 0xEB:  # jmp short: as grub-bios-setup does for disks
        code[DRIVE_CHECK_OFFSET : DRIVE_CHECK_OFFSET + 2] = b"\x90\x90"
    count = total_sectors - PARTITION_START
    if count <= 0 or total_sectors >= 1 << 32:
        raise GuestBuildError(f"a disk of {total_sectors} sectors cannot have an MBR partition")
    # Status, CHS first (unused: LBA), type, CHS last (unused), first LBA, sector count.
    entry = bytes([0x80, 0xFE, 0xFF, 0xFF, LINUX_PARTITION, 0xFE, 0xFF, 0xFF])
    entry += struct.pack("<II", PARTITION_START, count)
    sector = bytes(code) + struct.pack("<I", disk_signature) + b"\0\0" + entry + bytes(48)
    return sector + b"\x55\xaa"


def check_core_image(core: bytes) -> None:
    """core.img must fit the gap and carry the blocklist boot.img's default expects."""
    if len(core) > (PARTITION_START - 1) * SECTOR:
        raise GuestBuildError(f"core.img ({len(core)} bytes) does not fit before the partition")
    start, length = struct.unpack_from("<QH", core, SECTOR - 12)
    needed = -(-len(core) // SECTOR) - 1
    if start != 2 or length < needed:
        raise GuestBuildError(
            f"core.img's blocklist (start {start}, {length} sectors) does not describe "
            f"itself written at sector 1 ({needed} more sectors)"
        )


def early_config(root_uuid: str) -> str:
    """Embedded in core.img: find the root file system by UUID, read /boot/grub there."""
    return f"search.fs_uuid {root_uuid} root\nset prefix=($root)/boot/grub\n"


def make_core_image(root: Path, root_uuid: str) -> bytes:
    """Run the guest's grub-mkimage in a chroot of ``root``; return core.img."""
    scratch = root / "tmp" / ".virtlib-grub"
    scratch.mkdir(mode=0o700)
    try:
        (scratch / "early.cfg").write_text(early_config(root_uuid))
        inner = "/tmp/.virtlib-grub"  # noqa: S108 - a path in the guest's root
        pkgs.run(
            [
                "chroot",
                root,
                "grub-mkimage",
                "-O",
                "i386-pc",
                "-o",
                f"{inner}/core.img",
                "-c",
                f"{inner}/early.cfg",
                "-p",
                "/boot/grub",
                *CORE_MODULES,
            ]
        )
        core = (scratch / "core.img").read_bytes()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    check_core_image(core)
    return core


def install_grub_files(root: Path, config: str) -> None:
    """GRUB's modules in /boot/grub/i386-pc (what grub-install copies) and grub.cfg."""
    source = pkgs.host_path(root, GRUB_DIR)
    if not (source / "boot.img").is_file():
        raise GuestBuildError(f"the guest has no {GRUB_DIR}/boot.img (package grub-pc-bin)")
    target = root / "boot" / "grub" / "i386-pc"
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.suffix in (".mod", ".lst", ".img"):
            shutil.copyfile(item, target / item.name)
    (root / "boot" / "grub" / "grub.cfg").write_text(config)


def build_disk(
    root: Path,
    raw: Path,
    size_bytes: int,
    root_uuid: str,
    label: str = "root",
    disk_signature: int = 0x7669726C,
) -> None:
    """Write a bootable raw disk ``raw`` of ``size_bytes`` holding ``root`` as ext4.

    GRUB's files must already be in ``root`` (:func:`install_grub_files`).
    """
    if size_bytes % (1 << 20):
        raise GuestBuildError("the disk size must be a whole number of MiB")
    boot_img = (pkgs.host_path(root, GRUB_DIR) / "boot.img").read_bytes()
    core = make_core_image(root, root_uuid)
    with raw.open("wb") as out:
        out.truncate(size_bytes)
    fs_kib = (size_bytes - PARTITION_START * SECTOR) // 1024
    pkgs.run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            label,
            "-U",
            root_uuid,
            "-d",
            root,
            "-E",
            f"offset={PARTITION_START * SECTOR}",
            raw,
            f"{fs_kib}k",
        ]
    )
    with raw.open("r+b") as out:
        out.write(mbr(boot_img, size_bytes // SECTOR, disk_signature))
        out.seek(SECTOR)
        out.write(core)
        out.flush()
        os.fsync(out.fileno())
