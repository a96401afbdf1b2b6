"""virtlib's exception hierarchy.

Every class of the autotest ``virt_vm`` contract is here with the same name,
constructor arguments, attributes and ``str()`` message, rooted at
:class:`VMError`.  virtlib adds what the contract lacked: a family for remote
sessions, an error for operations a backend cannot do, a params error for bad
configuration, and errors for images and the libvirt connection.

When aexpect is installed, the shell errors (``ShellError`` and its
subclasses, and the ``Expect*`` timeouts of the read functions) also derive
from aexpect's classes of the same name, so tests written for avocado-vt catch
them with ``except aexpect.ShellCmdError:``.  Without aexpect they are
virtlib's own: nothing of aexpect is imported or needed (``AEXPECT`` says which).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast


def _import_aexpect() -> ModuleType | None:
    """aexpect, when it is installed (only then do the shell errors derive from its classes)."""
    try:
        return importlib.import_module("aexpect")
    except ImportError:
        return None


_aexpect = _import_aexpect()
#: True when the shell errors are also aexpect's (aexpect is installed).
AEXPECT = _aexpect is not None


def _peer(name: str) -> type:
    """aexpect's exception class ``name``; ``object`` (a base that adds nothing) without aexpect."""
    return cast(type, getattr(_aexpect, name, object))


if TYPE_CHECKING:

    class _AexpectShellError: ...

    class _AexpectShellTimeoutError: ...

    class _AexpectShellProcessTerminatedError: ...

    class _AexpectShellStatusError: ...

    class _AexpectShellCmdError: ...

    class _AexpectExpectTimeoutError: ...

    class _AexpectExpectProcessTerminatedError: ...

else:
    _AexpectShellError = _peer("ShellError")
    _AexpectShellTimeoutError = _peer("ShellTimeoutError")
    _AexpectShellProcessTerminatedError = _peer("ShellProcessTerminatedError")
    _AexpectShellStatusError = _peer("ShellStatusError")
    _AexpectShellCmdError = _peer("ShellCmdError")
    _AexpectExpectTimeoutError = _peer("ExpectTimeoutError")
    _AexpectExpectProcessTerminatedError = _peer("ExpectProcessTerminatedError")


class VMError(Exception):
    """Root of every error virtlib raises."""


class VMCreateError(VMError):
    """Starting the VM failed; ``cmd`` is what was run (for libvirt: the domain XML)."""

    def __init__(self, cmd: Any, status: Any, output: Any) -> None:
        VMError.__init__(self, cmd, status, output)
        self.cmd = cmd
        self.status = status
        self.output = output

    def __str__(self) -> str:
        return (
            f"VM creation command failed:    {self.cmd!r}    (status: {self.status},    "
            f"output: {self.output!r})"
        )


class VMHashMismatchError(VMError):
    def __init__(self, actual: str, expected: str) -> None:
        VMError.__init__(self, actual, expected)
        self.actual_hash = actual
        self.expected_hash = expected

    def __str__(self) -> str:
        return (
            f"CD image hash ({self.actual_hash}) differs from expected one ({self.expected_hash})"
        )


class VMImageMissingError(VMError):
    def __init__(self, filename: str) -> None:
        VMError.__init__(self, filename)
        self.filename = filename

    def __str__(self) -> str:
        return f"CD image file not found: {self.filename!r}"


class VMFileMissingError(VMImageMissingError):
    """A file the VM needs is missing (a VMImageMissingError, as the seed's callers catch):
    which file it is (``what``: "disk image 'disk1'", "kernel"), for which VM, the param
    behind it, and a ``hint``."""

    def __init__(
        self, filename: str, what: str, vm: str = "", param: str = "", hint: str = ""
    ) -> None:
        VMImageMissingError.__init__(self, filename)
        self.args = (filename, what, vm, param, hint)
        self.what = what
        self.vm = vm
        self.param = param
        self.hint = hint

    def __str__(self) -> str:
        text = f"VM {self.vm!r}: " if self.vm else ""
        text += f"{self.what} not found: {self.filename!r}"
        if self.param:
            text += f" (parameter {self.param!r})"
        return f"{text}; {self.hint}" if self.hint else text


class VMImageCheckError(VMError):
    def __init__(self, filename: str) -> None:
        VMError.__init__(self, filename)
        self.filename = filename

    def __str__(self) -> str:
        return f"Errors found on image: {self.filename!r}"


class VMBadPATypeError(VMError):
    def __init__(self, pa_type: str) -> None:
        VMError.__init__(self, pa_type)
        self.pa_type = pa_type

    def __str__(self) -> str:
        return f"Unsupported PCI assignable type: {self.pa_type!r}"


class VMPAError(VMError):
    def __init__(self, pa_type: str) -> None:
        VMError.__init__(self, pa_type)
        self.pa_type = pa_type

    def __str__(self) -> str:
        return f"No PCI assignable devices could be assigned (pci_assignable={self.pa_type!r})"


class VMPostCreateError(VMError):
    def __init__(self, cmd: Any, output: Any) -> None:
        VMError.__init__(self, cmd, output)
        self.cmd = cmd
        self.output = output


class VMHugePageError(VMPostCreateError):
    def __str__(self) -> str:
        return (
            f"Cannot allocate hugepage memory    (command: {self.cmd!r},    "
            f"output: {self.output!r})"
        )


class VMKVMInitError(VMPostCreateError):
    def __str__(self) -> str:
        return f"Cannot initialize KVM    (command: {self.cmd!r},    output: {self.output!r})"


class VMDeadError(VMError):
    def __init__(self, reason: str = "", detail: str = "") -> None:
        VMError.__init__(self)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        msg = "VM is dead"
        if self.reason:
            msg += f"    reason: {self.reason}"
        if self.detail:
            msg += f"    detail: {self.detail!r}"
        return msg


class VMDeadKernelCrashError(VMError):
    def __init__(self, kernel_crash: str) -> None:
        VMError.__init__(self, kernel_crash)
        self.kernel_crash = kernel_crash

    def __str__(self) -> str:
        return f"VM is dead due to a kernel crash:\n{self.kernel_crash}"


class VMAddressError(VMError):
    pass


class VMPortNotRedirectedError(VMAddressError):
    def __init__(self, port: int) -> None:
        VMAddressError.__init__(self, port)
        self.port = port

    def __str__(self) -> str:
        return f"Port not redirected: {self.port}"


class VMAddressVerificationError(VMAddressError):
    def __init__(self, mac: str, ip: str) -> None:
        VMAddressError.__init__(self, mac, ip)
        self.mac = mac
        self.ip = ip

    def __str__(self) -> str:
        return f"Cannot verify MAC-IP address mapping using arping: {self.mac} ---> {self.ip}"


class VMMACAddressMissingError(VMAddressError):
    def __init__(self, nic_index: int) -> None:
        VMAddressError.__init__(self, nic_index)
        self.nic_index = nic_index

    def __str__(self) -> str:
        return f"No MAC address defined for NIC #{self.nic_index}"


class VMIPAddressMissingError(VMAddressError):
    def __init__(self, mac: str) -> None:
        VMAddressError.__init__(self, mac)
        self.mac = mac

    def __str__(self) -> str:
        return f"Cannot find IP address for MAC address {self.mac}"


class VMMigrateError(VMError):
    pass


class VMMigrateTimeoutError(VMMigrateError):
    pass


class VMMigrateCancelError(VMMigrateError):
    pass


class VMMigrateFailedError(VMMigrateError):
    pass


class VMMigrateProtoUnsupportedError(VMMigrateError):
    pass


class VMMigrateStateMismatchError(VMMigrateError):
    def __init__(self, src_hash: str, dst_hash: str) -> None:
        VMMigrateError.__init__(self, src_hash, dst_hash)
        self.src_hash = src_hash
        self.dst_hash = dst_hash

    def __str__(self) -> str:
        return (
            f"Mismatch of VM state before and after migration ({self.src_hash} != {self.dst_hash})"
        )


class VMRebootError(VMError):
    pass


class VMStatusError(VMError):
    pass


# --- Added by virtlib -------------------------------------------------------


class VMParamsError(VMError, ValueError):
    """The configuration (params) is wrong: a bad value, a missing key, a malformed file."""


class VMParamsKeyError(VMParamsError, KeyError):
    """``params[key]`` for a key that is not there."""

    def __init__(self, key: str) -> None:
        VMParamsError.__init__(self, key)
        self.key = key

    def __str__(self) -> str:
        return f"missing parameter {self.key!r}"


class VMNotSupportedError(VMError):
    """The backend cannot do this operation (it is not a bug, it is a limit)."""

    def __init__(self, operation: str, backend: str, reason: str = "") -> None:
        VMError.__init__(self, operation, backend, reason)
        self.operation = operation
        self.backend = backend
        self.reason = reason

    def __str__(self) -> str:
        msg = f"{self.operation} is not supported by the {self.backend} backend"
        return f"{msg}: {self.reason}" if self.reason else msg


class VMNotFoundError(VMError):
    """No domain of that name (or UUID) exists on the hypervisor."""

    def __init__(self, name: str, uri: str = "") -> None:
        VMError.__init__(self, name, uri)
        self.name = name
        self.uri = uri

    def __str__(self) -> str:
        where = f" on {self.uri}" if self.uri else ""
        return f"no VM named {self.name!r}{where}"


class VMStateError(VMStatusError):
    """The VM is not in a state that allows the operation (e.g. migrate a stopped VM)."""


class HypervisorConnectionError(VMError):
    """The hypervisor (libvirtd) cannot be reached or dropped the connection."""

    def __init__(self, uri: str, message: str) -> None:
        VMError.__init__(self, uri, message)
        self.uri = uri
        self.message = message

    def __str__(self) -> str:
        return f"cannot talk to the hypervisor at {self.uri}: {self.message}"


class HypervisorError(VMError):
    """The hypervisor refused or failed an operation on a VM (libvirt's error, translated).

    ``operation`` says what was asked ("save", "pause"), ``name`` the VM, ``code``
    the hypervisor's own error code and ``detail`` its message.
    """

    def __init__(self, operation: str, name: str, detail: str, code: int | None = None) -> None:
        VMError.__init__(self, operation, name, detail, code)
        self.operation = operation
        self.name = name
        self.detail = detail
        self.code = code

    def __str__(self) -> str:
        target = f" {self.name!r}" if self.name else ""
        return f"cannot {self.operation}{target}: {self.detail}"


class VMTimeoutError(VMError):
    """An operation did not finish in time; the message says what was waited for."""


class VMAgentError(VMError):
    """The guest agent refused or failed a command (or the VM has no agent channel)."""


class VMAgentTimeoutError(VMAgentError, VMTimeoutError):
    """No guest agent answered in time: not installed, not started yet, or the guest hangs."""


class VMSnapshotError(VMError):
    """A snapshot operation failed or was refused; ``vm`` and ``snapshot`` name them and
    ``reason`` says why.  The VM is left as it was."""

    def __init__(self, vm: str, snapshot: str, reason: str) -> None:
        VMError.__init__(self, vm, snapshot, reason)
        self.vm = vm
        self.snapshot = snapshot
        self.reason = reason

    def __str__(self) -> str:
        return f"snapshot {self.snapshot!r} of VM {self.vm!r}: {self.reason}"


class VMSnapshotNotFoundError(VMSnapshotError):
    """The VM has no snapshot of that name; ``known`` lists the ones it has."""

    def __init__(self, vm: str, snapshot: str, known: Sequence[str] = ()) -> None:
        names = ", ".join(repr(n) for n in known) if known else "none"
        VMSnapshotError.__init__(self, vm, snapshot, f"no such snapshot (the VM has: {names})")
        self.args = (vm, snapshot, tuple(known))
        self.known = tuple(known)


class VMSnapshotKindError(VMSnapshotError):
    """The VM cannot take a snapshot of that kind (e.g. an internal snapshot of a guest
    without qcow2 disks, a snapshot of a VM that is not running)."""


class VMSnapshotRevertError(VMSnapshotError):
    """Going back to a snapshot failed; the VM runs as it did before the attempt
    (``reason`` says so when that was not possible)."""


class VMDeviceError(VMError):
    """A device operation on a running VM (hotplug, media change, vCPUs, memory, a block
    job) failed or was refused.  ``vm`` names the VM, ``device`` the device (a disk's name,
    a NIC, a CD-ROM, ``vcpus``, a DIMM) and ``reason`` says why.  Nothing is left
    half-attached: the VM has the device as it had before the call, unless ``reason``
    says otherwise."""

    def __init__(self, vm: str, device: str, reason: str) -> None:
        VMError.__init__(self, vm, device, reason)
        self.vm = vm
        self.device = device
        self.reason = reason

    def __str__(self) -> str:
        return f"VM {self.vm!r}, device {self.device!r}: {self.reason}"


class VMDeviceNotFoundError(VMDeviceError, VMParamsError):
    """The VM has no device of that name (bad input: nothing was asked of the hypervisor);
    ``known`` lists the ones it has."""

    def __init__(self, vm: str, device: str, known: Sequence[str] = ()) -> None:
        names = ", ".join(repr(n) for n in known) if known else "none"
        VMDeviceError.__init__(self, vm, device, f"no such device (the VM has: {names})")
        self.args = (vm, device, tuple(known))
        self.known = tuple(known)


class VMDeviceParamsError(VMDeviceError, VMParamsError):
    """Bad input to a device operation, refused before the hypervisor was asked (nothing
    was made or attached): ``param`` of ``operation`` had ``value``, and ``reason`` says
    what is wrong with it."""

    def __init__(self, vm: str, operation: str, param: str, value: object, reason: str) -> None:
        VMDeviceError.__init__(self, vm, operation, reason)
        self.args = (vm, operation, param, value, reason)
        self.operation = operation
        self.param = param
        self.value = value

    def __str__(self) -> str:
        return f"VM {self.vm!r}: {self.operation}: {self.param} {self.value!r} {self.reason}"


class VMDeviceAttachError(VMDeviceError):
    """The hypervisor refused or failed to attach the device; the VM is as it was."""


class VMDeviceDetachError(VMDeviceError):
    """The hypervisor refused to detach the device, or the guest did not release it."""


class VMDeviceTimeoutError(VMDeviceDetachError, VMTimeoutError):
    """The guest did not release the device before the deadline (it ignored the unplug
    request, or has no driver for it); the device is still attached."""


class VMBlockJobError(VMDeviceError):
    """A block job (commit, pull, copy) failed, was aborted or did not finish in time; the
    disk goes on with the image it had before the job."""


class ImageError(VMError):
    """An image operation (qemu-img) failed."""

    def __init__(self, argv: list[str], status: int | None, output: str) -> None:
        VMError.__init__(self, argv, status, output)
        self.argv = argv
        self.status = status
        self.output = output

    def __str__(self) -> str:
        output = self.output.strip()
        return f"{' '.join(self.argv)} failed (status {self.status}): {output}"


# --- Remote sessions ----------------------------------------------------------


class RemoteError(VMError):
    """Root of the errors of remote sessions (SSH, telnet, nc, serial)."""


class LoginError(RemoteError):
    """Logging into the guest failed; ``output`` is what the guest said."""

    def __init__(self, msg: str, output: str = "") -> None:
        RemoteError.__init__(self, msg, output)
        self.msg = msg
        self.output = output

    def __str__(self) -> str:
        tail = self.output[-300:].strip()
        return f"{self.msg}    (output: {tail!r})" if tail else self.msg


class LoginAuthenticationError(LoginError):
    """The guest refused the username or password (or key)."""


class LoginHostKeyError(LoginAuthenticationError):
    """The guest's SSH host key is unknown (strict policy) or changed: it is not trusted."""


class LoginTimeoutError(LoginError):
    """No prompt came before the deadline."""

    def __init__(self, output: str = "", timeout: float | None = None) -> None:
        msg = "Login timeout expired" + (f" after {timeout:g} s" if timeout else "")
        LoginError.__init__(self, msg, output)
        self.timeout = timeout
        self.args = (output, timeout)


class LoginBannerTimeoutError(LoginTimeoutError):
    """The server accepted the connection but sent no SSH banner in time: a forwarded port
    whose guest is down (QEMU's user network accepts anyway), or a very slow guest."""


class LoginProcessTerminatedError(LoginError):
    """The client process or connection ended while logging in."""

    def __init__(self, status: int | None = None, output: str = "") -> None:
        LoginError.__init__(self, f"Client process terminated (status: {status})", output)
        self.status = status
        self.args = (status, output)


class LoginBadClientError(LoginError):
    """The params name a shell client virtlib does not know."""

    def __init__(self, client: str, known: list[str]) -> None:
        LoginError.__init__(
            self, f"Unknown remote shell client {client!r} (known: {', '.join(known)})"
        )
        self.client = client
        self.known = known
        self.args = (client, known)


class ShellError(RemoteError, _AexpectShellError):
    """Root of errors of commands run in a shell session (also aexpect's, when installed)."""

    def __init__(self, cmd: str, output: str) -> None:
        RemoteError.__init__(self, cmd, output)
        self.cmd = cmd
        self.output = output

    def __str__(self) -> str:
        return f"Could not execute shell command {self.cmd!r}    (output: {self.output!r})"


class ShellTimeoutError(ShellError, _AexpectShellTimeoutError):
    def __str__(self) -> str:
        return (
            "Timeout expired while waiting for shell command to complete: "
            f"{self.cmd!r}    (output: {self.output!r})"
        )


class ShellProcessTerminatedError(ShellError, _AexpectShellProcessTerminatedError):
    def __init__(self, cmd: str, status: int | None, output: str) -> None:
        ShellError.__init__(self, cmd, output)
        self.status = status
        self.args = (cmd, status, output)

    def __str__(self) -> str:
        return (
            f"Shell process terminated while waiting for command to complete: {self.cmd!r}"
            f"    (status: {self.status},    output: {self.output!r})"
        )


class ShellStatusError(ShellError, _AexpectShellStatusError):
    """The status of the command could not be read."""

    def __str__(self) -> str:
        return f"Could not get exit status of command: {self.cmd!r}    (output: {self.output!r})"


class ShellCmdError(ShellError, _AexpectShellCmdError):
    """A command exited with a status that was not accepted."""

    def __init__(self, cmd: str, status: int, output: str) -> None:
        ShellError.__init__(self, cmd, output)
        self.status = status
        self.args = (cmd, status, output)

    def __str__(self) -> str:
        return (
            f"Shell command failed: {self.cmd!r}    (status: {self.status},    "
            f"output: {self.output!r})"
        )


def _patterns_text(patterns: Sequence[str]) -> str:
    return f"pattern {patterns[0]!r}" if len(patterns) == 1 else f"patterns {list(patterns)!r}"


class ExpectTimeoutError(ShellTimeoutError, _AexpectExpectTimeoutError):
    """Nothing matched before the deadline (read_until_*_matches, read_up_to_prompt).

    A ShellTimeoutError (as virtlib raised before) and, with aexpect, aexpect's
    ExpectTimeoutError; ``patterns`` are the patterns that were looked for.
    """

    def __init__(self, patterns: Sequence[str], output: str) -> None:
        ShellTimeoutError.__init__(self, _patterns_text(patterns), output)
        self.patterns = list(patterns)
        self.args = (patterns, output)

    def __str__(self) -> str:
        return (
            f"Timeout expired while looking for {_patterns_text(self.patterns)}"
            f"    (output: {self.output!r})"
        )


class ExpectProcessTerminatedError(
    ShellProcessTerminatedError, _AexpectExpectProcessTerminatedError
):
    """The transport ended while looking for patterns (see ExpectTimeoutError)."""

    def __init__(self, patterns: Sequence[str], status: int | None, output: str) -> None:
        ShellProcessTerminatedError.__init__(self, _patterns_text(patterns), status, output)
        self.patterns = list(patterns)
        self.args = (patterns, status, output)

    def __str__(self) -> str:
        return (
            f"Process terminated while looking for {_patterns_text(self.patterns)}"
            f"    (status: {self.status!r},    output: {self.output!r})"
        )


class TransferError(RemoteError):
    """Copying files to or from the guest failed."""

    def __init__(self, message: str, path: str = "") -> None:
        RemoteError.__init__(self, message, path)
        self.message = message
        self.path = path

    def __str__(self) -> str:
        return f"{self.message}: {self.path}" if self.path else self.message
