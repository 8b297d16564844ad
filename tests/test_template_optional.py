"""Optional parts of form prompt templates (issue 11): ``[[ ... ]]`` is dropped by the page
when a field it uses is empty (tests/js/template.test.mjs fills them); the build checks them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sitegen.spec import SpecErrors, load_spec
from sitegen.spec.template import TemplateSyntaxError, parse_template, placeholders

SAMPLE = Path(__file__).parent.parent / "sample_sites" / "birthday-card"


def test_optional_parts_parse():
    parts = parse_template("Card for {name}.[[ Mention: {notes}]] Bye")
    # The shape tests/js/template.test.mjs fills.
    assert parts == [{"text": "Card for "}, {"field": "name"}, {"text": "."},
                     {"optional": [{"text": " Mention: "}, {"field": "notes"}]},
                     {"text": " Bye"}]
    assert placeholders(parts) == ["name", "notes"]
    assert parse_template("a [b] c [x]") == [{"text": "a [b] c [x]"}]  # single brackets are text


@pytest.mark.parametrize("text, message", [
    ("x [[ {a}", "'[[' at line 1, column 3 of the template is never closed with ']]'"),
    ("x\n {a} ]]", "']]' at line 2, column 6 of the template closes no optional part"),
    ("[[ {a} [[ {b} ]] ]]", "'[[' at line 1, column 8 of the template opens an optional part "
                            "inside the one opened at line 1, column 1"),
    ("[[ no field ]]", "the optional part at line 1, column 1 of the template uses no field"),
])
def test_unbalanced_or_empty_optional_parts_are_errors(text, message):
    with pytest.raises(TemplateSyntaxError) as e:
        parse_template(text)
    assert str(e.value).startswith(message)


def test_sample_uses_an_optional_part_and_a_bad_one_fails_with_its_line(tmp_path):
    spec = load_spec(SAMPLE / "app.yaml")
    parts = parse_template(spec.apps[0].prompts.form.template)
    assert {"optional": [{"text": " Things worth mentioning: "}, {"field": "details"}]} in parts

    site = tmp_path / "site"
    shutil.copytree(SAMPLE, site)
    text = (site / "app.yaml").read_text()
    bad = text.replace("{details}]]", "{details}")
    assert bad != text
    (site / "app.yaml").write_text(bad)
    line = next(i for i, l in enumerate(bad.splitlines(), 1) if "template: >-" in l)
    with pytest.raises(SpecErrors) as e:
        load_spec(site / "app.yaml")
    msgs = [str(p) for p in e.value.problems]
    assert any(f"app.yaml:{line}:" in m and "prompts.form.template" in m and
               "is never closed with ']]'" in m for m in msgs), msgs
