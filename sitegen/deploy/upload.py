"""Weights on another origin (issue 15, item 4): what to upload where, said once."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["describe_upload", "hf_repo_of"]

_HF = re.compile(r"https://huggingface\.co/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.*)")


def hf_repo_of(url: str) -> tuple[str, str, str, str] | None:
    """(repo type, repo id, revision, path in the repo) of a Hugging Face resolve URL."""
    m = _HF.fullmatch(url)
    if not m:
        return None
    return (m.group(1) or "model").rstrip("s"), m.group(2), m.group(3), m.group(4).rstrip("/")


def describe_upload(model: str, folder: Path, url: str) -> str:
    """The note `sitegen build` prints for a model whose shards live at ``url``."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    size = sum(p.stat().st_size for p in files)
    lines = [f"note: model {model!r}: upload the {len(files)} files of {folder}/ "
             f"({size / 2**20:.1f} MiB) to {url} (the site reads its shards from there; it "
             f"must answer with CORS headers, see docs/deploy.md)"]
    hf = hf_repo_of(url)
    if hf is not None:
        kind, repo, revision, path = hf
        # `hf` is huggingface_hub's command line (a sitegen dependency); it creates the
        # repository when it does not exist yet.
        type_flag = "" if kind == "model" else f" --repo-type {kind}"
        lines.append(f"      e.g. hf upload{type_flag} {repo} {folder} "
                     f"{path or '.'} --revision {revision}")
    return "\n".join(lines)
