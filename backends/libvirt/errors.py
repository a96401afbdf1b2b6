"""libvirt errors become virtlib errors here, and only here, by error code (never message text)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import libvirt

from virtlib.errors import HypervisorConnectionError, VMError, VMNotFoundError, VMStateError

ErrorFactory = Callable[[libvirt.libvirtError], VMError]

CONNECTION_CODES = frozenset({
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_AUTH_FAILED,
    libvirt.VIR_ERR_AUTH_CANCELLED,
})  # fmt: skip
NOT_FOUND_CODES = frozenset({libvirt.VIR_ERR_NO_DOMAIN})
STATE_CODES = frozenset({libvirt.VIR_ERR_OPERATION_INVALID})


def message(exc: libvirt.libvirtError) -> str:
    return str(exc.get_error_message() or exc)


def translate(
    exc: libvirt.libvirtError,
    what: str,
    uri: str = "",
    name: str = "",
    overrides: dict[int, ErrorFactory] | None = None,
    default: ErrorFactory | None = None,
) -> VMError:
    """The virtlib error for a libvirt error raised while doing ``what``.

    ``overrides`` maps libvirt error codes to factories for this operation
    (e.g. an XML error at create time is a VMCreateError); then come the
    codes every operation shares; ``default`` (or a plain VMError) for the rest.
    """
    code = exc.get_error_code()
    if overrides and code in overrides:
        return overrides[code](exc)
    if code in NOT_FOUND_CODES:
        return VMNotFoundError(name, uri)
    if code in CONNECTION_CODES:
        return HypervisorConnectionError(uri, f"{what}: {message(exc)}")
    if code in STATE_CODES:
        return VMStateError(f"cannot {what} {name!r}: {message(exc)}")
    if default is not None:
        return default(exc)
    return VMError(f"cannot {what} {name!r}: {message(exc)}")


@contextlib.contextmanager
def translated(
    what: str,
    uri: str = "",
    name: str = "",
    overrides: dict[int, ErrorFactory] | None = None,
    default: ErrorFactory | None = None,
) -> Iterator[None]:
    """``with translated("pause", uri, name): dom.suspend()``."""
    try:
        yield
    except libvirt.libvirtError as exc:
        raise translate(exc, what, uri, name, overrides, default) from exc
