"""The WebGPU engine on every model variant the numpy reference is tested on (issue 10, defects).

tests/test_engine.py covers the four Llama-family models at f32/q8/q4 and the other families in
their default configuration; here every other variant of tests/test_reference.py's CASES runs
through the engine too (Phi's q/k LayerNorm, StableLM's per-head q/k norm with a parallel
residual, a gated MLP with biases, Qwen2's sliding layers, Falcon's other layouts), against
transformers at f32: all-position logits within 1e-4 of the logits' range and greedy tokens
(chosen on the GPU) equal to transformers' ``generate``. A model whose embedding has padding
rows past the tokenizer's vocabulary never samples them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from test_engine import PROMPT, SHARED_DEVICE_JS, hf_greedy, hf_logits, js_logits_and_greedy_many, run_cli, run_node
from test_reference import CASES
from tiny_models import make_tiny

pytestmark = pytest.mark.gpu

# Variants not already run through the engine by tests/test_engine.py.
VARIANTS = ["llama-tied-biases", "qwen2-sliding", "phi-qk-layernorm", "stablelm-qk-norm-parallel",
            "falcon-new-arch", "falcon-mha-sequential"]
GREEDY = 16


@pytest.fixture(scope="module")
def variant_models(tmp_path_factory):
    from sitegen.convert import convert

    root = tmp_path_factory.mktemp("engine_variants")
    out = {}
    for case in VARIANTS:
        arch, overrides = CASES[case]
        src = make_tiny(arch, root / f"{case}_src", **overrides)
        out[case] = (src, convert(src, root / case, quant="f32"))
    return out


def test_variants_match_transformers(variant_models):
    prompt = PROMPT[:6]
    folders = {case: str(folder) for case, (_, folder) in variant_models.items()}
    out = js_logits_and_greedy_many(folders, PROMPT, prompt, GREEDY, ignore_eos=True)
    failures = []
    for case, (src, _) in variant_models.items():
        got = out[case]
        if isinstance(got, str):
            failures.append(f"{case}: {got}")
            continue
        logits, greedy = got
        want = hf_logits(src, PROMPT)
        err = float(np.abs(logits - want).max())
        if err > 1e-4 * max(1.0, float(np.abs(want).max())):
            failures.append(f"{case}: logits max |diff| {err:.3g} (range {np.abs(want).max():.3g})")
        want_ids = hf_greedy(src, prompt, GREEDY)
        if greedy["tokenIds"] != want_ids:
            failures.append(f"{case}: greedy {greedy['tokenIds']} != transformers {want_ids}")
    assert not failures, failures


@pytest.fixture(scope="module")
def padded_model(tmp_path_factory):
    """A Llama whose head has 64 rows more than its tokenizer has tokens; the padding rows are made
    the most likely ones, so a sampler that does not mask them picks them at once."""
    import torch
    from safetensors.torch import load_file, save_file

    from sitegen.convert import convert

    root = tmp_path_factory.mktemp("padded")
    probe = make_tiny("llama", root / "probe")
    tokens = json.loads((probe / "tokenizer.json").read_text())
    size = len(tokens["model"]["vocab"]) + len(
        [t for t in tokens.get("added_tokens", []) if t["id"] >= len(tokens["model"]["vocab"])])
    src = make_tiny("llama", root / "src", vocab_size=size + 64)
    weights = load_file(src / "model.safetensors")
    head = weights["lm_head.weight"]
    # Padding rows: 5x the largest real row, in every direction the real rows use (logit >> others).
    head[size:] = 5 * head[:size].abs().max(dim=0).values * torch.sign(head[:size].sum(dim=0))
    save_file(weights, src / "model.safetensors", metadata={"format": "pt"})
    return size, convert(src, root / "model", quant="f32")


def test_padding_rows_are_never_sampled(padded_model):
    size, folder = padded_model
    script = f"""
    import {{ createEngine }} from "./runtime/engine.js";
    const e = await createEngine({{ modelDir: {json.dumps(str(folder))}, warmup: false }});
    const out = {{ vocab: e.config.vocab_size, tokenizer: e.tokenizer.vocabSize, runs: [] }};
    const last = await e.logits({json.dumps(PROMPT[:4])});
    const row = Array.from(last.subarray(last.length - e.config.vocab_size));
    out.rawArgmax = row.indexOf(Math.max(...row));
    for (const sampling of [{{ temperature: 0 }}, {{ temperature: 0, repetition_penalty: 1.3 }},
                            {{ temperature: 1.5, top_k: 0, top_p: 1 }}, {{ temperature: 0.7, top_k: 20 }}]) {{
      for (const seed of [1, 2]) {{
        try {{
          const r = await e.chat.completions.create({{ messages: [{{ role: "user", content: "hi" }}],
            max_tokens: 12, seed, ...sampling }});
          out.runs.push({{ ok: true, ids: r.choices[0].token_ids }});
        }} catch (err) {{ out.runs.push({{ ok: false, error: `${{err.name}}: ${{err.message}}` }}); }}
      }}
    }}
    console.log(JSON.stringify(out));
    await e.unload();
    """
    out = run_node(script)
    assert out["tokenizer"] == size and out["vocab"] == size + 64
    # The test model is what it claims: unmasked, the padding would win.
    assert out["rawArgmax"] >= size, out["rawArgmax"]
    for run in out["runs"]:
        assert run["ok"], run["error"]
        assert all(0 <= i < size for i in run["ids"]), run["ids"]
    assert sum(len(run["ids"]) for run in out["runs"]) >= 24, out["runs"]


def test_tokenize_empty_text(variant_models):
    """`tokenize --text ""` is the empty string's encoding (tokenizers' own), not a usage error."""
    from tokenizers import Tokenizer

    src, folder = variant_models["llama-tied-biases"]
    want = Tokenizer.from_file(str(src / "tokenizer.json")).encode("", add_special_tokens=True).ids
    got = json.loads(run_cli("tokenize", "--model", folder, "--text", "").stdout)
    assert got == want


# f16 compute: what most Chrome users get (shader-f16 present). SwiftShader lacks the feature, so
# these whole models run on Mesa's lavapipe, which has it (scripts/setup installs it). Bound: the
# matrix kernels multiply and sum each 32-wide group in f16 (10-bit mantissa), with the sums across
# groups in f32; on these models that stays within 2e-3 of the logits' range, about a
# fiftieth of q8's error. Greedy tokens may differ only at a near tie of the f32 logits.
F16_ARCHES = ["llama", "gemma2", "phi", "qwen3"]
F16_BOUND = 2e-3


def _lavapipe_env() -> dict | None:
    import glob
    import os

    found = sorted(glob.glob("/usr/share/vulkan/icd.d/lvp_icd*.json"))
    if not found:
        return None
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    env["VK_ICD_FILENAMES"] = found[0]
    env.setdefault("GALLIVM_PERF", "nopt")
    return env


def test_f16_compute_whole_models_on_lavapipe(tmp_path_factory):
    import os
    import subprocess

    from sitegen.convert import convert

    env = _lavapipe_env()
    if env is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            "f16 compute runs on Mesa's lavapipe (SwiftShader lacks shader-f16): scripts/setup installs it")
    root = tmp_path_factory.mktemp("f16")
    folders, srcs = {}, {}
    for arch in F16_ARCHES:
        srcs[arch] = make_tiny(arch, root / f"{arch}_src")
        folders[arch] = str(convert(srcs[arch], root / arch, quant="f16"))
    prompt = PROMPT[:6]
    script = f"""
    import {{ createEngine }} from "./runtime/engine.js";
    const out = {{}};
    for (const [arch, dir] of Object.entries({json.dumps(folders)})) {{
      out[arch] = {{}};
      for (const compute of ["f16", "f32"]) {{
        try {{
          const e = await createEngine({{ modelDir: dir, warmup: false, compute }});
          const logits = Array.from(await e.logits({json.dumps(PROMPT)}));
          const g = e.generate({{ promptIds: {json.dumps(prompt)}, maxNewTokens: {GREEDY}, ignoreEos: true,
            sampling: {{ temperature: 0 }} }});
          let r; while (!(r = await g.next()).done) {{}}
          out[arch][compute] = {{ used: e.stats.compute, logits, ids: r.value.tokenIds }};
          await e.unload();
        }} catch (err) {{ out[arch][compute] = `${{err.name}}: ${{err.message}}`; }}
      }}
    }}
    console.log(JSON.stringify(out));
    """
    proc = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parents[1], timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    from sitegen.reference.model import load

    failures = []
    for arch in F16_ARCHES:
        ref = load(folders[arch])
        want = ref.logits(PROMPT)
        scale = max(1.0, float(np.abs(want).max()))
        for compute, bound in (("f16", F16_BOUND), ("f32", 1e-4)):
            got = out[arch][compute]
            if isinstance(got, str):
                failures.append(f"{arch}/{compute}: {got}")
                continue
            if got["used"] != compute:
                failures.append(f"{arch}/{compute}: the engine ran {got['used']} compute")
            err = float(np.abs(np.array(got["logits"]).reshape(len(PROMPT), -1) - want).max())
            if err > bound * scale:
                failures.append(f"{arch}/{compute}: logits max |diff| {err:.3g} > {bound} x {scale:.3g}")
            want_ids = ref.generate(prompt, GREEDY)
            ids = got["ids"]
            first = next((i for i, (a, b) in enumerate(zip(ids, want_ids)) if a != b), None)
            if first is not None:
                row = ref.logits(prompt + want_ids[:first])[-1]
                gap = float(row.max() - row[ids[first]])
                if compute == "f32" or gap > 10 * bound * max(1.0, float(np.abs(row).max())):
                    failures.append(f"{arch}/{compute}: greedy token {first} {ids[first]} != {want_ids[first]} "
                                    f"(gap {gap:.3g})")
    assert not failures, failures


@pytest.fixture(scope="module")
def grouped_and_not(tmp_path_factory):
    """The same models converted with tensor groups (format v2: fused q/k/v, gate/up in one buffer) and
    without, as a version 1 manifest (no groups: every member its own tensor)."""
    from sitegen.convert import convert

    root = tmp_path_factory.mktemp("groups")
    out = {}
    for case in ("llama-tied-biases", "qwen2-sliding"):
        arch, overrides = CASES[case]
        src = make_tiny(arch, root / f"{case}_src", **overrides)
        grouped = convert(src, root / f"{case}_v2", quant="q8")
        plain = convert(src, root / f"{case}_v1", quant="q8", group_tensors=False)
        m = json.loads((plain / "manifest.json").read_text())
        assert "groups" in m and m["groups"] == []
        del m["groups"]
        (plain / "manifest.json").write_text(json.dumps({**m, "version": 1}))
        out[case] = (src, grouped, plain)
    return out


def test_fused_qkv_and_the_op_by_op_fallback_match_transformers(grouped_and_not):
    """The graph fuses q/k/v into one product when the weights are a group, and runs q, k, v on their own
    from a version 1 manifest; both give transformers' logits (q8: within 2e-2 of the range) and the
    same greedy tokens as each other."""
    folders = {f"{case}:{kind}": str(folder) for case, (_, g, p) in grouped_and_not.items()
               for kind, folder in (("grouped", g), ("plain", p))}
    script = f"""
    import {{ createEngine }} from "./runtime/engine.js";
    {SHARED_DEVICE_JS}
    const out = {{}};
    for (const [name, dir] of Object.entries({json.dumps(folders)})) {{
      const e = await createEngine({{ modelDir: dir, warmup: false, device }});
      const logits = Array.from(await e.logits({json.dumps(PROMPT)}));
      const g = e.generate({{ promptIds: {json.dumps(PROMPT[:6])}, maxNewTokens: 8, ignoreEos: true, sampling: {{ temperature: 0 }} }});
      let r; while (!(r = await g.next()).done) {{}}
      out[name] = {{ logits, ids: r.value.tokenIds, fused: e.stats.fused }};
      await e.unload();
    }}
    console.log(JSON.stringify(out));
    """
    out = run_node(script)
    for case, (src, _, _) in grouped_and_not.items():
        want = hf_logits(src, PROMPT)
        g, p = out[f"{case}:grouped"], out[f"{case}:plain"]
        assert "qkv" in g["fused"] and "qkv" not in p["fused"], (g["fused"], p["fused"])  # ("norm" in both)
        for kind, got in (("grouped", g), ("plain", p)):
            err = float(np.abs(np.array(got["logits"]).reshape(len(PROMPT), -1) - want).max())
            assert err < 2e-2 * float(np.abs(want).max()), (case, kind, err)
        assert g["ids"] == p["ids"], case


def test_top_k_candidates_chosen_on_the_device_are_transformers_top_k(variant_models):
    """sampleTopK (the device's top-k kernel) returns the k largest of transformers' last-position logits,
    in order, with their values; a seeded top-k generation is reproducible."""
    case = "llama-tied-biases"
    src, folder = variant_models[case]
    script = f"""
    import {{ createEngine }} from "./runtime/engine.js";
    const e = await createEngine({{ modelDir: {json.dumps(str(folder))}, warmup: false }});
    const c = await e.model.sampleTopK(Int32Array.from({json.dumps(PROMPT)}), 0, 12);
    const runs = [];
    for (let i = 0; i < 2; i++) {{
      e.resetCache();
      const g = e.generate({{ promptIds: {json.dumps(PROMPT[:6])}, maxNewTokens: 12, ignoreEos: true, seed: 7,
        sampling: {{ temperature: 1.5, top_k: 5 }} }});
      let r; while (!(r = await g.next()).done) {{}}
      runs.push(r.value.tokenIds);
    }}
    console.log(JSON.stringify({{ ids: Array.from(c.ids), logits: Array.from(c.logits), runs, maxTopK: e.model.maxTopK }}));
    await e.unload();
    """
    out = run_node(script)
    last = hf_logits(src, PROMPT)[-1]
    order = np.argsort(-last, kind="stable")[:12]
    assert out["ids"] == order.tolist()
    assert np.abs(np.array(out["logits"]) - last[order]).max() < 1e-4 * max(1.0, float(np.abs(last).max()))
    assert out["runs"][0] == out["runs"][1] and len(out["runs"][0]) == 12
    assert out["maxTopK"] >= 13


def test_a_gpu_validation_error_fails_the_pass_instead_of_giving_wrong_logits(variant_models):
    """WebGPU skips a command the device rejects and only fires `uncapturederror`; a forward pass during
    which one arrives must fail with the device's message, never return the logits of a partial pass."""
    _, folder = variant_models["llama-tied-biases"]
    script = f"""
    import {{ createEngine }} from "./runtime/engine.js";
    const e = await createEngine({{ modelDir: {json.dumps(str(folder))}, warmup: false }});
    const ok = (await e.logits([1, 2, 3])).length;
    e.backend.device.createBuffer({{ size: 4, usage: 0 }});  // invalid: no usage (an uncaptured validation error)
    let failed = null;
    try {{ await e.logits([1, 2, 3]); }} catch (err) {{ failed = {{ name: err.name, message: err.message }}; }}
    const again = (await e.logits([1, 2, 3])).length;  // the error is reported once; the next pass runs
    console.log(JSON.stringify({{ ok, failed, again }}));
    await e.unload();
    """
    out = run_node(script)
    assert out["ok"] > 0 and out["again"] == out["ok"]
    assert out["failed"] and out["failed"]["name"] == "SitegenRuntimeError"
    assert out["failed"]["message"].startswith("The GPU rejected a command of this model (")
