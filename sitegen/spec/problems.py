"""Spec problems (errors and warnings) collected in one pass.

mkdocs stops at the first bad key; sitegen gathers every problem of a spec
and reports them together, each as ``FILE:LINE:COL: key.path: message``
(issue 2), so an author fixes a spec in one round trip.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SpecError

__all__ = ["Problem", "SpecErrors"]


@dataclass(frozen=True)
class Problem:
    """One error or warning, located by file, 1-based line/column and dotted key path."""

    file: str
    line: int | None
    col: int | None
    key: str
    message: str
    warning: bool = False

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}:{self.col}"
        key = f" {self.key}:" if self.key else ""
        kind = " warning:" if self.warning else ""
        return f"{where}:{key}{kind} {self.message}"


class SpecErrors(SpecError):
    """A spec with one or more errors; ``problems`` holds every error and warning found."""

    def __init__(self, file: str, problems: list[Problem]):
        self.problems = list(problems)
        errors = [p for p in self.problems if not p.warning]
        n = len(errors)
        super().__init__(f"{n} error{'s' if n != 1 else ''} in the spec", file=file)

    def __str__(self) -> str:
        lines = [str(p) for p in self.problems]
        lines.append(f"{self.file}: {self.message}")
        return "\n".join(lines)
