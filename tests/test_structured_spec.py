"""`apps[].output` in the spec (issue 17): the schema checked against the runtime's subset at
validate time, each problem at its key's line and column; the display mapping checked against
the schema; app.json carries it; the Python and JS keyword tables agree."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from sitegen.spec import SpecErrors, load_spec
from sitegen.spec.output import SUPPORTED_KEYWORDS
from test_spec import _pos, _write

ROOT = Path(__file__).resolve().parents[1]

BASE = """\
site:
  title: Test site
models:
  tiny:
    source: model
apps:
  - path: /card/
    title: Card
    model: tiny
    prompts:
      form:
        fields:
          - name: recipient
        template: "Three cards for {recipient}"
    output:
      schema:
        type: object
        required: [drafts]
        properties:
          drafts:
            type: array
            minItems: 3
            maxItems: 3
            items:
              type: object
              required: [message]
              properties:
                message: {type: string, maxLength: 200}
                mood: {enum: [warm, funny]}
      items: drafts
      body: message
      title: mood
"""

# (edit (old, new), where the problem is reported, key, message fragment)
CASES = [
    (("maxLength: 200", "maxLength: 200, format: email"), "format", "apps[0].output.schema.properties.drafts.items"
     ".properties.message.format", "unsupported JSON Schema keyword 'format'"),
    (("minItems: 3", "minItems: 3\n            uniqueItems: true"), "uniqueItems",
     "apps[0].output.schema.properties.drafts.uniqueItems", "unsupported JSON Schema keyword 'uniqueItems'"),
    (("maxLength: 200", "maximum: 200"), "maximum", "apps[0].output.schema.properties.drafts.items.properties"
     ".message.maximum", "keyword 'maximum' does not apply to type string (it is for number/integer)"),
    (("required: [message]", "required: [message, text]"), "text]",
     "apps[0].output.schema.properties.drafts.items.required[1]", "'text' is required but not in properties"),
    (("type: array", "type: list"), "list", "apps[0].output.schema.properties.drafts.type", "unknown type 'list'"),
    (("maxItems: 3", "maxItems: 2"), "maxItems: »2", "apps[0].output.schema.properties.drafts.maxItems",
     "maxItems (2) is below minItems (3)"),
    (("maxLength: 200", "pattern: '(?=x)'"), "'(?=x)'", "apps[0].output.schema.properties.drafts.items.properties"
     ".message.pattern", "lookaround"),
    (("mood: {enum: [warm, funny]}", "mood: {type: integer, minimum: 5, maximum: 4}"), "minimum",
     "apps[0].output.schema.properties.drafts.items.properties.mood.minimum", "no number"),
    (("items: drafts", "items: draft"), "draft\n", "apps[0].output.items", "'draft' is not a property path"),
    (("body: message", "body: mesage"), "mesage", "apps[0].output.body",
     "'mesage' is not a field of the items (did you mean 'message'?)"),
    (("      schema:\n", "      schema: [1]\n      old_schema:\n"), "[1]", "apps[0].output.schema",
     "expected a JSON Schema (a mapping), got a list"),
]


@pytest.mark.parametrize("edit, at, key, message", CASES)
def test_schema_problems_at_their_line(tmp_path, converted_model, edit, at, key, message):
    old, new = edit
    assert BASE.count(old) == 1
    text = BASE.replace(old, new)
    with pytest.raises(SpecErrors) as info:
        load_spec(_write(tmp_path, text))
    line, col = _pos(text, at)
    errors = [p for p in info.value.problems if not p.warning]
    assert any(p.key == key and message in p.message and p.line == line and p.col == col for p in errors), \
        ([str(p) for p in info.value.problems], (line, col))


def test_valid_output_loads_and_reaches_app_json(tmp_path, converted_model):
    spec = load_spec(_write(tmp_path, BASE))
    out = spec.apps[0].output
    assert out.show == "cards" and out.items == "drafts" and out.actions == ["use", "copy"]
    assert out.schema["properties"]["drafts"]["items"]["required"] == ["message"]
    from sitegen.build import build

    build(tmp_path / "app.yaml", tmp_path / "out", cache_dir=tmp_path / "cache")
    cfg = json.loads((tmp_path / "out" / "card" / "app.json").read_text())
    assert cfg["output"]["schema"] == out.schema and cfg["output"]["body"] == "message"


def test_birthday_sample_uses_output():
    spec = load_spec(ROOT / "sample_sites" / "birthday-card" / "app.yaml")
    out = spec.apps[0].output
    drafts = out.schema["properties"]["drafts"]
    assert (drafts["minItems"], drafts["maxItems"]) == (3, 3) and out.show == "cards"
    assert out.actions == ["use", "merge"] and spec.apps[0].prompts.form.responses == 1


def test_keyword_tables_agree_with_the_runtime():
    script = ('import { SUPPORTED_KEYWORDS } from "./runtime/grammar/schema.js";'
              "console.log(JSON.stringify(SUPPORTED_KEYWORDS));")
    proc = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, check=True)
    js = json.loads(proc.stdout)
    assert {k: tuple(v) for k, v in js.items()} == SUPPORTED_KEYWORDS
