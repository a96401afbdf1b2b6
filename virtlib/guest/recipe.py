"""What goes into the test guest: packages, kernel modules and the text of its files.

Everything here is an input of the build key: change a script, a package list or
RECIPE_VERSION and the next :func:`~virtlib.guest.ensure_guest` builds a new guest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

RECIPE_VERSION = 5

HOSTNAME = "virtlib-guest"
USERNAME = "root"
DEFAULT_PASSWORD = "virtlib"  # noqa: S105 - the documented password of a throwaway test guest

KERNEL_ARGS = "console=tty0 console=ttyS0 quiet"
"""Serial console (the last ``console=``, so /dev/console) and the screen (tty0, with a getty
on tty1, so a screenshot shows the login prompt); ``quiet`` keeps boot chatter off the
consoles (oopses and panics still show: the kernel makes the console verbose for them;
WARN_ON traces do not).  A panic
halts the guest as on a real distribution (no ``panic=``): the pvpanic device tells
libvirt, which applies ``on_crash``."""

SHELL_PROMPT = r"^\[root@virtlib-guest [^\]]*\][#$] (?:\x1b\[6n)?$"
"""Matches the last line of output while the shell waits, e.g. ``[root@virtlib-guest ~]# ``
(apply it to the last line, or with ``re.MULTILINE`` to a buffer).  The build silences
busybox's cursor-position query (ESC[6n) after the prompt; the regex tolerates it anyway."""

LOGIN_PROMPT = r"virtlib-guest login: $"
PASSWORD_PROMPT = r"Password: $"  # noqa: S105 - a prompt, not a password
CRASH_REGEX = r"BUG:.*---\[ end trace .* \]---"
"""What a kernel oops looks like on the console (apply with ``re.DOTALL``)."""

KERNEL_METAPACKAGE = "linux-image-cloud-amd64"
USERLAND_PACKAGES = ("busybox-static", "dropbear-bin", "openssh-sftp-server", "qemu-guest-agent")
LIBRARY_SOURCES = ("dropbear-bin", "openssh-sftp-server", "qemu-guest-agent")
"""Packages whose library dependencies (and theirs) are downloaded for the ELF closure."""

GUEST_BINARIES = ("/usr/sbin/dropbear", "/usr/lib/openssh/sftp-server", "/usr/sbin/qemu-ga")
"""Dynamically linked programs copied into the guest with their libraries and loader."""

REQUIRED_MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_blk",
    "virtio_console",
    "button",  # ACPI power button -> input event KEY_POWER
    "evdev",  # /dev/input/event* for acpid
)
"""Loaded in this order (dependencies first); a module built into the kernel is skipped."""

OPTIONAL_MODULES = (
    "virtio_rng",
    "virtio_balloon",
    "pvpanic",
    "pvpanic_mmio",
    "virtio_scsi",  # disks on a virtio-scsi controller (hotplugged ones too)
    "sd_mod",
    "ata_piix",  # i440fx's IDE: CD-ROMs (the cloud kernel has no AHCI for SATA ones)
    "sr_mod",
    "isofs",
)
"""Loaded when the kernel package has them.  PCI, vCPU and memory hotplug (ACPI) are built
into Debian's cloud kernel; the uevent helper brings what is plugged in into use."""

HOST_KEY_TYPES = ("ed25519", "ecdsa", "rsa")


@dataclass(frozen=True)
class RecipeFile:
    """A file of the guest's root file system."""

    path: str
    content: str
    mode: int = 0o644


INITTAB = """\
# virtlib test guest: busybox init
::sysinit:/etc/init.d/rcS
ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100
tty1::respawn:/sbin/getty 38400 tty1
::ctrlaltdel:/sbin/reboot
::shutdown:/etc/init.d/rcK
"""

RCS = r"""#!/bin/sh
# virtlib test guest: bring the system up (busybox init "sysinit").
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc -o nosuid,nodev,noexec proc /proc
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=0620,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
echo on > /proc/sys/kernel/printk_devkmsg
hostname -F /etc/hostname
syslogd -C256 2>/dev/null || syslogd
# Kernel events from here on (the guest agent's channel, hotplugged devices).
uevent /usr/bin/virtlib-uevent >/dev/null 2>&1 &
while read -r module; do
    insmod "/lib/modules/$module.ko" || echo "rcS: cannot load module $module" >&2
done < /etc/modules
ip link set dev lo up
for dev in /sys/class/net/eth*; do
    [ -e "$dev" ] || continue
    name=${dev##*/}
    ip link set dev "$name" up
    # Waits for the lease (milliseconds with QEMU's user network), at most ~3 s without one.
    udhcpc -b -t 3 -T 1 -A 3 -i "$name" -p "/run/udhcpc.$name.pid" \
        -s /usr/share/udhcpc/default.script >"/var/log/udhcpc.$name.log" 2>&1
done
acpid -l /var/log/acpid.log
set --
for key in /etc/dropbear/dropbear_*_host_key; do
    set -- "$@" -r "$key"
done
# A 1 MiB receive window: the default 24 KiB caps copies over a slow or long path.
dropbear "$@" -p 22 -W 1048576 -P /run/dropbear.pid
# For the telnet and nc shell clients (reachable only through forwards a test asks for):
telnetd -p 23 -l /bin/login
nc -ll -p 2323 -e /usr/bin/virtlib-nc-shell &
# From here on NICs plugged in get DHCP from the uevent helper.
: > /run/booted
"""

UEVENT = r"""#!/bin/sh
# Run by busybox uevent for each kernel event, doing what udev rules do on a distribution:
# - a hotplugged vCPU is brought online, hotplugged memory online and movable (so that it
#   can be unplugged again);
# - a NIC plugged in after boot is brought up with DHCP (rcS does those there at boot);
# - a virtio disk with a serial gets /dev/disk/by-id/virtio-SERIAL;
# - a virtio-serial port gets the link udev would make (/dev/virtio-ports/NAME, once the
#   host has named it: a "change" event), and the QEMU guest agent starts on its channel.
case "$SUBSYSTEM/$ACTION" in
cpu/add)
    [ -w "/sys$DEVPATH/online" ] && echo 1 > "/sys$DEVPATH/online"
    exit 0 ;;
memory/add)
    grep -q offline "/sys$DEVPATH/state" 2>/dev/null && echo online_movable > "/sys$DEVPATH/state"
    exit 0 ;;
net/add)
    [ -e /run/booted ] || exit 0
    ip link set dev "$INTERFACE" up
    udhcpc -b -t 5 -T 1 -A 3 -i "$INTERFACE" -p "/run/udhcpc.$INTERFACE.pid" \
        -s /usr/share/udhcpc/default.script >"/var/log/udhcpc.$INTERFACE.log" 2>&1
    exit 0 ;;
net/remove)
    [ -e "/run/udhcpc.$INTERFACE.pid" ] && kill "$(cat "/run/udhcpc.$INTERFACE.pid")"
    exit 0 ;;
block/add)
    serial=$(cat "/sys$DEVPATH/serial" 2>/dev/null)
    if [ "$DEVTYPE" = disk ] && [ -n "$serial" ]; then
        mkdir -p /dev/disk/by-id
        ln -sf "../../$DEVNAME" "/dev/disk/by-id/virtio-$serial"
    fi
    exit 0 ;;
block/remove)
    for link in /dev/disk/by-id/*; do
        [ "$(readlink "$link")" = "../../$DEVNAME" ] && rm -f "$link"
    done
    exit 0 ;;
virtio-ports/add|virtio-ports/change) ;;
*) exit 0 ;;
esac
port=${DEVPATH##*/}
name=$(cat "/sys$DEVPATH/name" 2>/dev/null)
[ -n "$name" ] || exit 0
mkdir -p /dev/virtio-ports
ln -sf "../$port" "/dev/virtio-ports/$name"
if [ "$name" = org.qemu.guest_agent.0 ] && mkdir /run/qemu-ga.started 2>/dev/null; then
    qemu-ga -d -m virtio-serial -p "/dev/virtio-ports/$name" -t /run \
        -f /run/qemu-ga.pid -l /var/log/qemu-ga.log
fi
exit 0
"""

NC_SHELL = """#!/bin/sh
# A shell for nc connections (no terminal): prompt and errors on the connection too.
exec /bin/sh -l -i 2>&1
"""

RCK = r"""#!/bin/sh
# virtlib test guest: bring the system down (busybox init "shutdown").
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
sync
umount -a -r 2>/dev/null
sync
"""

PROFILE = r"""# virtlib test guest: login shells
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=${HOME:-/root}
export TERM=${TERM:-vt100}
PS1='[\u@\h \w]\$ '
export PS1
if [ -t 0 ]; then
    stty columns 4096 2>/dev/null
fi
"""

UDHCPC_SCRIPT = r"""#!/bin/sh
# udhcpc event handler: configure $interface from the DHCP lease.
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    ip link set dev "$interface" up
    ;;
bound|renew)
    if ! ip -4 addr show dev "$interface" | grep -q " $ip/${mask:-24} "; then
        ip -4 addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" broadcast + dev "$interface"
    fi
    if [ -n "$router" ]; then
        while ip route del default dev "$interface" 2>/dev/null; do :; done
        for gw in $router; do
            ip route add default via "$gw" dev "$interface" && break
        done
    fi
    : > /etc/resolv.conf
    [ -n "$domain" ] && echo "search $domain" >> /etc/resolv.conf
    for ns in $dns; do
        echo "nameserver $ns" >> /etc/resolv.conf
    done
    ;;
esac
exit 0
"""

POWER_BUTTON = r"""#!/bin/sh
# busybox acpid runs this for the ACPI power button (libvirt's shutdown, QEMU's
# system_powerdown): power off cleanly through init.
exec /sbin/poweroff
"""

OOPS = r"""#!/bin/sh
# virtlib-oops: print a real-looking kernel oops on the console (via /dev/kmsg, level 1,
# shown even with "quiet") so that crash detection can be tested without a real crash.
release=$(uname -r)
while IFS= read -r line; do
    printf '<1>%s\n' "$line" > /dev/kmsg
done <<EOF
BUG: kernel NULL pointer dereference, address: 0000000000000000
#PF: supervisor read access in kernel mode
#PF: error_code(0x0000) - not-present page
PGD 0 P4D 0
Oops: 0000 [#1] PREEMPT SMP NOPTI
CPU: 0 PID: $$ Comm: virtlib-oops Not tainted $release #1
Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.2-debian-1.16.2-1 04/01/2014
RIP: 0010:virtlib_oops_trigger+0x11/0x20
Code: 00 00 00 00 00 0f 1f 44 00 00 55 48 89 e5 <8b> 04 25 00 00 00 00 5d c3 cc cc cc cc
RSP: 0018:ffffa8d6c0103e48 EFLAGS: 00010246
RAX: 0000000000000000 RBX: 0000000000000000 RCX: 0000000000000000
RDX: 0000000000000000 RSI: 0000000000000000 RDI: 0000000000000000
RBP: ffffa8d6c0103e48 R08: 0000000000000000 R09: 0000000000000000
R10: 0000000000000000 R11: 0000000000000000 R12: 0000000000000000
R13: 0000000000000000 R14: 0000000000000000 R15: 0000000000000000
FS:  00007f3a1c2e6740(0000) GS:ffff8f0e0f800000(0000) knlGS:0000000000000000
CS:  0010 DS: 0000 ES: 0000 CR0: 0000000080050033
CR2: 0000000000000000 CR3: 0000000002a0a000 CR4: 00000000000006f0
Call Trace:
 <TASK>
 virtlib_oops_write+0x1d/0x30
 vfs_write+0xc9/0x3f0
 ksys_write+0x67/0xe0
 do_syscall_64+0x58/0xc0
 entry_SYSCALL_64_after_hwframe+0x64/0xce
 </TASK>
Modules linked in: virtio_net net_failover failover virtio_pci
CR2: 0000000000000000
---[ end trace 0000000000000000 ]---
EOF
"""

_ROOT_ENTRY = "root:{password_hash}:0:0:root:/root:/bin/sh\n"
PASSWD_TEMPLATE = _ROOT_ENTRY + "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
"""/etc/passwd; root's sha512-crypt hash is filled in at build time."""

STATIC_FILES = (
    RecipeFile("/etc/inittab", INITTAB),
    RecipeFile("/etc/init.d/rcS", RCS, 0o755),
    RecipeFile("/etc/init.d/rcK", RCK, 0o755),
    RecipeFile("/etc/profile", PROFILE),
    RecipeFile("/usr/share/udhcpc/default.script", UDHCPC_SCRIPT, 0o755),
    RecipeFile("/etc/acpi/PWRF/00000080", POWER_BUTTON, 0o755),
    RecipeFile("/usr/bin/virtlib-oops", OOPS, 0o755),
    RecipeFile("/usr/bin/virtlib-nc-shell", NC_SHELL, 0o755),
    RecipeFile("/usr/bin/virtlib-uevent", UEVENT, 0o755),
    RecipeFile("/etc/hostname", HOSTNAME + "\n"),
    RecipeFile("/etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n::1\tlocalhost\n"),
    RecipeFile("/etc/group", "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n"),
    RecipeFile("/etc/shells", "/bin/sh\n/bin/ash\n"),
    RecipeFile(
        "/etc/nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
    ),
    RecipeFile("/etc/issue", "virtlib test guest (\\r) on \\l\n\n"),
)

DIRECTORIES = (
    ("/bin", 0o755),
    ("/sbin", 0o755),
    ("/usr/bin", 0o755),
    ("/usr/sbin", 0o755),
    ("/lib", 0o755),
    ("/lib/modules", 0o755),
    ("/etc", 0o755),
    ("/etc/dropbear", 0o700),
    ("/dev", 0o755),
    ("/proc", 0o555),
    ("/sys", 0o555),
    ("/run", 0o755),
    ("/tmp", 0o1777),  # noqa: S108 - a path in the guest
    ("/root", 0o700),
    ("/var", 0o755),
    ("/var/log", 0o755),
    ("/mnt", 0o755),
)


SYMLINKS = (("/init", "bin/busybox"), ("/var/run", "../run"))
"""Besides busybox's applet links and the link to dropbear's compiled-in sftp-server path."""


def passwd_file(password_hash: str) -> str:
    """/etc/passwd with root's crypt hash in place (busybox login and dropbear accept it)."""
    if ":" in password_hash or "\n" in password_hash:
        raise ValueError("not a crypt hash")
    return PASSWD_TEMPLATE.format(password_hash=password_hash)


def recipe_description(password: str = DEFAULT_PASSWORD) -> dict[str, object]:
    """Every recipe input of the build key, as JSON-able data."""
    return {
        "recipe_version": RECIPE_VERSION,
        "hostname": HOSTNAME,
        "username": USERNAME,
        "password_sha256": hashlib.sha256(password.encode()).hexdigest(),
        "kernel_args": KERNEL_ARGS,
        "shell_prompt": SHELL_PROMPT,
        "kernel_metapackage": KERNEL_METAPACKAGE,
        "userland_packages": list(USERLAND_PACKAGES),
        "library_sources": list(LIBRARY_SOURCES),
        "guest_binaries": list(GUEST_BINARIES),
        "required_modules": list(REQUIRED_MODULES),
        "optional_modules": list(OPTIONAL_MODULES),
        "host_key_types": list(HOST_KEY_TYPES),
        "passwd": PASSWD_TEMPLATE,
        "directories": [[path, mode] for path, mode in DIRECTORIES],
        "symlinks": [list(link) for link in SYMLINKS],
        "files": [[f.path, f.mode, f.content] for f in STATIC_FILES],
    }


def recipe_text(password: str = DEFAULT_PASSWORD) -> str:
    """The canonical text of the recipe (what the build key hashes)."""
    return json.dumps(recipe_description(password), sort_keys=True, separators=(",", ":"))
