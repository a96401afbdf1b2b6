"""The bundled test guest: a tiny Linux made from Debian packages, built once and cached.

:func:`ensure_guest` returns a :class:`GuestImage` (kernel + initramfs for direct kernel
boot, no disk) that reaches a serial login prompt in seconds under QEMU TCG and serves
SSH and SFTP with fixed, known host keys.
"""

from virtlib.guest.builder import default_cache_dir, ensure_guest
from virtlib.guest.cli import build_command
from virtlib.guest.image import GuestBuildError, GuestImage, HostKey
from virtlib.guest.recipe import (
    CRASH_REGEX,
    DEFAULT_PASSWORD,
    KERNEL_ARGS,
    LOGIN_PROMPT,
    PASSWORD_PROMPT,
    RECIPE_VERSION,
    SHELL_PROMPT,
)

__all__ = [
    "CRASH_REGEX",
    "DEFAULT_PASSWORD",
    "KERNEL_ARGS",
    "LOGIN_PROMPT",
    "PASSWORD_PROMPT",
    "RECIPE_VERSION",
    "SHELL_PROMPT",
    "GuestBuildError",
    "GuestImage",
    "HostKey",
    "build_command",
    "default_cache_dir",
    "ensure_guest",
]
