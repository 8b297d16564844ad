"""``apps[].output``: structured output (issue 17). The app's replies are JSON that follows a
JSON Schema (the runtime constrains generation to it: runtime/grammar/), and the page renders
that data as cards or a table, by a declarative mapping (no templates run in the page, no
``eval``, model text only ever set as ``textContent``).

The schema is checked here against the subset the runtime compiles (runtime/grammar/schema.js,
``SUPPORTED_KEYWORDS``: tests/test_structured_spec.py checks the two lists agree), each problem
at its key's line.
"""

from __future__ import annotations

import re

from .options import INVALID, Choice, Context, ListOf, Option, Section, Str, did_you_mean, join_key
from .yamlnodes import MappingNode, ScalarNode, SequenceNode, describe, quote, scalar_value

__all__ = ["Output", "JsonSchema", "SUPPORTED_KEYWORDS", "schema_at"]

# The keywords the runtime's schema compiler reads, per type (runtime/grammar/schema.js).
SUPPORTED_KEYWORDS: dict[str, tuple[str, ...]] = {
    "any": ("type", "enum", "const", "anyOf", "title", "description", "default", "examples", "$schema", "$id",
            "$comment"),
    "object": ("properties", "required", "additionalProperties"),
    "array": ("items", "minItems", "maxItems"),
    "string": ("minLength", "maxLength", "pattern"),
    "number": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"),
    "integer": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"),
    "boolean": (),
    "null": (),
}
_TYPES = tuple(t for t in SUPPORTED_KEYWORDS if t != "any")
# Digits the runtime writes: 15 before the point, 6 after (runtime/grammar/schema.js).
_INT_DIGITS = 15
# What the runtime's regex dialect refuses (runtime/grammar/regex.js), for an early error.
_REGEX_REFUSED = [(re.compile(r"\(\?[^:]"), "lookaround, named groups and flags '(?...)' are not supported"),
                  (re.compile(r"\\[1-9bBAZzGpPkQE]"), "escapes such as \\b, \\1, \\p are not supported"),
                  (re.compile(r"\{\d+(,\d*)?\}\+|[*+?]\+"), "possessive quantifiers are not supported")]


def _plain(node):
    """The Python value of a YAML node (mappings and lists recursively)."""
    if isinstance(node, MappingNode):
        return {scalar_value(k): _plain(v) for k, v in node.value}
    if isinstance(node, SequenceNode):
        return [_plain(v) for v in node.value]
    return scalar_value(node)


def _has_type(v, t: str) -> bool:
    if t == "object":
        return isinstance(v, dict)
    if t == "array":
        return isinstance(v, list)
    if t == "string":
        return isinstance(v, str)
    if t == "integer":
        return isinstance(v, int) and not isinstance(v, bool) or isinstance(v, float) and v.is_integer()
    if t == "number":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if t == "boolean":
        return isinstance(v, bool)
    return v is None


def _check_schema(node, ctx: Context, key: str) -> bool:
    """Report every problem of the schema at ``node`` (the runtime's rules); True when none."""
    ok = True

    def err(where, k, msg):
        nonlocal ok
        ok = False
        ctx.error(where, k, msg)

    if isinstance(node, ScalarNode) and scalar_value(node) is True:
        return True
    if not isinstance(node, MappingNode):
        err(node, key, f"expected a JSON Schema (a mapping), got {describe(node)}")
        return False
    entries = {}
    for k, v in node.value:
        name = scalar_value(k) if isinstance(k, ScalarNode) else None
        if not isinstance(name, str):
            err(k, key, f"expected a keyword, got {describe(k)}")
            continue
        entries[name] = (k, v)
    types = None
    if "type" in entries:
        k, v = entries["type"]
        raw = _plain(v)
        types = raw if isinstance(raw, list) else [raw]
        if not types:
            err(v, join_key(key, "type"), "expected a type name or a non-empty list of them")
            types = None
        else:
            for t in types:
                if t not in _TYPES:
                    err(v, join_key(key, "type"), f"unknown type {quote(t)} (expected one of "
                                                  f"{', '.join(_TYPES)}){did_you_mean(str(t), _TYPES)}")
                    types = None
                    break
    allowed = set(SUPPORTED_KEYWORDS["any"])
    for t in types or _TYPES:
        allowed.update(SUPPORTED_KEYWORDS[t])
    for name, (k, v) in entries.items():
        if name in allowed:
            continue
        owners = [t for t in _TYPES if name in SUPPORTED_KEYWORDS[t]]
        if owners and types:
            err(k, join_key(key, name), f"keyword '{name}' does not apply to type {'/'.join(types)} "
                                        f"(it is for {'/'.join(owners)})")
        else:
            supported = ", ".join(sorted(x for x in allowed if not x.startswith("$")))
            err(k, join_key(key, name), f"unsupported JSON Schema keyword '{name}' (supported: {supported})"
                                        f"{did_you_mean(name, allowed)}")

    def sub(name):
        return entries[name][1] if name in entries else None

    for name in ("enum", "const"):
        if name in entries:
            values = _plain(sub(name))
            values = [values] if name == "const" else values
            if not isinstance(values, list) or not values:
                err(sub(name), join_key(key, name), "expected a non-empty list of values")
            elif types and not any(_has_type(v, t) for v in values for t in types):
                err(sub(name), join_key(key, name), "no value of the list has the schema's type")
    if "anyOf" in entries:
        v = sub("anyOf")
        if types:
            err(entries["anyOf"][0], join_key(key, "anyOf"), "anyOf beside type is not supported: put the "
                                                              "type in each option")
        if not isinstance(v, SequenceNode) or not v.value:
            err(v, join_key(key, "anyOf"), "expected a non-empty list of schemas")
        else:
            for i, o in enumerate(v.value):
                ok &= _check_schema(o, ctx, join_key(join_key(key, "anyOf"), i))
    props = sub("properties")
    prop_names: list[str] = []
    if props is not None:
        if not isinstance(props, MappingNode):
            err(props, join_key(key, "properties"), f"expected a mapping of names to schemas, got {describe(props)}")
        else:
            for pk, pv in props.value:
                pname = scalar_value(pk) if isinstance(pk, ScalarNode) else None
                if not isinstance(pname, str):
                    err(pk, join_key(key, "properties"), f"expected a property name, got {describe(pk)}")
                    continue
                prop_names.append(pname)
                ok &= _check_schema(pv, ctx, join_key(join_key(key, "properties"), pname))
    if "required" in entries:
        v = sub("required")
        req = _plain(v)
        if not isinstance(req, list) or not all(isinstance(r, str) for r in req):
            err(v, join_key(key, "required"), "expected a list of property names")
        else:
            for i, r in enumerate(req):
                if r not in prop_names:
                    err(v.value[i], join_key(join_key(key, "required"), i),
                        f"'{r}' is required but not in properties{did_you_mean(r, prop_names)}")
    if "additionalProperties" in entries:
        v = sub("additionalProperties")
        if not (isinstance(v, ScalarNode) and isinstance(scalar_value(v), bool)):
            ok &= _check_schema(v, ctx, join_key(key, "additionalProperties"))
    if "items" in entries:
        v = sub("items")
        if isinstance(v, SequenceNode):
            err(v, join_key(key, "items"), "a list of item schemas (tuple validation) is not supported")
        else:
            ok &= _check_schema(v, ctx, join_key(key, "items"))
    for lo_name, hi_name in (("minItems", "maxItems"), ("minLength", "maxLength")):
        lo = hi = None
        for name in (lo_name, hi_name):
            if name in entries:
                v = sub(name)
                n = scalar_value(v) if isinstance(v, ScalarNode) else None
                if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                    err(v, join_key(key, name), f"expected an integer >= 0, got {describe(v)}")
                elif name == lo_name:
                    lo = n
                else:
                    hi = n
        if lo is not None and hi is not None and hi < lo:
            err(sub(hi_name), join_key(key, hi_name), f"{hi_name} ({hi}) is below {lo_name} ({lo})")
    bounds = {}
    for name in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if name in entries:
            v = sub(name)
            n = scalar_value(v) if isinstance(v, ScalarNode) else None
            if not isinstance(n, (int, float)) or isinstance(n, bool):
                err(v, join_key(key, name), f"expected a number, got {describe(v)}")
            else:
                bounds[name] = n
    lo = max([bounds[k] for k in ("minimum", "exclusiveMinimum") if k in bounds], default=None)
    hi = min([bounds[k] for k in ("maximum", "exclusiveMaximum") if k in bounds], default=None)
    if (lo is not None and hi is not None and (lo > hi or lo == hi and ("exclusiveMinimum" in bounds or
                                                                       "exclusiveMaximum" in bounds))) or \
            (lo is not None and lo >= 10 ** _INT_DIGITS) or (hi is not None and hi <= -10 ** _INT_DIGITS):
        first = next(k for k in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum") if k in bounds)
        err(entries[first][0], join_key(key, first), "no number the page can be given satisfies these bounds "
                                                     f"(at most {_INT_DIGITS} digits)")
    if "pattern" in entries:
        v = sub("pattern")
        p = scalar_value(v) if isinstance(v, ScalarNode) else None
        if not isinstance(p, str):
            err(v, join_key(key, "pattern"), f"expected a regular expression, got {describe(v)}")
        else:
            try:
                re.compile(p)
            except re.error as e:
                err(v, join_key(key, "pattern"), f"not a regular expression: {e}")
            else:
                for bad, why in _REGEX_REFUSED:
                    if bad.search(p):
                        err(v, join_key(key, "pattern"), f"{quote(p)}: {why}")
                        break
    return ok


class JsonSchema(Option):
    """A JSON Schema written in YAML, checked against the subset the runtime enforces."""

    type_doc = "JSON Schema (mapping)"

    def check(self, node, ctx, key):
        if not _check_schema(node, ctx, key):
            return INVALID
        return _plain(node)


def schema_at(schema, path: str | None):
    """The sub-schema a dotted property path leads to (``None``: the schema), or None."""
    s = schema
    for part in (path.split(".") if path else []):
        if not isinstance(s, dict) or part not in (s.get("properties") or {}):
            return None
        s = s["properties"][part]
    return s


def _type_of(schema) -> set:
    if not isinstance(schema, dict):
        return set()
    t = schema.get("type")
    if t is None and "anyOf" in schema:
        return set().union(*(_type_of(o) for o in schema["anyOf"]))
    return set(t if isinstance(t, list) else [t]) if t else set()


class Output(Section):
    """Structured output: every reply (in a form app, the reply to the form) is JSON that follows
    `schema`, and the page shows it as data (cards or a table), never as markup."""

    schema = JsonSchema("The JSON Schema of a reply, written in YAML. The model can only produce "
                        "JSON that follows it (the runtime masks every other token), so the page "
                        "always gets data it can render. Supported: `type` (or a list of types), "
                        "`properties`, `required`, `additionalProperties`, `items`, `minItems`, "
                        "`maxItems`, `enum`, `const`, `anyOf`, strings' `minLength`, `maxLength` "
                        "and a simple `pattern`, numbers' and integers' `minimum`, `maximum`, "
                        "`exclusiveMinimum`, `exclusiveMaximum`, and annotations (`title`, "
                        "`description`, …). Any other keyword is an error at its line. See "
                        "[Structured output](#structured-output).")
    show = Choice("How the page shows a reply: `cards` (one card per item of `items`), `table` "
                  "(one row per item, a column per field) or `json` (the data, indented).",
                  ("cards", "table", "json"), default="cards")
    items = Str("Dotted path of the list to show, from the top of the reply (e.g. `drafts`); "
                "`null`: the reply itself (a list, or one object shown as one card or row).",
                default=None, example="drafts")
    title = Str("Field of each item shown as a card's heading; `null`: none.", default=None,
                example="title")
    body = Str("Field of each item shown as a card's text (items that are strings are their own "
               "text); `null`: every field, as label and value.", default=None, example="message")
    columns = ListOf(Str("", nonempty=True), "Table columns (fields of each item), in order; "
                     "`null`: the item schema's properties.", default=None, example=["name", "amount"])
    actions = ListOf(Choice("", ("use", "merge", "copy")), "Buttons on each card: `use` (\"Use this "
                     "one\": marks the card as the chosen one and copies its text), `merge` (picks "
                     "the card for merging) and `copy`. Follow-ups of the form (such as \"Merge the "
                     "drafts\") fill `{responses}` with the cards' texts, numbered: the cards picked "
                     "with `merge`, or every card when none is.", default=["use", "copy"],
                     example=["use", "merge"])

    def validate(self, ctx: Context) -> None:
        if self.schema is None:
            return
        key = self._key
        target = schema_at(self.schema, self.items)
        if self.items is not None:
            if target is None:
                ctx.error(self.node_of("items"), join_key(key, "items"),
                          f"{quote(self.items)} is not a property path of the schema")
                return
            if "array" not in _type_of(target):
                ctx.error(self.node_of("items"), join_key(key, "items"),
                          f"{quote(self.items)} is not a list in the schema (type {'/'.join(sorted(_type_of(target))) or 'any'})")
                return
        item = target.get("items", {}) if "array" in _type_of(target) else target
        fields = list((item.get("properties") or {}) if isinstance(item, dict) else {})
        for name in ("title", "body"):
            value = getattr(self, name)
            if value is not None and value not in fields:
                ctx.error(self.node_of(name), join_key(key, name),
                          f"{quote(value)} is not a field of the items{did_you_mean(value, fields)} "
                          f"(fields: {', '.join(fields) or 'none: the items are not objects'})")
        for i, c in enumerate(self.columns or []):
            if c is not None and c not in fields:
                ctx.error(self.node_of("columns"), join_key(join_key(key, "columns"), i),
                          f"{quote(c)} is not a field of the items{did_you_mean(c, fields)}")
