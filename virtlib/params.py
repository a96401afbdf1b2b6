"""Params: the string dictionary autotest and avocado tests configure VMs with.

Values are strings, as in a cartesian config file.  On top of the plain dict,
:class:`Params` gives the accessors tests rely on (``objects``,
``object_params``, typed getters) and :meth:`Params.from_file` reads
``key = value`` files.  Backends do not read Params directly: they read the
typed :mod:`virtlib.spec` parsed from it once.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, overload

from virtlib.errors import VMParamsError, VMParamsKeyError

_TRUE = frozenset({"yes", "on", "true"})
_FALSE = frozenset({"no", "off", "false"})
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_QUOTED_RE = re.compile(r"""^"([^"]*)"$|^'([^']*)'$""")
T = TypeVar("T")


def _as_str(key: str, value: Any) -> str:
    """Coerce a value given in Python to the string a config file would hold."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float | Path):
        return str(value)
    raise VMParamsError(
        f"parameter {key!r} must be a string (or int, float, bool, path), "
        f"not {type(value).__name__}"
    )


class Params(dict[str, str]):
    """A dict of strings with autotest's and avocado-vt's accessors.

    The accessors take avocado-vt's ``utils_params.Params`` arguments, with its
    defaults; where virtlib is stricter it says so (an unreadable value is a
    :class:`~virtlib.errors.VMParamsError`, which is a ValueError as avocado-vt's).

    >>> p = Params({"images": "disk1 disk2", "image_format_disk1": "raw"})
    >>> p.objects("images")
    ['disk1', 'disk2']
    >>> p.object_params("disk1")["image_format"]
    'raw'
    """

    def __init__(self, data: Mapping[str, Any] | Iterable[tuple[str, Any]] = (), **kw: Any):
        super().__init__()
        self.update(data, **kw)

    # --- keep every value a string -------------------------------------------------
    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, _as_str(key, value))

    def update(self, data: Any = (), /, **kw: Any) -> None:
        items = data.items() if isinstance(data, Mapping) else data
        for key, value in items:
            self[key] = value
        for key, value in kw.items():
            self[key] = value

    def setdefault(self, key: str, default: Any = "") -> str:
        if key not in self:
            self[key] = default
        return self[key]

    def copy(self) -> Params:
        return Params(self)

    def __missing__(self, key: str) -> str:
        raise VMParamsKeyError(key)

    # --- autotest accessors ----------------------------------------------------------
    def objects(self, key: str) -> list[str]:
        """The whitespace-separated names in ``self[key]``; ``[]`` when missing.

        Duplicates are dropped, keeping the first occurrence's place.
        """
        return list(dict.fromkeys(self.get(key, "").split()))

    def object_params(self, obj_name: str) -> Params:
        """Params as seen by one object (an image, a NIC, a VM).

        Every key ending in ``_<obj_name>`` overrides the key cut at the first
        occurrence of that suffix (``image_format_disk1`` -> ``image_format``);
        other keys pass through and ``self`` is not changed.  Calls nest one
        level at a time: ``p.object_params("vm1").object_params("image1")``
        resolves ``image_name_image1_vm1``.
        """
        suffix = "_" + obj_name
        result = self.copy()
        for key, value in self.items():
            if key.endswith(suffix) and len(key) > len(suffix):
                result[key.split(suffix, 1)[0]] = value
        return result

    def object_counts(self, count_key: str, base_name: str) -> Iterator[tuple[str, str | None]]:
        """``(base_name + "1", value), (base_name + "2", value), ...``, ``self[count_key]`` pairs.

        avocado-vt's generator: the count defaults to 1, a missing key gives
        ``None``, and later changes to ``self`` do not change what it yields.
        """
        count = self.get_numeric(count_key, 1)
        snapshot = dict(self)
        for number in range(1, count + 1):
            key = f"{base_name}{number}"
            yield key, snapshot.get(key)

    def copy_from_keys(self, keys: Iterable[str]) -> Params:
        """A new Params with only ``keys`` -- those that are set to a non-empty value."""
        return Params({key: self[key] for key in keys if self.get(key)})

    def drop_dict_internals(self) -> Params:
        """A new Params without the internal keys (those starting with ``_``)."""
        return Params({key: value for key, value in self.items() if not key.startswith("_")})

    # --- typed getters -------------------------------------------------------------
    @overload
    def get_boolean(self, key: str, default: bool = ...) -> bool: ...
    @overload
    def get_boolean(self, key: str, default: None) -> bool | None: ...

    def get_boolean(self, key: str, default: bool | None = False) -> bool | None:
        """yes/on/true and no/off/false, any case; anything else is an error."""
        if key not in self:
            return default
        value = self[key].strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise VMParamsError(
            f"parameter {key!r} must be yes/no (or on/off, true/false), not {self[key]!r}"
        )

    @overload
    def get_numeric(self, key: str, default: int = ...) -> int: ...
    @overload
    def get_numeric(self, key: str, default: None) -> int | None: ...
    @overload
    def get_numeric(self, key: str, default: float, target_type: type[float]) -> float: ...

    def get_numeric(
        self, key: str, default: float | None = 0, target_type: type[float] = int
    ) -> float | None:
        """The integer in ``self[key]`` (``int(v, 0)``: 10, 0x10, 0o10 and 0b10 all work).

        ``target_type=float`` (avocado-vt's argument) reads a float instead.
        """
        if target_type is not int:
            return default if key not in self else target_type(self.get_float(key))
        if key not in self:
            return default
        text = self[key].strip()
        try:
            return int(text, 0)
        except ValueError:
            pass
        try:
            return int(text, 10)  # "010": decimal, as plain int() read it
        except ValueError:
            raise VMParamsError(
                f"parameter {key!r} must be an integer, not {self[key]!r}"
            ) from None

    def get_float(self, key: str, default: float = 0.0) -> float:
        """The number in ``self[key]``."""
        if key not in self:
            return default
        try:
            return float(self[key])
        except ValueError:
            raise VMParamsError(f"parameter {key!r} must be a number, not {self[key]!r}") from None

    @overload
    def get_list(
        self,
        key: str,
        default: str | Sequence[str] | None = ...,
        delimiter: str | None = ...,
        elem_type: None = ...,
        target_type: None = ...,
    ) -> list[str]: ...
    @overload
    def get_list(
        self,
        key: str,
        default: str | Sequence[Any] | None = ...,
        delimiter: str | None = ...,
        elem_type: Callable[[str], T] | None = ...,
        target_type: Callable[[str], T] | None = ...,
    ) -> list[T]: ...

    def get_list(
        self,
        key: str,
        default: str | Sequence[Any] | None = None,
        delimiter: str | None = None,
        elem_type: Callable[[str], Any] | None = None,
        target_type: Callable[[str], Any] | None = None,
    ) -> list[Any]:
        """``self[key]`` split on ``delimiter`` (whitespace by default), items stripped.

        A missing key gives ``default``: a string is split like a value (avocado-vt's
        kind of default), a list is copied.  ``elem_type`` (or avocado-vt's name for
        it, ``target_type``) converts each item, e.g. ``int``.  Unlike avocado-vt,
        items are stripped and empty ones dropped (``"a, b,"`` -> ``["a", "b"]``).

        :raises VMParamsError: ``elem_type`` refused an item.
        """
        convert = elem_type or target_type
        if key in self:
            items = _split(self[key], delimiter)
        elif isinstance(default, str):
            items = _split(default, delimiter)
        else:
            return list(default or [])
        if convert is None:
            return items
        try:
            return [convert(item) for item in items]
        except (TypeError, ValueError) as exc:
            raise VMParamsError(f"parameter {key!r}: {exc}") from None

    def get_dict(
        self,
        key: str,
        default: str | Mapping[str, str] | None = None,
        delimiter: str | None = None,
        need_order: bool = False,
        separator: str = "=",
    ) -> dict[str, str]:
        """``"a=1 b=2"`` -> ``{"a": "1", "b": "2"}``; an item without ``=`` is an error.

        avocado-vt's defaults: items are separated by whitespace (``delimiter=","``
        for ``"a=1,b=2"``); a string ``default`` is parsed like a value;
        ``need_order`` returns an OrderedDict.  ``separator`` is virtlib's.
        """
        result: dict[str, str] = OrderedDict() if need_order else {}
        if key not in self and not isinstance(default, str):
            result.update(default or {})
            return result
        text = self[key] if key in self else str(default)
        for item in _split(text, delimiter):
            name, sep, value = item.partition(separator)
            if not sep or not name.strip():
                raise VMParamsError(
                    f"parameter {key!r}: {item!r} is not of the form name{separator}value"
                )
            result[name.strip()] = value.strip()
        return result

    # --- files ---------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path) -> Params:
        """Read ``key = value`` lines; ``#`` starts a comment line; blank lines are skipped.

        A value may be wrapped in matching quotes to keep surrounding spaces.  A
        later line overrides an earlier one.  A malformed line raises
        :class:`VMParamsError` naming the file and the line number.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise VMParamsError(f"params file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise VMParamsError(f"cannot read params file {path}: {exc}") from None
        return cls(parse_lines(text.splitlines(), source=str(path)))


def _split(text: str, delimiter: str | None) -> list[str]:
    return [item.strip() for item in text.split(delimiter) if item.strip()]


def parse_assignment(line: str, source: str) -> tuple[str, str]:
    """One ``key = value`` (as from a config line or a ``--set`` option)."""
    key, sep, value = line.partition("=")
    key, value = key.strip(), value.strip()
    if not sep:
        raise VMParamsError(f"{source}: expected 'key = value', got {line.strip()!r}")
    if not _KEY_RE.match(key):
        raise VMParamsError(f"{source}: {key!r} is not a valid parameter name")
    quoted = _QUOTED_RE.match(value)
    if quoted:
        value = quoted.group(1) if quoted.group(1) is not None else quoted.group(2)
    return key, value


def parse_lines(lines: Iterable[str], source: str) -> list[tuple[str, str]]:
    """Parse config lines into (key, value) pairs; errors name ``source:line``."""
    pairs = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pairs.append(parse_assignment(line, f"{source}:{number}"))
    return pairs
