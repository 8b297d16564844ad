"""Random-weight converted models of real shapes, in seconds instead of minutes (benchmarks only).

Decode speed does not depend on the weights' values, but converting an 8.5 B-parameter model
honestly (build it with transformers, quantize every block) takes many minutes of the GPU
machine's limited time. This writes the same manifest and shards as ``sitegen convert`` (the
converter's own pipeline: tensor names, groups, layout, shards, sha256, requirements), from a
config alone: the checkpoint's tensor names and shapes come from transformers on the ``meta``
device (no memory), and the quantized tensors' codes are random bytes with a valid f16 scale
instead of the quantizer's output. Small f32 tensors (norms, biases) are encoded as usual.

    python bench/random_model.py CONFIG.json OUT [--quant q4] [--no-groups] [--tokenizer VOCAB.json]

CONFIG.json: a Hugging Face config (``architectures`` names the family). A small byte-level
tokenizer is written beside it (the speed benchmarks feed token ids), or, with ``--tokenizer``, a
real one: VOCAB.json is a manifest ``tokenizer`` object (or a converted model's manifest.json), such
as ``bench/grammar_vocab.py`` writes for SmolLM2 (49,152 ids) and Llama 3 (128,256). Constrained
output needs it: a token mask over a byte-level toy vocabulary is not the real vocabulary's cost
(bench/grammar_bench.mjs --model). Its chat template is ChatML or Llama 3's, after its special tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import sitegen.convert as conv  # noqa: E402
from sitegen.convert import quantize  # noqa: E402
from sitegen.convert.hf_folder import HFFolderModel  # noqa: E402
from sitegen.convert.sources import Resolved  # noqa: E402

_CHUNK = 8 << 20


class RandomEncoder(quantize.TensorEncoder):
    """q4/q8: random codes and a scale of 0.01 in the converter's plane layout; others: encoded as usual."""

    def blocks(self):
        if self.dtype not in ("q4", "q8"):
            yield from super().blocks()
            return
        rng = np.random.default_rng(abs(hash(self.shape)) % 2**32)
        q = self.planes[0]["nbytes"]
        for off in range(0, q, _CHUNK):
            yield rng.integers(0, 256, size=min(_CHUNK, q - off), dtype=np.uint8).tobytes()
        s_off, s_n = self.planes[1]["offset"], self.planes[1]["nbytes"]
        yield bytes(s_off - q)
        yield np.full(s_n // 2, 0.01, dtype=np.float16).tobytes()
        self.stats = quantize._ErrorStats()
        self.error = self.stats.result()


class RandomModel(HFFolderModel):
    """A checkpoint of zeros (a broadcast view: no memory) with the real model's names and shapes."""

    def __init__(self, folder: Path):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        self.folder = Path(folder)
        self.config_file = self.folder / "config.json"
        self.hf_config = json.loads(self.config_file.read_text())
        self.tokenizer_file = self.folder / "tokenizer.json"
        tc = self.folder / "tokenizer_config.json"  # the chat template (a chat request needs one)
        self.tokenizer_config = json.loads(tc.read_text()) if tc.exists() else {}
        self.name = self.folder.name
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(self.folder))
        self.shapes = {n: tuple(t.shape) for n, t in model.state_dict().items()}
        if self.hf_config.get("tie_word_embeddings"):
            self.shapes.pop("lm_head.weight", None)

    def names(self):
        return list(self.shapes)

    def shape(self, name):
        return self.shapes[name]

    def nbytes(self, name):
        return 2 * int(np.prod(self.shapes[name]))

    def read_f32(self, name):
        # Norm weights must not be all zero for a meaningful forward: ones (Gemma's are stored w - 1).
        return np.broadcast_to(np.float32(1.0 if len(self.shapes[name]) == 1 else 0.0), self.shapes[name])

    def file_of(self, name):
        return str(self.config_file)

    @property
    def weights_file(self):
        return str(self.config_file)

    def content_files(self):
        return [self.config_file]


class RandomResolved(Resolved):
    def open(self):
        return RandomModel(self.path)


# Chat templates for the real vocabularies (--tokenizer), chosen by the special tokens they hold.
_TEMPLATES = {
    "<|im_start|>": ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                     "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}", ["<|im_end|>"]),
    "<|start_header_id|>": ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
                            "\n\n{{ m['content'] }}<|eot_id|>{% endfor %}"
                            "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}",
                            ["<|eot_id|>"]),
}


def write_tokenizer(folder: Path, tok: dict, vocab_size: int) -> None:
    """tokenizer.json, tokenizer_config.json and generation_config.json of a real vocabulary (a
    manifest `tokenizer` object), rebuilt as the converter reads them from a Hugging Face folder."""
    from sitegen.convert import tokenizer as T

    if len(tok["vocab"]) > vocab_size:
        raise SystemExit(f"--tokenizer: {len(tok['vocab'])} ids, more than the config's vocab_size {vocab_size}")
    ids = {a["content"]: a["id"] for a in tok["added_tokens"]}
    marker = next((m for m in _TEMPLATES if m in ids), None)
    if marker is None:
        raise SystemExit(f"--tokenizer: no chat template for this vocabulary (it has none of {list(_TEMPLATES)})")
    template, ends = _TEMPLATES[marker]

    def name(i: int | None) -> str | None:
        return tok["vocab"][i] if i is not None else None

    (folder / "tokenizer.json").write_text(json.dumps(T.to_tokenizer_json(tok)), "utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": name(tok.get("bos_id")),
        "eos_token": name(tok.get("eos_id")), "add_bos_token": False, "chat_template": template}), "utf-8")
    eos = sorted({tok.get("eos_id"), *(ids[e] for e in ends if e in ids)} - {None})
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": tok.get("bos_id"),
                                                               "eos_token_id": eos}))


def build(config: dict, out: Path, *, quant: str = "q4", group_tensors: bool = True,
          tokenizer: dict | None = None) -> Path:
    """`tokenizer`: a manifest `tokenizer` object to use (default: a small byte-level one)."""
    from tiny_models import make_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / out.name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
        if tokenizer is None:
            make_tokenizer(folder)
        else:
            write_tokenizer(folder, tokenizer, config["vocab_size"])
        saved = conv.TensorEncoder
        conv.TensorEncoder = RandomEncoder  # the converter's writers construct it by this name
        try:
            return conv._convert_resolved(RandomResolved(str(folder), folder, "hf-folder", "local"), out, quant=quant,
                                          embed_quant=None, shard_size=conv.DEFAULT_SHARD_SIZE, chat_template=None,
                                          progress=None, group_tensors=group_tensors)
        finally:
            conv.TensorEncoder = saved


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("config", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--quant", default="q4")
    ap.add_argument("--no-groups", action="store_true")
    ap.add_argument("--tokenizer", type=Path, help="a real vocabulary: a manifest `tokenizer` object (or manifest.json)")
    a = ap.parse_args()
    tok = None
    if a.tokenizer:
        data = json.loads(a.tokenizer.read_text("utf-8"))
        tok = data.get("tokenizer", data)
    build(json.loads(a.config.read_text()), a.out, quant=a.quant, group_tensors=not a.no_groups, tokenizer=tok)
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
