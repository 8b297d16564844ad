"""The one table of per-architecture facts (issue 3, item 5).

Everything that differs between model families lives here, as data and a few small functions:

- ``normalize_config`` turns a Hugging Face ``config.json`` (old keys such as ``rope_theta`` /
  ``rope_scaling`` or transformers 5's ``rope_parameters``) into the normalised config of
  ``docs/internals.md``; the runtime and ``sitegen.reference`` read only that.
- ``canonical_tensors`` maps one checkpoint tensor (HF naming) to canonical tensors: fused qkv and
  gate_up are split, GPT-2's Conv1D weights are transposed to ``[out, in]``, Gemma's ``1 + w`` norm
  weights become effective multipliers (added here, exactly once), buffers are dropped.
- ``expected_tensors`` lists the canonical names a converted model must have, so a converter can
  report a missing or stray tensor by name.

One source tensor can only be part of a canonical one in a single case: StableLM's per-head q/k
LayerNorms (``...q_layernorm.norms.{h}.weight``). ``canonical_tensors`` returns those as
``name@h`` parts; ``stack_parts`` (or ``canonical_state_dict``, which does everything) joins them.

The facts are one ``Family`` row per family in ``FAMILIES`` (issue 10 item 5): key names, norm
type, biases, block layout, sliding-window rule, embedding scale and so on, as data. What does not
fit the data is a small named hook in the row (Falcon's kv heads, block and fused-qkv layout,
GPT-2's config checks and Conv1D transposes, Gemma's "gelu" meaning tanh, Gemma 3's legacy local
RoPE base, the per-family rule for which layers slide). Adding a family is one ``SUPPORTED`` entry,
one ``FAMILIES`` row with every field given (``Family`` has no defaults) and any hooks it needs;
``normalize_config`` and ``canonical_tensors`` never name a family. Tensor *names* (``_LAYER_RENAMES``,
the fused qkv / gate_up splits, StableLM's per-head norm rows) are keyed by the HF name, not by
family, because one HF name means the same thing in every family that has it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Union

import numpy as np

from sitegen.errors import ConvertError

__all__ = [
    "SUPPORTED",
    "Family",
    "FAMILIES",
    "normalize_config",
    "canonical_tensors",
    "expected_tensors",
    "stack_parts",
    "expected_parts",
    "canonical_state_dict",
]


@dataclass(frozen=True)
class Arch:
    """One supported Hugging Face architecture: the family it belongs to and how it is described."""

    family: str
    description: str


SUPPORTED: dict[str, Arch] = {
    "LlamaForCausalLM": Arch("llama", "Llama 2/3/3.x (llama3 RoPE scaling), SmolLM, TinyLlama"),
    "MistralForCausalLM": Arch("mistral", "Mistral (sliding-window attention)"),
    "Qwen2ForCausalLM": Arch("qwen2", "Qwen2 / Qwen2.5 (q/k/v biases)"),
    "Qwen3ForCausalLM": Arch("qwen3", "Qwen3 (q/k RMSNorm)"),
    "GemmaForCausalLM": Arch("gemma", "Gemma (1+w RMSNorm, scaled embeddings, tanh GELU)"),
    "Gemma2ForCausalLM": Arch("gemma2", "Gemma 2 (sandwich norms, soft-capping, local/global attention)"),
    "Gemma3ForCausalLM": Arch("gemma3", "Gemma 3 text (q/k norms, per-layer RoPE base)"),
    "PhiForCausalLM": Arch("phi", "Phi-1/1.5/2 (parallel block, partial rotary, biases)"),
    "Phi3ForCausalLM": Arch("phi3", "Phi-3 / Phi-4-mini (fused qkv and gate_up)"),
    "StableLmForCausalLM": Arch("stablelm", "StableLM 2 / 3B-4E1T (LayerNorm, partial rotary)"),
    "FalconForCausalLM": Arch("falcon", "Falcon (fused multi-query QKV, parallel attention)"),
    "GPT2LMHeadModel": Arch("gpt2", "GPT-2 (learned positions, Conv1D weights)"),
    "SmolLM3ForCausalLM": Arch("smollm3", "SmolLM3 (NoPE layers: no RoPE on every 4th layer)"),
    "MixtralForCausalLM": Arch("mixtral", "Mixtral (sparse mixture-of-experts MLPs, top-k routing)"),
    "Qwen3MoeForCausalLM": Arch("qwen3_moe", "Qwen3-MoE (mixture-of-experts with dense mlp_only_layers)"),
}

# HF activation names → ours. gelu_new / gelu_pytorch_tanh / gelu_fast are the tanh approximation.
_ACTIVATIONS = {
    "silu": "silu", "swish": "silu",
    "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "gelu_fast": "gelu_tanh",
    "gelu": "gelu",
}
_MISSING = object()


# --------------------------------------------------------------------------------------------
# the family table

# A yes/no trait: a constant, the name of a config.json key read as a boolean (absent: False), or,
# for an irregular family, a named function of the config.json dict.
Flag = Union[bool, str, Callable[[dict], bool]]


@dataclass(frozen=True)
class Family:
    """Everything ``normalize_config`` and ``canonical_tensors`` need to know about one family.

    No field has a default: a new row must state every trait (``tests/test_architectures.py``
    checks it). Hooks are named functions, used only where a family does not fit the data.
    """

    # config.json key names (the first one present wins) and what an absent key means
    hidden_keys: tuple[str, ...]
    heads_keys: tuple[str, ...]
    layers_keys: tuple[str, ...]
    intermediate_keys: tuple[str, ...]
    intermediate_default_ratio: int | None  # intermediate = ratio × hidden when absent; None: required
    max_positions_keys: tuple[str, ...]
    max_positions_default: int | None  # None: required
    kv_heads: str | Callable[[_Reader, int], int] | None  # key (absent: = heads), hook, None: = heads
    check: Callable[[_Reader], None] | None  # refuses config values we cannot run
    heads_divide_hidden: bool  # hidden_size must be a multiple of the heads (no head_dim key in HF)
    # normalisation
    norm_type: str  # "rmsnorm" | "layernorm"
    norm_plus_one: bool  # the checkpoint stores w and the norm multiplies by 1 + w (Gemma)
    sandwich_norm: bool  # norms on the attention and MLP outputs; HF's post_attention_layernorm is
    #                      then the one on the attention output, otherwise the pre-MLP norm
    qk_norm: str | None  # "rmsnorm" | "layernorm" | "layernorm_per_head" | None
    qk_norm_when: Flag  # whether qk_norm applies
    # MLP
    default_activation: str  # transformers' per-class default when config.json names none
    activation_hook: Callable[[str, dict], str] | None  # rewrites the HF activation name
    mlp_gated: bool
    # biases
    qkv_bias: Flag
    o_bias: Flag
    mlp_bias: Flag
    lm_head_bias: bool
    # positions
    position: str  # "rope" | "learned"
    default_rope_theta: float  # legacy config.json without rope_theta
    local_rope_base: Callable[[dict], float] | None  # legacy key of the sliding layers' RoPE base
    # block layout
    parallel_block: Flag  # attention and MLP both read the block input
    parallel_mlp_norm: Flag  # a parallel block that still has its own MLP norm
    fused_qkv_layout: Callable[[dict, int], str | None] | None  # (config.json, kv heads) → layout
    # attention
    attn_scale_key: str | None  # key whose value^-0.5 scales the scores (absent: head_dim)
    sliding_layers: Callable[[_Reader, int], list[str]] | None  # None: no sliding window
    sliding_window_switch: str | None  # key that must be true for sliding_window to count
    softcaps: bool  # reads attn_logit_softcapping / final_logit_softcapping
    # embeddings and head
    scale_embeddings: bool  # embeddings × sqrt(hidden)
    tie_default: bool  # tie_word_embeddings when config.json leaves it out
    tensor_hook: Callable[[str, str, np.ndarray], np.ndarray] | None  # (part, kind, array) per layer
    # issue 12: layers without RoPE (SmolLM3's NoPE layers) and mixture-of-experts MLPs
    nope_layers: Callable[[_Reader, int], list[int]] | None  # None: every layer rotates
    moe: Callable[[_Reader, int], dict | None] | None  # the config's "moe" (None: dense MLPs only)


def _flag(cfg: dict, flag: Any) -> bool:
    if isinstance(flag, bool):
        return flag
    if isinstance(flag, str):
        return bool(cfg.get(flag, False))
    return bool(flag(cfg))


# -- hooks for the irregular cases ------------------------------------------------------------


def _gpt2_check(r: _Reader) -> None:
    if r.cfg.get("scale_attn_by_inverse_layer_idx"):
        raise r.error("scale_attn_by_inverse_layer_idx", "not supported (set it to false)")
    if r.cfg.get("scale_attn_weights") is False:
        raise r.error("scale_attn_weights", "unscaled attention is not supported")


def _gpt2_conv1d_to_linear(part: str, kind: str, array: np.ndarray) -> np.ndarray:
    """GPT-2's Conv1D stores weights as [in, out]; ours are [out, in]."""
    if kind == "weight" and part in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
        return array.T
    return array


def _falcon_check(r: _Reader) -> None:
    if r.cfg.get("alibi"):
        raise r.error("alibi", "Falcon with ALiBi positions is not supported (only rotary)")


def _falcon_kv_heads(r: _Reader, heads: int) -> int:
    if r.cfg.get("new_decoder_architecture"):
        return int(r.get("num_kv_heads"))
    if r.cfg.get("multi_query", True):
        return 1
    return int(r.get("num_kv_heads", default=heads))


def _falcon_parallel(cfg: dict) -> bool:
    return bool(cfg.get("new_decoder_architecture", False)) or bool(cfg.get("parallel_attn", True))


def _falcon_two_norms(cfg: dict) -> bool:
    """new_decoder_architecture with ln_attn and ln_mlp (Falcon 40B/180B) rather than one shared norm."""
    return bool(cfg.get("new_decoder_architecture", False)) and (cfg.get("num_ln_in_parallel_attn") or 2) == 2


def _falcon_qkv_layout(cfg: dict, kv_heads: int) -> str:
    if cfg.get("new_decoder_architecture", False):
        return "grouped"
    return "multi_query" if kv_heads == 1 else "interleaved"


def _gemma_gelu_is_tanh(act_name: str, cfg: dict) -> str:
    # Early Gemma configs say "gelu" but the model was trained with the tanh approximation
    # (transformers 4.38–4.4x overrode it the same way); issue 3 item 5: "tanh-GELU".
    if act_name == "gelu" and not cfg.get("hidden_activation"):
        return "gelu_pytorch_tanh"
    return act_name


def _gemma3_local_rope_base(cfg: dict) -> float:
    return float(cfg.get("rope_local_base_freq", 10000.0))


# Which layers slide when there is a window and config.json has no layer_types.
def _all_sliding(r: _Reader, n: int) -> list[str]:  # Mistral, Phi-3
    return ["sliding"] * n


def _even_layers_sliding(r: _Reader, n: int) -> list[str]:  # Gemma 2: local, global, local, ...
    return ["sliding" if (i + 1) % 2 else "full" for i in range(n)]


def _every_nth_layer_full(r: _Reader, n: int) -> list[str]:  # Gemma 3: one global layer in `pattern`
    pattern = int(r.get("sliding_window_pattern", "_sliding_window_pattern", default=6))
    return ["sliding" if (i + 1) % pattern else "full" for i in range(n)]


def _sliding_from_max_window_layers(r: _Reader, n: int) -> list[str]:  # Qwen2/3
    first = int(r.get("max_window_layers", default=n))
    return ["sliding" if i >= first else "full" for i in range(n)]


def _smollm3_nope_layers(r: _Reader, n: int) -> list[int]:
    """SmolLM3Config: ``no_rope_layers[i]`` is 1 where layer i uses RoPE; absent, every
    ``no_rope_layer_interval``-th layer (1-based) skips it: ``(i + 1) % interval != 0`` rotates."""
    given = r.cfg.get("no_rope_layers")
    if given is not None:
        if len(given) < n or any(v not in (0, 1, True, False) for v in given):
            raise r.error("no_rope_layers", f"expected at least {n} entries of 0 (NoPE) or 1 (RoPE)")
        return [i for i in range(n) if not given[i]]
    interval = int(r.get("no_rope_layer_interval", default=4))
    if interval < 1:
        raise r.error("no_rope_layer_interval", f"must be a positive integer, got {interval}")
    return [i for i in range(n) if (i + 1) % interval == 0]


def _smollm3_nope_layers_slide(r: _Reader, n: int) -> list[str]:
    # SmolLM3Config without layer_types: the NoPE layers slide when use_sliding_window is set.
    nope = set(_smollm3_nope_layers(r, n))
    return ["sliding" if i in nope else "full" for i in range(n)]


def _moe_row(r: _Reader, n: int, *, experts: int, top_k: int, inter: int, norm_topk: bool,
             layers: list[int]) -> dict | None:
    if experts <= 0 or not layers:
        return None
    if not 1 <= top_k <= experts:
        raise r.error("num_experts_per_tok", f"must be in [1, {experts}] (the number of experts), got {top_k}")
    return {"num_experts": experts, "top_k": top_k, "norm_topk_prob": norm_topk,
            "intermediate_size": inter, "layers": layers}


def _mixtral_moe(r: _Reader, n: int) -> dict | None:
    """MixtralSparseMoeBlock on every layer; MixtralTopKRouter always renormalises the top-k."""
    return _moe_row(r, n, experts=int(r.get("num_local_experts", "num_experts")),
                    top_k=int(r.get("num_experts_per_tok", default=2)),
                    inter=int(r.get("intermediate_size")), norm_topk=True, layers=list(range(n)))


def _qwen3_moe(r: _Reader, n: int) -> dict | None:
    """Qwen3MoeDecoderLayer: sparse where ``i not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0``;
    the other layers have a dense MLP of ``intermediate_size``."""
    only = r.cfg.get("mlp_only_layers") or []
    step = int(r.get("decoder_sparse_step", default=1))
    if step < 1:
        raise r.error("decoder_sparse_step", f"must be a positive integer, got {step}")
    return _moe_row(r, n, experts=int(r.get("num_experts", "num_local_experts")),
                    top_k=int(r.get("num_experts_per_tok", default=8)),
                    inter=int(r.get("moe_intermediate_size")), norm_topk=bool(r.cfg.get("norm_topk_prob", False)),
                    layers=[i for i in range(n) if i not in only and (i + 1) % step == 0])


# -- the rows -----------------------------------------------------------------------------------
# One row per family, every trait spelled out (no row is derived from another, so a new family
# cannot inherit a trait by accident). Fields are in the order of ``Family``.

FAMILIES: dict[str, Family] = {
    "llama": Family(
        hidden_keys=("hidden_size",), heads_keys=("num_attention_heads",), layers_keys=("num_hidden_layers",),
        intermediate_keys=("intermediate_size",), intermediate_default_ratio=None,
        max_positions_keys=("max_position_embeddings",), max_positions_default=2048,
        kv_heads="num_key_value_heads", check=None, heads_divide_hidden=False,
        norm_type="rmsnorm", norm_plus_one=False, sandwich_norm=False, qk_norm=None, qk_norm_when=False,
        default_activation="silu", activation_hook=None, mlp_gated=True,
        qkv_bias="attention_bias", o_bias="attention_bias", mlp_bias="mlp_bias", lm_head_bias=False,
        position="rope", default_rope_theta=10000.0, local_rope_base=None,
        parallel_block=False, parallel_mlp_norm=False, fused_qkv_layout=None,
        attn_scale_key=None, sliding_layers=None, sliding_window_switch=None, softcaps=False,
        scale_embeddings=False, tie_default=False, tensor_hook=None,
        nope_layers=None, moe=None,
    ),
    "mistral": Family(
        hidden_keys=("hidden_size",), heads_keys=("num_attention_heads",), layers_keys=("num_hidden_layers",),
        intermediate_keys=("intermediate_size",), intermediate_default_ratio=None,
        max_positions_keys=("max_position_embeddings",), max_positions_default=2048,
        kv_heads="num_key_value_heads", check=None, heads_divide_hidden=False,
        norm_type="rmsnorm", norm_plus_one=False, sandwich_norm=False, qk_norm=None, qk_norm_when=False,
        default_activation="silu", activation_hook=None, mlp_gated=True,
        qkv_bias="attention_bias", o_bias="attention_bias", mlp_bias="mlp_bias", lm_head_bias=False,
        position="rope", default_rope_theta=10000.0, local_rope_base=None,
        parallel_block=False, parallel_mlp_norm=False, fused_qkv_layout=None,
        attn_scale_key=None, sliding_layers=_all_sliding, sliding_window_switch=None, softcaps=False,
        scale_embeddings=False, tie_default=False, tensor_hook=None,
        nope_layers=None, moe=None,
    ),
    "qwen2": Family(
        hidden_keys=("hidden_size",), heads_keys=("num_attention_heads",), layers_keys=("num_hidden_layers",),
        intermediate_keys=("intermediate_size",), intermediate_default_ratio=None,
        max_positions_keys=("max_position_embeddings",), max_positions_default=2048,
        kv_heads="num_key_value_heads", check=None, heads_divide_hidden=True,
        norm_type="rmsnorm", norm_plus_one=False, sandwich_norm=False, qk_norm=None, qk_norm_when=False,
        default_activation="silu", activation_hook=None, mlp_gated=True,
        qkv_bias=True, o_bias=False, mlp_bias=False, lm_head_bias=False,
        position="rope", default_rope_theta=10000.0, local_rope_base=None,
        parallel_block=False, parallel_mlp_norm=False, fused_qkv_layout=None,
        attn_scale_key=None, sliding_layers=_sliding_from_max_window_layers,
        sliding_window_switch="use_sliding_window", softcaps=False,
        scale_embeddings=False, tie_default=False, tensor_hook=None,
        nope_layers=None, moe=None,
    ),
    "qwen3": Family(
        hidden_keys=("hidden_size",), heads_keys=("num_attention_heads",), layers_keys=("num_hidden_layers",),
        intermediate_keys=("intermediate_size",), intermediate_default_ratio=None,
        max_positions_keys=("max_position_embeddings",), max_positions_default=2048,
        kv_heads="num_key_value_heads", check=None, heads_divide_hidden=False,
        norm_type="rmsnorm", norm_plus_one=False, sandwich_norm=False, qk_norm="rmsnorm", qk_norm_when=True,
        default_activation="silu", activation_hook=None, mlp_gated=True,
        qkv_bias="attention_bias", o_bias="attention_bias", mlp_bias="mlp_bias", lm_head_bias=False,
        position="rope", default_rope_theta=10000.0, local_rope_base=None,
        parallel_block=False, parallel_mlp_norm=False, fused_qkv_layout=None,
        attn_scale_key=None, sliding_layers=_sliding_from_max_window_layers,
        sliding_window_switch="use_sliding_window", softcaps=False,
        scale_embeddings=False, tie_default=False, tensor_hook=None,
        nope_layers=None, moe=None,
    ),
    "gemma": Family(
        hidden_keys=("hidden_size",), heads_keys=("num_attention_heads",), layers_keys=("num_hidden_layers",),
        intermediate_keys=("intermediate_size",), intermediate_default_ratio=None,
        max_positions_keys=("max_position_embeddings",), max_positions_default=2048,
        kv_heads="num_key_value_heads", check=None, heads_divide_hidden=False,
        norm_type="rmsnorm", norm_plus_one=True, sandwich_norm=False, qk_norm=None, qk_norm_when=False,
        default_activation="gelu_pytorch_tanh", activation_hook=_gemma_gelu_is_tanh, mlp_gated=True,
        qkv_bias="attention_bias", o_bias="attention_bias", mlp_bias="mlp_bias", lm_head_bias=False,
        position="rope", default_rope_theta=10000.0, local_rope_base=None,
        parallel_block=False, parallel_mlp_norm=False, fused_qkv_layout=None,
        attn_scale_key=None, sliding_layers=None, sliding_window_switch=None, softcaps=True,
        scale_embeddings=True, tie_default=True, tensor_hook=None,
        nope_layers=None, moe=None,
    ),
    "gemma2": Family(
        hidden_keys=("hidden_size",), heads_keys=("num_attention_heads",), layers_keys=("num_hidden_layers",),
        intermediate_keys=("intermediate_size",), intermediate_default_ratio=None,
        max_positions_keys=("max_position_embeddings",), max_positions_default=2048,
        kv_heads="num_key_value_heads", check=None, heads_divide_hidden=False,
        norm_type="rmsnorm", norm_plus_one=True, sandwich_norm=True, qk_norm=None, qk_norm_when=False,
        default_activation="gelu_pytorch_tanh", activation_hook=None, mlp_gated=True,
        qkv_bias="attention_bias", o_bias="attention_bias", mlp_bias="mlp_bias", lm_head_bias=False,
        position="rope", default_rope_theta=10000.0, local_rope_base=None,
        parallel_block=False, parallel_mlp_norm=False, fused_qkv_layout=None,
        attn_scale_key="query_pre_attn_scalar", sliding_layers=_even_layers_sliding,
        sliding_window_switch=None, softcaps=True,
        scale_embeddings=True, tie_default=True, tensor_hook=None,
        nope_layers=None, moe=None,
    ),
    "gemma3": Family(
        hidden_keys=("hidden_size",), heads_keys=("num_attention_heads",), layers_keys=("num_hidden_layers",),
        intermediate_keys=("intermediate_size",), intermediate_default_ratio=None,
        max_positions_keys=("max_position_embeddings",), max_positions_default=2048,
        kv_heads="num_key_value_heads", check=None, heads_divide_hidden=False,
        norm_type="rmsnorm", norm_plus_one=True, sandwich_norm=True, qk_norm="rmsnorm", qk_norm_when=True,
        default_activation="gelu_pytorch_tanh", activation_hook=None, mlp_gated=True,
        qkv_bias="attention_bias", o_bias="attention_bias", mlp_bias="mlp_bias", lm_head_bias=False,
        position="rope", default_rope_theta=1_000_000.0, local_rope_base=_gemma3_local_rope_base,
        parallel_block=False, parallel_mlp_norm=False, fused_qkv_layout=None,
        attn_scale_key="query_pre_attn_scalar", sliding_layers=_every_nth_layer_full,
        sliding_window_switch=None, softcaps=True,
        scale_embeddings=True, tie_default=True, tensor_hook=None,
        nope_layers=None, moe=None,
    ),
    "phi": Family(
        hidden_keys=("hidden_size",), heads_keys=("num_attention_heads",), layers_keys=("num_hidden_layers",),
        intermediate_keys=("intermediate_size",), intermediate_default_ratio=None,
        max_positions_keys=("max_position_embeddings",), max_positions_default=2048,
        kv_heads="num_key_value_heads", check=None, heads_divide_hidden=True,
        norm_type="layernorm", norm_plus_one=False,
        sandwich_norm=False, qk_norm="layernorm", qk_norm_when="qk_layernorm",
        default_activation="gelu_new", activation_hook=None, mlp_gated=False,
        qkv_bias=True, o_bias=True, mlp_bias=True, lm_head_bias=True,
        position="rope", default_rope_theta=10000.0, local_rope_base=None,
        parallel_block=True, parallel_mlp_norm=False, fused_qkv_layout=None,
        attn_scale_key=None, sliding_layers=None, sliding_window_switch=None, softcaps=False,
        scale_embeddings=False, tie_default=False, tensor_hook=None,
        nope_layers=None, moe=None,
    ),
    "phi3": Family(
        hidden_keys=("hidden_size",), heads_keys=("num_attention_heads",), layers_keys=("num_hidden_layers",),
        intermediate_keys=("intermediate_size",), intermediate_default_ratio=None,
        max_positions_keys=("max_position_embeddings",), max_positions_default=2048,
        kv_heads="num_key_value_heads", check=None, heads_divide_hidden=True,
        norm_type="rmsnorm", norm_plus_one=False, sandwich_norm=False, qk_norm=None, qk_norm_when=False,
        default_activation="silu", activation_hook=None, mlp_gated=True,
        qkv_bias=False, o_bias=False, mlp_bias=False, lm_head_bias=False,
        position="rope", default_rope_theta=10000.0, local_rope_base=None,
        parallel_block=False, parallel_mlp_norm=False, fused_qkv_layout=None,
        attn_scale_key=None, sliding_layers=_all_sliding, sliding_window_switch=None, softcaps=False,
        scale_embeddings=False, tie_default=False, tensor_hook=None,
        nope_layers=None, moe=None,
    ),
    "stablelm": Family(
        hidden_keys=("hidden_size",), heads_keys=("num_attention_heads",), layers_keys=("num_hidden_layers",),
        intermediate_keys=("intermediate_size",), intermediate_default_ratio=None,
        max_positions_keys=("max_position_embeddings",), max_positions_default=2048,
        kv_heads="num_key_value_heads", check=None, heads_divide_hidden=True,
        norm_type="layernorm", norm_plus_one=False,
        sandwich_norm=False, qk_norm="layernorm_per_head", qk_norm_when="qk_layernorm",
        default_activation="silu", activation_hook=None, mlp_gated=True,
        qkv_bias="use_qkv_bias", o_bias=False, mlp_bias=False, lm_head_bias=False,
        position="rope", default_rope_theta=10000.0, local_rope_base=None,
        parallel_block="use_parallel_residual", parallel_mlp_norm=False, fused_qkv_layout=None,
        attn_scale_key=None, sliding_layers=None, sliding_window_switch=None, softcaps=False,
        scale_embeddings=False, tie_default=False, tensor_hook=None,
        nope_layers=None, moe=None,
    ),
    "falcon": Family(
        hidden_keys=("hidden_size",),
        heads_keys=("num_attention_heads", "n_head"), layers_keys=("num_hidden_layers", "n_layer"),
        intermediate_keys=("ffn_hidden_size",), intermediate_default_ratio=4,
        max_positions_keys=("max_position_embeddings",), max_positions_default=2048,
        kv_heads=_falcon_kv_heads, check=_falcon_check, heads_divide_hidden=True,
        norm_type="layernorm", norm_plus_one=False, sandwich_norm=False, qk_norm=None, qk_norm_when=False,
        default_activation="gelu", activation_hook=None, mlp_gated=False,
        qkv_bias="bias", o_bias="bias", mlp_bias="bias", lm_head_bias=False,
        position="rope", default_rope_theta=10000.0, local_rope_base=None,
        parallel_block=_falcon_parallel, parallel_mlp_norm=_falcon_two_norms, fused_qkv_layout=_falcon_qkv_layout,
        attn_scale_key=None, sliding_layers=None, sliding_window_switch=None, softcaps=False,
        scale_embeddings=False, tie_default=True, tensor_hook=None,
        nope_layers=None, moe=None,
    ),
    "gpt2": Family(
        hidden_keys=("n_embd", "hidden_size"),
        heads_keys=("n_head", "num_attention_heads"), layers_keys=("n_layer", "num_hidden_layers"),
        intermediate_keys=("n_inner",), intermediate_default_ratio=4,
        max_positions_keys=("n_positions", "max_position_embeddings"), max_positions_default=None,
        kv_heads=None, check=_gpt2_check, heads_divide_hidden=True,
        norm_type="layernorm", norm_plus_one=False, sandwich_norm=False, qk_norm=None, qk_norm_when=False,
        default_activation="gelu_new", activation_hook=None, mlp_gated=False,
        qkv_bias=True, o_bias=True, mlp_bias=True, lm_head_bias=False,
        position="learned", default_rope_theta=10000.0, local_rope_base=None,
        parallel_block=False, parallel_mlp_norm=False, fused_qkv_layout=None,
        attn_scale_key=None, sliding_layers=None, sliding_window_switch=None, softcaps=False,
        scale_embeddings=False, tie_default=True, tensor_hook=_gpt2_conv1d_to_linear,
        nope_layers=None, moe=None,
    ),
    "smollm3": Family(
        hidden_keys=("hidden_size",), heads_keys=("num_attention_heads",), layers_keys=("num_hidden_layers",),
        intermediate_keys=("intermediate_size",), intermediate_default_ratio=None,
        max_positions_keys=("max_position_embeddings",), max_positions_default=32768,
        kv_heads="num_key_value_heads", check=None, heads_divide_hidden=False,
        norm_type="rmsnorm", norm_plus_one=False, sandwich_norm=False, qk_norm=None, qk_norm_when=False,
        default_activation="silu", activation_hook=None, mlp_gated=True,
        qkv_bias="attention_bias", o_bias="attention_bias", mlp_bias="mlp_bias", lm_head_bias=False,
        position="rope", default_rope_theta=2_000_000.0, local_rope_base=None,
        parallel_block=False, parallel_mlp_norm=False, fused_qkv_layout=None,
        attn_scale_key=None, sliding_layers=_smollm3_nope_layers_slide, sliding_window_switch="use_sliding_window",
        softcaps=False, scale_embeddings=False, tie_default=True, tensor_hook=None,
        nope_layers=_smollm3_nope_layers, moe=None,
    ),
    "mixtral": Family(
        hidden_keys=("hidden_size",), heads_keys=("num_attention_heads",), layers_keys=("num_hidden_layers",),
        intermediate_keys=("intermediate_size",), intermediate_default_ratio=None,
        max_positions_keys=("max_position_embeddings",), max_positions_default=4096 * 32,
        kv_heads="num_key_value_heads", check=None, heads_divide_hidden=False,
        norm_type="rmsnorm", norm_plus_one=False, sandwich_norm=False, qk_norm=None, qk_norm_when=False,
        default_activation="silu", activation_hook=None, mlp_gated=True,
        qkv_bias=False, o_bias=False, mlp_bias=False, lm_head_bias=False,
        position="rope", default_rope_theta=1_000_000.0, local_rope_base=None,
        parallel_block=False, parallel_mlp_norm=False, fused_qkv_layout=None,
        attn_scale_key=None, sliding_layers=_all_sliding, sliding_window_switch=None, softcaps=False,
        scale_embeddings=False, tie_default=False, tensor_hook=None,
        nope_layers=None, moe=_mixtral_moe,
    ),
    "qwen3_moe": Family(
        hidden_keys=("hidden_size",), heads_keys=("num_attention_heads",), layers_keys=("num_hidden_layers",),
        intermediate_keys=("intermediate_size",), intermediate_default_ratio=None,
        max_positions_keys=("max_position_embeddings",), max_positions_default=32768,
        kv_heads="num_key_value_heads", check=None, heads_divide_hidden=False,
        norm_type="rmsnorm", norm_plus_one=False, sandwich_norm=False, qk_norm="rmsnorm", qk_norm_when=True,
        default_activation="silu", activation_hook=None, mlp_gated=True,
        qkv_bias="attention_bias", o_bias="attention_bias", mlp_bias=False, lm_head_bias=False,
        position="rope", default_rope_theta=10000.0, local_rope_base=None,
        parallel_block=False, parallel_mlp_norm=False, fused_qkv_layout=None,
        attn_scale_key=None, sliding_layers=_all_sliding,  # Qwen3MoeAttention: every layer when use_sliding_window
        sliding_window_switch="use_sliding_window", softcaps=False,
        scale_embeddings=False, tie_default=False, tensor_hook=None,
        nope_layers=None, moe=_qwen3_moe,
    ),
}


# --------------------------------------------------------------------------------------------
# normalize_config


def _unsupported(name: str, file: str) -> ConvertError:
    listing = ", ".join(f"{k} ({v.description})" for k, v in SUPPORTED.items())
    return ConvertError(f"unsupported architecture {name!r}; supported: {listing}",
                        file=file, key="architectures")


def _family(hf_config: dict, file: str) -> tuple[str, str]:
    archs = hf_config.get("architectures")
    if not archs or not isinstance(archs, list):
        raise ConvertError("no 'architectures' list: cannot tell the model family "
                           f"(supported: {', '.join(SUPPORTED)})", file=file, key="architectures")
    name = archs[0]
    if name not in SUPPORTED:
        raise _unsupported(name, file)
    return name, SUPPORTED[name].family


class _Reader:
    """Reads keys of one config.json, naming the file and key on any error."""

    def __init__(self, cfg: dict, file: str):
        self.cfg, self.file = cfg, file

    def get(self, *keys: str, default: Any = _MISSING) -> Any:
        for key in keys:
            if self.cfg.get(key) is not None:
                return self.cfg[key]
        if default is _MISSING:
            raise ConvertError(f"missing required key (one of {', '.join(keys)})",
                               file=self.file, key=keys[0])
        return default

    def error(self, key: str, message: str) -> ConvertError:
        return ConvertError(message, file=self.file, key=key)


def _rope_scaling(params: dict | None, r: _Reader, key: str) -> dict | None:
    """HF rope parameters (``rope_type`` or legacy ``type``) → ours, or an error for types we lack."""
    if not params:
        return None
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        return None
    if kind == "linear":
        return {"type": "linear", "factor": float(params["factor"])}
    if kind == "llama3":
        try:
            return {"type": "llama3", "factor": float(params["factor"]),
                    "low_freq_factor": float(params["low_freq_factor"]),
                    "high_freq_factor": float(params["high_freq_factor"]),
                    "original_max_position_embeddings": int(params["original_max_position_embeddings"])}
        except KeyError as e:
            raise r.error(key, f"llama3 RoPE scaling lacks {e.args[0]!r}") from None
    raise r.error(key, f"unsupported RoPE scaling type {kind!r} (supported: default, linear, llama3)")


def _rope(r: _Reader, fam: Family) -> tuple[float, float | None, dict | None, float]:
    """(theta, local theta, scaling, partial_rotary_factor) from either config generation."""
    cfg = r.cfg
    params = cfg.get("rope_parameters")
    local_theta = None
    if isinstance(params, dict) and "full_attention" in params:
        # transformers 5, per layer type (Gemma 3): the sliding layers have their own base.
        glob, local = params["full_attention"], params.get("sliding_attention") or {}
        if _rope_scaling(local, r, "rope_parameters.sliding_attention"):
            raise r.error("rope_parameters.sliding_attention", "RoPE scaling on sliding layers is not supported")
        local_theta = float(local.get("rope_theta", 10000.0))
        key = "rope_parameters.full_attention"
    elif isinstance(params, dict):
        glob, key = params, "rope_parameters"
    else:
        glob = dict(cfg.get("rope_scaling") or {})
        glob["rope_theta"] = cfg.get("rope_theta", fam.default_rope_theta)
        key = "rope_scaling"
        if fam.local_rope_base is not None:
            local_theta = fam.local_rope_base(cfg)
    theta = float(glob.get("rope_theta", 10000.0))
    partial = float(glob.get("partial_rotary_factor", cfg.get("partial_rotary_factor") or 1.0))
    return theta, local_theta, _rope_scaling(glob, r, key), partial


def _layer_types(r: _Reader, fam: Family, n: int, window: int | None) -> list[str]:
    names = {"full_attention": "full", "sliding_attention": "sliding"}
    given = r.cfg.get("layer_types")
    if given is not None:
        if len(given) != n or any(t not in names for t in given):
            raise r.error("layer_types", f"expected {n} entries of full_attention|sliding_attention")
        types = [names[t] for t in given]
    elif window is None:
        types = ["full"] * n
    else:  # a window is only read for a family with a sliding_layers rule
        types = fam.sliding_layers(r, n)
    if window is None:
        types = ["full"] * n  # HF ignores layer_types without a window
    return types


def normalize_config(hf_config: dict, *, file: str = "config.json") -> dict:
    """A Hugging Face ``config.json`` (as a dict) → the normalised config of docs/internals.md."""
    hf_arch, family = _family(hf_config, file)
    fam = FAMILIES[family]
    r = _Reader(hf_config, file)
    cfg = hf_config

    hidden = int(r.get(*fam.hidden_keys))
    heads = int(r.get(*fam.heads_keys))
    layers = int(r.get(*fam.layers_keys))
    if fam.intermediate_default_ratio is None:
        inter = int(r.get(*fam.intermediate_keys))
    else:
        inter = int(r.get(*fam.intermediate_keys, default=fam.intermediate_default_ratio * hidden))
    if fam.max_positions_default is None:
        max_pos = int(r.get(*fam.max_positions_keys))
    else:
        max_pos = int(r.get(*fam.max_positions_keys, default=fam.max_positions_default))
    if fam.check is not None:
        fam.check(r)
    if fam.kv_heads is None:
        kv_heads = heads
    elif isinstance(fam.kv_heads, str):
        kv_heads = int(r.get(fam.kv_heads, default=heads))
    else:
        kv_heads = fam.kv_heads(r, heads)
    if hidden % heads and fam.heads_divide_hidden:
        raise r.error("num_attention_heads", f"hidden size {hidden} is not a multiple of {heads} heads")
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    if heads % kv_heads:
        raise r.error("num_key_value_heads", f"{heads} heads is not a multiple of {kv_heads} kv heads")

    act_name = r.get("hidden_activation", "hidden_act", "activation_function", "activation",
                     default=fam.default_activation)
    if fam.activation_hook is not None:
        act_name = fam.activation_hook(act_name, cfg)
    if act_name not in _ACTIVATIONS:
        raise r.error("hidden_act", f"unsupported activation {act_name!r} "
                                    f"(supported: {', '.join(sorted(_ACTIVATIONS))})")

    if fam.position == "learned":
        theta, local_theta, scaling, partial = 10000.0, None, None, 1.0
    else:
        theta, local_theta, scaling, partial = _rope(r, fam)
    rotary_dim = int(head_dim * partial)
    if rotary_dim % 2:
        raise r.error("partial_rotary_factor", f"rotary dimension {rotary_dim} must be even")

    norm_eps = float(r.get("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", default=1e-5))
    qkv_bias = _flag(cfg, fam.qkv_bias)
    bias = {"q": qkv_bias, "k": qkv_bias, "v": qkv_bias, "o": _flag(cfg, fam.o_bias)}

    if fam.attn_scale_key is not None:
        attn_scale = float(r.get(fam.attn_scale_key, default=head_dim)) ** -0.5
    else:
        attn_scale = head_dim ** -0.5

    window = None
    if fam.sliding_layers is not None:
        window = cfg.get("sliding_window")
        if fam.sliding_window_switch is not None and not cfg.get(fam.sliding_window_switch, False):
            window = None
        window = int(window) if window is not None else None

    return {
        "architecture": family,
        "hf_architecture": hf_arch,
        "vocab_size": int(r.get("vocab_size")),
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_layers": layers,
        "num_heads": heads,
        "num_kv_heads": kv_heads,
        "head_dim": head_dim,
        "max_position_embeddings": max_pos,
        "norm_type": fam.norm_type,
        "norm_eps": norm_eps,
        "activation": _ACTIVATIONS[act_name],
        "mlp_gated": fam.mlp_gated,
        "position": fam.position,
        "rope_theta": theta,
        "rope_local_theta": local_theta,
        "rotary_dim": 0 if fam.position == "learned" else rotary_dim,
        "rope_scaling": scaling,
        "attn_bias": bias,
        "mlp_bias": _flag(cfg, fam.mlp_bias),
        "qk_norm": fam.qk_norm if _flag(cfg, fam.qk_norm_when) else None,
        "attn_scale": attn_scale,
        "attn_softcap": _float_or_none(cfg.get("attn_logit_softcapping")) if fam.softcaps else None,
        "final_softcap": _float_or_none(cfg.get("final_logit_softcapping")) if fam.softcaps else None,
        "sliding_window": window,
        "layer_types": _layer_types(r, fam, layers, window),
        "parallel_block": _flag(cfg, fam.parallel_block),
        "parallel_mlp_norm": _flag(cfg, fam.parallel_mlp_norm),
        "sandwich_norm": fam.sandwich_norm,
        "embed_scale": math.sqrt(hidden) if fam.scale_embeddings else None,
        "tie_word_embeddings": bool(cfg.get("tie_word_embeddings", fam.tie_default)),
        "lm_head_bias": fam.lm_head_bias,
        "fused_qkv_layout": fam.fused_qkv_layout(cfg, kv_heads) if fam.fused_qkv_layout else None,
        "nope_layers": fam.nope_layers(r, layers) if fam.nope_layers else [],
        "moe": fam.moe(r, layers) if fam.moe else None,
    }


def _float_or_none(v: Any) -> float | None:
    return None if v is None else float(v)


# --------------------------------------------------------------------------------------------
# canonical_tensors

_DROP = re.compile(r"(rotary_emb\.inv_freq|\.attn\.masked_bias|\.attn\.bias|\.rotary_emb\..*)$")
_PREFIXES = ("model.", "transformer.")

# Per-layer renames shared by the Llama-like families (HF name after "layers.{i}." → ours).
_LAYER_RENAMES = {
    "self_attn.q_proj": "attn.q", "self_attn.k_proj": "attn.k", "self_attn.v_proj": "attn.v",
    "self_attn.o_proj": "attn.o", "self_attn.dense": "attn.o",
    "self_attn.q_norm": "attn.q_norm", "self_attn.k_norm": "attn.k_norm",
    "self_attn.q_layernorm": "attn.q_norm", "self_attn.k_layernorm": "attn.k_norm",
    "input_layernorm": "attn_norm",
    "pre_feedforward_layernorm": "mlp_norm", "post_feedforward_layernorm": "post_mlp_norm",
    "mlp.gate_proj": "mlp.gate", "mlp.up_proj": "mlp.up", "mlp.down_proj": "mlp.down",
    "mlp.fc1": "mlp.up", "mlp.fc2": "mlp.down",
    # Falcon
    "self_attention.dense": "attn.o", "ln_attn": "attn_norm", "ln_mlp": "mlp_norm",
    "mlp.dense_h_to_4h": "mlp.up", "mlp.dense_4h_to_h": "mlp.down",
    # GPT-2 (Conv1D weights are transposed below)
    "ln_1": "attn_norm", "ln_2": "mlp_norm", "attn.c_proj": "attn.o",
    "mlp.c_fc": "mlp.up", "mlp.c_proj": "mlp.down",
}
_TOP_RENAMES = {
    "embed_tokens": "embed", "word_embeddings": "embed", "wte": "embed", "wpe": "pos_embed",
    "norm": "final_norm", "final_layernorm": "final_norm", "ln_f": "final_norm",
    "lm_head": "lm_head",
}
_LAYER_RE = re.compile(r"^(?:layers|h)\.(\d+)\.(.+)\.(weight|bias)$")
# Mixture-of-experts (issue 12): the router and one expert's projection per source tensor, stacked
# into [experts, rows, cols] canonical tensors as parts "name@e" (Mixtral's w1/w3/w2 = gate/up/down).
_MOE_ROUTER_PARTS = ("block_sparse_moe.gate", "mlp.gate")
_EXPERT_RE = re.compile(r"^(?:block_sparse_moe|mlp)\.experts\.(\d+)\.(w1|w2|w3|gate_proj|up_proj|down_proj)$")
_STACKED_EXPERTS_RE = re.compile(r"^(?:block_sparse_moe|mlp)\.experts\.(w1|w2|w3|gate_proj|up_proj|down_proj)$")
_EXPERT_PROJ = {"w1": "gate", "w3": "up", "w2": "down", "gate_proj": "gate", "up_proj": "up", "down_proj": "down"}
# transformers 5 in memory (MixtralExperts / Qwen3MoeExperts): all experts as one parameter, no suffix
_FUSED_EXPERTS_RE = re.compile(r"^layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)$")
_TOP_RE = re.compile(r"^(\w+)\.(weight|bias)$")
_PER_HEAD_RE = re.compile(r"^self_attn\.([qk])_layernorm\.norms\.(\d+)$")


def _strip(hf_name: str) -> str:
    for p in _PREFIXES:
        if hf_name.startswith(p):
            return hf_name[len(p):]
    return hf_name


def _split_rows(array: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    return np.split(array, np.cumsum(sizes)[:-1], axis=0)


def _split_falcon_qkv(array: np.ndarray, config: dict) -> list[np.ndarray]:
    """Falcon's fused query_key_value rows → q, k, v rows, for its three layouts.

    Mirrors ``FalconAttention._split_heads``: new_decoder_architecture groups rows per kv head as
    ``[q × heads/kv_heads, k, v]``; multi-query is ``[q × heads, k, v]``; classic MHA interleaves
    ``[q, k, v]`` per head.
    """
    h, kv, d = config["num_heads"], config["num_kv_heads"], config["head_dim"]
    rest = array.shape[1:]
    if config["fused_qkv_layout"] == "grouped":
        g = array.reshape(kv, h // kv + 2, d, *rest)
        q, k, v = g[:, :-2], g[:, -2], g[:, -1]
    elif config["fused_qkv_layout"] == "multi_query":
        g = array.reshape(h + 2, d, *rest)
        q, k, v = g[:h], g[h], g[h + 1]
    else:
        g = array.reshape(h, 3, d, *rest)
        q, k, v = g[:, 0], g[:, 1], g[:, 2]
    return [np.ascontiguousarray(x.reshape(-1, *rest)) for x in (q, k, v)]


def canonical_tensors(hf_name: str, array: np.ndarray, config: dict) -> list[tuple[str, np.ndarray]]:
    """One checkpoint tensor (HF naming) → zero or more canonical ``(name, array)`` pairs.

    ``config`` is the normalised config. Raises ``ConvertError`` for a name this family does not
    have, so a wrong checkpoint cannot be converted silently.
    """
    fam = FAMILIES[config["architecture"]]
    name = _strip(hf_name)
    if _DROP.search(name):
        return []
    array = np.asarray(array)

    fe = _FUSED_EXPERTS_RE.match(name)
    if fe:
        i = int(fe.group(1))
        _check_sparse_layer(hf_name, i, config)
        pre = f"layers.{i}.mlp.experts."
        if fe.group(2) == "down_proj":  # [E, hidden, I]
            return [(pre + "down.weight", np.ascontiguousarray(array))]
        inter = config["moe"]["intermediate_size"]  # [E, 2I, hidden]: gate rows first (chunk(2, dim=-1))
        return [(pre + "gate.weight", np.ascontiguousarray(array[:, :inter])),
                (pre + "up.weight", np.ascontiguousarray(array[:, inter:]))]

    m = _LAYER_RE.match(name)
    if m:
        i, part, kind = int(m.group(1)), m.group(2), m.group(3)
        pre = f"layers.{i}."
        if i >= config["num_layers"]:
            raise ConvertError(f"tensor {hf_name!r} is for layer {i}, but the model has "
                               f"{config['num_layers']} layers", key=hf_name)
        if part in _MOE_ROUTER_PARTS and _is_sparse(config, i):
            return [(f"{pre}mlp.router.{kind}", np.ascontiguousarray(array))]
        st = _STACKED_EXPERTS_RE.match(part)
        if st and array.ndim == 3:  # GGUF: all experts of a projection in one tensor
            _check_sparse_layer(hf_name, i, config)
            return [(f"{pre}mlp.experts.{_EXPERT_PROJ[st.group(1)]}.{kind}", np.ascontiguousarray(array))]
        ex = _EXPERT_RE.match(part)
        if ex:
            _check_sparse_layer(hf_name, i, config)
            return [(f"{pre}mlp.experts.{_EXPERT_PROJ[ex.group(2)]}.{kind}@{int(ex.group(1))}", array)]
        if fam.tensor_hook is not None:
            array = fam.tensor_hook(part, kind, array)
        if part in ("self_attn.qkv_proj", "attn.c_attn"):
            hd = config["head_dim"]
            sizes = [config["num_heads"] * hd, config["num_kv_heads"] * hd, config["num_kv_heads"] * hd]
            return [(f"{pre}attn.{p}.{kind}", np.ascontiguousarray(a))
                    for p, a in zip("qkv", _split_rows(array, sizes))]
        if part == "self_attention.query_key_value":
            return [(f"{pre}attn.{p}.{kind}", a) for p, a in zip("qkv", _split_falcon_qkv(array, config))]
        if part == "mlp.gate_up_proj":  # Phi-3: first half gate, second half up
            gate, up = _split_rows(array, [config["intermediate_size"]] * 2)
            return [(f"{pre}mlp.gate.{kind}", np.ascontiguousarray(gate)),
                    (f"{pre}mlp.up.{kind}", np.ascontiguousarray(up))]
        ph = _PER_HEAD_RE.match(part)
        if ph:  # StableLM per-head LayerNorm: one row of a [heads, head_dim] tensor
            return [(f"{pre}attn.{ph.group(1)}_norm.{kind}@{ph.group(2)}", array)]
        if part == "post_attention_layernorm":
            # With sandwich norms (Gemma 2/3) the norm on the attention output; else the pre-MLP norm.
            target = "post_attn_norm" if fam.sandwich_norm else "mlp_norm"
        elif part in _LAYER_RENAMES:
            target = _LAYER_RENAMES[part]
        else:
            raise ConvertError(f"unexpected tensor {hf_name!r} for a {config['hf_architecture']} model",
                               key=hf_name)
        if fam.norm_plus_one and kind == "weight" and target.endswith("norm"):
            array = array.astype(np.float32) + 1.0  # the norm multiplies by (1 + w)
        return [(f"{pre}{target}.{kind}", np.ascontiguousarray(array))]

    m = _TOP_RE.match(name)
    if m and m.group(1) in _TOP_RENAMES:
        target, kind = _TOP_RENAMES[m.group(1)], m.group(2)
        if target == "lm_head" and config["tie_word_embeddings"]:
            return []  # some checkpoints store the tied copy; the runtime reads embed.weight
        if fam.norm_plus_one and target == "final_norm":
            array = array.astype(np.float32) + 1.0
        return [(f"{target}.{kind}", np.ascontiguousarray(array))]
    raise ConvertError(f"unexpected tensor {hf_name!r} for a {config['hf_architecture']} model", key=hf_name)


def _is_sparse(config: dict, layer: int) -> bool:
    moe = config.get("moe")
    return bool(moe) and layer in moe["layers"]


def _check_sparse_layer(hf_name: str, layer: int, config: dict) -> None:
    if not _is_sparse(config, layer):
        raise ConvertError(f"tensor {hf_name!r} is an expert of layer {layer}, which the config makes a dense "
                           f"layer (see mlp_only_layers / decoder_sparse_step / num_experts)", key=hf_name)


def expected_parts(name: str, config: dict) -> int:
    """How many ``name@k`` parts make the stacked tensor ``name`` (so a converter can write it as
    soon as its last part arrives instead of holding every expert of the model)."""
    if ".mlp.experts." in name:
        return config["moe"]["num_experts"]
    return config["num_heads"] if ".attn.q_norm." in name else config["num_kv_heads"]


def stack_parts(named: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Join ``name@k`` parts (row k of a stacked tensor) into ``name``; other entries pass through."""
    out: dict[str, np.ndarray] = {}
    parts: dict[str, dict[int, np.ndarray]] = {}
    for name, arr in named.items():
        base, sep, idx = name.partition("@")
        if sep:
            parts.setdefault(base, {})[int(idx)] = arr
        else:
            out[name] = arr
    for base, rows in parts.items():
        if sorted(rows) != list(range(len(rows))):
            raise ConvertError(f"tensor {base!r}: rows {sorted(rows)} are not 0..{len(rows) - 1}", key=base)
        out[base] = np.stack([rows[k] for k in range(len(rows))])
    return out


def canonical_state_dict(items: Iterable[tuple[str, np.ndarray]], config: dict, *,
                         file: str | None = None) -> dict[str, np.ndarray]:
    """All checkpoint tensors → canonical tensors, stacked and checked against ``expected_tensors``."""
    named: dict[str, np.ndarray] = {}
    for hf_name, array in items:
        for name, arr in canonical_tensors(hf_name, array, config):
            named[name] = arr
    out = stack_parts(named)
    expected = expected_tensors(config)
    missing = [n for n in expected if n not in out]
    if missing:
        raise ConvertError(f"checkpoint lacks {len(missing)} tensor(s): {', '.join(missing[:8])}"
                           + (" ..." if len(missing) > 8 else ""), file=file)
    extra = sorted(set(out) - set(expected))
    if extra:
        raise ConvertError(f"checkpoint has unexpected tensor(s): {', '.join(extra[:8])}", file=file)
    return out


# --------------------------------------------------------------------------------------------
# expected_tensors


def expected_tensors(config: dict) -> list[str]:
    """The canonical tensor names a converted model of this config must have, in a stable order."""
    ln = config["norm_type"] == "layernorm"
    names = ["embed.weight"]
    if config["position"] == "learned":
        names.append("pos_embed.weight")

    def norm(prefix: str) -> list[str]:
        return [f"{prefix}.weight", f"{prefix}.bias"] if ln else [f"{prefix}.weight"]

    def linear(prefix: str, bias: bool) -> list[str]:
        return [f"{prefix}.weight", f"{prefix}.bias"] if bias else [f"{prefix}.weight"]

    for i in range(config["num_layers"]):
        p = f"layers.{i}."
        names += norm(p + "attn_norm")
        for x in "qkvo":
            names += linear(p + f"attn.{x}", config["attn_bias"][x])
        qk = config["qk_norm"]
        if qk == "rmsnorm" or qk == "layernorm_per_head":
            names += [p + "attn.q_norm.weight", p + "attn.k_norm.weight"]
        elif qk == "layernorm":
            names += [p + "attn.q_norm.weight", p + "attn.q_norm.bias",
                      p + "attn.k_norm.weight", p + "attn.k_norm.bias"]
        if config["sandwich_norm"]:
            names.append(p + "post_attn_norm.weight")
        if not config["parallel_block"] or config.get("parallel_mlp_norm"):
            names += norm(p + "mlp_norm")
        if config["sandwich_norm"]:
            names.append(p + "post_mlp_norm.weight")
        if _is_sparse(config, i):  # [E, hidden] router, experts [E, I, hidden] / [E, hidden, I]
            names += [p + "mlp.router.weight", p + "mlp.experts.gate.weight", p + "mlp.experts.up.weight",
                      p + "mlp.experts.down.weight"]
            continue
        if config["mlp_gated"]:
            names += linear(p + "mlp.gate", config["mlp_bias"])
        names += linear(p + "mlp.up", config["mlp_bias"])
        names += linear(p + "mlp.down", config["mlp_bias"])
    names += norm("final_norm")
    if not config["tie_word_embeddings"]:
        names += linear("lm_head", config["lm_head_bias"])
    return names
