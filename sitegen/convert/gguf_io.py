"""Read a GGUF file as if it were a Hugging Face checkpoint.

The GGUF metadata becomes an HF-style ``config.json`` dict and the tensor names become HF names,
so ``architectures.normalize_config`` / ``canonical_tensors`` stay the single place where
per-architecture facts live. Two llama.cpp conversion steps are undone here (issue 3 item 1):

* llama-type models: ``convert_hf_to_gguf.py`` (``LlamaModel.permute``) reorders the rows of
  ``attn_q``/``attn_k`` per head from rotate-half (NeoX) order to interleaved pairs; we apply
  the inverse, as transformers' ``LlamaTensorProcessor._reverse_permute_weights`` does.
* Gemma family: llama.cpp stores ``norm.weight + 1``; we subtract 1, as transformers'
  ``Gemma2TensorProcessor`` does, so the HF-naming tensors are true HF values and
  ``canonical_tensors`` adds the 1 back (one normalisation point for both paths).

Quantized tensors are dequantized with ``gguf.quants.dequantize`` a block of rows at a time from
the memory-mapped file, so scratch memory stays bounded.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from sitegen.errors import ConvertError

__all__ = ["GGUFModel", "SUPPORTED_TYPES", "SUPPORTED_ARCHITECTURES"]

SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K")

# GGUF general.architecture -> (HF architectures[0], HF model_type)
SUPPORTED_ARCHITECTURES = {
    "llama": ("LlamaForCausalLM", "llama"),
    "qwen2": ("Qwen2ForCausalLM", "qwen2"),
    "qwen3": ("Qwen3ForCausalLM", "qwen3"),
    "gemma": ("GemmaForCausalLM", "gemma"),
    "gemma2": ("Gemma2ForCausalLM", "gemma2"),
    "gemma3": ("Gemma3ForCausalLM", "gemma3_text"),
    "qwen3moe": ("Qwen3MoeForCausalLM", "qwen3_moe"),
    # (Mixtral is general.architecture "llama" with llama.expert_count > 0: see _hf_config)
}
_GEMMA = ("gemma", "gemma2", "gemma3")

_GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
    "post_attention_norm": "post_attention_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
    # mixture-of-experts (issue 12): the router and every expert of a projection as one [E, rows, cols] tensor
    "ffn_gate_inp": "mlp.gate", "ffn_gate_exps": "mlp.experts.gate_proj", "ffn_up_exps": "mlp.experts.up_proj",
    "ffn_down_exps": "mlp.experts.down_proj",
}
_BLOCK_BYTES = 16 * 2**20


def _field(reader, key: str, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


class GGUFModel:
    """A GGUF file: ``hf_config``, ``names()`` (HF names), ``shape(name)``, ``read_f32(name)``."""

    def __init__(self, path: Path):
        import gguf

        self.path = Path(path)
        try:
            self.reader = gguf.GGUFReader(self.path)
        except (ValueError, OSError, IndexError, KeyError) as e:
            raise ConvertError(f"not a readable GGUF file ({e})", file=str(self.path)) from None
        self.arch = _field(self.reader, "general.architecture")
        if self.arch not in SUPPORTED_ARCHITECTURES:
            raise ConvertError(f"unsupported GGUF architecture {self.arch!r}; supported: "
                               f"{', '.join(SUPPORTED_ARCHITECTURES)}", file=str(self.path))
        self._tensors = {}
        for t in self.reader.tensors:
            hf = self._hf_name(t.name)
            if hf is None:
                continue
            qtype = t.tensor_type.name
            if qtype not in SUPPORTED_TYPES:
                raise ConvertError(f"tensor {t.name!r} has GGUF type {qtype}, which sitegen does not convert; "
                                   f"supported: {', '.join(SUPPORTED_TYPES)}", file=str(self.path))
            self._tensors[hf] = t
        self.hf_config = self._hf_config()

    # -- names -------------------------------------------------------------------------------
    def _hf_name(self, name: str) -> str | None:
        if name == "rope_freqs.weight":
            raise ConvertError("this GGUF stores Llama 3 rope scaling as a 'rope_freqs' tensor, which sitegen "
                               "does not convert yet; convert the Hugging Face folder of the model instead",
                               file=str(self.path))
        base, _, suffix = name.rpartition(".")
        if base in _GLOBAL_NAMES:
            return f"{_GLOBAL_NAMES[base]}.{suffix}"
        m = re.fullmatch(r"blk\.(\d+)\.(\w+)", base)
        if m:
            part = m.group(2)
            if part == "ffn_norm":
                # Llama-style: the pre-MLP norm is HF's post_attention_layernorm; Gemma 2/3 name it
                # pre_feedforward_layernorm and use post_attention_layernorm for the sandwich norm.
                part_hf = "pre_feedforward_layernorm" if self.arch in ("gemma2", "gemma3") else "post_attention_layernorm"
            else:
                part_hf = _LAYER_NAMES.get(part)
            if part_hf:
                return f"model.layers.{m.group(1)}.{part_hf}.{suffix}"
        raise ConvertError(f"unexpected tensor {name!r} for GGUF architecture {self.arch!r}", file=str(self.path))

    def names(self) -> list[str]:
        return list(self._tensors)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(s) for s in reversed(self._tensors[name].shape.tolist()))

    def nbytes(self, name: str) -> int:
        return int(self._tensors[name].n_bytes)

    # -- config ------------------------------------------------------------------------------
    def _hf_config(self) -> dict:
        a = self.arch
        r = self.reader
        hf_arch, model_type = SUPPORTED_ARCHITECTURES[a]

        def need(key: str):
            v = _field(r, f"{a}.{key}")
            if v is None:
                raise ConvertError(f"missing GGUF metadata key '{a}.{key}'", file=str(self.path))
            return v

        hidden = int(need("embedding_length"))
        heads = int(need("attention.head_count"))
        kv_heads = _field(r, f"{a}.attention.head_count_kv", heads)
        if isinstance(kv_heads, list):
            raise ConvertError(f"per-layer '{a}.attention.head_count_kv' is not supported", file=str(self.path))
        head_dim = _field(r, f"{a}.attention.key_length") or _field(r, f"{a}.rope.dimension_count") or hidden // heads
        layers = int(need("block_count"))
        emb = self._tensors.get("model.embed_tokens.weight")
        vocab = self.shape("model.embed_tokens.weight")[0] if emb is not None else int(need("vocab_size"))
        cfg = {
            "architectures": [hf_arch], "model_type": model_type,
            "vocab_size": vocab, "hidden_size": hidden,
            "intermediate_size": int(_field(r, f"{a}.feed_forward_length", 0) or 0) if a == "qwen3moe"
            else int(need("feed_forward_length")),
            "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": int(kv_heads),
            "head_dim": int(head_dim),
            "max_position_embeddings": int(_field(r, f"{a}.context_length", 2048)),
            "rms_norm_eps": float(_field(r, f"{a}.attention.layer_norm_rms_epsilon", 1e-6)),
            "rope_theta": float(_field(r, f"{a}.rope.freq_base", 10000.0)),
            "tie_word_embeddings": "lm_head.weight" not in self._tensors,
            "bos_token_id": _field(r, "tokenizer.ggml.bos_token_id"),
            "eos_token_id": _field(r, "tokenizer.ggml.eos_token_id"),
        }
        scaling = _field(r, f"{a}.rope.scaling.type")
        if scaling == "linear":
            cfg["rope_scaling"] = {"rope_type": "linear", "type": "linear",
                                   "factor": float(_field(r, f"{a}.rope.scaling.factor", 1.0))}
        elif scaling not in (None, "none"):
            raise ConvertError(f"GGUF rope scaling {scaling!r} is not supported", file=str(self.path))
        experts = int(_field(r, f"{a}.expert_count", 0) or 0)
        if experts:
            # Sparse layers are those with a router; llama.cpp's Mixtral is "llama" with experts, and it
            # renormalises the top-k weights of both (build_moe_ffn's norm_w) unless expert_weights_norm says.
            sparse = [i for i in range(layers) if f"model.layers.{i}.mlp.gate.weight" in self._tensors]
            cfg["num_local_experts"] = cfg["num_experts"] = experts
            cfg["num_experts_per_tok"] = int(need("expert_used_count"))
            cfg["norm_topk_prob"] = bool(_field(r, f"{a}.expert_weights_norm", True))
            cfg["mlp_only_layers"] = [i for i in range(layers) if i not in sparse]
            if a == "llama":
                cfg["architectures"], cfg["model_type"] = ["MixtralForCausalLM"], "mixtral"
            else:
                cfg["moe_intermediate_size"] = int(need("expert_feed_forward_length"))
                cfg["intermediate_size"] = int(_field(r, f"{a}.feed_forward_length", 0) or cfg["moe_intermediate_size"])
        if a in ("llama", "qwen2", "qwen3", "qwen3moe"):
            cfg["hidden_act"] = "silu"
            has_bias = "model.layers.0.self_attn.q_proj.bias" in self._tensors
            cfg["attention_bias"] = has_bias
            cfg["mlp_bias"] = False
        if a in _GEMMA:
            cfg["hidden_activation"] = "gelu_pytorch_tanh"
            cfg["hidden_act"] = "gelu_pytorch_tanh"
        if a in ("gemma2", "gemma3"):
            # llama.cpp scales queries by 1/sqrt(head_dim), except Gemma 2/3 27B (62 layers in
            # Gemma 3, 46 in Gemma 2) which use hidden/heads: see its llama-model.cpp.
            big = (a == "gemma3" and layers == 62) or (a == "gemma2" and layers == 46)
            cfg["query_pre_attn_scalar"] = hidden // heads if big else int(head_dim)
            cfg["sliding_window"] = int(_field(r, f"{a}.attention.sliding_window", 4096))
            cfg["attn_logit_softcapping"] = _field(r, f"{a}.attn_logit_softcapping")
            cfg["final_logit_softcapping"] = _field(r, f"{a}.final_logit_softcapping")
        if a == "gemma2":
            cfg["layer_types"] = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)]
        if a == "gemma3":
            # Not stored in GGUF: llama.cpp and transformers' Gemma3TextConfig both use a local
            # rope base of 10000 and one full-attention layer in every 6.
            cfg["rope_local_base_freq"] = 10000.0
            cfg["sliding_window_pattern"] = 6
            cfg["layer_types"] = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)]
        return cfg

    # -- tensors -----------------------------------------------------------------------------
    def read_f32(self, name: str) -> np.ndarray:
        """Dequantize one tensor to f32 in HF layout and values (permutation and +1 undone)."""
        import gguf

        t = self._tensors[name]
        shape = self.shape(name)
        rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
        qtype = t.tensor_type
        data = t.data.reshape(rows, -1)
        out = np.empty((rows, shape[-1]), dtype=np.float32)
        step = max(1, _BLOCK_BYTES // max(1, data.shape[1] * data.itemsize))
        for r0 in range(0, rows, step):
            block = np.asarray(data[r0:r0 + step])
            if qtype not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
                block = block.view(np.uint8)
            out[r0:r0 + step] = gguf.quants.dequantize(block, qtype).reshape(-1, shape[-1])
        _drop_pages(self.reader.data, int(t.data_offset), int(t.n_bytes))
        w = out.reshape(shape)
        if self.arch == "llama" and name.endswith(("self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                                    "self_attn.q_proj.bias", "self_attn.k_proj.bias")):
            n_head = self.hf_config["num_attention_heads"] if ".q_proj." in name else self.hf_config["num_key_value_heads"]
            w = _unpermute(w, n_head)
        if self.arch in _GEMMA and name.endswith("norm.weight"):
            w -= 1.0
        return w

    # -- metadata ----------------------------------------------------------------------------
    kind = "gguf"

    @property
    def name(self) -> str:
        return self.path.name.removesuffix(".gguf")

    @property
    def config_file(self) -> str:
        return str(self.path)

    def file_of(self, name: str) -> str:
        return str(self.path)

    @property
    def weights_file(self) -> str:
        return str(self.path)

    def content_files(self) -> list[Path]:
        return [self.path]

    def tokenizer(self) -> dict:
        if "tokenizer.ggml.tokens" not in self.reader.fields:
            raise ConvertError("missing tokenizer: the GGUF has no 'tokenizer.ggml.tokens' metadata",
                               file=str(self.path))
        from sitegen.convert import tokenizer as tok

        return tok.from_gguf(self.reader, file=str(self.path))

    def _token(self, key: str) -> str | None:
        i = _field(self.reader, key)
        tokens = self.reader.fields.get("tokenizer.ggml.tokens")
        if i is None or tokens is None or not 0 <= int(i) < len(tokens.data):
            return None
        return bytes(tokens.parts[tokens.data[int(i)]]).decode("utf-8", "replace")

    def chat_template(self) -> tuple[str | None, str, dict]:
        special = {"bos_token": self._token("tokenizer.ggml.bos_token_id"),
                   "eos_token": self._token("tokenizer.ggml.eos_token_id")}
        return _field(self.reader, "tokenizer.chat_template"), f"{self.path} (tokenizer.chat_template)", special

    def generation(self) -> dict:
        gen = {}
        for key, gkey in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
                          ("pad_token_id", "padding_token_id")):
            v = _field(self.reader, f"tokenizer.ggml.{gkey}")
            if v is not None:
                gen[key] = int(v)
        eot = _field(self.reader, "tokenizer.ggml.eot_token_id")
        if eot is not None and "eos_token_id" in gen and eot != gen["eos_token_id"]:
            gen["eos_token_id"] = [gen["eos_token_id"], int(eot)]
        return gen


def _drop_pages(mm: np.memmap, offset: int, nbytes: int) -> None:
    """Let the kernel drop the file pages of a tensor already read from the reader's whole-file map,
    so they don't count in the resident set as the conversion walks the file (peak memory)."""
    import mmap

    m = getattr(mm, "_mmap", None)
    if m is None or not hasattr(m, "madvise"):
        return
    page = mmap.PAGESIZE
    start = offset - offset % page
    try:
        m.madvise(mmap.MADV_DONTNEED, start, min(len(m), offset + nbytes) - start)
    except (OSError, ValueError):
        pass  # advice only


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp's ``permute``: rows per head go from (dim/2, 2) back to (2, dim/2)."""
    rest = w.shape[1:]
    half = w.shape[0] // n_head // 2
    return np.ascontiguousarray(w.reshape(n_head, half, 2, *rest).swapaxes(1, 2)).reshape(w.shape)
