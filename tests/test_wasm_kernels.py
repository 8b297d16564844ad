"""Every Wasm CPU kernel (runtime/backends/wasm/src/kernels.c) against numpy, odd sizes included
(issue 14, tests).

Each case runs through tests/js/wasm_harness.mjs under Node: the inputs are written into the
kernels' memory, the kernel is called, the output read back and compared with a float64 numpy
oracle over the same (dequantized) weights. Bounds, stated per kernel:

- products (matmul, every storage type, bias, gated activations, soft-capping, accumulate):
  |got - want| <= 1e-5 * Σ_c |x_c w_c| (f32 rounding of a sum of `cols` terms), plus 1e-6 for
  the activation's own error (exp, erf: relative errors below 2e-7); the decode path of q4/q8
  (one token, x in 16-bit fixed point per group of 32) adds 1.6e-5 * Σ_g max|x_g| Σ_(c in g) |w_c|
  (x rounded to 1/65534 of its group's largest value);
- embed (a dequantized row, times a scale): exact up to one f32 rounding (1e-6 relative);
- norm: 1e-5 of the largest output; rope: 1e-6 of the largest input;
- attention: 1e-5 of the largest |v| (softmax weights sum to 1);
- top-k / argmax: exact ids and values, lower id first on ties, masked ids never chosen.

The threaded build is checked to give byte-identical results with 2 threads (the rows are only split).
"""

from __future__ import annotations

import base64
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from sitegen.convert.quantize import dequantize, quantize

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "tests" / "js" / "wasm_harness.mjs"
DTYPES = {"f32": 0, "f16": 1, "q8": 2, "q4": 3}
ACTS = {"none": 0, "silu": 1, "gelu_tanh": 2, "gelu": 3}
RNG = np.random.default_rng(14)


def b64(a) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes() if isinstance(a, np.ndarray) else bytes(a)).decode()


def run(buffers: dict, calls: list, read: dict, *, threads: int = 1) -> dict:
    job = {"threads": threads, "buffers": {k: (v if isinstance(v, dict) else b64(v)) for k, v in buffers.items()},
           "calls": calls, "read": read}
    proc = subprocess.run(["node", str(HARNESS)], input=json.dumps(job), capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    return {k: (base64.b64decode(v) if k != "results" else v) for k, v in out.items()}


def f32(raw: bytes, n: int) -> np.ndarray:
    return np.frombuffer(raw, dtype=np.float32, count=n).astype(np.float64)


def weight(rows: int, cols: int, dtype: str):
    """(bytes, planes offsets, dequantized float64 matrix)."""
    w = RNG.standard_normal((rows, cols)).astype(np.float32) / math.sqrt(cols)
    data, planes, _ = quantize(w, dtype)
    entry = {"shape": [rows, cols], "dtype": dtype, "planes": planes, "group_size": 32}
    offsets = {p["name"]: p["offset"] for p in planes}
    return data, offsets, dequantize(data, entry).astype(np.float64)


def act_np(name: str, x: np.ndarray) -> np.ndarray:
    if name == "silu":
        return x / (1 + np.exp(-x))
    if name == "gelu_tanh":
        return 0.5 * x * (1 + np.tanh(0.7978845608028654 * (x + 0.044715 * x ** 3)))
    if name == "gelu":
        from math import erf
        return 0.5 * x * (1 + np.vectorize(erf)(x / math.sqrt(2)))
    return x


def matmul_job(dtype, T, rows, cols, *, bias=False, gate=False, act="none", softcap=0.0, accumulate=False,
               int16=False):
    """int16: the decode path of q4/q8 (one token, x in 16-bit fixed point per group of 32)."""
    data, off, W = weight(rows, cols, dtype)
    x = RNG.standard_normal((T, cols)).astype(np.float32)
    b = (0.1 * RNG.standard_normal(rows)).astype(np.float32)
    out0 = RNG.standard_normal((T, rows)).astype(np.float32)
    buffers = {"w": data, "x": x, "xp": {"bytes": x.nbytes}, "b": b, "out": out0, "xq": {"bytes": 2 * x.size + cols}}
    gw = gsc = 0
    G = None
    if gate:
        gdata, goff, G = weight(rows, cols, dtype)
        buffers["g"] = gdata
        gw, gsc = {"buf": "g", "plus": goff.get("q", goff.get("data", 0))}, {"buf": "g", "plus": goff.get("scales", 0)}
    wq = {"buf": "w", "plus": off.get("q", off.get("data", 0))}
    ws = {"buf": "w", "plus": off["scales"]} if "scales" in off else 0
    calls = []
    xin = {"buf": "x"}
    if dtype == "q4":
        calls.append(["deinterleave32", {"buf": "xp"}, {"buf": "x"}, T * cols])
        xin = {"buf": "xp"}
    if int16:
        assert T == 1 and dtype in ("q4", "q8")
        calls.append(["quantize_x16", {"buf": "xq"}, xin, cols])
    calls.append(["matmul", {"buf": "out"}, rows, xin, cols, T, rows, cols, DTYPES[dtype], wq, ws,
                  {"buf": "b"} if bias else 0, gw, gsc, 0, ACTS[act], softcap, int(accumulate),
                  {"buf": "xq"} if int16 else 0])
    xd = x.astype(np.float64)
    y = xd @ W.T + (b if bias else 0)
    absx = np.abs(xd)
    if int16:
        # x rounded to 16 bits per group: |x - x̂| <= max|x_g| / 65534 per element (1e-5 * 1.6 > 1/65534).
        absx = absx + 1.6 * np.repeat(np.abs(xd).reshape(T, -1, 32).max(-1), 32, axis=-1)
    scale = absx @ np.abs(W).T
    if gate:
        gy = xd @ G.T
        y = act_np(act, gy) * y
        scale = scale * (1 + np.abs(act_np(act, gy))) + np.abs(y) * (absx @ np.abs(G).T)
    elif act != "none":
        y = act_np(act, y)
    if softcap:
        y = softcap * np.tanh(y / softcap)
    if accumulate:
        y = y + out0
    return buffers, calls, {"out": out0.nbytes}, y, scale


CASES = [
    # dtype, T, rows, cols, options
    ("f32", 1, 13, 37, {}),
    ("f32", 5, 13, 37, {"bias": True, "accumulate": True}),
    ("f16", 1, 7, 45, {"bias": True}),
    ("f16", 6, 21, 64, {"gate": True, "act": "silu"}),
    ("q8", 1, 19, 96, {"bias": True}),
    ("q8", 7, 19, 96, {"gate": True, "act": "gelu_tanh", "bias": True}),
    ("q4", 1, 23, 96, {"accumulate": True}),
    ("q4", 2, 23, 64, {"act": "gelu"}),
    ("q4", 9, 37, 160, {"gate": True, "act": "silu", "bias": True}),
    ("q4", 3, 17, 32, {"softcap": 5.0}),
    ("q4", 1, 29, 96, {"int16": True, "bias": True}),
    ("q4", 1, 13, 160, {"int16": True, "gate": True, "act": "silu"}),
    ("q8", 1, 31, 64, {"int16": True, "accumulate": True}),
    ("q8", 1, 9, 128, {"int16": True, "gate": True, "act": "gelu_tanh", "bias": True}),
]


@pytest.mark.parametrize("dtype,T,rows,cols,opts", CASES, ids=[f"{c[0]}-T{c[1]}-{c[2]}x{c[3]}-{'-'.join(c[4]) or 'plain'}"
                                                             for c in CASES])
def test_matmul_matches_numpy(dtype, T, rows, cols, opts):
    buffers, calls, read, want, scale = matmul_job(dtype, T, rows, cols, **opts)
    got = f32(run(buffers, calls, read)["out"], T * rows).reshape(T, rows)
    bound = 1e-5 * scale + 1e-6 * (1 + np.abs(want))
    worst = float(np.max(np.abs(got - want) - bound))
    assert worst <= 0, f"max excess over the bound {worst:.3g}; max |diff| {np.abs(got - want).max():.3g}"


@pytest.mark.parametrize("dtype", ["f32", "q4"])
def test_matmul_two_threads_give_identical_bytes(dtype):
    buffers, calls, read, _, _ = matmul_job(dtype, 5, 45, 96, bias=True, gate=True, act="silu")
    one = run(buffers, calls, read, threads=1)["out"]
    two = run(buffers, calls, read, threads=2)["out"]
    assert one == two


@pytest.mark.parametrize("dtype", ["f32", "f16", "q8", "q4"])
def test_embed_dequantizes_rows(dtype):
    rows, cols, T = 11, 64 if dtype in ("q8", "q4") else 37, 4
    data, off, W = weight(rows, cols, dtype)
    ids = np.array([3, 0, 10, 3], dtype=np.int32)
    base = np.ones((T, cols), dtype=np.float32)
    out = run({"w": data, "ids": ids, "out": base},
              [["embed", {"buf": "out"}, {"buf": "ids"}, T, {"buf": "w", "plus": off.get("q", off.get("data", 0))},
                {"buf": "w", "plus": off["scales"]} if "scales" in off else 0, DTYPES[dtype], cols, 1.5, 1]],
              {"out": base.nbytes})["out"]
    got = f32(out, T * cols).reshape(T, cols)
    want = 1 + 1.5 * W[ids]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind,heads,per_head,bias", [(0, 1, False, False), (1, 1, False, True), (0, 3, False, False),
                                                      (1, 3, True, False)])
def test_norm(kind, heads, per_head, bias):
    T, n, eps = 5, 37, 1e-5
    x = (3 * RNG.standard_normal((T, heads, n)) + 0.5).astype(np.float32)
    w = RNG.standard_normal((heads if per_head else 1, n)).astype(np.float32)
    b = RNG.standard_normal((heads if per_head else 1, n)).astype(np.float32)
    acc = RNG.standard_normal((T, heads, n)).astype(np.float32)
    out = run({"x": x, "w": w, "b": b, "out": acc},
              [["norm", {"buf": "out"}, {"buf": "x"}, T, n, heads, {"buf": "w"}, {"buf": "b"} if bias else 0,
                int(per_head), kind, eps, 1]], {"out": acc.nbytes})["out"]
    got = f32(out, x.size).reshape(x.shape)
    xd = x.astype(np.float64)
    mean = xd.mean(-1, keepdims=True) if kind == 1 else 0
    var = ((xd - mean) ** 2).mean(-1, keepdims=True)
    want = (xd - mean) / np.sqrt(var + eps) * w[None] + (b[None] if bias else 0) + acc
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def rope_table(theta, rotary, positions):
    inv = (1 / theta ** (np.arange(0, rotary, 2) / rotary)).astype(np.float32).astype(np.float64)
    ang = np.arange(positions)[:, None] * inv[None]
    return np.stack([np.cos(ang), np.sin(ang)], -1).astype(np.float32)


def rotate(x, table, pos, half):
    c, s = table[pos, :, 0].astype(np.float64), table[pos, :, 1].astype(np.float64)
    out = x.astype(np.float64).copy()
    a, b = x[..., :half], x[..., half:2 * half]
    out[..., :half] = a * c - b * s
    out[..., half:2 * half] = b * c + a * s
    return out


def test_rope_and_cache_append():
    T, pos0, heads, kvh, hd, half, P = 3, 5, 4, 2, 18, 6, 12  # partial rotary: 12 of 18 dims
    q = RNG.standard_normal((T, heads, hd)).astype(np.float32)
    k = RNG.standard_normal((T, kvh, hd)).astype(np.float32)
    v = RNG.standard_normal((T, kvh, hd)).astype(np.float32)
    table = rope_table(10000.0, 2 * half, P)
    kc = np.zeros((P, kvh * hd), np.float32)
    res = run({"q": q, "k": k, "v": v, "qo": {"bytes": q.nbytes}, "kc": kc, "vc": kc, "t": table},
              [["rope", {"buf": "q"}, {"buf": "k"}, {"buf": "v"}, {"buf": "qo"}, {"buf": "kc"}, {"buf": "vc"},
                {"buf": "t"}, T, pos0, heads, kvh, hd, half]], {"qo": q.nbytes, "kc": kc.nbytes, "vc": kc.nbytes})
    pos = np.arange(pos0, pos0 + T)
    want_q = np.stack([rotate(q[t], table, pos[t], half) for t in range(T)])
    want_k = np.stack([rotate(k[t], table, pos[t], half) for t in range(T)])
    got_kc = f32(res["kc"], kc.size).reshape(P, kvh, hd)
    got_vc = f32(res["vc"], kc.size).reshape(P, kvh, hd)
    assert np.abs(f32(res["qo"], q.size).reshape(q.shape) - want_q).max() <= 1e-6 * np.abs(q).max()
    assert np.abs(got_kc[pos0:pos0 + T] - want_k).max() <= 1e-6 * np.abs(k).max()
    assert np.array_equal(got_vc[pos0:pos0 + T], v)
    assert not got_kc[:pos0].any() and not got_kc[pos0 + T:].any()


@pytest.mark.parametrize("window,softcap,threads", [(0, 0.0, 1), (4, 0.0, 1), (0, 3.0, 1), (3, 2.0, 2)])
def test_attention(window, softcap, threads):
    T, pos0, heads, kvh, hd, P = 3, 6, 6, 2, 20, 16
    scale = 0.3
    q = RNG.standard_normal((T, heads, hd)).astype(np.float32)
    kc = RNG.standard_normal((P, kvh, hd)).astype(np.float32)
    vc = RNG.standard_normal((P, kvh, hd)).astype(np.float32)
    out = run({"q": q, "kc": kc, "vc": vc, "out": {"bytes": q.nbytes}, "s": {"bytes": threads * P * 4}},
              [["attention", {"buf": "out"}, {"buf": "q"}, {"buf": "kc"}, {"buf": "vc"}, T, pos0, heads, kvh, hd,
                scale, softcap, window, {"buf": "s"}, P]], {"out": q.nbytes}, threads=threads)["out"]
    got = f32(out, q.size).reshape(q.shape)
    want = np.zeros_like(got)
    for t in range(T):
        pos = pos0 + t
        j0 = max(0, pos - window + 1) if window else 0
        for h in range(heads):
            kv = h // (heads // kvh)
            s = kc[j0:pos + 1, kv].astype(np.float64) @ q[t, h] * scale
            if softcap:
                s = softcap * np.tanh(s / softcap)
            p = np.exp(s - s.max())
            p /= p.sum()
            want[t, h] = p @ vc[j0:pos + 1, kv]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(vc).max()


def test_topk_ties_mask_and_argmax():
    n = 101
    logits = RNG.standard_normal(n).astype(np.float32)
    logits[[7, 40, 90]] = 5.0     # a three-way tie at the top: lower ids first
    logits[55] = 9.0              # the best, but masked out below
    mask = np.full((n + 31) // 32, 0xFFFFFFFF, dtype=np.uint32)
    mask[55 // 32] &= ~np.uint32(1 << (55 % 32))
    k = 6
    res = run({"l": logits, "m": mask, "ids": {"bytes": 4 * k}, "v": {"bytes": 4 * k}},
              [["topk", {"buf": "l"}, n, {"buf": "m"}, k, {"buf": "ids"}, {"buf": "v"}],
               ["topk", {"buf": "l"}, n, 0, 1, {"buf": "ids"}, {"buf": "v"}]],
              {"ids": 4 * k, "v": 4 * k})
    assert res["results"] == [k, 1]
    # The second call (no mask, k = 1) overwrote slot 0 with the unmasked argmax.
    ids = np.frombuffer(res["ids"], np.int32)
    vals = np.frombuffer(res["v"], np.float32)
    masked = logits.copy()
    masked[55] = -np.inf
    order = sorted(range(n), key=lambda i: (-masked[i], i))[:k]
    assert ids[0] == 55 and vals[0] == 9.0
    assert list(ids[1:]) == order[1:] and list(vals[1:]) == [masked[i] for i in order[1:]]
    assert order[:3] == [7, 40, 90]
