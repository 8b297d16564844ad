"""``sitegen build``: layout, relative URLs, byte-identical rebuilds, atomic replacement of OUT."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

import sitegen.build as build_mod
from conftest import make_converted_folder
from sitegen.build import MARKER, build
from sitegen.errors import BuildError
from sitegen.resources import APP_TEMPLATES, ui_strings
from sitegen.spec.template import parse_template

ROOT = Path(__file__).resolve().parent.parent

SPEC = """\
site:
  title: Cards <&> co
  description: Helpers.
models:
  tiny:
    source: model
apps:
  - path: /card/
    title: Card <script>alert(1)</script>
    prompts:
      system: Be kind.
      form:
        fields:
          - {name: recipient, label: "Who?", placeholder: e.g. Rose}
          - {name: tone, type: choice, choices: [warm, funny], default: funny}
          - {name: age, type: number, min: 1, max: 120, required: false}
        template: "Card for {recipient} ({age}), {tone} {{x}}"
        responses: 3
        followups:
          - {label: Merge, template: "Merge for {recipient}:\\n{responses}"}
  - path: /tools/chat/
    title: Chat
    prompts:
      starters: [Hi there]
    ui: {language: zh-Hant, theme: dark, accent: "#ABC"}
"""


@pytest.fixture
def site(tmp_path):
    make_converted_folder(tmp_path / "model", shard_bytes=3000, n_shards=2)
    spec = tmp_path / "app.yaml"
    spec.write_text(SPEC)
    return spec


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src") and value is not None:
                self.urls.append(value)


def test_layout_and_relative_urls(site, tmp_path):
    out = tmp_path / "out"
    result = build(site, out)
    assert result.pages == ["/", "/card/", "/tools/chat/"]
    for page in ["index.html", "card/index.html", "card/app.json", "tools/chat/index.html",
                 "tools/chat/app.json", "models/tiny/manifest.json",
                 "models/tiny/shard-00000.bin", "models/tiny/shard-00001.bin", MARKER]:
        assert (out / page).is_file(), page
    assert (out / "models/tiny/shard-00001.bin").read_bytes() == \
        (tmp_path / "model/shard-00001.bin").read_bytes()
    # Every link of every page is relative and lands on a file of the site (ignoring the
    # page script, which another part of sitegen provides).
    for html in out.rglob("*.html"):
        if html.relative_to(out).as_posix() == "404.html":
            continue  # served at any missing path: absolute URLs by design (tests/test_deploy.py)
        parser = _Links()
        parser.feed(html.read_text())
        page_url = "http://site.test/base/" + html.relative_to(out).as_posix()
        for url in parser.urls:
            if url.startswith("data:"):
                continue
            assert not urlsplit(url).scheme and not url.startswith("/"), (html, url)
            target = urljoin(page_url, url)
            assert target.startswith("http://site.test/base/"), (html, url)
            rel = target[len("http://site.test/base/"):].split("#")[0]
            path = out / rel
            if path.is_dir() or rel == "":
                path = path / "index.html"
            if rel.endswith("runtime/ui/app.js") and not (ROOT / "runtime/ui/app.js").exists():
                continue
            assert path.is_file(), (html, url)


def test_app_json_contract(site, tmp_path):
    out = tmp_path / "out"
    build(site, out)
    cfg = json.loads((out / "tools/chat/app.json").read_text())
    assert cfg["format"] == "sitegen-app" and cfg["version"] == 1
    assert cfg["app"] == {"id": "tools-chat", "path": "/tools/chat/", "title": "Chat",
                          "description": "", "layout": "chat"}
    assert cfg["ui"]["language"] == "zh-Hant" and cfg["ui"]["accent"] == "#abc"
    assert cfg["ui"]["strings"] == ui_strings("zh-Hant")
    assert cfg["ui"]["welcome"] == json.loads(
        (APP_TEMPLATES / "i18n" / "zh-Hant.json").read_text())["welcome"]
    assert cfg["prompts"] == {"system": "", "system_editable": False, "starters": ["Hi there"], "form": None}
    base = "http://x/tools/chat/"
    assert urljoin(base, cfg["model"]["manifest"]) == "http://x/models/tiny/manifest.json"
    assert urljoin(base, cfg["model"]["base_url"]) == "http://x/models/tiny/"
    runtime = urljoin(base, cfg["runtime"]["base"])
    assert re.fullmatch(r"http://x/assets/runtime-[0-9a-f]{12}/runtime/", runtime)
    assert urljoin(base, cfg["runtime"]["shaders"]) == runtime[:-len("runtime/")] + "shaders/"
    assert cfg["generation"] == {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.0,
                                 "repetition_penalty": 1.1, "max_new_tokens": 512, "stop": [],
                                 "seed": None}

    card = json.loads((out / "card/app.json").read_text())
    form = card["prompts"]["form"]
    assert [f["name"] for f in form["fields"]] == ["recipient", "tone", "age"]
    assert form["fields"][0]["label"] == "Who?" and form["fields"][1]["label"] == "tone"
    assert form["template"] == "Card for {recipient} ({age}), {tone} {{x}}"
    assert form["parts"] == parse_template(form["template"])
    assert "".join(p.get("text", "<>") for p in form["parts"]) == "Card for <> (<>), <> {x}"
    assert form["responses"] == 3 and form["submit"] == ui_strings("en")["submit"]
    assert form["followups"][0]["parts"][-1] == {"field": "responses"}


def test_pages_render_the_shell_escaped(site, tmp_path):
    out = tmp_path / "out"
    build(site, out)
    card = (out / "card/index.html").read_text()
    assert "<script>alert(1)</script>" not in card
    assert "Card &lt;script&gt;alert(1)&lt;/script&gt;" in card
    assert 'data-config="app.json"' in card
    assert re.search(r'<script type="module" src="\.\./assets/runtime-[0-9a-f]{12}/runtime/ui/app\.js">',
                     card)
    assert '<label for="field-recipient">Who?' in card
    assert '<select id="field-tone" name="tone" required>' in card
    assert '<option value="funny" selected>funny</option>' in card
    assert '<input type="number" id="field-age" name="age" min="1" max="120">' in card
    assert "<noscript>" in card and ui_strings("en")["needs_js"] in card
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', card).group(1)
    csp = csp.replace("&#39;", "'")
    assert "script-src 'self' 'wasm-unsafe-eval'" in csp and "connect-src 'self';" in csp
    assert "default-src 'none'" in csp
    chat = (out / "tools/chat/index.html").read_text()
    assert 'lang="en" data-theme="dark"' in chat
    assert ui_strings("zh-Hant")["send"] in chat
    assert 'data-prompt="Hi there"' in chat
    index = (out / "index.html").read_text()
    assert 'href="card/"' in index and 'href="tools/chat/"' in index
    assert "Cards &lt;&amp;&gt; co" in index


def test_two_builds_are_byte_identical(site, tmp_path):
    build(site, tmp_path / "a")
    build(site, tmp_path / "b")
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    build(site, tmp_path / "a")  # a rebuild in place gives the same bytes again
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".out."))


def test_failing_template_leaves_previous_out(site, tmp_path):
    out = tmp_path / "out"
    build(site, out)
    before = _tree(out)
    theme = tmp_path / "theme"
    theme.mkdir()
    (theme / "chat.html").write_text("{% extends 'app.html' %}{% block app %}{{ nope.x }}"
                                     "{% endblock %}")
    site.write_text(SPEC.replace("  description: Helpers.", "  description: Changed.\n"
                                                            "  theme_dir: theme"))
    with pytest.raises(BuildError) as e:
        build(site, out)
    assert str(e.value) == "while rendering template 'chat.html': 'nope' is undefined"
    assert _tree(out) == before
    assert _leftovers(tmp_path) == []
    (theme / "chat.html").write_text("{% extends 'app.html' %}{% block app %}{% if %}"
                                     "{% endblock %}")
    with pytest.raises(BuildError) as e:
        build(site, out)
    assert str(e.value) == (f"{theme / 'chat.html'}:1: while rendering template 'chat.html': "
                            "Expected an expression, got 'end of statement block'")
    assert _tree(out) == before


def test_missing_template(site, tmp_path):
    theme = tmp_path / "theme"
    theme.mkdir()
    (theme / "chat.html").write_text("{% include 'partials/nope.html' %}")
    site.write_text(SPEC.replace("  description: Helpers.", "  theme_dir: theme"))
    with pytest.raises(BuildError) as e:
        build(site, tmp_path / "out")
    assert str(e.value) == ("while rendering template 'chat.html': template 'partials/nope.html' "
                            "not found in the theme folder or app_templates/")


def test_theme_overrides_templates_by_name(site, tmp_path):
    theme = tmp_path / "theme"
    (theme / "partials").mkdir(parents=True)
    (theme / "partials" / "starters.html").write_text("<p class=mine>{{ config.prompts.starters"
                                                      " | length }} starters</p>\n")
    site.write_text(SPEC.replace("  description: Helpers.", "  theme_dir: theme"))
    build(site, tmp_path / "out")
    assert "<p class=mine>1 starters</p>" in (tmp_path / "out/tools/chat/index.html").read_text()


def test_interrupted_build_leaves_previous_out(site, tmp_path, monkeypatch):
    out = tmp_path / "out"
    build(site, out)
    before = _tree(out)
    real = build_mod._render
    calls = []

    def render(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)
    monkeypatch.setattr(build_mod, "_render", render)
    site.write_text(SPEC.replace("Helpers.", "Changed."))
    with pytest.raises(KeyboardInterrupt):
        build(site, out)
    assert _tree(out) == before
    assert _leftovers(tmp_path) == []


def test_out_guards(site, tmp_path):
    other = tmp_path / "precious"
    other.mkdir()
    (other / "thesis.txt").write_text("years of work")
    with pytest.raises(BuildError) as e:
        build(site, other)
    assert str(e.value) == (f"output {str(other)!r} is not empty and was not written by sitegen "
                            f"build (no .sitegen-build file); a build replaces OUT whole, so "
                            f"empty or remove it, or choose another -o")
    assert (other / "thesis.txt").read_text() == "years of work"
    with pytest.raises(BuildError) as e:
        build(site, tmp_path)
    assert str(e.value) == (f"output {str(tmp_path)!r} contains the spec; choose a folder of its "
                            f"own for -o (e.g. {str(tmp_path / 'site')!r})")
    with pytest.raises(BuildError) as e:
        build(site, tmp_path / "app.yaml")
    assert str(e.value) == (f"output {str(tmp_path / 'app.yaml')!r} exists and is not a folder; "
                            f"choose another -o")


def test_remote_hosting(site, tmp_path):
    site.write_text(SPEC.replace("    source: model", "    source: model\n"
                                 "    host: {base_url: 'https://cdn.example.org/w'}"))
    result = build(site, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out/models/tiny").iterdir()) == ["manifest.json"]
    # The shards go to a folder of their own, beside OUT, ready to upload (issue 15).
    assert result.uploads == [("tiny", (tmp_path / "out-weights/tiny").resolve(),
                               "https://cdn.example.org/w/")]
    for f in (tmp_path / "model").iterdir():
        assert (tmp_path / "out-weights/tiny" / f.name).read_bytes() == f.read_bytes()
    cfg = json.loads((tmp_path / "out/card/app.json").read_text())
    assert cfg["model"]["base_url"] == "https://cdn.example.org/w/"
    assert urljoin("http://x/card/", cfg["model"]["manifest"]) == "http://x/models/tiny/manifest.json"
    page = (tmp_path / "out/card/index.html").read_text().replace("&#39;", "'")
    assert "connect-src 'self' https://cdn.example.org;" in page


def test_url_source(site, tmp_path):
    site.write_text(SPEC.replace("source: model", "source: https://w.example.org/tiny"))
    build(site, tmp_path / "out")
    assert not (tmp_path / "out/models").exists()
    cfg = json.loads((tmp_path / "out/card/app.json").read_text())
    assert cfg["model"]["manifest"] == "https://w.example.org/tiny/manifest.json"
    assert cfg["model"]["base_url"] == "https://w.example.org/tiny/"


@pytest.mark.parametrize("edit, message", [
    (lambda m: (m / "shard-00001.bin").unlink(),
     "{m}/manifest.json lists shard-00001.bin, which is missing from {m}"),
    (lambda m: (m / "manifest.json").write_text("{"),
     "cannot read {m}/manifest.json: Expecting property name enclosed in double quotes: "
     "line 1 column 2 (char 1)"),
    (lambda m: (m / "manifest.json").write_text('{"format": "other"}'),
     "{m}/manifest.json is not a sitegen weights manifest (its 'format' is not 'sitegen-weights')"),
    (lambda m: (m / "manifest.json").write_text('{"format": "sitegen-weights", "version": 3}'),
     "{m}/manifest.json has version 3; this sitegen reads versions 1, 2 (convert the model again)"),
    (lambda m: (m / "manifest.json").write_text('{"format": "sitegen-weights", "version": 1, '
                                                '"shards": []}'),
     "{m}/manifest.json lists no shards"),
    (lambda m: (m / "manifest.json").write_text('{"format": "sitegen-weights", "version": 1, '
                                                '"shards": [{"file": "../x"}]}'),
     "{m}/manifest.json: shard file name '../x' is not a plain file name"),
])
def test_bad_converted_folder(site, tmp_path, edit, message):
    m = (tmp_path / "model").resolve()
    edit(m)
    with pytest.raises(BuildError) as e:
        build(site, tmp_path / "out")
    assert str(e.value) == f"{site}: models.tiny.source: " + message.format(m=m)
    assert not (tmp_path / "out").exists()


def test_converter_missing(site, tmp_path, monkeypatch):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    site.write_text(SPEC.replace("source: model", "source: m.gguf"))
    monkeypatch.setitem(sys.modules, "sitegen.convert", None)  # import fails
    with pytest.raises(BuildError) as e:
        build(site, tmp_path / "out")
    assert str(e.value).startswith(
        f"{site}: models.tiny.source: converting a gguf source needs the converter "
        "(sitegen.convert), which failed to import: ")
    assert str(e.value).endswith("; give an already-converted folder instead")


def test_converter_errors_get_the_spec_position(site, tmp_path, monkeypatch):
    import sitegen.convert
    from sitegen.errors import ConvertError

    def fail(*args, **kw):
        raise ConvertError("unsupported architecture 'Foo'")
    monkeypatch.setattr(sitegen.convert, "convert_cached", fail)
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    text = SPEC.replace("source: model", "source: m.gguf")
    site.write_text(text)
    with pytest.raises(ConvertError) as e:
        build(site, tmp_path / "out")
    line = text[:text.index("m.gguf")].count("\n") + 1
    col = text.splitlines()[line - 1].index("m.gguf") + 1
    assert str(e.value) == f"{site}:{line}:{col}: models.tiny.source: unsupported architecture 'Foo'"


def test_i18n_files_have_the_same_keys():
    en = json.loads((APP_TEMPLATES / "i18n" / "en.json").read_text())
    for path in (APP_TEMPLATES / "i18n").glob("*.json"):
        strings = json.loads(path.read_text())
        assert set(strings) == set(en), path.name
        for key, text in strings.items():
            # Placeholders such as {n} must survive translation.
            assert re.findall(r"\{\w+\}", text) == re.findall(r"\{\w+\}", en[key]), (path, key)
