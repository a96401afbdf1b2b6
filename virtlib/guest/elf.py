"""Just enough ELF reading for the guest build: interpreter, DT_NEEDED, .modinfo, strings.

Reading the files directly (instead of ``ldd``, ``readelf`` or ``modinfo``) resolves
binaries against the downloaded Debian packages rather than the host's libraries, and
runs nothing from the packages on the host.  Only 64-bit little-endian ELF is handled
(the guest is amd64).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_DYN = struct.Struct("<qQ")

PT_LOAD = 1
PT_DYNAMIC = 2
PT_INTERP = 3
DT_NULL = 0
DT_NEEDED = 1
DT_STRTAB = 5
DT_RPATH = 15
DT_RUNPATH = 29


class ELFError(ValueError):
    """The data is not a 64-bit little-endian ELF file this module can read."""


@dataclass(frozen=True)
class DynamicInfo:
    """What the dynamic loader needs to run a binary."""

    interpreter: str | None
    needed: tuple[str, ...]
    runpath: tuple[str, ...]


def _cstr(data: bytes, offset: int) -> str:
    end = data.find(b"\0", offset)
    if end < 0:
        raise ELFError("unterminated string")
    return data[offset:end].decode("utf-8", "replace")


def _header(data: bytes) -> tuple[int, ...]:
    if len(data) < _EHDR.size or data[:4] != b"\x7fELF":
        raise ELFError("not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ELFError("not a 64-bit little-endian ELF file")
    return _EHDR.unpack_from(data, 0)


def is_elf(data: bytes) -> bool:
    """True when ``data`` starts with the ELF magic."""
    return data[:4] == b"\x7fELF"


def dynamic_info(data: bytes) -> DynamicInfo:
    """The program interpreter, DT_NEEDED sonames and DT_RUNPATH/RPATH of an ELF image."""
    hdr = _header(data)
    phoff, phentsize, phnum = hdr[5], hdr[9], hdr[10]
    phdrs = [_PHDR.unpack_from(data, phoff + i * phentsize) for i in range(phnum)]
    interp: str | None = None
    dynamic: tuple[int, int] | None = None
    loads: list[tuple[int, int, int]] = []
    for p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz, _memsz, _align in phdrs:
        if p_type == PT_INTERP:
            interp = _cstr(data, p_offset)
        elif p_type == PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
        elif p_type == PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
    if dynamic is None:
        return DynamicInfo(interp, (), ())

    def file_offset(vaddr: int) -> int:
        for start, offset, size in loads:
            if start <= vaddr < start + size:
                return vaddr - start + offset
        raise ELFError(f"address {vaddr:#x} is in no loaded segment")

    entries: list[tuple[int, int]] = []
    offset, size = dynamic
    for pos in range(offset, offset + size - _DYN.size + 1, _DYN.size):
        tag, val = _DYN.unpack_from(data, pos)
        if tag == DT_NULL:
            break
        entries.append((tag, val))
    strtab = next((val for tag, val in entries if tag == DT_STRTAB), None)
    if strtab is None:
        raise ELFError("dynamic section without DT_STRTAB")
    base = file_offset(strtab)
    needed = tuple(_cstr(data, base + val) for tag, val in entries if tag == DT_NEEDED)
    runpath: list[str] = []
    for tag, val in entries:
        if tag in (DT_RUNPATH, DT_RPATH):
            runpath.extend(p for p in _cstr(data, base + val).split(":") if p)
    return DynamicInfo(interp, needed, tuple(runpath))


def section(data: bytes, name: str) -> bytes | None:
    """The contents of the section called ``name``, or None."""
    hdr = _header(data)
    shoff, shentsize, shnum, shstrndx = hdr[6], hdr[11], hdr[12], hdr[13]
    if shoff == 0 or shnum == 0:
        return None
    shdrs = [_SHDR.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]
    names_offset = shdrs[shstrndx][4]
    for sh_name, _type, _flags, _addr, sh_offset, sh_size, *_rest in shdrs:
        if _cstr(data, names_offset + sh_name) == name:
            return data[sh_offset : sh_offset + sh_size]
    return None


def modinfo(data: bytes) -> dict[str, list[str]]:
    """The ``key=value`` pairs of a kernel module's .modinfo section (like ``modinfo``)."""
    raw = section(data, ".modinfo")
    if raw is None:
        raise ELFError("no .modinfo section: not a kernel module")
    info: dict[str, list[str]] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.decode("utf-8", "replace").partition("=")
        if sep:
            info.setdefault(key, []).append(value)
    return info


def module_depends(data: bytes) -> list[str]:
    """The modules a kernel module depends on (``modinfo -F depends``)."""
    values = modinfo(data).get("depends", [])
    return [name for value in values for name in value.split(",") if name]


def strings(data: bytes, min_length: int = 4) -> list[str]:
    """Printable ASCII runs, like binutils ``strings``."""
    pattern = re.compile(rb"[\x20-\x7e]{%d,}" % min_length)
    return [m.group().decode("ascii") for m in pattern.finditer(data)]
