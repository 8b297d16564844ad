"""HF-folder conversion end to end (issue 3 items 1–3) on tiny random models.

Oracles: tensor values come from the ``safetensors`` package (and torch for bf16), shard hashes from
hashlib, tokenizer/chat template from their own modules' public functions, the KV-cache size from
the model's config.json, all independent of the converter's code paths.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from sitegen.convert import convert, parse_size
from sitegen.convert.quantize import dequantize
from sitegen.errors import ConvertError
from tiny_models import make_tiny

# HF Llama names → canonical names (docs/internals.md), written out here as the test's own table.
_LLAMA = {
    "model.embed_tokens.weight": "embed.weight", "model.norm.weight": "final_norm.weight",
    "lm_head.weight": "lm_head.weight",
}
_LLAMA_LAYER = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "mlp_norm",
    "self_attn.q_proj": "attn.q", "self_attn.k_proj": "attn.k", "self_attn.v_proj": "attn.v",
    "self_attn.o_proj": "attn.o", "mlp.gate_proj": "mlp.gate", "mlp.up_proj": "mlp.up",
    "mlp.down_proj": "mlp.down",
}


def llama_canonical(hf_name: str) -> str:
    if hf_name in _LLAMA:
        return _LLAMA[hf_name]
    _, _, i, *rest = hf_name.split(".")
    part, kind = ".".join(rest[:-1]), rest[-1]
    return f"layers.{i}.{_LLAMA_LAYER[part]}.{kind}"


def read_tensor(folder: Path, manifest: dict, entry: dict) -> np.ndarray:
    """A tensor's bytes gathered across shards exactly as the doc describes, then decoded."""
    start = entry["shard"] * manifest["shard_size"] + entry["offset"]
    end = start + entry["nbytes"]
    chunks = []
    for i, s in enumerate(manifest["shards"]):
        lo = i * manifest["shard_size"]
        hi = lo + s["bytes"]
        if hi > start and lo < end:
            data = (folder / s["file"]).read_bytes()
            chunks.append(data[max(start, lo) - lo:min(end, hi) - lo])
    return dequantize(b"".join(chunks), entry)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    return make_tiny("llama", tmp_path_factory.mktemp("src") / "tiny-llama")


@pytest.fixture(scope="module")
def f32_out(tiny_llama, tmp_path_factory) -> Path:
    return convert(tiny_llama, tmp_path_factory.mktemp("out") / "m", quant="f32", shard_size=4096)


def test_f32_values_and_shards(tiny_llama, f32_out):
    m = json.loads((f32_out / "manifest.json").read_text())
    assert (m["format"], m["version"]) == ("sitegen-weights", 2)
    src = load_file(tiny_llama / "model.safetensors")
    by_name = {t["name"]: t for t in m["tensors"]}
    assert set(by_name) == {llama_canonical(n) for n in src}
    for hf_name, ref in src.items():
        t = by_name[llama_canonical(hf_name)]
        assert t["dtype"] == "f32" and t["shape"] == list(ref.shape)
        np.testing.assert_array_equal(read_tensor(f32_out, m, t), ref.astype(np.float32))
        # Tensors start at 256-byte boundaries; a group member starts at its rows in its group, which does.
        start = t["shard"] * 4096 + t["offset"]
        if "group" in t:
            g = next(g for g in m["groups"] if g["name"] == t["group"])
            g_start = g["shard"] * 4096 + g["offset"]
            assert g_start % 256 == 0 and start == g_start + t["group_row"] * g["planes"][0]["nbytes"] // g["shape"][0]
        else:
            assert start % 256 == 0
    # Shards: exact size except the last, sha256 of the bytes on disk, a tensor spanning shards.
    sizes = [s["bytes"] for s in m["shards"]]
    assert all(s == 4096 for s in sizes[:-1]) and 0 < sizes[-1] <= 4096
    for s in m["shards"]:
        data = (f32_out / s["file"]).read_bytes()
        assert len(data) == s["bytes"] and hashlib.sha256(data).hexdigest() == s["sha256"]
    assert [s["file"] for s in m["shards"]] == [f"shard-{i:05d}.bin" for i in range(len(sizes))]
    assert any(t["offset"] + t["nbytes"] > 4096 for t in m["tensors"])  # spans into the next shard


def test_manifest_metadata(tiny_llama, f32_out):
    from sitegen.convert.chat_template import compile_chat_template
    from sitegen.convert.tokenizer import from_tokenizer_json

    m = json.loads((f32_out / "manifest.json").read_text())
    cfg = json.loads((tiny_llama / "config.json").read_text())
    tc = json.loads((tiny_llama / "tokenizer_config.json").read_text())
    gen = json.loads((tiny_llama / "generation_config.json").read_text())
    assert m["tokenizer"] == json.loads(json.dumps(from_tokenizer_json(tiny_llama / "tokenizer.json")))
    assert m["chat_template"] == json.loads(json.dumps(compile_chat_template(
        tc["chat_template"], bos_token=tc["bos_token"], eos_token=tc["eos_token"])))
    assert m["config"]["hf_architecture"] == cfg["architectures"][0]
    eos = gen["eos_token_id"]
    assert m["generation"]["eos_token_ids"] == (eos if isinstance(eos, list) else [eos])
    for key in ("temperature", "top_p", "top_k"):
        if key in gen:
            assert m["generation"][key] == gen[key]
    req = m["requirements"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    assert req["kv_cache_bytes_per_1k_tokens"] == (
        2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * head_dim * 1024 * 4)
    # Physical tensors: the groups (q/k/v, gate/up) and the tensors in none; members share their group's bytes.
    physical = [t for t in m["tensors"] if "group" not in t] + m["groups"]
    assert m["groups"] and all(any(t.get("group") == g["name"] for t in m["tensors"]) for g in m["groups"])
    assert req["weights_bytes"] == sum(t["nbytes"] for t in physical)
    assert req["max_buffer_bytes"] == max(t["nbytes"] for t in physical)
    assert m["source"] == {"kind": "hf-folder", "ref": str(tiny_llama)}


@pytest.mark.parametrize("quant,embed", [("q4", None), ("q8", "f16"), ("f16", None)])
def test_quantized_dtypes_and_errors(tiny_llama, tmp_path, quant, embed):
    out = convert(tiny_llama, tmp_path / "m", quant=quant, embed_quant=embed)
    m = json.loads((out / "manifest.json").read_text())
    assert m["quantization"] == {"weights": quant, "embeddings": embed or quant, "lm_head": embed or quant,
                                 "group_size": 32}
    assert len(m["shards"]) == 1 and m["shard_size"] == 16 * 2**20
    src = load_file(tiny_llama / "model.safetensors")
    for hf_name, ref in src.items():
        t = next(t for t in m["tensors"] if t["name"] == llama_canonical(hf_name))
        want = "f32" if ref.ndim == 1 else ((embed or quant) if "embed" in hf_name or "lm_head" in hf_name else quant)
        assert t["dtype"] == want, hf_name
        got = read_tensor(out, m, t)
        ref = ref.astype(np.float32)
        err = t["quant_error"]
        assert err["max_abs"] == pytest.approx(float(np.abs(got - ref).max()), rel=1e-5, abs=1e-12)
        rel = float(np.sqrt(((got - ref) ** 2).sum() / (ref ** 2).sum()))
        assert err["rel_rms"] == pytest.approx(rel, rel=1e-4, abs=1e-12)
        bound = {"f32": 0, "f16": 1e-3, "q8": 0.01, "q4": 0.15}[want]
        assert rel <= bound
        if want in ("q4", "q8"):
            assert t["group_size"] == 32 and [p["name"] for p in t["planes"]] == ["q", "scales"]
            # The scales plane is 256-aligned in the stream (for a group member: its group's plane, at its rows).
            if "group" not in t:
                assert t["planes"][1]["offset"] % 256 == 0


def test_bf16_and_sharded_index(tiny_llama, tmp_path):
    """A bf16 checkpoint split over two files with an index converts to torch's bf16 values."""
    import torch
    from safetensors.torch import save_file as save_torch

    src = load_file(tiny_llama / "model.safetensors")
    folder = tmp_path / "bf16"
    shutil.copytree(tiny_llama, folder)
    (folder / "model.safetensors").unlink()
    names = sorted(src)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for file, part in halves.items():
        save_torch({n: torch.from_numpy(src[n]).to(torch.bfloat16) for n in part}, folder / file)
        weight_map.update({n: file for n in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    out = convert(folder, tmp_path / "m", quant="f32")
    m = json.loads((out / "manifest.json").read_text())
    for hf_name, ref in src.items():
        t = next(t for t in m["tensors"] if t["name"] == llama_canonical(hf_name))
        want = torch.from_numpy(ref).to(torch.bfloat16).to(torch.float32).numpy()
        np.testing.assert_array_equal(read_tensor(out, m, t), want)


def test_output_replaced_atomically(tiny_llama, tmp_path):
    out = tmp_path / "m"
    convert(tiny_llama, out, quant="q8")
    first = json.loads((out / "manifest.json").read_text())
    convert(tiny_llama, out, quant="q4")
    assert json.loads((out / "manifest.json").read_text())["quantization"]["weights"] == "q4"
    assert first["quantization"]["weights"] == "q8"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary folders left


def test_refuses_to_replace_a_foreign_folder(tiny_llama, tmp_path):
    out = tmp_path / "docs"
    out.mkdir()
    (out / "index.md").write_text("mine")
    with pytest.raises(ConvertError, match="not empty and is not a converted model") as e:
        convert(tiny_llama, out)
    assert str(out) in str(e.value)
    assert (out / "index.md").read_text() == "mine"


def test_options_are_checked(tiny_llama, tmp_path):
    with pytest.raises(ConvertError, match=r"--quant: unknown quantization 'q3'"):
        convert(tiny_llama, tmp_path / "m", quant="q3")
    with pytest.raises(ConvertError, match=r"--embed-quant: unknown quantization 'int8'"):
        convert(tiny_llama, tmp_path / "m", embed_quant="int8")
    with pytest.raises(ConvertError, match=r"--shard-size: must be a multiple of 256"):
        convert(tiny_llama, tmp_path / "m", shard_size=1000)
    assert not (tmp_path / "m").exists()


def test_parse_size():
    assert parse_size("16MiB") == 16 * 2**20
    assert parse_size("512KiB") == 512 * 2**10
    assert parse_size("1G") == 2**30
    assert parse_size("4096") == 4096
    with pytest.raises(ConvertError, match=r"--shard-size: expected a size such as 16MiB.*'lots'"):
        parse_size("lots")


def test_convert_verb(tiny_llama, tmp_path, capsys):
    from sitegen.commands import convert as verb

    parser = argparse.ArgumentParser()
    verb.add_arguments(parser)
    args = parser.parse_args([str(tiny_llama), "-o", str(tmp_path / "m"), "--quant", "q8", "--shard-size", "8KiB"])
    assert verb.run(args) == 0
    m = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert m["shard_size"] == 8192 and m["quantization"]["weights"] == "q8"
    cap = capsys.readouterr()
    assert "manifest.json" in cap.out and "convert:" in cap.err


@pytest.mark.parametrize("arch", ["qwen2", "gemma3", "phi3"])
def test_other_families_convert(arch, tmp_path):
    """Fused tensors, biases and Gemma norms pass through the streaming pipeline (values: C's tests)."""
    from sitegen.convert.architectures import expected_tensors

    src = make_tiny(arch, tmp_path / arch)
    out = convert(src, tmp_path / "m", quant="q8")
    m = json.loads((out / "manifest.json").read_text())
    assert sorted(t["name"] for t in m["tensors"]) == sorted(expected_tensors(m["config"]))
