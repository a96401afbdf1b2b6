"""cloud-init NoCloud seeds: what the guest is told on its first boot, on a CD-ROM.

A seed is three small files on an ISO 9660 volume labelled ``cidata`` (cloud-init's
NoCloud datasource looks for that label): ``meta-data`` (instance id, host name),
``user-data`` (a ``#cloud-config`` document) and optionally ``network-config``.

virtlib's user-data creates the login user of the params (``username`` with
``password``, plus ``cloudinit_ssh_authorized_keys``), so the credentials virtlib logs
in with are exactly the ones the guest was given, and no image needs a password baked
in.  The password is stored as a sha512-crypt hash, never in clear.  For ``root`` it
also allows root's password over SSH (distributions ship ``PermitRootLogin
prohibit-password``); any other user gets passwordless sudo.  A ``cloudinit_user_data``
(or ``cloudinit_meta_data``) file replaces virtlib's document verbatim.

The documents are written as JSON, which YAML (and so cloud-init) reads as is.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from virtlib.errors import VMError, VMParamsError
from virtlib.spec import VMSpec

VOLUME_ID = "cidata"
ISO_TOOLS = ("genisoimage", "xorrisofs", "mkisofs")
"""Debian's genisoimage first; xorriso's and cdrtools' compatible front ends also do."""
ROOT_SSH_DROPIN = "/etc/ssh/sshd_config.d/00-virtlib-root-login.conf"
"""sshd takes the first value it reads, and reads the drop-ins in name order: 00 comes before
the distributions' own (Fedora's 50-redhat.conf, Ubuntu's 60-cloudimg-settings.conf)."""
CRYPT_RE = re.compile(r"\$6\$[./0-9A-Za-z]+\$[./0-9A-Za-z]+")


class CloudInitSeedError(VMError):
    """The seed could not be made (a tool is missing or failed)."""


@dataclass(frozen=True)
class Seed:
    """The text of the seed's files."""

    meta_data: str
    user_data: str = ""
    network_config: str | None = None

    def files(self) -> dict[str, str]:
        """File name on the volume -> content."""
        files = {"meta-data": self.meta_data, "user-data": self.user_data}
        if self.network_config is not None:
            files["network-config"] = self.network_config
        return files


def hash_password(password: str) -> str:
    """A sha512-crypt hash of ``password`` (``openssl passwd -6``; the password goes on
    stdin, never on the command line)."""
    try:
        proc = subprocess.run(
            ["openssl", "passwd", "-6", "-stdin"],
            input=password + "\n",
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        raise CloudInitSeedError(
            "openssl is needed to hash the cloud-init password (Debian package 'openssl')"
        ) from None
    hashed = proc.stdout.strip()
    if proc.returncode != 0 or not CRYPT_RE.fullmatch(hashed):
        raise CloudInitSeedError(f"openssl passwd -6 failed (status {proc.returncode})")
    return hashed


def read_authorized_keys(spec: VMSpec) -> list[str]:
    """The public keys of ``cloudinit_ssh_authorized_keys`` (authorized_keys format)."""
    path = spec.cloudinit.authorized_keys_file
    if path is None:
        return []
    try:
        text = path.read_text()
    except OSError as exc:
        raise VMParamsError(
            f"VM {spec.name!r}: parameter 'cloudinit_ssh_authorized_keys': cannot read "
            f"{str(path)!r}: {exc.strerror}"
        ) from None
    keys = [line.strip() for line in text.splitlines()]
    keys = [key for key in keys if key and not key.startswith("#")]
    if not keys:
        raise VMParamsError(
            f"VM {spec.name!r}: parameter 'cloudinit_ssh_authorized_keys': "
            f"{str(path)!r} holds no public key"
        )
    return keys


def _read_param_file(spec: VMSpec, key: str, path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise VMParamsError(
            f"VM {spec.name!r}: parameter {key!r}: cannot read {str(path)!r}: {exc.strerror}"
        ) from None


def user_data(username: str, password_hash: str, keys: list[str]) -> str:
    """virtlib's ``#cloud-config``: the login user, its password (hashed) and keys."""
    user: dict[str, object] = {"name": username, "lock_passwd": not password_hash}
    if password_hash:
        user["hashed_passwd"] = password_hash
    if keys:
        user["ssh_authorized_keys"] = keys
    config: dict[str, object] = {"users": [user], "ssh_pwauth": bool(password_hash)}
    if username == "root":
        config["disable_root"] = False
        if password_hash:
            config["write_files"] = [
                {
                    "path": ROOT_SSH_DROPIN,
                    "content": "# virtlib: root logs in with the password of its seed\n"
                    "PermitRootLogin yes\nPasswordAuthentication yes\n",
                    "permissions": "0644",
                }
            ]
    else:
        user["shell"] = "/bin/bash"
        user["sudo"] = "ALL=(ALL) NOPASSWD:ALL"
    return "#cloud-config\n" + json.dumps(config, indent=2) + "\n"


def meta_data(instance_id: str, hostname: str) -> str:
    """NoCloud meta-data: a new ``instance-id`` makes cloud-init run its first boot again."""
    return json.dumps({"instance-id": instance_id, "local-hostname": hostname}, indent=2) + "\n"


def build_seed(spec: VMSpec, instance_id: str) -> Seed:
    """The seed for ``spec`` (``cloudinit = yes``); files named in params are read here.

    :raises VMParamsError: a file named in params cannot be read, or has no key.
    :raises CloudInitSeedError: the password cannot be hashed.
    """
    ci = spec.cloudinit
    if ci.meta_data is not None:
        meta = _read_param_file(spec, "cloudinit_meta_data", ci.meta_data)
    else:
        meta = meta_data(f"virtlib-{instance_id}", ci.hostname)
    if ci.user_data is not None:
        user = _read_param_file(spec, "cloudinit_user_data", ci.user_data)
    else:
        login = spec.login
        password_hash = hash_password(login.password) if login.password else ""
        user = user_data(login.username, password_hash, read_authorized_keys(spec))
    network = None
    if ci.network_config is not None:
        network = _read_param_file(spec, "cloudinit_network_config", ci.network_config)
    return Seed(meta, user, network)


def iso_tool() -> str:
    """The first ISO 9660 writer on PATH."""
    for name in ISO_TOOLS:
        found = shutil.which(name)
        if found:
            return found
    raise CloudInitSeedError(
        "no ISO 9660 writer for the cloud-init seed: install the Debian package 'genisoimage'"
    )


def write_seed_iso(seed: Seed, path: Path) -> Path:
    """Write ``seed`` as an ISO 9660 volume ``cidata`` (Rock Ridge + Joliet) at ``path``.

    The files are staged in a private directory next to ``path``; the ISO is mode 0600
    (libvirt gives it to QEMU while the VM runs).  A failure leaves nothing behind.
    """
    tool = iso_tool()
    stage = Path(tempfile.mkdtemp(prefix=".seed-", dir=path.parent))
    try:
        names = []
        for name, content in seed.files().items():
            (stage / name).write_text(content)
            names.append(name)
        argv = [
            tool,
            "-quiet",
            "-input-charset",
            "utf-8",
            "-volid",
            VOLUME_ID,
            "-joliet",
            "-rock",
            "-output",
            str(path),
            *names,
        ]
        old_umask = os.umask(0o077)
        try:
            proc = subprocess.run(argv, cwd=stage, capture_output=True, text=True, check=False)
        finally:
            os.umask(old_umask)
        if proc.returncode != 0:
            path.unlink(missing_ok=True)
            detail = (proc.stderr or proc.stdout).strip()[-500:]
            raise CloudInitSeedError(
                f"{os.path.basename(tool)} failed (status {proc.returncode}): {detail}"
            )
        os.chmod(path, 0o600)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return path
