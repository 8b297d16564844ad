// The JSON grammar and its token masks (runtime/grammar/), without a model: the trie-walk mask
// equals testing every token from scratch, over a vocabulary that holds every byte plus tokens
// spanning several symbols; walks over the masks end in JSON that JSON.parse reads and that
// keeps to the schema; the regex dialect and the number bounds; the errors name the keyword.
// (The outside oracle, Python's jsonschema, is in tests/test_structured.py.)
import { test } from "node:test";
import assert from "node:assert/strict";
import { compileSchema, GrammarMatcher, TokenIndex, responseFormatGrammar } from "../../runtime/grammar/index.js";
import { compileRegex } from "../../runtime/grammar/regex.js";
import { createRng } from "../../runtime/sampling.js";

const enc = new TextEncoder();
const dec = new TextDecoder();
const MULTI = ['{"', '"}', '",', '","', '":', '":"', '"]', '"],', ',"', '["', '{}', '[]', ' "', '": ', 'true', 'null',
  'name', 'age', 'tags', '12', '00', '0.', '.5', '-1', 'é', '\\n', '\\u00', '🙂'];
/** Every single byte (as real byte-level vocabularies have), then multi-symbol tokens, then EOS. */
function vocab() {
  const bytes = [];
  for (let b = 0; b < 256; b++) bytes.push(Uint8Array.of(b));
  for (const t of MULTI) bytes.push(enc.encode(t));
  const eos = bytes.length;
  bytes.push(null);
  return { index: new TokenIndex(bytes, { eos: [eos] }), eos, bytes };
}
const bit = (/** @type {Uint32Array} */ m, /** @type {number} */ id) => (m[id >>> 5] & (1 << (id & 31))) !== 0;

const SCHEMA = {
  type: "object", required: ["name", "age"],
  properties: {
    name: { type: "string", maxLength: 6 }, age: { type: "integer", minimum: 0, maximum: 120 },
    tags: { type: "array", items: { enum: ["a", "bc"] }, maxItems: 2 }, ok: { type: ["boolean", "null"] },
    score: { type: "number", exclusiveMinimum: -1, maximum: 2.5 },
  },
};

/** @param {any} schema @param {any} v */
function conforms(schema, v) {
  const n = schema.properties;
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  if (!schema.required.every((/** @type {string} */ k) => k in v)) return false;
  if ([...v.name].length > 6 || !Number.isInteger(v.age) || v.age < 0 || v.age > 120) return false;
  if ("tags" in v && (!Array.isArray(v.tags) || v.tags.length > 2 || !v.tags.every((/** @type {string} */ t) => n.tags.items.enum.includes(t)))) return false;
  if ("ok" in v && !(typeof v.ok === "boolean" || v.ok === null)) return false;
  if ("score" in v && !(v.score > -1 && v.score <= 2.5)) return false;
  return Object.keys(v).every((k) => k in n);
}

test("the trie-walk mask equals testing every token from scratch, along random walks", () => {
  const { index, eos, bytes } = vocab();
  const grammar = compileSchema(SCHEMA);
  const rng = createRng(3);
  let finished = 0;
  for (let w = 0; w < 24; w++) {
    const m = new GrammarMatcher(grammar, index);
    const ids = [];
    for (let step = 0; step < 200; step++) {
      const mask = m.mask();
      const allowed = [];
      for (let id = 0; id < bytes.length; id++) {
        assert.equal(bit(mask, id), m.allows(id), `id ${id} after ${JSON.stringify(dec.decode(Uint8Array.from(ids.flatMap((i) => [...bytes[i]]))))}`);
        if (bit(mask, id)) allowed.push(id);
      }
      assert.ok(allowed.length > 0, "a live state always allows a token");
      // Prefer multi-symbol tokens and EOS now and then, so that walks end.
      const multi = allowed.filter((id) => id >= 256);
      const pool = multi.length && rng() < 0.5 ? multi : allowed;
      const id = pool[Math.floor(rng() * pool.length)];
      if (id === eos) break;
      ids.push(id);
      m.accept(id);
      if (m.done) break;
    }
    const text = dec.decode(Uint8Array.from(ids.flatMap((i) => [...bytes[i]])));
    if (m.complete) {
      finished++;
      assert.ok(conforms(SCHEMA, JSON.parse(text)), text);
    }
  }
  assert.ok(finished >= 12, `only ${finished} walks finished`);
});

test("tokens spanning several symbols are allowed exactly where they fit", () => {
  const { index } = vocab();
  const id = (/** @type {string} */ t) => 256 + MULTI.indexOf(t);
  const m = new GrammarMatcher(compileSchema(SCHEMA), index);
  assert.ok(bit(m.mask(), id('{"')) && !bit(m.mask(), id("{}")));
  m.acceptBytes(enc.encode('{"name":"ab'));
  const mask = m.mask();
  assert.ok(bit(mask, id('",')) && bit(mask, id('","')) && !bit(mask, id('"}')), "name must be followed by age");
  assert.ok(!bit(mask, id('":')) && !bit(mask, id('"]')));
  m.acceptBytes(enc.encode('","age":7'));
  const after7 = m.mask();
  assert.ok(!bit(after7, id("12")) && !bit(after7, id("00")), "712 and 700 are above the maximum 120");
  assert.ok(!bit(after7, id("0.")), "an integer has no fraction");
  assert.ok(bit(after7, "1".charCodeAt(0)) && bit(after7, id('",')) === false && bit(after7, ",".charCodeAt(0)));
});

test("number bounds are exact and never dead-end", () => {
  const check = (/** @type {any} */ schema, /** @type {string[]} */ yes, /** @type {string[]} */ no) => {
    const g = compileSchema(schema);
    const index = new TokenIndex([]);
    for (const s of yes) { const m = new GrammarMatcher(g, index); assert.ok(m.acceptBytes(enc.encode(s)) && m.complete, s); }
    for (const s of no) { const m = new GrammarMatcher(g, index); assert.ok(!(m.acceptBytes(enc.encode(s)) && m.complete), s); }
  };
  check({ type: "integer", minimum: -5, maximum: 120 }, ["-5", "0", "120", "99"], ["-6", "121", "1.0", "01", "-0.5"]);
  check({ type: "number", exclusiveMinimum: 0, exclusiveMaximum: 1 }, ["0.5", "0.000001", "0.999999"], ["0", "1", "1.0", "0.0"]);
  check({ type: "number", minimum: 0.3, maximum: 0.35 }, ["0.3", "0.35", "0.31"], ["0.29", "0.36", "0.351"]);
});

test("the regex dialect: full matches, and its refusals name the construct", () => {
  const re = compileRegex("^[A-Z]{2}-\\d{3}(x|yz)?$");
  const run = (/** @type {string} */ s) => {
    let set = re.start;
    for (const b of enc.encode(s)) { const n = re.step(set, b); if (!n) return false; set = n; }
    return re.accepts(set);
  };
  assert.ok(run("AB-123") && run("ZZ-000yz") && run("QX-907x"));
  assert.ok(!run("AB-12") && !run("ab-123") && !run("AB-1234") && !run("AB-123y"));
  assert.throws(() => compileRegex("(?=a)"), /lookaround/);
  assert.throws(() => compileRegex("a\\b"), /\\b/);
  assert.throws(() => compileRegex("(a"), /unbalanced/);
});

test("response_format shapes and errors", () => {
  assert.equal(responseFormatGrammar(undefined), null);
  assert.equal(responseFormatGrammar({ type: "text" }), null);
  assert.equal(responseFormatGrammar({ type: "json_object" })?.kind, "object");
  assert.throws(() => responseFormatGrammar({ type: "yaml" }), /response_format.type/);
  assert.throws(() => responseFormatGrammar({ type: "json_schema", json_schema: {} }), /json_schema/);
  assert.throws(() => compileSchema({ type: "object", properties: { a: { $ref: "#/x" } } }),
    /schema\.properties\.a\.\$ref: unsupported JSON Schema keyword '\$ref'/);
  assert.throws(() => compileSchema({ allOf: [] }), /'allOf'/);
});
