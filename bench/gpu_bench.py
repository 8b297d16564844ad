"""Decode/prefill speed of the WebGPU runtime on random-weight models of real shapes.

Run on the GPU machine (see ../shared/gpu/README.md): it builds each model with
transformers there (so no weights travel), converts it with ``sitegen convert``,
runs ``node runtime/cli.mjs bench`` and prints one JSON line per model with the
fraction of the read-bandwidth roofline:

    bytes read per decoded token = weight bytes (every matrix is read once per
    token; of a mixture-of-experts model only the chosen experts: the manifest's
    requirements.weights_bytes_per_token) + KV cache bytes read at the mean context length;
    roofline fraction = bytes per token * decode tokens/s / ROOFLINE.

Usage: python bench/gpu_bench.py OUTDIR [--shapes smollm2-135m,llama-3.2-1b,qwen3-30b-a3b-4l,mixtral-8x7b-2l]
       [--quant q4] [--prompt-tokens 512] [--decode-tokens 128] [--random] [--profile] [--runtime DIR]

--random builds the converted model from the config alone (bench/random_model.py: the converter's
pipeline and layout with random codes; seconds instead of minutes, the only way to reach Gemma-7B's
shape in a GPU session); without it the model is built with transformers and converted with
`sitegen convert`. --runtime runs another checkout's runtime/cli.mjs on the same model (a
before/after in one run). --profile adds the per-kernel GPU times (stderr).
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
    # Mixture-of-experts (issue 12): real layer shapes, fewer layers so that a random model fits.
    # Qwen3-30B-A3B: 128 experts of 768, top-8, 48 layers (here 4); Mixtral-8x7B: 8 of 14336, top-2, 32 (here 2).
    "qwen3-30b-a3b-4l": dict(cls="Qwen3MoeConfig", vocab_size=151936, hidden_size=2048, intermediate_size=6144,
                             moe_intermediate_size=768, num_experts=128, num_experts_per_tok=8, norm_topk_prob=True,
                             num_hidden_layers=4, num_attention_heads=32, num_key_value_heads=4, head_dim=128,
                             tie_word_embeddings=False, max_position_embeddings=4096, rope_theta=1000000.0,
                             rms_norm_eps=1e-6),
    "mixtral-8x7b-2l": dict(cls="MixtralConfig", vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                            num_local_experts=8, num_experts_per_tok=2, num_hidden_layers=2, num_attention_heads=32,
                            num_key_value_heads=8, tie_word_embeddings=False, max_position_embeddings=4096,
                            rope_theta=1000000.0, rms_norm_eps=1e-5),
    "qwen2.5-1.5b": dict(cls="Qwen2Config", vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                         num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True,
                         max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6),
    # One real shape per family that the ones above leave out (issue 12's models table).
    "qwen3-0.6b": dict(cls="Qwen3Config", vocab_size=151936, hidden_size=1024, intermediate_size=3072,
                       num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                       tie_word_embeddings=True, max_position_embeddings=40960, rope_theta=1000000.0, rms_norm_eps=1e-6),
    "gemma-2-2b": dict(cls="Gemma2Config", vocab_size=256000, hidden_size=2304, intermediate_size=9216,
                       num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4, head_dim=256,
                       sliding_window=4096, query_pre_attn_scalar=256, final_logit_softcapping=30.0,
                       attn_logit_softcapping=50.0, max_position_embeddings=8192, tie_word_embeddings=True),
    "gemma-3-1b": dict(cls="Gemma3TextConfig", arch="Gemma3ForCausalLM", vocab_size=262144, hidden_size=1152, intermediate_size=6912,
                       num_hidden_layers=26, num_attention_heads=4, num_key_value_heads=1, head_dim=256,
                       sliding_window=512, query_pre_attn_scalar=256, rope_theta=1000000.0,
                       rope_local_base_freq=10000.0, max_position_embeddings=32768, tie_word_embeddings=True),
    "phi-2": dict(cls="PhiConfig", vocab_size=51200, hidden_size=2560, intermediate_size=10240, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32, partial_rotary_factor=0.4,
                  max_position_embeddings=2048, tie_word_embeddings=False),
    "phi-3-mini": dict(cls="Phi3Config", vocab_size=32064, hidden_size=3072, intermediate_size=8192,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                       max_position_embeddings=4096, tie_word_embeddings=False),
    "stablelm-2-1.6b": dict(cls="StableLmConfig", vocab_size=100352, hidden_size=2048, intermediate_size=5632,
                            num_hidden_layers=24, num_attention_heads=32, num_key_value_heads=32,
                            partial_rotary_factor=0.25, use_qkv_bias=True, max_position_embeddings=4096,
                            tie_word_embeddings=False),
    "falcon-7b": dict(cls="FalconConfig", vocab_size=65024, hidden_size=4544, num_hidden_layers=32,
                      num_attention_heads=71, num_kv_heads=1, multi_query=True, parallel_attn=True, bias=False,
                      alibi=False, new_decoder_architecture=False, max_position_embeddings=2048),
    "gpt2": dict(cls="GPT2Config", arch="GPT2LMHeadModel", vocab_size=50257, n_embd=768, n_layer=12, n_head=12, n_positions=1024),
    "mistral-7b": dict(cls="MistralConfig", vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, sliding_window=4096,
                       max_position_embeddings=32768, rope_theta=10000.0, tie_word_embeddings=False),
    "smollm3-3b": dict(cls="SmolLM3Config", vocab_size=128256, hidden_size=2048, intermediate_size=11008,
                       num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=4, no_rope_layer_interval=4,
                       rope_theta=5000000.0, max_position_embeddings=65536, tie_word_embeddings=True),
    # The seed's headline model: 8.5 B parameters, a 256k vocabulary, 16 heads of 256 (no GQA).
    "gemma-7b": dict(cls="GemmaConfig", vocab_size=256000, hidden_size=3072, intermediate_size=24576,
                     num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=16, head_dim=256,
                     tie_word_embeddings=True, max_position_embeddings=8192, rope_theta=10000.0, rms_norm_eps=1e-6,
                     hidden_act="gelu_pytorch_tanh", hidden_activation="gelu_pytorch_tanh"),
}


def shape_config(shape: str) -> dict:
    """The config.json of a shape, as transformers writes it (architectures named after the config class)."""
    import transformers

    kwargs = dict(SHAPES[shape])
    cls = kwargs.pop("cls", "LlamaConfig")
    arch = kwargs.pop("arch", cls.removesuffix("Config") + "ForCausalLM")
    cfg = getattr(transformers, cls)(**kwargs)
    cfg.architectures = [arch]
    return cfg.to_dict()


def make_model(shape: str, out: Path) -> Path:
    import torch
    import transformers

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import make_tokenizer  # a small byte-level BPE: the bench feeds token ids directly

    if (out / "config.json").exists():
        return out
    torch.manual_seed(0)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    kwargs = dict(SHAPES[shape])
    kwargs.pop("arch", None)
    config = getattr(transformers, kwargs.pop("cls", "LlamaConfig"))(**kwargs)
    with torch.device(dev):
        model = transformers.AutoModelForCausalLM.from_config(config).to(torch.float16)
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
    ap.add_argument("--random", action="store_true", help="random codes in the converter's layout (bench/random_model.py)")
    ap.add_argument("--profile", action="store_true", help="also print per-kernel GPU times (cli bench --profile)")
    ap.add_argument("--runtime", type=Path, default=ROOT, help="the checkout whose runtime/cli.mjs runs")
    args = ap.parse_args()
    args.outdir.mkdir(parents=True, exist_ok=True)
    for shape in args.shapes.split(","):
        conv = args.outdir / f"{shape}-{args.quant}{'-nogroups' if args.no_groups else ''}{'-random' if args.random else ''}"
        if not (conv / "manifest.json").exists():
            t0 = time.time()
            if args.random:
                sys.path.insert(0, str(ROOT / "bench"))
                from random_model import build
                build(shape_config(shape), conv, quant=args.quant, group_tensors=not args.no_groups)
            else:
                hf = make_model(shape, args.outdir / f"{shape}-hf")
                # In-process: the GPU machine's Python has no livereload, which the CLI's serve verb needs.
                sys.path.insert(0, str(ROOT))
                from sitegen.convert import convert
                convert(hf, conv, quant=args.quant, group_tensors=not args.no_groups)
            print(f"# converted {shape} in {time.time() - t0:.1f}s", file=sys.stderr, flush=True)
        man = json.loads((conv / "manifest.json").read_text())
        cfg = man["config"]
        weight_bytes = man["requirements"]["weights_bytes"]  # physical tensors: a group's members share its bytes
        # A mixture-of-experts model reads only its top-k experts per token (issue 12); the manifest says how much.
        active_bytes = man["requirements"].get("weights_bytes_per_token", weight_bytes)
        if cfg.get("tie_word_embeddings"):
            pass  # the tied table is read once per token by the head and one row by the lookup: count it once
        kv_per_token = 2 * cfg["num_layers"] * cfg["num_kv_heads"] * cfg["head_dim"] * 4
        mean_ctx = args.prompt_tokens + args.decode_tokens / 2
        bytes_per_token = active_bytes + kv_per_token * mean_ctx
        res = subprocess.run(["node", str(args.runtime / "runtime/cli.mjs"), "bench", "--model", str(conv),
                              "--prompt-tokens", str(args.prompt_tokens),
                              "--decode-tokens", str(args.decode_tokens), "--json",
                              *(["--profile"] if args.profile else [])],
                             capture_output=True, text=True)
        if res.returncode:
            print(f"# {shape}: cli bench failed: {res.stderr.strip()[-2000:]}", flush=True)
            continue
        if res.stderr.strip():
            print(res.stderr.rstrip(), file=sys.stderr, flush=True)  # the profile tables
        r = json.loads(res.stdout.strip().splitlines()[-1])
        r.pop("profile", None)
        r.update(shape=shape, quant=args.quant, groups=not args.no_groups, runtime=str(args.runtime), weight_bytes=weight_bytes,
                 active_weight_bytes=active_bytes,
                 bytes_per_token=int(bytes_per_token),
                 decode_bandwidth_GBs=round(bytes_per_token * r["decode_tokens_per_s"] / 1e9, 1),
                 roofline_fraction=round(bytes_per_token * r["decode_tokens_per_s"] / args.roofline, 4))
        print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
