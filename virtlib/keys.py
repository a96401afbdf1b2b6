"""Key strings as tests write them (``ctrl-alt-delete``, ``shift-a``, ``kp_enter``).

Names follow QEMU's key names (what autotest's ``send_key`` took); they map to
Linux input key codes, which libvirt's virDomainSendKey accepts on every
hypervisor through ``VIR_KEYCODE_SET_LINUX``.
"""

from __future__ import annotations

import string

from virtlib.errors import VMParamsError

_LETTER_CODES = dict(zip("qwertyuiop", range(16, 26), strict=True))
_LETTER_CODES |= dict(zip("asdfghjkl", range(30, 39), strict=True))
_LETTER_CODES |= dict(zip("zxcvbnm", range(44, 51), strict=True))

KEYCODES: dict[str, int] = {
    **_LETTER_CODES,
    **{str(d): 1 + d for d in range(1, 10)},
    "0": 11,
    "esc": 1, "minus": 12, "equal": 13, "backspace": 14, "tab": 15,
    "bracket_left": 26, "bracket_right": 27, "ret": 28, "enter": 28, "return": 28,
    "ctrl": 29, "ctrl_l": 29, "semicolon": 39, "apostrophe": 40, "grave_accent": 41,
    "shift": 42, "shift_l": 42, "backslash": 43, "comma": 51, "dot": 52, "slash": 53,
    "shift_r": 54, "asterisk": 55, "kp_multiply": 55, "alt": 56, "alt_l": 56,
    "spc": 57, "space": 57, "caps_lock": 58,
    **{f"f{n}": 58 + n for n in range(1, 11)},
    "num_lock": 69, "scroll_lock": 70,
    "kp_7": 71, "kp_8": 72, "kp_9": 73, "kp_subtract": 74, "kp_4": 75, "kp_5": 76,
    "kp_6": 77, "kp_add": 78, "kp_1": 79, "kp_2": 80, "kp_3": 81, "kp_0": 82,
    "kp_decimal": 83, "less": 86, "f11": 87, "f12": 88, "kp_enter": 96, "ctrl_r": 97,
    "kp_divide": 98, "sysrq": 99, "print": 99, "alt_r": 100, "altgr": 100, "home": 102,
    "up": 103, "pgup": 104, "left": 105, "right": 106, "end": 107, "down": 108,
    "pgdn": 109, "insert": 110, "delete": 111, "pause": 119, "meta_l": 125,
    "meta_r": 126, "menu": 127,
}  # fmt: skip

# Characters that need a key name (and shift for the upper row) in send_string.
_PLAIN_CHARS = {
    " ": "spc", "\n": "ret", "\t": "tab", "-": "minus", "=": "equal", "[": "bracket_left",
    "]": "bracket_right", ";": "semicolon", "'": "apostrophe", "`": "grave_accent",
    "\\": "backslash", ",": "comma", ".": "dot", "/": "slash",
}  # fmt: skip
_SHIFTED_CHARS = dict(zip("!@#$%^&*()", "1234567890", strict=True)) | {
    "_": "minus", "+": "equal", "{": "bracket_left", "}": "bracket_right", ":": "semicolon",
    '"': "apostrophe", "~": "grave_accent", "|": "backslash", "<": "comma", ">": "dot",
    "?": "slash",
}  # fmt: skip


def parse_keys(keystr: str) -> list[int]:
    """``"ctrl-alt-delete"`` -> ``[29, 56, 111]``: the keys pressed together."""
    names = keystr.strip().lower().split("-")
    if not keystr.strip() or any(not name for name in names):
        raise VMParamsError(f"invalid key string {keystr!r}")
    codes = []
    for name in names:
        if name not in KEYCODES:
            raise VMParamsError(f"unknown key {name!r} in key string {keystr!r}")
        codes.append(KEYCODES[name])
    return codes


def char_to_keystr(char: str) -> str:
    """The key string that types ``char`` on a US keyboard (``"A"`` -> ``"shift-a"``)."""
    if len(char) != 1:
        raise VMParamsError(f"char_to_keystr takes one character, not {char!r}")
    if char in string.ascii_lowercase or char in string.digits:
        return char
    if char in string.ascii_uppercase:
        return f"shift-{char.lower()}"
    if char in _PLAIN_CHARS:
        return _PLAIN_CHARS[char]
    if char in _SHIFTED_CHARS:
        return f"shift-{_SHIFTED_CHARS[char]}"
    raise VMParamsError(f"cannot type {char!r} with send_string")
