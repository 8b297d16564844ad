"""Declarative spec options (the mkdocs ``config_options`` pattern).

A :class:`Section` subclass lists its keys as :class:`Option` class attributes,
each with a ``doc`` string; the same declarations validate a spec, build the
object model the build consumes, and generate ``docs/spec.md``. Loading never
stops at the first problem: every option reports into a shared
:class:`Context` and returns ``INVALID`` so the walk can go on.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

from .problems import Problem
from .yamlnodes import (QUOTE_LIMIT, MappingNode, Node, ScalarNode, SequenceNode, describe,
                        is_refused, number, position, quote, scalar_value)

__all__ = ["Context", "Option", "Section", "Sub", "ListOf", "MapOf", "Str", "Bool", "Int", "Float",
           "Choice", "Name", "Size", "Url", "LocalPath", "INVALID", "MISSING", "did_you_mean",
           "join_key"]


class _Sentinel:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


INVALID = _Sentinel("INVALID")   # a value that failed validation (already reported)
MISSING = _Sentinel("MISSING")   # no default: the key is required


def did_you_mean(word: str, candidates) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or ''."""
    if len(str(word)) > QUOTE_LIMIT:
        return ""  # a typo is short; comparing a 5 MB value with every candidate is not
    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def join_key(parent: str, child: str | int) -> str:
    if isinstance(child, int):
        return f"{parent}[{child}]"
    if len(child) > QUOTE_LIMIT:
        child = child[:QUOTE_LIMIT] + "…"  # key paths appear in messages too
    return f"{parent}.{child}" if parent else child


class Context:
    """Collects problems while a spec is walked; knows the spec's file and folder."""

    def __init__(self, file: str, spec_dir: Path):
        self.file = file
        self.spec_dir = spec_dir
        self.problems: list[Problem] = []

    def _add(self, where, key: str, message: str, warning: bool) -> None:
        line = col = None
        if isinstance(where, Node):
            line, col = position(where)
        elif isinstance(where, tuple):
            line, col = where
        self.problems.append(Problem(self.file, line, col, key, message, warning))

    def error(self, where, key: str, message: str) -> None:
        self._add(where, key, message, False)

    def warn(self, where, key: str, message: str) -> None:
        self._add(where, key, message, True)

    @property
    def has_errors(self) -> bool:
        return any(not p.warning for p in self.problems)


class Option:
    """One key of a section: its type, default, documentation and validation."""

    type_doc = "any"

    def __init__(self, doc: str, *, default: Any = MISSING, example: Any = None):
        self.doc = doc
        self.default = default
        self.example = example
        self.name = ""

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    @property
    def required(self) -> bool:
        return self.default is MISSING

    def default_value(self, ctx: Context, key: str, parent: Node | None):
        return copy.deepcopy(self.default)

    def load(self, node: Node, ctx: Context, key: str):
        """Validate ``node``; return the value or ``INVALID`` after reporting."""
        if is_refused(node):
            return INVALID  # outside the accepted YAML: reported once, by refusals()
        if isinstance(node, ScalarNode) and scalar_value(node) is None:
            if self.default is not MISSING:
                # `key:` with nothing after it means "the default", as in mkdocs.
                return self.default_value(ctx, key, node)
            ctx.error(node, key, f"must not be empty (expected {self.type_doc})")
            return INVALID
        return self.check(node, ctx, key)

    def check(self, node: Node, ctx: Context, key: str):
        raise NotImplementedError

    def _scalar(self, node: Node, ctx: Context, key: str, types: tuple, expected: str):
        if isinstance(node, ScalarNode):
            value = scalar_value(node)
            if isinstance(value, types) and not (bool not in types and isinstance(value, bool)):
                return value
        ctx.error(node, key, f"expected {expected}, got {describe(node)}")
        return INVALID


class Str(Option):
    type_doc = "string"

    def __init__(self, doc: str, *, default: Any = MISSING, example: Any = None,
                 nonempty: bool = False, nullable: bool = False, pattern: str | None = None,
                 pattern_doc: str = ""):
        super().__init__(doc, default=default, example=example)
        self.nonempty, self.nullable = nonempty, nullable
        self.pattern = re.compile(pattern) if pattern else None
        self.pattern_doc = pattern_doc

    def check(self, node, ctx, key):
        value = self._scalar(node, ctx, key, (str,), "a string")
        if value is INVALID:
            return INVALID
        if self.nonempty and not value.strip():
            ctx.error(node, key, "must not be empty")
            return INVALID
        if self.pattern and not self.pattern.fullmatch(value):
            ctx.error(node, key, f"expected {self.pattern_doc}, got {quote(value)}")
            return INVALID
        return value


class Bool(Option):
    type_doc = "boolean"

    def check(self, node, ctx, key):
        return self._scalar(node, ctx, key, (bool,), "true or false")


class Int(Option):
    type_doc = "integer"

    def __init__(self, doc: str, *, min: int | None = None, max: int | None = None, **kw):
        super().__init__(doc, **kw)
        self.min, self.max = min, max

    def check(self, node, ctx, key):
        value = self._scalar(node, ctx, key, (int,), "an integer")
        if value is INVALID:
            return INVALID
        return _check_range(value, node, ctx, key, self.min, self.max, False, "an integer ")


class Float(Option):
    type_doc = "number"

    def __init__(self, doc: str, *, min: float | None = None, max: float | None = None,
                 min_exclusive: bool = False, **kw):
        super().__init__(doc, **kw)
        self.min, self.max, self.min_exclusive = min, max, min_exclusive

    def check(self, node, ctx, key):
        value = self._scalar(node, ctx, key, (int, float), "a number")
        if value is INVALID:
            return INVALID
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an integer beyond any float, e.g. 400 digits
            ctx.error(node, key, f"is too large for a number, got {describe(node)}")
            return INVALID
        if not finite:
            ctx.error(node, key, f"must be a finite number, got {value!r}")
            return INVALID
        # Integers stay integers (JSON `1`, HTML `min="1"`), floats stay floats.
        return _check_range(value, node, ctx, key, self.min, self.max, self.min_exclusive, "")


def _check_range(value, node, ctx, key, lo, hi, lo_exclusive, what):
    bad_lo = lo is not None and (value <= lo if lo_exclusive else value < lo)
    bad_hi = hi is not None and value > hi
    if bad_lo or bad_hi:
        parts = []
        if lo is not None:
            parts.append(f"{'>' if lo_exclusive else '>='} {lo:g}")
        if hi is not None:
            parts.append(f"<= {hi:g}")
        ctx.error(node, key, f"must be {what}{' and '.join(parts)}, got {number(value)}")
        return INVALID
    return value


class Choice(Option):
    def __init__(self, doc: str, choices: tuple, **kw):
        super().__init__(doc, **kw)
        self.choices = tuple(choices)

    @property
    def type_doc(self) -> str:
        return " \\| ".join(f"`{c}`" for c in self.choices)

    def check(self, node, ctx, key):
        value = scalar_value(node) if isinstance(node, ScalarNode) else None
        if isinstance(value, str) and value in self.choices:
            return value
        options = ", ".join(repr(c) for c in self.choices)
        got = describe(node)
        hint = did_you_mean(value, self.choices) if isinstance(value, str) else ""
        ctx.error(node, key, f"expected one of {options}, got {got}{hint}")
        return INVALID


_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class Name(Str):
    """An identifier (model names, form field names)."""

    type_doc = "name"

    def __init__(self, doc: str, **kw):
        super().__init__(doc, pattern=_NAME.pattern,
                         pattern_doc="a name of letters, digits and '_' starting with a letter", **kw)


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*", re.IGNORECASE)
_SIZE_DIGITS = 30  # more digits than any real size: refused before any arithmetic
_UNITS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3,
          "gib": 1024**3}
MIB = 1024 * 1024


def format_size(n: int) -> str:
    if n >= 1024 ** 5:
        return f"about {number(n)} bytes"  # no float division of a huge integer
    if n % MIB == 0:
        return f"{n // MIB} MiB"
    if n >= MIB:
        return f"{n / MIB:.1f} MiB"
    if n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} bytes"


class Size(Option):
    """A byte size: an integer number of bytes or a string such as ``16MiB``."""

    type_doc = "size"

    def __init__(self, doc: str, *, min: int, max: int, warn_above: int | None = None,
                 warn_reason: str = "", max_reason: str = "", multiple_of: int = 1,
                 multiple_reason: str = "", **kw):
        super().__init__(doc, **kw)
        self.min, self.max, self.warn_above = min, max, warn_above
        self.warn_reason, self.max_reason = warn_reason, max_reason
        self.multiple_of, self.multiple_reason = multiple_of, multiple_reason

    def check(self, node, ctx, key):
        value = scalar_value(node) if isinstance(node, ScalarNode) else None
        size = None
        if isinstance(value, int) and not isinstance(value, bool):
            size = value
        elif isinstance(value, str) and (m := _SIZE.fullmatch(value)):
            if len(m.group(1)) > _SIZE_DIGITS:
                ctx.error(node, key, f"must be at most {format_size(self.max)}"
                                     f"{self.max_reason}, got {describe(node)}")
                return INVALID
            # Decimal, not float: exact, and no OverflowError on a long number.
            size = int(Decimal(m.group(1)) * _UNITS[(m.group(2) or "b").lower()])
        if size is None:
            ctx.error(node, key, f"expected a size such as '16MiB' or a number of bytes, "
                                 f"got {describe(node)}")
            return INVALID
        if size < self.min:
            ctx.error(node, key, f"must be at least {format_size(self.min)}, got {format_size(size)}")
            return INVALID
        if size > self.max:
            ctx.error(node, key, f"must be at most {format_size(self.max)}{self.max_reason}, "
                                 f"got {format_size(size)}")
            return INVALID
        if size % self.multiple_of:
            lo = size - size % self.multiple_of
            ctx.error(node, key, f"must be a multiple of {self.multiple_of} bytes"
                                 f"{self.multiple_reason}, got {size} bytes (e.g. {lo} or "
                                 f"{lo + self.multiple_of})")
            return INVALID
        if self.warn_above is not None and size > self.warn_above:
            ctx.warn(node, key, f"{format_size(size)} is above {format_size(self.warn_above)}"
                                f"{self.warn_reason}")
        return size


class Url(Str):
    type_doc = "URL"

    def __init__(self, doc: str, *, trailing_slash: bool = False, **kw):
        super().__init__(doc, **kw)
        self.trailing_slash = trailing_slash

    def check(self, node, ctx, key):
        value = super().check(node, ctx, key)
        if value is INVALID:
            return INVALID
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s]*)?", value):
            ctx.error(node, key, f"expected an http:// or https:// URL, got {quote(value)}")
            return INVALID
        if self.trailing_slash and not value.endswith("/"):
            value += "/"
        return value


class LocalPath(Str):
    """A file or folder inside the spec's folder tree (relative to it); it must exist.

    The path is resolved (symlinks followed) before the check, so neither ``..`` nor a
    symlink can make the build copy or render a file from elsewhere on the machine
    (issue 11: a favicon of ``../../../etc/passwd`` was copied into the site).
    ``suffixes`` limits a file's extension; ``check_file(path)`` returns a problem or ''.
    """

    type_doc = "path"

    def __init__(self, doc: str, *, kind: str, suffixes: tuple[str, ...] = (),
                 check_file=None, **kw):
        super().__init__(doc, **kw)
        self.kind = kind  # "file" | "dir"
        self.suffixes, self.check_file = suffixes, check_file

    def check(self, node, ctx, key):
        value = super().check(node, ctx, key)
        if value is INVALID:
            return INVALID
        what = "file" if self.kind == "file" else "folder"
        try:
            path = (ctx.spec_dir / value).resolve()
            ok = path.is_file() if self.kind == "file" else path.is_dir()
        except (OSError, RuntimeError, ValueError) as e:  # NUL, a symlink loop, a long name
            reason = getattr(e, "strerror", None) or str(e)
            ctx.error(node, key, f"not a usable path: {quote(value)} ({quote(reason)})")
            return INVALID
        if not path.is_relative_to(ctx.spec_dir):
            ctx.error(node, key, f"{quote(value)} is outside the spec's folder "
                                 f"{str(ctx.spec_dir)!r}; a spec may name only files "
                                 f"inside its own folder tree (copy the {what} there)")
            return INVALID
        if self.suffixes and path.suffix.lower() not in self.suffixes:
            ctx.error(node, key, f"{quote(value)} is not one of the accepted file types "
                                 f"({' '.join(self.suffixes)})")
            return INVALID
        if not ok:
            exists_as = ""
            if path.exists():
                exists_as = f" ({quote(value)} is a {'folder' if path.is_dir() else 'file'})"
            ctx.error(node, key, f"no such {what}: {quote(value)}{exists_as} "
                                 f"(relative paths start at the spec's folder "
                                 f"{str(ctx.spec_dir)!r})")
            return INVALID
        if self.check_file is not None:
            problem = self.check_file(path)
            if problem:
                ctx.error(node, key, f"{quote(value)}: {problem}")
                return INVALID
        return path


class Section:
    """A mapping with declared keys. Subclasses list :class:`Option` attributes.

    The loaded instance carries each key's value as an attribute, plus the
    YAML nodes (``_node``, ``_value_nodes``) so later cross-checks can point at
    the right line.
    """

    _options: ClassVar[dict[str, Option]] = {}
    _node: Node | None
    _key: str
    _value_nodes: dict[str, Node]

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        options: dict[str, Option] = {}
        for base in reversed(cls.__mro__[1:]):
            options.update(getattr(base, "_options", {}))
        options.update({k: v for k, v in cls.__dict__.items() if isinstance(v, Option)})
        cls._options = options

    @classmethod
    def load(cls, node: Node | None, ctx: Context, key: str, parent: Node | None = None):
        """Load a section from a mapping node (``None``: the key is absent)."""
        if node is not None and not isinstance(node, MappingNode):
            ctx.error(node, key, f"expected a mapping of keys, got {describe(node)}")
            return INVALID
        obj = cls.__new__(cls)
        obj._node = node if node is not None else parent
        obj._key = key
        obj._value_nodes = {}
        seen: dict[str, Node] = {}
        refused = False
        for key_node, value_node in (node.value if node is not None else []):
            if is_refused(key_node):
                refused = True  # a merge key or a tagged key: reported by refusals()
                continue
            name = scalar_value(key_node) if isinstance(key_node, ScalarNode) else None
            if not isinstance(name, str):
                ctx.error(key_node, key, f"expected a key name, got {describe(key_node)}")
                continue
            child = join_key(key, name)
            if name in seen:
                ctx.error(key_node, child, f"duplicate key {quote(name)} (first defined at line "
                                           f"{position(seen[name])[0]})")
                continue
            seen[name] = key_node
            option = cls._options.get(name)
            if option is None:
                hint = did_you_mean(name, cls._options)
                if not hint:
                    hint = f" (expected one of: {', '.join(cls._options)})"
                ctx.warn(key_node, child, f"unknown key {quote(name)}{hint}")
                continue
            value = option.load(value_node, ctx, child)
            obj._value_nodes[name] = value_node
            setattr(obj, name, None if value is INVALID else value)
        where = obj._node
        for name, option in cls._options.items():
            if name in seen:
                continue
            child = join_key(key, name)
            if option.required:
                if not refused:  # a refused '<<: *base' may have been meant to give it
                    ctx.error(where, child, "missing required key")
                setattr(obj, name, None)
            else:
                setattr(obj, name, option.default_value(ctx, child, where))
        obj.validate(ctx)
        return obj

    def validate(self, ctx: Context) -> None:
        """Cross-key checks of this section; override in subclasses."""

    def node_of(self, name: str) -> Node | None:
        """The YAML node of key ``name`` (or of this section when the key is absent)."""
        return self._value_nodes.get(name, self._node)

    def to_dict(self) -> dict:
        out = {}
        for name in self._options:
            out[name] = _plain(getattr(self, name))
        return out


def _plain(value):
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


class Sub(Option):
    """A nested section.

    ``absent`` says what a missing key means: ``"defaults"`` (every key of the
    section takes its default), ``"none"`` (the feature is off: ``None``) or
    ``"required"`` (an error).
    """

    def __init__(self, section: type[Section], doc: str, *, absent: str = "defaults", **kw):
        super().__init__(doc, default=MISSING if absent == "required" else None, **kw)
        self.section = section
        self.absent = absent

    @property
    def type_doc(self) -> str:
        return "mapping"

    def default_value(self, ctx, key, parent):
        if self.absent == "none":
            return None
        return self.section.load(None, ctx, key, parent)

    def check(self, node, ctx, key):
        return self.section.load(node, ctx, key)


class ListOf(Option):
    def __init__(self, item: Option, doc: str, *, min_items: int = 0, **kw):
        super().__init__(doc, **kw)
        self.item, self.min_items = item, min_items

    @property
    def type_doc(self) -> str:
        return f"list of {self.item.type_doc}"

    def check(self, node, ctx, key):
        if isinstance(node, ScalarNode) and isinstance(self.item, Str) and \
                isinstance(scalar_value(node), str):
            ctx.error(node, key, f"expected a list, got {describe(node)} "
                                 f"(write it as a list item: '- ...')")
            return INVALID
        if not isinstance(node, SequenceNode):
            ctx.error(node, key, f"expected a list, got {describe(node)}")
            return INVALID
        if len(node.value) < self.min_items:
            ctx.error(node, key, f"must have at least {self.min_items} "
                                 f"item{'s' if self.min_items != 1 else ''}")
            return INVALID
        out = []
        for i, item in enumerate(node.value):
            value = self.item.load(item, ctx, join_key(key, i))
            out.append(None if value is INVALID else value)
        return out


class MapOf(Option):
    """A mapping from names (identifiers) to items of one kind."""

    def __init__(self, item: Option, doc: str, *, min_items: int = 0, **kw):
        super().__init__(doc, **kw)
        self.item, self.min_items = item, min_items

    @property
    def type_doc(self) -> str:
        return f"mapping of name → {self.item.type_doc}"

    def check(self, node, ctx, key):
        if not isinstance(node, MappingNode):
            ctx.error(node, key, f"expected a mapping of names, got {describe(node)}")
            return INVALID
        if len(node.value) < self.min_items:
            ctx.error(node, key, f"must have at least {self.min_items} "
                                 f"entr{'ies' if self.min_items != 1 else 'y'}")
            return INVALID
        out: dict[str, Any] = {}
        first: dict[str, Node] = {}
        for key_node, value_node in node.value:
            if is_refused(key_node):
                refused = True  # a merge key or a tagged key: reported by refusals()
                continue
            name = scalar_value(key_node) if isinstance(key_node, ScalarNode) else None
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                ctx.error(key_node, key, f"expected a name of letters, digits and '_' starting "
                                         f"with a letter, got {describe(key_node)}")
                continue
            child = join_key(key, name)
            if name in first:
                ctx.error(key_node, child, f"duplicate key {quote(name)} (first defined at line "
                                           f"{position(first[name])[0]})")
                continue
            first[name] = key_node
            value = self.item.load(value_node, ctx, child)
            out[name] = None if value is INVALID else value
        return out
