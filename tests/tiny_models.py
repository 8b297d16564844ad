"""Tiny random-weight Hugging Face models for tests (shared by every helper's tests).

``make_tiny(arch, out_dir)`` builds a 2-layer transformers model of one family with a fixed seed,
perturbs it so that every feature shows in the logits, and saves it as a checkpoint folder
(safetensors + config.json + a tiny byte-level BPE tokenizer.json + tokenizer_config.json with a
chat template + generation_config.json). Nothing is downloaded; transformers is imported lazily.

Why the perturbation: a fresh model has norm weights at 1 (0 for Gemma), biases at 0 and matrices
at std 0.02, so forgetting a norm, a bias or Gemma's ``1 + w`` would not change the logits much.
Here norm weights are ``init + 0.2·N(0,1)``, biases ``0.1·N(0,1)``, matrices ``N(0,1)/sqrt(fan_in)``
and embeddings / untied heads ``N(0,1)``, which gives logits with a range of tens, so greedy decoding is far from
ties and any missing piece moves the logits by much more than the 1e-4 tolerance.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["ARCHES", "make_tiny", "make_tokenizer"]

# Dimensions: hidden 64, 4 heads of 16 (GQA 2 kv heads where the family allows it), MLP 128; every
# matrix has a multiple of 32 columns so q8/q4 apply to all of them.
_COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               max_position_embeddings=256, tie_word_embeddings=False)

# arch key → (transformers config class name, config kwargs)
ARCHES: dict[str, tuple[str, dict]] = {
    "llama": ("LlamaConfig", dict(_COMMON, num_key_value_heads=2, rope_theta=10000.0)),
    "llama3": ("LlamaConfig", dict(_COMMON, num_key_value_heads=2, tie_word_embeddings=True,
                                   rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0,
                                                    "factor": 8.0, "low_freq_factor": 1.0,
                                                    "high_freq_factor": 4.0,
                                                    "original_max_position_embeddings": 64})),
    "mistral": ("MistralConfig", dict(_COMMON, num_key_value_heads=2, head_dim=16, sliding_window=8)),
    "qwen2": ("Qwen2Config", dict(_COMMON, num_key_value_heads=2)),
    "qwen3": ("Qwen3Config", dict(_COMMON, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True)),
    "gemma": ("GemmaConfig", dict(_COMMON, num_key_value_heads=1, head_dim=32, tie_word_embeddings=True,
                                  hidden_act="gelu_pytorch_tanh")),
    "gemma2": ("Gemma2Config", dict(_COMMON, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
                                    query_pre_attn_scalar=24, sliding_window=6,
                                    attn_logit_softcapping=5.0, final_logit_softcapping=30.0)),
    "gemma3": ("Gemma3TextConfig", dict(_COMMON, num_hidden_layers=3, num_key_value_heads=2, head_dim=32,
                                        tie_word_embeddings=True, query_pre_attn_scalar=24, sliding_window=6,
                                        layer_types=["sliding_attention", "sliding_attention",
                                                     "full_attention"],
                                        rope_parameters={
                                            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                            "full_attention": {"rope_type": "linear", "factor": 4.0,
                                                               "rope_theta": 1000000.0}})),
    "phi": ("PhiConfig", dict(_COMMON, num_key_value_heads=4, hidden_act="gelu_new",
                              rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                               "partial_rotary_factor": 0.5})),
    "phi3": ("Phi3Config", dict(_COMMON, num_key_value_heads=2, pad_token_id=0, sliding_window=None,
                                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                 "partial_rotary_factor": 0.75})),
    "stablelm": ("StableLmConfig", dict(_COMMON, num_key_value_heads=2, use_qkv_bias=True,
                                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                         "partial_rotary_factor": 0.25})),
    "falcon": ("FalconConfig", dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                    max_position_embeddings=256, multi_query=True, parallel_attn=True,
                                    new_decoder_architecture=False, bias=False, alibi=False,
                                    tie_word_embeddings=True)),
    # issue 12: NoPE layers (interval 2: layer 1 skips RoPE), and mixture-of-experts models with 4
    # experts, top-2: Mixtral (top-k renormalised, sliding window), Qwen3-MoE (a dense layer among
    # sparse ones via mlp_only_layers, expert MLP 64 wide, top-k weights not renormalised).
    "smollm3": ("SmolLM3Config", dict(_COMMON, num_hidden_layers=3, num_key_value_heads=2, no_rope_layer_interval=2,
                                      pad_token_id=0,
                                      rope_parameters={"rope_type": "default", "rope_theta": 50000.0})),
    "mixtral": ("MixtralConfig", dict(_COMMON, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                                      sliding_window=12)),
    "qwen3_moe": ("Qwen3MoeConfig", dict(_COMMON, num_hidden_layers=3, num_key_value_heads=2, head_dim=32,
                                         num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64,
                                         mlp_only_layers=[1], decoder_sparse_step=1, norm_topk_prob=False)),
    "gpt2": ("GPT2Config", dict(n_embd=64, n_layer=2, n_head=4, n_positions=256, n_inner=128,
                                activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                                attn_pdrop=0.0, tie_word_embeddings=True)),
}

_SPECIALS = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]
_CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}"
                  "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
_CORPUS = [
    "The quick brown fox jumps over the lazy dog. Hello world, this is a tiny model!",
    "Static sites can run language models in the browser with WebGPU shaders and numpy oracles.",
    "Once upon a time there was a little tokenizer that merged bytes into words: 0123456789.",
    "Ünïcödé text, émojis 🙂 and tabs\tand\nnewlines are bytes too; byte-level BPE keeps them all.",
]


def make_tokenizer(out_dir: Path, *, vocab_size: int = 384) -> int:
    """Write a tiny byte-level BPE ``tokenizer.json`` + ``tokenizer_config.json``; returns its size.

    Ids 0..5 are ``<unk> <s> </s> <|user|> <|assistant|> <|system|>`` (bos 1, eos 2).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=_SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "add_bos_token": False, "chat_template": _CHAT_TEMPLATE,
        "model_max_length": 256}, indent=2))
    return tok.get_vocab_size()


def _perturb(model, seed: int) -> None:
    """Move every parameter away from its init (see the module docstring for why)."""
    import torch

    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if p.ndim >= 2:
                if any(k in name for k in ("wte", "wpe", "embed", "lm_head")):
                    p.copy_(noise)
                else:  # nn.Linear is [out, in]; GPT-2 Conv1D is [in, out]: both ~ hidden-ish fan-in
                    # (MoE experts are one [experts, out, in] parameter: the fan-in is the last dim)
                    fan_in = p.shape[0] if "c_" in name.rsplit(".", 2)[-2] else p.shape[-1]
                    p.copy_(noise / fan_in ** 0.5)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            else:  # norm weights (1 for most, 0 for Gemma's 1 + w)
                p.add_(0.2 * noise)


def make_tiny(arch: str, out_dir: Path, *, seed: int = 0, **overrides) -> Path:
    """Build, perturb and save a tiny ``arch`` model (a key of ``ARCHES``) in ``out_dir``; returns it.

    ``overrides`` update the transformers config kwargs (e.g. ``tie_word_embeddings=True``,
    ``qk_layernorm=True``, ``use_parallel_residual=True``, ``new_decoder_architecture=True``).
    """
    import torch
    import transformers

    if arch not in ARCHES:
        raise KeyError(f"unknown tiny arch {arch!r}; known: {', '.join(ARCHES)}")
    transformers.utils.logging.disable_progress_bar()
    out_dir = Path(out_dir)
    vocab = make_tokenizer(out_dir)
    cls_name, kwargs = ARCHES[arch]
    # overrides win (``vocab_size`` larger than the tokenizer makes padding rows, as Phi-2 and Qwen2.5 have)
    kwargs = {**kwargs, "vocab_size": vocab, "bos_token_id": 1, "eos_token_id": 2, **overrides}
    config = getattr(transformers, cls_name)(**kwargs)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    _perturb(model, seed)
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    transformers.GenerationConfig(bos_token_id=1, eos_token_id=2, do_sample=True, temperature=0.7,
                                  top_p=0.9, top_k=40).save_pretrained(out_dir)
    return out_dir
