"""The WebAssembly CPU backend on whole models under Node (issue 14, tests).

The tiny odd-shaped random models of the WebGPU parity tests (tests/tiny_models.py: every family,
the variants of tests/test_engine_variants.py and the issue-12 families), converted at f32, run
through `createEngine({backend: "wasm"})`: the logits of every position of a 20-token prompt
(more than the prefill blocks of 4 tokens, longer than Mistral's window) within 1e-4 of the range
(max - min) of transformers' logits, and 32 greedy tokens (chosen by the backend's top-k kernel)
equal to transformers' ``generate``. Quantized weights (q8, q4) are checked against the numpy
reference over the same weights with the same bound: the kernels dequantize in registers and keep
f32 activations, as the reference does.

Also here: the CLI's --backend, the automatic choice (WebGPU, else the CPU), the memory preflight
before any download, two threads giving the same tokens, and the errors of the backend.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from test_engine import CLI, PROMPT, ROOT, hf_greedy, hf_logits, models  # noqa: F401 (models is a fixture)
from test_engine_variants import VARIANTS, variant_models  # noqa: F401 (a fixture)

FAMILIES = ["llama", "llama3", "qwen2", "mistral", "qwen3", "gemma", "gemma2", "gemma3", "phi", "phi3", "stablelm",
            "falcon", "gpt2", "smollm3", "mixtral", "qwen3_moe"]
GREEDY = 32


def node(script: str, *, timeout: int = 600) -> dict:
    proc = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def wasm_runs(folders: dict[str, str], *, threads: int = 1, quantized_greedy: bool = True) -> dict:
    """{name: {logits, ids, stats}} from one Node process (each model loaded in turn on the CPU)."""
    script = f"""
    import {{ createEngine }} from "./runtime/engine.js";
    const out = {{}};
    for (const [name, dir] of Object.entries({json.dumps(folders)})) {{
      try {{
        const e = await createEngine({{ modelDir: dir, backend: "wasm", threads: {threads}, warmup: false }});
        const logits = Array.from(await e.logits({json.dumps(PROMPT)}));
        const g = e.generate({{ promptIds: {json.dumps(PROMPT[:5])}, maxNewTokens: {GREEDY},
          sampling: {{ temperature: 0 }} }});
        let r; while (!(r = await g.next()).done) {{}}
        out[name] = {{ logits, ids: r.value.tokenIds, finish: r.value.finishReason, stats: e.stats }};
        await e.unload();
      }} catch (err) {{ out[name] = `${{err.name}}: ${{err.message}}`; }}
    }}
    console.log(JSON.stringify(out));
    """
    return node(script)


def within_range(got: np.ndarray, want: np.ndarray, frac: float) -> str | None:
    bound = frac * float(want.max() - want.min())
    err = float(np.abs(got - want).max())
    return None if err <= bound else f"max |diff| {err:.3g} > {frac} x range {bound / frac:.3g}"


def test_every_family_matches_transformers_at_f32(models, variant_models):  # noqa: F811
    sources = {arch: (models(arch).parent / f"{arch}_src", models(arch)) for arch in FAMILIES}
    sources.update({case: pair for case, pair in variant_models.items()})
    out = wasm_runs({name: str(folder) for name, (_, folder) in sources.items()})
    failures = []
    for name, (src, _) in sources.items():
        got = out[name]
        if isinstance(got, str):
            failures.append(f"{name}: {got}")
            continue
        assert got["stats"]["backend"] == "wasm" and got["stats"]["threads"] == 1
        problem = within_range(np.array(got["logits"]).reshape(len(PROMPT), -1), hf_logits(src, PROMPT), 1e-4)
        if problem:
            failures.append(f"{name}: logits {problem}")
        # transformers' generate is run with min_new_tokens (EOS suppressed); the engine stops at an EOS
        # that is the argmax (qwen3_moe's 21st token here), so the tokens before it must agree.
        want = hf_greedy(src, PROMPT[:5], GREEDY)
        n = len(got["ids"])
        if got["ids"] != want[:n] or (got["finish"] == "length") != (n == GREEDY):
            failures.append(f"{name}: greedy {got['ids']} ({got['finish']}) != transformers {want}")
    assert not failures, failures


@pytest.mark.parametrize("quant", ["q8", "q4"])
def test_quantized_weights_match_the_reference(models, quant):  # noqa: F811
    from sitegen.reference.model import load

    arches = ["llama", "qwen2", "gemma2", "phi3", "gpt2"]
    folders = {arch: models(arch, quant) for arch in arches}
    out = wasm_runs({a: str(f) for a, f in folders.items()})
    failures = []
    for arch, folder in folders.items():
        if isinstance(out[arch], str):
            failures.append(f"{arch}: {out[arch]}")
            continue
        ref = load(folder)
        problem = within_range(np.array(out[arch]["logits"]).reshape(len(PROMPT), -1), ref.logits(PROMPT), 1e-4)
        if problem:
            failures.append(f"{arch} {quant}: {problem}")
        want = ref.generate(PROMPT[:5], GREEDY, eos_ids=set())
        if out[arch]["ids"] != want[:len(out[arch]["ids"])] or not out[arch]["ids"]:
            failures.append(f"{arch} {quant}: greedy {out[arch]['ids']} != reference {want}")
    assert not failures, failures


def test_two_threads_give_the_same_logits_and_tokens(models):  # noqa: F811
    folders = {"qwen2": str(models("qwen2", "q4")), "gemma2": str(models("gemma2"))}
    one, two = wasm_runs(folders), wasm_runs(folders, threads=2)
    for name in folders:
        assert two[name]["stats"]["threads"] == 2
        assert two[name]["ids"] == one[name]["ids"]
        assert two[name]["logits"] == one[name]["logits"]  # rows are only split: the same arithmetic


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["node", str(CLI), *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=env)


def test_cli_backend_flag(models):  # noqa: F811
    folder = models("llama", "q4")
    got = json.loads(cli("generate", "--model", folder, "--tokens", "1,17,230", "--temperature", "0",
                         "--max-new-tokens", 8, "--json", "--backend", "wasm").stdout)
    bench = json.loads(cli("bench", "--model", folder, "--prompt-tokens", 12, "--decode-tokens", 4, "--json",
                           "--backend", "wasm").stdout)
    assert bench["backend"] == "wasm" and bench["decode_tokens"] == 4
    from sitegen.reference.model import load
    assert got["token_ids"] == load(folder).generate([1, 17, 230], 8, eos_ids=set())[:len(got["token_ids"])]
    logits = json.loads(cli("logits", "--model", folder, "--tokens", "1,2,3", "--backend", "wasm").stdout)["logits"]
    assert len(logits) == 3
    bad = cli("logits", "--model", folder, "--tokens", "1", "--backend", "cuda")
    assert bad.returncode == 2
    assert bad.stderr == ("error: --backend: expected webgpu, wasm or auto, got 'cuda'.\n(run with --help for usage)\n")


def test_auto_falls_back_to_the_cpu_without_an_adapter(models):  # noqa: F811
    """No adapter (a blocklisted GPU): "auto" runs on the CPU and says why; "webgpu" still fails."""
    folder = models("llama")
    out = node(f"""
    import {{ createEngine }} from "./runtime/engine.js";
    globalThis.navigator = {{ gpu: {{ requestAdapter: async () => null }} }};
    const e = await createEngine({{ modelDir: {json.dumps(str(folder))}, backend: "auto", warmup: false }});
    const out = {{ stats: e.stats }};
    await e.unload();
    try {{ await createEngine({{ modelDir: {json.dumps(str(folder))}, backend: "webgpu" }}); }}
    catch (err) {{ out.webgpu = err.name; }}
    console.log(JSON.stringify(out));
    """)
    assert out["stats"]["backend"] == "wasm"
    assert out["stats"]["fallback"].startswith("WebGPU is present but no GPU adapter is available")
    assert out["webgpu"] == "WebGPUUnavailableError"


def test_preflight_refuses_a_model_too_large_before_any_download(models):  # noqa: F811
    """The 4 GiB of wasm32 (here a limit of 300 KiB stands for it): refused before the loader runs."""
    folder = models("llama")
    out = node(f"""
    import {{ createEngine }} from "./runtime/engine.js";
    import {{ createBackend }} from "./runtime/backend.js";
    import {{ readManifestFile }} from "./runtime/node/files.js";
    const manifest = await readManifestFile({json.dumps(str(folder))});
    let fetched = 0;
    const loader = {{ forEachShard: async () => {{ fetched++; }} }};
    const out = {{}};
    try {{ await createBackend(manifest, {{ backend: "wasm", memoryLimit: 300 * 1024, contextLength: 256 }}); }}
    catch (e) {{ out.error = {{ name: e.name, message: e.message }}; }}
    // A huge context: the KV cache alone passes 4 GiB.
    const big = {{ ...manifest, config: {{ ...manifest.config, max_position_embeddings: 1 << 24 }} }};
    try {{ await createEngine({{ manifest: big, loader, backend: "wasm", contextLength: 1 << 24 }}); }}
    catch (e) {{ out.huge = {{ name: e.name, message: e.message }}; }}
    out.fetched = fetched;
    console.log(JSON.stringify(out));
    """)
    assert out["fetched"] == 0
    assert out["error"]["name"] == "InsufficientMemoryError"
    assert out["error"]["message"].startswith("The model needs about ")
    assert out["error"]["message"].endswith("more than WebAssembly's 300 KiB address space: use a smaller or more "
                                            "quantized model, or a shorter contextLength.") or "address space" in out["error"]["message"]
    assert out["huge"]["name"] == "InsufficientMemoryError"
    assert "KV cache 8.00 GiB for 16777216 positions" in out["huge"]["message"]
    assert "more than WebAssembly's 4.00 GiB address space" in out["huge"]["message"]


def test_unknown_op_and_bad_options_are_clear_errors(models):  # noqa: F811
    folder = models("llama")
    out = node(f"""
    import {{ createBackend }} from "./runtime/backend.js";
    import {{ buildGraph }} from "./runtime/graph.js";
    import {{ tensorIndex }} from "./runtime/engine.js";
    import {{ readManifestFile, createFileLoader }} from "./runtime/node/files.js";
    const manifest = await readManifestFile({json.dumps(str(folder))});
    const out = {{}};
    const b = await createBackend(manifest, {{ backend: "wasm" }});
    await b.planWeights(manifest);
    await createFileLoader({json.dumps(str(folder))}).forEachShard({{ manifest, onShard: (s) => b.receiveShard(s.index, s.bytes) }});
    await b.weightsDone();
    const graph = buildGraph(manifest.config, {{ ...tensorIndex(manifest), fuse: b.fusions }});
    graph.body.push({{ op: "frobnicate" }});
    try {{ await b.compile({{ graph, contextLength: 16, prefillChunk: 8, sampleVocab: 100 }}); }}
    catch (e) {{ out.op = e.message; }}
    try {{ await createBackend(manifest, {{ backend: "wasm", compute: "f16" }}); }} catch (e) {{ out.compute = e.message; }}
    try {{ await createBackend(manifest, {{ backend: "wasm", threads: 0 }}); }} catch (e) {{ out.threads = e.message; }}
    try {{ await createBackend(manifest, {{ backend: "tpu" }}); }} catch (e) {{ out.name = e.message; }}
    b.destroy();
    console.log(JSON.stringify(out));
    """)
    assert out["op"] == ("op 'frobnicate' is not supported by the wasm backend: use the WebGPU backend for this "
                         "model, or a sitegen version whose CPU backend has it.")
    assert out["compute"] == 'compute: the CPU backend computes in f32; got "f16" (use "auto" or "f32").'
    assert out["threads"] == "threads: expected an integer in [1, 64], got 0."
    assert out["name"] == "backend: unknown backend 'tpu' (known: auto, webgpu, wasm)."


def test_allowed_token_mask(models):  # noqa: F811
    """Constrained output (issue 17, backend.js SampleOptions.allowed): the CPU's top-k kernel only
    picks allowed ids; fewer allowed than k pads with id -1 and -Infinity."""
    folder = models("llama")
    out = node(f"""
    import {{ createEngine }} from "./runtime/engine.js";
    const e = await createEngine({{ modelDir: {json.dumps(str(folder))}, backend: "wasm", warmup: false }});
    const ids = Int32Array.from({json.dumps(PROMPT[:6])});
    const row = Array.from(await e.model.forward(ids, 0));
    const allowed = new Uint32Array(12);
    for (const i of [5, 300]) allowed[i >>> 5] |= 1 << (i & 31);
    const greedy = await e.model.sampleGreedy(ids, 0, {{ allowed }});
    const top = await e.model.sampleTopK(ids, 0, 4, {{ allowed }});
    console.log(JSON.stringify({{ row, greedy, ids: Array.from(top.ids), logits: Array.from(top.logits, String) }}));
    await e.unload();
    """)
    row = out["row"]
    best = 5 if row[5] >= row[300] else 300
    assert out["greedy"] == best
    assert out["ids"] == [best, 305 - best, -1, -1]
    assert out["logits"][2:] == ["-Infinity", "-Infinity"]
