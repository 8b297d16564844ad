"""The WebGPU engine (runtime/) on whole models, under Node + Dawn (issue 4, items 1, 5, 7).

Oracles: transformers (the original checkpoint) and the numpy reference (`sitegen.reference`,
the same converted, possibly quantized, folder). Tiny random Llama-family models come from
tests/tiny_models.py: untied GQA Llama, tied Llama 3 (llama3 rope scaling), Qwen2 (q/k/v biases)
and Mistral (sliding window of 8, shorter than the prompts).

Bounds: at f32 every logit is within 1e-4 x the logits' range of both oracles. At q8/q4 the
engine and the reference read the same quantized weights, so the same bound holds against the
reference; against transformers the error is the quantization's, bounded loosely below.
Greedy tokens are identical where the arithmetic is the same up to rounding; with quantized
weights a different token is accepted only at a near tie of the reference's logits.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tiny_models import make_tiny

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "runtime" / "cli.mjs"
SWIFTSHADER = Path("/usr/lib/chromium/vk_swiftshader_icd.json")

pytestmark = pytest.mark.gpu

ARCHES = ["llama", "llama3", "qwen2", "mistral"]
QUANTS = ["f32", "q8", "q4"]
# 20 tokens: more than the matvec path's 4 (so prefill runs the tiled matmul) and than Mistral's window.
PROMPT = [1, 17, 230, 5, 99, 42, 310, 7, 64, 128, 3, 250, 11, 200, 77, 150, 33, 301, 9, 180]
# Logit error bound against transformers for quantized weights, as a fraction of the logits' range.
QUANT_BOUND = {"q8": 0.05, "q4": 0.4}  # measured: q8 <= 0.017, q4 <= 0.33 (random weights quantize badly)


def node_env() -> dict:
    """Run Dawn on SwiftShader unless the caller chose a Vulkan driver (SITEGEN_TEST_GPU=native)."""
    env = dict(os.environ)
    if os.environ.get("SITEGEN_TEST_GPU") != "native" and "VK_ICD_FILENAMES" not in env and SWIFTSHADER.exists():
        env["VK_ICD_FILENAMES"] = str(SWIFTSHADER)
        env["LD_LIBRARY_PATH"] = str(SWIFTSHADER.parent)
    return env


def run_cli(*args: str, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(["node", str(CLI), *map(str, args)], capture_output=True, text=True, env=node_env(),
                          cwd=ROOT, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"cli {args[0]} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


# A module snippet that defines `device`: one WebGPU device for every engine of a script, so that the
# kernels' pipelines (compiled once per device) are shared by its models: the software adapter's shader
# compiles, not the tiny models, are what a multi-model script spends its time on.
SHARED_DEVICE_JS = """
    import { getNodeGPU } from "./runtime/backends/webgpu/dawn.js";
    const adapter = await (await getNodeGPU()).requestAdapter();
    const device = await adapter.requestDevice({
      requiredFeatures: ["subgroups"].filter((f) => adapter.features.has(f)),
      requiredLimits: { maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
        maxBufferSize: adapter.limits.maxBufferSize,
        maxComputeWorkgroupStorageSize: adapter.limits.maxComputeWorkgroupStorageSize } });
"""


def run_node(script: str, *, stdin: str = "", timeout: int = 300) -> dict:
    """Run an ES module snippet from the repo root; it prints one JSON line."""
    proc = subprocess.run(["node", "--input-type=module", "-e", script], input=stdin, capture_output=True,
                          text=True, env=node_env(), cwd=ROOT, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """(arch, quant) → converted folder; the source checkpoint is at .../<arch>_src."""
    from sitegen.convert import convert

    root = tmp_path_factory.mktemp("engine_models")
    cache: dict[tuple[str, str], Path] = {}

    def get(arch: str, quant: str = "f32") -> Path:
        if (arch, quant) not in cache:
            src = root / f"{arch}_src"
            if not src.exists():
                make_tiny(arch, src, seed=0)
            cache[arch, quant] = convert(src, root / f"{arch}_{quant}", quant=quant)
        return cache[arch, quant]

    return get


def hf_logits(src: Path, tokens: list[int]) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].numpy()


def hf_greedy(src: Path, tokens: list[int], n: int) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    out = model.generate(torch.tensor([tokens]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                         pad_token_id=0)
    return out[0, len(tokens):].tolist()


def js_logits(model: Path, tokens: list[int]) -> np.ndarray:
    out = run_cli("logits", "--model", model, "--tokens", ",".join(map(str, tokens)))
    return np.array(json.loads(out.stdout)["logits"], dtype=np.float64)


def assert_close(got: np.ndarray, want: np.ndarray, frac: float, what: str) -> None:
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = max(1.0, float(np.abs(want).max()))
    err = float(np.abs(got - want).max())
    assert err <= frac * scale, f"{what}: max |diff| {err:.3g} > {frac} x {scale:.3g}"


def js_logits_and_greedy(model: Path, tokens: list[int], prompt: list[int], n: int) -> tuple[np.ndarray, dict]:
    """All-position logits of `tokens` and `n` greedy tokens after `prompt`, from one engine
    (one Node process: the CLI's `logits` and `generate` are tested on their own below)."""
    out = js_logits_and_greedy_many({"m": str(model)}, tokens, prompt, n)["m"]
    if isinstance(out, str):
        raise AssertionError(out)
    return out


def js_logits_and_greedy_many(folders: dict[str, str], tokens: list[int], prompt: list[int], n: int, *,
                              ignore_eos: bool = False) -> dict[str, tuple[np.ndarray, dict] | str]:
    """`js_logits_and_greedy` for several models in one Node process, on one WebGPU device
    (SHARED_DEVICE_JS: the kernels' pipelines are compiled once, not once per model; Dawn starts
    once). key → (logits [len(tokens), V], the greedy GenerateResult), or the error a model raised
    ("Name: message"), so that one model's failure is reported by its own test."""
    script = f"""
    import {{ createEngine }} from "./runtime/engine.js";
    {SHARED_DEVICE_JS}
    const out = {{}};
    for (const [key, dir] of Object.entries({json.dumps(folders)})) {{
      try {{
        const e = await createEngine({{ modelDir: dir, warmup: false, device }});
        const logits = Array.from(await e.logits({json.dumps(tokens)}));
        const g = e.generate({{ promptIds: {json.dumps(prompt)}, maxNewTokens: {n}, sampling: {{ temperature: 0 }},
                                ignoreEos: {json.dumps(ignore_eos)} }});
        let r; while (!(r = await g.next()).done) {{}}
        out[key] = {{ logits, greedy: r.value }};
        await e.unload();
      }} catch (err) {{ out[key] = `${{err.name}}: ${{err.message}}\n${{err.stack}}`; }}
    }}
    console.log(JSON.stringify(out));
    """
    out = run_node(script, timeout=900)
    return {k: v if isinstance(v, str) else
            (np.array(v["logits"], dtype=np.float64).reshape(len(tokens), -1), v["greedy"]) for k, v in out.items()}


@pytest.fixture(scope="module")
def whole_model_runs(models) -> dict:
    """(arch, quant) → the engine's logits of PROMPT and 32 greedy tokens after its first 5, for
    every case of test_whole_model, from one Node process (one device for all twelve models)."""
    folders = {f"{arch}/{quant}": str(models(arch, quant)) for arch in ARCHES for quant in QUANTS}
    return js_logits_and_greedy_many(folders, PROMPT, PROMPT[:5], 32)


@pytest.mark.parametrize("quant", QUANTS)
@pytest.mark.parametrize("arch", ARCHES)
def test_whole_model(models, whole_model_runs, arch, quant):
    """All-position logits within bound of both oracles; 32 greedy tokens equal to theirs."""
    from sitegen.reference.model import load

    folder = models(arch, quant)
    src = folder.parent / f"{arch}_src"
    prompt = PROMPT[:5]
    run = whole_model_runs[f"{arch}/{quant}"]
    if isinstance(run, str):
        raise AssertionError(run)
    logits, greedy = run
    ref_model = load(folder)
    assert_close(logits, ref_model.logits(PROMPT), 1e-4, "engine vs numpy reference")
    assert_close(logits, hf_logits(src, PROMPT), 1e-4 if quant == "f32" else QUANT_BOUND[quant],
                 "engine vs transformers")

    eos = set(json.loads((folder / "manifest.json").read_text())["generation"]["eos_token_ids"])
    ref = ref_model.generate(prompt, 32, eos_ids=eos)
    # The reference keeps the eos id it stopped at; the engine reports it as finish_reason "stop".
    if ref and ref[-1] in eos:
        assert greedy["finishReason"] == "stop"
        ref = ref[:-1]
    ids = greedy["tokenIds"]
    if quant == "f32":
        assert ids == ref
        if greedy["finishReason"] == "length":
            assert ids == hf_greedy(src, prompt, 32)
        return
    # Quantized: identical, or different only where the reference itself is at a near tie.
    first = next((i for i, (a, b) in enumerate(zip(ids, ref)) if a != b), None)
    if first is None:
        assert len(ids) == len(ref)
        return
    row = ref_model.logits(prompt + ref[:first])[-1]
    gap = float(row.max() - row[ids[first]])
    assert gap <= 1e-3 * max(1.0, float(np.abs(row).max())), f"token {first}: {ids[first]} vs {ref[first]}, gap {gap}"


OTHER_ARCHES = ["qwen3", "gemma", "gemma2", "gemma3", "phi", "phi3", "stablelm", "falcon", "gpt2"]


def test_other_architectures_match_transformers(models):
    """The same graph, other features switched on (qk-norm, GeGLU, sandwich norms, soft-capping,
    sliding windows with a local theta, partial rotary, parallel blocks, LayerNorm with biases,
    learned positions): f32 all-position logits within 1e-4 of transformers. One Node process
    loads each model in turn (one Dawn start-up instead of nine)."""
    folders = {arch: str(models(arch)) for arch in OTHER_ARCHES}
    script = f"""
    import {{ createEngine }} from "./runtime/engine.js";
    {SHARED_DEVICE_JS}
    const out = {{}};
    for (const [arch, dir] of Object.entries({json.dumps(folders)})) {{
      try {{
        const e = await createEngine({{ modelDir: dir, warmup: false, device }});
        out[arch] = Array.from(await e.logits({json.dumps(PROMPT)}));
        await e.unload();
      }} catch (err) {{ out[arch] = `${{err.name}}: ${{err.message}}`; }}
    }}
    console.log(JSON.stringify(out));
    """
    out = run_node(script)
    failures = []
    for arch in OTHER_ARCHES:
        if isinstance(out[arch], str):
            failures.append(f"{arch}: {out[arch]}")
            continue
        got = np.array(out[arch]).reshape(len(PROMPT), -1)
        want = hf_logits(Path(folders[arch]).parent / f"{arch}_src", PROMPT)
        err = float(np.abs(got - want).max())
        if err > 1e-4 * max(1.0, float(np.abs(want).max())):
            failures.append(f"{arch}: max |diff| {err:.3g}")
    assert not failures, failures


def test_cli_logits_and_reference_cli_agree(models):
    """`node runtime/cli.mjs logits` and `python -m sitegen.reference logits` print the same rows."""
    import sys

    folder = models("qwen2")
    tokens = ",".join(map(str, PROMPT[:6]))
    ref = subprocess.run([sys.executable, "-m", "sitegen.reference", "logits", "--model", str(folder),
                          "--tokens", tokens], capture_output=True, text=True, check=True)
    got = json.loads(run_cli("logits", "--model", folder, "--tokens", tokens).stdout)
    assert_close(np.array(got["logits"]), np.array(json.loads(ref.stdout)["logits"]), 1e-4, "vs reference CLI")


def test_cli_generate_matches_reference_generate(models):
    """`generate --prompt TEXT --json` encodes like the reference (special prefix included) and
    gives its greedy tokens and text."""
    import sys

    folder = models("qwen2")
    text = "Hello world, this"
    ref = json.loads(subprocess.run([sys.executable, "-m", "sitegen.reference", "generate", "--model", str(folder),
                                     "--prompt", text, "--max-new-tokens", "20"],
                                    capture_output=True, text=True, check=True).stdout)
    got = json.loads(run_cli("generate", "--model", folder, "--prompt", text, "--temperature", "0",
                             "--max-new-tokens", 20, "--json").stdout)
    assert got["prompt_ids"] == ref["prompt_ids"]
    eos = set(json.loads((folder / "manifest.json").read_text())["generation"]["eos_token_ids"])
    want = ref["ids"][:-1] if ref["ids"][-1] in eos else ref["ids"]
    assert got["token_ids"] == want
    assert got["text"] == ref["text"]


def js_greedy(model: Path, tokens: list[int], n: int) -> dict:
    out = run_cli("generate", "--model", model, "--tokens", ",".join(map(str, tokens)), "--temperature", "0",
                  "--max-new-tokens", n, "--json")
    return json.loads(out.stdout)


def test_generate_json_reports_timing(models):
    got = js_greedy(models("llama"), PROMPT[:5], 8)
    assert got["usage"] == {"prompt_tokens": 5, "completion_tokens": len(got["token_ids"])}
    t = got["timing"]
    assert t["prefill_tokens_per_s"] > 0 and t["decode_tokens_per_s"] > 0 and t["prefill_ms"] > 0


def test_split_tensors_give_the_same_logits(models):
    """Tensors above maxStorageBufferBindingSize are split by rows (here: a 32 KiB cap splits the
    98 KiB embedding and lm_head into 4 parts, and each layer's gate_up group, cut at the gate/up boundary
    first, into 4); the logits still match the reference."""
    from sitegen.reference.model import load

    folder = models("llama")
    script = f"""
    import {{ createEngine }} from "./runtime/engine.js";
    const e = await createEngine({{ modelDir: {json.dumps(str(folder))}, maxBindingBytes: 32768, warmup: false }});
    const l = await e.logits({json.dumps(PROMPT[:6])});
    console.log(JSON.stringify({{ stats: e.stats, logits: Array.from(l) }}));
    await e.unload();
    """
    out = run_node(script)
    layers = json.loads((folder / "manifest.json").read_text())["config"]["num_layers"]
    assert out["stats"]["splitTensors"] == {"embed.weight": 4, "lm_head.weight": 4,
                                            **{f"layers.{i}.mlp.gate_up.weight": 4 for i in range(layers)}}
    got = np.array(out["logits"]).reshape(6, -1)
    assert_close(got, load(folder).logits(PROMPT[:6]), 1e-4, "split vs reference")


def test_kv_reuse_across_turns(models):
    """A follow-up request reuses the cached prefix (only the new tokens are prefilled) and gives
    the same tokens as a fresh engine that prefills everything."""
    folder = models("qwen2")
    script = f"""
    import {{ createEngine }} from "./runtime/engine.js";
    const e = await createEngine({{ modelDir: {json.dumps(str(folder))}, warmup: false }});
    const run = async (promptIds) => {{
      const g = e.generate({{ promptIds, maxNewTokens: 12, sampling: {{ temperature: 0 }}, ignoreEos: true }});
      let r; while (!(r = await g.next()).done) {{}}
      return r.value;
    }};
    const first = await run({json.dumps(PROMPT[:6])});
    const follow = [...{json.dumps(PROMPT[:6])}, ...first.tokenIds, 5, 6, 7];
    const second = await run(follow);
    e.resetCache();
    const fresh = await run(follow);
    console.log(JSON.stringify({{ first, second, fresh }}));
    await e.unload();
    """
    out = run_node(script)
    first, second, fresh = out["first"], out["second"], out["fresh"]
    assert first["cachedTokens"] == 0
    # The generated tokens were fed back except the last one sampled.
    assert second["cachedTokens"] == 6 + len(first["tokenIds"]) - 1
    assert fresh["cachedTokens"] == 0
    assert second["tokenIds"] == fresh["tokenIds"]


def test_chat_completions_stream_usage_reuse_and_stop(models):
    """OpenAI-style streaming: a role chunk, content chunks, a last chunk with finish_reason and usage
    (with timings); the follow-up turn reuses the cached conversation; a stop string that spans
    tokens cuts the reply before it."""
    from tokenizers import Tokenizer

    folder = models("qwen2")
    script = f"""
    import {{ createEngine }} from "./runtime/engine.js";
    const e = await createEngine({{ modelDir: {json.dumps(str(folder))}, warmup: false }});
    const user = {{ role: "user", content: "Hello world" }};
    const chunks = [];
    for await (const c of await e.chat.completions.create({{ messages: [user], stream: true, max_tokens: 12,
                                                             temperature: 0 }})) chunks.push(c);
    const reply = chunks.map((c) => c.choices[0].delta.content ?? "").join("");
    const ids = chunks.flatMap((c) => c.choices[0].token_ids ?? []);
    const follow = await e.chat.completions.create({{ messages: [user, {{ role: "assistant", content: reply }},
      {{ role: "user", content: "More" }}], max_tokens: 4, temperature: 0 }});
    e.resetCache();
    const stop = reply.slice(3, 9);
    const stopped = await e.chat.completions.create({{ messages: [user], max_tokens: 12, temperature: 0, stop }});
    const promptIds = e.tokenizer.encode(e.formatChat([user]), {{ addSpecial: false }});
    console.log(JSON.stringify({{ chunks, reply, ids, follow, stop, stopped, promptIds }}));
    await e.unload();
    """
    out = run_node(script)
    chunks = out["chunks"]
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] in ("stop", "length")
    usage = last["usage"]
    assert usage["prompt_tokens"] == len(out["promptIds"])
    assert usage["completion_tokens"] == len(out["ids"]) and usage["total_tokens"] == usage["prompt_tokens"] + len(out["ids"])
    assert usage["timings"]["prefill_tokens_per_s"] > 0 and usage["timings"]["decode_tokens_per_s"] > 0
    # The streamed text is the tokenizers library's decoding of the streamed ids.
    tok = Tokenizer.from_file(str(folder.parent / "qwen2_src" / "tokenizer.json"))
    assert out["reply"] == tok.decode(out["ids"], skip_special_tokens=True)
    # Follow-up: the first turn's prompt is reused from the KV cache.
    follow = out["follow"]
    assert follow["object"] == "chat.completion" and follow["choices"][0]["message"]["role"] == "assistant"
    assert follow["usage"]["prompt_tokens_details"]["cached_tokens"] >= len(out["promptIds"])
    # Stop string.
    stopped = out["stopped"]["choices"][0]
    assert stopped["finish_reason"] == "stop"
    assert stopped["message"]["content"] == out["reply"][:3]


def test_abort_stops_and_engine_stays_usable(models):
    folder = models("llama")
    script = f"""
    import {{ createEngine }} from "./runtime/engine.js";
    const e = await createEngine({{ modelDir: {json.dumps(str(folder))}, warmup: false }});
    const ac = new AbortController();
    const g = e.generate({{ promptIds: [1, 2, 3], maxNewTokens: 50, sampling: {{ temperature: 0 }}, ignoreEos: true,
                           signal: ac.signal }});
    let n = 0, error = null;
    try {{ for await (const step of g) {{ if (++n === 3) ac.abort(); }} }}
    catch (err) {{ error = {{ name: err.name, message: err.message }}; }}
    const again = e.generate({{ promptIds: [1, 2, 3], maxNewTokens: 4, sampling: {{ temperature: 0 }}, ignoreEos: true }});
    let r; while (!(r = await again.next()).done) {{}}
    console.log(JSON.stringify({{ n, error, after: r.value.tokenIds.length }}));
    await e.unload();
    """
    out = run_node(script)
    assert out["error"] == {"name": "AbortError", "message": "The request was aborted."}
    assert out["n"] == 3 and out["after"] == 4


def test_context_window_exceeded_message(models):
    folder = models("llama")
    script = f"""
    import {{ createEngine }} from "./runtime/engine.js";
    const e = await createEngine({{ modelDir: {json.dumps(str(folder))}, contextLength: 16, warmup: false }});
    const out = {{}};
    try {{ const g = e.generate({{ promptIds: Array(16).fill(5) }}); await g.next(); }}
    catch (err) {{ out.full = {{ name: err.name, message: err.message }}; }}
    const g = e.generate({{ promptIds: Array(12).fill(5), maxNewTokens: 100, sampling: {{ temperature: 0 }}, ignoreEos: true }});
    let r; while (!(r = await g.next()).done) {{}}
    out.clipped = {{ n: r.value.completionTokens, finish: r.value.finishReason }};
    await e.unload();
    try {{ await e.logits([1]); }} catch (err) {{ out.unloaded = {{ name: err.name, message: err.message }}; }}
    console.log(JSON.stringify(out));
    """
    out = run_node(script)
    assert out["full"] == {"name": "ContextWindowExceededError", "message":
                           "The prompt has 16 tokens and the context window is 16 (no room for a reply): drop the "
                           "oldest turns of the conversation, or create the engine with a larger contextLength "
                           "(this model allows up to 256)."}
    # Generation stops when the window is full: 12 prompt + 4 new = 16 positions.
    assert out["clipped"] == {"n": 4, "finish": "length"}
    assert out["unloaded"] == {"name": "EngineStateError",
                               "message": "The engine was unloaded: create a new one with createEngine()."}


def test_missing_feature_is_reported_before_loading(models, tmp_path):
    folder = models("llama")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["requirements"]["features"] = ["no-such-feature"]
    for f in folder.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    proc = run_cli("logits", "--model", tmp_path, "--tokens", "1", check=False)
    assert proc.returncode == 1
    assert proc.stderr == ("error: This GPU adapter lacks WebGPU feature no-such-feature, which the model needs: use a "
                           "browser/GPU that supports it, or convert the model without it (e.g. --quant q4 instead "
                           "of f16).\n")


def test_corrupt_shard_is_refused(models, tmp_path):
    folder = models("llama")
    for f in folder.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    shard = tmp_path / "shard-00000.bin"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    proc = run_cli("logits", "--model", tmp_path, "--tokens", "1", check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: {shard}: sha256 ")
    assert proc.stderr.endswith("the file is corrupt or from another conversion: convert the model again.\n")


@pytest.mark.parametrize("args,message", [
    (["logits", "--model", "/nonexistent/model", "--tokens", "1"],
     "error: /nonexistent/model/manifest.json: cannot read the model manifest (ENOENT: no such file or directory, "
     "open '/nonexistent/model/manifest.json'); point --model at a folder written by `sitegen convert`.\n"),
    (["logits", "--model", "X", "--tokens", "1,a"],
     "error: --tokens: expected comma-separated token ids such as 1,2,3, got '1,a'.\n"
     "(run with --help for usage)\n"),
    (["frobnicate", "--model", "X"],
     "error: unknown command 'frobnicate' (expected logits, generate, tokenize or bench).\n"
     "(run with --help for usage)\n"),
    (["generate", "--model", "X", "--tokens", "1", "--temperature", "hot"],
     "error: --temperature: expected a number >= 0, got 'hot'.\n(run with --help for usage)\n"),
    (["logits", "--tokens", "1"],
     "error: --model DIR is required (a folder written by `sitegen convert`).\n(run with --help for usage)\n"),
])
def test_cli_errors(args, message):
    proc = run_cli(*args, check=False)
    assert proc.stderr == message
    assert proc.returncode in (1, 2) and proc.stdout == ""


def test_token_outside_vocabulary(models):
    proc = run_cli("logits", "--model", models("llama"), "--tokens", "1,384", check=False)
    assert proc.returncode == 1
    assert proc.stderr == "error: Token id 384 is outside the vocabulary (0..383).\n"


def test_bench_json(models):
    out = run_cli("bench", "--model", models("llama"), "--prompt-tokens", "40", "--decode-tokens", "8", "--json")
    report = json.loads(out.stdout)
    assert report["prompt_tokens"] == 40 and report["decode_tokens"] == 8
    assert report["prefill_tokens_per_s"] > 0 and report["decode_tokens_per_s"] > 0


# `smollm2` (the real model, converted once per run) is a fixture of tests/conftest.py.


@pytest.fixture(scope="module")
def smollm2_reference(smollm2) -> dict:
    """The numpy reference on SmolLM2: the prompt's ids, 32 greedy tokens and text, and the prompt's logits."""
    import sys

    from sitegen.reference.model import load

    ref = json.loads(subprocess.run([sys.executable, "-m", "sitegen.reference", "generate", "--model", str(smollm2),
                                     "--prompt", SMOLLM2_PROMPT, "--max-new-tokens", "32"],
                                    capture_output=True, text=True, check=True, timeout=600).stdout)
    ref["logits"] = load(smollm2).logits(ref["prompt_ids"])
    return ref


SMOLLM2_PROMPT = "The capital of France is"


# WebGPU runs on SwiftShader here (~2 s a token on 2 cores; a prompt this short takes the matvec, as
# every step of up to 16 tokens does on a CPU adapter), the CPU backend much faster: all 32 on both.
@pytest.mark.slow
@pytest.mark.parametrize("backend,n", [("webgpu", 32), ("wasm", 32)])
def test_smollm2_greedy_equals_reference(smollm2, smollm2_reference, backend, n):
    """Real weights at q4, on each backend: the text prompt's ids, its logits within bound of the
    numpy reference's, and the first `n` greedy tokens (and their text) equal to the reference's."""
    ref = smollm2_reference
    script = f"""
    import {{ createEngine }} from "./runtime/engine.js";
    const e = await createEngine({{ modelDir: {json.dumps(str(smollm2))}, warmup: false, backend: {json.dumps(backend)} }});
    const ids = e.tokenizer.encode({json.dumps(SMOLLM2_PROMPT)}, {{ addSpecial: true }});
    const logits = Array.from(await e.logits(ids));
    const g = e.generate({{ promptIds: ids, maxNewTokens: {n}, sampling: {{ temperature: 0 }} }});
    let r; while (!(r = await g.next()).done) {{}}
    console.log(JSON.stringify({{ ids, logits, tokens: r.value.tokenIds, text: e.tokenizer.decode(r.value.tokenIds) }}));
    await e.unload();
    """
    got = run_node(script, timeout=900)
    assert got["ids"] == ref["prompt_ids"]
    assert_close(np.array(got["logits"]).reshape(len(got["ids"]), -1), ref["logits"], 1e-4,
                 f"SmolLM2 prompt logits ({backend}) vs reference")
    eos = set(json.loads((smollm2 / "manifest.json").read_text())["generation"]["eos_token_ids"])
    want = ref["ids"][:n]
    want = want[:-1] if want and want[-1] in eos else want
    assert got["tokens"] == want, f"{backend}: greedy tokens differ from the reference's"
    if n >= len(ref["ids"]):
        assert got["text"] == ref["text"]


def test_loading_progress_events(models):
    """Loading reports structured phases with byte and shard counts, in order."""
    folder = models("llama")
    script = f"""
    import {{ createEngine }} from "./runtime/engine.js";
    const events = [];
    const e = await createEngine({{ modelDir: {json.dumps(str(folder))}, warmup: false, onProgress: (ev) => events.push(ev) }});
    await e.unload();
    console.log(JSON.stringify(events));
    """
    events = run_node(script)
    manifest = json.loads((folder / "manifest.json").read_text())
    total = sum(s["bytes"] for s in manifest["shards"])
    phases = [e["phase"] for e in events]
    assert phases[0] == "check" and phases[-2:] == ["compile", "ready"]
    assert phases.index("download") < phases.index("upload") < phases.index("compile")
    last_download = [e for e in events if e["phase"] == "download"][-1]
    assert last_download["bytesDone"] == last_download["bytesTotal"] == total and last_download["source"] == "file"
    last_upload = [e for e in events if e["phase"] == "upload"][-1]
    assert last_upload["shardsDone"] == last_upload["shardsTotal"] == len(manifest["shards"])


def test_request_and_setup_errors(models):
    """Each user-facing error of createEngine / chat.completions.create: its class and message."""
    folder = models("llama")
    script = f"""
    import {{ createEngine }} from "./runtime/engine.js";
    import {{ createFileLoader, readManifestFile }} from "./runtime/node/files.js";
    const dir = {json.dumps(str(folder))};
    const manifest = await readManifestFile(dir);
    const loader = createFileLoader(dir);
    const out = {{}};
    const grab = async (key, fn) => {{
      try {{ await fn(); out[key] = "no error"; }} catch (e) {{ out[key] = {{ name: e.name, message: e.message, json: e.toJSON?.() }}; }}
    }};
    await grab("version", () => createEngine({{ manifest: {{ ...manifest, version: 3 }}, loader }}));
    await grab("format", () => createEngine({{ manifest: {{ format: "other" }}, loader }}));
    await grab("noSource", () => createEngine({{}}));
    await grab("context", () => createEngine({{ modelDir: dir, contextLength: 1000 }}));
    const e = await createEngine({{ modelDir: dir, warmup: false }});
    await grab("messages", () => e.chat.completions.create({{ messages: [] }}));
    await grab("message", () => e.chat.completions.create({{ messages: [{{ role: "user" }}] }}));
    await grab("topP", async () => {{ for await (const c of e.chat.completions.create(
      {{ messages: [{{ role: "user", content: "hi" }}], stream: true, top_p: 2 }})) {{}} }});
    await e.unload();
    const e2 = await createEngine({{ modelDir: dir, warmup: false }});
    e2.backend.device.destroy();  // what a driver reset looks like to the page
    await new Promise((resolve) => setTimeout(resolve, 100));
    await grab("lost", () => e2.logits([1]));
    // A browser whose WebGPU has no adapter (blocklisted GPU).
    globalThis.navigator = {{ gpu: {{ requestAdapter: async () => null }} }};
    await grab("noAdapter", () => createEngine({{ manifest, loader }}));
    console.log(JSON.stringify(out));
    """
    out = run_node(script)
    assert out["version"]["name"] == "ManifestError"
    assert out["version"]["message"] == ("The model manifest has version 3; this runtime reads versions 1, 2: rebuild "
                                         "the site with a matching sitegen.")
    assert out["version"]["json"] == {"name": "ManifestError", "message": out["version"]["message"],
                                      "data": {"version": 3}}
    assert out["format"]["message"] == ("This is not a sitegen model manifest (format is not 'sitegen-weights'): "
                                        "convert the model with `sitegen convert`.")
    assert out["noSource"] == {"name": "InvalidRequestError", "json": out["noSource"]["json"], "message":
                               "createEngine: pass manifestUrl (a model's manifest.json URL), or modelDir under Node."}
    assert out["context"]["message"] == ("contextLength: expected an integer in [2, 256] (the model's "
                                         "max_position_embeddings), got 1000.")
    assert out["messages"]["message"] == "messages: expected a non-empty array of {role, content}."
    assert out["message"]["message"] == "messages[0]: expected {role: string, content: string}."
    assert out["topP"]["message"] == "top_p: expected a number in (0, 1] (1 = off), got 2."
    assert out["lost"]["name"] == "DeviceLostError"
    assert out["lost"]["message"].startswith("The GPU device was lost (destroyed: ")
    assert out["lost"]["message"].endswith("); reload the page to load the model again.")
    assert out["noAdapter"]["name"] == "WebGPUUnavailableError"
    assert out["noAdapter"]["message"] == ("WebGPU is present but no GPU adapter is available (blocklisted driver or "
                                           "GPU disabled): update the graphics driver or try another browser.")


@pytest.mark.gpu
def test_a_vocabulary_of_an_odd_number_of_ids(tmp_path):
    """GPT-2 has 50,257 ids: a logits row of 201,028 bytes, whose staging buffer is rounded up to 16
    bytes. The last row's readback (the warm-up's and every forward's) took the whole buffer and
    failed with "offset is out of bounds" (found on the H200 with a random GPT-2-shape model). A tiny
    model with 389 ids (padding rows past the tokenizer's 384): the engine loads (warm-up on), its
    last-row logits match transformers', and it generates."""
    from sitegen.convert import convert

    src = make_tiny("llama", tmp_path / "src", seed=0, vocab_size=389)
    model = convert(src, tmp_path / "f32", quant="f32")
    got = run_node(f"""
    import {{ createEngine }} from "./runtime/engine.js";
    const e = await createEngine({{ modelDir: {json.dumps(str(model))}, contextLength: 64 }});
    const last = Array.from(await e.model.forward(Int32Array.from({json.dumps(PROMPT)}), 0));
    const g = e.generate({{ promptIds: {json.dumps(PROMPT)}, maxNewTokens: 3, sampling: {{ temperature: 0 }}, ignoreEos: true }});
    let r; while (!(r = await g.next()).done) {{}}
    console.log(JSON.stringify({{ last, ids: r.value.tokenIds }}));
    await e.unload();
    """)
    want = hf_logits(src, PROMPT)[-1]
    assert len(got["last"]) == 389
    assert_close(np.array(got["last"])[None], want[None], 1e-4, "last row, 389 ids")
    assert len(got["ids"]) == 3 and all(0 <= i < 384 for i in got["ids"]), got["ids"]
