"""Command line of the numpy reference (issue 3, item 6).

    python -m sitegen.reference logits --model OUT --tokens 1,2,3
        → {"logits": [[...], ...]} (one row per position, all positions)
    python -m sitegen.reference generate --model OUT --prompt TEXT --max-new-tokens N
        → {"prompt_ids": [...], "ids": [...], "text": "..."} (greedy; stops at an eos id)

The prompt is encoded and the output decoded with the manifest's own tokenizer data
(``sitegen.convert.tokenizer.encode``/``decode``), adding the tokenizer's special prefix/suffix
(e.g. Llama's ``<s>``) as ``tokenizers`` would. Errors print ``error: ...`` and exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sitegen.errors import SitegenError

__all__ = ["main"]


class _UsageError(SitegenError):
    """A bad command-line value (reported like every other SitegenError)."""


def _parse_tokens(text: str, vocab_size: int) -> list[int]:
    try:
        ids = [int(t) for t in text.replace(" ", "").split(",") if t != ""]
    except ValueError:
        raise _UsageError(f"expected comma-separated integers, got {text!r}", key="--tokens") from None
    if not ids:
        raise _UsageError("needs at least one token id", key="--tokens")
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise _UsageError(f"token id(s) {bad} outside the vocabulary 0..{vocab_size - 1}", key="--tokens")
    return ids


def _cmd_logits(args: argparse.Namespace) -> None:
    from sitegen.reference.model import load

    model = load(args.model)
    tokens = _parse_tokens(args.tokens, model.config["vocab_size"])
    logits = model.logits(tokens)  # [T, V]
    json.dump({"logits": logits.tolist()}, sys.stdout)
    sys.stdout.write("\n")


def _cmd_generate(args: argparse.Namespace) -> None:
    from sitegen.convert import tokenizer as tk
    from sitegen.convert.manifest import read_manifest
    from sitegen.reference.model import load

    if args.max_new_tokens < 1:
        raise _UsageError(f"must be at least 1, got {args.max_new_tokens}", key="--max-new-tokens")
    manifest = read_manifest(Path(args.model))
    tok = manifest.get("tokenizer")
    if not tok:
        raise _UsageError("the converted model has no tokenizer data; use `logits --tokens` instead",
                          file=str(Path(args.model) / "manifest.json"), key="tokenizer")
    prompt_ids = tk.encode(tok, args.prompt, add_special=True)
    if not prompt_ids:
        raise _UsageError("the prompt encodes to no tokens", key="--prompt")
    model = load(args.model)
    gen = manifest.get("generation") or {}
    eos = set(gen.get("eos_token_ids") or []) | ({tok["eos_id"]} if tok.get("eos_id") is not None else set())
    ids = model.generate(prompt_ids, args.max_new_tokens, eos_ids=eos)
    json.dump({"prompt_ids": prompt_ids, "ids": ids, "text": tk.decode(tok, ids, skip_special=True)},
              sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sitegen.reference",
                                description="numpy reference forward pass over a converted model")
    sub = p.add_subparsers(dest="command", required=True)
    lg = sub.add_parser("logits", help="print the logits of every position as JSON")
    lg.add_argument("--model", required=True, help="converted model folder (manifest.json + shards)")
    lg.add_argument("--tokens", required=True, help="comma-separated token ids, e.g. 1,2,3")
    lg.set_defaults(run=_cmd_logits)
    ge = sub.add_parser("generate", help="greedy generation from a text prompt")
    ge.add_argument("--model", required=True, help="converted model folder (manifest.json + shards)")
    ge.add_argument("--prompt", required=True, help="prompt text (encoded with the model's tokenizer)")
    ge.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate (default 32)")
    ge.set_defaults(run=_cmd_generate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        args.run(args)
    except (SitegenError, ValueError) as e:  # ValueError: e.g. a position beyond GPT-2's table
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
