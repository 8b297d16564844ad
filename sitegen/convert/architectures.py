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
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from sitegen.errors import ConvertError

__all__ = [
    "SUPPORTED",
    "normalize_config",
    "canonical_tensors",
    "expected_tensors",
    "stack_parts",
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
}

_GEMMA_FAMILIES = ("gemma", "gemma2", "gemma3")
# HF activation names → ours. gelu_new / gelu_pytorch_tanh / gelu_fast are the tanh approximation.
_ACTIVATIONS = {
    "silu": "silu", "swish": "silu",
    "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "gelu_fast": "gelu_tanh",
    "gelu": "gelu",
}
_MISSING = object()


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


def _rope(r: _Reader, family: str) -> tuple[float, float | None, dict | None, float]:
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
        glob["rope_theta"] = cfg.get("rope_theta", 1_000_000.0 if family == "gemma3" else 10000.0)
        key = "rope_scaling"
        if family == "gemma3":
            local_theta = float(cfg.get("rope_local_base_freq", 10000.0))
    theta = float(glob.get("rope_theta", 10000.0))
    partial = float(glob.get("partial_rotary_factor", cfg.get("partial_rotary_factor") or 1.0))
    return theta, local_theta, _rope_scaling(glob, r, key), partial


def _layer_types(r: _Reader, family: str, n: int, window: int | None) -> list[str]:
    names = {"full_attention": "full", "sliding_attention": "sliding"}
    given = r.cfg.get("layer_types")
    if given is not None:
        if len(given) != n or any(t not in names for t in given):
            raise r.error("layer_types", f"expected {n} entries of full_attention|sliding_attention")
        types = [names[t] for t in given]
    elif window is None:
        types = ["full"] * n
    elif family == "gemma2":  # even layers local, odd layers global
        types = ["sliding" if (i + 1) % 2 else "full" for i in range(n)]
    elif family == "gemma3":
        pattern = int(r.get("sliding_window_pattern", "_sliding_window_pattern", default=6))
        types = ["sliding" if (i + 1) % pattern else "full" for i in range(n)]
    elif family in ("qwen2", "qwen3"):
        first = int(r.get("max_window_layers", default=n))
        types = ["sliding" if i >= first else "full" for i in range(n)]
    else:  # Mistral, Phi-3: every layer
        types = ["sliding"] * n
    if window is None:
        types = ["full"] * n  # HF ignores layer_types without a window
    return types


def normalize_config(hf_config: dict, *, file: str = "config.json") -> dict:
    """A Hugging Face ``config.json`` (as a dict) → the normalised config of docs/internals.md."""
    hf_arch, family = _family(hf_config, file)
    r = _Reader(hf_config, file)
    cfg = hf_config

    if family == "gpt2":
        hidden = int(r.get("n_embd", "hidden_size"))
        heads = int(r.get("n_head", "num_attention_heads"))
        layers = int(r.get("n_layer", "num_hidden_layers"))
        inter = int(r.get("n_inner", default=4 * hidden))
        kv_heads = heads
        max_pos = int(r.get("n_positions", "max_position_embeddings"))
        if cfg.get("scale_attn_by_inverse_layer_idx"):
            raise r.error("scale_attn_by_inverse_layer_idx", "not supported (set it to false)")
        if cfg.get("scale_attn_weights") is False:
            raise r.error("scale_attn_weights", "unscaled attention is not supported")
    elif family == "falcon":
        hidden = int(r.get("hidden_size"))
        heads = int(r.get("num_attention_heads", "n_head"))
        layers = int(r.get("num_hidden_layers", "n_layer"))
        inter = int(r.get("ffn_hidden_size", default=4 * hidden))
        if cfg.get("alibi"):
            raise r.error("alibi", "Falcon with ALiBi positions is not supported (only rotary)")
        if cfg.get("new_decoder_architecture"):
            kv_heads = int(r.get("num_kv_heads"))
        elif cfg.get("multi_query", True):
            kv_heads = 1
        else:
            kv_heads = int(r.get("num_kv_heads", default=heads))
        max_pos = int(r.get("max_position_embeddings", default=2048))
    else:
        hidden = int(r.get("hidden_size"))
        heads = int(r.get("num_attention_heads"))
        layers = int(r.get("num_hidden_layers"))
        inter = int(r.get("intermediate_size"))
        kv_heads = int(r.get("num_key_value_heads", default=heads))
        max_pos = int(r.get("max_position_embeddings", default=2048))
    if hidden % heads and family not in _GEMMA_FAMILIES + ("llama", "mistral", "qwen3"):
        raise r.error("num_attention_heads", f"hidden size {hidden} is not a multiple of {heads} heads")
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    if heads % kv_heads:
        raise r.error("num_key_value_heads", f"{heads} heads is not a multiple of {kv_heads} kv heads")

    # transformers' per-class defaults when config.json leaves the activation out
    default_act = {"falcon": "gelu", "phi": "gelu_new", "gpt2": "gelu_new"}.get(
        family, "gelu_pytorch_tanh" if family in _GEMMA_FAMILIES else "silu")
    act_name = r.get("hidden_activation", "hidden_act", "activation_function", "activation", default=default_act)
    if family == "gemma" and act_name == "gelu" and not cfg.get("hidden_activation"):
        # Early Gemma configs say "gelu" but the model was trained with the tanh approximation
        # (transformers 4.38–4.4x overrode it the same way); issue 3 item 5: "tanh-GELU".
        act_name = "gelu_pytorch_tanh"
    if act_name not in _ACTIVATIONS:
        raise r.error("hidden_act", f"unsupported activation {act_name!r} "
                                    f"(supported: {', '.join(sorted(_ACTIVATIONS))})")

    if family == "gpt2":
        theta, local_theta, scaling, partial = 10000.0, None, None, 1.0
    else:
        theta, local_theta, scaling, partial = _rope(r, family)
    rotary_dim = int(head_dim * partial)
    if rotary_dim % 2:
        raise r.error("partial_rotary_factor", f"rotary dimension {rotary_dim} must be even")

    layernorm = family in ("phi", "stablelm", "falcon", "gpt2")
    norm_eps = float(r.get("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", default=1e-5))

    bias = {"q": False, "k": False, "v": False, "o": False}
    mlp_bias = False
    if family in ("llama", "mistral", "qwen3", "gemma", "gemma2", "gemma3"):
        ab = bool(cfg.get("attention_bias", False))
        bias = dict.fromkeys(bias, ab)
        mlp_bias = bool(cfg.get("mlp_bias", False))
    elif family == "qwen2":
        bias = {"q": True, "k": True, "v": True, "o": False}
    elif family in ("phi", "gpt2"):
        bias = dict.fromkeys(bias, True)
        mlp_bias = True
    elif family == "stablelm":
        qkv = bool(cfg.get("use_qkv_bias", False))
        bias = {"q": qkv, "k": qkv, "v": qkv, "o": False}
    elif family == "falcon":
        fb = bool(cfg.get("bias", False))
        bias = dict.fromkeys(bias, fb)
        mlp_bias = fb

    qk_norm = None
    if family in ("qwen3", "gemma3"):
        qk_norm = "rmsnorm"
    elif family == "phi" and cfg.get("qk_layernorm"):
        qk_norm = "layernorm"
    elif family == "stablelm" and cfg.get("qk_layernorm"):
        qk_norm = "layernorm_per_head"

    parallel = False
    parallel_mlp_norm = False
    qkv_layout = None
    if family == "phi":
        parallel = True
    elif family == "stablelm":
        parallel = bool(cfg.get("use_parallel_residual", False))
    elif family == "falcon":
        new = bool(cfg.get("new_decoder_architecture", False))
        parallel = new or bool(cfg.get("parallel_attn", True))
        n_ln = cfg.get("num_ln_in_parallel_attn") or (2 if new else 1)
        parallel_mlp_norm = new and n_ln == 2
        qkv_layout = "grouped" if new else "multi_query" if kv_heads == 1 else "interleaved"

    if family in ("gemma2", "gemma3"):
        attn_scale = float(r.get("query_pre_attn_scalar", default=head_dim)) ** -0.5
    else:
        attn_scale = head_dim ** -0.5

    window = None
    if family in ("mistral", "phi3", "gemma2", "gemma3", "qwen2", "qwen3"):
        window = cfg.get("sliding_window")
        if family in ("qwen2", "qwen3") and not cfg.get("use_sliding_window", False):
            window = None
        window = int(window) if window is not None else None

    tie = bool(cfg.get("tie_word_embeddings", family in ("gpt2", "falcon") + _GEMMA_FAMILIES))

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
        "norm_type": "layernorm" if layernorm else "rmsnorm",
        "norm_eps": norm_eps,
        "activation": _ACTIVATIONS[act_name],
        "mlp_gated": family not in ("phi", "falcon", "gpt2"),
        "position": "learned" if family == "gpt2" else "rope",
        "rope_theta": theta,
        "rope_local_theta": local_theta,
        "rotary_dim": 0 if family == "gpt2" else rotary_dim,
        "rope_scaling": scaling,
        "attn_bias": bias,
        "mlp_bias": mlp_bias,
        "qk_norm": qk_norm,
        "attn_scale": attn_scale,
        "attn_softcap": _float_or_none(cfg.get("attn_logit_softcapping")) if family in _GEMMA_FAMILIES else None,
        "final_softcap": _float_or_none(cfg.get("final_logit_softcapping")) if family in _GEMMA_FAMILIES else None,
        "sliding_window": window,
        "layer_types": _layer_types(r, family, layers, window),
        "parallel_block": parallel,
        "parallel_mlp_norm": parallel_mlp_norm,
        "sandwich_norm": family in ("gemma2", "gemma3"),
        "embed_scale": math.sqrt(hidden) if family in _GEMMA_FAMILIES else None,
        "tie_word_embeddings": tie,
        "lm_head_bias": family == "phi",
        "fused_qkv_layout": qkv_layout,
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
    family = config["architecture"]
    name = _strip(hf_name)
    if _DROP.search(name):
        return []
    array = np.asarray(array)
    gemma = family in _GEMMA_FAMILIES

    m = _LAYER_RE.match(name)
    if m:
        i, part, kind = int(m.group(1)), m.group(2), m.group(3)
        pre = f"layers.{i}."
        if i >= config["num_layers"]:
            raise ConvertError(f"tensor {hf_name!r} is for layer {i}, but the model has "
                               f"{config['num_layers']} layers", key=hf_name)
        if family == "gpt2" and kind == "weight" and part in ("attn.c_attn", "attn.c_proj",
                                                              "mlp.c_fc", "mlp.c_proj"):
            array = array.T  # Conv1D stores [in, out]
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
            # Gemma 2/3: the sandwich norm on the attention output; everyone else: the pre-MLP norm.
            target = "post_attn_norm" if family in ("gemma2", "gemma3") else "mlp_norm"
        elif part in _LAYER_RENAMES:
            target = _LAYER_RENAMES[part]
        else:
            raise ConvertError(f"unexpected tensor {hf_name!r} for a {config['hf_architecture']} model",
                               key=hf_name)
        if gemma and kind == "weight" and target.endswith("norm"):
            array = array.astype(np.float32) + 1.0  # Gemma RMSNorm multiplies by (1 + w)
        return [(f"{pre}{target}.{kind}", np.ascontiguousarray(array))]

    m = _TOP_RE.match(name)
    if m and m.group(1) in _TOP_RENAMES:
        target, kind = _TOP_RENAMES[m.group(1)], m.group(2)
        if target == "lm_head" and config["tie_word_embeddings"]:
            return []  # some checkpoints store the tied copy; the runtime reads embed.weight
        if gemma and target == "final_norm":
            array = array.astype(np.float32) + 1.0
        return [(f"{target}.{kind}", np.ascontiguousarray(array))]
    raise ConvertError(f"unexpected tensor {hf_name!r} for a {config['hf_architecture']} model", key=hf_name)


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
        if config["mlp_gated"]:
            names += linear(p + "mlp.gate", config["mlp_bias"])
        names += linear(p + "mlp.up", config["mlp_bias"])
        names += linear(p + "mlp.down", config["mlp_bias"])
    names += norm("final_norm")
    if not config["tie_word_embeddings"]:
        names += linear("lm_head", config["lm_head_bias"])
    return names
