"""Prompt templates of forms: ``{field}`` placeholders, ``{{`` and ``}}`` for literal braces,
``[[ ... ]]`` for an optional part, left out when any field it uses is empty.

The syntax is deliberately tiny (no expressions, filters or attribute access)
so the page script can fill it with a few lines of JavaScript and a visitor's
input can never be evaluated as template code: values are substituted once,
never re-parsed. The build ships the parsed form (``parts``) in ``app.json``.
"""

from __future__ import annotations

import re

from .yamlnodes import quote

__all__ = ["TemplateSyntaxError", "parse_template", "placeholders"]

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|\{|\}|\[\[|\]\]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class TemplateSyntaxError(ValueError):
    pass


def parse_template(text: str) -> list[dict]:
    """Split ``text`` into ``[{"text": ...} | {"field": name} | {"optional": [parts]}]``,
    merging adjacent text. An optional part holds text and fields (no nesting) and uses at
    least one field."""
    top: list[dict] = []
    parts = top
    opened = 0  # offset of the open ``[[``

    def add_text(s: str) -> None:
        if not s:
            return
        if parts and "text" in parts[-1]:
            parts[-1]["text"] += s
        else:
            parts.append({"text": s})

    pos = 0
    for m in _TOKEN.finditer(text):
        add_text(text[pos:m.start()])
        pos = m.end()
        tok = m.group(0)
        if tok == "[[":
            if parts is not top:
                raise TemplateSyntaxError(f"'[[' at {_where(text, m.start())} opens an optional "
                                          f"part inside the one opened at "
                                          f"{_where(text, opened)}: close that one first")
            opened, parts = m.start(), []
            top.append({"optional": parts})
        elif tok == "]]":
            if parts is top:
                raise TemplateSyntaxError(f"']]' at {_where(text, m.start())} closes no "
                                          "optional part (open one with '[[')")
            if not placeholders(parts):
                raise TemplateSyntaxError(f"the optional part at {_where(text, opened)} uses no "
                                          "field: '[[ ... ]]' is left out when a field in it is "
                                          "empty, so it needs one")
            parts = top
        elif tok == "{{":
            add_text("{")
        elif tok == "}}":
            add_text("}")
        elif tok == "{":
            raise TemplateSyntaxError(f"'{{' at {_where(text, m.start())} is never closed "
                                      "(write '{{' for a literal '{')")
        elif tok == "}":
            raise TemplateSyntaxError(f"'}}' at {_where(text, m.start())} has no opening '{{' "
                                      "(write '}}' for a literal '}')")
        else:
            name = m.group(1)
            if not _NAME.fullmatch(name):
                raise TemplateSyntaxError(
                    f"{quote(tok)} at {_where(text, m.start())} is not a placeholder: write "
                    "'{name}' with a field name of letters, digits and '_' "
                    "(and '{{' for a literal '{')")
            parts.append({"field": name})
    add_text(text[pos:])
    if parts is not top:
        raise TemplateSyntaxError(f"'[[' at {_where(text, opened)} is never closed with ']]'")
    return top


def placeholders(parts: list[dict]) -> list[str]:
    """Field names used by parsed ``parts``, in first-use order, without repeats."""
    seen: dict[str, None] = {}
    for p in parts:
        if "field" in p:
            seen.setdefault(p["field"])
        for name in placeholders(p.get("optional", [])):
            seen.setdefault(name)
    return list(seen)


def _where(text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"line {line}, column {col} of the template"
