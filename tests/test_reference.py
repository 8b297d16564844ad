"""The numpy reference against transformers, per architecture (issue 3, items 5 and 6).

For every family (and the variants a flag switches on) a tiny random-weight transformers model is
built (``tests/tiny_models.py``), converted with ``sitegen.convert.convert`` and run by
``sitegen.reference``; transformers (float32, eager attention) is the oracle.

Bounds:
- f32: max |ours - transformers| ≤ 1e-4 × (max - min of transformers' logits); measured ≤ 4e-7, i.e.
  float32 rounding of a different summation order. 32 greedy tokens identical.
- q8 / q4 (vs our own f32, which the line above ties to transformers): with σ the standard
  deviation of the f32 logits (each row centred),
    relative RMS error ‖q - f32‖ / σ ≤ 0.025 (q8), ≤ 0.30 (q4);
    the argmax agrees at every position where f32's top-1/top-2 margin exceeds 0.1σ (q8), 1.0σ (q4),
    over the prompt and the 32 greedy f32 tokens (teacher forcing).
  Justification: with Gaussian weights, a group of 32 has max |w| ≈ 2.4 std, so the rounding step is
  2.4/127 (q8) or 2.4/8 (q4) std and the per-weight RMS error ≈ step/√12 ≈ 0.55% (q8) or 8.7% (q4);
  about seven matrices in series per layer push that to ≈ 1.3% / 20% of σ at the logits. Measured
  over the 13 families × 3 seeds: q8 ≤ 0.014, q4 ≤ 0.22; largest margin where the argmax flipped:
  0.027σ (q8), 0.66σ (q4). Each threshold is about 4 standard deviations of the difference of two
  logit errors (√2 × 0.014σ, √2 × 0.2σ). Identical greedy *sequences* are not required at q8/q4:
  on random weights a near-tie a few tokens in sends both sequences apart (measured: q8 diverged
  after 1 token once in 39 runs), so teacher forcing is the meaningful check.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from oracles import need

from tiny_models import make_tiny

torch = need("torch")
transformers = need("transformers")

from sitegen.convert import convert  # noqa: E402
from sitegen.reference import KVCache, load  # noqa: E402

# case id → (arch key of tiny_models.ARCHES, config overrides)
CASES: dict[str, tuple[str, dict]] = {
    "llama": ("llama", {}),
    "llama-tied-biases": ("llama", {"tie_word_embeddings": True, "attention_bias": True, "mlp_bias": True}),
    "llama3": ("llama3", {}),
    "mistral": ("mistral", {}),
    "qwen2": ("qwen2", {}),
    "qwen2-sliding": ("qwen2", {"use_sliding_window": True, "sliding_window": 5, "max_window_layers": 1}),
    "qwen3": ("qwen3", {}),
    "gemma": ("gemma", {}),
    "gemma2": ("gemma2", {}),
    "gemma3": ("gemma3", {}),
    "phi": ("phi", {}),
    "phi-qk-layernorm": ("phi", {"qk_layernorm": True}),
    "phi3": ("phi3", {}),
    "stablelm": ("stablelm", {}),
    "stablelm-qk-norm-parallel": ("stablelm", {"qk_layernorm": True, "use_parallel_residual": True,
                                               "use_qkv_bias": False}),
    "falcon": ("falcon", {}),
    "falcon-new-arch": ("falcon", {"new_decoder_architecture": True, "num_kv_heads": 2}),
    "falcon-mha-sequential": ("falcon", {"multi_query": False, "parallel_attn": False, "bias": True}),
    "gpt2": ("gpt2", {}),
    # issue 12: NoPE layers; mixture-of-experts (several experts, top-2, a dense layer among sparse ones)
    "smollm3": ("smollm3", {}),
    "smollm3-sliding-nope": ("smollm3", {"use_sliding_window": True, "sliding_window": 5}),
    "mixtral": ("mixtral", {}),
    "qwen3_moe": ("qwen3_moe", {}),
    "qwen3_moe-norm-topk-sparse-step": ("qwen3_moe", {"norm_topk_prob": True, "mlp_only_layers": [],
                                                      "decoder_sparse_step": 2, "num_experts_per_tok": 3}),
}
MOE_CASES = ["mixtral", "qwen3_moe", "qwen3_moe-norm-topk-sparse-step"]
QUANT_CASES = ["llama", "llama3", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi", "phi3",
               "stablelm", "falcon", "gpt2", "smollm3", "mixtral", "qwen3_moe"]
QUANT_BOUNDS = {"q8": (0.025, 0.1), "q4": (0.30, 1.0)}  # (relative RMS, margin in σ); see the docstring
MOE_FLIPS = {"q8": 0.1, "q4": 0.4}  # most positions whose experts may change (test_quantized_within_bounds)
MOE_Q8_RMS = 0.04
PROMPT_LEN = 16  # > every tiny sliding window (5, 6, 8), so the windows matter
GREEDY = 32


class _Built:
    """One tiny model: its checkpoint, transformers' model, our converted models (by quant)."""

    def __init__(self, root, case: str):
        arch, overrides = CASES[case]
        self.src = make_tiny(arch, root / "src", **overrides)
        self.root = root
        self._ours: dict = {}
        self.hf = transformers.AutoModelForCausalLM.from_pretrained(
            self.src, attn_implementation="eager", dtype=torch.float32).eval()
        vocab = self.hf.config.vocab_size
        self.prompt = np.random.default_rng(0).integers(3, vocab, PROMPT_LEN).tolist()

    def ours(self, quant: str = "f32"):
        if quant not in self._ours:
            self._ours[quant] = load(convert(self.src, self.root / f"out-{quant}", quant=quant))
        return self._ours[quant]

    def hf_logits(self, tokens: list[int]) -> np.ndarray:
        with torch.no_grad():
            return self.hf(torch.tensor([tokens])).logits[0].numpy()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache: dict[str, _Built] = {}

    def get(case: str) -> _Built:
        if case not in cache:
            cache[case] = _Built(tmp_path_factory.mktemp(case), case)
        return cache[case]

    return get


@pytest.mark.parametrize("case", CASES)
def test_logits_match_transformers(built, case):
    b = built(case)
    ref = b.hf_logits(b.prompt)  # [T, V]
    ours = b.ours().logits(b.prompt)  # [T, V]
    assert ours.shape == ref.shape
    bound = 1e-4 * float(ref.max() - ref.min())
    assert float(np.abs(ours - ref).max()) <= bound


@pytest.mark.parametrize("case", CASES)
def test_greedy_tokens_match_transformers(built, case):
    b = built(case)
    ours = b.ours().generate(b.prompt, GREEDY)  # prefill, then decode one token at a time
    seq = list(b.prompt)
    for _ in range(GREEDY):  # transformers recomputes the whole sequence each step: no shared cache logic
        seq.append(int(b.hf_logits(seq)[-1].argmax()))
    assert ours == seq[len(b.prompt):]


@pytest.mark.parametrize("case", ["llama3", "gemma2", "gemma3", "falcon-new-arch", "gpt2", "mistral", "smollm3",
                                  "mixtral", "qwen3_moe"])
def test_prefill_then_decode_equals_all_at_once(built, case):
    model = built(case).ours()
    tokens = built(case).prompt + [7, 8, 9, 10]
    whole = model.logits(tokens)  # [T, V]
    cache = KVCache()
    parts = [model.forward(tokens[:9], cache)] + [model.forward([t], cache) for t in tokens[9:]]
    assert cache.length == len(tokens)
    stepwise = np.concatenate(parts)
    assert np.abs(stepwise - whole).max() <= 1e-5 * float(whole.max() - whole.min())


def hf_routes(model, tokens: list[int]) -> dict[int, np.ndarray]:
    """transformers' expert choices per MoE layer [T, top_k], from its routers' own outputs
    (MixtralTopKRouter / Qwen3MoeTopKRouter return logits, scores, indices)."""
    routes: dict[int, np.ndarray] = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        router = next((m for m in layer.modules() if type(m).__name__.endswith("TopKRouter")), None)
        if router is not None:
            hooks.append(router.register_forward_hook(
                lambda mod, args, out, i=i: routes.__setitem__(i, out[2].numpy())))
    try:
        with torch.no_grad():
            model(torch.tensor([tokens]))
    finally:
        for h in hooks:
            h.remove()
    return routes


@pytest.mark.parametrize("case", MOE_CASES)
def test_router_choices_match_transformers(built, case):
    """The same experts for every token of every sparse layer (as sets: topk's order among the chosen
    does not change the sum), over the prompt and the greedy continuation; dense layers route nothing."""
    b = built(case)
    ours = b.ours()
    seq = b.prompt + ours.generate(b.prompt, GREEDY)
    ours.logits(seq)
    want = hf_routes(b.hf, seq)
    moe = ours.config["moe"]
    assert sorted(want) == sorted(ours.routes) == moe["layers"]
    assert len(moe["layers"]) < ours.config["num_layers"] or case == "mixtral"  # a dense layer among sparse ones
    for i in moe["layers"]:
        assert ours.routes[i].shape == (len(seq), moe["top_k"])
        assert [sorted(r) for r in ours.routes[i].tolist()] == [sorted(r) for r in want[i].tolist()], f"layer {i}"
    # every expert is used somewhere, so a wrong expert's weights would show in the logits
    assert all(len(np.unique(ours.routes[i])) == moe["num_experts"] for i in moe["layers"])


@pytest.mark.parametrize("quant", ["q8", "q4"])
@pytest.mark.parametrize("case", QUANT_CASES)
def test_quantized_within_bounds(built, case, quant):
    b = built(case)
    f32 = b.ours("f32")
    seq = b.prompt + f32.generate(b.prompt, GREEDY)
    ref = f32.logits(seq)  # [T, V]
    quantized = b.ours(quant)
    got = quantized.logits(seq)  # [T, V]
    sigma = float(np.sqrt(np.mean((ref - ref.mean(-1, keepdims=True)) ** 2)))
    max_rel, margin_sigmas = QUANT_BOUNDS[quant]
    keep = np.ones(len(seq), bool)  # [T]
    if f32.config.get("moe"):
        # A router is a discontinuity: where quantization error moves a token's hidden state across a
        # near-tie of its router, the token runs another expert and its logits jump by the difference
        # of two experts, which no smooth error bound covers. Such positions (measured: 1 of 48 at q8,
        # 7-10 of 48 at q4) are counted and left out; the others get the dense bounds, with q8's RMS
        # bound widened to MOE_Q8_RMS (measured 0.012-0.025: three layers of experts, whose weights are
        # a softmax of quantized activations, instead of two dense ones).
        for i in f32.config["moe"]["layers"]:
            keep &= [set(a) == set(c) for a, c in zip(f32.routes[i].tolist(), quantized.routes[i].tolist())]
        assert (~keep).mean() <= MOE_FLIPS[quant], f"{(~keep).sum()} of {len(seq)} positions changed experts"
        if quant == "q8":
            max_rel = MOE_Q8_RMS
    rel_rms = float(np.sqrt(np.mean((got - ref)[keep] ** 2))) / sigma
    assert rel_rms <= max_rel
    top2 = np.sort(ref, axis=-1)[:, -2:]  # [T, 2]
    clear = ((top2[:, 1] - top2[:, 0]) > margin_sigmas * sigma) & keep  # [T] positions with a clear winner
    assert clear.any()
    assert (got.argmax(-1) == ref.argmax(-1))[clear].all()


def test_quantized_manifests_use_the_asked_storage(built):
    model_dir = built("llama").root / "out-q4"
    built("llama").ours("q4")
    tensors = {t["name"]: t for t in json.loads((model_dir / "manifest.json").read_text())["tensors"]}
    assert tensors["layers.0.attn.q.weight"]["dtype"] == "q4"
    assert tensors["layers.0.attn_norm.weight"]["dtype"] == "f32"


# -- command line -------------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sitegen.reference", *args], capture_output=True, text=True,
                          timeout=120)


def test_cli_logits_prints_all_positions(built):
    b = built("gpt2")
    b.ours()
    r = _cli("logits", "--model", str(b.root / "out-f32"), "--tokens", "5,6,7")
    assert r.returncode == 0, r.stderr
    logits = np.array(json.loads(r.stdout)["logits"])
    assert logits.shape == (3, b.hf.config.vocab_size)
    ref = b.hf_logits([5, 6, 7])
    assert np.abs(logits - ref).max() <= 1e-4 * float(ref.max() - ref.min())


def test_cli_generate_encodes_decodes_and_matches_transformers(built):
    from tokenizers import Tokenizer

    b = built("llama")
    b.ours()
    r = _cli("generate", "--model", str(b.root / "out-f32"), "--prompt", "Hello world, tiny model",
             "--max-new-tokens", "8")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    tok = Tokenizer.from_file(str(b.src / "tokenizer.json"))
    assert out["prompt_ids"] == tok.encode("Hello world, tiny model").ids
    seq = list(out["prompt_ids"])
    for _ in range(len(out["ids"])):
        seq.append(int(b.hf_logits(seq)[-1].argmax()))
        if seq[-1] == 2:  # eos of the tiny tokenizer
            break
    assert out["ids"] == seq[len(out["prompt_ids"]):]
    assert out["text"] == tok.decode(out["ids"], skip_special_tokens=True)


@pytest.mark.parametrize("args, message", [
    (["logits", "--model", "{dir}", "--tokens", "1,x"], "error: --tokens: expected comma-separated integers, got '1,x'"),
    (["logits", "--model", "{dir}", "--tokens", "1,99999"],
     "error: --tokens: token id(s) [99999] outside the vocabulary 0..383"),
    (["logits", "--model", "{missing}", "--tokens", "1"], "no manifest.json in"),
    (["generate", "--model", "{dir}", "--prompt", "hi", "--max-new-tokens", "0"],
     "error: --max-new-tokens: must be at least 1, got 0"),
])
def test_cli_errors(built, tmp_path, args, message):
    b = built("gpt2")
    b.ours()
    args = [a.format(dir=b.root / "out-f32", missing=tmp_path / "nope") for a in args]
    r = _cli(*args)
    assert r.returncode == 1
    assert message in r.stderr
    assert "Traceback" not in r.stderr
