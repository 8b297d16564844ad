"""Long contexts (issue 12, item 3): a 4096-token prompt on a tiny model of every family against
transformers at its last positions, in the numpy reference and in the runtime's WebAssembly CPU
backend (Node) for every family, and in the WebGPU engine (Node + Dawn) for the families whose
long-context machinery differs.

Each model is tiny (hidden 64, 2-3 layers) with max_position_embeddings 4096. Both runtimes
prefill the first 4090 tokens (the engine in chunks of its default prefill size, so the KV cache is
written across many submits) and then decode the last 6 one at a time (the engine's decode attention
at positions ~4090); the 7 logits rows (positions 4089..4095) are compared with transformers' rows
for the whole prompt. The sliding-window families (Mistral 8, Gemma 2/3 6, Mixtral 12, Qwen2 and
SmolLM3 variants with sliding layers) see prompts hundreds of windows long.

The Wasm backend runs every case (all 18 in one Node process, ~2 s each on this 2-core machine). The
WebGPU engine runs Gemma 3 (sliding and full layers with two RoPE bases, linear RoPE scaling, q/k
norms) and Mixtral (every layer sliding, experts) only, because a 4k prefill on the CPU Vulkan
drivers of CI costs minutes per model (measured on this 2-core machine under load: lavapipe ~5 min,
SwiftShader ~10 min for one 4k prompt of a tiny model); every family runs in the WebGPU engine at
short contexts (test_engine.py, test_engine_models.py), and the graph (RoPE positions, KV-cache
offsets, the attention span, window masks) is the one the Wasm backend runs at 4k. The WebGPU engine
runs on lavapipe when it is installed (several times faster here), else SwiftShader.

Bound: 1e-4 × the range of transformers' logits at those positions, as at short contexts. Nothing
is loosened for length: our RoPE angles are exact (float64 tables) while transformers rounds
``position * inv_freq`` to float32 (~2.4e-4 rad at position 4000); the measured worst is printed.

The context-limit policy at this length: a 4096-token prompt in a 4096-token window is refused with
ContextWindowExceededError (its message is tested in test_engine.py, as is generation stopping with
finish_reason "length" when the window fills), and no position past the KV cache is ever written.
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest

from test_engine import node_env
from tiny_models import make_tiny

N = 4096
PREFILL = N - 6
# case → (tiny arch, overrides); max_position_embeddings (n_positions for GPT-2) becomes N
CASES = {
    "llama": ("llama", {}), "llama3": ("llama3", {}), "mistral": ("mistral", {}), "qwen2": ("qwen2", {}),
    "qwen2-sliding": ("qwen2", {"use_sliding_window": True, "sliding_window": 16, "max_window_layers": 1}),
    "qwen3": ("qwen3", {}), "gemma": ("gemma", {}), "gemma2": ("gemma2", {}), "gemma3": ("gemma3", {}),
    "phi": ("phi", {}), "phi3": ("phi3", {}), "stablelm": ("stablelm", {}), "falcon": ("falcon", {}),
    "gpt2": ("gpt2", {}), "smollm3": ("smollm3", {}),
    "smollm3-sliding": ("smollm3", {"use_sliding_window": True, "sliding_window": 32}),
    "mixtral": ("mixtral", {}), "qwen3_moe": ("qwen3_moe", {}),
}
ENGINE_CASES = ["gemma3", "mixtral"]


def _check(got: dict[str, np.ndarray], want: dict[str, np.ndarray], what: str) -> None:
    failures, worst = [], {}
    for case, rows in got.items():
        ref = want[case]
        err = float(np.abs(rows - ref).max())
        rng = float(ref.max() - ref.min())
        worst[case] = f"{err / rng:.2g}"
        if err > 1e-4 * rng:
            failures.append(f"{case}: max |diff| {err:.3g} > 1e-4 x range {rng:.3g}")
    print(f"{what}: max |diff| / range per family:", worst)
    assert not failures, failures


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """get(case) → (converted f32 folder, transformers' logits rows at positions PREFILL-1 .. N-1), built
    on first use; and the prompt."""
    import torch
    from transformers import AutoModelForCausalLM

    from sitegen.convert import convert

    root = tmp_path_factory.mktemp("long")
    tokens = np.random.default_rng(4).integers(3, 384, N).tolist()
    cache: dict = {}

    def get(case: str):
        if case not in cache:
            arch, overrides = CASES[case]
            length = {"n_positions": N} if arch == "gpt2" else {"max_position_embeddings": N}
            src = make_tiny(arch, root / f"{case}_src", **overrides, **length)
            folder = convert(src, root / case, quant="f32")
            model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
            with torch.no_grad():
                cache[case] = (folder, model(torch.tensor([tokens])).logits[0, PREFILL - 1:].numpy())
        return cache[case]

    return get, tokens


def test_reference_4k_prompt_matches_transformers_at_the_last_positions(built):
    from sitegen.reference import KVCache, load

    get, tokens = built
    got = {}
    for case in CASES:
        model = load(get(case)[0])
        cache = KVCache()
        rows = [model.forward(tokens[:PREFILL], cache)[-1]]
        rows += [model.forward([t], cache)[0] for t in tokens[PREFILL:]]
        assert cache.length == N
        got[case] = np.array(rows)
    _check(got, {c: get(c)[1] for c in CASES}, "reference")


def _engine_env() -> dict:
    lvp = sorted(glob.glob("/usr/share/vulkan/icd.d/lvp_icd*.json"))
    if not lvp or os.environ.get("SITEGEN_TEST_GPU") == "native":
        return node_env()
    return {**os.environ, "VK_ICD_FILENAMES": lvp[0], "GALLIVM_PERF": "nopt"}


def _run_engine(built, cases: list[str], options: str, env: dict) -> dict:
    """One Node process: for each case, the 7 logits rows of an engine created with `options` (a JS object
    literal's body); and, on the first case, the context-limit checks (they cost no second 4k prefill)."""
    import subprocess

    get, tokens = built
    folders = {c: str(get(c)[0]) for c in cases}
    script = f"""
    import {{ createEngine }} from "./runtime/engine.js";
    const ids = Int32Array.from({json.dumps(tokens)});
    const out = {{}};
    for (const [name, dir] of Object.entries({json.dumps(folders)})) {{
      try {{
        const e = await createEngine({{ modelDir: dir, contextLength: {N}, warmup: false, {options} }});
        const rows = [Array.from(await e.model.forward(ids.subarray(0, {PREFILL}), 0))];
        for (let p = {PREFILL}; p < {N}; p++) rows.push(Array.from(await e.model.forward(ids.subarray(p, p + 1), p)));
        out[name] = rows;
        if (name === {json.dumps(cases[0])}) {{
          // a prompt that fills the window is refused before any work, and the backend refuses a
          // position past the cache
          try {{ const g = e.generate({{ promptIds: Array.from(ids) }}); await g.next(); out.full = "no error"; }}
          catch (err) {{ out.full = err.name; }}
          try {{ await e.model.forward(ids.subarray(0, 1), {N}); out.beyond = "no error"; }}
          catch (err) {{ out.beyond = err.message; }}
        }}
        await e.unload();
      }} catch (err) {{ out[name] = `${{err.name}}: ${{err.message}}`; }}
    }}
    console.log(JSON.stringify(out));
    """
    proc = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True,
                          env=env, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check_engine(built, out: dict, cases: list[str], what: str) -> None:
    get, _ = built
    errors = {c: out[c] for c in cases if isinstance(out[c], str)}
    assert not errors, errors
    _check({c: np.array(out[c]) for c in cases}, {c: get(c)[1] for c in cases}, what)


@pytest.fixture(scope="module")
def engine_run(built):
    # f32 compute: "auto" would take f16 arithmetic on lavapipe (it has shader-f16)
    return _run_engine(built, ENGINE_CASES, 'compute: "f32"', _engine_env())


@pytest.mark.gpu
@pytest.mark.slow
def test_engine_4k_prompt_matches_transformers_at_the_last_positions(built, engine_run):
    _check_engine(built, engine_run, ENGINE_CASES, "engine (WebGPU)")


@pytest.mark.gpu
@pytest.mark.slow
def test_context_limit_policy_at_4k(engine_run):
    """(A 4095-token prompt getting one token and finish_reason "length" is the same rule as
    test_engine.py's 12 + 4 in a window of 16, without a second 4k prefill here.)"""
    assert engine_run["full"] == "ContextWindowExceededError"
    assert engine_run["beyond"] == f"forward: positions {N}..{N} exceed the KV cache ({N})."


def test_wasm_engine_4k_prompt_matches_transformers_at_the_last_positions(built):
    """Every case on the CPU backend (one thread), with the same context-limit checks (~2 s a case)."""
    out = _run_engine(built, list(CASES), 'backend: "wasm", threads: 1', dict(os.environ))
    _check_engine(built, out, list(CASES), "engine (Wasm)")
    assert out["full"] == "ContextWindowExceededError"
    assert out["beyond"] == f"forward: positions {N}..{N} exceed the KV cache ({N})."
