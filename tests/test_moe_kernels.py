"""The mixture-of-experts kernels (shaders/moe.wgsl, kernels.js moeRoute / moeUp / moeDown; issue 12)
on SwiftShader through tests/kernels_harness.mjs.

- moe_route against transformers itself: the router logits of every position of every sparse layer
  of the tiny Mixtral (top-k renormalised) and Qwen3-MoE (not renormalised) models, captured from
  their routers (MixtralTopKRouter / Qwen3MoeTopKRouter return logits, scores, indices), go through
  the GPU kernel; its expert ids must equal transformers' indices exactly (same order: largest
  first) and its weights transformers' scores within 1e-6 relative (f32 softmax, two summation orders).
- moe_up / moe_down against numpy over the *stored* weights (f32, f16, q8, q4 bytes decoded as in
  test_kernels.py), with 5 experts, top-2, several tokens, an expert tensor split in two parts at an
  expert boundary (as upload.js splits a tensor above the binding limit) and accumulation into the
  residual. Bound, as for linear: |y - y_ref| <= 1e-5 * Σ|terms| + 1e-6 (f32 rounding of the sums).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from oracles import need
from sitegen.convert.quantize import quantize
from test_kernels import SWIFTSHADER_ICD, _decode, _silu
from tiny_models import make_tiny

pytestmark = pytest.mark.gpu

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "tests" / "kernels_harness.mjs"
TOKENS = 40


def _run_harness(d: Path, cases: list[dict]) -> dict:
    node = shutil.which("node")
    if not node or not os.path.exists(SWIFTSHADER_ICD) or not (ROOT / "node_modules" / "webgpu").exists():
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            "needs node, the npm 'webgpu' package and SwiftShader (scripts/setup installs them)")
    (d / "batch.json").write_text(json.dumps({"dir": str(d), "cases": cases}))
    env = {**os.environ, "VK_ICD_FILENAMES": SWIFTSHADER_ICD, "LD_LIBRARY_PATH": "/usr/lib/chromium"}
    p = subprocess.run([node, str(HARNESS), str(d / "batch.json")], capture_output=True, text=True, env=env,
                       timeout=900, cwd=ROOT)
    assert (d / "results.json").exists(), f"harness failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    return json.loads((d / "results.json").read_text())["results"]


def _hf_router_outputs(src: Path, tokens: list[int]) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """layer → (router logits [T, E], scores [T, k], indices [T, k]) as transformers computes them."""
    torch = need("torch")
    transformers = need("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    got: dict[int, tuple] = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        router = next((m for m in layer.modules() if type(m).__name__.endswith("TopKRouter")), None)
        if router is not None:
            hooks.append(router.register_forward_hook(
                lambda mod, args, out, i=i: got.__setitem__(i, tuple(o.detach().numpy() for o in out))))
    with torch.no_grad():
        model(torch.tensor([tokens]))
    for h in hooks:
        h.remove()
    return got


@pytest.fixture(scope="module")
def route_cases(tmp_path_factory):
    d = tmp_path_factory.mktemp("moe_route")
    tokens = np.random.default_rng(1).integers(3, 384, TOKENS).tolist()
    cases, want = [], {}
    for arch in ("mixtral", "qwen3_moe"):
        src = make_tiny(arch, d / f"{arch}_src")
        cfg = json.loads((src / "config.json").read_text())
        norm = arch == "mixtral" or bool(cfg.get("norm_topk_prob"))
        for layer, (logits, scores, idx) in _hf_router_outputs(src, tokens).items():
            cid = f"route-{arch}-{layer}"
            k = idx.shape[1]
            (d / f"{cid}.logits").write_bytes(logits.astype("<f4").tobytes())
            (d / f"{cid}.sel").write_bytes(bytes(TOKENS * 2 * k * 4))
            cases.append({"id": cid, "variant": "plain", "step": {"tokens": TOKENS, "pos0": 0},
                          "buffers": {"logits": f"{cid}.logits", "sel": f"{cid}.sel"},
                          "ops": [{"op": "moeRoute", "opts": {"sel": "$sel", "logits": "$logits",
                                                              "experts": logits.shape[1], "topK": k, "norm": norm}}],
                          "outputs": ["sel"]})
            want[cid] = (scores, idx)
    return d, _run_harness(d, cases), want


def test_route_kernel_chooses_transformers_experts_on_every_position(route_cases):
    d, results, want = route_cases
    assert len(want) == 4  # Mixtral: layers 0, 1; Qwen3-MoE: layers 0, 2 (layer 1 is dense)
    for cid, (scores, idx) in want.items():
        assert results[cid] == "ok", (cid, results[cid])
        k = idx.shape[1]
        sel = np.frombuffer((d / f"{cid}.sel.out").read_bytes(), dtype="<u4")[: TOKENS * 2 * k].reshape(TOKENS, 2 * k)
        assert (sel[:, :k] == idx).all(), f"{cid}: expert ids differ at positions {np.nonzero((sel[:, :k] != idx).any(-1))[0]}"
        weights = sel[:, k:].copy().view("<f4")
        np.testing.assert_allclose(weights, scores, rtol=1e-6, atol=1e-7, err_msg=cid)


# -- experts --------------------------------------------------------------------------------------

E, K_TOP, HIDDEN, INTER, T = 5, 2, 96, 64, 3


def _stored(a: np.ndarray, dtype: str) -> tuple[bytes, int]:
    """The bytes of a weight as the converter stores it, and its scales' offset (0 for f32/f16)."""
    data, planes, _ = quantize(a.astype(np.float32), dtype)
    return data, (planes[1]["offset"] if len(planes) == 2 else 0)


def _decoded(data: bytes, dtype: str, rows: int, cols: int, so: int) -> np.ndarray:
    return _decode(data, dtype, rows, cols, so)


@pytest.fixture(scope="module")
def expert_cases(tmp_path_factory):
    d = tmp_path_factory.mktemp("moe_experts")
    rng = np.random.default_rng(7)
    x = rng.standard_normal((T, HIDDEN))
    ids = np.stack([rng.choice(E, K_TOP, replace=False) for _ in range(T)])  # [T, k]
    ids[0] = [4, 0]  # the first and the last expert: both parts of a split tensor
    w = rng.uniform(0.1, 0.9, (T, K_TOP))
    sel = np.concatenate([ids.astype("<u4"), w.astype("<f4").view("<u4")], axis=1)
    residual = rng.standard_normal((T, HIDDEN))
    (d / "x").write_bytes(x.astype("<f4").tobytes())
    (d / "sel").write_bytes(sel.astype("<u4").tobytes())
    (d / "hid").write_bytes(bytes(T * K_TOP * INTER * 4))
    (d / "out").write_bytes(residual.astype("<f4").tobytes())
    gate = rng.standard_normal((E, INTER, HIDDEN)) / HIDDEN ** 0.5
    up = rng.standard_normal((E, INTER, HIDDEN)) / HIDDEN ** 0.5
    down = rng.standard_normal((E, HIDDEN, INTER)) / INTER ** 0.5
    cases, refs = [], {}
    for dtype in ("f32", "f16", "q8", "q4"):
        for split in (None, 2):  # experts [0, 2) and [2, 5) in their own buffers
            ranges = [(0, E)] if split is None else [(0, split), (split, E)]
            cid = f"experts-{dtype}-{'split' if split else 'whole'}"
            bufs = {"x": "x", "sel": "sel", "hid": "hid", "out": "out"}
            dec = {"gate": [], "up": [], "down": []}
            up_ops, down_ops = [], []
            for pi, (e0, e1) in enumerate(ranges):
                views = {}
                for name, arr, rows, cols in (("gate", gate, INTER, HIDDEN), ("up", up, INTER, HIDDEN),
                                              ("down", down, HIDDEN, INTER)):
                    data, so = _stored(arr[e0:e1], dtype)
                    fname = f"{cid}.{name}{pi}"
                    (d / fname).write_bytes(data)
                    bufs[f"{name}{pi}"] = fname
                    views[name] = {"$weight": f"{name}{pi}", "dtype": dtype, "rows": (e1 - e0) * rows, "cols": cols,
                                   "scalesOffset": so}
                    dec[name].append(_decoded(data, dtype, (e1 - e0) * rows, cols, so).reshape(e1 - e0, rows, cols))
                up_ops.append({"op": "moeUp", "opts": {"hid": "$hid", "x": "$x", "sel": "$sel", "gate": views["gate"],
                               "up": views["up"], "expertStart": e0, "experts": e1 - e0, "inter": INTER,
                               "topK": K_TOP, "act": "silu"}})
                down_ops.append({"op": "moeDown", "opts": {"out": "$out", "hid": "$hid", "sel": "$sel",
                                 "down": views["down"], "expertStart": e0, "experts": e1 - e0, "hidden": HIDDEN,
                                 "topK": K_TOP, "accumulate": True}})
            cases.append({"id": cid, "variant": "plain", "step": {"tokens": T, "pos0": 0}, "buffers": bufs,
                          "ops": up_ops + down_ops, "outputs": ["hid", "out"]})
            G, U, D = (np.concatenate(dec[n]) for n in ("gate", "up", "down"))
            g = np.einsum("th,tkih->tki", x, G[ids])  # [T, k, I]
            u = np.einsum("th,tkih->tki", x, U[ids])
            hid = _silu(g) * u
            g_abs = np.einsum("th,tkih->tki", abs(x), abs(G[ids]))
            u_abs = np.einsum("th,tkih->tki", abs(x), abs(U[ids]))
            hid_bound = 1e-5 * (1.1 * g_abs * abs(u) + abs(_silu(g)) * u_abs) + 1e-6
            y = residual + np.einsum("tk,tkhi,tki->th", w, D[ids], hid)
            y_bound = 1e-5 * (np.einsum("tk,tkhi,tki->th", w, abs(D[ids]), abs(hid)) + abs(residual)) + 1e-6
            refs[cid] = (hid, hid_bound, y, y_bound)
    return d, _run_harness(d, cases), refs


def test_expert_kernels_read_the_chosen_experts(expert_cases):
    d, results, refs = expert_cases
    for cid, (hid, hid_bound, y, y_bound) in refs.items():
        assert results[cid] == "ok", (cid, results[cid])
        got_h = np.frombuffer((d / f"{cid}.hid.out").read_bytes(), "<f4")[: hid.size].reshape(hid.shape)
        got_y = np.frombuffer((d / f"{cid}.out.out").read_bytes(), "<f4")[: y.size].reshape(y.shape)
        assert (abs(got_h - hid) <= hid_bound).all(), f"{cid}: hid max err {abs(got_h - hid).max():.3g}"
        assert (abs(got_y - y) <= y_bound).all(), f"{cid}: out max err {abs(got_y - y).max():.3g}"
