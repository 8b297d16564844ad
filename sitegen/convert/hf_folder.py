"""A local Hugging Face model folder as a conversion source.

Expected files (issue 3 item 1): ``config.json``, ``model.safetensors`` or
``model.safetensors.index.json`` + shards, ``tokenizer.json``, and optionally
``tokenizer_config.json`` (chat template, bos/eos tokens), ``chat_template.jinja`` and
``generation_config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sitegen.errors import ConvertError
from sitegen.convert.safetensors_io import open_checkpoint

__all__ = ["HFFolderModel", "read_json"]


def read_json(path: Path, *, required: bool = True) -> dict | None:
    """A JSON object from ``path``; a clear error naming the file when missing or malformed."""
    if not path.exists():
        if required:
            raise ConvertError("file not found (a Hugging Face model folder needs it)", file=str(path))
        return None
    try:
        data = json.loads(path.read_text("utf-8"))
    except ValueError as e:
        line = getattr(e, "lineno", None)
        raise ConvertError(f"not valid JSON: {getattr(e, 'msg', e)}", file=str(path), line=line) from None
    if not isinstance(data, dict):
        raise ConvertError("expected a JSON object", file=str(path))
    return data


def _token_text(tok) -> str | None:
    """tokenizer_config.json writes special tokens as strings or as AddedToken dicts."""
    if isinstance(tok, dict):
        return tok.get("content")
    return tok if isinstance(tok, str) else None


class HFFolderModel:
    kind = "hf-folder"

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ConvertError("not a folder", file=str(self.folder))
        self.config_file = self.folder / "config.json"
        self.hf_config = read_json(self.config_file)
        self.ckpt = open_checkpoint(self.folder)
        self.tokenizer_file = self.folder / "tokenizer.json"
        if not self.tokenizer_file.exists():
            raise ConvertError("missing tokenizer: tokenizer.json not found (sitegen needs the fast-tokenizer "
                               "file; save it with AutoTokenizer.from_pretrained(...).save_pretrained(folder))",
                               file=str(self.tokenizer_file))
        self.tokenizer_config = read_json(self.folder / "tokenizer_config.json", required=False) or {}
        self.name = self.folder.name

    def names(self) -> list[str]:
        return self.ckpt.names()

    def shape(self, name: str) -> tuple[int, ...]:
        return self.ckpt.shape(name)

    def nbytes(self, name: str) -> int:
        return self.ckpt.where[name].nbytes(name)

    def read_f32(self, name: str) -> np.ndarray:
        return self.ckpt.read_f32(name)

    def file_of(self, name: str) -> str:
        """The file holding tensor ``name`` (for error messages)."""
        return str(self.ckpt.where[name].path)

    @property
    def weights_file(self) -> str:
        index = self.folder / "model.safetensors.index.json"
        return str(index if index.exists() else self.folder / "model.safetensors")

    def content_files(self) -> list[Path]:
        """Every file whose content the conversion depends on (for the cache key)."""
        names = ["config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                 "generation_config.json", "model.safetensors.index.json"]
        files = [self.folder / n for n in names if (self.folder / n).exists()]
        files += [f.path for f in self.ckpt.files]
        return files

    def tokenizer(self) -> dict:
        from sitegen.convert import tokenizer as tok

        tc = self.folder / "tokenizer_config.json"
        return tok.from_tokenizer_json(self.tokenizer_file, tokenizer_config=tc if tc.exists() else None)

    def chat_template(self) -> tuple[str | None, str, dict]:
        """(template source or None, the file it came from, special tokens for rendering)."""
        tc = self.tokenizer_config
        special = {"bos_token": _token_text(tc.get("bos_token")), "eos_token": _token_text(tc.get("eos_token"))}
        jinja = self.folder / "chat_template.jinja"
        if jinja.exists():
            return jinja.read_text("utf-8"), str(jinja), special
        tpl = tc.get("chat_template")
        if isinstance(tpl, list):  # [{"name": "default", "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in tpl if isinstance(t, dict)}
            tpl = named.get("default") or next(iter(named.values()), None)
        return tpl, str(self.folder / "tokenizer_config.json"), special

    def generation(self) -> dict:
        gen = read_json(self.folder / "generation_config.json", required=False) or {}
        merged = dict(gen)
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if merged.get(key) is None and self.hf_config.get(key) is not None:
                merged[key] = self.hf_config[key]
        return merged
