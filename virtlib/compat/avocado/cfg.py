"""avocado-vt's Cartesian config files, the part without variants.

Read: ``key = value`` and the other operators (``+=`` appends, ``<=`` prepends,
``~=`` sets only if unset, ``?=`` / ``?+=`` / ``?<=`` apply to every key matching
a regular expression), ``del key`` (a regular expression too), ``include
FILE`` (relative to the including file), ``${key}`` substitution, quotes around
a value, and ``#`` or ``//`` comments.

Not read: ``variants:`` blocks, ``only`` and ``no`` filters, and anything
indented (which belongs to a variant).  A config that uses them describes many
tests; give this runner one of them, flattened (``avocado vt-list --vt-config
FILE -V`` or ``python -m virttest.cartesian_config FILE -c`` print each test's
flat dict).  Such lines fail with a VMParamsError naming the file and line.
"""

from __future__ import annotations

import re
from pathlib import Path

from virtlib.errors import VMParamsError
from virtlib.params import Params

_PLAIN_RE = re.compile(
    r"^(?P<key>[A-Za-z0-9_][A-Za-z0-9_.\-]*)\s*(?P<op>\+=|<=|~=|=)\s*(?P<value>.*)$"
)
_REGEX_RE = re.compile(r"^(?P<key>\S+?)\s*(?P<op>\?\+=|\?<=|\?=)\s*(?P<value>.*)$")
_DEL_RE = re.compile(r"^del\s+(?P<key>\S+)$")
_INCLUDE_RE = re.compile(r"^include\s+(?P<path>.+)$")
_SUBSTITUTE_RE = re.compile(r"\$\{(.+?)\}")
_UNSUPPORTED = re.compile(r"^(variants\b.*|only\b.*|no\b.*|.*:)$")
MAX_INCLUDE_DEPTH = 20


def load_cfg(path: str | Path, params: Params | None = None) -> Params:
    """Read a cfg file into ``params`` (a new Params if None) and return it.

    :raises VMParamsError: the file is missing, or a line is malformed or uses
        what this reader leaves out (variants, filters); the message names file and line.
    """
    result = params if params is not None else Params()
    _load(Path(path), result, depth=0)
    return result


def parse_cfg(text: str, source: str = "<cfg>", params: Params | None = None) -> Params:
    """Apply the lines of ``text`` to ``params`` (a new Params if None); includes are
    relative to the current directory."""
    result = params if params is not None else Params()
    _apply_lines(text, source, Path("."), result, depth=0)
    return result


def _load(path: Path, params: Params, depth: int) -> None:
    if depth > MAX_INCLUDE_DEPTH:
        raise VMParamsError(f"{path}: includes nested deeper than {MAX_INCLUDE_DEPTH} (a loop?)")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VMParamsError(f"cfg file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise VMParamsError(f"cannot read cfg file {path}: {exc}") from None
    _apply_lines(text, str(path), path.parent, params, depth)


def _apply_lines(text: str, source: str, folder: Path, params: Params, depth: int) -> None:
    for number, raw in enumerate(text.splitlines(), start=1):
        where = f"{source}:{number}"
        line = raw.rstrip()
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "//")):
            continue
        if line[0].isspace():
            raise VMParamsError(
                f"{where}: an indented line belongs to a 'variants:' block, which this runner "
                "does not read (give it one flattened test)"
            )
        _apply(stripped, where, folder, params, depth)


def _apply(line: str, where: str, folder: Path, params: Params, depth: int) -> None:
    plain = _PLAIN_RE.match(line)
    if plain:
        key, op, value = plain["key"], plain["op"], _value(plain["value"], params)
        if op == "=":
            params[key] = value
        elif op == "+=":
            params[key] = params.get(key, "") + value
        elif op == "<=":
            params[key] = value + params.get(key, "")
        elif key not in params:  # "~="
            params[key] = value
        return
    included = _INCLUDE_RE.match(line)
    if included:
        _load(folder / included["path"].strip(), params, depth + 1)
        return
    deleted = _DEL_RE.match(line)
    if deleted:
        for key in _matching(deleted["key"], params, where):
            del params[key]
        return
    regex = _REGEX_RE.match(line)
    if regex:
        value = _value(regex["value"], params)
        for key in _matching(regex["key"], params, where):
            old = params[key]
            params[key] = {"?=": value, "?+=": old + value, "?<=": value + old}[regex["op"]]
        return
    if _UNSUPPORTED.match(line):
        raise VMParamsError(
            f"{where}: {line.split(maxsplit=1)[0]!r}: variants and filters are not read "
            "by this runner (give it one flattened test)"
        )
    raise VMParamsError(f"{where}: expected 'key = value', got {line!r}")


def _matching(pattern: str, params: Params, where: str) -> list[str]:
    try:
        expression = re.compile(f"{pattern}$")
    except re.error as exc:
        raise VMParamsError(f"{where}: bad regular expression {pattern!r}: {exc}") from None
    return [key for key in params if expression.match(key)]


def _value(text: str, params: Params) -> str:
    """Quotes removed, then ``${key}`` replaced by known keys' values (others stay)."""
    value = text.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return _SUBSTITUTE_RE.sub(lambda m: params.get(m.group(1), m.group(0)), value)
