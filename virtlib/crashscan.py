"""Kernel crashes in console output: oopses, BUG reports, panics, and their call traces.

A crash report starts with a line the kernel prints only then:

- ``BUG: ...`` (``BUG: kernel NULL pointer dereference``, ``BUG: unable to handle page fault``),
- ``Oops: ...`` / ``general protection fault`` / ``Unable to handle kernel ...``,
- ``Kernel panic - not syncing: ...``;

and ends with the kernel's trailer ``---[ end trace <id> ]---`` or ``---[ end Kernel
panic - not syncing: ... ]---`` (6.x kernels print the latter, and no ``end trace``,
for a panic).  The start line may follow a printk timestamp (``[   12.345678] ``) and a
log level (``<1>``).  A report whose trailer has not arrived yet is still a crash: its
excerpt runs to the end of the output seen so far (at most :data:`MAX_LINES` lines).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LINES = 80
_PREFIX = r"^(?:<\d>)?(?:\[\s*\d+\.\d+\]\s)?\s*"
START_RE = re.compile(
    _PREFIX
    + r"(?P<what>BUG: .+|Oops: .+|general protection fault.*|Unable to handle kernel .+"
    + r"|Kernel panic - not syncing.*)$",
    re.MULTILINE,
)
TRAILER_RE = re.compile(r"---\[ end (?:trace [0-9a-f]+|Kernel panic - not syncing.*?) \]---")
PANIC_RE = re.compile(r"Kernel panic - not syncing")


@dataclass(frozen=True)
class KernelCrash:
    """One crash report: its first line (``title``), the excerpt, and whether it is a panic."""

    title: str
    text: str
    panic: bool
    complete: bool  # the trailer arrived


def find_crash(output: str) -> KernelCrash | None:
    """The first kernel crash report in ``output`` (console text, \\r\\n or \\n), or None."""
    text = output.replace("\r\n", "\n").replace("\r", "\n")
    start = START_RE.search(text)
    if start is None:
        return None
    lines = text[start.start("what") :].split("\n")[:MAX_LINES]
    excerpt = "\n".join(lines)
    trailer = TRAILER_RE.search(excerpt)
    if trailer is not None:
        excerpt = excerpt[: trailer.end()]
    return KernelCrash(
        title=start.group("what").strip(),
        text=excerpt.strip("\n"),
        panic=PANIC_RE.search(excerpt) is not None,
        complete=trailer is not None,
    )
