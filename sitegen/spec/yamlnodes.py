"""YAML loading that keeps node positions.

The schema walks PyYAML's *composed* node tree (not the constructed Python
objects) so that every value still knows its ``start_mark``; scalars are
constructed one at a time with the safe constructor, which gives exactly the
types ``yaml.safe_load`` would.
"""

from __future__ import annotations

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ["Node", "MappingNode", "ScalarNode", "SequenceNode", "compose", "scalar_value",
           "position", "describe", "YamlSyntaxError"]


class YamlSyntaxError(Exception):
    """Invalid YAML; ``line``/``col`` are 1-based."""

    def __init__(self, message: str, line: int | None, col: int | None):
        super().__init__(message)
        self.message, self.line, self.col = message, line, col


def compose(text: str) -> Node | None:
    """Parse ``text`` into a node tree (``None`` for an empty document)."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or "syntax error"
        if e.context:
            problem = f"{problem} ({e.context}"
            if e.context_mark and e.problem_mark and e.context_mark.line != e.problem_mark.line:
                problem += f" at line {e.context_mark.line + 1}"
            problem += ")"
        return _raise(problem, mark)
    except yaml.YAMLError as e:  # e.g. a reader error on bad bytes
        raise YamlSyntaxError(str(e), None, None) from None
    except RecursionError:
        raise YamlSyntaxError("the document is nested too deeply", 1, 1) from None


def _raise(problem, mark):
    line = mark.line + 1 if mark else None
    col = mark.column + 1 if mark else None
    raise YamlSyntaxError(problem, line, col) from None


_CONSTRUCTOR = yaml.SafeLoader("")


def scalar_value(node: ScalarNode):
    """The Python value of a scalar node, typed as ``yaml.safe_load`` types it."""
    return _CONSTRUCTOR.construct_object(node, deep=True)


def position(node: Node) -> tuple[int, int]:
    """1-based (line, column) where ``node`` starts."""
    return node.start_mark.line + 1, node.start_mark.column + 1


def describe(node: Node) -> str:
    """Say what a node is, for messages such as 'expected a number, got a list'."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    value = scalar_value(node)
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()} (quote it to make it a string)"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"{type(value).__name__} {value!r}"
