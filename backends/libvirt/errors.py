"""libvirt errors become virtlib errors here, and only here, by error code (never message text).

:func:`translate` is the one table.  The wrappers (:mod:`.host`'s ``Host``,
:mod:`.guest`'s ``Guest``, the console) call libvirt only inside
:func:`translated`, so no ``libvirtError`` reaches code above the backend.

The table, most specific first:

- an operation's own ``overrides`` (e.g. an XML error at create time is a VMCreateError);
- no such domain -> VMNotFoundError;
- connection and authentication failures -> HypervisorConnectionError;
- unsupported operations and arguments -> VMNotSupportedError;
- an operation not valid in the domain's state -> VMStateError;
- timeouts (libvirt's, the guest agent's) -> VMTimeoutError;
- everything else, system errors included (an unwritable save path is the
  operation failing, not the connection) -> the operation's ``default``, else
  HypervisorError.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import libvirt

from virtlib.errors import (
    HypervisorConnectionError,
    HypervisorError,
    VMError,
    VMNotFoundError,
    VMNotSupportedError,
    VMStateError,
    VMTimeoutError,
)

ErrorFactory = Callable[[libvirt.libvirtError], VMError]

NOT_FOUND_CODES = frozenset({libvirt.VIR_ERR_NO_DOMAIN})
CONNECTION_CODES = frozenset({
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INVALID_CONN,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_AUTH_FAILED,
    libvirt.VIR_ERR_AUTH_CANCELLED,
    libvirt.VIR_ERR_AUTH_UNAVAILABLE,
    libvirt.VIR_ERR_NO_SERVER,
    libvirt.VIR_ERR_NO_CLIENT,
})  # fmt: skip
UNSUPPORTED_CODES = frozenset({
    libvirt.VIR_ERR_NO_SUPPORT,
    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
    libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
    libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
})  # fmt: skip
STATE_CODES = frozenset({libvirt.VIR_ERR_OPERATION_INVALID})
TIMEOUT_CODES = frozenset({libvirt.VIR_ERR_OPERATION_TIMEOUT, libvirt.VIR_ERR_AGENT_UNRESPONSIVE})


def message(exc: libvirt.libvirtError) -> str:
    """libvirt's message for an error (without the "libvirt: ..." decoration)."""
    return str(exc.get_error_message() or exc)


def code_of(exc: BaseException) -> int | None:
    """The libvirt error code of ``exc`` (None for other exceptions)."""
    if isinstance(exc, libvirt.libvirtError):
        return int(exc.get_error_code() or 0)
    return None


def translate(
    exc: libvirt.libvirtError,
    what: str,
    uri: str = "",
    name: str = "",
    overrides: dict[int, ErrorFactory] | None = None,
    default: ErrorFactory | None = None,
) -> VMError:
    """The virtlib error for a libvirt error raised while doing ``what`` (see the module)."""
    code = exc.get_error_code()
    text = message(exc)
    if overrides and code in overrides:
        return overrides[code](exc)
    if code in NOT_FOUND_CODES:
        return VMNotFoundError(name, uri)
    where = _where(name, uri)
    if code in CONNECTION_CODES:
        subject = f" {name!r}" if name and name != uri else ""  # the URI is in the message
        return HypervisorConnectionError(uri, f"{what}{subject}: {text}")
    if code in UNSUPPORTED_CODES:
        return VMNotSupportedError(what, "libvirt", f"{where}: {text}" if where else text)
    if code in STATE_CODES:
        return VMStateError(f"cannot {what} {where}: {text}")
    if code in TIMEOUT_CODES:
        return VMTimeoutError(f"{what} {where}: timed out: {text}")
    if default is not None:
        return default(exc)
    return HypervisorError(what, name, f"{text} (on {uri})" if uri else text, code)


def _where(name: str, uri: str) -> str:
    """``'web1' on qemu:///system`` (the URI alone when the subject is the host)."""
    if name and name != uri:
        return f"{name!r} on {uri}" if uri else repr(name)
    return uri


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
