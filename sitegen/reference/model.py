"""A readable numpy forward pass: the oracle every runtime kernel is checked against (issue 3, item 6).

One ``Model`` covers every family of ``sitegen.convert.architectures``: the normalised config says
which features a model uses (norm type, gated MLP, parallel block, sandwich norms, q/k norms,
RoPE variant, soft-capping, sliding windows, learned positions), and ``forward`` reads top to bottom
like llama2.c's ``run.c``. Shapes are written in comments as ``[T, hidden]`` etc.:

    T   tokens processed in this call       S   tokens in the cache after this call (keys)
    H   query heads     KV  key/value heads    D  head_dim    R  rotary_dim    V  vocab

Compute is float32 like the runtime (and like transformers at float32); the softmax, norms and
RoPE angles are computed in float64 where that is free, so the reference is the more exact side.
Where a line implements a PyTorch line from transformers, that line is quoted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from sitegen.convert.manifest import read_manifest
from sitegen.errors import ConvertError

__all__ = ["Model", "KVCache", "load", "rope_inv_freq"]

f32 = np.float32


# --------------------------------------------------------------------------------------------
# Building blocks


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """x [..., N], w [N] → [..., N]. ``x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w``"""
    x64 = x.astype(np.float64)
    inv = 1.0 / np.sqrt(np.mean(x64 * x64, axis=-1, keepdims=True) + eps)  # [..., 1]
    return (x64 * inv).astype(f32) * w  # Gemma's (1 + w) was folded into w at conversion


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, eps: float) -> np.ndarray:
    """x [..., N], w/b [N] → [..., N]. ``F.layer_norm(x, (N,), w, b, eps)``"""
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=-1, keepdims=True)  # [..., 1]
    var = ((x64 - mean) ** 2).mean(axis=-1, keepdims=True)  # [..., 1] (biased, like torch)
    y = ((x64 - mean) / np.sqrt(var + eps)).astype(f32) * w
    return y + b if b is not None else y


def _erf(x: np.ndarray) -> np.ndarray:
    """erf in float64 (Abramowitz & Stegun 7.1.26, |error| ≤ 1.5e-7: below float32's resolution
    of GELU's output). numpy has no erf and the reference must not need scipy."""
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return s * (1.0 - poly * np.exp(-a * a))


def activation(x: np.ndarray, kind: str) -> np.ndarray:
    x64 = x.astype(np.float64)
    if kind == "silu":  # F.silu(x) = x * sigmoid(x)
        y = x64 / (1.0 + np.exp(-x64))
    elif kind == "gelu_tanh":  # gelu_new / gelu_pytorch_tanh
        y = 0.5 * x64 * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x64 + 0.044715 * x64 ** 3)))
    elif kind == "gelu":  # exact: 0.5 * x * (1 + erf(x / sqrt(2)))
        y = 0.5 * x64 * (1.0 + _erf(x64 / math.sqrt(2.0)))
    else:
        raise ValueError(f"unknown activation {kind!r}")
    return y.astype(f32)


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """x [T, in], w [out, in], b [out] → [T, out]. ``F.linear(x, w, b)``"""
    y = x @ w.T
    return y + b if b is not None else y


def rope_inv_freq(rotary_dim: int, theta: float, scaling: dict | None) -> np.ndarray:
    """[R/2] inverse frequencies, with linear or llama3 scaling (``modeling_rope_utils``)."""
    inv = 1.0 / theta ** (np.arange(0, rotary_dim, 2, dtype=np.float64) / rotary_dim)  # [R/2]
    if scaling is None:
        return inv
    if scaling["type"] == "linear":  # positions divided by factor == frequencies divided by factor
        return inv / scaling["factor"]
    if scaling["type"] == "llama3":
        factor, lo, hi = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv  # [R/2]
        # long wavelengths (low frequencies) are slowed by factor, short ones kept, the middle blended
        scaled = np.where(wavelen > old / lo, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old / hi) & (wavelen <= old / lo)
        return np.where(medium, blended, scaled)
    raise ValueError(f"unknown RoPE scaling {scaling['type']!r}")


def apply_rope(x: np.ndarray, positions: np.ndarray, inv_freq: np.ndarray) -> np.ndarray:
    """x [T, heads, D], positions [T] → [T, heads, D]: rotate-half (NeoX) RoPE on the first R dims.

    ``q_embed = (q * cos) + (rotate_half(q) * sin)`` with ``rotate_half(x) = cat(-x2, x1)``.
    """
    r = 2 * inv_freq.shape[0]
    angles = positions[:, None].astype(np.float64) * inv_freq[None, :]  # [T, R/2]
    cos = np.cos(np.concatenate([angles, angles], axis=-1)).astype(f32)[:, None, :]  # [T, 1, R]
    sin = np.sin(np.concatenate([angles, angles], axis=-1)).astype(f32)[:, None, :]  # [T, 1, R]
    rot, rest = x[..., :r], x[..., r:]  # [T, heads, R], [T, heads, D-R]
    half = r // 2
    rotated = np.concatenate([-rot[..., half:], rot[..., :half]], axis=-1)  # rotate_half(rot)
    return np.concatenate([rot * cos + rotated * sin, rest], axis=-1)


def softcap(x: np.ndarray, cap: float | None) -> np.ndarray:
    """``x = tanh(x / cap) * cap`` (Gemma 2 attention scores and final logits)."""
    return x if cap is None else (np.tanh(x.astype(np.float64) / cap) * cap).astype(f32)


# --------------------------------------------------------------------------------------------
# KV cache


@dataclass
class KVCache:
    """Keys (after RoPE) and values of every layer: ``k[i]``, ``v[i]`` are [KV, S, D]."""

    k: list[np.ndarray] = field(default_factory=list)
    v: list[np.ndarray] = field(default_factory=list)
    length: int = 0  # S before the current call; positions continue from here

    def append(self, layer: int, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """k, v [KV, T, D] → the layer's whole cache [KV, S, D] (S = length + T)."""
        if layer == len(self.k):
            self.k.append(k)
            self.v.append(v)
        else:
            self.k[layer] = np.concatenate([self.k[layer], k], axis=1)
            self.v[layer] = np.concatenate([self.v[layer], v], axis=1)
        return self.k[layer], self.v[layer]


# --------------------------------------------------------------------------------------------
# The model


class Model:
    """A converted model in numpy: ``config`` is the normalised config, ``weights`` canonical tensors."""

    def __init__(self, config: dict, weights: Mapping[str, np.ndarray]):
        from sitegen.convert.architectures import expected_tensors

        missing = [n for n in expected_tensors(config) if n not in weights]
        if missing:
            raise ConvertError(f"model lacks tensor(s): {', '.join(missing[:8])}")
        self.config = c = config
        self.w = {k: np.asarray(v, dtype=f32) for k, v in weights.items()}
        # One table of inverse frequencies per RoPE base: Gemma 3's sliding layers use their own.
        self._inv_freq_global = rope_inv_freq(c["rotary_dim"], c["rope_theta"], c["rope_scaling"]) \
            if c["position"] == "rope" else None
        self.routes: dict[int, np.ndarray] = {}  # MoE layer → the last call's expert choices [T, top_k]
        self.router_logits: dict[int, np.ndarray] = {}  # MoE layer → the last call's router logits [T, E]
        self._inv_freq_local = rope_inv_freq(c["rotary_dim"], c["rope_local_theta"], None) \
            if c.get("rope_local_theta") else self._inv_freq_global

    # -- helpers that look weights up by canonical name -------------------------------------

    def _get(self, name: str) -> np.ndarray | None:
        return self.w.get(name)

    def _norm(self, x: np.ndarray, prefix: str) -> np.ndarray:
        c = self.config
        if c["norm_type"] == "layernorm":
            return layer_norm(x, self.w[prefix + ".weight"], self._get(prefix + ".bias"), c["norm_eps"])
        return rms_norm(x, self.w[prefix + ".weight"], c["norm_eps"])

    def _linear(self, x: np.ndarray, prefix: str) -> np.ndarray:
        return linear(x, self.w[prefix + ".weight"], self._get(prefix + ".bias"))

    def _qk_norm(self, x: np.ndarray, prefix: str) -> np.ndarray:
        """x [T, heads, D] → [T, heads, D]: Qwen3/Gemma 3 RMSNorm, Phi LayerNorm over D (one weight
        for all heads), StableLM LayerNorm per head (weight [heads, D], no bias)."""
        kind, eps = self.config["qk_norm"], self.config["norm_eps"]
        if kind is None:
            return x
        w = self.w[prefix + ".weight"]  # [D] or [heads, D]
        if kind == "rmsnorm":
            return rms_norm(x, w, eps)
        return layer_norm(x, w, self._get(prefix + ".bias"), eps)  # w [heads, D] broadcasts per head

    # -- one block ---------------------------------------------------------------------------

    def _attention(self, i: int, x: np.ndarray, cache: KVCache) -> np.ndarray:
        """x [T, hidden] (already normed) → [T, hidden]; appends this call's keys/values to the cache."""
        c = self.config
        p = f"layers.{i}.attn."
        T, H, KV, D = x.shape[0], c["num_heads"], c["num_kv_heads"], c["head_dim"]
        q = self._linear(x, p + "q").reshape(T, H, D)  # [T, H, D]   q_proj(x).view(T, H, D)
        k = self._linear(x, p + "k").reshape(T, KV, D)  # [T, KV, D]
        v = self._linear(x, p + "v").reshape(T, KV, D)  # [T, KV, D]
        q = self._qk_norm(q, p + "q_norm")  # [T, H, D]   (before RoPE, as in Qwen3 / Gemma 3)
        k = self._qk_norm(k, p + "k_norm")  # [T, KV, D]

        positions = np.arange(cache.length, cache.length + T)  # [T]
        sliding = c["layer_types"][i] == "sliding"
        if c["position"] == "rope" and i not in c.get("nope_layers", ()):  # SmolLM3: ``if self.use_rope``
            inv_freq = self._inv_freq_local if sliding else self._inv_freq_global  # [R/2]
            q = apply_rope(q, positions, inv_freq)  # [T, H, D]
            k = apply_rope(k, positions, inv_freq)  # [T, KV, D]

        k_all, v_all = cache.append(i, k.transpose(1, 0, 2), v.transpose(1, 0, 2))  # [KV, S, D] each
        S = k_all.shape[1]
        key_pos = np.arange(S)  # [S]
        # causal (and sliding-window) mask: query at position p sees keys at j <= p and, on sliding
        # layers, p - j < window (transformers' ``kv_idx > q_idx - sliding_window``).
        allowed = key_pos[None, :] <= positions[:, None]  # [T, S]
        if sliding and c["sliding_window"]:
            allowed &= key_pos[None, :] > positions[:, None] - c["sliding_window"]

        group = H // KV  # query heads per kv head (GQA / MQA): ``repeat_kv``
        out = np.empty((T, H, D), dtype=f32)  # [T, H, D]
        for h in range(H):
            kh, vh = k_all[h // group], v_all[h // group]  # [S, D], [S, D]
            scores = (q[:, h, :] @ kh.T) * f32(c["attn_scale"])  # [T, S]   q @ k^T * scaling
            scores = softcap(scores, c["attn_softcap"])  # [T, S]
            scores = np.where(allowed, scores.astype(np.float64), -np.inf)  # [T, S]
            probs = np.exp(scores - scores.max(axis=-1, keepdims=True))  # [T, S]
            probs /= probs.sum(axis=-1, keepdims=True)  # softmax(scores, dim=-1)
            out[:, h, :] = probs.astype(f32) @ vh  # [T, D]   attn_weights @ v
        return self._linear(out.reshape(T, H * D), p + "o")  # [T, hidden]   o_proj(attn_output)

    def _moe(self, i: int, x: np.ndarray) -> np.ndarray:
        """x [T, hidden] (already normed) → [T, hidden]: a sparse mixture-of-experts MLP (Mixtral,
        Qwen3-MoE). Each token's router picks top_k experts; their gated MLPs are summed, weighted.
        The choices are kept in ``self.routes[i]`` [T, top_k] (tests compare them with transformers')."""
        m, act = self.config["moe"], self.config["activation"]
        p = f"layers.{i}.mlp."
        T, k = x.shape[0], m["top_k"]
        logits = linear(x, self.w[p + "router.weight"]).astype(np.float64)  # [T, E]   F.linear(x, gate.weight)
        probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)  # [T, E]   softmax(router_logits.float(), dim=-1)
        top = np.argsort(-probs, axis=-1, kind="stable")[:, :k]  # [T, k]   torch.topk(probs, top_k)
        weight = np.take_along_axis(probs, top, axis=-1)  # [T, k]
        if m["norm_topk_prob"]:
            weight /= weight.sum(axis=-1, keepdims=True)  # router_top_value /= router_top_value.sum(-1)
        weight = weight.astype(f32)
        self.routes[i], self.router_logits[i] = top, logits
        gate, up, down = (self.w[p + f"experts.{n}.weight"] for n in ("gate", "up", "down"))  # [E, I, hid] ×2, [E, hid, I]
        out = np.zeros_like(x)  # [T, hidden]
        for t in range(T):
            for j, e in enumerate(top[t]):
                h = activation(x[t] @ gate[e].T, act) * (x[t] @ up[e].T)  # [I]   act_fn(gate) * up
                out[t] += weight[t, j] * (h @ down[e].T)  # [hidden]   down_proj(·) * top_k_weights
        return out

    def _mlp(self, i: int, x: np.ndarray) -> np.ndarray:
        """x [T, hidden] (already normed) → [T, hidden]."""
        c = self.config
        p = f"layers.{i}.mlp."
        if c.get("moe") and i in c["moe"]["layers"]:
            return self._moe(i, x)
        if c["mlp_gated"]:  # down_proj(act_fn(gate_proj(x)) * up_proj(x))
            gate = activation(self._linear(x, p + "gate"), c["activation"])  # [T, I]
            up = self._linear(x, p + "up")  # [T, I]
            return self._linear(gate * up, p + "down")  # [T, hidden]
        h = activation(self._linear(x, p + "up"), c["activation"])  # [T, I]   act(fc1(x))
        return self._linear(h, p + "down")  # [T, hidden]   fc2(h)

    def _block(self, i: int, x: np.ndarray, cache: KVCache) -> np.ndarray:
        """x [T, hidden] → [T, hidden]: one transformer layer."""
        c = self.config
        p = f"layers.{i}."
        h = self._norm(x, p + "attn_norm")  # [T, hidden]   input_layernorm(x)
        attn = self._attention(i, h, cache)  # [T, hidden]
        if c["parallel_block"]:
            # Phi-2, Falcon, StableLM parallel: x + attn(ln(x)) + mlp(ln(x)) — Falcon's new
            # decoder architecture has a second norm for the MLP (ln_mlp).
            m_in = self._norm(x, p + "mlp_norm") if c.get("parallel_mlp_norm") else h  # [T, hidden]
            return x + attn + self._mlp(i, m_in)
        if c["sandwich_norm"]:
            attn = self._norm(attn, p + "post_attn_norm")  # Gemma 2/3: post_attention_layernorm
        x = x + attn  # [T, hidden]   residual
        m = self._mlp(i, self._norm(x, p + "mlp_norm"))  # [T, hidden]   mlp(post_attention_layernorm(x))
        if c["sandwich_norm"]:
            m = self._norm(m, p + "post_mlp_norm")  # Gemma 2/3: post_feedforward_layernorm
        return x + m

    # -- public ------------------------------------------------------------------------------

    def new_cache(self) -> KVCache:
        return KVCache()

    def forward(self, tokens: Iterable[int], cache: KVCache | None = None) -> np.ndarray:
        """tokens [T] → logits [T, V], continuing after ``cache.length`` tokens (updating the cache)."""
        c = self.config
        cache = cache if cache is not None else KVCache()
        ids = np.asarray(list(tokens), dtype=np.int64)  # [T]
        if ids.size == 0:
            raise ValueError("forward needs at least one token")
        if ids.min() < 0 or ids.max() >= c["vocab_size"]:
            raise ValueError(f"token id out of range 0..{c['vocab_size'] - 1}")
        T = ids.shape[0]
        x = self.w["embed.weight"][ids]  # [T, hidden]   embed_tokens(ids)
        if c["embed_scale"]:
            x = x * f32(c["embed_scale"])  # Gemma: x * sqrt(hidden) (a float32 constant in HF)
        if c["position"] == "learned":
            pos = np.arange(cache.length, cache.length + T)
            if pos[-1] >= self.w["pos_embed.weight"].shape[0]:
                raise ValueError(f"position {pos[-1]} beyond the model's {self.w['pos_embed.weight'].shape[0]}")
            x = x + self.w["pos_embed.weight"][pos]  # [T, hidden]   wte(ids) + wpe(positions)
        for i in range(c["num_layers"]):
            x = self._block(i, x, cache)  # [T, hidden]
        cache.length += T
        x = self._norm(x, "final_norm")  # [T, hidden]   norm(x)
        head = self.w["embed.weight"] if c["tie_word_embeddings"] else self.w["lm_head.weight"]  # [V, hidden]
        logits = linear(x, head, self._get("lm_head.bias"))  # [T, V]   lm_head(x)
        return softcap(logits, c["final_softcap"])  # [T, V]

    def logits(self, tokens: Iterable[int]) -> np.ndarray:
        """tokens [T] → logits [T, V] for every position (a fresh cache)."""
        return self.forward(tokens, KVCache())

    def generate(self, prompt_ids: Iterable[int], max_new_tokens: int,
                 eos_ids: Iterable[int] = ()) -> list[int]:
        """Greedy decoding: prefill the prompt, then one token at a time; returns the new ids
        (ending with the eos id if one was produced)."""
        eos = set(eos_ids)
        cache = KVCache()
        logits = self.forward(prompt_ids, cache)  # [T, V]
        out: list[int] = []
        for _ in range(max_new_tokens):
            nxt = int(np.argmax(logits[-1]))
            out.append(nxt)
            if nxt in eos:
                break
            logits = self.forward([nxt], cache)  # [1, V]
        return out


# --------------------------------------------------------------------------------------------
# Loading a converted folder (docs/weights-format.md)


def load(model_dir: str | Path) -> Model:
    """Read a converted model folder (manifest + shards) and dequantize every tensor to float32."""
    from sitegen.convert.quantize import dequantize  # the converter's own decoder, the inverse of quantize

    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    shard_size = int(manifest["shard_size"])
    shards = []
    for s in manifest["shards"]:
        path = model_dir / s["file"]
        if not path.is_file():
            raise ConvertError(f"missing shard {s['file']}", file=str(model_dir / "manifest.json"))
        shards.append(np.memmap(path, dtype=np.uint8, mode="r") if path.stat().st_size else np.zeros(0, np.uint8))
    weights: dict[str, np.ndarray] = {}
    for entry in manifest["tensors"]:
        # A tensor may straddle shards: it is a byte range of the concatenated stream.
        start = int(entry["shard"]) * shard_size + int(entry["offset"])
        end = start + int(entry["nbytes"])
        pieces = []
        while start < end:
            idx, off = divmod(start, shard_size)
            take = min(end - start, shard_size - off)
            pieces.append(np.asarray(shards[idx][off:off + take]))
            start += take
        buf = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        weights[entry["name"]] = np.asarray(dequantize(buf.tobytes(), entry), dtype=f32).reshape(entry["shape"])
    return Model(manifest["config"], weights)
