"""The output folder: streaming shard writer, manifest assembly, and manifest checks.

See docs/weights-format.md. All tensors form one byte stream, each tensor starting at a
multiple of 256 bytes; the stream is cut into shards of exactly ``shard_size`` bytes (the last one
shorter). Shards are written as the stream is produced, sha256 computed on the way, so nothing
larger than one encoder block is held in memory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sitegen.errors import ConvertError
from sitegen.convert.quantize import ALIGN

__all__ = ["FORMAT", "FORMAT_VERSION", "READABLE_VERSIONS", "ShardWriter", "requirements", "physical_tensors", "generation_defaults",
           "read_manifest", "verify_folder", "shard_name"]

FORMAT = "sitegen-weights"
FORMAT_VERSION = 2
# Versions read_manifest accepts: version 1 is version 2 without tensor groups.
READABLE_VERSIONS = (1, 2)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.bin"


class ShardWriter:
    """Appends bytes to the stream, cutting it into ``shard-NNNNN.bin`` files of ``shard_size``."""

    def __init__(self, folder: Path, shard_size: int):
        self.folder = folder
        self.shard_size = shard_size
        self.position = 0            # offset in the whole stream
        self.shards: list[dict] = []
        self._file = None
        self._hash = None
        self._in_shard = 0

    def _open_next(self) -> None:
        self._close_current()
        name = shard_name(len(self.shards))
        self._file = (self.folder / name).open("wb")
        self._hash = hashlib.sha256()
        self._in_shard = 0
        self.shards.append({"file": name, "bytes": 0, "sha256": None})

    def _close_current(self) -> None:
        if self._file is not None:
            self._file.close()
            self.shards[-1]["bytes"] = self._in_shard
            self.shards[-1]["sha256"] = self._hash.hexdigest()
            self._file = None

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        while len(view):
            if self._file is None or self._in_shard == self.shard_size:
                self._open_next()
            n = min(len(view), self.shard_size - self._in_shard)
            chunk = view[:n]
            self._file.write(chunk)
            self._hash.update(chunk)
            self._in_shard += n
            self.position += n
            view = view[n:]

    def align(self) -> None:
        pad = -self.position % ALIGN
        if pad:
            self.write(bytes(pad))

    def locate(self, stream_offset: int) -> tuple[int, int]:
        """(shard index, offset in that shard) of a stream offset."""
        return divmod(stream_offset, self.shard_size)

    def close(self) -> list[dict]:
        self._close_current()
        return self.shards


def physical_tensors(tensors: list[dict], groups: list[dict] | None) -> list[dict]:
    """The tensors that own their bytes: the groups and the tensors in no group."""
    return [t for t in tensors if "group" not in t] + list(groups or [])


def requirements(config: dict, tensors: list[dict], groups: list[dict] | None = None) -> dict:
    """Device requirements (docs/weights-format.md#requirements), checked by the runtime before download.
    Sizes are of physical tensors: a group is one buffer (unless the runtime splits it by rows)."""
    tensors = physical_tensors(tensors, groups)
    largest = max((t["nbytes"] for t in tensors), default=0)
    largest_plane = max((p["nbytes"] for t in tensors for p in t["planes"]), default=0)
    per_layer = 2 * config["num_kv_heads"] * config["head_dim"] * 4  # f32 K and V of one position
    total = sum(t["nbytes"] for t in tensors)
    out = {
        "features": [],
        "optional_features": ["shader-f16", "subgroups"],
        "max_buffer_bytes": largest,
        "max_binding_bytes": largest_plane,
        "weights_bytes": total,
        "weights_bytes_per_token": _bytes_per_token(config, tensors, total),
        "kv_cache_bytes_per_1k_tokens": config["num_layers"] * per_layer * 1024,
    }
    # Issue 12: a sliding-window layer's cache is a ring of window + prefill chunk - 1 positions
    # (runtime/graph.js kvCacheLayout), whatever the context; kv_cache_bytes_per_1k_tokens still
    # counts every layer (the bound for a reader that does not know this key).
    sliding = sum(1 for t in (config.get("layer_types") or []) if t == "sliding")
    if sliding and config.get("sliding_window"):
        out["kv_cache_sliding"] = {"layers": sliding, "window": int(config["sliding_window"]),
                                   "bytes_per_position": sliding * per_layer}
    return out


def _bytes_per_token(config: dict, tensors: list[dict], total: int) -> int:
    """Weight bytes one decoded token reads (issue 12): every tensor, except that of each
    mixture-of-experts tensor ``[experts, ...]`` only ``top_k`` experts' rows, and of an untied
    embedding table one row. A dense model reads nearly all of ``weights_bytes``."""
    moe = config.get("moe")
    skipped = 0
    for t in tensors:
        if moe and ".mlp.experts." in t["name"]:
            skipped += t["nbytes"] * (moe["num_experts"] - moe["top_k"]) // moe["num_experts"]
        elif t["name"] == "embed.weight" and not config.get("tie_word_embeddings"):
            skipped += t["nbytes"] - t["nbytes"] // max(1, t["shape"][0])
    return total - skipped


_GEN_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "do_sample", "max_new_tokens")


def generation_defaults(gen: dict) -> dict:
    """The manifest's ``generation``: sampling defaults and token ids, eos always a list."""
    eos = gen.get("eos_token_id")
    eos_ids = [] if eos is None else ([int(e) for e in eos] if isinstance(eos, list) else [int(eos)])
    out = {k: gen.get(k) for k in _GEN_KEYS}
    bos = gen.get("bos_token_id")
    pad = gen.get("pad_token_id")
    out.update({"bos_token_id": None if bos is None else int(bos), "eos_token_ids": eos_ids,
                "pad_token_id": None if pad is None or isinstance(pad, list) else int(pad)})
    return out


def read_manifest(folder: Path) -> dict:
    """manifest.json of a converted folder, checked for format and version: the one Python reader
    (build, the reference and convert use it; docs/manifest.schema.json is the contract)."""
    path = Path(folder) / "manifest.json"
    try:
        m = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConvertError(f"no manifest.json in {folder} (is it a converted model folder?)", file=str(path)) from None
    except (OSError, ValueError) as e:  # ValueError: invalid JSON or UTF-8
        raise ConvertError(f"cannot read {path}: {e}", file=str(path)) from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ConvertError(f"{path} is not a sitegen weights manifest (its 'format' is not '{FORMAT}')",
                           file=str(path))
    if m.get("version") not in READABLE_VERSIONS:
        raise ConvertError(f"{path} has version {m.get('version')!r}; this sitegen reads versions "
                           f"{', '.join(map(str, READABLE_VERSIONS))} (convert the model again)", file=str(path))
    return m


def verify_folder(folder: Path, *, hashes: bool = False) -> dict:
    """Check that every shard listed exists with its size (and sha256 when ``hashes``)."""
    m = read_manifest(folder)
    for s in m["shards"]:
        p = Path(folder) / s["file"]
        if not p.is_file() or p.stat().st_size != s["bytes"]:
            raise ConvertError(f"shard {s['file']} is missing or has the wrong size", file=str(p))
        if hashes:
            h = hashlib.sha256()
            with p.open("rb") as f:
                while block := f.read(2**24):
                    h.update(block)
            if h.hexdigest() != s["sha256"]:
                raise ConvertError(f"shard {s['file']} does not match its sha256", file=str(p))
    return m
