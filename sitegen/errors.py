"""One exception tree for every user-facing failure.

The CLI turns any ``SitegenError`` into ``error: <message>`` and exit status 1,
never a traceback. Messages name the file, key or flag, and line where known,
and say how to fix the problem.
"""

from __future__ import annotations

__all__ = ["SitegenError", "SpecError", "ConvertError", "BuildError", "ServeError", "DeployError"]


class SitegenError(Exception):
    """Base class. ``file``/``line``/``col``/``key`` locate the problem when known."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 col: int | None = None, key: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.col = col
        self.key = key

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = str(self.file)
            if self.line is not None:
                where += f":{self.line}"
                if self.col is not None:
                    where += f":{self.col}"
            where += ": "
        key = f"{self.key}: " if self.key else ""
        return f"{where}{key}{self.message}"


class SpecError(SitegenError):
    """A problem in an app spec (YAML)."""


class ConvertError(SitegenError):
    """A problem converting a model checkpoint (bad file, unknown architecture, ...)."""


class BuildError(SitegenError):
    """A problem building a site (templates, output folder, ...)."""


class ServeError(SitegenError):
    """A problem starting or running the preview server."""


class DeployError(SitegenError):
    """A problem deploying a site (git, a remote, a branch, a workflow file; issue 15)."""
