// The inference engine (issue 4, items 1, 5 and 6): load a converted model
// onto the GPU, then answer OpenAI-style chat completions with it.
//
//   const engine = await createEngine({ manifestUrl: "models/smollm2/manifest.json", onProgress });
//   for await (const chunk of await engine.chat.completions.create({ messages, stream: true })) ...
//   await engine.unload();
//
// Data flow: model source (source.js: manifest + loader + tokenizer) → manifest
// checked (manifest.js) → memory preflight → backend (backend.js: WebGPU today)
// plans the weights → loader.forEachShard hands it each verified shard → the
// graph (graph.js, the op list) is compiled by the backend for a context length
// → prefill/decode with the KV cache on the device → greedy and top-k chosen on
// the device, the other samplers on the CPU from the last row. The OpenAI-style
// shapes (chunks, usage) are in openai.js.
//
// Context-window policy (item 5): the engine never drops turns by itself. A
// prompt that leaves no room for one new token throws ContextWindowExceededError
// (its message says to drop the oldest turns or raise `contextLength`);
// otherwise generation stops with finish_reason "length" when the window is full.

import {
  AbortError, ContextWindowExceededError, DeviceLostError, EngineStateError, InvalidRequestError, ManifestError,
  throwIfAborted,
} from "./errors.js";
import { resolveSamplingParams, sampleToken, createRng, StopStringMatcher, commonPrefixLength } from "./sampling.js";
import { createBackend } from "./backend.js";
import { buildGraph } from "./graph.js";
import { checkMemory } from "./loader/preflight.js";
import { readManifest } from "./manifest.js";
import { resolveSource, loadTokenizer } from "./source.js";
import { generationDefaults, usageOf, completionChunks } from "./openai.js";
import { IncrementalDecoder } from "./tokenizer/streaming.js";
import { GrammarMatcher, TokenIndex, responseFormatGrammar } from "./grammar/index.js";

/**
 * @typedef {import("./backend.js").Backend} Backend
 * @typedef {import("./backend.js").CompiledModel} CompiledModel
 * @typedef {import("./manifest.js").Manifest} Manifest
 * @typedef {{ phase: "check"|"download"|"verify"|"upload"|"compile"|"ready", bytesDone?: number,
 *   bytesTotal?: number, shardsDone?: number, shardsTotal?: number, rate?: number, eta?: number,
 *   source?: "cache"|"network"|"file" }} ProgressEvent
 * @typedef {{ index: number, bytes: Uint8Array, fromCache: boolean }} ShardData
 * @typedef {{ forEachShard(args: { manifest: any, onShard: (s: ShardData) => Promise<void> | void,
 *   signal?: AbortSignal, onProgress?: (e: ProgressEvent) => void }): Promise<unknown> }} Loader
 * @typedef {object} EngineOptions
 * @property {string} [manifestUrl]  URL of a converted model's manifest.json (browser or Node)
 * @property {string} [modelDir]     Node only: folder written by `sitegen convert`
 * @property {any} [manifest]        an already parsed manifest (then `loader` is required)
 * @property {GPUDevice} [device]    use this device instead of requesting one
 * @property {Loader} [loader]       where shards come from (default: fetch next to the manifest, or files)
 * @property {string} [shaderBase]   URL/folder of shaders/*.wgsl (default: ../shaders/ next to runtime/)
 * @property {(e: ProgressEvent) => void} [onProgress]
 * @property {number} [contextLength]  KV-cache positions (default: min(model max, 2048))
 * @property {number} [prefillChunk]   prompt tokens per prefill pass (default 256)
 * @property {number} [maxBindingBytes] split tensors above this size even if the device allows more
 *   (headroom on drivers that fail near the limit; tests use it to exercise splitting)
 * @property {AbortSignal} [signal]    aborts loading
 * @property {"auto" | "f32" | "f16"} [compute]  arithmetic of the matrix kernels: "f16" needs the device
 *   feature shader-f16 (most Chrome users have it); "f32" forces the f32 path everywhere; "auto"
 *   (default) uses f16 when the device has it
 * @property {boolean} [profile]  let `engine.model.profile` time each kernel (WebGPU: requests "timestamp-query")
 * @property {"auto" | "webgpu" | "wasm"} [backend]  where the model runs (runtime/backend.js): "webgpu" (the
 *   default), "wasm" (the CPU, through WebAssembly), or "auto" (WebGPU when it can run the model, else the CPU)
 * @property {number} [threads]  wasm: threads (default: the cores of a cross-origin isolated page, else 1)
 * @property {boolean} [warmup]  run a short prefill and a decode step at load so that the first
 *   request's timings exclude shader compilation (default true)
 */

const DEFAULT_CONTEXT = 2048;

/**
 * Load a model and return an engine.
 * @param {EngineOptions} options
 */
export async function createEngine(options) {
  options.onProgress?.({ phase: "check" });

  const { manifest, loader } = await resolveSource(options);
  readManifest(manifest);
  const config = manifest.config;

  const maxPositions = config.max_position_embeddings ?? DEFAULT_CONTEXT;
  const contextLength = options.contextLength ?? Math.min(maxPositions, DEFAULT_CONTEXT);
  if (!Number.isInteger(contextLength) || contextLength < 2 || contextLength > maxPositions) {
    throw new InvalidRequestError(`contextLength: expected an integer in [2, ${maxPositions}] (the model's ` +
      `max_position_embeddings), got ${contextLength}.`, { param: "contextLength", value: contextLength });
  }

  // Before any byte is downloaded: the memory estimate (weights + KV cache) against what the device
  // reports; features and buffer limits are checked by the backend, and the loader checks the
  // storage quota before its first fetch.
  checkMemory(manifest, { contextLength, prefillChunk: options.prefillChunk });
  const backend = await createBackend(manifest, { device: options.device, compute: options.compute,
    shaderBase: options.shaderBase, maxBindingBytes: options.maxBindingBytes, profile: options.profile,
    backend: options.backend, threads: options.threads, contextLength, prefillChunk: options.prefillChunk });
  try {
    return await loadOnto(backend, manifest, loader, contextLength, options);
  } catch (e) {
    // A device the backend requested is given back; a caller's device stays theirs.
    backend.destroy();
    throw e;
  }
}

/**
 * Everything after the backend: plan, upload, compile, warm up.
 * @param {Backend} backend @param {Manifest} manifest @param {Loader} loader @param {number} contextLength
 * @param {EngineOptions} options
 */
async function loadOnto(backend, manifest, loader, contextLength, options) {
  const { signal } = options;
  const progress = (/** @type {ProgressEvent} */ e) => options.onProgress?.(e);
  throwIfAborted(signal);

  // Upload: plan once, allocate, then let each shard land where the plan says.
  // (Each phase is timed: stats.loadMs says where a load's time goes.)
  const t0 = performance.now();
  const plan = await backend.planWeights(manifest);
  let shardsDone = 0, bytesDone = 0;
  const bytesTotal = plan.shardBytes.reduce((a, b) => a + b, 0);
  await loader.forEachShard({
    manifest, signal, onProgress: progress,
    onShard: async ({ index, bytes }) => {
      throwIfAborted(signal);
      backend.receiveShard(index, bytes);
      shardsDone++;
      bytesDone += plan.shardBytes[index] ?? 0;
      progress({ phase: "upload", shardsDone, shardsTotal: manifest.shards.length, bytesDone, bytesTotal });
    },
  });
  await backend.weightsDone();
  throwIfAborted(signal);
  const tUploaded = performance.now();

  progress({ phase: "compile" });
  const tokenizer = await loadTokenizer(manifest);
  const graph = buildGraph(manifest.config, { ...tensorIndex(manifest), fuse: backend.fusions });
  const model = await backend.compile({ graph, contextLength, prefillChunk: options.prefillChunk ?? 256,
    sampleVocab: pickableVocab(manifest, tokenizer) });
  const tCompiled = performance.now();
  try {
    // Warm-up: drivers compile shaders on first use; run a short prefill (tiled
    // matmuls) and one decode step (matvecs) now, so the first request's
    // timings measure inference, not compilation. The cache is reset after.
    if (options.warmup ?? true) {
      const warm = Math.min(8, contextLength - 1);
      await model.forward(new Int32Array(warm), 0);
      await model.sampleGreedy(new Int32Array(1), warm);
    }
    const chat = manifest.chat_template ? await import("./chat.js").catch((e) => ({ error: e })) : null;
    progress({ phase: "ready" });
    const tReady = performance.now();
    const stats = { backend: backend.name, weightsBytes: plan.totalBytes, kvCacheBytes: model.kvCacheBytes,
      kvCacheRows: model.kvCacheRows ?? null,
      splitTensors: plan.splitTensors, compute: backend.compute, fused: graph.fused,
      threads: backend.threads ?? null, fallback: backend.fallback ?? null,
      // read + verify + upload; tokenizer + graph + kernels (pipelines); the warm-up steps (drivers
      // finish compiling on first use)
      loadMs: { upload: tUploaded - t0, compile: tCompiled - tUploaded, warmup: tReady - tCompiled } };
    return new Engine({ manifest, backend, model, tokenizer, chat, contextLength, stats });
  } catch (e) {
    model.destroy();
    throw e;
  }
}

/**
 * What the graph needs to know of the weights: which tensors (groups, members) exist, and each
 * group's members in row order.
 * @param {Manifest} manifest
 */
export function tensorIndex(manifest) {
  const names = new Set([...manifest.tensors.map((t) => t.name), ...(manifest.groups ?? []).map((g) => g.name)]);
  const groups = new Map((manifest.groups ?? []).map((g) => [g.name, g.members]));
  return {
    has: (/** @type {string} */ name) => names.has(name),
    members: (/** @type {string} */ group) => groups.get(group) ?? null,
  };
}

/** The set of ids that end generation. @param {any} manifest @param {any} tokenizer */
function eosIds(manifest, tokenizer) {
  const ids = new Set();
  const add = (/** @type {unknown} */ v) => {
    if (Array.isArray(v)) v.forEach(add);
    else if (typeof v === "number") ids.add(v);
  };
  add(manifest.generation?.eos_token_id);
  add(manifest.generation?.eos_token_ids);
  add(manifest.tokenizer?.eos_id);
  add(tokenizer?.eosId);
  return ids;
}

/**
 * @typedef {object} GenerateRequest
 * @property {number[]} promptIds
 * @property {number} [maxNewTokens]  default: until the context window is full
 * @property {Record<string, unknown>} [sampling]  temperature, top_k/topK, top_p, min_p, repetition_penalty
 * @property {number} [seed]
 * @property {string[]} [stop]
 * @property {boolean} [ignoreEos]
 * @property {boolean} [decode]  false: skip detokenisation (ids only; stop strings need it)
 * @property {import("./grammar/schema.js").Node | null} [grammar]  constrained output (issue 17): every
 *   token is chosen among those the grammar allows (runtime/grammar/); EOS only once the JSON is complete,
 *   and generation stops ("stop") as soon as nothing can follow
 * @property {AbortSignal} [signal]
 * @typedef {{ tokenId: number, text: string }} GenerateStep
 * @typedef {{ finishReason: "stop"|"length", promptTokens: number, cachedTokens: number, completionTokens: number,
 *   prefillMs: number, decodeMs: number, prefillTokensPerSecond: number, decodeTokensPerSecond: number,
 *   tokenIds: number[] }} GenerateResult
 */

export class Engine {
  /**
   * @param {{ manifest: any, backend: Pick<Backend, "name" | "lost" | "destroy"> & { device?: GPUDevice },
   *   model: CompiledModel, tokenizer: any, chat: any, contextLength: number,
   *   stats: { weightsBytes: number, kvCacheBytes: number, splitTensors: Record<string, number>, [k: string]: unknown } }} parts
   */
  constructor({ manifest, backend, model, tokenizer, chat, contextLength, stats }) {
    this.manifest = manifest;
    this.config = manifest.config;
    /** The backend that runs the model (runtime/backend.js). */
    this.backend = backend;
    this.contextLength = contextLength;
    /** Memory held (bytes), the tensors split by rows (name → parts), the backend, compute and fusions. */
    this.stats = stats;
    /** The model compiled on the backend (forward, sampleGreedy, sampleTopK). */
    this.model = model;
    this._tokenizer = tokenizer;
    /** The chat-template module (runtime/chat.js), or `{error}` when it failed to load. */
    this._chat = chat;
    /** Token ids whose keys/values are in the KV cache, position 0 first. @type {number[]} */
    this._cached = [];
    /** One past the furthest position written since the cache last started at 0 (`_resumable`). */
    this._written = 0;
    /** @type {Promise<unknown>} */
    this._queue = Promise.resolve();
    this._unloaded = false;
    /** @type {Error | null} */
    this._lost = null;
    backend.lost.then((info) => {
      if (!this._unloaded) {
        this._lost = new DeviceLostError(`The GPU device was lost (${info.reason}: ${info.message}); ` +
          "reload the page to load the model again.", { reason: info.reason });
      }
    });
    this._eos = eosIds(manifest, tokenizer?.error ? null : tokenizer);
    /** Rows of the output head that sampling may pick: those the tokenizer can decode. */
    this._pickable = pickableVocab(manifest, tokenizer);
    /** @type {TokenIndex | null} */
    this._index = null;
    /** Compiled response formats by their JSON. @type {Map<string, import("./grammar/schema.js").Node | null>} */
    this._grammars = new Map();
    this.chat = { completions: { create: (/** @type {any} */ req, /** @type {any} */ opts) => this._createCompletion(req, opts) } };
  }

  /** The tokenizer (encode/decode); throws when the model's tokenizer could not be built. */
  get tokenizer() {
    return this._requireTokenizer();
  }

  _requireTokenizer() {
    const t = this._tokenizer;
    if (!t) throw new ManifestError("The model manifest has no tokenizer: convert the model again.");
    if (t.error) throw t.error;
    return t;
  }

  /**
   * The error a failed forward pass stands for. A lost device makes mapAsync reject with a DOMException
   * named AbortError, which must not read as the caller's abort: wait briefly for `backend.lost` (it
   * may settle a task later) and report the loss instead.
   * @param {unknown} error @returns {Promise<unknown>}
   */
  async _lossOr(error) {
    if (this._lost || this._unloaded || /** @type {any} */ (error)?.name !== "AbortError" || error instanceof AbortError) {
      return this._lost ?? error;
    }
    await Promise.race([this.backend.lost, new Promise((resolve) => setTimeout(resolve, 1000))]);
    return this._lost ?? error;
  }

  _checkUsable() {
    if (this._unloaded) throw new EngineStateError("The engine was unloaded: create a new one with createEngine().");
    if (this._lost) throw this._lost;
  }

  /**
   * Run one request at a time, in call order.
   * @template T @param {() => Promise<T>} fn @returns {Promise<T>}
   */
  _exclusive(fn) {
    return this._turn().then(async (release) => {
      try {
        return await fn();
      } finally {
        release();
      }
    });
  }

  /**
   * The one request queue: resolves when every earlier request is done, with
   * the function that lets the next one run (a generator holds it until it ends).
   * @returns {Promise<() => void>}
   */
  async _turn() {
    /** @type {() => void} */
    let release = () => {};
    const turn = new Promise((resolve) => { release = () => resolve(undefined); });
    const previous = this._queue;
    this._queue = previous.then(() => turn);
    await previous.catch(() => {});
    return release;
  }

  /**
   * Feed `ids` from position `this._cached.length` on; returns the logits
   * (the last position's row, or every fed position's rows).
   * @param {number[]} ids @param {{ allPositions?: boolean }} [opts]
   */
  async _feed(ids, { allPositions = false } = {}) {
    return /** @type {Promise<Float32Array>} */ (this._run(ids, allPositions ? "all" : "last"));
  }

  /**
   * Feed `ids` like `_feed` and return the greedy next token, chosen by the
   * backend among the ids the tokenizer can decode (8 bytes read back, not the row).
   * @param {number[]} ids @returns {Promise<number>}
   */
  async _feedGreedy(ids) {
    return /** @type {Promise<number>} */ (this._run(ids, "greedy"));
  }

  /**
   * Feed `ids` like `_feed` and return the k most likely next tokens and their logits (descending),
   * chosen by the backend: what top-k sampling needs, without the whole row.
   * @param {number[]} ids @param {number} k @returns {Promise<{ ids: Int32Array, logits: Float32Array }>}
   */
  async _feedTopK(ids, k) {
    return /** @type {Promise<{ ids: Int32Array, logits: Float32Array }>} */ (this._run(ids, "topk", k));
  }

  /** @param {number[]} ids @param {"all" | "last" | "greedy" | "topk"} mode @param {number} [k]
   * @param {Uint32Array | null} [allowed] the ids sampling may pick (greedy / topk), a bitmask */
  async _run(ids, mode, k = 0, allowed = null) {
    let start = this._cached.length;
    // Marked stale first: if the pass fails, the cache no longer matches `_cached`.
    const saved = this._cached;
    this._cached = saved.slice(0, start);
    // A ring cache that no longer holds the keys before `start` (a step recomputed after a long one):
    // the cached prefix is fed again with `ids`, from position 0.
    const prefix = this._resumable(start) ? 0 : start;
    start -= prefix;
    const fed = prefix ? saved.slice(0, prefix).concat(ids) : ids;
    this._wrote(start, fed.length);
    let logits;
    try {
      const tokens = Int32Array.from(fed);
      const opt = allowed ? { allowed } : undefined;
      logits = mode === "greedy" ? await this.model.sampleGreedy(tokens, start, opt)
        : mode === "topk" ? await this.model.sampleTopK(tokens, start, k, opt)
          : await this.model.forward(tokens, start, { allPositions: mode === "all" });
      if (prefix && mode === "all") logits = /** @type {Float32Array} */ (logits).subarray(prefix * this.config.vocab_size);
    } catch (e) {
      throw await this._lossOr(e);
    }
    // A lost device may still "complete" its work, with zeros for logits.
    if (this._lost) throw this._lost;
    this._cached = saved.concat(ids);
    return logits;
  }

  /**
   * Reuse the cached prefix of `ids`: returns how many positions to keep.
   * At least the last prompt token is always recomputed, for its logits.
   * @param {number[]} ids
   */
  _reuse(ids) {
    let keep = Math.min(commonPrefixLength(this._cached, ids), ids.length - 1);
    if (!this._resumable(keep)) keep = 0;
    this._cached = this._cached.slice(0, keep);
    return keep;
  }

  /**
   * Whether a pass may start at `start` on the cache as it is. A sliding-window layer's cache is a
   * ring of its last rows (graph.js kvCacheLayout): once positions past `start + kvRewind` were written,
   * the keys just before `start` are overwritten, and the prefix must be fed again.
   * @param {number} start
   */
  _resumable(start) {
    return start === 0 || this._written - start <= (this.model.kvRewind ?? Infinity);
  }

  /** Note a pass writing positions start..start+n-1. @param {number} start @param {number} n */
  _wrote(start, n) {
    this._written = start === 0 ? n : Math.max(this._written, start + n);
  }

  /** Forget the KV cache (the next request prefills from position 0). */
  resetCache() {
    this._cached = [];
  }

  /**
   * Logits for every position of `ids` (row-major [ids.length, vocab]); for tests and the CLI.
   * @param {number[]} ids
   * @returns {Promise<Float32Array>}
   */
  logits(ids) {
    return this._exclusive(async () => {
      this._checkUsable();
      this._checkFits(ids.length, 0);
      this._cached = [];
      return this._feed(ids, { allPositions: true });
    });
  }

  /** @param {number} promptTokens @param {number} minNew */
  _checkFits(promptTokens, minNew) {
    if (promptTokens + minNew > this.contextLength || promptTokens === 0) {
      if (promptTokens === 0) throw new InvalidRequestError("The prompt is empty: give at least one token.", { param: "prompt" });
      throw new ContextWindowExceededError(`The prompt has ${promptTokens} tokens and the context window is ` +
        `${this.contextLength} (no room for a reply): drop the oldest turns of the conversation, or create the ` +
        `engine with a larger contextLength (this model allows up to ${this.config.max_position_embeddings}).`,
      { promptTokens, contextLength: this.contextLength });
    }
  }

  /**
   * Generate from token ids; yields each new token with its text (stop strings
   * held back and cut), and returns the totals. The KV cache keeps the prompt
   * and the generated tokens for the next request.
   * @param {GenerateRequest} req
   * @returns {AsyncGenerator<GenerateStep, GenerateResult>}
   */
  async *generate(req) {
    // Serialise with other requests: wait for the queue, hold it until done.
    const release = await this._turn();
    try {
      return yield* this._generate(req);
    } finally {
      release();
    }
  }

  /** @param {GenerateRequest} req @returns {AsyncGenerator<GenerateStep, GenerateResult>} */
  async *_generate(req) {
    this._checkUsable();
    const { promptIds, signal } = req;
    const params = resolveSamplingParams(req.sampling ?? {}, generationDefaults(this.manifest));
    this._checkFits(promptIds.length, 1);
    const room = this.contextLength - promptIds.length;
    const maxNew = Math.min(req.maxNewTokens ?? room, room);
    if (!Number.isInteger(maxNew) || maxNew < 0) {
      throw new InvalidRequestError(`max_tokens: expected an integer >= 0, got ${req.maxNewTokens}.`, { param: "max_tokens" });
    }
    const rng = createRng(req.seed ?? Math.floor(Math.random() * 2 ** 32));
    const stopper = new StopStringMatcher(req.stop ?? []);
    const tok = req.stop?.length || req.decode !== false ? this._tokenizerOrNull() : null;
    if (req.stop?.length && !tok) this._requireTokenizer(); // throws the reason
    // Streaming detokenisation: the tokenizer's own decoder, else decode-and-diff.
    const decoder = tok ? (typeof tok.decoder === "function" ? tok.decoder({ skipSpecial: true }) : new IncrementalDecoder(tok)) : null;
    throwIfAborted(signal);

    // Without a repetition penalty the backend chooses: greedy returns the id, top-k sampling the
    // k best candidates (a few more, to see ties at the k-th score, which HF's top-k keeps), which
    // the CPU samplers draw from. Otherwise the whole last row comes back. Sampling never picks an
    // id past the tokenizer's vocabulary (padding rows of the embedding: Phi-2, Qwen2.5, test models).
    const noPenalty = params.repetitionPenalty === 1;
    const greedyOnDevice = params.temperature === 0 && noPenalty;
    const fetchK = Math.min(params.topK + 8, this.model.maxTopK ?? 0);
    const topKOnDevice = !greedyOnDevice && noPenalty && params.topK > 0 && params.topK < fetchK;
    const pickable = this._pickable;
    // Constrained output: the grammar's mask of allowed ids for each step goes to the backend with
    // the step (applied where the logits are); on the whole-row path it is applied here.
    const matcher = req.grammar ? new GrammarMatcher(req.grammar, this._tokenIndex()) : null;
    /** @param {number[]} ids @returns {Promise<number>} */
    const next = async (ids) => {
      const allowed = matcher ? matcher.mask() : null;
      if (allowed && !allowed.some((w) => w !== 0)) {
        throw new InvalidRequestError("response_format: the model's vocabulary cannot continue the JSON here.", { param: "response_format" });
      }
      // A backend that ignored the mask (one without the `allowed` option) picked a masked id: the
      // step is then recomputed on the whole row and masked here, so the output stays valid.
      const honoured = (/** @type {number} */ id) => !allowed || id < 0 || (allowed[id >>> 5] & (1 << (id & 31))) !== 0;
      if (greedyOnDevice) {
        const id = /** @type {number} */ (await this._run(ids, "greedy", 0, allowed));
        if (honoured(id)) return id;
        this._cached = this._cached.slice(0, this._cached.length - ids.length);
      }
      if (topKOnDevice) {
        const cand = /** @type {{ ids: Int32Array, logits: Float32Array }} */ (await this._run(ids, "topk", fetchK, allowed));
        // Ties at the k-th score running past what came back: those candidates are incomplete,
        // so this step draws from the whole row (recomputing the step; rare). A mask that allows
        // fewer than k ids leaves -Infinity past them: the candidates are then complete.
        if (cand.ids.every(honoured) &&
            (cand.logits[fetchK - 1] < cand.logits[params.topK - 1] || cand.logits[params.topK - 1] === -Infinity)) {
          return cand.ids[sampleToken(cand.logits, params, rng, seen)];
        }
        this._cached = this._cached.slice(0, this._cached.length - ids.length);
      }
      const logits = await this._feed(ids);
      if (pickable < logits.length) logits.fill(-Infinity, pickable);
      if (allowed) for (let i = 0; i < pickable; i++) if (!(allowed[i >>> 5] & (1 << (i & 31)))) logits[i] = -Infinity;
      return sampleToken(logits, params, rng, seen);
    };
    const seen = promptIds.slice();
    // Greedy decode without a mask: the backend queues step t+1 (its input is step t's choice, still
    // on the device) before step t's choice is read back, so the GPU never waits for the host.
    const model = this.model;
    const chain = greedyOnDevice && !matcher && typeof model.submitGreedy === "function";
    /** @type {Promise<number> | null} the queued step after the one being awaited (its input is on the device) */
    let ahead = null;
    /** @param {number} fedId the input of the step being awaited @param {Promise<number>} step */
    const confirm = async (fedId, step) => {
      let chosen;
      try {
        chosen = await step;
      } catch (e) {
        throw await this._lossOr(e);
      }
      if (this._lost) throw this._lost;
      this._cached.push(fedId);
      return chosen;
    };
    const submit = (/** @type {number | null} */ tokenId, /** @type {number} */ pos) => {
      this._wrote(pos, 1);
      try {
        return /** @type {NonNullable<typeof model.submitGreedy>} */ (model.submitGreedy)(tokenId, pos);
      } catch (e) {
        return Promise.reject(e);
      }
    };
    const t0 = now();
    const cachedTokens = this._reuse(promptIds);
    let id = await next(promptIds.slice(cachedTokens));
    const t1 = now();
    /** @type {number[]} */
    const generated = [];
    /** @type {"stop"|"length"} */
    let finishReason = "length";
    let stoppedByString = false;
    // Time the consumer spends between chunks is not decode time.
    let pausedMs = 0;
    try {
      while (generated.length < maxNew) {
        throwIfAborted(signal);
        if (!req.ignoreEos && this._eos.has(id)) { finishReason = "stop"; break; }
        generated.push(id);
        seen.push(id);
        matcher?.accept(id);
        let text = "";
        if (decoder) {
          const r = stopper.push(decoder.push(id));
          text = r.text;
          stoppedByString = r.stopped;
        }
        const yieldedAt = now();
        yield { tokenId: id, text };
        pausedMs += now() - yieldedAt;
        if (stoppedByString) { finishReason = "stop"; break; }
        if (matcher?.done) { finishReason = "stop"; break; }
        if (generated.length >= maxNew) break;
        if (chain) {
          const pos = this._cached.length;  // where `id` goes
          const cur = ahead ?? submit(id, pos);
          ahead = generated.length + 1 < maxNew ? submit(null, pos + 1) : null;
          ahead?.catch(() => {});  // its failure is reported when it is awaited, not as an unhandled rejection
          id = await confirm(id, cur);
        } else {
          id = await next([id]);
        }
      }
    } finally {
      // A step queued past the end (a stop token or string came first, or the consumer left): its
      // KV row is not counted in `_cached`, so the next request overwrites it; its readback must end.
      if (ahead) await /** @type {Promise<number>} */ (ahead).catch(() => 0);
    }
    if (decoder && !stoppedByString) {
      // Text still held back: an incomplete character, or what looked like the start of a stop string.
      const rest = stopper.push(decoder.flush());
      const tail = rest.text + (rest.stopped ? "" : stopper.flush());
      if (rest.stopped) finishReason = "stop";
      if (tail) {
        const yieldedAt = now();
        yield { tokenId: -1, text: tail };
        pausedMs += now() - yieldedAt;
      }
    }
    const t2 = now();
    const prefillMs = t1 - t0;
    const decodeMs = t2 - t1 - pausedMs;
    const fed = promptIds.length - cachedTokens;
    const decodeSteps = Math.max(0, this._cached.length - promptIds.length);
    return {
      finishReason, promptTokens: promptIds.length, cachedTokens, completionTokens: generated.length,
      prefillMs, decodeMs,
      prefillTokensPerSecond: prefillMs > 0 ? (fed * 1000) / prefillMs : 0,
      decodeTokensPerSecond: decodeMs > 0 ? (decodeSteps * 1000) / decodeMs : 0,
      tokenIds: generated,
    };
  }

  /** The vocabulary indexed for token masks (built on the first constrained request). */
  _tokenIndex() {
    if (!this._index) {
      this._index = TokenIndex.fromTokenizer(this._requireTokenizer(), { rows: this._pickable, eos: this._eos });
    }
    return this._index;
  }

  /**
   * The grammar of a request's `response_format` (compiled once per distinct format).
   * @param {unknown} rf
   */
  _grammarOf(rf) {
    if (rf == null) return null;
    const key = JSON.stringify(rf);
    let g = this._grammars.get(key);
    if (g === undefined) {
      g = responseFormatGrammar(rf);
      this._grammars.set(key, g);
      if (this._grammars.size > 32) this._grammars.delete(/** @type {string} */ (this._grammars.keys().next().value));
    }
    return g;
  }

  _tokenizerOrNull() {
    const t = this._tokenizer;
    return t && !t.error ? t : null;
  }

  /**
   * OpenAI-style chat completion. `stream: true` returns an async iterator of
   * `chat.completion.chunk`s (the last one has `usage` with timings);
   * otherwise a promise of one `chat.completion`.
   * @param {any} request  {messages, stream, max_tokens, temperature, top_p, top_k, min_p,
   *   repetition_penalty, seed, stop, response_format, signal}
   * @param {{ signal?: AbortSignal }} [options]
   */
  _createCompletion(request, options = {}) {
    this._checkUsable();
    const signal = options.signal ?? request?.signal;
    const promptIds = this._promptIds(request);
    const stop = request.stop == null ? [] : Array.isArray(request.stop) ? request.stop : [request.stop];
    const maxNewTokens = request.max_tokens ?? request.max_completion_tokens ?? request.max_new_tokens;
    // response_format (issue 17): {type: "json_object"} or {type: "json_schema", json_schema: {schema}}.
    const grammar = this._grammarOf(request.response_format);
    if (grammar && stop.length) {
      throw new InvalidRequestError("stop: not allowed with a JSON response_format (a stop string could cut the JSON).", { param: "stop" });
    }
    const gen = this.generate({ promptIds, maxNewTokens, sampling: request, seed: request.seed, stop, signal, grammar });
    const id = `chatcmpl-${Math.random().toString(36).slice(2, 12)}`;
    const created = Math.floor(Date.now() / 1000);
    const model = this.manifest.name ?? "model";
    if (request.stream) return completionChunks(gen, { id, created, model });
    return (async () => {
      let content = "";
      let r;
      while (!(r = await gen.next()).done) content += r.value.text;
      return {
        id, object: "chat.completion", created, model,
        choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: r.value.finishReason,
          token_ids: r.value.tokenIds }],
        usage: usageOf(r.value),
      };
    })();
  }

  /** @param {any} request */
  _promptIds(request) {
    if (!request || !Array.isArray(request.messages) || request.messages.length === 0) {
      throw new InvalidRequestError("messages: expected a non-empty array of {role, content}.", { param: "messages" });
    }
    for (const [i, m] of request.messages.entries()) {
      if (!m || typeof m.role !== "string" || typeof m.content !== "string") {
        throw new InvalidRequestError(`messages[${i}]: expected {role: string, content: string}.`, { param: `messages[${i}]` });
      }
    }
    const text = this.formatChat(request.messages);
    return this.tokenizer.encode(text, { addSpecial: false });
  }

  /**
   * The prompt text of a conversation, through the model's chat template.
   * @param {{role: string, content: string}[]} messages
   * @returns {string}
   */
  formatChat(messages) {
    if (!this.manifest.chat_template) {
      throw new ManifestError("The model has no chat template: use a chat (instruct) model, or generate from raw text.");
    }
    if (this._chat?.error) throw this._chat.error;
    return this._chat.formatChat(this.manifest.chat_template, messages, { addGenerationPrompt: true });
  }

  /** Free the model's memory on the backend (and the device when the backend requested it). */
  async unload() {
    if (this._unloaded) return;
    await this._queue.catch(() => {});
    this._unloaded = true;
    this.model.destroy();
    this.backend.destroy();
    this._cached = [];
  }
}

/**
 * How many ids sampling may pick: the head's rows, less the padding rows past
 * the tokenizer's vocabulary (no text decodes from them).
 * @param {any} manifest @param {any} tokenizer
 */
export function pickableVocab(manifest, tokenizer) {
  const rows = manifest.config.vocab_size;
  const size = tokenizer && !tokenizer.error ? tokenizer.vocabSize : undefined;
  return Number.isInteger(size) && size > 0 ? Math.min(rows, size) : rows;
}

function now() {
  return globalThis.performance?.now() ?? Date.now();
}
