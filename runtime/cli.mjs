#!/usr/bin/env node
// The engine's command line under Node (issue 4, item 7), for tests and benchmarks:
//
//   node runtime/cli.mjs logits   --model DIR --tokens 1,2,3            → {"logits": [[...], ...]} (every position)
//   node runtime/cli.mjs generate --model DIR --prompt TEXT [--max-new-tokens N] [--temperature 0] [--json]
//   node runtime/cli.mjs tokenize --model DIR --text TEXT | --chat FILE.json
//   node runtime/cli.mjs bench    --model DIR [--prompt-tokens 512] [--decode-tokens 128] --json
//
// WebGPU comes from npm `webgpu` (Dawn). Without a GPU, run on SwiftShader:
//   VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json LD_LIBRARY_PATH=/usr/lib/chromium node runtime/cli.mjs ...
// Errors print `error: <message>` and exit with status 1 (2 for usage errors), never a stack trace.

import { parseArgs } from "node:util";
import { readFile } from "node:fs/promises";
import { createEngine } from "./engine.js";
import { readManifestFile } from "./node/files.js";
import { createRng } from "./sampling.js";

const USAGE = `usage: node runtime/cli.mjs COMMAND --model DIR [options]

commands:
  logits    --tokens 1,2,3                    logits of every position, as JSON
  generate  --prompt TEXT | --tokens IDS | --chat FILE.json   stream a continuation
            [--max-new-tokens N]
            [--temperature T] [--top-k K] [--top-p P] [--min-p P] [--repetition-penalty R]
            [--seed S] [--stop STR]... [--json] (token ids, text and timing as JSON)
  tokenize  --text TEXT | --chat FILE.json    token ids as JSON (FILE: [{role, content}, ...])
  bench     [--prompt-tokens 512] [--decode-tokens 128] [--json]
            [--profile] (per-kernel GPU time of a decode step and a prefill chunk, from timestamp queries)

common: --model DIR (a folder written by \`sitegen convert\`), --context-length N,
        --backend webgpu|wasm|auto (default: webgpu when an adapter is found, else wasm; auto: WebGPU
          unless it cannot run the model, then the CPU),
        --threads N (wasm: threads of the CPU backend, default 1),
        --no-warmup (generate/bench: skip compiling shaders before timing; timings then include it)`;

class UsageError extends Error {}

const OPTIONS = /** @type {const} */ ({
  model: { type: "string" }, tokens: { type: "string" }, prompt: { type: "string" }, text: { type: "string" },
  chat: { type: "string" }, "max-new-tokens": { type: "string" }, temperature: { type: "string" },
  "top-k": { type: "string" }, "top-p": { type: "string" }, "min-p": { type: "string" },
  "repetition-penalty": { type: "string" }, seed: { type: "string" }, stop: { type: "string", multiple: true },
  json: { type: "boolean" }, "prompt-tokens": { type: "string" }, "decode-tokens": { type: "string" },
  "context-length": { type: "string" }, backend: { type: "string" }, threads: { type: "string" },
  "no-warmup": { type: "boolean" }, profile: { type: "boolean" }, help: { type: "boolean", short: "h" },
});

/**
 * @param {Record<string, any>} v @param {string} flag
 * @param {{ integer?: boolean, min?: number }} [o]
 * @returns {number | undefined}
 */
function num(v, flag, { integer = false, min = -Infinity } = {}) {
  const raw = v[flag];
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (raw === "" || !Number.isFinite(n) || (integer && !Number.isInteger(n)) || n < min) {
    throw new UsageError(`--${flag}: expected ${integer ? "an integer" : "a number"}${min > -Infinity ? ` >= ${min}` : ""}, got '${raw}'.`);
  }
  return n;
}

/** @param {string} raw @param {string} flag */
function parseIds(raw, flag) {
  const parts = raw.split(",").map((s) => s.trim()).filter((s) => s !== "");
  const ids = parts.map(Number);
  if (ids.length === 0 || ids.some((n) => !Number.isInteger(n) || n < 0)) {
    throw new UsageError(`--${flag}: expected comma-separated token ids such as 1,2,3, got '${raw}'.`);
  }
  return ids;
}

/** @param {string} path */
async function readMessages(path) {
  let data;
  try {
    data = JSON.parse(await readFile(path, "utf8"));
  } catch (e) {
    throw new UsageError(`--chat ${path}: cannot read a JSON conversation (${/** @type {Error} */ (e).message}).`);
  }
  const messages = Array.isArray(data) ? data : data?.messages;
  if (!Array.isArray(messages)) throw new UsageError(`--chat ${path}: expected a JSON list of {role, content} (or {"messages": [...]}).`);
  return messages;
}

/**
 * @param {Record<string, any>} v @param {number} [contextLength]
 * @param {{ warmup?: boolean }} [o]  warmup: only where timings are reported
 */
async function open(v, contextLength, { warmup = false } = {}) {
  if (!v.model) throw new UsageError("--model DIR is required (a folder written by `sitegen convert`).");
  if (v.backend !== undefined && !["webgpu", "wasm", "auto"].includes(v.backend)) {
    throw new UsageError(`--backend: expected webgpu, wasm or auto, got '${v.backend}'.`);
  }
  // Default: WebGPU when an adapter is found (its errors are then reported as they are), else the CPU.
  const backend = v.backend ?? (await hasAdapter() ? "webgpu" : "wasm");
  return createEngine({ modelDir: v.model, backend, threads: num(v, "threads", { integer: true, min: 1 }), warmup: warmup && !v["no-warmup"], profile: Boolean(v.profile),
    contextLength: contextLength ?? num(v, "context-length", { integer: true, min: 2 }) });
}

/** @param {string} s */
const out = (s) => new Promise((resolve) => process.stdout.write(s, resolve));

/** @param {string[]} argv */
async function main(argv) {
  const [command, ...rest] = argv;
  if (!command || command === "--help" || command === "-h") { await out(`${USAGE}\n`); return 0; }
  let parsed;
  try {
    parsed = parseArgs({ args: rest, options: OPTIONS, strict: true, allowPositionals: false });
  } catch (e) {
    throw new UsageError(/** @type {Error} */ (e).message);
  }
  const v = /** @type {Record<string, any>} */ (parsed.values);
  if (v.help) { await out(`${USAGE}\n`); return 0; }

  if (command === "logits") {
    if (!v.tokens) throw new UsageError("logits: --tokens 1,2,3 is required.");
    const ids = parseIds(v.tokens, "tokens");
    const engine = await open(v, v["context-length"] ? undefined : await contextFor(v, ids.length));
    const logits = await engine.logits(ids);
    const vocab = engine.config.vocab_size;
    const rows = [];
    for (let t = 0; t < ids.length; t++) rows.push(Array.from(logits.subarray(t * vocab, (t + 1) * vocab)));
    await out(`${JSON.stringify({ logits: rows })}\n`);
    await engine.unload();
    return 0;
  }

  if (command === "tokenize") {
    // `--text ""` is a valid text (it tokenizes to what the tokenizer gives for "", usually []).
    if ((v.text === undefined) === (v.chat === undefined)) throw new UsageError("tokenize: give exactly one of --text TEXT or --chat FILE.json.");
    const engine = await open(v);
    const ids = v.chat
      ? engine.tokenizer.encode(engine.formatChat(await readMessages(v.chat)), { addSpecial: false })
      : engine.tokenizer.encode(v.text, { addSpecial: true });
    await out(`${JSON.stringify(ids)}\n`);
    await engine.unload();
    return 0;
  }

  if (command === "generate") {
    if ([v.prompt, v.tokens, v.chat].filter((x) => x !== undefined).length !== 1) {
      throw new UsageError("generate: give exactly one of --prompt TEXT, --tokens IDS or --chat FILE.json.");
    }
    // Every flag is checked before the (slow) model load.
    const sampling = {
      temperature: num(v, "temperature", { min: 0 }), top_k: num(v, "top-k", { integer: true, min: 0 }),
      top_p: num(v, "top-p"), min_p: num(v, "min-p"), repetition_penalty: num(v, "repetition-penalty"),
    };
    const seed = num(v, "seed", { integer: true });
    const maxNewTokens = num(v, "max-new-tokens", { integer: true, min: 0 }) ?? 128;
    const tokenIds = v.tokens ? parseIds(v.tokens, "tokens") : null;
    const messages = v.chat ? await readMessages(v.chat) : null;
    const engine = await open(v, undefined, { warmup: true });
    let promptIds;
    if (tokenIds) promptIds = tokenIds;
    else if (messages) promptIds = engine.tokenizer.encode(engine.formatChat(messages), { addSpecial: false });
    else promptIds = engine.tokenizer.encode(v.prompt, { addSpecial: true });
    const gen = engine.generate({ promptIds, sampling, seed, stop: v.stop ?? [], maxNewTokens });
    let text = "";
    let r;
    while (!(r = await gen.next()).done) {
      text += r.value.text;
      if (!v.json) await out(r.value.text);
    }
    const res = r.value;
    if (v.json) {
      await out(`${JSON.stringify({
        prompt_ids: promptIds, token_ids: res.tokenIds, text, finish_reason: res.finishReason,
        usage: { prompt_tokens: res.promptTokens, completion_tokens: res.completionTokens },
        timing: { prefill_ms: res.prefillMs, decode_ms: res.decodeMs, prefill_tokens_per_s: res.prefillTokensPerSecond,
          decode_tokens_per_s: res.decodeTokensPerSecond },
      })}\n`);
    } else {
      await out("\n");
    }
    await engine.unload();
    return 0;
  }

  if (command === "bench") {
    const promptTokens = num(v, "prompt-tokens", { integer: true, min: 1 }) ?? 512;
    const decodeTokens = num(v, "decode-tokens", { integer: true, min: 1 }) ?? 128;
    const t0 = performance.now();
    const engine = await open(v, v["context-length"] ? undefined : await contextFor(v, promptTokens + decodeTokens),
      { warmup: true });
    // Load to ready from local shards: read, verify, upload, compile (and warm up unless --no-warmup).
    const loadMs = performance.now() - t0;
    // A fixed pseudo-random prompt: benchmark numbers must not depend on the tokenizer.
    const rng = createRng(0);
    const vocab = engine.config.vocab_size;
    const promptIds = Array.from({ length: promptTokens }, () => Math.floor(rng() * vocab));
    const gen = engine.generate({ promptIds, maxNewTokens: decodeTokens, sampling: { temperature: 0 },
      ignoreEos: true, decode: false });
    let r;
    while (!(r = await gen.next()).done) { /* tokens are not printed */ }
    const res = r.value;
    const report = {
      prompt_tokens: promptTokens, decode_tokens: res.completionTokens,
      prefill_tokens_per_s: res.prefillTokensPerSecond, decode_tokens_per_s: res.decodeTokensPerSecond,
      prefill_ms: res.prefillMs, decode_ms: res.decodeMs,
      load_ms: loadMs, load_phases_ms: engine.stats.loadMs, ttft_ms: res.prefillMs,
      backend: engine.stats.backend, compute: engine.stats.compute, fused: engine.stats.fused,
    };
    /** @type {Record<string, import("./backend.js").StepProfile>} */
    const profiles = {};
    if (v.profile) {
      const model = /** @type {import("./backend.js").CompiledModel} */ (engine.model);
      if (!model.profile) throw new UsageError(`--profile: the ${engine.stats.backend} backend cannot time its kernels.`);
      // A decode step at the end of the prompt (its KV entry is rewritten), and the first prefill chunk.
      profiles.decode = await model.profile(Int32Array.of(promptIds[0]), promptTokens);
      // (profile keeps the first prefill chunk of a longer prompt)
      if (promptTokens > 1) profiles.prefill = await model.profile(Int32Array.from(promptIds), 0);
      /** @type {any} */ (report).profile = Object.fromEntries(Object.entries(profiles).map(([k, p]) =>
        [k, { ...p, perOp: undefined }]));
    }
    if (v.json) await out(`${JSON.stringify(report)}\n`);
    else {
      await out(`prefill: ${promptTokens} tokens in ${res.prefillMs.toFixed(0)} ms (${res.prefillTokensPerSecond.toFixed(1)} tokens/s)\n` +
        `decode:  ${res.completionTokens} tokens in ${res.decodeMs.toFixed(0)} ms (${res.decodeTokensPerSecond.toFixed(1)} tokens/s)\n` +
        `load:    ${loadMs.toFixed(0)} ms to ready\n`);
    }
    for (const [k, p] of Object.entries(profiles)) await out(formatProfile(k, p, v.json));
    await engine.unload();
    return 0;
  }
  throw new UsageError(`unknown command '${command}' (expected logits, generate, tokenize or bench).`);
}

/**
 * A step profile as text: per op family, device time, share and dispatches; the slowest ops.
 * With --json it goes to stderr (stdout keeps one JSON line).
 * @param {string} what @param {import("./backend.js").StepProfile} p @param {boolean} json
 */
function formatProfile(what, p, json) {
  const lines = [`profile (${what}, ${p.tokens} token${p.tokens > 1 ? "s" : ""}): ${p.dispatches} dispatches, ` +
    `${p.submits} submit, encode ${p.encodeMs.toFixed(3)} ms, wall ${p.wallMs.toFixed(3)} ms, kernels ${p.gpuMs.toFixed(3)} ms`];
  const fams = Object.entries(p.byFamily).sort((a, b) => b[1].ms - a[1].ms);
  for (const [f, x] of fams) {
    lines.push(`  ${f.padEnd(10)} ${x.ms.toFixed(3).padStart(9)} ms ${(100 * x.ms / p.gpuMs).toFixed(1).padStart(5)} %  ${x.dispatches} dispatches`);
  }
  lines.push("  slowest:");
  for (const o of [...p.perOp].sort((a, b) => b.ms - a.ms).slice(0, 8)) {
    lines.push(`    ${o.ms.toFixed(4).padStart(9)} ms  ${o.label}  [${o.variant}]`);
  }
  const text = `${lines.join("\n")}\n`;
  if (json) { process.stderr.write(text); return ""; }
  return text;
}

/** Whether Dawn finds a WebGPU adapter (the default --backend). */
async function hasAdapter() {
  try {
    const { getNodeGPU } = await import("./backends/webgpu/dawn.js");
    return Boolean(await (await getNodeGPU()).requestAdapter());
  } catch {
    return false;
  }
}

/**
 * A context window just large enough for `needed` positions (but at least
 * the default), capped by the model: the logits and bench commands know their length up front.
 * @param {Record<string, any>} v @param {number} needed
 */
async function contextFor(v, needed) {
  if (!v.model) return undefined;
  const manifest = await readManifestFile(v.model);
  const max = manifest.config?.max_position_embeddings ?? needed;
  return Math.min(max, Math.max(needed, Math.min(max, 2048)));
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (e) => {
    const usage = e instanceof UsageError;
    process.stderr.write(`error: ${e?.message ?? e}${usage ? "\n(run with --help for usage)" : ""}\n`);
    if (process.env.SITEGEN_DEBUG) process.stderr.write(`${e?.stack}\n`);
    process.exitCode = usage ? 2 : 1;
  },
);
