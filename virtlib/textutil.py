"""Small text helpers shared by the contract and the sessions."""

from __future__ import annotations

import re
import secrets
import string

from virtlib.errors import VMParamsError

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", "0": "\0", "'": "'", '"': '"'}
_ESCAPE_RE = re.compile(r"\\(x[0-9A-Fa-f]{2}|.)", re.DOTALL)


def unescape(text: str) -> str:
    r"""Turn ``\n``, ``\r``, ``\t``, ``\\`` and ``\xHH`` into their characters.

    It replaces the seed, which evaluated ``shell_linesep`` as Python source: the
    same result for the values configs use, and no code runs.  An unknown escape is
    an error.
    """

    def replace(match: re.Match[str]) -> str:
        code = match.group(1)
        if code.startswith("x") and len(code) == 3:
            return chr(int(code[1:], 16))
        if code in _ESCAPES:
            return _ESCAPES[code]
        raise VMParamsError(f"unknown escape sequence \\{code} in {text!r}")

    result = _ESCAPE_RE.sub(replace, text)
    if re.search(r"(?<!\\)(\\\\)*\\$", text):
        raise VMParamsError(f"{text!r} ends in a lone backslash")
    return result


def random_string(length: int, alphabet: str = string.ascii_lowercase + string.digits) -> str:
    """A random string from ``alphabet`` (cryptographically random: names must not collide)."""
    return "".join(secrets.choice(alphabet) for _ in range(length))
