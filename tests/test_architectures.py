"""The architecture table: config normalisation (both config generations) and its error messages.

Numerical correctness of every family is tested end to end in ``test_reference.py``; here: the
legacy ``config.json`` keys of real Hub checkpoints (``rope_theta``/``rope_scaling``,
``rope_local_base_freq``, top-level ``partial_rotary_factor``) normalise to the same config as
transformers' own reading of them, and every user-facing error names the file, key and fix.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from oracles import need

from sitegen.convert.architectures import (FAMILIES, SUPPORTED, Family, canonical_tensors, expected_tensors,
                                           normalize_config, stack_parts)
from sitegen.errors import ConvertError

_SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=100, max_position_embeddings=4096, rms_norm_eps=1e-6,
              layer_norm_eps=1e-5, tie_word_embeddings=False)

# Legacy (pre-transformers-5) config.json dicts as the Hub stores them, with the class that reads them.
LEGACY = {
    "llama3.2": ("LlamaConfig", dict(_SMALL, architectures=["LlamaForCausalLM"], rope_theta=500000.0,
                                     rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                                   "high_freq_factor": 4.0,
                                                   "original_max_position_embeddings": 8192})),
    "llama-linear": ("LlamaConfig", dict(_SMALL, architectures=["LlamaForCausalLM"],
                                         rope_scaling={"type": "linear", "factor": 2.0})),
    "gemma3": ("Gemma3TextConfig", dict(_SMALL, architectures=["Gemma3ForCausalLM"], head_dim=32,
                                        rope_theta=1000000.0, rope_local_base_freq=10000.0,
                                        rope_scaling={"rope_type": "linear", "factor": 8.0},
                                        query_pre_attn_scalar=32, sliding_window=512,
                                        sliding_window_pattern=2)),
    "gemma2": ("Gemma2Config", dict(_SMALL, architectures=["Gemma2ForCausalLM"], head_dim=16,
                                    query_pre_attn_scalar=16, sliding_window=4096,
                                    attn_logit_softcapping=50.0, final_logit_softcapping=30.0)),
    "phi": ("PhiConfig", dict(_SMALL, architectures=["PhiForCausalLM"], partial_rotary_factor=0.4,
                              rope_theta=10000.0)),
    "stablelm": ("StableLmConfig", dict(_SMALL, architectures=["StableLmForCausalLM"], partial_rotary_factor=0.25,
                                        use_qkv_bias=True)),
    "qwen2-sliding": ("Qwen2Config", dict(_SMALL, architectures=["Qwen2ForCausalLM"], use_sliding_window=True,
                                          sliding_window=128, max_window_layers=2)),
    "mistral": ("MistralConfig", dict(_SMALL, architectures=["MistralForCausalLM"], sliding_window=4096)),
    # SmolLM3-3B's config.json: no layer_types, an explicit no_rope_layers list, legacy rope_theta
    "smollm3": ("SmolLM3Config", dict(_SMALL, architectures=["SmolLM3ForCausalLM"], rope_theta=5000000.0,
                                      no_rope_layers=[1, 1, 1, 0], use_sliding_window=False)),
    "qwen3_moe": ("Qwen3MoeConfig", dict(_SMALL, architectures=["Qwen3MoeForCausalLM"], num_experts=8,
                                         num_experts_per_tok=2, moe_intermediate_size=32, mlp_only_layers=[0],
                                         decoder_sparse_step=2, norm_topk_prob=True, rope_theta=1000000.0)),
    "mixtral": ("MixtralConfig", dict(_SMALL, architectures=["MixtralForCausalLM"], num_local_experts=8,
                                      num_experts_per_tok=2, rope_theta=1000000.0)),
}


@pytest.mark.parametrize("name", LEGACY)
def test_legacy_config_keys_normalise_like_transformers_reads_them(name):
    transformers = need("transformers")
    cls_name, legacy = LEGACY[name]
    modern = getattr(transformers, cls_name)(**legacy).to_dict()  # transformers' reading, rope_parameters etc.
    modern["architectures"] = legacy["architectures"]
    assert normalize_config(legacy) == normalize_config(modern)


def test_llama3_scaling_and_gemma3_bases_are_read():
    cfg = normalize_config(LEGACY["llama3.2"][1])
    assert cfg["rope_theta"] == 500000.0
    assert cfg["rope_scaling"] == {"type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    g3 = normalize_config(LEGACY["gemma3"][1])
    assert (g3["rope_theta"], g3["rope_local_theta"]) == (1000000.0, 10000.0)
    assert g3["layer_types"] == ["sliding", "full", "sliding", "full"]
    assert g3["attn_scale"] == 32 ** -0.5 and g3["embed_scale"] == 8.0


def test_every_supported_architecture_normalises():
    transformers = need("transformers")
    classes = {"llama": "LlamaConfig", "mistral": "MistralConfig", "qwen2": "Qwen2Config", "qwen3": "Qwen3Config",
               "gemma": "GemmaConfig", "gemma2": "Gemma2Config", "gemma3": "Gemma3TextConfig", "phi": "PhiConfig",
               "phi3": "Phi3Config", "stablelm": "StableLmConfig", "falcon": "FalconConfig", "gpt2": "GPT2Config",
               "smollm3": "SmolLM3Config", "mixtral": "MixtralConfig", "qwen3_moe": "Qwen3MoeConfig"}
    for hf_arch, arch in SUPPORTED.items():
        d = getattr(transformers, classes[arch.family])().to_dict()
        d["architectures"] = [hf_arch]
        cfg = normalize_config(d)
        assert cfg["architecture"] == arch.family
        assert expected_tensors(cfg)[0] == "embed.weight"


def test_every_family_has_a_complete_trait_row():
    """One row per supported family, every trait stated: no field of ``Family`` has a default."""
    assert {a.family for a in SUPPORTED.values()} == set(FAMILIES)
    fields = dataclasses.fields(Family)
    assert [f.name for f in fields if f.default is not dataclasses.MISSING
            or f.default_factory is not dataclasses.MISSING] == []
    for family, row in FAMILIES.items():
        assert isinstance(row, Family), family
        for f in fields:
            value = getattr(row, f.name)
            if f.name.endswith("_keys"):
                assert isinstance(value, tuple) and value and all(isinstance(k, str) for k in value), (family, f.name)
            if callable(value):  # hooks are named functions, so a reader can find them
                assert value.__name__ != "<lambda>", (family, f.name)
        assert row.norm_type in ("rmsnorm", "layernorm"), family
        assert row.position in ("rope", "learned"), family
        assert row.qk_norm in (None, "rmsnorm", "layernorm", "layernorm_per_head"), family
        assert (row.qk_norm is None) == (row.qk_norm_when is False), family
        assert row.sliding_window_switch is None or row.sliding_layers is not None, family
        for flag in ("qk_norm_when", "qkv_bias", "o_bias", "mlp_bias", "parallel_block", "parallel_mlp_norm"):
            assert isinstance(getattr(row, flag), (bool, str)) or callable(getattr(row, flag)), (family, flag)


# -- errors ---------------------------------------------------------------------------------------


def test_unknown_architecture_names_it_and_lists_the_supported_ones():
    with pytest.raises(ConvertError) as e:
        normalize_config({"architectures": ["BertForMaskedLM"]}, file="m/config.json")
    msg = str(e.value)
    assert msg.startswith("m/config.json: architectures: unsupported architecture 'BertForMaskedLM'; supported: ")
    for name in SUPPORTED:
        assert name in msg


def test_missing_architectures_list():
    with pytest.raises(ConvertError, match=r"^config.json: architectures: no 'architectures' list: "
                                           r"cannot tell the model family \(supported: LlamaForCausalLM, "):
        normalize_config({"model_type": "llama"})


def test_missing_required_key():
    d = dict(_SMALL, architectures=["LlamaForCausalLM"])
    del d["hidden_size"]
    with pytest.raises(ConvertError) as e:
        normalize_config(d)
    assert str(e.value) == "config.json: hidden_size: missing required key (one of hidden_size)"


@pytest.mark.parametrize("change, message", [
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}},
     "config.json: rope_scaling: unsupported RoPE scaling type 'yarn' (supported: default, linear, llama3)"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}},
     "config.json: rope_scaling: llama3 RoPE scaling lacks 'low_freq_factor'"),
    ({"hidden_act": "relu"}, "config.json: hidden_act: unsupported activation 'relu' (supported: "),
    ({"num_key_value_heads": 3}, "config.json: num_key_value_heads: 4 heads is not a multiple of 3 kv heads"),
])
def test_bad_llama_config_values(change, message):
    with pytest.raises(ConvertError) as e:
        normalize_config(dict(_SMALL, architectures=["LlamaForCausalLM"], **change))
    assert str(e.value).startswith(message)


def test_falcon_alibi_is_refused():
    with pytest.raises(ConvertError) as e:
        normalize_config({"architectures": ["FalconForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
                          "num_hidden_layers": 2, "vocab_size": 10, "alibi": True})
    assert str(e.value) == "config.json: alibi: Falcon with ALiBi positions is not supported (only rotary)"


def test_unexpected_tensor_is_named():
    cfg = normalize_config(dict(_SMALL, architectures=["LlamaForCausalLM"]))
    with pytest.raises(ConvertError) as e:
        canonical_tensors("model.layers.0.self_attn.rotary_proj.weight", np.zeros((2, 2)), cfg)
    assert str(e.value) == ("model.layers.0.self_attn.rotary_proj.weight: unexpected tensor "
                            "'model.layers.0.self_attn.rotary_proj.weight' for a LlamaForCausalLM model")
    with pytest.raises(ConvertError, match="is for layer 7, but the model has 4 layers"):
        canonical_tensors("model.layers.7.input_layernorm.weight", np.zeros(64), cfg)


def test_buffers_and_tied_heads_are_dropped():
    cfg = normalize_config(dict(_SMALL, architectures=["LlamaForCausalLM"], tie_word_embeddings=True))
    assert canonical_tensors("model.layers.0.self_attn.rotary_emb.inv_freq", np.zeros(8), cfg) == []
    assert canonical_tensors("lm_head.weight", np.zeros((100, 64)), cfg) == []


def test_gemma_norms_get_one_added_exactly_once():
    cfg = normalize_config(dict(_SMALL, architectures=["GemmaForCausalLM"], head_dim=16))
    [(name, w)] = canonical_tensors("model.layers.1.post_attention_layernorm.weight", np.full(64, 0.25), cfg)
    assert name == "layers.1.mlp_norm.weight"  # Gemma 1 has no sandwich norms
    assert np.all(w == 1.25)
    [(name, w)] = canonical_tensors("model.norm.weight", np.zeros(64, np.float32), cfg)
    assert name == "final_norm.weight" and np.all(w == 1.0)


def test_stablelm_per_head_norms_are_stacked_in_order():
    cfg = normalize_config(dict(_SMALL, architectures=["StableLmForCausalLM"], qk_layernorm=True))
    parts = {}
    for h in (1, 0, 3, 2):
        [(name, w)] = canonical_tensors(f"model.layers.0.self_attn.q_layernorm.norms.{h}.weight",
                                        np.full(16, float(h)), cfg)
        parts[name] = w
    stacked = stack_parts(parts)["layers.0.attn.q_norm.weight"]
    assert stacked.shape == (4, 16) and list(stacked[:, 0]) == [0.0, 1.0, 2.0, 3.0]
    del parts["layers.0.attn.q_norm.weight@2"]
    with pytest.raises(ConvertError, match=r"tensor 'layers.0.attn.q_norm.weight': rows \[0, 1, 3\] are not 0..2"):
        stack_parts(parts)


# -- issue 12: NoPE layers and mixture-of-experts ---------------------------------------------------


def test_smollm3_nope_layers_from_the_list_or_the_interval():
    assert normalize_config(LEGACY["smollm3"][1])["nope_layers"] == [3]
    by_interval = normalize_config(dict(_SMALL, architectures=["SmolLM3ForCausalLM"], num_hidden_layers=8,
                                        no_rope_layer_interval=4, use_sliding_window=True, sliding_window=16))
    assert by_interval["nope_layers"] == [3, 7]
    # SmolLM3Config without layer_types: the NoPE layers are the sliding ones
    assert by_interval["layer_types"] == ["full"] * 3 + ["sliding"] + ["full"] * 3 + ["sliding"]
    with pytest.raises(ConvertError) as e:
        normalize_config(dict(LEGACY["smollm3"][1], no_rope_layers=[1, 0]))
    assert str(e.value) == "config.json: no_rope_layers: expected at least 4 entries of 0 (NoPE) or 1 (RoPE)"


def test_moe_layers_follow_mlp_only_layers_and_decoder_sparse_step():
    q = normalize_config(LEGACY["qwen3_moe"][1])
    assert q["moe"] == {"num_experts": 8, "top_k": 2, "norm_topk_prob": True, "intermediate_size": 32,
                        "layers": [1, 3]}
    names = expected_tensors(q)
    assert "layers.0.mlp.gate.weight" in names and "layers.1.mlp.gate.weight" not in names
    assert "layers.1.mlp.experts.down.weight" in names and "layers.1.mlp.router.weight" in names
    m = normalize_config(LEGACY["mixtral"][1])
    assert m["moe"]["layers"] == [0, 1, 2, 3] and m["moe"]["norm_topk_prob"] is True
    assert normalize_config(LEGACY["llama3.2"][1])["moe"] is None
    with pytest.raises(ConvertError) as e:
        normalize_config(dict(LEGACY["mixtral"][1], num_experts_per_tok=9))
    assert str(e.value) == "config.json: num_experts_per_tok: must be in [1, 8] (the number of experts), got 9"


def test_experts_are_stacked_and_an_expert_on_a_dense_layer_is_named():
    cfg = normalize_config(LEGACY["mixtral"][1])
    parts = {}
    for e in (2, 0, 1, 3, 4, 5, 6, 7):
        for w, proj in (("w1", "gate"), ("w2", "down"), ("w3", "up")):
            shape = (64, 128) if w == "w2" else (128, 64)
            [(name, a)] = canonical_tensors(f"model.layers.1.block_sparse_moe.experts.{e}.{w}.weight",
                                            np.full(shape, float(e)), cfg)
            assert name == f"layers.1.mlp.experts.{proj}.weight@{e}"
            parts[name] = a
    stacked = stack_parts(parts)
    assert stacked["layers.1.mlp.experts.gate.weight"].shape == (8, 128, 64)
    assert stacked["layers.1.mlp.experts.down.weight"].shape == (8, 64, 128)
    assert list(stacked["layers.1.mlp.experts.up.weight"][:, 0, 0]) == [float(e) for e in range(8)]
    assert canonical_tensors("model.layers.1.block_sparse_moe.gate.weight", np.zeros((8, 64)), cfg)[0][0] == \
        "layers.1.mlp.router.weight"
    q = normalize_config(LEGACY["qwen3_moe"][1])
    with pytest.raises(ConvertError) as e:
        canonical_tensors("model.layers.0.mlp.experts.3.up_proj.weight", np.zeros((32, 64)), q)
    assert str(e.value) == ("model.layers.0.mlp.experts.3.up_proj.weight: tensor "
                            "'model.layers.0.mlp.experts.3.up_proj.weight' is an expert of layer 0, which the config "
                            "makes a dense layer (see mlp_only_layers / decoder_sparse_step / num_experts)")
    # transformers 5's in-memory form: all experts of a projection in one parameter
    fused = canonical_tensors("model.layers.1.mlp.experts.gate_up_proj", np.arange(8 * 64 * 64.0).reshape(8, 64, 64), q)
    assert [(n, a.shape) for n, a in fused] == [("layers.1.mlp.experts.gate.weight", (8, 32, 64)),
                                                ("layers.1.mlp.experts.up.weight", (8, 32, 64))]
