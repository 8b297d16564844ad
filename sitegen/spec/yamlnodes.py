"""YAML loading that keeps node positions.

The schema walks PyYAML's *composed* node tree (not the constructed Python
objects) so that every value still knows its ``start_mark``; scalars are
constructed one at a time with the safe constructor, which gives exactly the
types ``yaml.safe_load`` would.

The accepted YAML is a safe subset (issue 11; documented in ``docs/spec.md``):
strings, integers, floats, booleans, null, lists and mappings, anchors and
aliases. :func:`refusals` finds every node outside it -- a tag other than the
core schema's (``!shiny``, ``!!python/...``, ``!!binary``, ``!!set``), a merge
key (``<<: *base``), or a scalar its tag cannot be built from (``!!int lots``,
``2024-13-01``, a 5,000-digit integer) -- and marks it, so the schema skips it
instead of constructing it.
"""

from __future__ import annotations

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ["Node", "MappingNode", "ScalarNode", "SequenceNode", "compose", "scalar_value",
           "position", "describe", "quote", "refusals", "is_refused", "line_col",
           "number", "YamlSyntaxError", "QUOTE_LIMIT", "REFUSED"]

QUOTE_LIMIT = 60  # characters of a value a message may quote (issue 11: a 5 MB value)

_CORE = "tag:yaml.org,2002:"
# Tags a spec may carry: the core schema, plus timestamps because PyYAML reads an unquoted
# 2024-05-01 as a date (the schema then says "expected a string, got the date ...").
_SCALAR_TAGS = {_CORE + t for t in ("null", "bool", "int", "float", "str", "timestamp")}
_TAGS = {ScalarNode: _SCALAR_TAGS, SequenceNode: {_CORE + "seq"}, MappingNode: {_CORE + "map"}}
_MERGE = _CORE + "merge"


class YamlSyntaxError(Exception):
    """Invalid YAML; ``line``/``col`` are 1-based."""

    def __init__(self, message: str, line: int | None, col: int | None):
        super().__init__(message)
        self.message, self.line, self.col = message, line, col


def line_col(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of character ``offset`` of ``text``."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def compose(text: str) -> Node | None:
    """Parse ``text`` into a node tree (``None`` for an empty document)."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.reader.ReaderError as e:
        # A control character or other byte YAML does not allow: say where, and which.
        line, col = line_col(text, e.position)
        raise YamlSyntaxError(f"character {_char(e.character)} is not allowed in YAML "
                              f"(a binary file, or a control character pasted into the text?)",
                              line, col) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or "syntax error"
        if e.context:
            problem = f"{problem} ({e.context}"
            if e.context_mark and e.problem_mark and e.context_mark.line != e.problem_mark.line:
                problem += f" at line {e.context_mark.line + 1}"
            problem += ")"
        return _raise(problem, mark)
    except yaml.YAMLError as e:
        raise YamlSyntaxError(quote(str(e)), 1, 1) from None
    except RecursionError:
        raise YamlSyntaxError("the document is nested too deeply", 1, 1) from None


def _char(c) -> str:
    code = ord(c) if isinstance(c, str) else int(c)
    return f"U+{code:04X}"


def _raise(problem, mark):
    line = mark.line + 1 if mark else None
    col = mark.column + 1 if mark else None
    raise YamlSyntaxError(problem, line, col) from None


_CONSTRUCTOR = yaml.SafeLoader("")


class _Refused:
    """What :func:`scalar_value` gives for a node outside the accepted subset."""

    def __repr__(self) -> str:
        return "REFUSED"


REFUSED = _Refused()


def _construct(node: ScalarNode):
    return _CONSTRUCTOR.construct_object(node, deep=True)


def scalar_value(node: ScalarNode):
    """The Python value of a scalar node, typed as ``yaml.safe_load`` types it.

    A node :func:`refusals` marked (or one that cannot be constructed) gives ``REFUSED``,
    which no option accepts; it never raises.
    """
    if is_refused(node):
        return REFUSED
    try:
        return _construct(node)
    except Exception:  # noqa: BLE001 - refusals() reports why; here it is just not a value
        return REFUSED


def is_refused(node: Node) -> bool:
    """Whether :func:`refusals` found ``node`` outside the accepted YAML (already reported)."""
    return getattr(node, "sitegen_refused", False)


def refusals(root: Node, join_key) -> list[tuple[Node, str, str]]:
    """Every node of ``root`` outside the accepted YAML, as (node, key path, message).

    Each is marked so that :func:`is_refused` is true for it. ``join_key(parent, child)``
    builds the key paths the schema uses. Iterative, and each node is visited once, so
    aliases (even recursive ones) cost nothing extra.
    """
    out: list[tuple[Node, str, str]] = []
    seen: set[int] = set()
    stack: list[tuple[Node, str]] = [(root, "")]
    while stack:
        node, key = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        message = _refusal(node)
        if message is not None:
            node.sitegen_refused = True
            out.append((node, key, message))
            continue
        if isinstance(node, SequenceNode):
            stack.extend((item, join_key(key, i)) for i, item in enumerate(node.value))
        elif isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE:
                    key_node.sitegen_refused = True  # not the value: its anchor may be used
                    out.append((key_node, key, "merge keys ('<<: *anchor') are not supported; "
                                               "write the keys out (an alias of a whole value, "
                                               "'key: *anchor', is fine)"))
                    continue
                stack.append((value_node, join_key(key, _key_text(key_node))))
                stack.append((key_node, key))
    out.sort(key=lambda item: position(item[0]))
    return out


def _key_text(node: Node) -> str:
    if isinstance(node, ScalarNode) and not is_refused(node):
        return str(node.value)
    return "?"


def _refusal(node: Node) -> str | None:
    """Why ``node`` itself is outside the accepted YAML, or ``None``."""
    tag = node.tag
    if tag not in _TAGS.get(type(node), ()):
        shown = "!!" + tag[len(_CORE):] if tag.startswith(_CORE) else tag
        if tag == _MERGE:
            return "merge keys ('<<: *anchor') are not supported; write the keys out"
        return (f"YAML tag {quote(shown)} is not accepted: a spec holds only strings, numbers, "
                f"booleans, null, lists and mappings (quote the value to make it a string)")
    if not isinstance(node, ScalarNode):
        return None
    try:
        _construct(node)
    except Exception as e:  # noqa: BLE001 - PyYAML raises ValueError, OverflowError, ...
        kind = tag[len(_CORE):]
        what = {"timestamp": "a date", "int": "an integer", "float": "a number",
                "bool": "a boolean", "null": "null"}.get(kind, kind)
        reason = ""
        if "digits" in str(e):
            reason = f" (it has {len(node.value)} characters)"
        elif kind == "timestamp":  # e.g. 'month must be in 1..12'
            reason = f" ({str(e).splitlines()[0][:QUOTE_LIMIT]})"
        return (f"{quote(node.value)} cannot be read as {what}{reason}; "
                f"quote it to make it a string")
    return None


def position(node: Node) -> tuple[int, int]:
    """1-based (line, column) where ``node`` starts."""
    return node.start_mark.line + 1, node.start_mark.column + 1


def quote(value, limit: int = QUOTE_LIMIT) -> str:
    """``repr`` of a value for a message, cut to ``limit`` characters plus '…' (issue 11)."""
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return repr(value[:limit])[:-1] + "…" + repr(value[:limit])[-1]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** limit:
        return f"an integer of {len(str(abs(value)))} digits"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def number(value) -> str:
    """A number for a message: ``%g`` style, never an OverflowError on a huge integer."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** 15:
        digits = str(abs(value))
        return f"{'-' if value < 0 else ''}{digits[0]}.{digits[1:6]}e+{len(digits) - 1}"
    return f"{value:g}"


def describe(node: Node) -> str:
    """Say what a node is, for messages such as 'expected a number, got a list'."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    value = scalar_value(node)
    if value is REFUSED:
        return f"{quote(node.value)}, which is not accepted YAML"
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()} (quote it to make it a string)"
    if isinstance(value, int):
        return f"the number {value!r}" if abs(value) < 10 ** 20 else \
            f"an integer of {len(str(abs(value)))} digits"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {quote(value)}"
    if node.tag == _CORE + "timestamp":
        return f"the date {quote(node.value)} (quote it to make it a string)"
    return f"{type(value).__name__} {quote(value)}"
