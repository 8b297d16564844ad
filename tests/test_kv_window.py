"""A KV cache bounded by the sliding window (issue 12, item 3), on both backends.

A sliding-window layer keeps a ring of min(context, window + prefillChunk - 1) KV rows (position p
in row p mod rows; runtime/graph.js kvCacheLayout), a full-attention layer the whole context. Tiny
random models with windows far shorter than their prompts: Mistral (window 8, every layer sliding)
and Gemma 3 (window 6 on two local layers, a global layer after them), max_position_embeddings
4096, each in one engine per backend with contextLength 4096 and prefillChunk 16 (rings of 23 and 21
rows), so a 210-token prompt wraps the rings about ten times, inside chunks and across them, and the
decode steps after it wrap them twice more.

Oracle: transformers on the whole 250-token sequence, f32. Checked, per backend (WebGPU under Node +
Dawn on SwiftShader, and the Wasm CPU backend):
- the logits of every position of the 210-token prompt prefilled in chunks of 16 (the prefill
  attention, and the decode kernel on the 2-token tail chunk), and of the 40 positions after it
  decoded one token at a time (the decode attention): within 1e-4 x the range of transformers'
  logits, the bound of the short-context tests;
- 60 greedy tokens after a 20-token prompt (the engine's chained decode steps, wrapping the rings)
  equal to transformers' argmax tokens;
- the engine's reuse of the cached prefix on a ring: a prompt that shares the whole previous
  conversation but its last few tokens reuses it (``cachedTokens`` = all but its last token), one
  that shares less than the rings still hold (its first 20 tokens, after ~90 positions were
  written) is fed again from position 0 (``cachedTokens`` 0); both continue as transformers does;
- the KV bytes the engine allocates (``stats.kvCacheBytes``, ``stats.kvCacheRows``): the sliding
  layers' rows are window + 15, not 4096, and the total is the formula's from the transformers
  config; the manifest's ``requirements`` (``kv_cache_sliding``) give the same figure through the
  runtime's preflight estimate.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_engine import SHARED_DEVICE_JS, run_node

pytestmark = pytest.mark.gpu

CTX = 4096
CHUNK = 16
PROMPT_LEN = 210  # 13 chunks of 16 and a tail of 2 (the decode kernel in a prefill)
DECODE = 40
GREEDY_PROMPT, GREEDY = 20, 60  # greedy decode from a short prompt: the decode steps wrap the rings
FAR = 40  # a prompt sharing only GREEDY_PROMPT tokens with the ~90 positions written before it
TOKENS = np.random.default_rng(12).integers(3, 384, PROMPT_LEN + DECODE).tolist()
CASES = {"mistral": {}, "gemma3": {}}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """case → (transformers source folder, converted f32 folder, the transformers model)."""
    import torch
    from transformers import AutoModelForCausalLM

    from sitegen.convert import convert
    from tiny_models import make_tiny

    root = tmp_path_factory.mktemp("kv_window")
    out = {}
    for case, overrides in CASES.items():
        src = make_tiny(case, root / f"{case}_src", max_position_embeddings=CTX, **overrides)
        folder = convert(src, root / case, quant="f32")
        out[case] = (src, folder, AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval())
    return out


def _hf_logits(model, tokens: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].numpy().astype(np.float64)


def _engine_runs(sources, backend: str) -> dict:
    """One Node process per backend: for each model, one engine (contextLength CTX, prefillChunk CHUNK)."""
    folders = {case: str(folder) for case, (_, folder, _) in sources.items()}
    options = {"backend": backend, "contextLength": CTX, "prefillChunk": CHUNK, "warmup": False,
               **({"threads": 1} if backend == "wasm" else {})}
    script = f"""
    import {{ createEngine }} from "./runtime/engine.js";
    import {{ requirementsOf }} from "./runtime/loader/preflight.js";
    {SHARED_DEVICE_JS if backend == "webgpu" else ""}
    const tokens = {json.dumps(TOKENS)}, P = {PROMPT_LEN};
    const greedy = async (e, promptIds, n) => {{
      const g = e.generate({{ promptIds, maxNewTokens: n, sampling: {{ temperature: 0 }}, ignoreEos: true, decode: false }});
      let r; while (!(r = await g.next()).done) {{}}
      return {{ ids: r.value.tokenIds, cached: r.value.cachedTokens }};
    }};
    const out = {{}};
    for (const [key, dir] of Object.entries({json.dumps(folders)})) {{
      const e = await createEngine({{ modelDir: dir, ...{json.dumps(options)}{", device" if backend == "webgpu" else ""} }});
      const all = Array.from(await e.logits(tokens.slice(0, P)));            // prefill in chunks of {CHUNK}
      // Then one token per forward (the backend's decode attention), on the cache the prefill left.
      const decode = [];
      for (let i = P; i < tokens.length; i++) decode.push(...await e.model.forward(Int32Array.of(tokens[i]), i));
      e.resetCache();  // (the engine did not see those forwards)
      const first = await greedy(e, tokens.slice(0, {GREEDY_PROMPT}), {GREEDY});  // chained decode steps
      // Back to 4 tokens before the end of what was written: the ring still holds the keys there.
      const close = tokens.slice(0, {GREEDY_PROMPT}).concat(first.ids.slice(0, {GREEDY} - 4));
      const near = await greedy(e, close, 8);
      // Sharing only the first {GREEDY_PROMPT} tokens, ~90 positions later: the rings no longer hold them.
      const far = await greedy(e, tokens.slice(0, {FAR}), 8);
      out[key] = {{ first, close, near, far, all, decode, stats: e.stats, rewind: e.model.kvRewind,
        estimate: requirementsOf(e.manifest, {{ contextLength: {CTX}, prefillChunk: {CHUNK} }}).kvBytes,
        sliding: e.manifest.requirements.kv_cache_sliding ?? null }};
      await e.unload();
    }}
    console.log(JSON.stringify(out));
    """
    return run_node(script, timeout=900)


def _hf_greedy(model, prompt: list[int], n: int) -> list[int]:
    """n argmax tokens after `prompt`, each from transformers' logits of the whole sequence so far. Not
    ``generate``: its min_new_tokens would forbid EOS, which the engine (ignoreEos) may choose."""
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(np.argmax(_hf_logits(model, ids)[-1])))
    return ids[len(prompt):]


def _expected_rows(hf_config) -> list[int]:
    """Rows per layer from the transformers config: the window + chunk - 1 on sliding layers."""
    d = hf_config.to_dict()
    window = d["sliding_window"]
    types = d.get("layer_types") or ["sliding_attention"] * d["num_hidden_layers"]
    return [min(CTX, window + CHUNK - 1) if t == "sliding_attention" else CTX for t in types]


def _within(got: np.ndarray, want: np.ndarray, what: str, failures: list[str]) -> None:
    err, rng = float(np.abs(got - want).max()), float(want.max() - want.min())
    print(f"{what}: max |diff| / range {err / rng:.2g}")
    if err > 1e-4 * rng:
        failures.append(f"{what}: max |diff| {err:.3g} > 1e-4 x range {rng:.3g}")


@pytest.mark.parametrize("backend", ["webgpu", "wasm"])
def test_sliding_window_ring_matches_transformers(sources, backend):
    out = _engine_runs(sources, backend)
    failures: list[str] = []
    for case, (src, _, model) in sources.items():
        r = out[case]
        want = _hf_logits(model, TOKENS)
        vocab = want.shape[1]
        _within(np.array(r["all"]).reshape(PROMPT_LEN, vocab), want[:PROMPT_LEN], f"{backend}/{case} prefill logits",
                failures)
        _within(np.array(r["decode"]).reshape(DECODE, vocab), want[PROMPT_LEN:], f"{backend}/{case} decode logits",
                failures)
        prompt = TOKENS[:GREEDY_PROMPT]
        if r["first"]["ids"] != (want_first := _hf_greedy(model, prompt, GREEDY)):
            failures.append(f"{backend}/{case}: greedy tokens {r['first']['ids']} vs transformers' {want_first}")
        close = prompt + r["first"]["ids"][:GREEDY - 4]
        # The ring reuse: everything but the last prompt token (recomputed for its logits) is kept.
        want_near, want_far = _hf_greedy(model, close, 8), _hf_greedy(model, TOKENS[:FAR], 8)
        if r["near"]["cached"] != len(close) - 1 or r["near"]["ids"] != want_near:
            failures.append(f"{backend}/{case}: reuse near the end: cached {r['near']['cached']}, tokens "
                            f"{r['near']['ids']} vs transformers' {want_near}")
        if r["far"]["cached"] != 0 or r["far"]["ids"] != want_far:
            failures.append(f"{backend}/{case}: a prefix the ring no longer holds: cached {r['far']['cached']}, "
                            f"tokens {r['far']['ids']} vs transformers' {want_far}")

        # The memory bound, from the transformers config (not from our converter).
        cfg = model.config
        rows = _expected_rows(cfg)
        per_row = 2 * cfg.num_key_value_heads * cfg.head_dim * 4  # f32 K and V of one position of one layer
        assert r["stats"]["kvCacheRows"] == rows, (case, r["stats"]["kvCacheRows"], rows)
        assert r["stats"]["kvCacheBytes"] == per_row * sum(rows)
        assert any(n < CTX for n in rows) and r["stats"]["kvCacheBytes"] < per_row * CTX * len(rows) / 2
        assert r["estimate"] == r["stats"]["kvCacheBytes"], (r["estimate"], r["stats"]["kvCacheBytes"])
        assert r["rewind"] == CHUNK
        sliding = [n for n in rows if n < CTX]
        assert r["sliding"] == {"layers": len(sliding), "window": cfg.sliding_window,
                                "bytes_per_position": per_row * len(sliding)}
    assert not failures, failures


# ---- the Wasm kernels on a ring (the WebGPU kernels' ring cases are in test_kernels.py)

@pytest.mark.parametrize("threads", [1, 2])
def test_wasm_attention_reads_keys_from_their_ring_rows(threads):
    """Keys at absolute positions, the cache a ring of R = window + T - 1 rows with the visible keys
    wrapping past its last row: the same output as attention over the keys in position order."""
    from test_wasm_kernels import f32, run

    rng = np.random.default_rng(5)
    T, pos0, heads, kvh, hd, window, scale = 3, 40, 6, 2, 20, 7, 0.3
    R = window + T - 1  # 9 rows: positions 34..42, key 36 in row 0
    q = rng.standard_normal((T, heads, hd)).astype(np.float32)
    keys = rng.standard_normal((pos0 + T, kvh, hd)).astype(np.float32)
    vals = rng.standard_normal((pos0 + T, kvh, hd)).astype(np.float32)
    kc, vc = np.zeros((R, kvh, hd), np.float32), np.zeros((R, kvh, hd), np.float32)
    for p in range(pos0 + T - R, pos0 + T):
        kc[p % R], vc[p % R] = keys[p], vals[p]
    out = run({"q": q, "kc": kc, "vc": vc, "out": {"bytes": q.nbytes}, "s": {"bytes": threads * R * 4}},
              [["attention", {"buf": "out"}, {"buf": "q"}, {"buf": "kc"}, {"buf": "vc"}, T, pos0, heads, kvh, hd,
                scale, 0.0, window, {"buf": "s"}, R]], {"out": q.nbytes}, threads=threads)["out"]
    got = f32(out, q.size).reshape(q.shape)
    want = np.zeros_like(got)
    for t in range(T):
        lo, hi = pos0 + t - window + 1, pos0 + t + 1
        for h in range(heads):
            kv = h // (heads // kvh)
            s = keys[lo:hi, kv].astype(np.float64) @ q[t, h] * scale
            p = np.exp(s - s.max())
            want[t, h] = (p / p.sum()) @ vals[lo:hi, kv]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(vals).max()


def test_wasm_cache_append_wraps_the_ring():
    """The append (rope without rotation: learned positions / NoPE) writes position p to row p mod rows."""
    from test_wasm_kernels import f32, run

    rng = np.random.default_rng(6)
    T, pos0, kvh, hd, R = 5, 12, 2, 8, 7  # positions 12..16 → rows 5, 6, 0, 1, 2
    k = rng.standard_normal((T, kvh * hd)).astype(np.float32)
    v = rng.standard_normal((T, kvh * hd)).astype(np.float32)
    kc = np.full((R, kvh * hd), 7.0, np.float32)
    res = run({"q": k, "k": k, "v": v, "kc": kc, "vc": kc},
              [["rope", {"buf": "q"}, {"buf": "k"}, {"buf": "v"}, 0, {"buf": "kc"}, {"buf": "vc"}, 0, T, pos0, kvh,
                kvh, hd, 0, R]], {"kc": kc.nbytes, "vc": kc.nbytes})
    rows = np.arange(pos0, pos0 + T) % R
    got_k, got_v = f32(res["kc"], kc.size).reshape(R, -1), f32(res["vc"], kc.size).reshape(R, -1)
    assert np.array_equal(got_k[rows], k) and np.array_equal(got_v[rows], v)
    assert np.all(np.delete(got_k, rows, axis=0) == 7.0)  # row 3, 4: untouched
