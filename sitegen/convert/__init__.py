"""Model conversion: checkpoint (HF folder, Hub, GGUF, package file) → sitegen-weights folder.

``convert`` is one straight pipeline (issue 3 items 1–3): resolve the source, normalise its config,
read the tokenizer and chat template (so a bad one fails before any weight is written), then stream
every tensor — read from a memory map, mapped to canonical names, encoded block by block — into
shards in a temporary folder beside OUT, write ``manifest.json`` and rename the folder into place.
``convert_cached`` wraps it with a content-addressed cache (see ``cache.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import sitegen
from sitegen.errors import ConvertError, SitegenError
from sitegen.convert.manifest import (FORMAT, FORMAT_VERSION, ShardWriter, generation_defaults, requirements)
from sitegen.convert.quantize import DTYPES, GROUP_SIZE, TensorEncoder, storage_dtype
from sitegen.convert.groups import weight_groups
from sitegen.convert.sources import Resolved, default_cache_dir, resolve

__all__ = ["convert", "convert_cached", "parse_size", "FORMAT_VERSION", "QUANT_CHOICES", "DEFAULT_SHARD_SIZE",
           "default_cache_dir"]

QUANT_CHOICES = DTYPES
DEFAULT_SHARD_SIZE = 16 * 2**20
# Bump when the converter's output changes for the same input and options (invalidates caches).
CONVERTER_VERSION = "2"

Progress = Callable[[str, int, int], None]
_EMBED_NAMES = ("embed.weight", "pos_embed.weight", "lm_head.weight")


def parse_size(text: str | int, *, flag: str = "--shard-size") -> int:
    """``16MiB``, ``512KiB``, ``1GB``, ``1048576`` → bytes; a clear error naming ``flag`` otherwise."""
    if isinstance(text, int):
        return text
    import re

    m = re.fullmatch(r"\s*(\d+)\s*([KMG]i?B?|B)?\s*", str(text), re.IGNORECASE)
    if not m:
        raise ConvertError(f"{flag}: expected a size such as 16MiB, 512KiB or 1048576, got {text!r}")
    unit = (m.group(2) or "B").upper().rstrip("B").rstrip("I")
    return int(m.group(1)) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[unit]


def _check_options(quant: str, embed_quant: str | None, shard_size: int) -> None:
    if quant not in DTYPES:
        raise ConvertError(f"--quant: unknown quantization {quant!r}; choose one of {', '.join(DTYPES)}")
    if embed_quant is not None and embed_quant not in DTYPES:
        raise ConvertError(f"--embed-quant: unknown quantization {embed_quant!r}; choose one of {', '.join(DTYPES)}")
    if not isinstance(shard_size, int) or shard_size < 4096 or shard_size % 256:
        raise ConvertError(f"--shard-size: must be a multiple of 256 bytes and at least 4 KiB, got {shard_size}")


def convert(source: str | os.PathLike, out: str | os.PathLike, *, quant: str = "q4", embed_quant: str | None = None,
            shard_size: int = DEFAULT_SHARD_SIZE, spec_dir: str | os.PathLike | None = None,
            chat_template: dict | None = None, cache_dir: str | os.PathLike | None = None,
            progress: Progress | None = None, group_tensors: bool = True) -> Path:
    """Convert ``source`` into the folder ``out`` (replaced atomically) and return its path.

    ``quant`` is the storage type of the weight matrices, ``embed_quant`` that of the embeddings
    and output head (default: same as ``quant``). ``chat_template`` is a hand-written compiled
    template that replaces the model's own. ``cache_dir`` is where package sources are assembled.
    ``progress(phase, done, total)`` is called with bytes of source weights processed.
    ``group_tensors`` (default on) stores q/k/v and gate/up as tensor groups (groups.py); tests turn
    it off to exercise a backend's op-by-op path.
    """
    _check_options(quant, embed_quant, shard_size)
    resolved = resolve(source, spec_dir=Path(spec_dir) if spec_dir else None,
                       cache_dir=Path(cache_dir) if cache_dir else None)
    return _convert_resolved(resolved, Path(out), quant=quant, embed_quant=embed_quant, shard_size=shard_size,
                             chat_template=chat_template, progress=progress, group_tensors=group_tensors)


def _compile_template(model, override: dict | None) -> dict | None:
    if override is not None:
        return override
    template, where, special = model.chat_template()
    if not template:
        return None
    from sitegen.convert.chat_template import compile_chat_template

    try:
        return compile_chat_template(template, bos_token=special.get("bos_token"),
                                     eos_token=special.get("eos_token"))
    except SitegenError as e:
        if not e.file:
            e.file = where
        raise
    except Exception as e:  # a bug or unhandled construct in the compiler must still name the file
        raise ConvertError(f"cannot compile the chat template: {e}; give hand-written segments in the spec "
                           f"instead", file=where) from None


def _prepare_out(out: Path, *, force_replace: bool = False) -> Path:
    """A fresh temporary folder beside ``out``; refuses to replace a folder that is not ours."""
    if out.exists() and not force_replace:
        if not out.is_dir():
            raise ConvertError("output exists and is not a folder", file=str(out))
        if any(out.iterdir()) and not (out / "manifest.json").exists():
            raise ConvertError("output folder exists, is not empty and is not a converted model; choose another "
                               "-o/--output or remove it", file=str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def _swap_into_place(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _convert_resolved(resolved: Resolved, out: Path, *, quant: str, embed_quant: str | None, shard_size: int,
                      chat_template: dict | None, progress: Progress | None, source_sha256: str | None = None,
                      force_replace: bool = False, group_tensors: bool = True) -> Path:
    from sitegen.convert import architectures

    model = resolved.open()
    config = architectures.normalize_config(model.hf_config, file=str(model.config_file))
    # Everything that can fail cheaply is done before the first weight is read.
    tokenizer = model.tokenizer()
    compiled_template = _compile_template(model, chat_template)
    generation = generation_defaults(model.generation())
    names = model.names()
    total = sum(model.nbytes(n) for n in names)
    embed_q = embed_quant or quant

    if source_sha256 is None and resolved.kind == "gguf":
        from sitegen.convert.cache import file_sha256

        source_sha256 = file_sha256(resolved.path)
    tmp = _prepare_out(out, force_replace=force_replace)
    try:
        writer = ShardWriter(tmp, shard_size)
        tensors: list[dict] = []
        groups: list[dict] = []
        seen: set[str] = set()
        done = 0
        parts: dict[str, object] = {}  # StableLM per-head norms arrive as rows "name@h"
        # Tensor groups (groups.py): a member is encoded when it arrives and held (encoded, so
        # 1/8 of its f32 size at q4) until the group's last member is in; then the group is written.
        group_of = {m: g for g, members in (weight_groups(config) if group_tensors else {}).items() for m in members}
        members_of = {g: [m for m in group_of if group_of[m] == g] for g in set(group_of.values())}
        pending: dict[str, dict[str, TensorEncoder]] = {}

        def emit(name: str, canon, file: str) -> None:
            if name in seen:
                raise ConvertError(f"two source tensors map to {name!r}", file=file)
            seen.add(name)
            # MoE routers stay f32 (like llama.cpp's ffn_gate_inp): [experts, hidden] is tiny, and a
            # quantized router can change which experts a token picks (docs/weights-format.md).
            wanted = embed_q if name in _EMBED_NAMES else "f32" if name.endswith(".mlp.router.weight") else quant
            group = group_of.get(name)
            if group is None:
                tensors.append(_write_tensor(writer, name, canon, wanted, source=file))
                return
            enc = TensorEncoder(canon, storage_dtype(tuple(canon.shape), wanted))
            try:
                enc.encoded = enc.planes_bytes()
                enc.array = None  # only the encoded bytes wait for the group's other members
            except ValueError as e:
                raise ConvertError(f"tensor {name!r} {e}", file=file) from None
            got = pending.setdefault(group, {})
            got[name] = enc
            if len(got) == len(members_of[group]):
                encs = [(m, got[m]) for m in members_of[group]]
                del pending[group]
                if len({(e.dtype, e.shape[1:]) for _, e in encs}) == 1:
                    entry, member_entries = _write_group(writer, group, encs)
                    groups.append(entry)
                    tensors.extend(member_entries)
                else:  # members that are not stored alike (never for the supported families) stay apart
                    for m, e in encs:
                        tensors.append(_write_encoded(writer, m, e))

        for hf_name in names:
            array = model.read_f32(hf_name)
            try:
                mapped = architectures.canonical_tensors(hf_name, array, config)
            except SitegenError as e:
                e.file = e.file or model.file_of(hf_name)
                raise
            for name, canon in mapped:
                if "@" in name:
                    parts[name] = canon
                    # a stacked tensor (StableLM per-head norms, MoE experts) is written once its last
                    # part is in, so a converter holds one layer's experts at a time, not the model's
                    base = name.partition("@")[0]
                    got = [n for n in parts if n.partition("@")[0] == base]
                    if len(got) == architectures.expected_parts(base, config):
                        for stacked, arr in architectures.stack_parts({n: parts.pop(n) for n in got}).items():
                            emit(stacked, arr, model.file_of(hf_name))
                else:
                    emit(name, canon, model.file_of(hf_name))
            del array, mapped
            done += model.nbytes(hf_name)
            if progress:
                progress("convert", done, total)
        for name, canon in architectures.stack_parts(parts).items():
            emit(name, canon, model.weights_file)
        for group, got in pending.items():  # a group with a member missing: written apart, reported below
            for m, e in got.items():
                tensors.append(_write_encoded(writer, m, e))
        missing = [n for n in architectures.expected_tensors(config) if n not in seen]
        if missing:
            raise ConvertError(f"missing tensor(s) for {config['hf_architecture']}: {', '.join(missing[:5])}"
                               f"{' ...' if len(missing) > 5 else ''}", file=model.weights_file)
        shards = writer.close()
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "name": _model_name(resolved, model),
            "source": _source_info(resolved, source_sha256),
            "generator": f"sitegen {sitegen.__version__}",
            "quantization": {"weights": quant, "embeddings": embed_q,
                             "lm_head": None if config.get("tie_word_embeddings") else embed_q,
                             "group_size": GROUP_SIZE},
            "config": config,
            "shard_size": shard_size,
            "shards": shards,
            "tensors": tensors,
            "groups": groups,
            "tokenizer": tokenizer,
            "chat_template": compiled_template,
            "generation": generation,
            "requirements": requirements(config, tensors, groups),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", "utf-8")
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_tensor(writer: ShardWriter, name: str, array, wanted: str, *, source: str) -> dict:
    dtype = storage_dtype(tuple(array.shape), wanted)
    enc = TensorEncoder(array, dtype)
    writer.align()
    start = writer.position
    try:
        for block in enc.blocks():
            writer.write(block)
    except ValueError as e:
        raise ConvertError(f"tensor {name!r} {e}", file=source) from None
    assert writer.position - start == enc.nbytes, (name, writer.position - start, enc.nbytes)
    return _entry(writer, name, enc.shape, dtype, start, enc.nbytes, enc.planes, enc.error)


def _entry(writer: ShardWriter, name: str, shape, dtype: str, start: int, nbytes: int, planes: list[dict],
           error: dict, **extra) -> dict:
    """One tensor-table (or groups) entry for bytes written at stream offset ``start``."""
    shard, offset = writer.locate(start)
    entry = {"name": name, **({"members": extra.pop("members")} if "members" in extra else {}),
             "shape": list(shape), "dtype": dtype}
    if dtype in ("q4", "q8"):
        entry["group_size"] = GROUP_SIZE
    entry.update({"shard": shard, "offset": offset, "nbytes": nbytes, "planes": planes, "quant_error": error, **extra})
    return entry


def _write_encoded(writer: ShardWriter, name: str, enc: TensorEncoder) -> dict:
    """A tensor already encoded (a group member written on its own)."""
    q, s = enc.encoded
    writer.align()
    start = writer.position
    writer.write(q)
    if s:
        writer.write(bytes(enc.planes[1]["offset"] - len(q)))
        writer.write(s)
    return _entry(writer, name, enc.shape, enc.dtype, start, enc.nbytes, enc.planes, enc.error)


def _write_group(writer: ShardWriter, group: str, encs: list[tuple[str, TensorEncoder]]) -> tuple[dict, list[dict]]:
    """Write one tensor group (groups.py): its members' rows end to end as one tensor. Returns the
    ``groups`` entry and the members' ``tensors`` entries (planes pointing into the group's bytes)."""
    from sitegen.convert.quantize import encoded_layout

    dtype = encs[0][1].dtype
    rows = [e.shape[0] for _, e in encs]
    shape = [sum(rows), *encs[0][1].shape[1:]]
    nbytes, planes = encoded_layout(tuple(shape), dtype)
    writer.align()
    start = writer.position
    for _, e in encs:
        writer.write(e.encoded[0])
    if len(planes) == 2:
        writer.write(bytes(planes[1]["offset"] - planes[0]["nbytes"]))
        for _, e in encs:
            writer.write(e.encoded[1])
    assert writer.position - start == nbytes, (group, writer.position - start, nbytes)
    stats = encs[0][1].stats
    for _, e in encs[1:]:
        stats = stats.merge(e.stats)
    entry = _entry(writer, group, shape, dtype, start, nbytes, planes, stats.result(),
                   members=[m for m, _ in encs])
    # Each member: its q/data rows start at row r0 of the group's first plane, its scales at row r0
    # of the scales plane; plane offsets are relative to the member's first byte (its first code).
    members = []
    r0 = 0
    for (name, e), n in zip(encs, rows):
        q_row = planes[0]["nbytes"] // shape[0]
        first = start + r0 * q_row
        m_planes = [{"name": planes[0]["name"], "offset": 0, "nbytes": n * q_row}]
        if len(planes) == 2:
            s_row = planes[1]["nbytes"] // shape[0]
            m_planes.append({"name": "scales", "offset": planes[1]["offset"] + r0 * s_row - r0 * q_row,
                             "nbytes": n * s_row})
        members.append(_entry(writer, name, e.shape, dtype, first, m_planes[-1]["offset"] + m_planes[-1]["nbytes"],
                              m_planes, e.error, group=group, group_row=r0))
        r0 += n
    return entry, members


def _model_name(resolved: Resolved, model) -> str:
    if resolved.origin == "hf-hub":
        return resolved.ref.removeprefix("hf:").split("@")[0]
    return model.name


def _source_info(resolved: Resolved, sha256: str | None) -> dict:
    kind = "hf-hub" if resolved.origin == "hf-hub" else resolved.kind
    info = {"kind": kind, "ref": resolved.ref}
    if resolved.revision:
        info["revision"] = resolved.revision
    if sha256:
        info["sha256"] = sha256
    return info


def convert_cached(source: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None, quant: str = "q4",
                   embed_quant: str | None = None, shard_size: int = DEFAULT_SHARD_SIZE,
                   spec_dir: str | os.PathLike | None = None, chat_template: dict | None = None,
                   progress: Progress | None = None) -> Path:
    """Like ``convert`` into ``cache_dir/models/<key>``, reusing an intact entry with the same key."""
    from sitegen.convert.cache import cached_convert

    _check_options(quant, embed_quant, shard_size)
    return cached_convert(source, cache_dir=Path(cache_dir) if cache_dir else default_cache_dir(), quant=quant,
                          embed_quant=embed_quant, shard_size=shard_size,
                          spec_dir=Path(spec_dir) if spec_dir else None, chat_template=chat_template,
                          progress=progress)

