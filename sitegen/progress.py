"""Progress of long operations: a bar on a terminal, plain lines otherwise.

The contract (docs/internals.md): a progress callback is
``progress(phase: str, done: int, total: int) -> None`` where ``done`` and
``total`` count bytes of the phase (``total`` 0 when unknown). Callers may
call it as often as they like; :class:`ProgressReporter` throttles output.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["ProgressFn", "ProgressReporter"]

ProgressFn = Callable[[str, int, int], None]


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


class ProgressReporter:
    """A ``ProgressFn`` that draws a bar on a TTY and prints a line per 25% otherwise."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None, width: int = 30,
                 interval: float = 0.1):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.width = width
        self.interval = interval
        self._phase: str | None = None
        self._last_draw = 0.0
        self._last_quarter = -1

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase != self._phase:
            self._finish_line()
            self._phase, self._last_quarter, self._last_draw = phase, -1, 0.0
        finished = total > 0 and done >= total
        if self.tty:
            now = time.monotonic()
            if finished or now - self._last_draw >= self.interval:
                self._last_draw = now
                self.stream.write("\r" + self._bar(phase, done, total))
                if finished:
                    self.stream.write("\n")
                    self._phase = None
                self.stream.flush()
            return
        # Not a terminal (CI logs, pipes): a few plain lines, never carriage returns.
        quarter = (4 * done // total) if total > 0 else 0
        if quarter > self._last_quarter:
            self._last_quarter = quarter
            pct = f"{100 * done // total}%" if total > 0 else "..."
            sizes = f" ({_mib(done)} of {_mib(total)})" if total > 0 else ""
            self.stream.write(f"{phase}: {pct}{sizes}\n")
            self.stream.flush()
        if finished:
            self._phase = None

    def _bar(self, phase: str, done: int, total: int) -> str:
        if total <= 0:
            return f"{phase}: {_mib(done)}"
        frac = min(1.0, done / total)
        filled = int(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        return f"{phase} [{bar}] {100 * frac:5.1f}% {_mib(done)} / {_mib(total)}"

    def _finish_line(self) -> None:
        if self.tty and self._phase is not None:
            self.stream.write("\n")
            self.stream.flush()

    def close(self) -> None:
        """End a bar left unfinished (e.g. after an error)."""
        self._finish_line()
        self._phase = None
