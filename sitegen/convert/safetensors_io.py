"""Read safetensors checkpoints one tensor at a time from memory-mapped files.

We read the format ourselves (8-byte little-endian header length, JSON header, raw data) rather
than through the ``safetensors`` package so that every malformed file gets an error naming the
file and the problem, and so BF16 needs no torch: BF16 is the top half of an f32, so
``u16 << 16`` reinterpreted as f32 is exact.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from sitegen.errors import ConvertError

__all__ = ["SafetensorsFile", "open_checkpoint", "Checkpoint"]

_DTYPES = {
    "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"), "F64": np.dtype("<f8"),
}
# Integer tensors appear in some checkpoints as buffers we never use; they are listed so the
# error for a *used* one can say what it is, but we can't convert them to weights.
_KNOWN_UNUSABLE = {"I8", "U8", "I16", "I32", "I64", "BOOL", "F8_E4M3", "F8_E5M2", "U16", "U32", "U64"}
_MAX_HEADER = 100 * 2**20


class SafetensorsFile:
    """One ``.safetensors`` file: its header parsed and validated, data memory-mapped lazily."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
            with self.path.open("rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    raise ConvertError("truncated safetensors file: shorter than its 8-byte header length",
                                       file=str(self.path))
                (hlen,) = struct.unpack("<Q", head)
                if hlen > _MAX_HEADER or 8 + hlen > size:
                    raise ConvertError(f"corrupt safetensors header: header length {hlen} does not fit in "
                                       f"the file's {size} bytes", file=str(self.path))
                raw = f.read(hlen)
        except OSError as e:
            raise ConvertError(f"cannot read: {e.strerror}", file=str(self.path)) from None
        try:
            header = json.loads(raw.decode("utf-8"))
            if not isinstance(header, dict):
                raise ValueError("not a JSON object")
        except (UnicodeDecodeError, ValueError) as e:
            raise ConvertError(f"corrupt safetensors header: not valid JSON ({e})", file=str(self.path)) from None
        header.pop("__metadata__", None)
        self.data_start = 8 + hlen
        data_len = size - self.data_start
        self.tensors: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
        for name, info in header.items():
            try:
                dtype, shape, (b, e) = info["dtype"], tuple(int(s) for s in info["shape"]), info["data_offsets"]
            except (KeyError, TypeError, ValueError):
                raise ConvertError(f"corrupt safetensors header: bad entry for tensor {name!r}",
                                   file=str(self.path)) from None
            if e > data_len:
                raise ConvertError(f"truncated safetensors file: tensor {name!r} ends at byte "
                                   f"{self.data_start + e} but the file has {size} bytes", file=str(self.path))
            if dtype in _DTYPES and (e - b) != int(np.prod(shape, dtype=np.int64)) * _DTYPES[dtype].itemsize:
                raise ConvertError(f"corrupt safetensors header: tensor {name!r} has {e - b} bytes for shape "
                                   f"{list(shape)} {dtype}", file=str(self.path))
            self.tensors[name] = (dtype, shape, b, e)

    def nbytes(self, name: str) -> int:
        _, _, b, e = self.tensors[name]
        return e - b

    def read_f32(self, name: str) -> np.ndarray:
        """The tensor as float32 (a new array; the mapping itself is never copied whole)."""
        dtype, shape, b, e = self.tensors[name]
        if dtype not in _DTYPES:
            what = "an integer/fp8 type sitegen does not convert" if dtype in _KNOWN_UNUSABLE else "unknown"
            raise ConvertError(f"tensor {name!r} has dtype {dtype} ({what}); supported: F32, F16, BF16, F64",
                               file=str(self.path))
        if e == b:
            return np.zeros(shape, np.float32)
        # A mapping per tensor, dropped once converted: pages of a whole-file mapping would stay in
        # the process's resident set as the conversion walks through the file (issue 3: peak memory).
        raw = np.memmap(self.path, dtype=_DTYPES[dtype], mode="r", offset=self.data_start + b,
                        shape=((e - b) // _DTYPES[dtype].itemsize,))
        try:
            if dtype == "BF16":
                out = raw.astype(np.uint32)
                out <<= 16
                return out.view(np.float32).reshape(shape)
            return raw.astype(np.float32).reshape(shape)
        finally:
            raw._mmap.close()
            del raw


class Checkpoint:
    """All tensors of a (possibly sharded) safetensors checkpoint, by name."""

    def __init__(self, files: list[SafetensorsFile]):
        self.files = files
        self.where: dict[str, SafetensorsFile] = {}
        for f in files:
            for name in f.tensors:
                self.where[name] = f

    def names(self) -> list[str]:
        return list(self.where)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.where[name].tensors[name][1]

    def read_f32(self, name: str) -> np.ndarray:
        return self.where[name].read_f32(name)


def open_checkpoint(folder: Path) -> Checkpoint:
    """``model.safetensors`` or the shards listed by ``model.safetensors.index.json`` in ``folder``."""
    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text("utf-8"))["weight_map"]
            files = sorted(set(weight_map.values()))
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ConvertError(f"corrupt index: expected a JSON object with a 'weight_map' ({e})",
                               file=str(index)) from None
        missing = [f for f in files if not (folder / f).exists()]
        if missing:
            raise ConvertError(f"shard file(s) listed in the index are missing: {', '.join(missing)}",
                               file=str(index))
        ckpt = Checkpoint([SafetensorsFile(folder / f) for f in files])
        absent = [n for n, f in weight_map.items() if n not in ckpt.where]
        if absent:
            raise ConvertError(f"tensor {absent[0]!r} is listed in the index but not in {weight_map[absent[0]]}",
                               file=str(index))
        return ckpt
    if single.exists():
        return Checkpoint([SafetensorsFile(single)])
    raise ConvertError("no weights found: expected model.safetensors or model.safetensors.index.json",
                       file=str(folder))
