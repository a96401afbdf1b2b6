"""The exception hierarchy: the seed's ``virt_vm`` classes kept exactly, plus virtlib's own.

The expected messages below are built from the seed's own ``%`` format strings
(copied from autotest's virt_vm.py), not from virtlib's f-strings, so a drift in
wording, spacing or repr-vs-str shows up here.
"""

# The expected messages use the seed's own %-format strings on purpose.
# ruff: noqa: UP031

from __future__ import annotations

import inspect
import pickle
from pathlib import Path
from typing import Any

import pytest

import virtlib
from virtlib import errors

SEED_FILE = Path(__file__).parent / "data" / "seed_virt_vm_errors.py.txt"

CMD = "qemu-kvm -name 'vm1' -m 512"
OUTPUT = "line one\nline 'two'"

# (class, seed base class, constructor args, attributes the seed sets, str() per the seed)
SEED_CASES: list[tuple[str, str, tuple[Any, ...], dict[str, Any], str]] = [
    (
        "VMCreateError",
        "VMError",
        (CMD, 1, OUTPUT),
        {"cmd": CMD, "status": 1, "output": OUTPUT},
        "VM creation command failed:    %r    (status: %s,    output: %r)" % (CMD, 1, OUTPUT),
    ),
    (
        "VMHashMismatchError",
        "VMError",
        ("abc123", "def456"),
        {"actual_hash": "abc123", "expected_hash": "def456"},
        "CD image hash (%s) differs from expected one (%s)" % ("abc123", "def456"),
    ),
    (
        "VMImageMissingError",
        "VMError",
        ("/images/it's.iso",),
        {"filename": "/images/it's.iso"},
        "CD image file not found: %r" % "/images/it's.iso",
    ),
    (
        "VMImageCheckError",
        "VMError",
        ("/images/disk.qcow2",),
        {"filename": "/images/disk.qcow2"},
        "Errors found on image: %r" % "/images/disk.qcow2",
    ),
    (
        "VMBadPATypeError",
        "VMError",
        ("weird",),
        {"pa_type": "weird"},
        "Unsupported PCI assignable type: %r" % "weird",
    ),
    (
        "VMPAError",
        "VMError",
        ("vf",),
        {"pa_type": "vf"},
        "No PCI assignable devices could be assigned (pci_assignable=%r)" % "vf",
    ),
    (
        "VMHugePageError",
        "VMPostCreateError",
        (CMD, OUTPUT),
        {"cmd": CMD, "output": OUTPUT},
        "Cannot allocate hugepage memory    (command: %r,    output: %r)" % (CMD, OUTPUT),
    ),
    (
        "VMKVMInitError",
        "VMPostCreateError",
        (CMD, OUTPUT),
        {"cmd": CMD, "output": OUTPUT},
        "Cannot initialize KVM    (command: %r,    output: %r)" % (CMD, OUTPUT),
    ),
    (
        "VMDeadKernelCrashError",
        "VMError",
        ("BUG: oops\n---[ end trace 1 ]---",),
        {"kernel_crash": "BUG: oops\n---[ end trace 1 ]---"},
        "VM is dead due to a kernel crash:\n%s" % "BUG: oops\n---[ end trace 1 ]---",
    ),
    (
        "VMPortNotRedirectedError",
        "VMAddressError",
        (22,),
        {"port": 22},
        "Port not redirected: %s" % 22,
    ),
    (
        "VMAddressVerificationError",
        "VMAddressError",
        ("52:54:00:12:34:56", "10.0.2.15"),
        {"mac": "52:54:00:12:34:56", "ip": "10.0.2.15"},
        "Cannot verify MAC-IP address mapping using arping: %s ---> %s"
        % ("52:54:00:12:34:56", "10.0.2.15"),
    ),
    (
        "VMMACAddressMissingError",
        "VMAddressError",
        (3,),
        {"nic_index": 3},
        "No MAC address defined for NIC #%s" % 3,
    ),
    (
        "VMIPAddressMissingError",
        "VMAddressError",
        ("52:54:00:12:34:56",),
        {"mac": "52:54:00:12:34:56"},
        "Cannot find IP address for MAC address %s" % "52:54:00:12:34:56",
    ),
    (
        "VMMigrateStateMismatchError",
        "VMMigrateError",
        ("aaa", "bbb"),
        {"src_hash": "aaa", "dst_hash": "bbb"},
        "Mismatch of VM state before and after migration (%s != %s)" % ("aaa", "bbb"),
    ),
]

# Classes of the seed without their own __init__/__str__, and their seed base class.
SEED_PLAIN = {
    "VMError": "Exception",
    "VMPostCreateError": "VMError",
    "VMAddressError": "VMError",
    "VMMigrateError": "VMError",
    "VMMigrateTimeoutError": "VMMigrateError",
    "VMMigrateCancelError": "VMMigrateError",
    "VMMigrateFailedError": "VMMigrateError",
    "VMMigrateProtoUnsupportedError": "VMMigrateError",
    "VMRebootError": "VMError",
    "VMStatusError": "VMError",
    "VMDeadError": "VMError",
}

SEED_NAMES = sorted({case[0] for case in SEED_CASES} | set(SEED_PLAIN))


def _seed_base(name: str) -> str:
    for case in SEED_CASES:
        if case[0] == name:
            return case[1]
    return SEED_PLAIN[name]


def _load_seed() -> dict[str, type]:
    """The seed's exception classes, executed from the seed's class block (plain Python; the
    rest of the seed is Python 2 and needs autotest), kept in tests/unit/data."""
    namespace: dict[str, Any] = {}
    exec(compile(SEED_FILE.read_text(), str(SEED_FILE), "exec"), namespace)  # noqa: S102 - our data
    return {k: v for k, v in namespace.items() if isinstance(v, type) and issubclass(v, Exception)}


# --- the seed's classes -------------------------------------------------------------------


def test_seed_list_is_complete() -> None:
    """The table above names every exception class of the seed (guards the other tests)."""
    assert set(_load_seed()) == set(SEED_NAMES)


@pytest.mark.parametrize("name", SEED_NAMES)
def test_seed_class_exists_and_is_reexported(name: str) -> None:
    cls = getattr(errors, name)
    assert isinstance(cls, type)
    assert issubclass(cls, Exception)
    assert getattr(virtlib, name) is cls
    assert name in virtlib.__all__


@pytest.mark.parametrize("name", SEED_NAMES)
def test_seed_hierarchy(name: str) -> None:
    cls = getattr(errors, name)
    base = _seed_base(name)
    assert base in [b.__name__ for b in cls.__bases__]
    if name != "VMError":
        assert issubclass(cls, errors.VMError)
        assert issubclass(cls, getattr(errors, base))


@pytest.mark.parametrize(
    ("sub", "base"),
    [
        ("VMHugePageError", "VMPostCreateError"),
        ("VMKVMInitError", "VMPostCreateError"),
        ("VMPortNotRedirectedError", "VMAddressError"),
        ("VMAddressVerificationError", "VMAddressError"),
        ("VMMACAddressMissingError", "VMAddressError"),
        ("VMIPAddressMissingError", "VMAddressError"),
        ("VMMigrateTimeoutError", "VMMigrateError"),
        ("VMMigrateCancelError", "VMMigrateError"),
        ("VMMigrateFailedError", "VMMigrateError"),
        ("VMMigrateProtoUnsupportedError", "VMMigrateError"),
        ("VMMigrateStateMismatchError", "VMMigrateError"),
    ],
)
def test_catching_the_base_catches_the_subclass(sub: str, base: str) -> None:
    """Tests written against the seed catch the family, e.g. ``except VMMigrateError``."""
    cls = getattr(errors, sub)
    args = next((c[2] for c in SEED_CASES if c[0] == sub), ())
    with pytest.raises(getattr(errors, base)):
        raise cls(*args)


@pytest.mark.parametrize(("name", "base", "args", "attrs", "text"), SEED_CASES)
def test_seed_constructor_attributes_and_message(
    name: str, base: str, args: tuple[Any, ...], attrs: dict[str, Any], text: str
) -> None:
    exc = getattr(errors, name)(*args)
    for attr, value in attrs.items():
        assert getattr(exc, attr) == value, attr
    assert str(exc) == text
    assert exc.args == args


@pytest.mark.parametrize(("name", "base", "args", "attrs", "text"), SEED_CASES)
def test_seed_constructor_accepts_keywords(
    name: str, base: str, args: tuple[Any, ...], attrs: dict[str, Any], text: str
) -> None:
    """The constructor's parameter names are part of the contract (callers use keywords)."""
    cls = getattr(errors, name)
    names = list(inspect.signature(cls.__init__).parameters)[1:]
    exc = cls(**dict(zip(names, args, strict=True)))
    assert str(exc) == text


@pytest.mark.parametrize(
    ("args", "text"),
    [
        ((), "VM is dead"),
        (("crashed",), "VM is dead    reason: %s" % "crashed"),
        (("", "dmesg 'x'"), "VM is dead    detail: %r" % "dmesg 'x'"),
        (
            ("crashed", "dmesg 'x'"),
            "VM is dead    reason: %s    detail: %r" % ("crashed", "dmesg 'x'"),
        ),
    ],
)
def test_vm_dead_error_message(args: tuple[str, ...], text: str) -> None:
    exc = errors.VMDeadError(*args)
    assert str(exc) == text
    assert exc.reason == (args[0] if args else "")
    assert exc.detail == (args[1] if len(args) > 1 else "")


def test_vm_dead_error_keywords() -> None:
    exc = errors.VMDeadError(detail="gone", reason="shutdown")
    assert (exc.reason, exc.detail) == ("shutdown", "gone")


@pytest.mark.parametrize("name", sorted(set(SEED_PLAIN) - {"VMDeadError", "VMPostCreateError"}))
def test_plain_seed_classes_behave_like_exception(name: str) -> None:
    exc = getattr(errors, name)("something failed", 7)
    assert exc.args == ("something failed", 7)
    assert str(errors.VMError("just a message")) == "just a message"
    assert str(getattr(errors, name)("just a message")) == "just a message"


def test_post_create_error_keeps_cmd_and_output() -> None:
    exc = errors.VMPostCreateError(CMD, OUTPUT)
    assert (exc.cmd, exc.output, exc.args) == (CMD, OUTPUT, (CMD, OUTPUT))


@pytest.mark.parametrize("name", SEED_NAMES)
def test_same_as_the_seed_file(name: str) -> None:
    """Cross-check against the seed's classes themselves: signature, base, args, str, attrs."""
    seed_cls = _load_seed()[name]
    cls = getattr(errors, name)
    assert cls.__bases__[0].__name__ == seed_cls.__bases__[0].__name__

    def params(c: type) -> list[tuple[str, Any]]:
        if "__init__" not in vars(c) and c.__init__ is Exception.__init__:
            return [("*args", None)]
        sig = inspect.signature(c.__init__)
        return [(p.name, p.default) for p in list(sig.parameters.values())[1:]]

    assert params(cls) == params(seed_cls)
    args = next((c[2] for c in SEED_CASES if c[0] == name), ("reason 'r'", "detail"))
    if name in SEED_PLAIN and name != "VMDeadError":
        args = ("a message", 3) if name != "VMPostCreateError" else (CMD, OUTPUT)
    ours, theirs = cls(*args), seed_cls(*args)
    assert str(ours) == str(theirs)
    assert ours.args == theirs.args
    assert vars(ours) == vars(theirs)


# --- virtlib's additions ----------------------------------------------------------------

ADDED = [
    "VMParamsError",
    "VMParamsKeyError",
    "VMNotSupportedError",
    "VMNotFoundError",
    "VMStateError",
    "HypervisorConnectionError",
    "HypervisorError",
    "VMTimeoutError",
    "VMFileMissingError",
    "VMAgentError",
    "VMAgentTimeoutError",
    "LoginBannerTimeoutError",
    "VMSnapshotError",
    "VMSnapshotNotFoundError",
    "VMSnapshotKindError",
    "VMSnapshotRevertError",
    "VMDeviceError",
    "VMDeviceNotFoundError",
    "VMDeviceParamsError",
    "VMDeviceAttachError",
    "VMDeviceDetachError",
    "VMDeviceTimeoutError",
    "VMBlockJobError",
    "ImageError",
    "RemoteError",
    "LoginError",
    "LoginAuthenticationError",
    "LoginHostKeyError",
    "LoginTimeoutError",
    "LoginProcessTerminatedError",
    "LoginBadClientError",
    "ShellError",
    "ShellTimeoutError",
    "ShellProcessTerminatedError",
    "ShellStatusError",
    "ShellCmdError",
    "ExpectTimeoutError",
    "ExpectProcessTerminatedError",
    "TransferError",
]


@pytest.mark.parametrize("name", ADDED)
def test_added_class_is_a_vm_error_and_reexported(name: str) -> None:
    cls = getattr(errors, name)
    assert issubclass(cls, errors.VMError)
    assert getattr(virtlib, name) is cls
    assert name in virtlib.__all__


def test_every_exception_in_errors_is_reexported() -> None:
    defined = [
        name
        for name, obj in vars(errors).items()
        if isinstance(obj, type)
        and issubclass(obj, Exception)
        and obj.__module__ == errors.__name__
    ]
    assert sorted(defined) == sorted(SEED_NAMES + ADDED)
    missing = [n for n in defined if getattr(virtlib, n, None) is not getattr(errors, n)]
    assert missing == []


def test_params_error_is_also_value_error() -> None:
    with pytest.raises(ValueError, match="bad value"):
        raise errors.VMParamsError("bad value")
    assert issubclass(errors.VMParamsError, errors.VMError)


def test_params_key_error_is_a_key_error_naming_the_key() -> None:
    exc = errors.VMParamsKeyError("image_size")
    assert isinstance(exc, KeyError)
    assert isinstance(exc, errors.VMParamsError)
    assert exc.key == "image_size"
    assert exc.args[0] == "image_size"
    assert "image_size" in str(exc)
    with pytest.raises(KeyError):
        raise exc


def test_not_supported_error() -> None:
    exc = errors.VMNotSupportedError("migrate", "xen", "no shared storage")
    assert (exc.operation, exc.backend, exc.reason) == ("migrate", "xen", "no shared storage")
    for word in ("migrate", "xen", "no shared storage"):
        assert word in str(exc)
    assert "migrate" in str(errors.VMNotSupportedError("migrate", "xen"))
    assert not str(errors.VMNotSupportedError("migrate", "xen")).endswith(":")


def test_not_found_and_state_and_connection_errors() -> None:
    nf = errors.VMNotFoundError("vm1", "qemu:///system")
    assert (nf.name, nf.uri) == ("vm1", "qemu:///system")
    assert "vm1" in str(nf)
    assert "qemu:///system" in str(nf)
    assert issubclass(errors.VMStateError, errors.VMStatusError)
    hc = errors.HypervisorConnectionError("qemu:///system", "connection refused")
    assert (hc.uri, hc.message) == ("qemu:///system", "connection refused")
    assert "connection refused" in str(hc)
    assert "qemu:///system" in str(hc)


def test_image_error_carries_argv_status_output() -> None:
    argv = ["qemu-img", "create", "-f", "qcow2", "/x.qcow2", "1G"]
    exc = errors.ImageError(argv, 1, "qemu-img: boom\n")
    assert (exc.argv, exc.status, exc.output) == (argv, 1, "qemu-img: boom\n")
    assert "qemu-img create -f qcow2 /x.qcow2 1G" in str(exc)
    assert "qemu-img: boom" in str(exc)
    assert "1" in str(exc)


def test_remote_family_hierarchy() -> None:
    for name in ("LoginError", "ShellError", "TransferError"):
        assert issubclass(getattr(errors, name), errors.RemoteError)
    for name in (
        "LoginAuthenticationError",
        "LoginTimeoutError",
        "LoginProcessTerminatedError",
        "LoginBadClientError",
    ):
        assert issubclass(getattr(errors, name), errors.LoginError)
    for name in ("ShellTimeoutError", "ShellProcessTerminatedError", "ShellStatusError"):
        assert issubclass(getattr(errors, name), errors.ShellError)
    assert issubclass(errors.ShellCmdError, errors.ShellError)
    # A shell error is not a login error: retrying a login must not swallow a failed command.
    assert not issubclass(errors.ShellError, errors.LoginError)


def test_login_error_message_and_output() -> None:
    exc = errors.LoginAuthenticationError("Permission denied", "Password: \nPermission denied")
    assert exc.msg == "Permission denied"
    assert exc.output == "Password: \nPermission denied"
    assert str(exc).startswith("Permission denied")
    assert str(errors.LoginError("no prompt")) == "no prompt"


def test_login_error_message_keeps_the_end_of_long_output() -> None:
    output = "start-marker " + "x" * 1000 + " end-marker"
    text = str(errors.LoginError("failed", output))
    assert "end-marker" in text
    assert "start-marker" not in text


def test_login_timeout_error() -> None:
    exc = errors.LoginTimeoutError("login: ", 7.5)
    assert exc.timeout == 7.5
    assert exc.output == "login: "
    assert "7.5" in str(exc)
    assert "timeout" in str(exc).lower()
    assert errors.LoginTimeoutError().timeout is None


def test_login_process_terminated_error() -> None:
    exc = errors.LoginProcessTerminatedError(255, "Connection closed")
    assert exc.status == 255
    assert exc.output == "Connection closed"
    assert "255" in str(exc)


def test_login_bad_client_error_lists_known_clients() -> None:
    exc = errors.LoginBadClientError("rsh", ["ssh", "telnet", "nc"])
    assert exc.client == "rsh"
    for word in ("rsh", "ssh", "telnet", "nc"):
        assert word in str(exc)


def test_shell_cmd_error_carries_cmd_status_output() -> None:
    exc = errors.ShellCmdError("false", 1, "some output")
    assert (exc.cmd, exc.status, exc.output) == ("false", 1, "some output")
    assert exc.args == ("false", 1, "some output")
    assert "'false'" in str(exc)
    assert "1" in str(exc)
    assert "some output" in str(exc)


def test_other_shell_errors() -> None:
    timeout = errors.ShellTimeoutError("sleep 100", "partial")
    assert (timeout.cmd, timeout.output) == ("sleep 100", "partial")
    assert "sleep 100" in str(timeout)
    terminated = errors.ShellProcessTerminatedError("reboot", 255, "bye")
    assert (terminated.cmd, terminated.status, terminated.output) == ("reboot", 255, "bye")
    assert "255" in str(terminated)
    status = errors.ShellStatusError("ls", "garbage")
    assert "ls" in str(status)
    assert "garbage" in str(status)


def test_transfer_error() -> None:
    exc = errors.TransferError("no such file", "/guest/missing")
    assert (exc.message, exc.path) == ("no such file", "/guest/missing")
    assert str(exc) == "no such file: /guest/missing"
    assert str(errors.TransferError("connection lost")) == "connection lost"


# --- pickling (exceptions cross process boundaries: multiprocessing, xdist) ---------------

_PICKLE_SAMPLES: list[tuple[str, tuple[Any, ...]]] = [
    *[(case[0], case[2]) for case in SEED_CASES],
    ("VMError", ("msg",)),
    ("VMDeadError", ("reason", "detail")),
    ("VMPostCreateError", (CMD, OUTPUT)),
    ("VMMigrateTimeoutError", ("timed out",)),
    ("VMParamsError", ("bad",)),
    ("VMParamsKeyError", ("key",)),
    ("VMDeviceError", ("vm1", "vdb", "refused")),
    ("VMDeviceNotFoundError", ("vm1", "vdz", ("vdb",))),
    ("VMDeviceParamsError", ("vm1", "attach_disk", "size", "10Q", "is no size")),
    ("VMDeviceTimeoutError", ("vm1", "vdb", "not released")),
    ("VMBlockJobError", ("vm1", "vda", "aborted")),
    ("VMNotSupportedError", ("migrate", "xen", "why")),
    ("VMNotFoundError", ("vm1", "test:///default")),
    ("HypervisorConnectionError", ("qemu:///system", "refused")),
    ("ImageError", (["qemu-img", "info"], 1, "boom")),
    ("LoginError", ("failed", "output")),
    ("LoginAuthenticationError", ("denied", "output")),
    ("ShellCmdError", ("false", 1, "out")),
    ("ShellTimeoutError", ("sleep 9", "out")),
    ("ShellStatusError", ("ls", "out")),
    ("TransferError", ("failed", "/p")),
    ("ShellProcessTerminatedError", ("reboot", 255, "bye")),
    ("LoginTimeoutError", ("login: ", 5.0)),
    ("LoginProcessTerminatedError", (255, "closed")),
    ("LoginBadClientError", ("rsh", ["ssh", "nc"])),
]


@pytest.mark.parametrize(
    ("name", "args"),
    [
        *_PICKLE_SAMPLES,
    ],
)
def test_pickle_round_trip(name: str, args: tuple[Any, ...]) -> None:
    exc = getattr(errors, name)(*args)
    copy = pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own data
    assert type(copy) is type(exc)
    assert str(copy) == str(exc)
    assert copy.args == exc.args
    assert vars(copy) == vars(exc)
