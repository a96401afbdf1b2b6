"""The typed VM specification, parsed once from Params at the edge.

Backends read a :class:`VMSpec`, never raw ``params.get("...")`` strings: a
bad value fails here, before anything is created, with a
:class:`~virtlib.errors.VMParamsError` naming the key.  The README's params
reference documents every key read here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from virtlib.errors import VMParamsError
from virtlib.image_types import check_size
from virtlib.params import Params
from virtlib.textutil import unescape

MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$")

SHELL_CLIENTS = ("ssh", "telnet", "nc")
NET_TYPES = ("user", "network", "bridge")
ACCELS = ("auto", "kvm", "tcg")
HYPERVISORS = ("auto", "qemu", "xen")
GUEST_MODES = ("hvm", "pv")
DISK_BUSES = ("virtio", "ide", "scsi", "sata", "usb", "xen")
DISK_FORMATS = ("qcow2", "raw", "qed", "vmdk", "vdi", "vpc", "vhdx", "luks")
PA_TYPES = ("no", "vf", "pf", "mixed")
LIFECYCLE_ACTIONS = (
    "destroy", "restart", "preserve", "rename-restart", "coredump-destroy", "coredump-restart"
)  # fmt: skip
CPU_MODES = ("", "host-passthrough", "host-model", "custom", "maximum")
# avocado-vt's names for "copy files over SSH": virtlib does both with SFTP on the SSH port.
FILE_TRANSFER_CLIENTS = ("sftp", "scp")
_FLAG_ON, _FLAG_OFF = ("on", "yes", "true"), ("off", "no", "false")
_CPU_FEATURE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
BUNDLED = "bundled"
MIGRATION_STORAGE = ("", "shared", "copy", "copy-incremental")
DISPLAYS = ("none", "vnc", "spice")


def _choice(params: Params, key: str, default: str, choices: tuple[str, ...]) -> str:
    value = params.get(key, default).strip()
    if value not in choices:
        raise VMParamsError(f"parameter {key!r} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _unescaped(params: Params, key: str, default: str) -> str:
    try:
        return unescape(params.get(key, default))
    except VMParamsError as exc:
        raise VMParamsError(f"parameter {key!r}: {exc}") from None


def _positive(params: Params, key: str, default: int) -> int:
    value = params.get_numeric(key, default)
    if value <= 0:
        raise VMParamsError(f"parameter {key!r} must be a positive integer; got {params[key]!r}")
    return value


def _port(params: Params, key: str, default: int) -> int:
    value = params.get_numeric(key, default)
    if not 0 < value < 65536:
        raise VMParamsError(f"parameter {key!r} must be a TCP port (1-65535); got {value}")
    return value


def resolve_path(root_dir: str | Path, filename: str) -> Path:
    """The seed's ``get_path``: absolute paths stay, relative ones hang off ``root_dir``."""
    return Path(os.path.join(root_dir, os.path.expanduser(filename)))


def image_filename(params: Params, root_dir: str | Path) -> Path:
    """The seed's ``get_image_filename``: ``image_name`` as is for raw devices, else
    ``<root_dir>/<image_name>.<image_format>``."""
    image_name = params.get("image_name", "image")
    if params.get_boolean("image_raw_device"):
        return Path(image_name)
    return resolve_path(root_dir, f"{image_name}.{params.get('image_format', 'qcow2')}")


def _guest_choice(params: Params) -> str:
    """``guest``: "bundled" (the default when no kernel, image or cdrom is given) or "none".

    ``initrd`` needs ``kernel`` (the bundled guest brings its own); ``kernel_args``
    without ``kernel`` are appended to the bundled guest's and have nothing to apply
    to on a guest that boots from its own disk or CD.
    """
    kernel = params.get("kernel", "").strip()
    has_boot_media = bool(kernel or params.objects("images") or params.objects("cdroms"))
    guest = params.get("guest", "none" if has_boot_media else BUNDLED).strip()
    if guest not in (BUNDLED, "none"):
        raise VMParamsError(f"parameter 'guest' must be 'bundled' or 'none'; got {guest!r}")
    if not kernel and params.get("initrd", "").strip():
        raise VMParamsError(
            f"parameter 'initrd' ({params['initrd']!r}) needs 'kernel' "
            "(the bundled guest brings its own initrd)"
        )
    if not kernel and guest != BUNDLED and params.get("kernel_args", "").strip():
        raise VMParamsError(
            f"parameter 'kernel_args' ({params['kernel_args']!r}) needs 'kernel': "
            "a guest that boots from its own disk or CD takes its kernel command line from there"
        )
    return guest


def bundled_defaults() -> Params:
    """Params the bundled guest needs unless the user says otherwise.

    Its SSH host keys are known (made when it was built), so they are verified
    strictly rather than trusted on first use.
    """
    from virtlib.guest import recipe

    return Params(
        username=recipe.USERNAME,
        password=recipe.DEFAULT_PASSWORD,
        shell_prompt=recipe.SHELL_PROMPT,
        nics="nic1",
        ssh_host_key_policy="strict",
    )


@dataclass(frozen=True)
class LoginSpec:
    """How to reach the guest's shell and copy files."""

    username: str = "root"
    password: str = field(default="", repr=False)
    shell_prompt: str = r"(?<![#$])[#$]\s*$"
    """Anchored (the echo of ``root@host:~# echo $?`` is no prompt), and one ``#`` or ``$``
    only: a console banner line of ``####`` (cloud-init prints them) is no prompt either."""
    linesep: str = "\n"
    status_test_command: str = "echo $?"
    shell_client: str = "ssh"
    shell_port: int = 22
    file_transfer_port: int = 22
    # "strict": only keys in known_hosts_file; "accept-new": trust on first use per VM
    # (the VM's own known_hosts file, which virtlib made empty when it created the VM).
    host_key_policy: str = "accept-new"
    known_hosts_file: str = ""

    @classmethod
    def from_params(cls, params: Params) -> LoginSpec:
        shell_client = _choice(params, "shell_client", "ssh", SHELL_CLIENTS)
        # "scp" (every avocado-vt Linux config says so) is served by SFTP too: the same SSH
        # server and port, and the protocol OpenSSH's own scp speaks since 9.0.
        _choice(params, "file_transfer_client", "sftp", FILE_TRANSFER_CLIENTS)
        return cls(
            username=params.get("username", "root"),
            password=params.get("password", ""),
            shell_prompt=params.get("shell_prompt", cls.shell_prompt),
            linesep=_unescaped(params, "shell_linesep", r"\n"),
            status_test_command=params.get("status_test_command", "echo $?"),
            shell_client=shell_client,
            shell_port=_port(params, "shell_port", 22),
            file_transfer_port=_port(params, "file_transfer_port", 22),
            host_key_policy=_choice(
                params, "ssh_host_key_policy", "accept-new", ("strict", "accept-new")
            ),
            known_hosts_file=params.get("ssh_known_hosts", ""),
        )


@dataclass(frozen=True)
class DiskSpec:
    """One entry of ``images``: a disk backed by an image file or a raw device."""

    name: str
    path: Path
    format: str
    bus: str
    readonly: bool
    raw_device: bool
    size: str
    create: bool
    remove: bool
    cluster_size: str = ""
    snapshot: bool = False
    """``image_snapshot``: the VM writes to a private copy-on-write overlay; the image
    itself is never written (see :mod:`virtlib.media`)."""
    index: int = 0
    """Its place in ``images`` (the designer names and places disks in that order)."""
    present: bool = True
    """``boot_drive`` (avocado-vt's key): ``no`` keeps the disk out of the domain until it
    is attached by name (its place is kept for it); hotplug writes it as the disk comes
    and goes."""
    serial: str = ""
    """``drive_serial``: the serial number the guest sees (``/dev/disk/by-id``)."""
    target: str = ""
    """``drive_target``: the target name a hotplugged disk was given (``vdb``)."""
    pci_slot: int = 0
    """``drive_pci_slot``: the PCI slot a hotplugged virtio disk was given."""
    hotplugged: bool = False
    """``hotplugged``: attached to the running VM rather than configured (its entry goes
    when it is detached)."""

    @classmethod
    def from_params(
        cls, name: str, params: Params, root_dir: str | Path, index: int = 0
    ) -> DiskSpec:
        raw = params.get_boolean("image_raw_device")
        fmt = _choice(params, "image_format", "qcow2", DISK_FORMATS)
        size = params.get("image_size", "10G")
        create = params.get_boolean("create_image")
        if create:
            try:
                check_size(size)
            except VMParamsError as exc:
                raise VMParamsError(f"parameter 'image_size' of image {name!r}: {exc}") from None
        snapshot = params.get_boolean("image_snapshot")
        if snapshot and raw:
            raise VMParamsError(
                f"disk {name!r}: 'image_snapshot = yes' needs an image file, "
                "not a raw device ('image_raw_device = yes')"
            )
        return cls(
            name=name,
            path=image_filename(params, root_dir),
            format="raw" if raw else fmt,
            bus=_choice(params, "drive_format", "virtio", DISK_BUSES),
            readonly=params.get_boolean("image_readonly"),
            raw_device=raw,
            size=size,
            create=create,
            remove=params.get_boolean("remove_image"),
            cluster_size=params.get("image_cluster_size", ""),
            snapshot=snapshot,
            index=index,
            present=params.get_boolean("boot_drive", True),
            serial=_serial(params, name),
            target=params.get("drive_target", "").strip(),
            pci_slot=_pci_slot(params, name, "drive_pci_slot", "image"),
            hotplugged=params.get_boolean("hotplugged"),
        )


@dataclass(frozen=True)
class CdromSpec:
    """One entry of ``cdroms``: an ISO file, optionally with an expected hash."""

    name: str
    path: Path | None
    md5sum: str
    sha1sum: str
    bus: str

    @classmethod
    def from_params(cls, name: str, params: Params, root_dir: str | Path) -> CdromSpec:
        iso = params.get("cdrom", "").strip()
        return cls(
            name=name,
            path=resolve_path(root_dir, iso) if iso else None,
            md5sum=params.get("md5sum", "").strip().lower(),
            sha1sum=params.get("sha1sum", "").strip().lower(),
            bus=_choice(params, "cd_format", "sata", ("ide", "sata", "scsi", "usb")),
        )


@dataclass(frozen=True)
class NicSpec:
    """One entry of ``nics``."""

    name: str
    index: int
    mac: str
    model: str
    nettype: str
    netdst: str
    guest_ports: tuple[int, ...]
    pci_slot: int = 0
    """``nic_pci_slot`` of a user-net NIC (0: the designer's default)."""
    restrict: bool = False
    """``user_net_restrict``: the guest reaches nothing beyond QEMU's own DHCP and the
    forwarded ports (QEMU's ``restrict=on``)."""
    present: bool = True
    """``boot_drive``: ``no`` keeps the NIC out of the domain until it is attached (its
    index, MAC and PCI slot are kept for it)."""
    hotplugged: bool = False
    """``hotplugged``: attached to the running VM rather than configured."""

    @classmethod
    def from_params(cls, name: str, index: int, params: Params, login: LoginSpec) -> NicSpec:
        mac = params.get("nic_mac", "").strip().lower()
        if mac and not MAC_RE.match(mac):
            raise VMParamsError(
                f"parameter 'nic_mac' of NIC {name!r}: {mac!r} is not a MAC address"
            )
        nettype = _choice(params, "nettype", "user", NET_TYPES)
        netdst = params.get("netdst", "default" if nettype == "network" else "")
        if nettype == "bridge" and not netdst:
            raise VMParamsError(f"NIC {name!r}: nettype 'bridge' needs 'netdst' (the bridge name)")
        ports: list[int] = []
        if nettype == "user":
            for redir in params.objects("redirs"):
                ports.append(_port(params, f"guest_port_{redir}", 0))
            if index == 0:
                ports += [login.shell_port, login.file_transfer_port]
        return cls(
            name=name,
            index=index,
            mac=mac,
            model=params.get("nic_model", "virtio"),
            nettype=nettype,
            netdst=netdst,
            guest_ports=tuple(dict.fromkeys(ports)),
            pci_slot=_pci_slot(params, name),
            restrict=params.get_boolean("user_net_restrict"),
            present=params.get_boolean("boot_drive", True),
            hotplugged=params.get_boolean("hotplugged"),
        )


def _pci_slot(params: Params, name: str, key: str = "nic_pci_slot", what: str = "NIC") -> int:
    """``nic_pci_slot`` (``drive_pci_slot``): a slot on PCI bus 0 (1-31, decimal or 0x hex);
    0 when not given."""
    text = params.get(key, "").strip()
    if not text:
        return 0
    try:
        slot = int(text, 0)
    except ValueError:
        slot = -1
    if not 1 <= slot <= 31:
        raise VMParamsError(
            f"parameter {key!r} of {what} {name!r} must be a PCI slot (1-31); got {text!r}"
        )
    return slot


SERIAL_RE = re.compile(r"^[A-Za-z0-9_.-]{1,20}$")
"""A disk serial: what virtio-blk passes whole (20 bytes) and udev puts in by-id names."""


def _serial(params: Params, disk: str) -> str:
    serial = params.get("drive_serial", "").strip()
    if serial and not SERIAL_RE.match(serial):
        raise VMParamsError(
            f"parameter 'drive_serial' of image {disk!r} must be 1-20 letters, digits, "
            f"'_', '.' or '-'; got {serial!r}"
        )
    return serial


@dataclass(frozen=True)
class DimmSpec:
    """A memory module hotplugged into the running VM (``dimms``; written by hotplug)."""

    name: str
    size_mib: int
    slot: int
    base: int = 0  # where the guest sees it (0: the hypervisor chose, not known yet)

    @classmethod
    def from_params(cls, name: str, params: Params) -> DimmSpec:
        return cls(
            name=name,
            size_mib=_positive(params, "dimm_size", 0),
            slot=params.get_numeric("dimm_slot", 0),
            base=params.get_numeric("dimm_base", 0),
        )


@dataclass(frozen=True)
class CpuMemorySpec:
    """What the VM may grow to while it runs: vCPUs up to ``vcpus_max``; memory modules into
    ``mem_slots`` slots up to ``mem_max_mib`` in all; the balloon's target."""

    vcpus_max: int
    mem_max_mib: int = 0
    mem_slots: int = 0
    dimms: tuple[DimmSpec, ...] = ()
    balloon_mib: int = 0  # ``mem_balloon``: the balloon's target (0: all of the memory)

    @classmethod
    def from_params(cls, params: Params, vcpus: int, mem_mib: int) -> CpuMemorySpec:
        """``vcpus_max`` (avocado-vt's ``vcpu_maxcpus``), ``mem_max`` and ``mem_slots``
        (avocado-vt's ``maxmem_mem`` and ``slots_mem``), ``dimms``, ``mem_balloon``."""
        max_key = "vcpus_max" if "vcpus_max" in params else "vcpu_maxcpus"
        vcpus_max = _positive(params, max_key, vcpus)
        if vcpus_max < vcpus:
            raise VMParamsError(
                f"parameter {max_key!r} ({vcpus_max}) must be at least 'smp' ({vcpus})"
            )
        mem_key = "mem_max" if "mem_max" in params else "maxmem_mem"
        slots_key = "mem_slots" if "mem_slots" in params else "slots_mem"
        slots = params.get_numeric(slots_key, 0)
        mem_max = params.get_numeric(mem_key, 0)
        if not 0 <= slots <= MAX_MEM_SLOTS:
            raise VMParamsError(
                f"parameter {slots_key!r} must be 0-{MAX_MEM_SLOTS}; got {params[slots_key]!r}"
            )
        if (slots > 0) != (mem_max > 0) or (slots and mem_max <= mem_mib):
            raise VMParamsError(
                f"memory hotplug needs both {mem_key!r} (more than 'mem', {mem_mib} MiB) "
                f"and {slots_key!r}; got {mem_key} = {params.get(mem_key, '')!r}, "
                f"{slots_key} = {params.get(slots_key, '')!r}"
            )
        dimms = tuple(
            DimmSpec.from_params(n, params.object_params(n)) for n in params.objects("dimms")
        )
        if dimms and not slots:
            raise VMParamsError("parameter 'dimms' needs 'mem_slots' and 'mem_max'")
        balloon = params.get_numeric("mem_balloon", 0)
        if not 0 <= balloon <= mem_mib + sum(d.size_mib for d in dimms):
            raise VMParamsError(f"parameter 'mem_balloon' is out of range: {balloon}")
        return cls(vcpus_max, mem_max, slots, dimms, balloon)


MAX_MEM_SLOTS = 255
"""QEMU's limit of memory slots on x86."""


@dataclass(frozen=True)
class CloudInitSpec:
    """A cloud-init NoCloud seed for the guest (``cloudinit = yes``); see virtlib.cloudinit.

    The seed creates ``username`` with ``password`` (the login params), so the
    credentials virtlib logs in with are the ones the guest was given.
    """

    enabled: bool = False
    hostname: str = ""
    authorized_keys_file: Path | None = None
    user_data: Path | None = None
    network_config: Path | None = None
    meta_data: Path | None = None

    @classmethod
    def from_params(cls, name: str, params: Params, root_dir: str | Path) -> CloudInitSpec:
        def path(key: str) -> Path | None:
            value = params.get(key, "").strip()
            return resolve_path(root_dir, value) if value else None

        enabled = params.get_boolean("cloudinit")
        hostname = params.get("cloudinit_hostname", "").strip() or _hostname_from(name)
        if not HOSTNAME_RE.match(hostname):
            raise VMParamsError(
                "parameter 'cloudinit_hostname' must be a host name "
                f"(letters, digits, '-', at most 63 characters); got {hostname!r}"
            )
        spec = cls(
            enabled=enabled,
            hostname=hostname,
            authorized_keys_file=path("cloudinit_ssh_authorized_keys"),
            user_data=path("cloudinit_user_data"),
            network_config=path("cloudinit_network_config"),
            meta_data=path("cloudinit_meta_data"),
        )
        given = [key for key in CLOUDINIT_FILE_KEYS if params.get(key, "").strip()]
        if given and not enabled:
            raise VMParamsError(
                f"{', '.join(repr(k) for k in given)} given, but 'cloudinit' "
                "is not 'yes' (no seed would be made)"
            )
        return spec


HOSTNAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
CLOUDINIT_FILE_KEYS = (
    "cloudinit_ssh_authorized_keys",
    "cloudinit_user_data",
    "cloudinit_network_config",
    "cloudinit_meta_data",
)


def _hostname_from(name: str) -> str:
    """A host name made from a VM name: other characters become '-', at most 63."""
    cleaned = re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-")[:63].strip("-")
    return cleaned or "virtlib"


@dataclass(frozen=True)
class CpuFeature:
    """One entry of ``cpu_model_flags``: a CPU feature the guest must have or must not."""

    name: str
    policy: str  # "require" or "disable", as libvirt's <feature policy=...>


def parse_cpu_flags(text: str) -> tuple[CpuFeature, ...]:
    """avocado-vt's ``cpu_model_flags`` (QEMU's ``-cpu`` flags): ``",+sse4.2,-avx,x2apic=on"``.

    ``+f``, ``f``, ``f=on`` require a feature; ``-f``, ``f=off`` disable it.  Other
    ``key=value`` options of ``-cpu`` (``vendor=``, ``family=``, ``hv-spinlocks=``)
    are not features and are refused.
    """
    features: dict[str, str] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        policy = "require"
        if sep:
            if value.strip().lower() not in _FLAG_ON + _FLAG_OFF:
                raise VMParamsError(
                    f"parameter 'cpu_model_flags': {item!r} is not a feature switch "
                    "(+flag, -flag, flag=on or flag=off)"
                )
            policy = "require" if value.strip().lower() in _FLAG_ON else "disable"
        elif name[0] in "+-":
            policy = "require" if name[0] == "+" else "disable"
            name = name[1:]
        name = name.strip()
        if not _CPU_FEATURE_RE.match(name):
            raise VMParamsError(f"parameter 'cpu_model_flags': bad feature name in {item!r}")
        features[name] = policy  # a later switch of the same feature wins, as in QEMU
    return tuple(CpuFeature(name, policy) for name, policy in features.items())


@dataclass(frozen=True)
class VMSpec:
    """Everything a backend needs to build and run one VM."""

    name: str
    vm_type: str
    connect_uri: str
    hypervisor: str
    accel: str
    guest_mode: str
    mem_mib: int
    vcpus: int
    cpu_mode: str
    cpu_model: str
    machine_type: str
    guest: str
    kernel: Path | None
    initrd: Path | None
    kernel_args: str
    disks: tuple[DiskSpec, ...]
    cdroms: tuple[CdromSpec, ...]
    nics: tuple[NicSpec, ...]
    on_crash: str
    on_reboot: str
    on_poweroff: str
    uuid: str
    hugepages: bool
    pvpanic: bool
    pci_assignable: str
    pci_devices_requested: int
    login: LoginSpec
    log_dir: Path | None
    mem_chk_cmd: str
    mem_chk_cur_cmd: str
    cpu_chk_cmd: str
    reboot_command: str
    shutdown_command: str
    shutdown_timeout: float
    migration_bandwidth_mib: int
    migration_storage: str = ""
    #: ``cpu_model_flags``: features to require or disable on top of the CPU model.
    cpu_features: tuple[CpuFeature, ...] = ()
    cloudinit: CloudInitSpec = CloudInitSpec()
    display: str = "none"
    """``none``, ``vnc`` or ``spice``: a graphical display on 127.0.0.1 (screenshots)."""
    display_password: str = field(default="", repr=False)
    """The display's password (generated per VM when not given; a secret: never stored
    in the domain's metadata)."""
    guest_agent: bool = True
    """A virtio-serial channel ``org.qemu.guest_agent.0`` for the QEMU guest agent."""
    standby_disks: tuple[DiskSpec, ...] = ()
    """Disks of ``images`` not in the domain (``boot_drive = no``): attachable by name."""
    growth: CpuMemorySpec = CpuMemorySpec(vcpus_max=1)
    """vCPU and memory hotplug limits, and the memory modules and balloon target now."""
    disk_order: tuple[str, ...] = ()
    """``disk_order``: the disk targets in the order the running domain lists them
    (written by hotplug: libvirt puts a hotplugged disk next to those of its bus)."""

    @classmethod
    def from_params(cls, name: str, params: Params, root_dir: str | Path = ".") -> VMSpec:
        """Parse and check every key a VM uses; raise VMParamsError on the first bad one.

        The error names the VM (``VM 'web1': parameter 'mem' ...``).
        """
        try:
            return cls._parse(name, params, root_dir)
        except VMParamsError as exc:
            if type(exc) is not VMParamsError or not name:
                raise
            raise VMParamsError(f"VM {name!r}: {exc}") from None

    @classmethod
    def _parse(cls, name: str, params: Params, root_dir: str | Path) -> VMSpec:
        """The parse behind from_params.  Long because it is one keyword per field of the
        spec, in the dataclass's order: split, the keys would scatter over helpers."""
        if not name or "/" in name or name != name.strip():
            raise VMParamsError(f"invalid VM name {name!r}")
        guest = _guest_choice(params)
        if guest == BUNDLED:
            merged = bundled_defaults()
            merged.update(params)
            params = merged
        login = LoginSpec.from_params(params)
        all_disks = tuple(
            DiskSpec.from_params(n, params.object_params(n), root_dir, index)
            for index, n in enumerate(params.objects("images"))
        )
        cdroms = tuple(
            CdromSpec.from_params(n, params.object_params(n), root_dir)
            for n in params.objects("cdroms")
        )
        nics = tuple(
            NicSpec.from_params(n, i, params.object_params(n), login)
            for i, n in enumerate(params.objects("nics"))
        )
        kernel = params.get("kernel", "").strip()
        initrd = params.get("initrd", "").strip()
        uuid = params.get("uuid", "").strip().lower()
        if uuid and uuid != "random" and not UUID_RE.match(uuid):
            raise VMParamsError(f"parameter 'uuid' must be 'random' or a UUID; got {uuid!r}")
        cpu_mode = params.get("cpu_mode", "").strip()
        if cpu_mode not in CPU_MODES:
            raise VMParamsError(
                f"parameter 'cpu_mode' must be one of {', '.join(CPU_MODES[1:])}; got {cpu_mode!r}"
            )
        # Checked by the backend against what it can assign (VMBadPATypeError), as in the seed.
        pci_assignable = params.get("pci_assignable", "no").strip()
        cloudinit = CloudInitSpec.from_params(name, params, root_dir)
        mem_mib, vcpus = _positive(params, "mem", 512), _positive(params, "smp", 1)
        if cloudinit.enabled and not (
            login.password or cloudinit.authorized_keys_file or cloudinit.user_data
        ):
            raise VMParamsError(
                "'cloudinit = yes' needs a 'password', "
                "'cloudinit_ssh_authorized_keys' or 'cloudinit_user_data' (the guest would "
                "have no way in)"
            )
        return cls(
            name=name,
            vm_type=params.get("vm_type", "libvirt"),
            connect_uri=params.get("connect_uri", "qemu:///system"),
            hypervisor=_choice(params, "hypervisor", "auto", HYPERVISORS),
            accel=_choice(params, "accel", "auto", ACCELS),
            guest_mode=_choice(params, "hvm_or_pv", "hvm", GUEST_MODES),
            mem_mib=mem_mib,
            vcpus=vcpus,
            cpu_mode=cpu_mode,
            cpu_model=params.get("cpu_model", "").strip(),
            machine_type=params.get("machine_type", "").strip(),
            guest=guest,
            kernel=resolve_path(root_dir, kernel) if kernel else None,
            initrd=resolve_path(root_dir, initrd) if initrd else None,
            kernel_args=params.get("kernel_args", ""),
            disks=tuple(d for d in all_disks if d.present),
            standby_disks=tuple(d for d in all_disks if not d.present),
            cdroms=cdroms,
            nics=nics,
            on_crash=_choice(params, "on_crash", "destroy", LIFECYCLE_ACTIONS),
            on_reboot=_choice(params, "on_reboot", "restart", LIFECYCLE_ACTIONS),
            on_poweroff=_choice(params, "on_poweroff", "destroy", LIFECYCLE_ACTIONS),
            uuid=uuid,
            hugepages=params.get_boolean("hugepage"),
            pvpanic=params.get_boolean("pvpanic", True),
            pci_assignable=pci_assignable,
            pci_devices_requested=_positive(params, "devices_requested", 1),
            login=login,
            log_dir=Path(params["log_dir"]) if params.get("log_dir") else None,
            mem_chk_cmd=params.get("mem_chk_cmd", "grep MemTotal /proc/meminfo"),
            mem_chk_cur_cmd=params.get("mem_chk_cur_cmd", "grep MemTotal /proc/meminfo"),
            cpu_chk_cmd=params.get("cpu_chk_cmd", "grep -c ^processor /proc/cpuinfo"),
            reboot_command=params.get("reboot_command", "reboot"),
            shutdown_command=params.get("shutdown_command", "poweroff"),
            shutdown_timeout=params.get_float("shutdown_timeout", 30.0),
            migration_bandwidth_mib=params.get_numeric("migration_bandwidth", 0),
            migration_storage=_choice(params, "migration_storage", "", MIGRATION_STORAGE),
            cpu_features=parse_cpu_flags(params.get("cpu_model_flags", "")),
            cloudinit=cloudinit,
            guest_agent=params.get_boolean("guest_agent", True),
            display=_choice(params, "display", "none", DISPLAYS),
            display_password=params.get("display_password", ""),
            growth=CpuMemorySpec.from_params(params, vcpus, mem_mib),
            disk_order=tuple(params.objects("disk_order")),
        )

    def writable_disks(self) -> tuple[DiskSpec, ...]:
        """Disks the guest can write (what a migration must share or copy)."""
        return tuple(disk for disk in self.disks if not disk.readonly)

    def nic(self, index: int) -> NicSpec | None:
        """NIC ``index`` of the domain (None for no such NIC, or one not attached now)."""
        nic = self.nics[index] if 0 <= index < len(self.nics) else None
        return nic if nic is not None and nic.present else None

    def planned_disks(self) -> tuple[DiskSpec, ...]:
        """Every entry of ``images``, attached or not, in its order (the designer keeps
        the place of a disk that is not attached)."""
        return tuple(sorted(self.disks + self.standby_disks, key=lambda d: d.index))

    @property
    def memory_mib(self) -> int:
        """All of the memory: ``mem`` and the memory modules hotplugged."""
        return self.mem_mib + sum(d.size_mib for d in self.growth.dimms)
