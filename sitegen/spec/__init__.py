"""The app spec: load ``app.yaml``, validate every key in one pass, return the object model.

>>> spec = load_spec("sample_sites/chat/app.yaml")      # raises SpecErrors listing every error
>>> spec.apps[0].generation.temperature
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..errors import SpecError
from .options import Context
from .problems import Problem, SpecErrors
from .schema import (UI, App, Field, Followup, Form, Generation, Host, Model, Prompts, Site, Spec)
from .sources import ModelSource
from .template import parse_template, placeholders
from .options import join_key
from .yamlnodes import YamlSyntaxError, compose, line_col, refusals

__all__ = ["load_spec", "Spec", "Site", "Model", "Host", "App", "Prompts", "Form", "Field",
           "Followup", "Generation", "UI", "ModelSource", "Problem", "SpecErrors",
           "parse_template", "placeholders"]


def load_spec(path: str | Path, *, strict: bool = False) -> Spec:
    """Load and validate a spec.

    Raises :class:`SpecErrors` (every error, with warnings) when anything is
    wrong; with ``strict`` warnings count as errors. On success the returned
    :class:`Spec` has ``warnings`` (a list of :class:`Problem`), ``path`` and
    ``spec_dir``.
    """
    path = Path(path)
    file = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SpecError("no such spec file (expected a YAML file such as app.yaml)",
                        file=file) from None
    except IsADirectoryError:
        raise SpecError("is a folder; give the spec file inside it (e.g. app.yaml)",
                        file=file) from None
    except OSError as e:
        raise SpecError(f"cannot read: {e.strerror}", file=file) from None
    try:
        # Universal newlines, as read_text() would give.
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except UnicodeDecodeError as e:
        # Everything before the bad byte is text: that gives its line and column.
        before = data[:e.start].decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
        line, col = line_col(before, len(before))
        raise SpecErrors(file, [Problem(file, line, col, "", f"not UTF-8 text: byte "
                                        f"0x{data[e.start]:02x} (a binary file, or text in "
                                        f"another encoding? save the spec as UTF-8)")]
                         ) from None
    spec_dir = path.resolve().parent
    ctx = Context(file, spec_dir)
    try:
        root = compose(text)
    except YamlSyntaxError as e:
        raise SpecErrors(file, [Problem(file, e.line, e.col, "", f"invalid YAML: {e.message}")]
                         ) from None
    if root is None:
        raise SpecErrors(file, [Problem(file, 1, 1, "", "the spec is empty; it needs at least "
                                                        "'site', 'models' and 'apps'")])
    for node, key, message in refusals(root, join_key):
        ctx.error(node, key, message)
    spec = Spec.load(root, ctx, "")
    # Cross-checks run after the walk; report in file order all the same.
    problems = sorted(ctx.problems, key=lambda p: (p.line or 0, p.col or 0))
    if strict:
        problems = [replace(p, warning=False, message=p.message + " (an error with --strict)")
                    if p.warning else p for p in problems]
    if any(not p.warning for p in problems):
        raise SpecErrors(file, problems)
    spec.warnings = problems
    spec.path = path
    spec.spec_dir = spec_dir
    return spec
