"""Storage types (docs/weights-format.md#storage-types) checked against outside oracles.

* The byte layout is decoded here straight from the doc's formulas (u32 words, nibble positions),
  independently of ``sitegen.convert.quantize.dequantize``.
* q4/q8 are compared with llama.cpp's Q4_0/Q8_0 as implemented by the ``gguf`` package, which
  use the same scale rules (``d = max / -8`` and ``d = absmax / 127``).
* f16 is numpy's IEEE half conversion.
"""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import quants

from sitegen.convert.quantize import dequantize, quantize, storage_dtype


def _weights(rows=48, cols=256, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)).astype(np.float32) * 0.05
    w[3, 5] = 1.7   # an outlier: its group's scale must follow it
    w[7, 32:64] = 0  # an all-zero group: scale 0, codes anything, value 0
    return w


def _entry(shape, dtype, planes):
    return {"name": "t", "shape": list(shape), "dtype": dtype, "group_size": 32, "planes": planes}


def _decode_from_doc(buf: bytes, shape, dtype, planes) -> np.ndarray:
    """w[r, c] read exactly as the doc's table says (word index and bit position)."""
    rows, cols = shape
    p = {x["name"]: x for x in planes}
    raw = np.frombuffer(buf, dtype=np.uint8)
    qp, sp = p["q"], p["scales"]
    assert sp["offset"] % 256 == 0
    words = raw[qp["offset"]:qp["offset"] + qp["nbytes"]].view("<u4")
    scales = raw[sp["offset"]:sp["offset"] + sp["nbytes"]].view("<f2").astype(np.float32).reshape(rows, cols // 32)
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    if dtype == "q4":
        word = words[r * cols // 8 + c // 8]
        q = ((word >> (4 * (c % 8)).astype(np.uint32)) & 0xF).astype(np.float32) - 8
    else:
        word = words[r * cols // 4 + c // 4]
        byte = ((word >> (8 * (c % 4)).astype(np.uint32)) & 0xFF).astype(np.uint8)
        q = byte.view(np.int8).astype(np.float32)
    return q * scales[r, c // 32]


@pytest.mark.parametrize("dtype,ggml", [("q4", T.Q4_0), ("q8", T.Q8_0)])
def test_q_matches_doc_layout_and_llama_cpp(dtype, ggml):
    w = _weights()
    buf, planes, err = quantize(w, dtype)
    ours = _decode_from_doc(buf, w.shape, dtype, planes)
    np.testing.assert_array_equal(ours, dequantize(buf, _entry(w.shape, dtype, planes)))
    ref = quants.dequantize(quants.quantize(w, ggml), ggml).reshape(w.shape)
    # Codes are computed against the stored (f16-rounded) scale, llama.cpp against the f32 one,
    # so a value sitting on a rounding boundary may differ by one code.
    same = np.isclose(ours, ref, rtol=0, atol=1e-7)
    assert same.mean() > 0.99
    # ...and then by exactly one step, |d| = group absmax / 8 (q4) or / 127 (q8), up to f16 rounding.
    absmax = np.repeat(np.abs(w).reshape(w.shape[0], -1, 32).max(axis=2), 32, axis=1)
    d = absmax / (8 if dtype == "q4" else 127)
    np.testing.assert_allclose(np.abs(ref - ours)[~same], d[~same], rtol=2e-3)
    rel_ref = np.sqrt(((w - ref) ** 2).sum() / (w ** 2).sum())
    assert err["rel_rms"] <= rel_ref * 1.01
    # The stats are what they say.
    assert err["max_abs"] == pytest.approx(np.abs(w - ours).max(), rel=1e-6)
    assert err["rel_rms"] == pytest.approx(np.sqrt(((w - ours) ** 2).sum() / (w ** 2).sum()), rel=1e-5)
    assert np.all(ours[7, 32:64] == 0)
    assert ours[3, 5] == pytest.approx(1.7, rel=1e-3)  # q4: the extreme is exactly code 0 (× f16 scale)


def test_f16_and_f32():
    w = _weights()
    buf, planes, err = quantize(w, "f16")
    assert buf == w.astype(np.float16).tobytes()
    np.testing.assert_array_equal(dequantize(buf, _entry(w.shape, "f16", planes)), w.astype(np.float16).astype(np.float32))
    assert err["max_abs"] == pytest.approx(np.abs(w - w.astype(np.float16).astype(np.float32)).max())
    buf, planes, err = quantize(w, "f32")
    assert buf == w.tobytes() and err == {"max_abs": 0.0, "rel_rms": 0.0}


def test_storage_dtype_fallbacks():
    assert storage_dtype((64,), "q4") == "f32"         # 1-D: norms and biases
    assert storage_dtype((10, 48), "q4") == "f32"      # cols % 32 != 0
    assert storage_dtype((10, 48), "f16") == "f16"
    assert storage_dtype((10, 64), "q8") == "q8"
    with pytest.raises(ValueError, match="cannot be stored as q4"):
        quantize(np.zeros((4, 48), np.float32), "q4")


def test_large_tensor_encoded_in_blocks_same_as_whole():
    # More rows than one encoder block (8 MiB of f32): the blocked result must equal a per-row encode.
    w = np.random.default_rng(1).standard_normal((2**21 // 256 + 7, 1024)).astype(np.float32)
    buf, planes, _ = quantize(w, "q4")
    head, _, _ = quantize(w[:5], "q4")
    assert buf[:5 * 512] == head[:5 * 512]
    tail_buf, tail_planes, _ = quantize(w[-3:], "q4")
    sp, tsp = planes[1], tail_planes[1]
    assert buf[sp["offset"] + sp["nbytes"] - 3 * 64:sp["offset"] + sp["nbytes"]] == \
        tail_buf[tsp["offset"]:tsp["offset"] + tsp["nbytes"]]


def test_nan_is_rejected():
    w = np.zeros((2, 32), np.float32)
    w[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        quantize(w, "q8")
