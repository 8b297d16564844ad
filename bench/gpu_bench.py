"""Decode/prefill speed of the WebGPU runtime on random-weight models of real shapes.

Run on the GPU machine (see ../shared/gpu/README.md): it builds each model with
transformers there (so no weights travel), converts it with ``sitegen convert``,
runs ``node runtime/cli.mjs bench`` and prints one JSON line per model with the
fraction of the read-bandwidth roofline:

    bytes read per decoded token = weight bytes (every matrix is read once per
    token) + KV cache bytes read at the mean context length;
    roofline fraction = bytes per token * decode tokens/s / ROOFLINE.

Usage: python bench/gpu_bench.py OUTDIR [--shapes smollm2-135m,llama-3.2-1b]
       [--quant q4] [--prompt-tokens 512] [--decode-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# bytes/s: a WGSL streaming read on the H200 under Dawn (shared/gpu/README.md); measure it again in
# the same run with ../shared/gpu/probe.mjs and pass --roofline.
ROOFLINE = 4.31e12

# The real models' shapes (their config.json), random weights.
SHAPES = {
    "smollm2-135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True,
                         max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5),
    "llama-3.2-1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True,
                         max_position_embeddings=4096, rope_theta=500000.0, rms_norm_eps=1e-5,
                         rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
}


def make_model(shape: str, out: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import make_tokenizer  # a small byte-level BPE: the bench feeds token ids directly

    if (out / "config.json").exists():
        return out
    torch.manual_seed(0)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(dev):
        model = LlamaForCausalLM(LlamaConfig(**SHAPES[shape])).to(torch.float16)
    model.save_pretrained(out, safe_serialization=True)
    make_tokenizer(out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--shapes", default="smollm2-135m,llama-3.2-1b")
    ap.add_argument("--quant", default="q4")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--roofline", type=float, default=ROOFLINE, help="bytes/s of a streaming read, measured")
    ap.add_argument("--no-groups", action="store_true",
                    help="convert without tensor groups (q/k/v, gate/up apart): the runtime's op-by-op path")
    args = ap.parse_args()
    args.outdir.mkdir(parents=True, exist_ok=True)
    for shape in args.shapes.split(","):
        hf = make_model(shape, args.outdir / f"{shape}-hf")
        conv = args.outdir / f"{shape}-{args.quant}{'-nogroups' if args.no_groups else ''}"
        if not (conv / "manifest.json").exists():
            t0 = time.time()
            # In-process: the GPU machine's Python has no livereload, which the CLI's serve verb needs.
            sys.path.insert(0, str(ROOT))
            from sitegen.convert import convert
            convert(hf, conv, quant=args.quant, group_tensors=not args.no_groups)
            print(f"# converted {shape} in {time.time() - t0:.1f}s", file=sys.stderr)
        man = json.loads((conv / "manifest.json").read_text())
        cfg = man["config"]
        weight_bytes = man["requirements"]["weights_bytes"]  # physical tensors: a group's members share its bytes
        if cfg.get("tie_word_embeddings"):
            pass  # the tied table is read once per token by the head and one row by the lookup: count it once
        kv_per_token = 2 * cfg["num_layers"] * cfg["num_kv_heads"] * cfg["head_dim"] * 4
        mean_ctx = args.prompt_tokens + args.decode_tokens / 2
        bytes_per_token = weight_bytes + kv_per_token * mean_ctx
        res = subprocess.run(["node", str(ROOT / "runtime/cli.mjs"), "bench", "--model", str(conv),
                              "--prompt-tokens", str(args.prompt_tokens),
                              "--decode-tokens", str(args.decode_tokens), "--json"],
                             check=True, capture_output=True, text=True)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        r.update(shape=shape, quant=args.quant, groups=not args.no_groups, weight_bytes=weight_bytes,
                 bytes_per_token=int(bytes_per_token),
                 decode_bandwidth_GBs=round(bytes_per_token * r["decode_tokens_per_s"] / 1e9, 1),
                 roofline_fraction=round(bytes_per_token * r["decode_tokens_per_s"] / args.roofline, 4))
        print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
