// The engine's request loop without a GPU: a scripted graph (each forward
// returns logits whose argmax is the next scripted token) and a toy tokenizer.
// Checks EOS, stop strings across tokens, held-back text, max tokens, the
// context window, KV-cache reuse (which positions are fed) and OpenAI chunks.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Engine } from "../../runtime/engine.js";

const VOCAB = ["<eos>", "a", "b", "<", "|", "end", ">", " ", "c"];
const EOS = 0;

/** @param {number[]} script  the tokens the model "wants" to produce, in order */
function fakeEngine(script, { contextLength = 64 } = {}) {
  const calls = [];
  let next = 0;
  const graph = {
    async forward(/** @type {Int32Array} */ ids, /** @type {number} */ start) {
      calls.push({ ids: Array.from(ids), start });
      const logits = new Float32Array(VOCAB.length);
      logits[script[Math.min(next++, script.length - 1)]] = 10;
      return logits;
    },
    // Greedy on the "device": the argmax of the same scripted row.
    async forwardGreedy(/** @type {Int32Array} */ ids, /** @type {number} */ start) {
      const logits = await graph.forward(ids, start);
      return logits.indexOf(Math.max(...logits));
    },
    // Top-k on the "device": the k best of the same scripted row, descending.
    async forwardTopK(/** @type {Int32Array} */ ids, /** @type {number} */ start, /** @type {number} */ k) {
      const logits = await graph.forward(ids, start);
      const order = [...logits.keys()].sort((a, b) => logits[b] - logits[a] || a - b).slice(0, k);
      return { ids: Int32Array.from(order), logits: Float32Array.from(order, (i) => logits[i]) };
    },
    destroy() {},
    kvCacheBytes: 0,
  };
  // A backend of the interface in runtime/backend.js, without a GPU.
  const model = { forward: graph.forward, sampleGreedy: graph.forwardGreedy, sampleTopK: graph.forwardTopK,
    maxTopK: VOCAB.length, kvCacheBytes: 0, destroy() {} };
  const tokenizer = {
    encode: (/** @type {string} */ text) => [...text].map((ch) => VOCAB.indexOf(ch)),
    decode: (/** @type {number[]} */ ids, opts = {}) =>
      ids.filter((i) => !(opts.skipSpecial && i === EOS)).map((i) => VOCAB[i]).join(""),
    eosId: EOS,
  };
  const manifest = { name: "fake", config: { vocab_size: VOCAB.length, max_position_embeddings: 64 },
    generation: { eos_token_ids: [EOS] } };
  const backend = { name: "scripted", lost: new Promise(() => {}), destroy() {} };
  const engine = new Engine({ manifest, backend: /** @type {any} */ (backend), model: /** @type {any} */ (model),
    tokenizer, chat: null, contextLength, stats: { weightsBytes: 0, kvCacheBytes: 0, splitTensors: {} } });
  return { engine, calls };
}

/** @param {AsyncGenerator<any, any>} gen */
async function drain(gen) {
  const steps = [];
  let r;
  while (!(r = await gen.next()).done) steps.push(r.value);
  return { steps, result: r.value, text: steps.map((s) => s.text).join("") };
}

const greedy = { temperature: 0 };

test("EOS ends generation and is not emitted", async () => {
  const { engine } = fakeEngine([1, 2, EOS, 1]);
  const { result, text } = await drain(engine.generate({ promptIds: [1], sampling: greedy }));
  assert.equal(text, "ab");
  assert.deepEqual(result.tokenIds, [1, 2]);
  assert.equal(result.finishReason, "stop");
});

test("a stop string spanning tokens cuts the text before it", async () => {
  const { engine } = fakeEngine([1, 3, 4, 5, 4, 6, 2]);
  const { result, text } = await drain(engine.generate({ promptIds: [1], sampling: greedy, stop: ["<|end|>"] }));
  assert.equal(text, "a");
  assert.equal(result.finishReason, "stop");
});

test("text held back as a possible stop string is released at EOS", async () => {
  const { engine } = fakeEngine([1, 3, 4, EOS]);
  const { result, text } = await drain(engine.generate({ promptIds: [1], sampling: greedy, stop: ["<|end|>"] }));
  assert.equal(text, "a<|");
  assert.equal(result.finishReason, "stop");
});

test("max new tokens, and the context window clips generation", async () => {
  const a = fakeEngine([1]);
  const r1 = await drain(a.engine.generate({ promptIds: [1, 2], sampling: greedy, maxNewTokens: 3 }));
  assert.deepEqual([r1.result.completionTokens, r1.result.finishReason], [3, "length"]);
  const b = fakeEngine([1], { contextLength: 5 });
  const r2 = await drain(b.engine.generate({ promptIds: [1, 2], sampling: greedy, maxNewTokens: 10 }));
  assert.deepEqual([r2.result.completionTokens, r2.result.finishReason], [3, "length"]);
  await assert.rejects(() => drain(b.engine.generate({ promptIds: [1, 2, 1, 2, 1] })),
    { name: "ContextWindowExceededError" });
});

test("KV reuse feeds only the new suffix, and the last prompt token when all is cached", async () => {
  const { engine, calls } = fakeEngine([1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
  await drain(engine.generate({ promptIds: [1, 2, 8], sampling: greedy, maxNewTokens: 2 }));
  // Prefill [1,2,8] at 0, then the first sampled token at 3 (the second is never fed).
  assert.deepEqual(calls, [{ ids: [1, 2, 8], start: 0 }, { ids: [1], start: 3 }]);
  calls.length = 0;
  // The cache holds [1,2,8,1]: the reply's last token was sampled but never fed.
  const r = await drain(engine.generate({ promptIds: [1, 2, 8, 1, 1, 7], sampling: greedy, maxNewTokens: 1 }));
  assert.deepEqual(calls, [{ ids: [1, 7], start: 4 }]);
  assert.equal(r.result.cachedTokens, 4);
  calls.length = 0;
  await drain(engine.generate({ promptIds: [1, 2], sampling: greedy, maxNewTokens: 1 }));
  assert.deepEqual(calls, [{ ids: [2], start: 1 }]); // everything cached: recompute the last position
  calls.length = 0;
  await drain(engine.generate({ promptIds: [2, 2], sampling: greedy, maxNewTokens: 1 }));
  assert.deepEqual(calls, [{ ids: [2, 2], start: 0 }]); // nothing shared
});

test("an aborted request keeps the cache consistent", async () => {
  const { engine, calls } = fakeEngine([1, 2, 1, 2, 1, 2]);
  const ac = new AbortController();
  const gen = engine.generate({ promptIds: [1, 2], sampling: greedy, maxNewTokens: 10, signal: ac.signal });
  await gen.next();
  await gen.next();
  ac.abort();
  await assert.rejects(() => gen.next(), { name: "AbortError", message: "The request was aborted." });
  calls.length = 0;
  await drain(engine.generate({ promptIds: [1, 2, 1, 2, 5], sampling: greedy, maxNewTokens: 1 }));
  // [1,2] prompt and the two fed tokens (1 at 2; 2 at 3) are cached: only position 4 is fed.
  assert.deepEqual(calls, [{ ids: [5], start: 4 }]);
});

test("requests run one at a time", async () => {
  const { engine } = fakeEngine([1, 2, 1, 2, 1, 2, 1, 2]);
  const order = [];
  const run = async (/** @type {string} */ name) => {
    for await (const s of engine.generate({ promptIds: [1], sampling: greedy, maxNewTokens: 2 })) order.push(name);
  };
  await Promise.all([run("A"), run("B")]);
  assert.deepEqual(order, ["A", "A", "B", "B"]);
});

test("unload makes later requests fail clearly", async () => {
  const { engine } = fakeEngine([1]);
  await engine.unload();
  await assert.rejects(() => drain(engine.generate({ promptIds: [1] })),
    { name: "EngineStateError", message: "The engine was unloaded: create a new one with createEngine()." });
});

test("errors cross a worker boundary as {name, message, data} and come back with their class", async () => {
  const errors = await import("../../runtime/errors.js");
  const e = new errors.ContextWindowExceededError("too long", { promptTokens: 9 });
  const json = JSON.parse(JSON.stringify(errors.errorToJSON(e)));
  assert.deepEqual(json, { name: "ContextWindowExceededError", message: "too long", data: { promptTokens: 9 } });
  const back = errors.errorFromJSON(json);
  assert.ok(back instanceof errors.ContextWindowExceededError && back instanceof errors.SitegenRuntimeError);
  assert.deepEqual([back.name, back.message, /** @type {any} */ (back).data], [json.name, json.message, json.data]);
  const abort = errors.errorFromJSON(errors.errorToJSON(new errors.AbortError()));
  assert.ok(abort instanceof errors.AbortError && abort.name === "AbortError");
  const plain = errors.errorFromJSON({ name: "TypeError", message: "x", data: {} });
  assert.deepEqual([plain.name, plain.message], ["TypeError", "x"]);
});
