"""Random-weight models in the sitegen-weights layout, for loader tests and benchmarks.

The loader needs only the layout (docs/weights-format.md): tensors end to end,
256-aligned, cut into ``shard_size`` shards, each shard's sha256 in the
manifest. Codes are random bytes; q4/q8 scales are valid small f16 values.
Shards are written as the stream is produced, so a multi-GiB model never
sits in memory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

__all__ = ["write_model", "gemma7b_q4_tensors", "gemma7b_config", "grid_tensors"]

# google/gemma-7b's config.json (the fields the converter reads), so the big benchmark model also runs.
GEMMA_7B_HF_CONFIG = {
    "architectures": ["GemmaForCausalLM"], "model_type": "gemma", "attention_bias": False, "bos_token_id": 2,
    "eos_token_id": 1, "pad_token_id": 0, "head_dim": 256, "hidden_act": "gelu",
    "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 3072, "intermediate_size": 24576,
    "max_position_embeddings": 8192, "num_attention_heads": 16, "num_hidden_layers": 28,
    "num_key_value_heads": 16, "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "vocab_size": 256000,
}


def _align(n: int, a: int = 256) -> int:
    return -(-n // a) * a


class _ShardWriter:
    def __init__(self, out: Path, shard_size: int):
        self.out, self.shard_size = out, shard_size
        self.shards: list[dict] = []
        self.pos = 0
        self._file = None
        self._hash = None
        self._fill = 0

    def _open(self) -> None:
        name = f"shard-{len(self.shards):05d}.bin"
        self._file = open(self.out / name, "wb")
        self._hash = hashlib.sha256()
        self._fill = 0
        self.shards.append({"file": name, "bytes": 0, "sha256": ""})

    def _close(self) -> None:
        if self._file:
            self._file.close()
            self.shards[-1].update(bytes=self._fill, sha256=self._hash.hexdigest())
            self._file = None

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while len(view):
            if self._file is None or self._fill == self.shard_size:
                self._close()
                self._open()
            n = min(len(view), self.shard_size - self._fill)
            self._file.write(view[:n])
            self._hash.update(view[:n])
            self._fill += n
            self.pos += n
            view = view[n:]

    def pad_to(self, pos: int) -> None:
        if pos > self.pos:
            self.write(bytes(pos - self.pos))

    def finish(self) -> list[dict]:
        self._close()
        return self.shards


def _tensor_bytes(rng: np.random.Generator, dtype: str, shape: list[int], chunk_rows: int = 4096):
    """Yield (plane_name, bytes) chunks of a random tensor, rows at a time."""
    rows = shape[0] if len(shape) > 1 else 1
    cols = shape[-1] if len(shape) > 1 else shape[0]
    if dtype in ("q4", "q8"):
        row_bytes = cols // 2 if dtype == "q4" else cols
        for r0 in range(0, rows, chunk_rows):
            n = min(chunk_rows, rows - r0)
            yield "q", rng.integers(0, 256, n * row_bytes, dtype=np.uint8).tobytes()
        for r0 in range(0, rows, chunk_rows):
            n = min(chunk_rows, rows - r0)
            yield "scales", rng.uniform(0.001, 0.02, n * (cols // 32)).astype(np.float16).tobytes()
    else:
        np_dtype = np.float32 if dtype == "f32" else np.float16
        for r0 in range(0, rows, chunk_rows):
            n = min(chunk_rows, rows - r0)
            yield "data", rng.normal(0, 0.02, n * cols).astype(np_dtype).tobytes()


def write_model(out: Path, tensors: list[tuple[str, str, list[int]]], *, name: str = "test-model",
                shard_size: int = 1 << 20, seed: int = 0, config: dict | None = None,
                requirements: dict | None = None) -> dict:
    """Write ``out/manifest.json`` and shards for ``tensors`` = [(name, dtype, shape)]; return the manifest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w = _ShardWriter(out, shard_size)
    table = []
    for tname, dtype, shape in tensors:
        w.pad_to(_align(w.pos))
        start = w.pos
        entry = {"name": tname, "shape": shape, "dtype": dtype, "shard": start // shard_size,
                 "offset": start % shard_size}
        planes: dict[str, list[int]] = {}
        for plane, data in _tensor_bytes(rng, dtype, shape):
            if plane not in planes:
                if plane == "scales":
                    w.pad_to(_align(w.pos))
                planes[plane] = [w.pos - start, 0]
            w.write(data)
            planes[plane][1] += len(data)
        entry["nbytes"] = w.pos - start
        if dtype in ("q4", "q8"):
            entry["group_size"] = 32
            entry["planes"] = [{"name": k, "offset": v[0], "nbytes": v[1]} for k, v in planes.items()]
        table.append(entry)
    shards = w.finish()
    manifest = {"format": "sitegen-weights", "version": 1, "name": name,
                "source": {"kind": "random", "ref": f"seed {seed}"}, "generator": "tests/weights_fixture.py",
                "quantization": {"weights": "q4", "embeddings": "q4", "lm_head": "q4", "group_size": 32},
                "config": config or {}, "shard_size": shard_size, "shards": shards, "tensors": table,
                "requirements": requirements or {"features": []}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def grid_tensors(n: int, rows: int = 512, cols: int = 2048, dtype: str = "q4") -> list[tuple[str, str, list[int]]]:
    """``n`` matrices plus a norm vector each: a small stand-in for a model's tensor table."""
    out: list[tuple[str, str, list[int]]] = []
    for i in range(n):
        out.append((f"layers.{i}.mlp.up.weight", dtype, [rows, cols]))
        out.append((f"layers.{i}.mlp_norm.weight", "f32", [cols]))
    return out


def gemma7b_config() -> dict:
    """The normalised config (docs/internals.md) of Gemma 7B, as the converter would write it."""
    from sitegen.convert.architectures import normalize_config

    return normalize_config(GEMMA_7B_HF_CONFIG, file="google/gemma-7b config.json")


def gemma7b_q4_tensors() -> list[tuple[str, str, list[int]]]:
    """The canonical tensor table of Gemma 7B (google/gemma-7b config) at q4, norms in f32."""
    vocab, hidden, inter, layers, heads, kv_heads, head_dim = 256000, 3072, 24576, 28, 16, 16, 256
    out: list[tuple[str, str, list[int]]] = [("embed.weight", "q4", [vocab, hidden])]
    for i in range(layers):
        p = f"layers.{i}."
        out += [(p + "attn_norm.weight", "f32", [hidden]),
                (p + "attn.q.weight", "q4", [heads * head_dim, hidden]),
                (p + "attn.k.weight", "q4", [kv_heads * head_dim, hidden]),
                (p + "attn.v.weight", "q4", [kv_heads * head_dim, hidden]),
                (p + "attn.o.weight", "q4", [hidden, heads * head_dim]),
                (p + "mlp_norm.weight", "f32", [hidden]),
                (p + "mlp.gate.weight", "q4", [inter, hidden]),
                (p + "mlp.up.weight", "q4", [inter, hidden]),
                (p + "mlp.down.weight", "q4", [hidden, inter])]
    out.append(("final_norm.weight", "f32", [hidden]))
    return out
