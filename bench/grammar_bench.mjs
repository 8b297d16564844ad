// Cost of constrained output's token masks (issue 17, item 3), per generated token.
//
//   node bench/grammar_bench.mjs --vocab VOCAB.json [--vocab ...] [--repeat 3] [--json]
//       mask time per token along real documents tokenized by the real tokenizer (no model):
//       warm (the engine's case: masks cached by grammar state) and cold (cache cleared every
//       step: every mask computed by a trie walk), plus the one-off vocabulary index.
//   node bench/grammar_bench.mjs --model DIR [--tokens 64] [--backend webgpu|wasm]
//       a whole model (Node + WebGPU: the GPU machine): decode ms/token of the same greedy request
//       with and without response_format, and the mask's share of a step. DIR needs its real
//       tokenizer for the mask to cost what it costs: a random-weight model from
//       `bench/random_model.py CONFIG OUT --tokenizer VOCAB.json` has one. Each constrained reply
//       that stops must parse as JSON (else this exits 1: the mask did not hold).
//
// VOCAB.json: a converted model's manifest.json, or a manifest `tokenizer` object; write the
// SmolLM2 (49k) and Llama 3 (128k) ones with `python bench/grammar_vocab.py OUT_DIR`.
import fs from "node:fs";
import os from "node:os";
import { createTokenizer } from "../runtime/tokenizer/index.js";
import { compileSchema, GrammarMatcher, TokenIndex } from "../runtime/grammar/index.js";

const args = process.argv.slice(2);
/** @param {string} name */
const opt = (name) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined; };
const all = (/** @type {string} */ name) => args.flatMap((a, i) => (a === name ? [args[i + 1]] : []));
const json = args.includes("--json");
const repeat = Number(opt("--repeat") ?? 3);

// Schemas and documents like the apps': free text in a list (the birthday card), a nested
// record, and a table of numbers.
const CASES = [
  {
    name: "birthday drafts (free text)",
    schema: { type: "object", required: ["drafts"], properties: { drafts: { type: "array", minItems: 3, maxItems: 3,
      items: { type: "object", required: ["message"], properties: { message: { type: "string", maxLength: 400 } } } } } },
    doc: { drafts: [
      { message: "Happy birthday, Grandma Rose! May your garden bloom all year and your paintings fill every wall with colour." },
      { message: "Dear Rose, another year of sunshine, roses and laughter. Thank you for every story and every cup of tea." },
      { message: "Wishing you the happiest of birthdays! Your kindness grows like your garden: wild, bright and everywhere." },
    ] },
  },
  {
    name: "nested record (enums, numbers, optional)",
    schema: { type: "object", required: ["person", "tags"], properties: {
      person: { type: "object", required: ["name", "age"], properties: { name: { type: "string" },
        age: { type: "integer", minimum: 0, maximum: 130 }, email: { type: "string", maxLength: 80 } } },
      mood: { enum: ["happy", "sad", "neutral"] }, score: { type: "number", minimum: 0, maximum: 1 },
      tags: { type: "array", items: { type: "string", maxLength: 20 }, maxItems: 5 } } },
    doc: { person: { name: "Ada Lovelace", age: 36, email: "ada@example.org" }, mood: "happy", score: 0.875,
      tags: ["math", "poetry", "engines"] },
  },
  {
    name: "table rows (json_object)",
    schema: { type: "object" },
    doc: { rows: [{ item: "Tea", qty: 2, price: 3.5 }, { item: "Scones", qty: 6, price: 1.25 }, { item: "Jam", qty: 1, price: 4 }] },
  },
];

/** @param {number[]} xs @param {number} q */
const quantile = (xs, q) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(q * s.length))]; };
const mean = (/** @type {number[]} */ xs) => xs.reduce((a, b) => a + b, 0) / xs.length;

/** @param {string} path */
function loadTokenizer(path) {
  const data = JSON.parse(fs.readFileSync(path, "utf8"));
  return createTokenizer(data.tokenizer ?? data);
}

function vocabBench(/** @type {string} */ path) {
  const tok = loadTokenizer(path);
  const t0 = performance.now();
  const index = new TokenIndex(Array.from({ length: tok.vocabSize }, (_, id) => tok.tokenBytes(id)),
    { eos: [tok.eosId ?? 0] });
  const indexMs = performance.now() - t0;
  const rows = [];
  for (const c of CASES) {
    const grammar = compileSchema(c.schema);
    const ids = tok.encode(JSON.stringify(c.doc), { addSpecial: false });
    for (const mode of ["warm", "cold"]) {
      /** @type {number[]} */
      const times = [];
      for (let r = 0; r < repeat; r++) {
        index.maskCache.clear();
        const m = new GrammarMatcher(grammar, index);
        for (const id of ids) {
          if (mode === "cold") index.maskCache.clear();
          const s = performance.now();
          const mask = m.mask();
          times.push(performance.now() - s);
          if (!(mask[id >>> 5] & (1 << (id & 31)))) throw new Error(`${c.name}: token ${id} masked`);
          m.accept(id);
        }
      }
      rows.push({ case: c.name, mode, tokens: ids.length, meanMs: mean(times), p50Ms: quantile(times, 0.5),
        p95Ms: quantile(times, 0.95), maxMs: Math.max(...times) });
    }
  }
  return { vocab: path, vocabSize: tok.vocabSize, indexMs, rows };
}

// The model mode's second schema: a random-weight model's greedy reply to the birthday drafts
// repeats one token inside the first string, where the mask is cached and costs microseconds;
// here every token is structure, an enum or a bounded number (a mask at every state), up to the
// token limit (minItems keeps a random model from closing the array at once).
const RECORDS = {
  name: "records (enums, bounded integers)",
  schema: { type: "array", minItems: 50, maxItems: 100, items: { type: "object", required: ["kind", "n"], properties: {
    kind: { enum: ["tea", "scone", "jam", "cake"] }, n: { type: "integer", minimum: -50, maximum: 5000 } } } },
};

async function modelBench(/** @type {string} */ dir) {
  const { createEngine } = await import("../runtime/engine.js");
  const n = Number(opt("--tokens") ?? 64);
  const backend = /** @type {"webgpu" | "wasm" | undefined} */ (opt("--backend"));
  const e = await createEngine({ modelDir: dir, ...(backend ? { backend } : {}) });
  const messages = [{ role: "user", content: "Write three short birthday card messages for Rose, as JSON." }];
  /** @param {any} extra @param {boolean} constrained */
  const time = async (extra, constrained) => {
    const runs = [];
    for (let r = 0; r < repeat; r++) {
      e.resetCache();
      const reply = await e.chat.completions.create({ messages, max_tokens: n, temperature: 0, ...extra });
      const text = reply.choices[0].message.content ?? "";
      const finish = reply.choices[0].finish_reason;
      if (constrained && finish === "stop") JSON.parse(text);  // throws: the mask let invalid JSON through
      runs.push({ decodeMsPerToken: 1000 / reply.usage.timings.decode_tokens_per_s, tokens: reply.usage.completion_tokens,
        finish, text: text.slice(0, 160) });
    }
    return { decodeMsPerToken: mean(runs.map((x) => x.decodeMsPerToken)), runs };
  };
  const plain = await time({}, false);
  const schemas = [];
  for (const c of [CASES[0], RECORDS]) {
    const r = await time({ response_format: { type: "json_schema", json_schema: { name: "out", schema: c.schema } } }, true);
    schemas.push({ case: c.name, ...r, overheadMsPerToken: r.decodeMsPerToken - plain.decodeMsPerToken,
      overheadFraction: (r.decodeMsPerToken - plain.decodeMsPerToken) / plain.decodeMsPerToken });
  }
  await e.unload();
  return { model: dir, vocabSize: e.tokenizer?.vocabSize, stats: e.stats, tokens: n, plain, json_schema: schemas };
}

const machine = { cpu: os.cpus()[0]?.model, cores: os.cpus().length, node: process.version, platform: process.platform };
const results = { date: new Date().toISOString(), machine, vocab: all("--vocab").map(vocabBench),
  model: opt("--model") ? await modelBench(/** @type {string} */ (opt("--model"))) : null };
if (json) {
  console.log(JSON.stringify(results, null, 2));
} else {
  console.log(`${results.date}  ${machine.cpu} x${machine.cores}  node ${machine.node}`);
  for (const v of results.vocab) {
    console.log(`\n${v.vocab}: ${v.vocabSize} ids, index built in ${v.indexMs.toFixed(0)} ms (once per tokenizer)`);
    console.log("case | mode | tokens | mean ms | p50 | p95 | max");
    for (const r of v.rows) {
      console.log(`${r.case} | ${r.mode} | ${r.tokens} | ${r.meanMs.toFixed(3)} | ${r.p50Ms.toFixed(3)} | ${r.p95Ms.toFixed(3)} | ${r.maxMs.toFixed(2)}`);
    }
  }
  if (results.model) {
    const m = results.model;
    const show = (/** @type {string} */ label, /** @type {any[]} */ runs) => {
      for (const r of runs) console.log(`  ${label}: ${r.tokens} tokens, ${r.finish}, ${r.decodeMsPerToken.toFixed(2)} ms/token: ${JSON.stringify(r.text)}`);
    };
    console.log(`\n${m.model} (${m.stats.backend}, ${m.stats.compute}, ${m.vocabSize} ids), greedy, ${m.tokens} tokens at most: ` +
      `decode ${m.plain.decodeMsPerToken.toFixed(2)} ms/token plain`);
    show("plain", m.plain.runs);
    for (const c of m.json_schema) {
      console.log(`json_schema ${c.case}: ${c.decodeMsPerToken.toFixed(2)} ms/token, ${c.overheadMsPerToken >= 0 ? "+" : ""}` +
        `${c.overheadMsPerToken.toFixed(2)} ms (${(100 * c.overheadFraction).toFixed(1)} %)`);
      show("json_schema", c.runs);
    }
  }
}
