"""Params: the string dictionary autotest and avocado tests configure VMs with.

Values are strings, as in a cartesian config file.  On top of the plain dict,
:class:`Params` gives the accessors tests rely on (``objects``,
``object_params``, typed getters) and :meth:`Params.from_file` reads
``key = value`` files.  Backends do not read Params directly: they read the
typed :mod:`virtlib.spec` parsed from it once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, overload

from virtlib.errors import VMParamsError, VMParamsKeyError

_TRUE = frozenset({"yes", "on", "true"})
_FALSE = frozenset({"no", "off", "false"})
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_QUOTED_RE = re.compile(r"""^"([^"]*)"$|^'([^']*)'$""")


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
    """A dict of strings with autotest's accessors.

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

    def get_numeric(self, key: str, default: int | None = 0) -> int | None:
        """The integer in ``self[key]`` (``int(v, 0)``: 10, 0x10, 0o10 and 0b10 all work)."""
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

    def get_list(
        self, key: str, default: list[str] | None = None, delimiter: str | None = None
    ) -> list[str]:
        """``self[key]`` split on ``delimiter`` (whitespace by default), items stripped."""
        if key not in self:
            return list(default or [])
        return [item.strip() for item in self[key].split(delimiter) if item.strip()]

    def get_dict(
        self,
        key: str,
        default: Mapping[str, str] | None = None,
        delimiter: str = ",",
        separator: str = "=",
    ) -> dict[str, str]:
        """``"a=1,b=2"`` -> ``{"a": "1", "b": "2"}``; an item without ``=`` is an error."""
        if key not in self:
            return dict(default or {})
        result: dict[str, str] = {}
        for item in self.get_list(key, delimiter=delimiter):
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
