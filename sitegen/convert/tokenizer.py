"""A model's tokenizer as manifest data (issue 3), from ``tokenizer.json``, a SentencePiece
``.model`` file, or GGUF metadata.

The manifest's ``tokenizer`` object (documented in docs/weights-format.md, section "Tokenizer") keeps
the pipeline of the Hugging Face ``tokenizers`` library -- normalizer, pre-tokenizer, BPE model,
decoder -- in that library's own JSON vocabulary, restricted to the parts the browser runtime
(``runtime/tokenizer/``) implements, so that:

* ``to_tokenizer_json`` can rebuild a ``tokenizer.json`` from it and the ``tokenizers`` library
  itself checks that nothing was lost (``encode`` below runs that way);
* the runtime needs no Python-only knowledge: regexes are rewritten once, here, into a dialect
  that means the same thing in Oniguruma (``tokenizers``) and in ECMAScript with the ``u`` flag.

Two BPE flavours share one model: ``merges`` (GPT-2 style: the pair of lowest rank merges first)
and ``scores`` (SentencePiece / llama.cpp ``llm_tokenizer_spm``: the adjacent pair whose
concatenation is a vocabulary token of highest score merges first). GGUF "llama" vocabularies and
SentencePiece models have scores and no merges; their merges are derived for ``to_tokenizer_json``.
"""

from __future__ import annotations

import json
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

from sitegen.errors import ConvertError

__all__ = [
    "from_tokenizer_json",
    "from_gguf",
    "from_sentencepiece",
    "gpt2_tokenizer_json",
    "to_tokenizer_json",
    "encode",
    "decode",
]

FORMAT = "sitegen-tokenizer"  # the manifest's tokenizer.format; bump VERSION on incompatible change
VERSION = 1

# --------------------------------------------------------------------------------------------
# Regex dialect: Oniguruma (tokenizers) -> the common subset of Oniguruma and ECMAScript (u flag)
# --------------------------------------------------------------------------------------------

# Oniguruma's \s, \d, \w are Unicode-aware; ECMAScript's are not (JS \s also differs: it has U+FEFF
# and lacks U+0085), so spell them as Unicode properties both engines read the same way.
_CLASS_ESCAPES = {
    "s": r"\p{White_Space}",
    "S": r"\P{White_Space}",
    "d": r"\p{Nd}",
    "D": r"\P{Nd}",
    "w": r"\p{L}\p{M}\p{Nd}\p{Pc}",
}
_SIMPLE_ESCAPES = set("rntfv0\\/^$.|?*+()[]{}-'\" ")


@lru_cache(maxsize=None)
def _case_variants(ch: str) -> str:
    """Every character that Oniguruma's case-insensitive match treats as ``ch`` (e.g. s, S, ſ)."""
    fold = ch.casefold()
    found = {ch, ch.lower(), ch.upper()}
    if ch.isascii() and ch.isalpha():
        # The only non-ASCII characters whose simple case fold is an ASCII letter.
        found |= {c for c in ("\u017f", "\u212a") if c.casefold() == fold}
    return "".join(sorted(c for c in found if len(c) == 1))


def _js_regex(pattern: str, *, where: str) -> str:
    """Rewrite one tokenizer.json regex into the Oniguruma/ECMAScript common subset.

    Handles ``(?i:...)`` groups (Node 20 has no inline modifiers: letters become classes of
    their case variants) and the Unicode-aware class escapes. Anything outside the known subset
    is refused here, at build time, rather than failing in a visitor's browser.
    """
    out: list[str] = []
    i = 0
    n = len(pattern)
    in_class = False
    icase_depth: list[bool] = []  # per open group: is it a (?i:...) group
    icase = 0

    def bad(what: str) -> ConvertError:
        return ConvertError(f"unsupported regex construct {what} at offset {i} in {pattern!r}",
                            key=where)

    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise bad("trailing backslash")
            e = pattern[i + 1]
            if e in ("p", "P"):
                m = re.match(r"[pP]\{\^?[A-Za-z_]+\}", pattern[i + 1:])
                if not m:
                    raise bad(f"\\{e} without {{Name}}")
                body = m.group(0)
                if "^" in body:  # Oniguruma's \p{^L} is \P{L}
                    body = ("P" if e == "p" else "p") + body[1:].replace("^", "")
                out.append("\\" + body)
                i += 1 + len(m.group(0))
                continue
            if e in _CLASS_ESCAPES:
                rep = _CLASS_ESCAPES[e]
                if e == "w" and not in_class:
                    rep = "[" + rep + "]"
                out.append(rep)
                i += 2
                continue
            if e == "W":
                if in_class:
                    raise bad("\\W inside a character class")
                out.append("[^" + _CLASS_ESCAPES["w"] + "]")
                i += 2
                continue
            if e == "x":
                m = re.match(r"x([0-9A-Fa-f]{2}|\{[0-9A-Fa-f]{1,6}\})", pattern[i + 1:])
                if not m:
                    raise bad("\\x escape")
                hexd = m.group(1).strip("{}")
                out.append("\\u{%X}" % int(hexd, 16))
                i += 1 + len(m.group(0))
                continue
            if e == "u":
                m = re.match(r"u([0-9A-Fa-f]{4})", pattern[i + 1:])
                if not m:
                    raise bad("\\u escape")
                out.append("\\u{%s}" % m.group(1).upper())
                i += 6
                continue
            if e in _SIMPLE_ESCAPES:
                out.append("\\" + e if e not in "'\" " else e)
                i += 2
                continue
            raise bad("\\" + e)
        if in_class:
            if c == "]":
                in_class = False
            elif c == "[":
                raise bad("nested character class")
            elif icase and c.isalpha():
                out.append(_case_variants(c))
                i += 1
                continue
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            out.append(c)
            if pattern.startswith("[^", i):
                out.append("^")
                i += 1
            i += 1
            if i < n and pattern[i] == "]":  # a literal ] first in a class
                out.append("\\]")
                i += 1
            continue
        if c == "(":
            if pattern.startswith("(?i:", i):
                icase_depth.append(True)
                icase += 1
                out.append("(?:")
                i += 4
                continue
            if pattern.startswith("(?:", i) or pattern.startswith("(?=", i) or pattern.startswith("(?!", i):
                icase_depth.append(False)
                out.append(pattern[i:i + 3])
                i += 3
                continue
            if pattern.startswith("(?<=", i) or pattern.startswith("(?<!", i):
                icase_depth.append(False)
                out.append(pattern[i:i + 4])
                i += 4
                continue
            if pattern.startswith("(?", i):
                raise bad(pattern[i:i + 3])
            icase_depth.append(False)
            out.append("(?:")  # capture groups mean nothing to a splitter; keep numbering out of it
            i += 1
            continue
        if c == ")":
            if not icase_depth:
                raise bad("unbalanced )")
            if icase_depth.pop():
                icase -= 1
            out.append(c)
            i += 1
            continue
        if c in "?*+}" and i + 1 < n and pattern[i + 1] == "+":
            raise bad("possessive quantifier")
        if icase and c.isalpha():
            v = _case_variants(c)
            out.append("[" + v + "]" if len(v) > 1 else c)
            i += 1
            continue
        out.append(c)
        i += 1
    if in_class or icase_depth:
        raise bad("unterminated group or class")
    return "".join(out)


# --------------------------------------------------------------------------------------------
# Pipeline parts: the subset of tokenizers' JSON that the runtime implements
# --------------------------------------------------------------------------------------------

_SPLIT_BEHAVIORS = {"Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous"}
_GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


def _pattern(p: Any, where: str) -> dict:
    if isinstance(p, dict) and set(p) == {"String"} and isinstance(p["String"], str):
        return {"String": p["String"]}
    if isinstance(p, dict) and set(p) == {"Regex"} and isinstance(p["Regex"], str):
        return {"Regex": _js_regex(p["Regex"], where=where)}
    raise ConvertError(f"expected {{'String': ...}} or {{'Regex': ...}}, got {p!r}", key=where)


def _normalizer(n: Any, where: str) -> dict | None:
    if n is None:
        return None
    t = n.get("type") if isinstance(n, dict) else None
    if t == "Sequence":
        parts = [_normalizer(x, f"{where}.normalizers[{i}]") for i, x in enumerate(n["normalizers"])]
        parts = [p for p in parts if p is not None]
        return {"type": "Sequence", "normalizers": parts} if parts else None
    if t in ("NFC", "NFD", "NFKC", "NFKD", "Lowercase"):
        return {"type": t}
    if t == "Replace":
        return {"type": t, "pattern": _pattern(n["pattern"], where + ".pattern"), "content": n["content"]}
    if t == "Prepend":
        return {"type": t, "prepend": n["prepend"]}
    if t == "Strip":
        return {"type": t, "strip_left": bool(n.get("strip_left")), "strip_right": bool(n.get("strip_right"))}
    raise ConvertError(f"unsupported normalizer type {t!r} (supported: Sequence, NFC, NFD, NFKC, NFKD, "
                       "Lowercase, Replace, Prepend, Strip)", key=where)


def _pre_tokenizer(p: Any, where: str) -> dict | None:
    if p is None:
        return None
    t = p.get("type") if isinstance(p, dict) else None
    if t == "Sequence":
        parts = [_pre_tokenizer(x, f"{where}.pretokenizers[{i}]") for i, x in enumerate(p["pretokenizers"])]
        parts = [x for x in parts if x is not None]
        return {"type": "Sequence", "pretokenizers": parts} if parts else None
    if t == "Split":
        if p.get("behavior") not in _SPLIT_BEHAVIORS:
            raise ConvertError(f"unsupported Split behavior {p.get('behavior')!r}", key=where)
        if p.get("invert"):
            raise ConvertError("unsupported Split with invert: true", key=where)
        return {"type": "Split", "pattern": _pattern(p["pattern"], where + ".pattern"),
                "behavior": p["behavior"], "invert": False}
    if t == "ByteLevel":
        return {"type": "ByteLevel", "add_prefix_space": bool(p.get("add_prefix_space")),
                "trim_offsets": bool(p.get("trim_offsets", True)), "use_regex": bool(p.get("use_regex", True))}
    if t == "Digits":
        # tokenizers' Digits splits on char::is_numeric, i.e. \p{N}; one Split rule says the same.
        regex = r"\p{N}" if p.get("individual_digits") else r"\p{N}+"
        return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}
    if t == "Metaspace":
        scheme = p.get("prepend_scheme")
        if scheme is None:  # older files: add_prefix_space
            scheme = "always" if p.get("add_prefix_space", True) else "never"
        if scheme not in ("always", "first", "never"):
            raise ConvertError(f"unsupported Metaspace prepend_scheme {scheme!r}", key=where)
        return {"type": "Metaspace", "replacement": p.get("replacement", "\u2581"),
                "prepend_scheme": scheme, "split": bool(p.get("split", True))}
    raise ConvertError(f"unsupported pre_tokenizer type {t!r} (supported: Sequence, Split, ByteLevel, "
                       "Digits, Metaspace)", key=where)


def _decoder(d: Any, where: str) -> dict | None:
    if d is None:
        return None
    t = d.get("type") if isinstance(d, dict) else None
    if t == "Sequence":
        parts = [_decoder(x, f"{where}.decoders[{i}]") for i, x in enumerate(d["decoders"])]
        parts = [x for x in parts if x is not None]
        return {"type": "Sequence", "decoders": parts} if parts else None
    if t == "ByteLevel":
        return {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    if t in ("ByteFallback", "Fuse"):
        return {"type": t}
    if t == "Replace":
        pat = d["pattern"]
        if not (isinstance(pat, dict) and "String" in pat):
            raise ConvertError("unsupported Replace decoder with a regex pattern", key=where)
        return {"type": t, "pattern": {"String": pat["String"]}, "content": d["content"]}
    if t == "Strip":
        if d.get("stop", 0) != 0:
            raise ConvertError("unsupported Strip decoder with stop != 0", key=where)
        return {"type": t, "content": d["content"], "start": int(d.get("start", 0)), "stop": 0}
    if t == "Metaspace":
        scheme = d.get("prepend_scheme")
        if scheme is None:
            scheme = "always" if d.get("add_prefix_space", True) else "never"
        return {"type": t, "replacement": d.get("replacement", "\u2581"), "prepend_scheme": scheme,
                "split": bool(d.get("split", True))}
    raise ConvertError(f"unsupported decoder type {t!r} (supported: Sequence, ByteLevel, ByteFallback, "
                       "Fuse, Replace, Strip, Metaspace)", key=where)


def _post_processor(p: Any, token_ids: dict[str, int], where: str) -> tuple[list[int], list[int]]:
    """The ids a single sequence gets before and after it when special tokens are added."""
    if p is None:
        return [], []
    t = p.get("type")
    if t == "Sequence":
        pre: list[int] = []
        post: list[int] = []
        for i, x in enumerate(p["processors"]):
            a, b = _post_processor(x, token_ids, f"{where}.processors[{i}]")
            pre, post = pre + a, b + post
        return pre, post
    if t == "ByteLevel":  # only moves offsets
        return [], []
    if t == "TemplateProcessing":
        pre, post, seen = [], [], False
        for item in p["single"]:
            if "Sequence" in item:
                seen = True
            elif "SpecialToken" in item:
                name = item["SpecialToken"]["id"]
                spec = p.get("special_tokens", {}).get(name)
                ids = spec["ids"] if spec else [token_ids[name]]
                (post if seen else pre).extend(ids)
        return pre, post
    if t in ("RobertaProcessing", "BertProcessing"):
        return [p["cls"][1]], [p["sep"][1]]
    raise ConvertError(f"unsupported post_processor type {t!r}", key=where)


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------

def _load_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConvertError(f"cannot read: {e.strerror}", file=str(path)) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConvertError(f"not valid JSON: {e.msg}", file=str(path), line=e.lineno, col=e.colno) from None


def _token_name(v: Any) -> str | None:
    if isinstance(v, dict):
        return v.get("content")
    return v if isinstance(v, str) else None


def from_tokenizer_json(path: str | Path, *, tokenizer_config: str | Path | None = None) -> dict:
    """The manifest's tokenizer from a Hugging Face ``tokenizer.json``.

    BOS/EOS come from ``tokenizer_config.json`` (``tokenizer_config`` or, by default, the file
    beside ``path`` when there is one).
    """
    path = Path(path)
    data = _load_json(path)
    fname = str(path)
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ConvertError("no 'model' object: not a tokenizers tokenizer.json", file=fname)
    model = data["model"]
    mtype = model.get("type", "BPE" if "merges" in model else None)
    if mtype != "BPE":
        raise ConvertError(f"unsupported tokenizer model type {mtype!r}: only BPE (byte-level or "
                           "SentencePiece-style) is supported", file=fname, key="model.type")
    if model.get("dropout") not in (None, 0, 0.0):
        raise ConvertError("BPE dropout is not supported", file=fname, key="model.dropout")
    for k in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(k):
            raise ConvertError(f"unsupported {k} {model[k]!r}", file=fname, key=f"model.{k}")

    vocab_map: dict[str, int] = model["vocab"]
    added = data.get("added_tokens") or []
    size = 1 + max([*vocab_map.values(), *(a["id"] for a in added)], default=-1)
    vocab: list[str | None] = [None] * size
    for tok, i in vocab_map.items():
        vocab[i] = tok

    merges: list[int] = []
    for n, m in enumerate(model.get("merges") or []):
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        ia, ib = vocab_map.get(a), vocab_map.get(b)
        if ia is None or ib is None or (a + b) not in vocab_map:
            raise ConvertError(f"merge {n} ({a!r}, {b!r}) uses a token missing from the vocabulary",
                               file=fname, key=f"model.merges[{n}]")
        merges += (ia, ib)

    token_ids = dict(vocab_map)
    token_ids.update({a["content"]: a["id"] for a in added})
    unk = model.get("unk_token")
    try:
        prefix, suffix = _post_processor(data.get("post_processor"), token_ids, "post_processor")
    except KeyError as e:
        raise ConvertError(f"post_processor names unknown token {e.args[0]!r}", file=fname,
                           key="post_processor") from None

    try:
        pipeline = (_normalizer(data.get("normalizer"), "normalizer"),
                    _pre_tokenizer(data.get("pre_tokenizer"), "pre_tokenizer"),
                    _decoder(data.get("decoder"), "decoder"))
    except ConvertError as e:
        e.file = e.file or fname
        raise
    except (KeyError, TypeError, AttributeError) as e:
        raise ConvertError(f"malformed normalizer, pre_tokenizer or decoder ({type(e).__name__}: {e})",
                           file=fname) from None
    if pipeline[2] is None:
        raise ConvertError("no decoder: a BPE tokenizer needs one to turn tokens back into text",
                           file=fname, key="decoder")
    tok = _assemble(
        vocab=vocab, merges=merges, scores=None,
        byte_fallback=bool(model.get("byte_fallback")), ignore_merges=bool(model.get("ignore_merges")),
        unk_id=token_ids.get(unk) if unk else None, fuse_unk=bool(model.get("fuse_unk")),
        added_tokens=added, file=fname,
        normalizer=pipeline[0], pre_tokenizer=pipeline[1], decoder=pipeline[2],
        prefix_ids=prefix, suffix_ids=suffix,
    )

    cfg_path = Path(tokenizer_config) if tokenizer_config else path.with_name("tokenizer_config.json")
    if cfg_path.exists():
        cfg = _load_json(cfg_path)
        for key in ("bos", "eos", "pad", "unk"):
            name = _token_name(cfg.get(f"{key}_token"))
            if name is not None:
                if name not in token_ids:
                    raise ConvertError(f"{key}_token {name!r} is not in the vocabulary of {path.name}",
                                       file=str(cfg_path), key=f"{key}_token")
                tok[f"{key}_id"] = token_ids[name]
    return tok


def _assemble(*, vocab, merges, scores, byte_fallback, ignore_merges, unk_id, fuse_unk, added_tokens,
              normalizer, pre_tokenizer, decoder, prefix_ids, suffix_ids, file, bos_id=None, eos_id=None,
              pad_id=None) -> dict:
    added = []
    for a in added_tokens:
        entry = {"id": a["id"], "content": a["content"]}
        for flag in ("special", "lstrip", "rstrip", "normalized", "single_word"):
            if a.get(flag):
                entry[flag] = True
        added.append(entry)
        # vocab[] holds the BPE model's tokens only; an id that is only an added token is null.
        if vocab[a["id"]] is not None and vocab[a["id"]] != a["content"]:
            raise ConvertError(f"added token {a['id']} {a['content']!r} clashes with vocabulary token "
                               f"{vocab[a['id']]!r}", file=file, key="added_tokens")
    added_ids = {a["id"] for a in added}
    for i, t in enumerate(vocab):
        if t is None and i not in added_ids:
            raise ConvertError(f"token id {i} has no token", file=file, key="model.vocab")
    if byte_fallback:
        index = _vocab_index(vocab)
        missing = [f"<0x{b:02X}>" for b in range(256) if f"<0x{b:02X}>" not in index]
        if missing:
            raise ConvertError(f"byte_fallback is set but the vocabulary lacks {missing[0]} "
                               f"(and {len(missing) - 1} more byte tokens)", file=file, key="model.byte_fallback")
    tok: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "model": "bpe",
        "vocab": vocab,
    }
    if scores is not None:
        tok["scores"] = scores
    else:
        tok["merges"] = merges
    tok.update({
        "byte_fallback": byte_fallback, "ignore_merges": ignore_merges,
        "unk_id": unk_id, "fuse_unk": fuse_unk,
        "added_tokens": added,
        "normalizer": normalizer, "pre_tokenizer": pre_tokenizer, "decoder": decoder,
        "prefix_ids": list(prefix_ids), "suffix_ids": list(suffix_ids),
        "bos_id": bos_id, "eos_id": eos_id, "pad_id": pad_id,
    })
    return tok


def _vocab_index(vocab: list[str | None]) -> dict[str, int]:
    return {t: i for i, t in enumerate(vocab) if t is not None}


# GGUF token types (gguf.TokenType / llama.cpp llama_token_type)
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6

# tokenizer.ggml.pre -> the pre-tokenizer of the Hugging Face tokenizer.json it was made from
# (llama.cpp's convert_hf_to_gguf.py names them by hashing that tokenizer's output; the regexes
# are llama.cpp's llm_tokenizer_bpe table in llama-vocab.cpp).
_LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _byte_level(use_regex: bool) -> dict:
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": use_regex}


def _split(regex: str) -> dict:
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


_GGUF_PRE: dict[str, dict] = {
    "gpt-2": _byte_level(True),
    "gpt2": _byte_level(True),
    "llama-bpe": {"type": "Sequence", "pretokenizers": [_split(_LLAMA3_REGEX), _byte_level(False)]},
    "llama3": {"type": "Sequence", "pretokenizers": [_split(_LLAMA3_REGEX), _byte_level(False)]},
    "qwen2": {"type": "Sequence", "pretokenizers": [_split(_QWEN2_REGEX), _byte_level(False)]},
    "smollm": {"type": "Sequence", "pretokenizers": [_split(r"\p{N}"), _byte_level(True)]},
    "starcoder": {"type": "Sequence", "pretokenizers": [_split(r"\p{N}"), _byte_level(True)]},
}


def _field(reader, key: str, default: Any = None) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return default
    if len(f.types) == 2 and f.types[0] == _gguf_types().ARRAY:
        # Bulk read: GGUFReaderField.contents() converts element by element (~30 s for 262k tokens).
        items = [f.parts[i] for i in f.data]
        if f.types[1] == _gguf_types().STRING:
            return [bytes(x).decode("utf-8", errors="replace") for x in items]
        import numpy as np

        return np.concatenate(items).tolist() if items else []
    return f.contents()


def _gguf_types():
    import gguf

    return gguf.GGUFValueType


def from_gguf(reader, *, file: str | None = None) -> dict:
    """The manifest's tokenizer from a GGUF file's ``tokenizer.ggml.*`` metadata.

    ``reader`` is a ``gguf.GGUFReader``. "gpt2" vocabularies are byte-level BPE with merges;
    "llama" vocabularies are SentencePiece BPE, encoded by score with byte fallback.
    """
    if file is None:  # GGUFReader memory-maps its file: the map knows the name
        file = getattr(getattr(reader, "data", None), "filename", None) or getattr(reader, "path", None)
        file = str(file) if file else None
    kind = _field(reader, "tokenizer.ggml.model")
    if kind is None:
        raise ConvertError("no tokenizer.ggml.model: this GGUF file carries no tokenizer", file=file,
                           key="tokenizer.ggml.model")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    if not tokens:
        raise ConvertError("no tokenizer.ggml.tokens", file=file, key="tokenizer.ggml.tokens")
    n = len(tokens)
    types = _field(reader, "tokenizer.ggml.token_type") or [_NORMAL] * n
    if len(types) != n:
        raise ConvertError(f"{len(types)} token types for {n} tokens", file=file, key="tokenizer.ggml.token_type")
    vocab: list[str | None] = list(tokens)

    def special_id(name: str) -> int | None:
        v = _field(reader, f"tokenizer.ggml.{name}_token_id")
        if v is not None and not 0 <= int(v) < n:
            raise ConvertError(f"token id {v} out of range (vocabulary of {n})", file=file,
                               key=f"tokenizer.ggml.{name}_token_id")
        return None if v is None else int(v)

    bos, eos, unk, pad = (special_id(x) for x in ("bos", "eos", "unknown", "padding"))
    add_bos = bool(_field(reader, "tokenizer.ggml.add_bos_token", kind == "llama"))
    add_eos = bool(_field(reader, "tokenizer.ggml.add_eos_token", False))
    # Control tokens are special; user-defined ones are matched whole but are ordinary text.
    added = [{"id": i, "content": t, "special": types[i] == _CONTROL}
             for i, t in enumerate(tokens) if types[i] in (_CONTROL, _USER_DEFINED)]

    if kind == "gpt2":
        pre_name = _field(reader, "tokenizer.ggml.pre", "default")
        if pre_name not in _GGUF_PRE:
            raise ConvertError(f"unknown pre-tokenizer {pre_name!r} (known: {', '.join(sorted(_GGUF_PRE))})",
                               file=file, key="tokenizer.ggml.pre")
        index = _vocab_index(vocab)
        merges: list[int] = []
        for k, m in enumerate(_field(reader, "tokenizer.ggml.merges") or []):
            a, _, b = m.partition(" ")
            if a not in index or b not in index or a + b not in index:
                raise ConvertError(f"merge {k} ({m!r}) uses a token missing from the vocabulary", file=file,
                                   key="tokenizer.ggml.merges")
            merges += (index[a], index[b])
        pre = json.loads(json.dumps(_GGUF_PRE[pre_name]))
        for p in _iter_parts(pre, "pretokenizers"):
            if p["type"] == "Split":
                p["pattern"]["Regex"] = _js_regex(p["pattern"]["Regex"], where="tokenizer.ggml.pre")
        return _assemble(
            vocab=vocab, merges=merges, scores=None, byte_fallback=False, ignore_merges=pre_name in ("llama-bpe", "llama3"),
            unk_id=None, fuse_unk=False, added_tokens=added, file=file,
            normalizer=None, pre_tokenizer=pre, decoder=_decoder({"type": "ByteLevel"}, "decoder"),
            prefix_ids=[bos] if add_bos and bos is not None else [],
            suffix_ids=[eos] if add_eos and eos is not None else [],
            bos_id=bos, eos_id=eos, pad_id=pad)
    if kind == "llama":
        scores = _field(reader, "tokenizer.ggml.scores")
        if scores is None or len(scores) != n:
            raise ConvertError("a SentencePiece ('llama') vocabulary needs one score per token", file=file,
                               key="tokenizer.ggml.scores")
        return _spm(vocab=vocab, scores=scores, types=types, unk=unk, bos=bos, eos=eos, pad=pad,
                    add_bos=add_bos, add_eos=add_eos,
                    add_space_prefix=bool(_field(reader, "tokenizer.ggml.add_space_prefix", True)),
                    remove_extra_whitespaces=bool(_field(reader, "tokenizer.ggml.remove_extra_whitespaces", False)),
                    file=file)
    raise ConvertError(f"unsupported tokenizer model {kind!r} (supported: 'gpt2' byte-level BPE, "
                       "'llama' SentencePiece BPE)", file=file, key="tokenizer.ggml.model")


def _iter_parts(node: dict | None, key: str):
    if node is None:
        return
    if node.get("type") == "Sequence":
        for x in node[key]:
            yield from _iter_parts(x, key)
    else:
        yield node


def _spm(*, vocab, scores, types, unk, bos, eos, pad, add_bos, add_eos, add_space_prefix,
         remove_extra_whitespaces, file) -> dict:
    """A SentencePiece BPE vocabulary (GGUF "llama" or a .model file) as manifest data."""
    n = len(vocab)
    # Only normal pieces are ever the result of a merge (sentencepiece keeps control, byte and
    # unknown pieces out of its piece table; user-defined ones are matched whole beforehand).
    mscores = [float(scores[i]) if types[i] == _NORMAL else None for i in range(n)]
    added = [{"id": i, "content": vocab[i], "special": types[i] == _CONTROL}
             for i in range(n) if types[i] in (_CONTROL, _USER_DEFINED, _UNKNOWN)]
    norms: list[dict] = []
    if remove_extra_whitespaces:
        norms += [{"type": "Strip", "strip_left": True, "strip_right": True},
                  {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]
    # sentencepiece adds its dummy prefix even before a leading space, and llama.cpp adds it to
    # every text piece after a special token: that is tokenizers' Prepend normalizer, which runs
    # on each piece between added tokens (Metaspace's prepend_scheme skips text that starts
    # with a space).
    if add_space_prefix:
        norms.append({"type": "Prepend", "prepend": "\u2581"})
    norms.append({"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"})
    pre = None
    decoders = [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"}]
    if add_space_prefix:
        decoders.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    has_bytes = any(t == _BYTE for t in types)
    return _assemble(
        vocab=vocab, merges=None, scores=mscores, byte_fallback=has_bytes, ignore_merges=False,
        unk_id=unk, fuse_unk=True, added_tokens=added, file=file,
        normalizer=({"type": "Sequence", "normalizers": norms} if len(norms) > 1 else norms[0]) if norms else None,
        pre_tokenizer=pre, decoder={"type": "Sequence", "decoders": decoders},
        prefix_ids=[bos] if add_bos and bos is not None else [],
        suffix_ids=[eos] if add_eos and eos is not None else [],
        bos_id=bos, eos_id=eos, pad_id=pad)


def from_sentencepiece(path: str | Path) -> dict:
    """The manifest's tokenizer from a SentencePiece BPE ``tokenizer.model`` (Llama 2, Mistral)."""
    from sentencepiece import sentencepiece_model_pb2 as pb  # only this source needs it

    path = Path(path)
    m = pb.ModelProto()
    try:
        m.ParseFromString(path.read_bytes())
    except OSError as e:
        raise ConvertError(f"cannot read: {e.strerror}", file=str(path)) from None
    except Exception:  # protobuf's DecodeError
        raise ConvertError("not a SentencePiece model file", file=str(path)) from None
    if m.trainer_spec.model_type != pb.TrainerSpec.BPE:
        raise ConvertError("only SentencePiece BPE models are supported (this is "
                           f"{pb.TrainerSpec.ModelType.Name(m.trainer_spec.model_type)})", file=str(path),
                           key="trainer_spec.model_type")
    ns = m.normalizer_spec
    if ns.precompiled_charsmap or ns.name not in ("identity", ""):
        raise ConvertError(f"unsupported SentencePiece normalizer {ns.name!r} (only 'identity')",
                           file=str(path), key="normalizer_spec.name")
    vocab = [p.piece for p in m.pieces]
    types = [int(p.type) for p in m.pieces]  # same numbering as GGUF token types
    ts = m.trainer_spec

    def sid(i: int) -> int | None:
        return i if 0 <= i < len(vocab) else None

    return _spm(vocab=vocab, scores=[p.score for p in m.pieces], types=types, unk=sid(ts.unk_id),
                bos=sid(ts.bos_id), eos=sid(ts.eos_id), pad=sid(ts.pad_id), add_bos=True, add_eos=False,
                add_space_prefix=ns.add_dummy_prefix, remove_extra_whitespaces=ns.remove_extra_whitespaces,
                file=str(path))


def gpt2_tokenizer_json(encoder_json: str | Path, vocab_bpe: str | Path) -> dict:
    """A ``tokenizer.json`` (as a dict) for OpenAI's GPT-2 ``encoder.json`` + ``vocab.bpe``."""
    vocab = _load_json(Path(encoder_json))
    lines = Path(vocab_bpe).read_text(encoding="utf-8").splitlines()
    merges = [ln for ln in lines[1:] if ln and not ln.startswith("#version")]
    eot = "<|endoftext|>"
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": vocab[eot], "content": eot, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": True, "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }


# --------------------------------------------------------------------------------------------
# Back to tokenizer.json, and encode/decode through the tokenizers library (tests, reference)
# --------------------------------------------------------------------------------------------

def _merges_from_scores(vocab: list[str | None], scores: list[float | None]) -> list[list[str]]:
    """Merges equivalent to SentencePiece's score-driven BPE: every split of a mergeable piece into
    two vocabulary tokens, ranked by the piece's score (highest first), then by id."""
    index = _vocab_index(vocab)
    order = sorted((i for i, s in enumerate(scores) if s is not None), key=lambda i: (-scores[i], i))
    merges = []
    for i in order:
        t = vocab[i]
        pairs = [(index[t[:k]], index[t[k:]], t[:k], t[k:]) for k in range(1, len(t))
                 if t[:k] in index and t[k:] in index]
        pairs.sort()
        merges += [[a, b] for _, _, a, b in pairs]
    return merges


def to_tokenizer_json(tok: dict) -> dict:
    """Rebuild a ``tokenizer.json`` (as a dict) that the ``tokenizers`` library loads."""
    vocab = tok["vocab"]
    if "merges" in tok:
        m = tok["merges"]
        merges = [[vocab[m[k]], vocab[m[k + 1]]] for k in range(0, len(m), 2)]
    else:
        merges = _merges_from_scores(vocab, tok["scores"])
    names = {a["id"]: a["content"] for a in tok["added_tokens"]}

    def name(i: int) -> str:
        return names.get(i) or vocab[i]

    specials = {name(i): {"id": name(i), "ids": [i], "tokens": [name(i)]}
                for i in {*tok["prefix_ids"], *tok["suffix_ids"]}}
    single = ([{"SpecialToken": {"id": name(i), "type_id": 0}} for i in tok["prefix_ids"]]
              + [{"Sequence": {"id": "A", "type_id": 0}}]
              + [{"SpecialToken": {"id": name(i), "type_id": 0}} for i in tok["suffix_ids"]])
    unk = tok.get("unk_id")
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": a["id"], "content": a["content"], "single_word": bool(a.get("single_word")),
                          "lstrip": bool(a.get("lstrip")), "rstrip": bool(a.get("rstrip")),
                          "normalized": bool(a.get("normalized")), "special": bool(a.get("special"))}
                         for a in tok["added_tokens"]],
        "normalizer": tok["normalizer"],
        "pre_tokenizer": tok["pre_tokenizer"],
        "post_processor": {"type": "TemplateProcessing", "single": single, "pair": single,
                           "special_tokens": specials},
        "decoder": tok["decoder"],
        "model": {"type": "BPE", "dropout": None, "unk_token": name(unk) if unk is not None else None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": tok["fuse_unk"], "byte_fallback": tok["byte_fallback"],
                  "ignore_merges": tok["ignore_merges"],
                  "vocab": _vocab_index(vocab), "merges": merges},
    }


_CACHE: dict[int, tuple[dict, Any]] = {}


def _hf(tok: dict):
    hit = _CACHE.get(id(tok))
    if hit is None or hit[0] is not tok:
        from tokenizers import Tokenizer

        if len(_CACHE) > 8:
            _CACHE.clear()
        hit = _CACHE[id(tok)] = (tok, Tokenizer.from_str(json.dumps(to_tokenizer_json(tok))))
    return hit[1]


def encode(tok: dict, text: str, *, add_special: bool = False) -> list[int]:
    """Token ids of ``text`` under manifest tokenizer data, via the ``tokenizers`` library."""
    return _hf(tok).encode(text, add_special_tokens=add_special).ids


def decode(tok: dict, ids: list[int], *, skip_special: bool = False) -> str:
    return _hf(tok).decode(ids, skip_special_tokens=skip_special)
