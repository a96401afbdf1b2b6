"""How hotplug changes a VM's params: the record of which devices the running VM has.

A hotplugged device becomes an entry of the VM's params (in its state, so it is kept in
the domain's metadata and every later design, migration or adoption sees it): a disk an
entry of ``images``, a NIC one of ``nics``, a memory module one of ``dimms``, each with
every per-object key set explicitly (a global ``image_snapshot = yes`` must not reach a
hotplugged disk).  The values the designer decided when it was attached are written
too (``drive_target``, ``drive_pci_slot``, ``drive_serial``, ``nic_pci_slot``), so a
domain designed again places it where it is.

Entries that were in the params before (``boot_drive = no``: attachable by name) only
have ``boot_drive`` switched, and keep their place.  A hotplugged NIC that is detached
stays as an entry with ``boot_drive = no``: NICs are known by their index (their MAC and
forwarded ports are keyed by it), so the entries after it must not move; the next
hotplugged NIC takes its place.

Pure functions of dictionaries: nothing here talks to a hypervisor.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from virtlib.errors import VMDeviceParamsError
from virtlib.params import Params
from virtlib.spec import DiskSpec, NicSpec

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,31}$")
DISK_PREFIX, NIC_PREFIX, DIMM_PREFIX = "hotdisk", "hotnic", "dimm"
REDIR_PREFIX = "hp"


def check_name(vm: str, name: str, taken: Sequence[str], what: str) -> str:
    """``name`` for a new params object (letters, digits, '-'; not taken)."""
    if not NAME_RE.match(name):
        why = "must be a letter, then up to 31 letters, digits or '-'"
        raise VMDeviceParamsError(vm, f"attach_{what.lower()}", "name", name, why)
    if name in taken:
        why = f"is taken: the VM has a {what} of that name already"
        raise VMDeviceParamsError(vm, f"attach_{what.lower()}", "name", name, why)
    return name


def new_name(prefix: str, taken: Sequence[str]) -> str:
    """``prefix1``, ``prefix2``, ...: the first one not ``taken``."""
    number = 1
    while f"{prefix}{number}" in taken:
        number += 1
    return f"{prefix}{number}"


def _objects(params: Mapping[str, str], key: str) -> list[str]:
    return Params(params).objects(key)


def _without_object(params: dict[str, str], key: str, name: str) -> None:
    """Drop ``name`` from the list ``key`` and every key of its own (``..._<name>``)."""
    names = [n for n in _objects(params, key) if n != name]
    params[key] = " ".join(names)
    for item in [k for k in params if k.endswith(f"_{name}")]:
        del params[item]


# --- disks ------------------------------------------------------------------------------------
def image_name(vm: str, path: str, fmt: str, raw_device: bool) -> str:
    """What ``image_name`` says for the file ``path`` (``image_format`` is appended to it)."""
    if raw_device:
        return path
    suffix = f".{fmt}"
    if not path.endswith(suffix) or len(path) == len(suffix):
        why = (
            f"must be named '<name>{suffix}' (virtlib names images by image_name and "
            "image_format, as avocado-vt does)"
        )
        raise VMDeviceParamsError(vm, "attach_disk", "path", path, why)
    return path[: -len(suffix)]


def with_disk(
    params: Mapping[str, str],
    images: Sequence[str],
    name: str,
    image: str,
    fmt: str,
    bus: str,
    readonly: bool,
    raw_device: bool,
    serial: str,
    target: str,
    pci_slot: int,
) -> dict[str, str]:
    """``params`` with a hotplugged disk ``name`` after ``images`` (the VM's, as its spec
    has them: defaults included)."""
    result = dict(params)
    result["images"] = " ".join([*images, name])
    keys = {
        "image_name": image,
        "image_format": fmt,
        "drive_format": bus,
        "image_readonly": _yes(readonly),
        "image_raw_device": _yes(raw_device),
        "image_snapshot": "no",
        "create_image": "no",
        "remove_image": "no",
        "boot_drive": "yes",
        "hotplugged": "yes",
        "drive_serial": serial,
        "drive_target": target,
        "drive_pci_slot": f"{pci_slot:#x}" if pci_slot else "",
    }
    result.update({f"{key}_{name}": value for key, value in keys.items()})
    return result


def with_disk_attached(params: Mapping[str, str], name: str, attached: bool) -> dict[str, str]:
    """``params`` with the configured disk (or NIC) ``name`` in the domain or out of it."""
    result = dict(params)
    result[f"boot_drive_{name}"] = _yes(attached)
    return result


def without_disk(params: Mapping[str, str], disk: DiskSpec) -> dict[str, str]:
    """``params`` after ``disk`` was detached: a hotplugged one's entry goes, a configured
    one stays there to be attached again (``boot_drive = no``)."""
    if not disk.hotplugged:
        return with_disk_attached(params, disk.name, False)
    result = dict(params)
    _without_object(result, "images", disk.name)
    return result


def pointing_disk(
    params: Mapping[str, str], disk: DiskSpec, image: str, fmt: str
) -> dict[str, str]:
    """``params`` whose disk ``disk`` now uses the file ``image`` (after a block job's
    pivot, or a pull that made its overlay whole): nothing to create, remove or put an
    overlay over."""
    result = dict(params)
    result[f"image_name_{disk.name}"] = image
    result[f"image_format_{disk.name}"] = fmt
    for key in ("image_raw_device", "image_snapshot", "create_image", "remove_image"):
        result[f"{key}_{disk.name}"] = "no"
    return result


def with_disk_order(params: Mapping[str, str], targets: Sequence[str]) -> dict[str, str]:
    """``params`` recording the order the running domain lists its disks in."""
    result = dict(params)
    result["disk_order"] = " ".join(targets)
    return result


# --- CD-ROMs ------------------------------------------------------------------------------------
def with_medium(params: Mapping[str, str], cdrom: str, path: str) -> dict[str, str]:
    """``params`` whose CD-ROM ``cdrom`` holds ``path`` ("" for none); the old medium's
    hashes do not apply to the new one."""
    result = dict(params)
    result[f"cdrom_{cdrom}"] = path
    result[f"md5sum_{cdrom}"] = ""
    result[f"sha1sum_{cdrom}"] = ""
    return result


# --- NICs ---------------------------------------------------------------------------------------
def with_nic(
    params: Mapping[str, str],
    nics: Sequence[str],
    name: str,
    nettype: str,
    model: str,
    mac: str,
    netdst: str,
    guest_ports: Sequence[int],
    pci_slot: int,
    reuse: NicSpec | None = None,
) -> dict[str, str]:
    """``params`` with a hotplugged NIC ``name``: after ``nics`` (the VM's, as its spec has
    them: the bundled guest's default ``nic1`` included), or in the place of the detached
    hotplugged NIC ``reuse`` (its index)."""
    result = dict(params)
    names = list(nics)
    if reuse is not None:
        _without_object(result, "nics", reuse.name)
        names[names.index(reuse.name)] = name
    else:
        names.append(name)
    result["nics"] = " ".join(names)
    redirs = [f"{REDIR_PREFIX}{port}" for port in guest_ports]
    keys = {
        "nettype": nettype,
        "nic_model": model,
        "nic_mac": mac,
        "netdst": netdst,
        "redirs": " ".join(redirs),
        "nic_pci_slot": f"{pci_slot:#x}" if pci_slot else "",
        "user_net_restrict": "no",
        "boot_drive": "yes",
        "hotplugged": "yes",
    }
    keys.update({f"guest_port_{r}": str(p) for r, p in zip(redirs, guest_ports, strict=True)})
    result.update({f"{key}_{name}": value for key, value in keys.items()})
    return result


# --- vCPUs and memory ----------------------------------------------------------------------------
def with_vcpus(params: Mapping[str, str], count: int) -> dict[str, str]:
    result = dict(params)
    result["smp"] = str(count)
    return result


def with_balloon(params: Mapping[str, str], mib: int) -> dict[str, str]:
    result = dict(params)
    result["mem_balloon"] = str(mib)
    return result


def with_dimm(
    params: Mapping[str, str], name: str, size_mib: int, slot: int, base: int
) -> dict[str, str]:
    result = dict(params)
    result["dimms"] = " ".join([*_objects(params, "dimms"), name])
    result[f"dimm_size_{name}"] = str(size_mib)
    result[f"dimm_slot_{name}"] = str(slot)
    result[f"dimm_base_{name}"] = f"{base:#x}"
    return result


def without_dimm(params: Mapping[str, str], name: str) -> dict[str, str]:
    result = dict(params)
    _without_object(result, "dimms", name)
    return result


def _yes(value: bool) -> str:
    return "yes" if value else "no"
