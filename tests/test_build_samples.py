"""The sample sites double as integration fixtures: each builds, and builds byte-identically.

Converting the samples' models (SmolLM2-135M, and Gemma 3 270M for ``gemma3-story``, each installed
as a Python package) takes ~20 s each the first time; the cache under tests/artifacts/ makes later
runs fast.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from sitegen.build import build

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted(p.parent.name for p in (ROOT / "sample_sites").glob("*/app.yaml"))
# One cache per pytest-xdist worker: two workers must not convert into one entry at once.
CACHE = Path(os.environ.get("SITEGEN_TEST_CACHE", ROOT / "tests" / "artifacts" /
                            ("sitegen-cache" + (f"-{os.environ['PYTEST_XDIST_WORKER']}" if "PYTEST_XDIST_WORKER" in os.environ else ""))))


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_there_are_the_samples():
    assert {"birthday-card", "chat", "zh-hant-writer", "gemma3-story"} <= set(SAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize("sample", SAMPLES)
def test_sample_builds_byte_identically(sample, tmp_path):
    spec = ROOT / "sample_sites" / sample / "app.yaml"
    a = build(spec, tmp_path / "a", cache_dir=CACHE)
    build(spec, tmp_path / "b", cache_dir=CACHE)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    assert a.pages == ["/"]
    cfg = json.loads((tmp_path / "a" / "app.json").read_text())
    manifest = json.loads((tmp_path / "a" / cfg["model"]["manifest"]).read_text())
    assert manifest["format"] == "sitegen-weights"
    for shard in manifest["shards"]:
        data = (tmp_path / "a" / cfg["model"]["base_url"] / shard["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
    page = (tmp_path / "a" / "index.html").read_text()
    assert cfg["app"]["title"] in page
    if sample == "zh-hant-writer":
        assert cfg["ui"]["language"] == "zh-Hant" and 'lang="zh-Hant"' in page
        assert "送出" in page  # the zh-Hant "send" string
    if sample == "birthday-card":
        form = cfg["prompts"]["form"]
        assert [f["name"] for f in form["fields"]] == ["recipient", "relation", "tone", "details"]
        assert form["responses"] == 1 and form["followups"][0]["label"] == "Merge the drafts"
        # the three drafts come back as one reply's data (issue 17)
        assert cfg["output"]["schema"]["properties"]["drafts"]["maxItems"] == 3 and cfg["output"]["show"] == "cards"
    if sample == "gemma3-story":
        # The GGUF has no chat template: the spec's hand-written one, completion-style (the turns run
        # together with nothing around them), is what the manifest carries.
        assert manifest["config"]["architecture"] == "gemma3", manifest["config"]
        template = manifest["chat_template"]
        assert template["start"] == template["bos"] == "<bos>" and template["add_bos"] is True
        assert template["generation_prompt"] == "" and template["roles"]["system"] is None
        for role in ("user", "assistant"):
            assert template["roles"][role]["prefix"] == template["roles"][role]["suffix"] == ""
        assert cfg["app"]["layout"] == "form" and cfg["prompts"]["form"]["followups"][0]["label"] == "Add a twist"
