"""backends/libvirt/errors.py: every libvirt error code the table maps, with made-up errors.

Each error is a real ``libvirt.libvirtError`` whose ``err`` tuple is set by hand
(code, domain, message, level, ...), as libvirt-python fills it from virGetLastError.
"""

from __future__ import annotations

import libvirt
import pytest

import virtlib
from virtlib.backends.libvirt import errors
from virtlib.backends.libvirt.errors import code_of, message, translate, translated

URI = "qemu+ssh://hv1/system"
VM = "web1"
WHAT = "pause"
TEXT = "made-up failure text"


CODE_NAMES = {
    value: key
    for key, value in vars(libvirt).items()
    if key.startswith("VIR_ERR_")
    and key not in ("VIR_ERR_NONE", "VIR_ERR_WARNING", "VIR_ERR_ERROR")
}


def code_id(code: int) -> str:
    return str(CODE_NAMES.get(code, code))


def libvirt_error(code: int, text: str = TEXT) -> libvirt.libvirtError:
    exc = libvirt.libvirtError(f"libvirt: {text}")
    exc.err = (code, libvirt.VIR_FROM_QEMU, text, libvirt.VIR_ERR_ERROR, None, None, None, 0, 0)
    return exc


def names_everything(exc: virtlib.VMError, what: str = WHAT) -> None:
    text = str(exc)
    assert what in text, text
    assert VM in text, text
    assert URI in text, text
    assert TEXT in text, text


def test_made_up_errors_carry_their_code_and_message() -> None:
    exc = libvirt_error(libvirt.VIR_ERR_NO_DOMAIN)
    assert exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN
    assert message(exc) == TEXT
    assert code_of(exc) == libvirt.VIR_ERR_NO_DOMAIN
    assert code_of(ValueError("x")) is None


def test_no_domain_is_not_found_naming_the_vm_and_uri() -> None:
    exc = translate(libvirt_error(libvirt.VIR_ERR_NO_DOMAIN), WHAT, URI, VM)
    assert type(exc) is virtlib.VMNotFoundError
    assert (exc.name, exc.uri) == (VM, URI)
    assert VM in str(exc) and URI in str(exc)


@pytest.mark.parametrize("code", sorted(errors.CONNECTION_CODES), ids=code_id)
def test_connection_codes(code: int) -> None:
    exc = translate(libvirt_error(code), WHAT, URI, VM)
    assert type(exc) is virtlib.HypervisorConnectionError
    assert exc.uri == URI
    names_everything(exc)


@pytest.mark.parametrize("code", sorted(errors.UNSUPPORTED_CODES), ids=code_id)
def test_unsupported_codes(code: int) -> None:
    exc = translate(libvirt_error(code), WHAT, URI, VM)
    assert type(exc) is virtlib.VMNotSupportedError
    assert (exc.operation, exc.backend) == (WHAT, "libvirt")
    names_everything(exc)


@pytest.mark.parametrize("code", sorted(errors.STATE_CODES), ids=code_id)
def test_state_codes(code: int) -> None:
    exc = translate(libvirt_error(code), WHAT, URI, VM)
    assert type(exc) is virtlib.VMStateError
    names_everything(exc)


@pytest.mark.parametrize("code", sorted(errors.TIMEOUT_CODES), ids=code_id)
def test_timeout_codes(code: int) -> None:
    exc = translate(libvirt_error(code), WHAT, URI, VM)
    assert type(exc) is virtlib.VMTimeoutError
    names_everything(exc)


@pytest.mark.parametrize(
    "code",
    [libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_ERR_XML_ERROR],
    ids=code_id,
)
def test_other_codes_are_the_operation_failing_not_the_connection(code: int) -> None:
    """An unwritable save path (a system error) is the save failing, not libvirtd going away."""
    exc = translate(libvirt_error(code), "save", URI, VM)
    assert type(exc) is virtlib.HypervisorError
    assert (exc.operation, exc.name, exc.code) == ("save", VM, code)
    names_everything(exc, "save")


def test_default_factory_replaces_the_generic_error_only() -> None:
    made: list[libvirt.libvirtError] = []

    def default(e: libvirt.libvirtError) -> virtlib.VMError:
        made.append(e)
        return virtlib.VMCreateError("<domain/>", e.get_error_code(), message(e))

    system = libvirt_error(libvirt.VIR_ERR_SYSTEM_ERROR)
    exc = translate(system, "create", URI, VM, default=default)
    assert type(exc) is virtlib.VMCreateError and made == [system]
    assert exc.status == libvirt.VIR_ERR_SYSTEM_ERROR and exc.output == TEXT
    # the table's own classes win over the default
    gone = translate(libvirt_error(libvirt.VIR_ERR_NO_DOMAIN), "create", URI, VM, default=default)
    assert type(gone) is virtlib.VMNotFoundError and len(made) == 1


def test_overrides_win_over_the_table() -> None:
    def override(e: libvirt.libvirtError) -> virtlib.VMError:
        return virtlib.VMNotSupportedError("serial console", "libvirt", message(e))

    exc = translate(
        libvirt_error(libvirt.VIR_ERR_NO_DOMAIN),
        WHAT,
        URI,
        VM,
        overrides={libvirt.VIR_ERR_NO_DOMAIN: override},
    )
    assert type(exc) is virtlib.VMNotSupportedError and exc.operation == "serial console"


def test_translated_raises_the_virtlib_error_from_the_libvirt_one() -> None:
    original = libvirt_error(libvirt.VIR_ERR_OPERATION_INVALID)
    with pytest.raises(virtlib.VMStateError) as info, translated(WHAT, URI, VM):
        raise original
    assert info.value.__cause__ is original


def test_translated_lets_other_exceptions_through() -> None:
    with pytest.raises(KeyError), translated(WHAT, URI, VM):
        raise KeyError("not libvirt's")


def test_every_code_class_is_disjoint() -> None:
    """A code in two rows would be translated by whichever comes first: keep rows apart."""
    rows = [
        errors.NOT_FOUND_CODES,
        errors.CONNECTION_CODES,
        errors.UNSUPPORTED_CODES,
        errors.STATE_CODES,
        errors.TIMEOUT_CODES,
    ]
    seen: set[int] = set()
    for row in rows:
        assert not seen & row
        seen |= row
    assert libvirt.VIR_ERR_SYSTEM_ERROR not in seen
