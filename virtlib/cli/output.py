"""How the command speaks: one-line results, tables, ``--json``, and progress on stderr."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO


def emit(as_json: bool, data: Any, text: str) -> None:
    """Print ``data`` as JSON or ``text`` for people."""
    if as_json:
        print(json.dumps(data, indent=1, sort_keys=True, default=str))
    elif text:
        print(text)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


class Progress:
    """A one-line progress bar on a terminal (plain lines otherwise), on stderr."""

    def __init__(self, label: str, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.label = label
        self.stream = stream
        self.width = width
        self.started = time.monotonic()
        self.tty = stream.isatty()
        self._last_line = 0.0

    def update(self, fraction: float, detail: str = "") -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        done = int(self.width * fraction)
        bar = "#" * done + "-" * (self.width - done)
        line = f"{self.label} [{bar}] {fraction * 100:5.1f}% {detail}"
        if self.tty:
            self.stream.write("\r" + line.ljust(100)[:100])
            self.stream.flush()
        elif time.monotonic() - self._last_line >= 1.0:
            self.stream.write(line + "\n")
            self._last_line = time.monotonic()

    def done(self, detail: str = "") -> None:
        elapsed = time.monotonic() - self.started
        end = f"{self.label} done in {elapsed:.2f} s {detail}".rstrip()
        self.stream.write(("\r" + end.ljust(100) if self.tty else end) + "\n")
        self.stream.flush()
