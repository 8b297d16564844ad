"""Every WGSL kernel (runtime/kernels.js + shaders/) against numpy, issue 4 item 2.

The cases run in two Node processes at once (tests/kernels_harness.mjs, Dawn), each
executing a JSON batch; arrays travel as raw files in a temp dir. f32-compute cases run on
SwiftShader; the f16-compute ones ("f16" variant) on Mesa's lavapipe, which has shader-f16
(SwiftShader lacks it; scripts/setup installs lavapipe from bookworm-backports, and only
without it are those cases skipped). Each case is checked
against a float64 numpy reference with a stated bound (see each ``_bound_*`` helper):

- linear (matvec and matmul), f32 compute: |y - y_ref| <= 1e-5 * sum_k |x_k w_jk| + 1e-6,
  where w is numpy's decoding of the *stored* q4/q8/f16/f32 bytes (the quantization error
  itself is the converter's business; here the kernel must reproduce the stored weights);
  f16 compute (only where the device has shader-f16): 1e-2 * the same sum; the integer-dot
  matvec (XQ, its int8 input within max|x_group|/65024 of x): plus sum_groups of that times |w|.
- norms, RoPE, element-wise: ~1e-5 relative (see the helpers); attention: scores to
  ~1e-5 relative, outputs within 1e-5 * (1 + scale * sum|q k|) * max|v|.

Sizes are odd on purpose (N=77, K=96/160/77/45, 3 rows, 3 heads with 1 KV head, head_dim
16/64/80, 300 keys = two chunks of 256). Variants: plain (shared-memory reductions), "sg"
(subgroups; SwiftShader has them, of size 4) and "f16" (shader-f16 and subgroups of size 8, on
lavapipe; a representative subset of the linear cases, see the note at the linear cases).
"""

from __future__ import annotations

import concurrent.futures
import glob
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sitegen.convert.quantize import quantize

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "tests" / "kernels_harness.mjs"
SWIFTSHADER_ICD = "/usr/lib/chromium/vk_swiftshader_icd.json"

pytestmark = pytest.mark.gpu


# --------------------------------------------------------------------------- numpy side

def _decode(raw: bytes, dtype: str, rows: int, cols: int, scales_offset: int) -> np.ndarray:
    """Decode stored weight bytes per docs/weights-format.md, reading u32 words as the kernels do."""
    buf = raw + bytes(-len(raw) % 4)
    words = np.frombuffer(buf, dtype="<u4")
    r = np.arange(rows)[:, None]
    c = np.arange(cols)[None, :]
    if dtype == "f32":
        return words[: rows * cols].view("<f4").reshape(rows, cols).astype(np.float64)
    if dtype == "f16":
        return np.frombuffer(buf, dtype="<f2")[: rows * cols].reshape(rows, cols).astype(np.float64)
    scales = np.frombuffer(buf[scales_offset:], dtype="<f2")[: rows * cols // 32].astype(np.float64)
    scale = scales[r * (cols // 32) + c // 32]
    if dtype == "q4":
        q = (words[r * (cols // 8) + c // 8] >> (4 * (c % 8)).astype(np.uint32)) & 15
        return (q.astype(np.float64) - 8.0) * scale
    b = (words[r * (cols // 4) + c // 4] >> (8 * (c % 4)).astype(np.uint32)) & 255
    return b.astype(np.uint8).view(np.int8).astype(np.float64) * scale


def _silu(x):
    return x / (1.0 + np.exp(-x))


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


ACTS = {"silu": _silu, "gelu_tanh": _gelu_tanh, "gelu": _gelu, None: lambda x: x}


# --------------------------------------------------------------------------- the batch

class _Batch:
    """Cases to run in one harness process; each keeps its numpy expectations."""

    def __init__(self):
        self.cases: list[dict] = []
        self.files: dict[str, bytes] = {}
        self.checks: dict[str, dict] = {}

    def add(self, cid: str, *, variant: str, step: tuple[int, int], buffers: dict, ops: list,
            expect: dict, dtype_out: dict | None = None, kernels: list | None = None):
        names = {}
        for name, value in buffers.items():
            fname = f"{cid}.{name}.in"
            self.files[fname] = value if isinstance(value, bytes) else np.ascontiguousarray(value).tobytes()
            names[name] = fname
        self.cases.append({"id": cid, "variant": variant, "step": {"tokens": step[0], "pos0": step[1]},
                           "buffers": names, "ops": ops, "outputs": list(expect),
                           **({"kernels": kernels} if kernels else {})})
        self.checks[cid] = {"expect": expect, "dtype_out": dtype_out or {}}


# SITEGEN_KERNEL_ADAPTER=gpu: every f32-compute case on the system's Vulkan driver instead of SwiftShader
# (the GPU machine; set SITEGEN_DAWN_FLAGS=enable-dawn-features=allow_unsafe_apis there for the
# subgroup-matrix cases, which only exist then), and no lavapipe batch.
ON_GPU = os.environ.get("SITEGEN_KERNEL_ADAPTER") == "gpu"

B = _Batch()
RNG = np.random.default_rng(4)
VARIANTS = ("plain", "sg")
# "smallgrid": grids wrap from x into y past 3 workgroups (the real limit, 65535, is too slow to reach here).


def _weight(rows: int, cols: int, dtype: str, scale: float = 0.5):
    w = (RNG.standard_normal((rows, cols)) * scale).astype(np.float32)
    data, planes, _ = quantize(w, dtype)
    so = planes[1]["offset"] if dtype in ("q4", "q8") else 0
    ref = {"$weight": "w", "dtype": dtype, "rows": rows, "cols": cols, "scalesOffset": so}
    return data, _decode(data, dtype, rows, cols, so), ref


def _f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


# ---- linear: plain products over every dtype, odd sizes, matvec (1, 3 tokens) and matmul (70)

_XMM_V = ("xmm", "sgmat")


def _add_linear(cid, dtype, N, K, tokens, *, variants=VARIANTS + ("f16",), gate=False, act=None, bias=False,
                gate_bias=False, softcap=None, accumulate=False, out_offset=0, out_stride=None, rows="all",
                impl=None, tune=None, prenorm=False, max_tokens=None):
    data, W, wref = _weight(N, K, dtype)
    buffers = {"w": data, "x": _f32(RNG.standard_normal((tokens, K)))}
    x = buffers["x"].astype(np.float64)
    opts = {"out": "$out", "x": "$x", "w": wref}
    if prenorm:
        # RMSNorm fused into the matvec: the kernel reads the raw rows "xr" and the norm weight.
        eps = 1e-5
        xr = _f32(RNG.standard_normal((tokens, K)) * 3)
        nw = _f32(1 + 0.5 * RNG.standard_normal(K))
        xr64 = xr.astype(np.float64)
        x = xr64 / np.sqrt((xr64 ** 2).mean(axis=1, keepdims=True) + eps) * nw
        buffers.update(xr=xr, nw=nw, x=_f32(x))
        opts["prenorm"] = {"x": "$xr", "weight": "$nw", "eps": eps}
    if tune:
        opts["tune"] = tune
    xs = x[[tokens - 1]] if rows == "last" else (x[[0]] if rows == "first" else x)
    y = xs @ W.T
    S = np.abs(xs) @ np.abs(W).T
    # The integer-dot path's input: each value within max|x| of its 32-group / 65024 (two int8 levels:
    # d = max / 127, then the remainder in d / 256 steps, rounded), so |Δy| <= Σ_groups that x |w|.
    xq_err = lambda Wm: 0.0  # noqa: E731
    if (tune and tune.get("int8")) or impl == "xmm" or (max_tokens and tokens > 4):
        xmax = np.abs(xs).reshape(len(xs), K // 32, 32).max(axis=2) / 65024  # noqa: F841
        xq_err = lambda Wm: np.einsum("mg,ngk->mn", xmax, np.abs(Wm).reshape(N, K // 32, 32))  # noqa: E731
    if bias:
        buffers["bias"] = _f32(RNG.standard_normal(N))
        opts["bias"] = "$bias"
        y = y + buffers["bias"]
    if gate:
        gdata, G, gref = _weight(N, K, dtype)
        buffers["g"] = gdata
        opts["gate"] = {**gref, "$weight": "g"}
        g = xs @ G.T
        Sg = np.abs(xs) @ np.abs(G).T
        Sgq = xq_err(G)
        if gate_bias:
            buffers["gbias"] = _f32(RNG.standard_normal(N))
            opts["gateBias"] = "$gbias"
            g = g + buffers["gbias"]
    if act:
        opts["act"] = act
    if softcap:
        opts["softcap"] = softcap
    if accumulate:
        opts["accumulate"] = True
    if impl:
        opts["impl"] = impl
    if impl == "xmm" and not max_tokens:
        max_tokens = tokens  # sizes its int8 input
    if max_tokens:
        opts["maxTokens"] = max_tokens
    stride = out_stride or N
    opts.update(outOffset=out_offset, outStride=stride, rows=rows)
    f = ACTS[act]
    for variant in variants:
        tol = 1e-2 if variant == "f16" else 1e-5
        e = tol * S + xq_err(W) + 1e-6
        if gate:
            eg = tol * Sg + Sgq + 1e-6
            ref = f(g) * y
            err = 1.2 * eg * np.abs(y) + np.abs(f(g)) * e + eg * e
        else:
            ref = f(y)
            err = (1.2 if act else 1.0) * e
        if softcap:
            ref = softcap * np.tanh(ref / softcap)
        M = ref.shape[0]
        init = _f32(RNG.standard_normal((M, stride)) * 3 if (accumulate or stride != N) else np.zeros((M, stride)))
        full = init.astype(np.float64).copy()
        full_err = np.zeros_like(full)
        full[:, out_offset:out_offset + N] = ref + (init[:, out_offset:out_offset + N] if accumulate else 0)
        full_err[:, out_offset:out_offset + N] = err + 1e-6 * np.abs(full[:, out_offset:out_offset + N])
        # which kernels the step must run (names in the pipeline keys: e.g. the integer prefill's)
        want = (["xquant", "xmatmul"] if impl == "xmm" or (max_tokens and tokens > 4) and variant in _XMM_V
                else ["matvec"] if max_tokens else None)
        B.add(f"{cid}-{variant}", variant=variant, step=(tokens, 0), buffers={**buffers, "out": init},
              ops=[{"op": "linear", "opts": opts}], expect={"out": (full, full_err)}, kernels=want and [want])


# The f16-compute variant runs on lavapipe, whose LLVM compile of each new pipeline costs
# ~1-8 s of CPU on a cold Mesa shader cache (as in CI): so it gets every weight dtype on both
# matvec tilings and matmul, the element-wise path, and every epilogue on two (dtype, impl)
# pairs, not the whole cross product that the f32 variants get.
_ALL = VARIANTS + ("f16",)
for _dt in ("f32", "f16", "q8", "q4"):
    for _N, _K in ((77, 96), (77, 160), (300, 576)):
        for _T in (1, 3, 70):
            _f16 = _K != 160 and _T != 3
            _add_linear(f"linear-{_dt}-{_N}x{_K}-t{_T}", _dt, _N, _K, _T, variants=_ALL if _f16 else VARIANTS)
for _dt in ("f32", "f16"):  # K not a multiple of 32: the element-wise matvec path
    for _N, _K in ((77, 77), (33, 45)):
        for _T in (1, 3, 70):
            _f16 = _K == 77 and _T != 3
            _add_linear(f"linear-{_dt}-{_N}x{_K}-t{_T}", _dt, _N, _K, _T, variants=_ALL if _f16 else VARIANTS)
for _dt, _N, _K in (("q4", 77, 96), ("q8", 40, 64), ("f16", 33, 45), ("f32", 70, 32)):
    for _T in (2, 70):
        _v = _ALL if (_dt, _T) == ("q4", 2) else VARIANTS  # every epilogue on matvec
        _vm = _ALL if (_dt, _T) in (("q4", 2), ("f16", 70)) else VARIANTS  # and the two richest on matmul
        _add_linear(f"linear-{_dt}-bias-t{_T}", _dt, _N, _K, _T, bias=True, variants=_v)
        _add_linear(f"linear-{_dt}-gated-silu-t{_T}", _dt, _N, _K, _T, gate=True, act="silu", bias=True, gate_bias=True,
                    variants=_vm)
        _add_linear(f"linear-{_dt}-gated-gelu_tanh-t{_T}", _dt, _N, _K, _T, gate=True, act="gelu_tanh", variants=_v)
        _add_linear(f"linear-{_dt}-gelu-softcap-t{_T}", _dt, _N, _K, _T, act="gelu", bias=True, softcap=2.0,
                    variants=_vm)
        _add_linear(f"linear-{_dt}-acc-offset-t{_T}", _dt, _N, _K, _T, accumulate=True, out_offset=5,
                    out_stride=_N + 9, variants=_vm)
        _add_linear(f"linear-{_dt}-rows-last-t{_T}", _dt, _N, _K, _T, rows="last", variants=_v)
_add_linear("linear-q4-matmul-forced-t2", "q4", 77, 96, 2, impl="matmul")
# Several rows per invocation (nr) and lane counts (tpr), forced: the defaults pick nr > 1 only for
# matrices with many rows; rows past N in the last workgroup are clamped, not written.
for _dt in ("q4", "q8", "f16", "f32"):
    for _nr, _tpr in ((2, 32), (3, 8), (4, 16)):
        _add_linear(f"linear-{_dt}-77x160-nr{_nr}-tpr{_tpr}", _dt, 77, 160, 2, tune={"nr": _nr, "tpr": _tpr},
                    variants=_ALL if (_dt, _nr) == ("q4", 4) else VARIANTS)
_add_linear("linear-q4-gated-nr4-acc", "q4", 77, 96, 1, gate=True, act="silu", accumulate=True, tune={"nr": 4, "tpr": 4})
# Fewer lanes per row than a subgroup has (SwiftShader's are 4): the butterfly over part of a subgroup;
# and 6 or 8 rows per invocation (the second vector of sums).
_add_linear("linear-q4-rmsnorm-gated-tpr2-nr6", "q4", 77, 96, 2, prenorm=True, gate=True, act="silu", tune={"nr": 6, "tpr": 2})
_add_linear("linear-q8-tpr1-nr8", "q8", 77, 64, 1, tune={"nr": 8, "tpr": 1})
_add_linear("linear-xq-q4-rmsnorm-gated-tpr2-nr8", "q4", 77, 96, 1, prenorm=True, gate=True, act="silu",
            tune={"nr": 8, "tpr": 2, "int8": True})
_add_linear("linear-q4-2100x64-default-tuning", "q4", 2100, 64, 1)  # enough rows for nr > 1 by default
# RMSNorm fused in front of the matvec (decode): the kernel normalises the raw rows itself.
_add_linear("linear-q4-rmsnorm-t1", "q4", 77, 160, 1, prenorm=True, variants=_ALL)
_add_linear("linear-q8-rmsnorm-gated-t3", "q8", 40, 64, 3, prenorm=True, gate=True, act="silu")
_add_linear("linear-f32-rmsnorm-last-nr2", "f32", 70, 96, 5, prenorm=True, rows="last", tune={"nr": 2})
# The "cpu" tuning's shape (a software adapter's default: 4 lanes, 4 rows per invocation), fused norm and gate.
_add_linear("linear-q4-rmsnorm-gated-cpu-shape", "q4", 77, 160, 1, prenorm=True, gate=True, act="silu",
            tune={"nr": 4, "tpr": 4}, variants=_ALL)

# The integer-dot matvec (XQ: the input quantized to two int8 levels per 32-group, then dot4I8Packed
# over q4/q8 codes), forced on these small matrices (by default it takes products of 8M weights and
# more): the f32 bound plus the input's quantization (see xq_err in _add_linear).
for _dt, _N, _K in (("q4", 77, 96), ("q8", 40, 64), ("q4", 300, 576)):
    _x8 = {"int8": True}
    for _T in (1, 3):
        _add_linear(f"linear-xq-{_dt}-{_N}x{_K}-t{_T}", _dt, _N, _K, _T, tune=_x8)
    _add_linear(f"linear-xq-{_dt}-{_N}x{_K}-gated-silu-bias", _dt, _N, _K, 2, gate=True, act="silu", bias=True,
                gate_bias=True, tune=_x8)
    _add_linear(f"linear-xq-{_dt}-{_N}x{_K}-softcap-acc", _dt, _N, _K, 1, act="gelu", softcap=2.0, accumulate=True,
                out_offset=3, out_stride=_N + 5, tune=_x8)
    _add_linear(f"linear-xq-{_dt}-{_N}x{_K}-rows-last", _dt, _N, _K, 4, rows="last", tune=_x8)
    _add_linear(f"linear-xq-{_dt}-{_N}x{_K}-rmsnorm-gated", _dt, _N, _K, 3, prenorm=True, gate=True, act="silu", tune=_x8)
    _add_linear(f"linear-xq-{_dt}-{_N}x{_K}-nr3-tpr8", _dt, _N, _K, 2, tune={**_x8, "nr": 3, "tpr": 8})
_add_linear("linear-xq-q4-rmsnorm-last-cpu-shape", "q4", 77, 160, 5, prenorm=True, rows="last",
            tune={"int8": True, "nr": 4, "tpr": 4})


def _add_xq_zero_row():
    """A zero input row (each group's max |x| is 0: no division by it) beside a normal one."""
    data, W, wref = _weight(40, 64, "q4")
    x = _f32(RNG.standard_normal((2, 64)))
    x[0] = 0
    x[1, :32] = 0  # one zero group in the other row
    y = x.astype(np.float64) @ W.T
    xmax = np.abs(x.astype(np.float64)).reshape(2, 2, 32).max(axis=2) / 65024  # as in _add_linear
    err = 1e-5 * (np.abs(x.astype(np.float64)) @ np.abs(W).T) + np.einsum("mg,ngk->mn", xmax, np.abs(W).reshape(40, 2, 32)) + 1e-6
    for variant in VARIANTS:
        B.add(f"linear-xq-zero-row-{variant}", variant=variant, step=(2, 0),
              buffers={"w": data, "x": x, "out": np.zeros((2, 40), np.float32)},
              ops=[{"op": "linear", "opts": {"out": "$out", "x": "$x", "w": wref, "tune": {"int8": True}}}],
              expect={"out": (y, err)})


_add_xq_zero_row()


def _add_xq_chain(cid, dtype, H, inter, N2, tokens, *, tune1=None, fused=True, rows="all", variants=VARIANTS):
    """A gated product (H -> inter) whose only reader is an integer-dot down projection (inter -> N2):
    with `quantizeFor` the first writes the second's int8 input itself (QOUT) and the second reads it
    (`xqFrom`), skipping its quantize dispatch. Bound: the first's f32 bound carried through |W2|, its
    output's quantization (max|y1| of a group / 65024, as in _add_linear) and the second's f32 term.
    fused=False: a shape whose workgroups are not whole 32-groups (no int8 output; the reader quantizes)."""
    gdata, G, gref = _weight(inter, H, "q4")
    udata, U, uref = _weight(inter, H, "q4")
    ddata, D, dref = _weight(N2, inter, dtype)
    x = _f32(RNG.standard_normal((tokens, H)))
    x64 = x.astype(np.float64)
    g, u = x64 @ G.T, x64 @ U.T
    y1 = _silu(g) * u
    eg = 1e-5 * (np.abs(x64) @ np.abs(G).T) + 1e-6
    eu = 1e-5 * (np.abs(x64) @ np.abs(U).T) + 1e-6
    if tune1 and tune1.get("int8"):
        xmax = np.abs(x64).reshape(tokens, H // 32, 32).max(axis=2) / 65024
        eg = eg + np.einsum("mg,ngk->mn", xmax, np.abs(G).reshape(inter, H // 32, 32))
        eu = eu + np.einsum("mg,ngk->mn", xmax, np.abs(U).reshape(inter, H // 32, 32))
    e1 = 1.2 * eg * np.abs(u) + np.abs(_silu(g)) * eu + eg * eu
    # rows "first": the first product has one row, the last token's (rows "last"), the reader reads it
    y1s = y1[[tokens - 1]] if rows == "first" else y1
    e1s = e1[[tokens - 1]] if rows == "first" else e1
    M = len(y1s)
    qmax = (np.abs(y1s) + e1s).reshape(M, inter // 32, 32).max(axis=2) / 65024
    y2 = y1s @ D.T
    err = (e1s + np.repeat(qmax, 32, axis=1)) @ np.abs(D).T + 1e-5 * (np.abs(y1s) @ np.abs(D).T) + 1e-6
    op1 = {"out": "$h", "x": "$x", "w": {**uref, "$weight": "u"}, "gate": {**gref, "$weight": "g"}, "act": "silu",
           "quantizeFor": dtype, "rows": "all" if rows == "all" else "last"}
    if tune1:
        op1["tune"] = tune1
    op2 = {"out": "$out", "x": "$h", "w": {**dref, "$weight": "d"}, "tune": {"int8": True}, "rows": rows,
           "xqFrom": {"$xqOut": 0, "expect": fused}}
    for variant in variants:
        B.add(f"{cid}-{variant}", variant=variant, step=(tokens, 0),
              buffers={"g": gdata, "u": udata, "d": ddata, "x": x, "h": np.zeros((tokens, inter), np.float32),
                       "out": np.zeros((len(y2), N2), np.float32)},
              ops=[{"op": "linear", "opts": op1}, {"op": "linear", "opts": op2}], expect={"out": (y2, err)})


# QOUT: the GPU shape (32 lanes x 4 rows: a workgroup's 32 rows are one group), the software
# adapter's (4 x 4: 8 groups a workgroup), the default for this size, a 3-row shape (96 rows: 3 groups),
# a q8 reader, an integer-dot first product, rows "first" after a one-row product, a grid that wraps,
# and a shape whose workgroups are not whole groups (48 rows: no int8 output, the reader quantizes).
_add_xq_chain("xq-chain-q4-gpu-shape", "q4", 64, 96, 77, 1, tune1={"tpr": 32, "nr": 4})
_add_xq_chain("xq-chain-q4-cpu-shape-t3", "q4", 64, 320, 40, 3, tune1={"tpr": 4, "nr": 4})
_add_xq_chain("xq-chain-q4-default-t2", "q4", 96, 128, 33, 2)
_add_xq_chain("xq-chain-q4-nr3-tpr8", "q4", 64, 192, 40, 2, tune1={"tpr": 8, "nr": 3})
_add_xq_chain("xq-chain-q8-reader-xq-first", "q8", 64, 96, 40, 2, tune1={"tpr": 32, "nr": 4, "int8": True})
_add_xq_chain("xq-chain-q4-rows-first", "q4", 64, 96, 40, 3, tune1={"tpr": 32, "nr": 4}, rows="first")
_add_xq_chain("xq-chain-q4-wrap", "q4", 64, 320, 40, 1, tune1={"tpr": 32, "nr": 4}, variants=("smallgrid",))
_add_xq_chain("xq-chain-q4-not-whole-groups", "q4", 64, 96, 40, 2, tune1={"tpr": 16, "nr": 3}, fused=False)


# ---- tensor groups (format v2): a member as a row range of its group's buffer (rowOffset, bias offsets),
# gate and up as two members of one buffer, and a fused q/k/v product written as three dense arrays.

def _add_group_cases(cid, dtype, rows, K, tokens, *, impl=None):
    """rows: the members' row counts (q, k, v or gate, up), stored as one tensor [sum(rows), K]."""
    N = sum(rows)
    data, W, wref = _weight(N, K, dtype)
    x = _f32(RNG.standard_normal((tokens, K)))
    b = _f32(RNG.standard_normal(N))
    x64 = x.astype(np.float64)
    starts = np.cumsum([0, *rows])[:-1]
    extra = {"impl": impl} if impl else {}
    tol = lambda Wp: 1e-5 * (np.abs(x64) @ np.abs(Wp).T) + 1e-5  # noqa: E731
    # Each member on its own: rows [s, s+n) of the group, bias at element s.
    for i, (s0, n) in enumerate(zip(starts, rows)):
        Wm = W[s0:s0 + n]
        ref = x64 @ Wm.T + b[s0:s0 + n]
        opts = {"out": "$out", "x": "$x", "w": {**wref, "rows": n, "rowOffset": int(s0)}, "bias": "$b",
                "biasOffset": int(s0), **extra}
        B.add(f"{cid}-member{i}-plain", variant="plain", step=(tokens, 0),
              buffers={"w": data, "x": x, "b": b, "out": np.zeros((tokens, n), np.float32)},
              ops=[{"op": "linear", "opts": opts}], expect={"out": (ref, tol(Wm))})
    if len(rows) == 2 and rows[0] == rows[1]:
        # gate = member 0, up = member 1 of one buffer, in the dual (gated) kernel.
        n = rows[0]
        G, U = W[:n], W[n:]
        g = x64 @ G.T + b[:n]
        u = x64 @ U.T + b[n:]
        ref = ACTS["silu"](g) * u
        err = 1.2 * tol(G) * np.abs(u) + np.abs(ACTS["silu"](g)) * tol(U) + tol(G) * tol(U)
        opts = {"out": "$out", "x": "$x", "w": {**wref, "rows": n, "rowOffset": n},
                "gate": {**wref, "rows": n, "rowOffset": 0}, "act": "silu",
                "bias": "$b", "biasOffset": n, "gateBias": "$b", "gateBiasOffset": 0, **extra}
        B.add(f"{cid}-gate-up-plain", variant="plain", step=(tokens, 0),
              buffers={"w": data, "x": x, "b": b, "out": np.zeros((tokens, n), np.float32)},
              ops=[{"op": "linear", "opts": opts}], expect={"out": (ref, err)})
    if len(rows) == 3:
        # One product over all N rows, rows from each member's start on written as its own [tokens, n] array.
        al = lambda n: -(-n // 64) * 64  # noqa: E731
        bases = [0, al(tokens * rows[0]), al(tokens * rows[0]) + al(tokens * rows[1])]
        segs = [{"from": int(starts[i]), "base": bases[i], "stride": rows[i]} for i in (1, 2)]
        out = np.full(bases[2] + tokens * rows[2], 7.0, np.float32)
        want = out.astype(np.float64).copy()
        err = np.zeros_like(want)
        for i, (s0, n) in enumerate(zip(starts, rows)):
            ref = x64 @ W[s0:s0 + n].T + b[s0:s0 + n]
            want[bases[i]:bases[i] + tokens * n] = ref.ravel()
            err[bases[i]:bases[i] + tokens * n] = tol(W[s0:s0 + n]).ravel()
        opts = {"out": "$out", "x": "$x", "w": wref, "bias": "$b", "outStride": rows[0], "segments": segs, **extra}
        for variant in VARIANTS:
            B.add(f"{cid}-qkv-segments-{variant}", variant=variant, step=(tokens, 0),
                  buffers={"w": data, "x": x, "b": b, "out": out},
                  ops=[{"op": "linear", "opts": opts}], expect={"out": (want, err)})


for _dt in ("q4", "q8", "f16", "f32"):
    _add_group_cases(f"group-{_dt}-qkv-t1", _dt, [64, 32, 32], 96, 1)
    _add_group_cases(f"group-{_dt}-gateup-t3", _dt, [40, 40], 64, 3)
_add_group_cases("group-q4-qkv-matmul-t6", "q4", [48, 16, 16], 64, 6, impl="matmul")
_add_group_cases("group-q8-gateup-matmul-t5", "q8", [24, 24], 32, 5, impl="matmul")
_add_linear("linear-f16-matvec-forced-t9", "f16", 33, 45, 9, impl="matvec")


# ---- norms

def _add_norm(cid, *, n, tokens, kind, bias=False, rows_per_token=1, per_row=False, accumulate=False, rows="all",
              eps=1e-5, variants=VARIANTS):
    x = _f32(RNG.standard_normal((tokens * rows_per_token, n)) * 2 + 0.5)
    wn = n * rows_per_token if per_row else n
    w = _f32(RNG.standard_normal(wn))
    b = _f32(RNG.standard_normal(wn))
    xr = x.reshape(tokens, rows_per_token, n).astype(np.float64)
    if rows == "last":
        xr = xr[-1:]
    if kind == "rms":
        y = xr / np.sqrt(np.mean(xr ** 2, axis=-1, keepdims=True) + eps)
    else:
        mu = xr.mean(axis=-1, keepdims=True)
        y = (xr - mu) / np.sqrt(((xr - mu) ** 2).mean(axis=-1, keepdims=True) + eps)
    wr = w.reshape(rows_per_token if per_row else 1, n)
    y = y * wr
    if bias:
        y = y + b.reshape(wr.shape)
    y = y.reshape(-1, n)
    init = _f32(RNG.standard_normal(y.shape) if accumulate else np.zeros(y.shape))
    err = 1e-5 * (np.abs(y) + np.abs(np.broadcast_to(wr, y.reshape(-1, rows_per_token, n).shape).reshape(y.shape))) + 1e-6
    if accumulate:
        y = y + init
        err = err + 1e-6 * np.abs(y)
    opts = {"out": "$out", "x": "$x", "weight": "$w", "n": n, "eps": eps, "kind": kind,
            "rowsPerToken": rows_per_token, "perRowWeight": per_row, "accumulate": accumulate, "rows": rows}
    if bias:
        opts["bias"] = "$b"
    for variant in variants:
        B.add(f"{cid}-{variant}", variant=variant, step=(tokens, 7), buffers={"x": x, "w": w, "b": b, "out": init},
              ops=[{"op": "norm", "opts": opts}], expect={"out": (y, err)})


for _n in (77, 576, 3):
    _add_norm(f"norm-rms-n{_n}", n=_n, tokens=3, kind="rms")
    _add_norm(f"norm-layer-bias-n{_n}", n=_n, tokens=3, kind="layer", bias=True)
_add_norm("norm-layer-nobias", n=77, tokens=2, kind="layer")
_add_norm("norm-qk-rms-heads3", n=16, tokens=3, kind="rms", rows_per_token=3, eps=1e-6)
_add_norm("norm-qk-layer-perrow", n=16, tokens=3, kind="layer", bias=True, rows_per_token=3, per_row=True)
_add_norm("norm-rms-accumulate", n=77, tokens=3, kind="rms", accumulate=True)
_add_norm("norm-rms-rows-last", n=77, tokens=3, kind="rms", rows="last")


# ---- embedding

def _add_embed(cid, dtype, *, vocab=50, hidden=96, row_start=0, rows=None, scale=1.0, positions=False, tokens=5,
               pos0=0, variants=("plain",)):
    rows = rows or vocab - row_start
    data, T, wref = _weight(rows, hidden, dtype)
    ids = np.array([3, 49, row_start, row_start + rows - 1, 17, 0, 33][:tokens], dtype=np.uint32)
    init = _f32(RNG.standard_normal((tokens, hidden)))
    want = init.astype(np.float64).copy()
    for t in range(tokens):
        i = pos0 + t if positions else int(ids[t])  # the buffer is [7, *ids], read from idsOffset 1
        if row_start <= i < row_start + rows:
            want[t] = T[i - row_start] * scale + (init[t] if positions else 0)
    opts = {"out": "$out", "ids": "$ids", "idsOffset": 1, "table": {**wref, "$weight": "t"}, "rowStart": row_start,
            "scale": scale, "positions": positions, "accumulate": positions}
    for variant in variants:
        B.add(f"{cid}-{variant}", variant=variant, step=(tokens, pos0),
              buffers={"t": data, "ids": np.concatenate([[7], ids]).astype(np.uint32), "out": init},
              ops=[{"op": "embed", "opts": opts}], expect={"out": (want, 1e-6 * np.abs(want) + 1e-7)})


for _dt in ("f32", "f16", "q8", "q4"):
    _add_embed(f"embed-{_dt}", _dt, scale=2.5)
    _add_embed(f"embed-{_dt}-part", _dt, row_start=3, rows=30)
for _dt in ("f32", "f16"):
    _add_embed(f"embed-{_dt}-hidden77", _dt, hidden=77)
_add_embed("embed-positions", "f32", positions=True, pos0=3, tokens=4)


# ---- RoPE + KV-cache append

def _inv_freq(head_dim: int, rotary_dim: int, theta: float, scaling: dict | None) -> np.ndarray:
    """Inverse frequencies from transformers' own rope init functions (the oracle). No scaling is
    linear scaling by 1 (that function, unlike Llama's default, honours partial_rotary_factor)."""
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaling = scaling or {"type": "linear", "factor": 1.0}
    params = {"rope_theta": theta, "partial_rotary_factor": rotary_dim / head_dim, "rope_type": scaling["type"],
              **{k: v for k, v in scaling.items() if k != "type"}}
    cfg = LlamaConfig(hidden_size=head_dim * 2, num_attention_heads=2, head_dim=head_dim, rope_parameters=params,
                      max_position_embeddings=8192)
    inv, _ = ROPE_INIT_FUNCTIONS[scaling["type"]](cfg, "cpu")
    return inv.double().numpy()


def _rotate(x: np.ndarray, pos: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """transformers' apply_rotary_pos_emb (rotate_half) on the first 2*len(inv) dims; x [T, H, D]."""
    half = len(inv)
    ang = pos[:, None] * inv[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x1, x2 = x[..., :half], x[..., half:2 * half]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s, x[..., 2 * half:]], axis=-1)


def _add_rope(cid, *, heads, kv_heads, head_dim, rotary_dim, tokens=3, pos0=5, theta=10000.0, scaling=None,
              max_pos=16, variant="plain", fused=False, ring=None):
    """ring: the cache is a ring of that many rows (a sliding-window layer's): position p goes to row p mod ring."""
    q = _f32(RNG.standard_normal((tokens, heads * head_dim)))
    k = _f32(RNG.standard_normal((tokens, kv_heads * head_dim)))
    v = _f32(RNG.standard_normal((tokens, kv_heads * head_dim)))
    kc = _f32(RNG.standard_normal((ring or max_pos, kv_heads * head_dim)))
    vc = _f32(RNG.standard_normal((ring or max_pos, kv_heads * head_dim)))
    pos = np.arange(pos0, pos0 + tokens, dtype=np.float64)
    if rotary_dim:
        inv = _inv_freq(head_dim, rotary_dim, theta, scaling)
        qr = _rotate(q.reshape(tokens, heads, head_dim).astype(np.float64), pos, inv).reshape(tokens, -1)
        kr = _rotate(k.reshape(tokens, kv_heads, head_dim).astype(np.float64), pos, inv).reshape(tokens, -1)
    else:
        qr, kr = q.astype(np.float64), k.astype(np.float64)
    kc_want = kc.astype(np.float64).copy()
    vc_want = vc.astype(np.float64).copy()
    rows = np.arange(pos0, pos0 + tokens) % (ring or max_pos)
    kc_want[rows] = kr
    vc_want[rows] = v
    opts = {"q": "$q", "k": "$k", "v": "$v", "kCache": "$kc", "vCache": "$vc", "heads": heads, "kvHeads": kv_heads,
            "headDim": head_dim, **({"cacheRows": ring} if ring else {})}
    buffers = {"q": q, "k": k, "v": v, "kc": kc, "vc": vc}
    if fused:
        # q, k and v as three 256-byte-aligned ranges of one read-only buffer (a fused q/k/v matvec's output).
        al = lambda n: -(-n // 64) * 64  # noqa: E731 - floats to a 256-byte boundary
        bq, bk = al(q.size), al(k.size)
        qkv = np.zeros(bq + bk + v.size, np.float32)
        qkv[:q.size], qkv[bq:bq + k.size], qkv[bq + bk:] = q.ravel(), k.ravel(), v.ravel()
        buffers = {"qkv": qkv, "kc": kc, "vc": vc}
        opts.update(q={"$slice": "qkv", "offset": 0, "size": 4 * q.size},
                    k={"$slice": "qkv", "offset": 4 * bq, "size": 4 * k.size},
                    v={"$slice": "qkv", "offset": 4 * (bq + bk), "size": 4 * v.size})
    expect = {"kc": (kc_want, None), "vc": (vc_want, None)}
    if rotary_dim:
        tab = {"theta": theta, "rotaryDim": rotary_dim, "maxPositions": max_pos, "scaling": scaling}
        opts["table"] = {"$rope": tab}
        opts["qOut"] = "$qo"
        buffers["qo"] = np.zeros_like(q)
        expect["qo"] = (qr, None)
    bound = lambda a: 1e-5 * (np.abs(a) + 1) + 1e-6  # noqa: E731 - |x1| + |x2| <= ~|a| + 1 for N(0,1) data
    expect = {n: (a, bound(a) * (0 if n == "vc" else 1)) for n, (a, _) in expect.items()}
    B.add(f"{cid}-{variant}", variant=variant, step=(tokens, pos0), buffers=buffers,
          ops=[{"op": "rope", "opts": opts}], expect=expect)


_add_rope("rope-h3kv1-d16", heads=3, kv_heads=1, head_dim=16, rotary_dim=16)
_add_rope("rope-h4kv2-d64-partial32", heads=4, kv_heads=2, head_dim=64, rotary_dim=32)
_add_rope("rope-phi2-d80-partial32", heads=2, kv_heads=2, head_dim=80, rotary_dim=32, pos0=0, tokens=7)
_add_rope("rope-linear", heads=3, kv_heads=1, head_dim=16, rotary_dim=16, scaling={"type": "linear", "factor": 4.0})
_add_rope("rope-llama3", heads=2, kv_heads=1, head_dim=64, rotary_dim=64, theta=500000.0, pos0=9, max_pos=64,
          scaling={"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 64})
_add_rope("rope-none-learned-positions", heads=3, kv_heads=1, head_dim=16, rotary_dim=0)
_add_rope("rope-fused-qkv-one-buffer", heads=3, kv_heads=1, head_dim=16, rotary_dim=16, fused=True)
_add_rope("rope-fused-qkv-one-buffer-partial", heads=4, kv_heads=2, head_dim=64, rotary_dim=32, tokens=2, fused=True)
# A sliding-window layer's ring (issue 12): positions 10..15 wrap past the last of 7 rows.
_add_rope("rope-ring7-wraps", heads=3, kv_heads=1, head_dim=16, rotary_dim=16, tokens=6, pos0=10, max_pos=32, ring=7)


# ---- attention

def _add_attention(cid, *, heads, kv_heads, head_dim, tokens, pos0, window=None, softcap=None, scale=None, impl=None,
                   ring=None, max_tokens=None, tune=None, oproj=None):
    """ring: the cache is a ring of that many rows (a sliding-window layer's, issue 12): key p in row p mod ring,
    the rows holding the last `ring` positions written; the buffer has 2 more rows of garbage past them.
    oproj=(dtype, N, fused): the output's only reader, a q4/q8 product to N rows (the o-projection): with
    `quantizeFor` the merge writes its int8 input (fused: whether it can) and the product reads it (`xqFrom`),
    with no quantize dispatch in a decode step. Bound: the attention's carried through |W|, the int8 input's
    (max|out| of a group / 65024, as in _add_linear) and the product's f32 term."""
    scale = scale or head_dim ** -0.5
    P = pos0 + tokens + 2  # cache rows past the step hold garbage the kernel must not read
    q = _f32(RNG.standard_normal((tokens, heads * head_dim)))
    kc = _f32(RNG.standard_normal((P, kv_heads * head_dim)))
    vc = _f32(RNG.standard_normal((P, kv_heads * head_dim)))
    kc[pos0 + tokens:] = 1e30
    vc[pos0 + tokens:] = 1e30
    kbuf, vbuf = kc, vc
    if ring:
        assert window and window + tokens - 1 <= ring < pos0, "a ring holds every key the step sees, and wraps"
        kbuf = np.full((ring + 2, kc.shape[1]), 1e30, np.float32)
        vbuf = kbuf.copy()
        for p in range(pos0 + tokens - ring, pos0 + tokens):
            kbuf[p % ring], vbuf[p % ring] = kc[p], vc[p]
    qh = q.reshape(tokens, heads, head_dim).astype(np.float64)
    kh = kc.reshape(P, kv_heads, head_dim).astype(np.float64)
    vh = vc.reshape(P, kv_heads, head_dim).astype(np.float64)
    out = np.zeros_like(qh)
    err = np.zeros_like(qh)
    group = heads // kv_heads
    for t in range(tokens):
        p = pos0 + t
        lo = max(0, p + 1 - window) if window else 0
        for h in range(heads):
            kk, vv = kh[lo:p + 1, h // group], vh[lo:p + 1, h // group]
            s = kk @ qh[t, h] * scale
            if softcap:
                s = softcap * np.tanh(s / softcap)
            w = np.exp(s - s.max())
            w /= w.sum()
            out[t, h] = w @ vv
            err[t, h] = 1e-5 * (1 + scale * np.abs(kk @ np.abs(qh[t, h])).max()) * np.abs(vv).max() + 1e-6
    opts = {"out": "$out", "q": "$q", "kCache": "$kc", "vCache": "$vc", "heads": heads, "kvHeads": kv_heads,
            "headDim": head_dim, "scale": scale, "softcap": softcap, "window": window}
    if impl:
        opts["impl"] = impl
    if ring:
        opts["cacheRows"] = ring
    if max_tokens:
        opts["maxTokens"] = max_tokens
    if tune:
        opts["tune"] = tune
    ops = [{"op": "attention", "opts": opts}]
    expect = {"out": (out.reshape(tokens, -1), err.reshape(tokens, -1))}
    extra, kernels = {}, None
    if oproj:
        dtype, N, fused = oproj
        data, W, wref = _weight(N, heads * head_dim, dtype)
        o2, e2 = out.reshape(tokens, -1), err.reshape(tokens, -1)
        qmax = (np.abs(o2) + e2).reshape(tokens, -1, 32).max(axis=2) / 65024
        y = o2 @ W.T
        ye = (e2 + np.repeat(qmax, 32, axis=1)) @ np.abs(W).T + 1e-5 * (np.abs(o2) @ np.abs(W).T) + 1e-6
        opts["quantizeFor"] = dtype
        ops.append({"op": "linear", "opts": {"out": "$y", "x": "$out", "w": wref, "xqFrom": {"$xqOut": 0, "expect": fused}}})
        extra = {"w": data, "y": np.zeros((tokens, N), np.float32)}
        expect["y"] = (y, ye)
        kernels = [[], [":xq", "!xquant"] if fused else []]
    for variant in VARIANTS:
        B.add(f"{cid}-{variant}", variant=variant, step=(tokens, pos0),
              buffers={"q": q, "kc": kbuf, "vc": vbuf, "out": np.zeros_like(q), **extra},
              ops=ops, expect=expect, kernels=kernels)


_add_attention("attn-h3kv1-d16-prefill", heads=3, kv_heads=1, head_dim=16, tokens=3, pos0=5)
_add_attention("attn-h4kv2-d64-decode-300keys", heads=4, kv_heads=2, head_dim=64, tokens=1, pos0=300)
_add_attention("attn-window4", heads=3, kv_heads=1, head_dim=16, tokens=5, pos0=3, window=4)
_add_attention("attn-softcap", heads=3, kv_heads=3, head_dim=16, tokens=3, pos0=2, softcap=5.0, scale=2.0)
_add_attention("attn-d80-window300-chunks", heads=2, kv_heads=1, head_dim=80, tokens=2, pos0=299, window=300)
_add_attention("attn-first-token", heads=2, kv_heads=2, head_dim=256, tokens=1, pos0=0)
# Up to 4 tokens run the split (flash-decoding) kernels: keys in chunks across workgroups, then merged;
# the serial kernel (prefill) is forced on decode shapes too.
_add_attention("attn-split-t4-window100", heads=8, kv_heads=2, head_dim=64, tokens=4, pos0=130, window=100)
_add_attention("attn-split-g1-d256-700keys", heads=2, kv_heads=2, head_dim=256, tokens=1, pos0=700)
_add_attention("attn-split-g6-d32", heads=12, kv_heads=2, head_dim=32, tokens=3, pos0=77, softcap=20.0)
_add_attention("attn-split-g3-d64-odd", heads=9, kv_heads=3, head_dim=64, tokens=2, pos0=63)
# Spans longer than a block (16 keys; 8 when G = 32): the online softmax across blocks within a workgroup.
_add_attention("attn-split-g4-1500keys-blocks", heads=32, kv_heads=8, head_dim=64, tokens=2, pos0=1500)
_add_attention("attn-split-g32-blocks", heads=32, kv_heads=1, head_dim=64, tokens=1, pos0=1300, softcap=30.0)
# Groups past one workgroup's 64 query heads or 2048 floats of q (Falcon-7B: 71 heads on one kv head, 64 dims):
# cut into blocks of heads, each its own workgroup over the same keys.
_add_attention("attn-split-g70-two-blocks", heads=70, kv_heads=1, head_dim=16, tokens=1, pos0=150)
_add_attention("attn-split-g36-d64-two-blocks-window", heads=72, kv_heads=2, head_dim=64, tokens=2, pos0=90, window=40)
_add_attention("attn-split-g71-d64-prefill", heads=71, kv_heads=1, head_dim=64, tokens=6, pos0=40, impl="split",
               max_tokens=6)
# A prefill chunk on the split kernel (the default on a GPU; forced here, where the adapters are CPUs):
# 4 spans per token, the first chunk (most spans empty for the first tokens), a window, a ring, G = 1.
_add_attention("attn-split-prefill-t70", heads=8, kv_heads=2, head_dim=64, tokens=70, pos0=0, impl="split", max_tokens=70)
_add_attention("attn-split-prefill-t40-window-softcap", heads=4, kv_heads=1, head_dim=32, tokens=40, pos0=300, window=100,
               softcap=20.0, impl="split", max_tokens=64)
_add_attention("attn-split-prefill-ring", heads=4, kv_heads=2, head_dim=64, tokens=20, pos0=200, window=50, ring=69,
               impl="split", max_tokens=20)
_add_attention("attn-split-prefill-g1-d256", heads=2, kv_heads=2, head_dim=256, tokens=12, pos0=100, impl="split",
               max_tokens=16)
# The merge writes its reader's int8 input (QOUT): one token and three, a q8 reader, head dims of 64 and 256,
# and 80 (not whole 32-groups: no int8 output, the reader quantizes its input itself).
_add_attention("attn-qout-q4-g4-d64", heads=8, kv_heads=2, head_dim=64, tokens=1, pos0=200, oproj=("q4", 77, True))
_add_attention("attn-qout-q8-t3", heads=4, kv_heads=2, head_dim=64, tokens=3, pos0=40, oproj=("q8", 40, True))
_add_attention("attn-qout-q4-g1-d256", heads=2, kv_heads=2, head_dim=256, tokens=1, pos0=90, oproj=("q4", 64, True))
_add_attention("attn-qout-d80", heads=2, kv_heads=1, head_dim=80, tokens=1, pos0=30, oproj=("q4", 40, False))
def _add_attention_rope(cid, *, heads, kv_heads, head_dim, rotary_dim, pos0, window=None, ring=None, theta=10000.0,
                        variants=VARIANTS):
    """A one-token step whose split attention does the rope op's work (kernels.js attention({rope})): q
    and the new key rotated at pos0 (rotary_dim 0: a layer without RoPE, append only), the key and value
    appended to the caches (row pos0, or pos0 mod ring), then attention over the keys it sees. Expected:
    numpy's rotation and attention, and the caches' new row."""
    tokens, P = 1, ring or pos0 + 3
    q = _f32(RNG.standard_normal((1, heads * head_dim)))
    k = _f32(RNG.standard_normal((1, kv_heads * head_dim)))
    v = _f32(RNG.standard_normal((1, kv_heads * head_dim)))
    kc = _f32(RNG.standard_normal((P, kv_heads * head_dim)))
    vc = _f32(RNG.standard_normal((P, kv_heads * head_dim)))
    row = pos0 % P
    kc[row] = vc[row] = 1e30  # the stale row the step overwrites before reading it
    if not ring:
        kc[pos0 + 1:] = vc[pos0 + 1:] = 1e30  # past the step: never read
    pos = np.array([pos0], np.float64)
    if rotary_dim:
        inv = _inv_freq(head_dim, rotary_dim, theta, None)
        qr = _rotate(q.reshape(1, heads, head_dim).astype(np.float64), pos, inv).reshape(1, -1)
        kr = _rotate(k.reshape(1, kv_heads, head_dim).astype(np.float64), pos, inv).reshape(1, -1)
    else:
        qr, kr = q.astype(np.float64), k.astype(np.float64)
    kc_want, vc_want = kc.astype(np.float64), vc.astype(np.float64)
    kc_want[row], vc_want[row] = kr[0], v[0]
    # the keys by position: p in row p mod P
    lo = max(0, pos0 + 1 - window) if window else 0
    keys = np.stack([kc_want[p % P] for p in range(lo, pos0 + 1)]).reshape(-1, kv_heads, head_dim)
    vals = np.stack([vc_want[p % P] for p in range(lo, pos0 + 1)]).reshape(-1, kv_heads, head_dim)
    scale = head_dim ** -0.5
    qh = qr.reshape(heads, head_dim)
    group = heads // kv_heads
    out = np.zeros((heads, head_dim))
    err = np.zeros((heads, head_dim))
    for h in range(heads):
        kk, vv = keys[:, h // group], vals[:, h // group]
        sc = kk @ qh[h] * scale
        w = np.exp(sc - sc.max())
        w /= w.sum()
        out[h] = w @ vv
        err[h] = 1e-5 * (1 + scale * np.abs(kk @ np.abs(qh[h])).max()) * np.abs(vv).max() + 1e-6
    tab = {"$rope": {"theta": theta, "rotaryDim": rotary_dim, "maxPositions": pos0 + 1}} if rotary_dim else None
    opts = {"out": "$out", "q": "$qo", "kCache": "$kc", "vCache": "$vc", "heads": heads, "kvHeads": kv_heads,
            "headDim": head_dim, "scale": scale, "window": window, "impl": "split",
            "rope": {"q": "$q", "k": "$k", "v": "$v", "table": tab}}
    if ring:
        opts["cacheRows"] = ring
    bound = lambda a: 1e-5 * (np.abs(a) + 1) + 1e-6  # noqa: E731 - as _add_rope's
    for variant in variants:
        B.add(f"{cid}-{variant}", variant=variant, step=(1, pos0),
              # qo: the rope op's output, which a fused step does not read (garbage here)
              buffers={"q": q, "k": k, "v": v, "qo": np.full_like(q, 1e30), "kc": kc, "vc": vc,
                       "out": np.zeros_like(q)},
              ops=[{"op": "attention", "opts": opts}],
              expect={"out": (out.reshape(1, -1), err.reshape(1, -1)), "kc": (kc_want, bound(kc_want)),
                      "vc": (vc_want, np.zeros_like(vc_want))})


# The rope op folded into a one-token split attention: grouped heads, G = 1 (32 keys a block), a
# partial rotation, no rotation (NoPE / learned positions), a sliding window over a ring, the first key.
_add_attention_rope("attn-rope-g4-d64", heads=8, kv_heads=2, head_dim=64, rotary_dim=64, pos0=300)
_add_attention_rope("attn-rope-g1-d128-partial", heads=3, kv_heads=3, head_dim=128, rotary_dim=32, pos0=77)
_add_attention_rope("attn-rope-norotate", heads=4, kv_heads=1, head_dim=32, rotary_dim=0, pos0=50)
_add_attention_rope("attn-rope-ring-window", heads=4, kv_heads=2, head_dim=64, rotary_dim=64, pos0=203, window=37, ring=40)
_add_attention_rope("attn-rope-first-key", heads=2, kv_heads=2, head_dim=256, rotary_dim=256, pos0=0)


# The split kernel's block and span counts forced (kernel_bench --attn-tune): 64 keys a block with one
# lane a key, 8 keys a block over a window, more spans than blocks of keys (empty spans).
_add_attention("attn-split-tune-64x5", heads=4, kv_heads=4, head_dim=64, tokens=1, pos0=400, impl="split",
               tune={"chunk": 64, "splits": 5})
_add_attention("attn-split-tune-8x3-window", heads=8, kv_heads=2, head_dim=32, tokens=2, pos0=90, window=30,
               impl="split", tune={"chunk": 8, "splits": 3})
_add_attention("attn-split-tune-32x200", heads=2, kv_heads=1, head_dim=64, tokens=1, pos0=100, impl="split",
               tune={"chunk": 32, "splits": 200})
_add_attention("attn-serial-decode-300keys", heads=4, kv_heads=2, head_dim=64, tokens=1, pos0=300, impl="serial")
_add_attention("attn-serial-t3-window", heads=3, kv_heads=1, head_dim=16, tokens=3, pos0=9, window=4, impl="serial")
# Rings of window + tokens - 1 rows (or more), the visible keys wrapping past the last row: the prefill
# kernel, the split kernel's blocks of 16 that wrap (one token, several, and spans of several blocks).
_add_attention("attn-ring-prefill-w8", heads=3, kv_heads=1, head_dim=16, tokens=6, pos0=40, window=8, ring=13)
_add_attention("attn-ring-serial-w70", heads=4, kv_heads=2, head_dim=64, tokens=9, pos0=300, window=70, ring=78)
_add_attention("attn-ring-split-w100", heads=8, kv_heads=2, head_dim=64, tokens=1, pos0=517, window=100, ring=115)
_add_attention("attn-ring-split-t4-w37", heads=4, kv_heads=1, head_dim=32, tokens=4, pos0=203, window=37, ring=40)
_add_attention("attn-ring-split-g32-w300", heads=32, kv_heads=1, head_dim=64, tokens=2, pos0=1000, window=300, ring=301)


# ---- argmax (greedy sampling on the GPU)

def _add_argmax(cid, rows):
    n, tokens = 1000, 3
    logits = _f32(RNG.standard_normal((tokens, n + 5)))
    r = tokens - 1 if rows == "last" else 0
    logits[r, 700] = logits[r, 400] = 9.0  # a tie: the lowest index wins, as in numpy
    logits[r, n:] = 50.0  # past n (row stride n + 5): must be ignored
    want = np.array([np.argmax(logits[r, :n]), logits[r, :n].max().view(np.uint32)], dtype=np.uint32)
    B.add(f"{cid}-plain", variant="plain", step=(tokens, 0), buffers={"l": logits, "out": np.zeros(4, np.uint32)},
          ops=[{"op": "argmax", "opts": {"out": "$out", "logits": "$l", "n": n, "rowStride": n + 5, "rows": rows}}],
          expect={"out": (want, np.zeros(2))}, dtype_out={"out": np.uint32})


_add_argmax("argmax-first", "first")


# ---- top-k candidates: one workgroup over a short row; slices then a merge over a long one

def _add_topk(cid, *, n, k, tokens=2, rows="first", slices=None, masked=False, ties=True):
    logits = _f32(RNG.standard_normal((tokens, n + 3)))
    r = tokens - 1 if rows == "last" else 0
    row = logits[r, :n]
    if ties:  # equal values across slices: the lower index first, as in a stable descending sort
        row[[n // 3, n - 7, 5, n // 2]] = 7.5
    logits[r, n:] = 60.0  # past n: must be ignored
    allowed = np.ones(n, bool)
    opts = {"out": "$out", "logits": "$l", "n": n, "k": k, "rowStride": n + 3, "rows": rows}
    buffers = {"l": logits, "out": np.zeros(2 * k, np.uint32)}
    if masked:
        allowed = RNG.random(n) < 0.3
        allowed[n // 3] = False  # a tied maximum that is not allowed
        buffers["mask"] = np.packbits(allowed, bitorder="little").view(np.uint8)
        buffers["mask"] = np.pad(buffers["mask"], (0, (-len(buffers["mask"])) % 4)).view(np.uint32)
        opts["allowed"] = "$mask"
    if slices:
        opts["slices"] = slices
    ids = np.flatnonzero(allowed)
    order = ids[np.lexsort((ids, -row[ids].astype(np.float64)))][:k]
    want = np.concatenate([order.astype(np.uint32), row[order].view(np.uint32)])
    B.add(f"{cid}-plain", variant="plain", step=(tokens, 0), buffers=buffers,
          ops=[{"op": "topk", "opts": opts}], expect={"out": (want, np.zeros(2 * k))}, dtype_out={"out": np.uint32})


_add_topk("topk-short-k5", n=1000, k=5)
_add_topk("topk-slices-k40", n=70000, k=40)                 # 34 slices by default
_add_topk("topk-slices-k1-last", n=70000, k=1, rows="last")
_add_topk("topk-forced-slices-k7", n=1000, k=7, slices=9)
_add_topk("topk-slices-more-than-slice", n=300, k=50, slices=30)  # k > ids per slice: empty candidates
_add_topk("topk-slices-masked-k12", n=70000, k=12, masked=True)

# Grids past the per-dimension workgroup limit wrap into y (kernels.js grid2); the "smallgrid"
# variant sets that limit to 3 so every op that uses the wrap is checked with it.
_add_linear("linear-wrap-f32-300x32-t1", "f32", 300, 32, 1, variants=("smallgrid",))
_add_linear("linear-wrap-q4-300x64-t2", "q4", 300, 64, 2, variants=("smallgrid",))
_add_norm("norm-wrap", n=77, tokens=3, kind="rms", rows_per_token=3, variants=("smallgrid",))
_add_embed("embed-wrap", "q8", variants=("smallgrid",))
_add_rope("rope-wrap", heads=3, kv_heads=1, head_dim=16, rotary_dim=16, tokens=7, pos0=2, variant="smallgrid")
_add_argmax("argmax-last", "last")


# --------------------------------------------------------------------------- running it

# The prefill's integer product (kernels.js prefillInt8, shaders/matmul.wgsl xmm_main): q4/q8 weights
# over an int8 input quantized in front, a workgroup 64 rows x 32 tokens (16 with a gate). Variant
# "xmm": its dot4I8Packed form (every adapter); "sgmat": on i8 subgroup matrices, which software
# adapters never have: those cases exist only on a GPU (SITEGEN_KERNEL_ADAPTER=gpu, the GPU machine),
# where a device without usable matrices fails them.
_XMM = _XMM_V if ON_GPU else ("xmm",)
for _dt in ("q4", "q8"):
    for _N, _K, _T in ((77, 96, 5), (300, 576, 70), (64, 2048, 33), (130, 64, 1)):
        _add_linear(f"xmm-{_dt}-{_N}x{_K}-t{_T}", _dt, _N, _K, _T, variants=_XMM, impl="xmm")
_add_linear("xmm-q4-gated-silu-300x576-t37", "q4", 300, 576, 37, variants=_XMM, impl="xmm", gate=True, act="silu")
_add_linear("xmm-q8-gated-gelu-bias-77x96-t17", "q8", 77, 96, 17, variants=_XMM, impl="xmm", gate=True, act="gelu_tanh",
            bias=True, gate_bias=True)
_add_linear("xmm-q4-bias-acc-offset-77x160-t40", "q4", 77, 160, 40, variants=_XMM, impl="xmm", bias=True, accumulate=True,
            out_offset=5, out_stride=90)
_add_linear("xmm-q4-softcap-300x96-t9", "q4", 300, 96, 9, variants=_XMM, impl="xmm", softcap=3.0)
# Chosen by the step's tokens where the op knows its chunk (maxTokens): the matvec up to 4 tokens, xmm beyond.
_add_linear("xmm-auto-q4-77x96-t70", "q4", 77, 96, 70, variants=_XMM, max_tokens=96)
_add_linear("xmm-auto-q4-77x96-t3", "q4", 77, 96, 3, variants=("xmm",), max_tokens=96)


def _lavapipe_icd() -> str | None:
    """Mesa's lavapipe ICD (scripts/setup installs it from bookworm-backports), or None."""
    found = sorted(glob.glob("/usr/share/vulkan/icd.d/lvp_icd*.json"))
    return found[0] if found else None


def _harness(node: str, d: Path, name: str, cases: list[dict], icd: str | None) -> dict:
    """Run one batch in one harness process on the Vulkan driver `icd` (None: the system's); its results.json."""
    sub = d / name
    sub.mkdir()
    (sub / "batch.json").write_text(json.dumps({"dir": str(d), "out": str(sub), "cases": cases}))
    env = {**os.environ, **({"VK_ICD_FILENAMES": icd} if icd else {})}
    if icd is None:
        pass
    elif icd == SWIFTSHADER_ICD:
        env["LD_LIBRARY_PATH"] = "/usr/lib/chromium"
    else:
        # lavapipe: skip LLVM's optimisation passes. The shaders run on tiny inputs, and
        # compiling them is most of the time on a cold shader cache (~1/3 less with this).
        env.setdefault("GALLIVM_PERF", "nopt")
    for attempt in range(2):
        try:
            # Generous: CI has 90 minutes on 2 loaded cores; a batch takes 1-4 minutes there.
            p = subprocess.run([node, str(HARNESS), str(sub / "batch.json")], capture_output=True, text=True,
                               env=env, timeout=HARNESS_TIMEOUT_S, cwd=ROOT)
        except subprocess.TimeoutExpired as e:
            raise HarnessFailed(f"harness ({name}, {icd}) ran past {HARNESS_TIMEOUT_S} s; its last output:\n"
                                f"{(e.stdout or b'')[-2000:]!r}\n{(e.stderr or b'')[-2000:]!r}") from None
        if p.returncode == 0 or (sub / "results.json").exists():
            break
        # dawn.node on SwiftShader occasionally aborts in a driver thread (pthread priority
        # assertion) on a loaded machine; one rerun, reported, never a silent pass.
        print(f"kernels harness ({name}) crashed (attempt {attempt + 1}): {p.stderr[-500:]}", file=sys.stderr)
    if not (sub / "results.json").exists():
        raise HarnessFailed(f"harness ({name}, {icd}) failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    report = json.loads((sub / "results.json").read_text())
    report["dir"] = sub
    print(f"kernels harness ({name}): adapter {report['adapter']!r}, features {report['features']}", file=sys.stderr)
    return report


class HarnessFailed(Exception):
    """A kernels harness process crashed or ran past its time limit."""


HARNESS_TIMEOUT_S = int(os.environ.get("SITEGEN_KERNEL_TIMEOUT", "1800"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """{"f32": report, "f16": report or None}: f16-compute cases on lavapipe, the rest on SwiftShader.

    The two harness processes run at once (each is mostly one busy thread)."""
    node = shutil.which("node")
    if not node or not (ON_GPU or os.path.exists(SWIFTSHADER_ICD)) or not (ROOT / "node_modules" / "webgpu").exists():
        # In CI a missing install is a failure, never a silent skip of every kernel test.
        (pytest.fail if os.environ.get("CI") else pytest.skip)(
            "needs node, the npm 'webgpu' package and SwiftShader (scripts/setup installs them)")
    d = tmp_path_factory.mktemp("kernels")
    for name, data in B.files.items():
        (d / name).write_bytes(data)
    lvp = None if ON_GPU else _lavapipe_icd()
    f16_cases = [c for c in B.cases if c["variant"] == "f16"]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        f32 = pool.submit(_harness, node, d, "gpu" if ON_GPU else "swiftshader", [c for c in B.cases if c["variant"] != "f16"],
                          None if ON_GPU else SWIFTSHADER_ICD)
        f16 = pool.submit(_harness, node, d, "lavapipe", f16_cases, lvp) if lvp else None
        out = {}
        for key, future in (("f32", f32), ("f16", f16)):
            try:
                out[key] = future.result() if future else None
            except HarnessFailed as e:
                out[key] = {"failed": str(e)}
        return out


def test_kernel_harness(run):
    """A harness process that crashed or timed out fails here, once, with its cause (issue 11); the
    per-kernel tests of that batch then say where to look instead of repeating it hundreds of times."""
    failed = [r["failed"] for r in run.values() if r and "failed" in r]
    assert not failed, "\n\n".join(failed)


@pytest.mark.parametrize("cid", [c["id"] for c in B.cases])
def test_kernel(run, cid):
    f16 = cid.endswith("-f16")
    report = run["f16" if f16 else "f32"]
    if report is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)("f16-compute cases run on Mesa's lavapipe (SwiftShader lacks shader-f16), which is not "
                    "installed: scripts/setup installs mesa-vulkan-drivers from bookworm-backports")
    if "failed" in report:
        pytest.skip("this batch's harness failed: test_kernel_harness fails with the cause")
    status = report["results"][cid]
    # No skips past this point: lavapipe has shader-f16, SwiftShader has subgroups.
    assert status == "ok", f"{status} (adapter {report['adapter']!r}, features {report['features']})"
    check = B.checks[cid]
    for name, (want, bound) in check["expect"].items():
        dt = check["dtype_out"].get(name, np.float32)
        raw = (report["dir"] / f"{cid}.{name}.out").read_bytes()
        got = np.frombuffer(raw, dtype=dt)[: np.size(want)].reshape(np.shape(want))
        if dt is np.uint32:
            np.testing.assert_array_equal(got, want, err_msg=f"{cid}: {name}")
            continue
        diff = np.abs(got.astype(np.float64) - want)
        bad = ~(diff <= bound)
        if bad.any():
            i = np.unravel_index(np.argmax(np.where(bad, diff - bound, -np.inf)), np.shape(want))
            pytest.fail(f"{cid}: {name}: {bad.sum()} of {bad.size} values out of bound; worst at {i}: "
                        f"got {got[i]!r}, want {want[i]!r}, |diff| {diff[i]:.3g} > bound {np.asarray(bound)[i]:.3g}")


def test_subgroup_matrix_kernel_is_taken_only_when_it_agrees_with_its_dot4_form(tmp_path):
    """kernels.js xmmAgrees, the check before a prefill runs xmm_main on subgroup matrices: the dot4 form
    agrees with itself (the comparison runs), and a subgroup-matrix kernel that cannot be built (this
    adapter has no matrices) is refused, not used; Kernels.create then keeps the f32 tiled matmul."""
    node = shutil.which("node")
    if not node or not os.path.exists(SWIFTSHADER_ICD) or not (ROOT / "node_modules" / "webgpu").exists():
        (pytest.fail if os.environ.get("CI") else pytest.skip)("needs node, the npm 'webgpu' package and SwiftShader")
    script = tmp_path / "xmm_agrees.mjs"
    script.write_text(f"""
import {{ getNodeGPU }} from {json.dumps(str(ROOT / "runtime/backends/webgpu/dawn.js"))};
import {{ Kernels, xmmAgrees }} from {json.dumps(str(ROOT / "runtime/backends/webgpu/kernels.js"))};
const gpu = await getNodeGPU();
globalThis.__gpu = gpu;
const a = await gpu.requestAdapter();
const device = await a.requestDevice({{ requiredFeatures: ["subgroups"],
  requiredLimits: {{ maxComputeWorkgroupStorageSize: a.limits.maxComputeWorkgroupStorageSize }} }});
const k = await Kernels.create(device, {{}});
console.log(JSON.stringify({{ xmm: k.features.xmm, dot4: await xmmAgrees(device, k.sources, {{ mode: "dot4" }}),
  sgmat: await xmmAgrees(device, k.sources, {{ mode: "sgmat", syntax: "mk", unit: 1 }}) }}));
process.exit(0);
""")
    env = {**os.environ, "VK_ICD_FILENAMES": SWIFTSHADER_ICD, "LD_LIBRARY_PATH": "/usr/lib/chromium"}
    p = subprocess.run([node, str(script)], capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout.strip().splitlines()[-1]) == {"xmm": None, "dot4": True, "sgmat": False}
