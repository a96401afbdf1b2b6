"""Key strings, text helpers, and waiting (deadlines, back-off, wait_for, retry)."""

from __future__ import annotations

import itertools
import re
import string
import time
from pathlib import Path

import pytest

from virtlib import VMParamsError
from virtlib.contract import parse_memory_size
from virtlib.keys import char_to_keystr, parse_keys
from virtlib.textutil import random_string, unescape
from virtlib.waiting import Deadline, backoff, retry, wait_for

INPUT_HEADER = Path("/usr/include/linux/input-event-codes.h")
KEY_CODES_FILE = Path(__file__).parent / "data" / "input-event-codes.txt"  # taken from it

# Linux input key codes (linux/input-event-codes.h: a stable kernel ABI).
KEY_LEFTCTRL, KEY_LEFTALT, KEY_DELETE = 29, 56, 111
KEY_LEFTSHIFT, KEY_A, KEY_KPENTER = 42, 30, 96

# QEMU key names (as autotest's send_key took them) -> Linux KEY_* names.
QEMU_TO_LINUX = {
    **{c: c.upper() for c in string.ascii_lowercase},
    **{d: d for d in string.digits},
    "esc": "ESC",
    "minus": "MINUS",
    "equal": "EQUAL",
    "backspace": "BACKSPACE",
    "tab": "TAB",
    "bracket_left": "LEFTBRACE",
    "bracket_right": "RIGHTBRACE",
    "ret": "ENTER",
    "ctrl": "LEFTCTRL",
    "semicolon": "SEMICOLON",
    "apostrophe": "APOSTROPHE",
    "grave_accent": "GRAVE",
    "shift": "LEFTSHIFT",
    "backslash": "BACKSLASH",
    "comma": "COMMA",
    "dot": "DOT",
    "slash": "SLASH",
    "shift_r": "RIGHTSHIFT",
    "asterisk": "KPASTERISK",
    "alt": "LEFTALT",
    "spc": "SPACE",
    "caps_lock": "CAPSLOCK",
    **{f"f{n}": f"F{n}" for n in range(1, 13)},
    "num_lock": "NUMLOCK",
    "scroll_lock": "SCROLLLOCK",
    **{f"kp_{n}": f"KP{n}" for n in range(10)},
    "kp_subtract": "KPMINUS",
    "kp_add": "KPPLUS",
    "kp_decimal": "KPDOT",
    "kp_enter": "KPENTER",
    "kp_divide": "KPSLASH",
    "kp_multiply": "KPASTERISK",
    "less": "102ND",
    "ctrl_r": "RIGHTCTRL",
    "alt_r": "RIGHTALT",
    "sysrq": "SYSRQ",
    "home": "HOME",
    "up": "UP",
    "pgup": "PAGEUP",
    "left": "LEFT",
    "right": "RIGHT",
    "end": "END",
    "down": "DOWN",
    "pgdn": "PAGEDOWN",
    "insert": "INSERT",
    "delete": "DELETE",
    "pause": "PAUSE",
    "meta_l": "LEFTMETA",
    "meta_r": "RIGHTMETA",
    "menu": "COMPOSE",
}


# --- keys -------------------------------------------------------------------------------------


def test_ctrl_alt_delete() -> None:
    assert parse_keys("ctrl-alt-delete") == [KEY_LEFTCTRL, KEY_LEFTALT, KEY_DELETE]


def test_shift_a_and_kp_enter() -> None:
    assert parse_keys("shift-a") == [KEY_LEFTSHIFT, KEY_A]
    assert parse_keys("kp_enter") == [KEY_KPENTER]


def test_key_names_are_case_insensitive() -> None:
    assert parse_keys("Ctrl-Alt-DELETE") == parse_keys("ctrl-alt-delete")


def linux_key_codes() -> dict[str, int]:
    """KEY_* name (without the prefix) -> code, from the file extracted from the kernel header."""
    rows = re.findall(r"^KEY_(\w+) (\d+)$", KEY_CODES_FILE.read_text(), re.MULTILINE)
    return {name: int(code) for name, code in rows}


@pytest.mark.parametrize(("qemu", "linux"), sorted(QEMU_TO_LINUX.items()))
def test_key_codes_match_linux_input_codes(qemu: str, linux: str) -> None:
    assert parse_keys(qemu) == [linux_key_codes()[linux]]


@pytest.mark.skipif(not INPUT_HEADER.exists(), reason=f"{INPUT_HEADER} not installed")
def test_key_code_file_matches_the_kernel_header() -> None:
    header = dict(
        re.findall(r"^#define\s+KEY_(\w+)\s+(\d+)\b", INPUT_HEADER.read_text(), re.MULTILINE)
    )
    ours = linux_key_codes()
    assert set(ours) == set(QEMU_TO_LINUX.values())
    assert {name: int(header[name]) for name in ours} == ours


@pytest.mark.parametrize(
    "keystr", ["", "   ", "-", "ctrl-", "-a", "ctrl--a", "nosuchkey", "ctrl-alt-nosuchkey"]
)
def test_bad_key_strings(keystr: str) -> None:
    with pytest.raises(VMParamsError):
        parse_keys(keystr)


def test_unknown_key_is_named() -> None:
    with pytest.raises(VMParamsError, match="frobnicate"):
        parse_keys("ctrl-frobnicate")


def test_char_to_keystr() -> None:
    assert char_to_keystr("a") == "a"
    assert char_to_keystr("7") == "7"
    assert char_to_keystr("A") == "shift-a"
    assert char_to_keystr("Z") == "shift-z"
    assert char_to_keystr(" ") == "spc"
    assert char_to_keystr("-") == "minus"
    assert char_to_keystr("!") == "shift-1"
    assert char_to_keystr("?") == "shift-slash"
    assert char_to_keystr("_") == "shift-minus"


TYPABLE = string.ascii_letters + string.digits + string.punctuation + " \t\n"


@pytest.mark.parametrize("char", list(TYPABLE))
def test_every_typable_char_gives_a_valid_key_string(char: str) -> None:
    keys = parse_keys(char_to_keystr(char))
    assert 1 <= len(keys) <= 2
    shifted = char in string.ascii_uppercase or char in '~!@#$%^&*()_+{}|:"<>?'
    assert (keys[0] == KEY_LEFTSHIFT) == shifted


def test_distinct_chars_type_distinct_keys() -> None:
    keystrs = [char_to_keystr(c) for c in TYPABLE]
    assert len(set(keystrs)) == len(TYPABLE)


@pytest.mark.parametrize("char", ["é", "€", "\x00", "\x7f"])
def test_untypable_chars(char: str) -> None:
    with pytest.raises(VMParamsError):
        char_to_keystr(char)


@pytest.mark.parametrize("text", ["", "ab", "123"])
def test_char_to_keystr_takes_exactly_one_char(text: str) -> None:
    with pytest.raises(VMParamsError):
        char_to_keystr(text)


# --- text ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"\n", "\n"),
        (r"\r\n", "\r\n"),
        (r"a\tb", "a\tb"),
        ("\\\\n", "\\n"),
        (r"\x41\x7e", "A~"),
        (r"\'\"", "'\""),
        (r"\0", "\0"),
        ("no escapes", "no escapes"),
        ("", ""),
    ],
)
def test_unescape(text: str, expected: str) -> None:
    assert unescape(text) == expected


@pytest.mark.parametrize("text", [r"\q", r"\x4", r"\xZZ", r"ok\u0041"])
def test_unescape_unknown_escape_is_an_error(text: str) -> None:
    with pytest.raises(VMParamsError):
        unescape(text)


def test_unescape_never_evaluates() -> None:
    text = "' + __import__('os').getcwd() + '"
    assert unescape(text) == text


def test_random_string() -> None:
    s = random_string(16)
    assert len(s) == 16
    assert set(s) <= set(string.ascii_lowercase + string.digits)
    assert random_string(0) == ""
    assert set(random_string(50, "xy")) <= {"x", "y"}
    assert len({random_string(16) for _ in range(50)}) == 50


@pytest.mark.parametrize(
    ("text", "mib"),
    [
        # the seed's get_memory_size: numbers summed; GB x1024, MB as is, anything else kB
        ("MemTotal:        2048000 kB", 2000),
        ("MemTotal:        1048575 kB", 1023),
        ("Total Physical Memory: 2 GB", 2048),
        ("Total Physical Memory: 3,584 MB", 3 + 584),
        ("512 MB", 512),
        ("Bank 1: 1024 MB\nBank 2: 1024 MB", 1 + 1024 + 2 + 1024),
        ("no numbers", 0),
    ],
)
def test_parse_memory_size_keeps_the_seed_rules(text: str, mib: int) -> None:
    assert parse_memory_size(text) == mib


# --- waiting ------------------------------------------------------------------------------


def test_deadline() -> None:
    d = Deadline(0.05)
    assert not d.expired()
    assert 0 < d.remaining() <= 0.05
    time.sleep(0.06)
    assert d.expired()
    assert d.remaining() == 0.0
    assert Deadline(0).expired()
    assert Deadline(-1).remaining() == 0.0


def test_backoff_starts_short_grows_and_is_capped() -> None:
    gen = backoff(initial=0.01, maximum=0.1, factor=2.0)
    delays = [next(gen) for _ in range(12)]
    assert delays[0] == 0.01
    assert all(b >= a for a, b in itertools.pairwise(delays))
    assert max(delays) == 0.1
    assert delays[-1] == 0.1
    assert delays[1] > delays[0]


def test_wait_for_returns_the_predicate_value() -> None:
    calls = []

    def predicate() -> str | None:
        calls.append(1)
        return "ready" if len(calls) >= 3 else None

    assert wait_for(predicate, timeout=0.9, initial=0.001, maximum=0.01) == "ready"
    assert len(calls) == 3


def test_wait_for_returns_none_at_the_deadline() -> None:
    calls = []
    start = time.monotonic()
    result = wait_for(lambda: calls.append(1), timeout=0.1, initial=0.01, maximum=0.02)
    elapsed = time.monotonic() - start
    assert result is None
    assert len(calls) >= 2
    assert 0.1 <= elapsed < 0.9


def test_wait_for_zero_timeout_still_asks_once() -> None:
    calls = []
    assert wait_for(lambda: calls.append(1) or 0, timeout=0) is None
    assert len(calls) == 1


def test_wait_for_propagates_errors() -> None:
    def boom() -> bool:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        wait_for(boom, timeout=0.5)


class Flaky(Exception):
    pass


class Fatal(Flaky):
    pass


def test_retry_returns_after_transient_errors() -> None:
    seen: list[BaseException] = []
    attempts = []

    def attempt() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise Flaky(len(attempts))
        return "done"

    result = retry(
        attempt, timeout=0.9, retry_on=(Flaky,), on_error=seen.append, initial=0.001, maximum=0.01
    )
    assert result == "done"
    assert len(attempts) == 3
    assert [e.args[0] for e in seen] == [1, 2]


def test_retry_reraises_the_last_error_at_the_deadline() -> None:
    raised: list[Flaky] = []

    def attempt() -> None:
        raised.append(Flaky(len(raised) + 1))
        raise raised[-1]

    start = time.monotonic()
    with pytest.raises(Flaky) as info:
        retry(attempt, timeout=0.1, retry_on=(Flaky,), initial=0.01, maximum=0.02)
    assert time.monotonic() - start < 0.9
    assert len(raised) >= 2
    assert info.value is raised[-1]


def test_retry_fatal_errors_propagate_at_once() -> None:
    attempts = []

    def attempt() -> None:
        attempts.append(1)
        raise Fatal("password refused")

    start = time.monotonic()
    with pytest.raises(Fatal):
        retry(attempt, timeout=5, retry_on=(Flaky,), fatal=(Fatal,), initial=0.01)
    assert attempts == [1]
    assert time.monotonic() - start < 0.9


def test_retry_other_errors_propagate_at_once() -> None:
    attempts = []

    def attempt() -> None:
        attempts.append(1)
        raise KeyError("not retried")

    with pytest.raises(KeyError):
        retry(attempt, timeout=5, retry_on=(Flaky,), initial=0.01)
    assert attempts == [1]


def test_retry_give_up_can_stop_early() -> None:
    attempts = []
    checks = []

    def attempt() -> None:
        attempts.append(1)
        raise Flaky("not yet")

    def give_up() -> None:
        checks.append(1)
        if len(checks) == 2:
            raise RuntimeError("the VM died")

    start = time.monotonic()
    with pytest.raises(RuntimeError, match="the VM died"):
        retry(attempt, timeout=5, retry_on=(Flaky,), give_up=give_up, initial=0.001)
    assert len(attempts) == 2
    assert time.monotonic() - start < 0.9


def test_retry_give_up_that_returns_keeps_retrying() -> None:
    attempts = []

    def attempt() -> int:
        attempts.append(1)
        if len(attempts) < 4:
            raise Flaky
        return len(attempts)

    assert retry(attempt, 0.9, (Flaky,), give_up=lambda: None, initial=0.001) == 4
