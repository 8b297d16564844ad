"""Storage types of the weights format: f32, f16, q8, q4 (docs/weights-format.md#storage-types).

Quantized tensors are two planes: ``q`` (codes, row-major) and ``scales`` (one f16 per group of
32 consecutive weights of a row, ``[rows, cols/32]``), the scales plane starting at a 256-byte
aligned offset. Everything is vectorised numpy and works on blocks of rows, so a tensor of any
size is encoded with a bounded amount of scratch memory (issue 3 item 1: peak memory).

q4 follows llama.cpp's Q4_0 choice of scale: per group, the weight of largest magnitude ``m``
(with its sign) gives ``d = m / -8``, so that weight is exactly code 0 (``(0 - 8) * d == m``) and
the other side of the range reaches ``7 * |d|``. This uses all 16 codes, unlike ``absmax / 7``,
and its error is lower on the roughly symmetric weight distributions of LLMs.
q8 is symmetric: ``d = absmax / 127``, codes -127..127.
The codes are computed against the f16-rounded scale that is stored, so the stored scale and codes
agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "DTYPES", "GROUP_SIZE", "ALIGN", "storage_dtype", "quantize", "dequantize", "encoded_layout",
    "TensorEncoder",
]

DTYPES = ("f32", "f16", "q8", "q4")
GROUP_SIZE = 32
ALIGN = 256
# Rows are encoded in blocks of about this many input bytes (f32) to bound scratch memory.
_BLOCK_BYTES = 8 * 2**20


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def storage_dtype(shape: tuple[int, ...], wanted: str) -> str:
    """The dtype a tensor of ``shape`` is stored as when ``wanted`` is asked for.

    1-D tensors (norms, biases) are always f32; q4/q8 need ``cols % 32 == 0`` and fall back to
    f32 otherwise (the weights-format doc says so; the table records the actual dtype).
    """
    if wanted not in DTYPES:
        raise ValueError(f"unknown storage type {wanted!r}; expected one of {', '.join(DTYPES)}")
    if len(shape) < 2:
        return "f32"
    if wanted in ("q4", "q8") and shape[-1] % GROUP_SIZE:
        return "f32"
    return wanted


def encoded_layout(shape: tuple[int, ...], dtype: str) -> tuple[int, list[dict]]:
    """(nbytes, planes) of a tensor of ``shape`` stored as ``dtype``; plane offsets are relative."""
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if dtype == "f32":
        return 4 * n, [{"name": "data", "offset": 0, "nbytes": 4 * n}]
    if dtype == "f16":
        return 2 * n, [{"name": "data", "offset": 0, "nbytes": 2 * n}]
    q_nbytes = n if dtype == "q8" else n // 2
    s_off = _align(q_nbytes)
    s_nbytes = 2 * (n // GROUP_SIZE)
    planes = [{"name": "q", "offset": 0, "nbytes": q_nbytes},
              {"name": "scales", "offset": s_off, "nbytes": s_nbytes}]
    return s_off + s_nbytes, planes


@dataclass
class _ErrorStats:
    """Running sums for max |w - ŵ| and the relative RMS error sqrt(Σ(w-ŵ)² / Σw²)."""

    max_abs: float = 0.0
    sq_err: float = 0.0
    sq_ref: float = 0.0

    def add(self, sq_ref: float, diff: np.ndarray) -> None:
        flat = diff.ravel()
        if flat.size:
            self.max_abs = max(self.max_abs, float(max(flat.max(), -flat.min())))
        self.sq_err += float(np.dot(flat, flat))
        self.sq_ref += sq_ref

    def merge(self, other: "_ErrorStats") -> "_ErrorStats":
        """The stats of two tensors taken together (a tensor group's error from its members')."""
        return _ErrorStats(max(self.max_abs, other.max_abs), self.sq_err + other.sq_err, self.sq_ref + other.sq_ref)

    def result(self) -> dict:
        rel = (self.sq_err / self.sq_ref) ** 0.5 if self.sq_ref > 0 else (0.0 if self.sq_err == 0 else float("inf"))
        return {"max_abs": self.max_abs, "rel_rms": rel}


def _encode_block(x: np.ndarray, dtype: str) -> tuple[bytes, bytes, np.ndarray]:
    """Encode a 2-D f32 block of whole rows: (codes bytes, scales bytes, x - dequantized(x))."""
    if dtype == "f32":
        return np.ascontiguousarray(x, dtype=np.float32).tobytes(), b"", np.zeros(0, np.float32)
    if dtype == "f16":
        h = x.astype(np.float16)
        return h.tobytes(), b"", x - h.astype(np.float32)
    rows, cols = x.shape
    g = x.reshape(rows, cols // GROUP_SIZE, GROUP_SIZE)
    mx, mn = g.max(axis=2), g.min(axis=2)
    if dtype == "q8":
        d = (np.maximum(mx, -mn) / 127.0).astype(np.float16)
    else:  # q4: the signed extreme of each group maps to code 0 (see the module docstring).
        d = (np.where(mx >= -mn, mx, mn) / -8.0).astype(np.float16)
    d32 = d.astype(np.float32)[..., None]
    inv = np.divide(1.0, d32, out=np.zeros_like(d32), where=d32 != 0)
    t = g * inv                      # scratch reused in place: codes, then dequantized values
    if dtype == "q8":
        np.rint(t, out=t)
        np.clip(t, -127, 127, out=t)
        codes = t.astype(np.int8).tobytes()
    else:
        t += 8.0
        np.rint(t, out=t)
        np.clip(t, 0, 15, out=t)
        q = t.astype(np.uint8).reshape(-1, 2)
        # Byte j of a row holds codes 2j (low nibble) and 2j+1 (high nibble): read as a
        # little-endian u32, code c sits at bits 4*(c%8) (docs/weights-format.md).
        codes = (q[:, 0] | (q[:, 1] << 4)).tobytes()
        t -= 8.0
    t *= d32
    np.subtract(g, t, out=t)
    return codes, d.tobytes(), t.reshape(rows, cols)


class TensorEncoder:
    """Encodes one tensor block by block; ``blocks()`` yields byte strings in file order.

    The ``q``/``data`` plane is yielded block by block; scales (1/64 of the f32 input for q4)
    are kept and yielded after the alignment padding. ``error`` holds the quantization error
    once the iteration is done.
    """

    def __init__(self, array: np.ndarray, dtype: str):
        self.array = array
        self.dtype = dtype
        self.shape = tuple(int(s) for s in array.shape)
        self.nbytes, self.planes = encoded_layout(self.shape, dtype)
        self.error: dict | None = None
        self.stats: _ErrorStats | None = None
        # (q/data plane, scales plane) once encoded ahead of writing (a tensor group's member)
        self.encoded: tuple[bytes, bytes] | None = None

    def planes_bytes(self) -> tuple[bytes, bytes]:
        """The tensor's planes as bytes: (``q``/``data`` plane, ``scales`` plane or b"")."""
        chunks = list(self.blocks())
        if len(self.planes) == 2:
            s_off = self.planes[1]["offset"]
            data = b"".join(chunks)
            return data[:self.planes[0]["nbytes"]], data[s_off:]
        return b"".join(chunks), b""

    def blocks(self):
        a = self.array
        a2 = a.reshape(1, -1) if a.ndim < 2 else a.reshape(-1, a.shape[-1])
        rows, cols = a2.shape
        step = max(1, _BLOCK_BYTES // max(1, 4 * cols))
        stats = _ErrorStats()
        scales: list[bytes] = []
        written = 0
        for r0 in range(0, rows, step):
            block = np.asarray(a2[r0:r0 + step], dtype=np.float32)
            flat = block.ravel()
            sq_ref = float(np.dot(flat, flat))  # also the NaN/inf check, in one BLAS pass
            if not np.isfinite(sq_ref) and not np.all(np.isfinite(flat)):
                raise ValueError("contains NaN or infinite values")
            codes, sc, diff = _encode_block(block, self.dtype)
            if self.dtype == "f16" and not np.all(np.isfinite(diff)):
                raise ValueError("has values beyond the f16 range (±65504); use --quant f32 or q8")
            stats.add(sq_ref, diff)
            scales.append(sc)
            written += len(codes)
            yield codes
        if len(self.planes) == 2:
            s_off = self.planes[1]["offset"]
            yield bytes(s_off - written)
            yield from scales
        self.stats = stats
        self.error = stats.result()


def quantize(array: np.ndarray, dtype: str) -> tuple[bytes, list[dict], dict]:
    """Encode ``array`` (any float dtype) as ``dtype``: (bytes, planes, error stats).

    ``dtype`` is the storage type actually used (see ``storage_dtype``); ``error`` is
    ``{"max_abs", "rel_rms"}`` of the dequantized tensor against the f32 input.
    """
    if storage_dtype(tuple(array.shape), dtype) != dtype:
        raise ValueError(f"a tensor of shape {list(array.shape)} cannot be stored as {dtype}")
    enc = TensorEncoder(array, dtype)
    data = b"".join(enc.blocks())
    return data, enc.planes, enc.error


def dequantize(buf: bytes | memoryview | np.ndarray, entry: dict) -> np.ndarray:
    """Decode one tensor from its bytes (starting at its first byte) and its tensor-table entry."""
    shape = tuple(entry["shape"])
    dtype = entry["dtype"]
    raw = np.frombuffer(buf, dtype=np.uint8) if not isinstance(buf, np.ndarray) else buf.view(np.uint8).ravel()
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    planes = {p["name"]: p for p in entry["planes"]}

    def plane(name: str) -> np.ndarray:
        p = planes[name]
        return raw[p["offset"]:p["offset"] + p["nbytes"]]

    if dtype == "f32":
        return plane("data").view(np.float32).reshape(shape).copy()
    if dtype == "f16":
        return plane("data").view(np.float16).astype(np.float32).reshape(shape)
    if dtype not in ("q4", "q8"):
        raise ValueError(f"unknown storage type {dtype!r} in tensor {entry.get('name')!r}")
    gs = entry.get("group_size", GROUP_SIZE)
    d = plane("scales").view(np.float16).astype(np.float32).reshape(-1, 1)
    if dtype == "q8":
        q = plane("q").view(np.int8).astype(np.float32)
    else:
        b = plane("q")
        q = np.empty(n, dtype=np.float32)
        q[0::2] = b & 0x0F
        q[1::2] = b >> 4
        q -= 8.0
    return (q.reshape(-1, gs) * d).reshape(shape)
