"""The WebGPU engine on the families of issue 12 (SmolLM3's NoPE layers, Mixtral and Qwen3-MoE's
mixture-of-experts MLPs), under Node + Dawn, against transformers and the numpy reference.

Tiny random-weight models from tests/tiny_models.py with perturbed norms: SmolLM3 with a NoPE
layer between two RoPE ones; Mixtral with 4 experts, top-2 (renormalised) and a sliding window of
12 (shorter than the greedy run); Qwen3-MoE with 4 experts, top-2 (not renormalised), q/k norms
and a dense layer (mlp_only_layers) between two sparse ones.

Bounds: at f32 every logit of every position is within 1e-4 × (max - min of transformers' logits)
of both oracles (the prompt is 20 tokens, so prefill runs the tiled matmul and the MoE kernels over
several tokens; decoding runs the matvec path and one token's experts), and 32 greedy tokens equal
transformers' ``generate``. The router's choices are compared with transformers' on every
position in tests/test_moe_kernels.py (the route kernel fed transformers' own router logits) and in
tests/test_reference.py (the reference's routes); a different choice anywhere would move that
position's logits by far more than the bound here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_engine import PROMPT, hf_logits, js_logits_and_greedy_many, models  # noqa: F401 (fixture)

pytestmark = pytest.mark.gpu

ISSUE12_ARCHES = ["smollm3", "mixtral", "qwen3_moe"]


def _within_range(got: np.ndarray, want: np.ndarray, frac: float, what: str) -> None:
    assert got.shape == want.shape, (got.shape, want.shape)
    bound = frac * float(want.max() - want.min())
    err = float(np.abs(got - want).max())
    assert err <= bound, f"{what}: max |diff| {err:.3g} > {frac} x range {bound / frac:.3g}"


@pytest.fixture(scope="module")
def engine_runs(models) -> dict:
    """arch → the engine's logits of PROMPT and 32 greedy tokens after its first 5 (eos is a token
    like any), for the three families, from one Node process on one WebGPU device."""
    folders = {arch: str(models(arch, "f32")) for arch in ISSUE12_ARCHES}
    return js_logits_and_greedy_many(folders, PROMPT, PROMPT[:5], 32, ignore_eos=True)


@pytest.mark.parametrize("arch", ISSUE12_ARCHES)
def test_issue12_families_match_transformers_at_f32(models, engine_runs, arch):
    from sitegen.reference.model import load

    folder = models(arch, "f32")
    src = folder.parent / f"{arch}_src"
    manifest = json.loads((folder / "manifest.json").read_text())
    if arch == "smollm3":
        assert manifest["config"]["nope_layers"] == [1]
    else:
        moe = manifest["config"]["moe"]
        assert moe["num_experts"] == 4 and moe["top_k"] == 2
        assert moe["layers"] == ([0, 2] if arch == "qwen3_moe" else [0, 1])
    prompt = PROMPT[:5]
    run = engine_runs[arch]
    if isinstance(run, str):
        raise AssertionError(run)
    logits, greedy = run[0], run[1]["tokenIds"]
    _within_range(logits, hf_logits(src, PROMPT), 1e-4, "engine vs transformers")
    _within_range(logits, load(folder).logits(PROMPT), 1e-4, "engine vs numpy reference")
    assert greedy == hf_greedy_past_eos(src, prompt, 32)


def hf_greedy_past_eos(src, prompt: list[int], n: int) -> list[int]:
    """transformers' argmax after each prefix, recomputed from scratch (no cache logic shared with ours)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    return seq[len(prompt):]


def test_moe_requirements_count_the_active_experts(models):
    """weights_bytes_per_token: all weights but the unselected experts (and the embedding table but
    one row); recomputed here from the tensor table."""
    for arch in ("mixtral", "qwen3_moe"):
        m = json.loads((models(arch, "q4") / "manifest.json").read_text())
        moe, req = m["config"]["moe"], m["requirements"]
        experts = [t for t in m["tensors"] if ".mlp.experts." in t["name"]]
        assert len(experts) == 3 * len(moe["layers"])
        assert all(t["shape"][0] == moe["num_experts"] and t["dtype"] == "q4" for t in experts)
        routers = [t for t in m["tensors"] if t["name"].endswith(".mlp.router.weight")]
        assert routers and all(t["dtype"] == "f32" for t in routers)
        embed = next(t for t in m["tensors"] if t["name"] == "embed.weight")
        unread = sum(t["nbytes"] * (moe["num_experts"] - moe["top_k"]) // moe["num_experts"] for t in experts)
        unread += embed["nbytes"] - embed["nbytes"] // embed["shape"][0]
        assert req["weights_bytes_per_token"] == req["weights_bytes"] - unread
        assert req["weights_bytes_per_token"] < 0.75 * req["weights_bytes"]
