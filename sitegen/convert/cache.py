"""Content-addressed conversion cache (issue 3 item 1: an unchanged model is not converted again).

The key is a sha256 over: the weights format version, the converter version, the options
(quant, embed_quant, shard_size, chat_template override), and the *content* of every file the
conversion reads, hashed through a memory map in 16 MiB blocks (about 1 GB/s; sizes and mtimes
would miss an edit that keeps both, such as a re-saved or restored checkpoint). Entries are written atomically (``convert`` builds beside the target and renames);
an entry whose manifest or shards are missing or of the wrong size is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
from pathlib import Path

from sitegen.errors import ConvertError
from sitegen.convert.manifest import FORMAT_VERSION, verify_folder
from sitegen.convert.sources import resolve

__all__ = ["cached_convert", "file_sha256", "cache_key"]

_BLOCK = 16 * 2**20


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read through a memory map in 16 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                for off in range(0, size, _BLOCK):
                    h.update(mm[off:off + _BLOCK])
    return h.hexdigest()


def cache_key(files: list[Path], options: dict) -> tuple[str, dict[str, str]]:
    """(key, {file name: sha256}) for the files' contents and the options."""
    from sitegen.convert import CONVERTER_VERSION

    digests = {f.name: file_sha256(f) for f in sorted(files, key=lambda p: p.name)}
    payload = {"format_version": FORMAT_VERSION, "converter": CONVERTER_VERSION, "options": options,
               "files": digests}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest(), digests


def cached_convert(source, *, cache_dir: Path, quant: str, embed_quant: str | None, shard_size: int,
                   spec_dir: Path | None, chat_template: dict | None, progress=None) -> Path:
    from sitegen.convert import _convert_resolved

    resolved = resolve(source, spec_dir=spec_dir, cache_dir=cache_dir)
    model_files = resolved.open().content_files()
    options = {"quant": quant, "embed_quant": embed_quant or quant, "shard_size": shard_size,
               "chat_template": chat_template}
    if progress:
        progress("hash", 0, 1)
    key, digests = cache_key(model_files, options)
    if progress:
        progress("hash", 1, 1)
    entry = cache_dir / "models" / key[:32]
    if entry.exists():
        try:
            verify_folder(entry)
            return entry
        except ConvertError:
            pass  # partial or damaged entry: convert again, replacing it atomically
    source_sha = digests[resolved.path.name] if resolved.kind == "gguf" else None
    return _convert_resolved(resolved, entry, quant=quant, embed_quant=embed_quant, shard_size=shard_size,
                             chat_template=chat_template, progress=progress, source_sha256=source_sha,
                             force_replace=True)
