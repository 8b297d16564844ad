// Unit tests of the browser tokenizer on a tiny hand-made byte-level vocabulary (every byte is
// a token, a few merges). The real vocabularies are checked against the tokenizers library by
// tests/test_tokenizer.py.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createTokenizer } from "../../runtime/tokenizer/index.js";
import { byteToChar } from "../../runtime/tokenizer/bytelevel.js";
import { ManifestError, InvalidRequestError } from "../../runtime/errors.js";

function tinyByteLevel() {
  const vocab = [...byteToChar()];
  const id = (/** @type {string} */ t) => vocab.indexOf(t);
  // merges: "h e" -> "he", "he l" -> "hel"
  const merges = [id("h"), id("e")];
  vocab.push("he");
  merges.push(vocab.length - 1, id("l"));
  vocab.push("hel");
  vocab.push(null); // an added-only token
  return {
    format: "sitegen-tokenizer", version: 1, model: "bpe", vocab, merges,
    byte_fallback: false, ignore_merges: false, unk_id: null, fuse_unk: false,
    added_tokens: [{ id: vocab.length - 1, content: "<|end|>", special: true }],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    prefix_ids: [], suffix_ids: [vocab.length - 1], bos_id: null, eos_id: vocab.length - 1, pad_id: null,
  };
}

test("merges apply and added tokens are cut out whole", () => {
  const tok = createTokenizer(tinyByteLevel());
  const ids = tok.encode("hello<|end|>");
  assert.deepEqual(ids.map((i) => tok.idToToken(i)), ["hel", "l", "o", "<|end|>"]);
  assert.deepEqual(tok.encode("hi", { addSpecial: true }).at(-1), tok.eosId);
  assert.deepEqual(tok.encode("<|end|>", { parseSpecial: false }).length, 7);
});

test("decode(encode(x)) == x, and skipSpecial drops special tokens", () => {
  const tok = createTokenizer(tinyByteLevel());
  for (const x of ["héllo wörld  \n\n", "繁體中文 日本語", "😀👍🏽 👨‍👩‍👧", "a<|end|>b"]) {
    assert.equal(tok.decode(tok.encode(x)), x);
  }
  assert.equal(tok.decode(tok.encode("a<|end|>b"), { skipSpecial: true }), "ab");
});

test("streaming decode never emits half a character (emoji and CJK split across tokens)", () => {
  const tok = createTokenizer(tinyByteLevel());
  const text = "雨😀b👨‍👩‍👧漢";
  const ids = tok.encode(text);
  assert.ok(ids.length > [...text].length, "characters must span several tokens here");
  const d = tok.decoder();
  const chunks = ids.map((id) => d.push(id));
  chunks.push(d.flush());
  assert.equal(chunks.join(""), text);
  for (const c of chunks) {
    assert.ok(!c.includes("\ufffd"), `chunk ${JSON.stringify(c)} holds a broken character`);
    assert.ok(c.isWellFormed(), "no lone surrogate");
  }
  assert.ok(chunks.filter((c) => c === "").length >= 3, "bytes of a split character are held back");
});

test("streaming decode flushes an incomplete character as U+FFFD at the end", () => {
  const tok = createTokenizer(tinyByteLevel());
  const ids = tok.encode("😀").slice(0, 2);
  const d = tok.decoder();
  assert.equal(ids.map((id) => d.push(id)).join(""), "");
  assert.equal(d.flush(), "\ufffd");
});

test("errors name the problem", () => {
  assert.throws(() => createTokenizer({ ...tinyByteLevel(), version: 2 }), (e) =>
    e instanceof ManifestError &&
    e.message === 'tokenizer: expected format "sitegen-tokenizer" version 1, got "sitegen-tokenizer" version 2; rebuild the site with this sitegen');
  const tok = createTokenizer(tinyByteLevel());
  assert.throws(() => tok.decode([1e9]), (e) =>
    e instanceof InvalidRequestError && e.message === `tokenizer: token id 1000000000 is out of range (vocabulary of ${tok.vocabSize})`);
  assert.throws(() => createTokenizer({ ...tinyByteLevel(), pre_tokenizer: { type: "Split", pattern: { Regex: "(?i:a)" }, behavior: "Isolated", invert: false } }),
    (e) => e instanceof ManifestError && e.message.startsWith('tokenizer: regex "(?i:a)" does not compile'));
});
