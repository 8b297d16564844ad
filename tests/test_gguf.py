"""GGUF sources (issue 3 item 1) on tiny GGUF files written here the way llama.cpp writes them.

The GGUF files are made with the ``gguf`` package's writer, name map (``get_tensor_name_map``) and
quantizers, with llama.cpp's ``LlamaModel.permute`` applied to q/k of llama models and ``+1`` on
Gemma norms (what ``convert_hf_to_gguf.py`` does). The oracle for a converted tensor is the HF
tensor passed through gguf's own quantize/dequantize; K-quants (which gguf-py cannot quantize) are
random blocks, checked against ``gguf.quants.dequantize`` of the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from safetensors.numpy import load_file

from sitegen.convert import convert
from sitegen.errors import ConvertError
from test_convert import read_tensor
from tiny_models import make_tiny


def _llama_cpp_permute(w: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    # convert_hf_to_gguf.py, LlamaModel.permute
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def _random_kquant(rows: int, cols: int, qtype: T, rng) -> np.ndarray:
    """Random K-quant blocks with small finite f16 scales (d, dmin) at their places in the block."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    data = rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
    scales = rng.uniform(0.001, 0.01, size=(rows, cols // block, 2)).astype(np.float16).view(np.uint8)
    if qtype == T.Q6_K:  # ... ql[128] qh[64] scales[16] d
        data[..., 208:210] = scales[..., :2]
    else:                # d, dmin, ...
        data[..., 0:4] = scales
    return data.reshape(rows, -1)


def write_gguf(src: Path, path: Path, arch: str, types: dict[str, T], *, rng=None) -> dict[str, np.ndarray]:
    """Write ``src`` (a tiny HF folder) as a GGUF; returns the expected HF-layout f32 tensors."""
    cfg = json.loads((src / "config.json").read_text())
    tokj = json.loads((src / "tokenizer.json").read_text())
    rng = rng or np.random.default_rng(0)
    model_arch = {"llama": gguf.MODEL_ARCH.LLAMA, "gemma3": gguf.MODEL_ARCH.GEMMA3}[arch]
    tmap = gguf.get_tensor_name_map(model_arch, cfg["num_hidden_layers"])
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    if arch == "gemma3":
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
        w.add_sliding_window(cfg["sliding_window"])
        w.add_rope_freq_base(1_000_000.0)
    else:
        w.add_rope_dimension_count(head_dim)
        w.add_rope_freq_base(cfg.get("rope_theta") or cfg["rope_parameters"]["rope_theta"])
    vocab = sorted(tokj["model"]["vocab"].items(), key=lambda kv: kv[1])
    for added in tokj["added_tokens"]:
        assert vocab[added["id"]][0] == added["content"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")  # the tiny tokenizer is ByteLevel with the GPT-2 regex
    w.add_token_list([t for t, _ in vocab])
    special = {a["id"] for a in tokj["added_tokens"]}
    w.add_token_types([3 if i in special else 1 for i in range(len(vocab))])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tokj["model"]["merges"]])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_chat_template(json.loads((src / "tokenizer_config.json").read_text())["chat_template"])

    expected = {}
    for hf_name, arr in sorted(load_file(src / "model.safetensors").items()):
        if arch == "gemma3" and hf_name == "lm_head.weight":
            continue  # tied
        name = tmap.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert name, hf_name
        arr = arr.astype(np.float32)
        if arch == "gemma3" and hf_name.endswith("norm.weight"):
            arr = arr + 1  # llama.cpp stores Gemma's 1 + w
        qtype = types.get(hf_name.rsplit(".", 2)[-2], T.F32) if arr.ndim == 2 else T.F32
        if arch == "llama" and (".q_proj." in hf_name or ".k_proj." in hf_name):
            kv = cfg["num_key_value_heads"] if ".k_proj." in hf_name else cfg["num_attention_heads"]
            stored = _llama_cpp_permute(arr, cfg["num_attention_heads"], kv)
        else:
            stored = arr
        if qtype in (T.Q4_K, T.Q5_K, T.Q6_K):
            data = _random_kquant(*stored.shape, qtype, rng)
            back = gguf.quants.dequantize(data, qtype).reshape(stored.shape)
            assert stored is arr  # K-quants only on unpermuted tensors, so `back` is already HF layout
            exp = back
        elif qtype == T.F32:
            data, exp = stored, arr
        elif qtype == T.F16:
            data, exp = stored.astype(np.float16), arr.astype(np.float16).astype(np.float32)
        else:
            data = gguf.quants.quantize(stored, qtype)
            exp = gguf.quants.dequantize(gguf.quants.quantize(arr, qtype), qtype).reshape(arr.shape)
        if qtype in (T.F32, T.F16):
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, data, raw_dtype=qtype)
        if arch == "gemma3" and hf_name.endswith("norm.weight"):
            exp = exp - 1
        expected[hf_name] = exp
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return expected


_CANON_LLAMA = __import__("test_convert").llama_canonical
_LEGACY = {"q_proj": T.Q4_0, "k_proj": T.Q8_0, "v_proj": T.Q4_1, "o_proj": T.Q5_0, "gate_proj": T.Q5_1,
           "up_proj": T.BF16, "down_proj": T.F16, "embed_tokens": T.Q8_0, "lm_head": T.Q4_1}
_KQUANTS = {"q_proj": T.Q8_0, "k_proj": T.Q4_0, "v_proj": T.Q4_K, "o_proj": T.Q5_K, "gate_proj": T.Q6_K,
            "up_proj": T.Q4_K, "down_proj": T.Q5_K, "embed_tokens": T.Q6_K, "lm_head": T.Q8_0}


@pytest.mark.parametrize("types,overrides", [(_LEGACY, {}),
                                             (_KQUANTS, dict(hidden_size=256, intermediate_size=256))],
                         ids=["legacy-quants", "k-quants"])
def test_llama_gguf_matches_hf(types, overrides, tmp_path):
    src = make_tiny("llama", tmp_path / "hf", **overrides)
    expected = write_gguf(src, tmp_path / "tiny.gguf", "llama", types)
    out = convert(tmp_path / "tiny.gguf", tmp_path / "m", quant="f32", shard_size=8192)
    ref = convert(src, tmp_path / "ref", quant="f32")
    m = json.loads((out / "manifest.json").read_text())
    r = json.loads((ref / "manifest.json").read_text())
    for key in ("architecture", "vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                "num_kv_heads", "head_dim", "rope_theta", "rotary_dim", "attn_scale", "tie_word_embeddings",
                "activation", "layer_types"):
        assert m["config"][key] == r["config"][key], key
    assert m["config"]["norm_eps"] == pytest.approx(r["config"]["norm_eps"])
    by_name = {t["name"]: t for t in m["tensors"]}
    assert set(by_name) == {t["name"] for t in r["tensors"]}
    for hf_name, exp in expected.items():
        np.testing.assert_array_equal(read_tensor(out, m, by_name[_CANON_LLAMA(hf_name)]), exp, err_msg=hf_name)
    assert m["source"]["kind"] == "gguf" and len(m["source"]["sha256"]) == 64
    assert m["generation"]["bos_token_id"] == 1 and m["generation"]["eos_token_ids"] == [2]
    assert m["chat_template"] == r["chat_template"]


def test_gguf_tokenizer_encodes_like_tokenizers(tmp_path):
    from tokenizers import Tokenizer

    from sitegen.convert.tokenizer import encode

    src = make_tiny("llama", tmp_path / "hf")
    write_gguf(src, tmp_path / "tiny.gguf", "llama", {})
    out = convert(tmp_path / "tiny.gguf", tmp_path / "m", quant="q8")
    tok = json.loads((out / "manifest.json").read_text())["tokenizer"]
    text = "Hello world, the quick brown fox! 0123"
    assert encode(tok, text) == Tokenizer.from_file(str(src / "tokenizer.json")).encode(text).ids


def test_gemma3_gguf_norms_and_config(tmp_path):
    """Gemma's stored 1 + w is not added twice, and the config GGUF cannot store matches HF's defaults."""
    src = make_tiny("gemma3", tmp_path / "hf", query_pre_attn_scalar=32,
                    layer_types=["sliding_attention"] * 3,
                    rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                     "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}})
    expected = write_gguf(src, tmp_path / "g.gguf", "gemma3", {"q_proj": T.Q8_0, "gate_proj": T.Q4_0})
    out = convert(tmp_path / "g.gguf", tmp_path / "m", quant="f32")
    ref = convert(src, tmp_path / "ref", quant="f32")
    m = json.loads((out / "manifest.json").read_text())
    r = json.loads((ref / "manifest.json").read_text())
    for key in ("architecture", "head_dim", "attn_scale", "rope_theta", "rope_local_theta", "sliding_window",
                "layer_types", "sandwich_norm", "qk_norm", "embed_scale", "activation", "tie_word_embeddings"):
        assert m["config"][key] == r["config"][key], key
    rt = {t["name"]: t for t in r["tensors"]}
    for t in m["tensors"]:
        got = read_tensor(out, m, t)
        want = read_tensor(ref, r, rt[t["name"]])
        if t["name"].endswith("norm.weight"):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6, err_msg=t["name"])
        elif not any(k in t["name"] for k in ("attn.q.", "mlp.gate.")):
            np.testing.assert_array_equal(got, want, err_msg=t["name"])
    assert len(expected) == len(m["tensors"])


def test_unsupported_tensor_type(tmp_path):
    src = make_tiny("llama", tmp_path / "hf", hidden_size=256, intermediate_size=256)
    path = tmp_path / "bad.gguf"
    write_gguf(src, path, "llama", {})
    # Rewrite one tensor's type field: build the same file with a Q2_K tensor instead.
    w = gguf.GGUFWriter(str(tmp_path / "q2k.gguf"), "llama")
    r = gguf.GGUFReader(path)
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k == "general.architecture":
            continue
        v = f.contents()
        vtype = f.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(k, v, vtype, sub_type=f.types[-1])
        else:
            w.add_key_value(k, v, vtype)
    for t in r.tensors:
        if t.name == "blk.1.ffn_up.weight":
            block, size = gguf.GGML_QUANT_SIZES[T.Q2_K]
            w.add_tensor(t.name, np.zeros((256, 256 // block * size), np.uint8), raw_dtype=T.Q2_K)
        else:
            w.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ConvertError, match=r"tensor 'blk.1.ffn_up.weight' has GGUF type Q2_K, which sitegen does "
                                           r"not convert; supported: F32, F16, BF16, Q8_0") as e:
        convert(tmp_path / "q2k.gguf", tmp_path / "out")
    assert e.value.file == str(tmp_path / "q2k.gguf")
    assert not (tmp_path / "out").exists()


def test_not_a_gguf(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 10)
    with pytest.raises(ConvertError, match="not a readable GGUF file") as e:
        convert(bad, tmp_path / "out")
    assert e.value.file == str(bad)


def test_gguf_without_tokenizer(tmp_path):
    w = gguf.GGUFWriter(str(tmp_path / "t.gguf"), "llama")
    for fn, v in ((w.add_block_count, 1), (w.add_embedding_length, 64), (w.add_feed_forward_length, 128),
                  (w.add_head_count, 4), (w.add_context_length, 128)):
        fn(v)
    rng = np.random.default_rng(0)
    for name, shape in (("token_embd.weight", (16, 64)), ("output_norm.weight", (64,)),
                        ("blk.0.attn_norm.weight", (64,)), ("blk.0.ffn_norm.weight", (64,)),
                        ("blk.0.attn_q.weight", (64, 64)), ("blk.0.attn_k.weight", (64, 64)),
                        ("blk.0.attn_v.weight", (64, 64)), ("blk.0.attn_output.weight", (64, 64)),
                        ("blk.0.ffn_gate.weight", (128, 64)), ("blk.0.ffn_up.weight", (128, 64)),
                        ("blk.0.ffn_down.weight", (64, 128))):
        w.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ConvertError, match="missing tokenizer: the GGUF has no 'tokenizer.ggml.tokens' metadata"):
        convert(tmp_path / "t.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()
