// Drives runtime/grammar/ for tests/test_structured.py (no model, no GPU): one JSON request on
// stdin, one JSON answer on stdout.
//
//   {op: "accept", schema, strings}               → [{ok, complete, dead}] per string (bytes fed one by one)
//   {op: "walk", tokenizer, schema, walks, seed, maxSteps, bias}
//                                                  → [{text, ids, finish}] random walks over the masks
//   {op: "check", tokenizer, schema, docs, brute}  → per doc: the ids of its tokenization, whether each was
//                                                    allowed by the mask, and (brute) mask == allows() for all ids
//   {op: "tokens", tokenizer, schema, prefix, tokens} → whether each token (text) is allowed after `prefix`
//   {op: "bench", tokenizer, schema, steps, seed}  → mask timings (bench/grammar_bench.mjs uses the same walk)
//
// `tokenizer`: path of a JSON file holding a manifest `tokenizer` object (sitegen/convert/tokenizer.py).
import fs from "node:fs";
import { createTokenizer } from "../runtime/tokenizer/index.js";
import { compileSchema, GrammarMatcher, TokenIndex } from "../runtime/grammar/index.js";
import { createRng } from "../runtime/sampling.js";

const req = JSON.parse(fs.readFileSync(0, "utf8"));
const enc = new TextEncoder();
const dec = new TextDecoder();

/** @param {Uint32Array} m @param {number} id */
const bit = (m, id) => (m[id >>> 5] & (1 << (id & 31))) !== 0;

function loadVocab() {
  const tok = createTokenizer(JSON.parse(fs.readFileSync(req.tokenizer, "utf8")));
  const eos = [tok.eosId ?? -1].filter((x) => x >= 0);
  return { tok, index: TokenIndex.fromTokenizer(tok, { eos }), eos };
}

const grammar = compileSchema(req.schema);
let out;
if (req.op === "accept") {
  const index = new TokenIndex([]);
  out = req.strings.map((/** @type {string} */ s) => {
    const m = new GrammarMatcher(grammar, index);
    const ok = m.acceptBytes(enc.encode(s));
    // A dead end: a live state that is not complete and that no byte continues.
    let dead = false;
    if (ok && !m.complete) {
      dead = true;
      for (let b = 0; b < 256 && dead; b++) {
        const probe = new GrammarMatcher(grammar, index);
        probe.stacks = m.stacks;
        if (probe.acceptBytes(Uint8Array.of(b))) dead = false;
      }
    }
    return { ok, complete: ok && m.complete, dead };
  });
} else if (req.op === "walk") {
  const { tok, index, eos } = loadVocab();
  const rng = createRng(req.seed ?? 0);
  // Structural tokens (any ASCII punctuation or digit) get `bias` of the draws, so walks end.
  const structural = new Uint8Array(index.rows);
  for (let id = 0; id < index.rows; id++) {
    const t = index.bytes[id];
    if (t && t.some((b) => b < 0x80 && !/[A-Za-z]/.test(String.fromCharCode(b)) && b !== 0x20)) structural[id] = 1;
  }
  out = [];
  for (let w = 0; w < req.walks; w++) {
    const m = new GrammarMatcher(grammar, index);
    /** @type {number[]} */
    const ids = [];
    let finish = "length";
    for (let step = 0; step < req.maxSteps; step++) {
      const mask = m.mask();
      const all = [], punct = [];
      for (let wd = 0; wd < mask.length; wd++) {
        let word = mask[wd];
        while (word) {
          const b = 31 - Math.clz32(word & -word);
          word &= word - 1;
          const id = wd * 32 + b;
          all.push(id);
          if (structural[id] || eos.includes(id)) punct.push(id);
        }
      }
      if (!all.length) { finish = "dead"; break; }
      const pool = punct.length && rng() < (req.bias ?? 0.5) ? punct : all;
      const id = pool[Math.floor(rng() * pool.length)];
      if (eos.includes(id)) { finish = "stop"; break; }
      ids.push(id);
      m.accept(id);
      if (m.done) { finish = "stop"; break; }
    }
    const bytes = ids.flatMap((id) => [.../** @type {Uint8Array} */ (index.bytes[id])]);
    out.push({ text: dec.decode(Uint8Array.from(bytes)), decoded: tok.decode(ids, { skipSpecial: true }), ids, finish });
  }
} else if (req.op === "check") {
  const { tok, index } = loadVocab();
  out = req.docs.map((/** @type {string} */ doc, /** @type {number} */ di) => {
    const ids = tok.encode(doc, { addSpecial: false });
    const m = new GrammarMatcher(grammar, index);
    const allowed = [];
    let bruteMismatch = 0;
    for (const id of ids) {
      const mask = m.mask();
      allowed.push(bit(mask, id) && m.allows(id));
      if (req.brute && di === 0) {
        for (let t = 0; t < index.rows; t++) if (bit(mask, t) !== m.allows(t)) bruteMismatch++;
      }
      if (!m.allows(id)) break;
      m.accept(id);
    }
    const eosOk = index.eos.length ? index.eos.every((e) => bit(m.mask(), e)) : true;
    return { ids, allowed, complete: m.complete, eosAllowedAtEnd: eosOk, bruteMismatch };
  });
} else if (req.op === "tokens") {
  const { tok, index } = loadVocab();
  const m = new GrammarMatcher(grammar, index);
  if (!m.acceptBytes(enc.encode(req.prefix))) throw new Error(`prefix ${req.prefix} rejected`);
  const mask = m.mask();
  out = req.tokens.map((/** @type {string} */ t) => {
    const ids = tok.encode(t, { addSpecial: false });
    if (ids.length !== 1) return { token: t, single: false };
    return { token: t, single: true, id: ids[0], allowed: bit(mask, ids[0]) };
  });
}
console.log(JSON.stringify(out));
