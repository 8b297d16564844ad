"""GGUF sources of the mixture-of-experts families (issue 12): Mixtral (GGUF architecture "llama" with
llama.expert_count) and Qwen3-MoE ("qwen3moe"), written here the way llama.cpp's convert_hf_to_gguf.py
writes them: the experts of each projection stacked into one ``blk.N.ffn_{gate,up,down}_exps`` tensor
[experts, rows, cols], the router as ``blk.N.ffn_gate_inp``, Mixtral's q/k rows permuted
(``LlamaModel.permute``), Qwen3-MoE's dense layers (mlp_only_layers) with plain ffn_gate/up/down.

Oracles: the same tiny checkpoint converted from its Hugging Face folder (every tensor equal where
the GGUF stores f32; the experts of the Q8_0 case equal gguf's own dequantization), and transformers'
logits for the GGUF-converted model (1e-4 × range at f32 storage).
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from safetensors.numpy import load_file

from oracles import need
from sitegen.convert import convert
from test_convert import read_tensor
from test_gguf import _llama_cpp_permute
from tiny_models import make_tiny

torch = need("torch")
transformers = need("transformers")

_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
          "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
          "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
          "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
          "block_sparse_moe.gate": "ffn_gate_inp", "mlp.gate": "ffn_gate_inp"}
_EXPERT = {"w1": "gate", "w3": "up", "w2": "down", "gate_proj": "gate", "up_proj": "up", "down_proj": "down"}


def write_moe_gguf(src: Path, path: Path, arch: str, expert_type: T) -> dict[str, np.ndarray]:
    """``src`` (a tiny Mixtral / Qwen3-MoE folder) as a GGUF; returns HF-layout f32 expectations of the
    stacked experts as gguf decodes them (``layers.{i}.mlp.experts.{proj}.weight``)."""
    cfg = json.loads((src / "config.json").read_text())
    tokj = json.loads((src / "tokenizer.json").read_text())
    n = cfg["num_hidden_layers"]
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(n)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base((cfg.get("rope_parameters") or {}).get("rope_theta") or cfg.get("rope_theta") or 1e6)
    w.add_expert_count(cfg.get("num_local_experts") or cfg["num_experts"])
    w.add_expert_used_count(cfg["num_experts_per_tok"])
    if arch == "qwen3moe":
        w.add_expert_feed_forward_length(cfg["moe_intermediate_size"])
        w.add_expert_weights_norm(bool(cfg["norm_topk_prob"]))
    vocab = sorted(tokj["model"]["vocab"].items(), key=lambda kv: kv[1])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list([t for t, _ in vocab])
    special = {a["id"] for a in tokj["added_tokens"]}
    w.add_token_types([3 if i in special else 1 for i in range(len(vocab))])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tokj["model"]["merges"]])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)

    experts: dict[tuple[int, str], dict[int, np.ndarray]] = {}
    for hf_name, arr in sorted(load_file(src / "model.safetensors").items()):
        arr = arr.astype(np.float32)
        name = hf_name.removeprefix("model.")
        if name == "embed_tokens.weight":
            w.add_tensor("token_embd.weight", arr)
            continue
        if name in ("norm.weight", "lm_head.weight"):
            w.add_tensor({"norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}[name], arr)
            continue
        _, i, rest = name.split(".", 2)
        part = rest.removesuffix(".weight")
        bits = part.split(".")
        if "experts" in bits:  # ...experts.{e}.{proj}: stacked below
            experts.setdefault((int(i), _EXPERT[bits[-1]]), {})[int(bits[-2])] = arr
            continue
        if arch == "llama" and part in ("self_attn.q_proj", "self_attn.k_proj"):
            kv = cfg["num_key_value_heads"] if "k_proj" in part else cfg["num_attention_heads"]
            arr = _llama_cpp_permute(arr, cfg["num_attention_heads"], kv)
        w.add_tensor(f"blk.{i}.{_NAMES[part]}.weight", arr)
    expected = {}
    for (i, proj), by_e in sorted(experts.items()):
        stacked = np.stack([by_e[e] for e in sorted(by_e)])  # [E, rows, cols]
        if expert_type == T.F32:
            w.add_tensor(f"blk.{i}.ffn_{proj}_exps.weight", stacked)
            expected[f"layers.{i}.mlp.experts.{proj}.weight"] = stacked
        else:
            data = gguf.quants.quantize(stacked, expert_type)
            w.add_tensor(f"blk.{i}.ffn_{proj}_exps.weight", data, raw_dtype=expert_type)
            expected[f"layers.{i}.mlp.experts.{proj}.weight"] = gguf.quants.dequantize(data, expert_type).reshape(stacked.shape)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return expected


@pytest.mark.parametrize("case,arch,gguf_arch,expert_type", [
    ("mixtral-f32", "mixtral", "llama", T.F32),
    ("qwen3_moe-f32", "qwen3_moe", "qwen3moe", T.F32),
    ("qwen3_moe-q8_0-experts", "qwen3_moe", "qwen3moe", T.Q8_0),
])
def test_moe_gguf_converts_like_the_hf_folder(tmp_path, case, arch, gguf_arch, expert_type):
    # what llama.cpp computes for qwen3moe; GGUF's llama architecture has no sliding window (Mixtral 8x7B has none)
    overrides = {"norm_topk_prob": True} if arch == "qwen3_moe" else {"sliding_window": None}
    src = make_tiny(arch, tmp_path / "hf", **overrides)
    expected = write_moe_gguf(src, tmp_path / "tiny.gguf", gguf_arch, expert_type)
    out = convert(tmp_path / "tiny.gguf", tmp_path / "m", quant="f32")
    ref = convert(src, tmp_path / "ref", quant="f32")
    m = json.loads((out / "manifest.json").read_text())
    r = json.loads((ref / "manifest.json").read_text())
    for key in ("architecture", "hf_architecture", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
                "head_dim", "qk_norm", "moe", "tie_word_embeddings", "rope_theta", "sliding_window", "layer_types"):
        assert m["config"][key] == r["config"][key], key
    mine = {t["name"]: t for t in m["tensors"]}
    theirs = {t["name"]: t for t in r["tensors"]}
    assert set(mine) == set(theirs)
    for name, t in theirs.items():
        want = expected.get(name)
        if want is None:
            want = read_tensor(ref, r, t)
        np.testing.assert_array_equal(read_tensor(out, m, mine[name]), want, err_msg=name)
    if expert_type == T.F32:  # the GGUF-converted model is the checkpoint: transformers' logits
        from sitegen.reference import load

        hf = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
        prompt = np.random.default_rng(0).integers(3, 384, 16).tolist()
        with torch.no_grad():
            want = hf(torch.tensor([prompt])).logits[0].numpy()
        got = load(out).logits(prompt)
        assert float(np.abs(got - want).max()) <= 1e-4 * float(want.max() - want.min())
