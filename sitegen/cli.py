"""The ``sitegen`` command line: one module per verb in ``sitegen/commands/``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Any :class:`~sitegen.errors.SitegenError` becomes
``error: ...`` on stderr and exit status 1, never a traceback.

Only the module of the verb being run is imported (issue 10): ``sitegen convert`` must work
without ``livereload``, which only ``serve`` needs. ``sitegen --help`` (no verb) imports them
all for their ``HELP`` lines, so a command module keeps its heavy imports inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import __version__
from .errors import SitegenError
from .spec import SpecErrors

__all__ = ["main", "COMMANDS"]

# One line adds a verb: its module is sitegen.commands.<name>.
COMMANDS: tuple[str, ...] = ("new", "validate", "build", "serve", "convert", "gh-deploy")


def _command(name: str):
    """The module of verb ``name``, or None for a verb whose module has not landed yet."""
    module = f"sitegen.commands.{name.replace('-', '_')}"  # gh-deploy: commands/gh_deploy.py
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            return None
        raise


def _parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sitegen",
        description="Build private, client-only AI web apps (an LLM running in the visitor's "
                    "browser with WebGPU) from one YAML spec.")
    parser.add_argument("--version", action="version", version=f"sitegen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # A verb first: only its module is imported. Otherwise (--help, --version, no or an unknown
    # verb) every verb is added, for the help text and the "invalid choice" error.
    verb = argv[0] if argv and argv[0] in COMMANDS else None
    for name in (verb,) if verb else COMMANDS:
        module = _command(name)
        if module is None:
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser(argv).parse_args(argv)
    try:
        return args._run(args) or 0
    except SpecErrors as e:
        for p in e.problems:
            print(str(p), file=sys.stderr)
        print(f"error: {e.file}: {e.message}", file=sys.stderr)
        return 1
    except SitegenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug or an OS failure: one line, no traceback
        if os.environ.get("SITEGEN_DEBUG") == "1":
            raise
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        print("this is unexpected: please report it (SITEGEN_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1


def print_warnings(problems) -> None:
    """Print a spec's warnings (used by every verb that loads a spec)."""
    for p in problems:
        print(str(p), file=sys.stderr)
