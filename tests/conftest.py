"""Shared fixtures (kept small: helpers living in tests/*.py modules are preferred)."""

from __future__ import annotations

import hashlib
import json
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
