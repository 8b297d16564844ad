"""The settings panel's bounds (issue 11) live in one place, sitegen/spec/schema.py
SETTINGS_BOUNDS: the build writes them into app.json and the toolbar; the page script reads
app.json. No other file may spell them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import make_converted_folder
from sitegen.build import build_site
from sitegen.spec import load_spec
from sitegen.spec.schema import SETTINGS_BOUNDS
from test_serve import SPEC

ROOT = Path(__file__).parent.parent


def _built(tmp_path, spec_text):
    make_converted_folder(tmp_path / "model")
    (tmp_path / "app.yaml").write_text(spec_text)
    build_site(load_spec(tmp_path / "app.yaml"), tmp_path / "out", cache_dir=tmp_path / "cache")
    cfg = json.loads((tmp_path / "out" / "app.json").read_text())
    page = (tmp_path / "out" / "index.html").read_text()
    return cfg["ui"]["settings_bounds"], page


def _slider(page, name):
    tag = re.search(rf'<input type="range" id="set-{name}"[^>]*>', page).group(0)
    return [float(re.search(rf'{a}="([^"]*)"', tag).group(1)) for a in ("min", "max")]


def test_bounds_come_from_the_schema(tmp_path):
    bounds, page = _built(tmp_path, SPEC)
    assert bounds == {k: list(v) for k, v in SETTINGS_BOUNDS.items()}
    assert bounds == {"temperature": [0, 2], "top_p": [0.05, 1]}
    for name, (lo, hi) in SETTINGS_BOUNDS.items():
        assert _slider(page, name) == [lo, hi], name


def test_an_authors_value_outside_widens_the_slider(tmp_path):
    spec = SPEC.replace("    title: First title\n", "    title: First title\n"
                        "    generation: {temperature: 3, top_p: 0.01}\n")
    bounds, page = _built(tmp_path, spec)
    assert bounds == {"temperature": [0, 3], "top_p": [0.01, 1]}
    assert _slider(page, "temperature") == [0, 3] and _slider(page, "top_p") == [0.01, 1]


def test_no_other_file_spells_the_bounds():
    toolbar = (ROOT / "app_templates" / "partials" / "toolbar.html").read_text()
    for name in SETTINGS_BOUNDS:
        tag = re.search(rf'<input type="range" id="set-{name}"[^>]*>', toolbar).group(0)
        assert "settings_bounds" in tag and not re.search(r'(min|max)="\d', tag), tag
    app = (ROOT / "runtime" / "ui" / "app.js").read_text()
    assert "settings_bounds" in app
    assert not re.search(r"clamp\(saved\.(temperature|top_p), \d", app)
