// The inference engine (issue 4, items 1, 5 and 6): load a converted model
// onto the GPU, then answer OpenAI-style chat completions with it.
//
//   const engine = await createEngine({ manifestUrl: "models/smollm2/manifest.json", onProgress });
//   for await (const chunk of await engine.chat.completions.create({ messages, stream: true })) ...
//   await engine.unload();
//
// Data flow: model source (source.js: manifest + loader + tokenizer) → manifest
// checked (manifest.js) → memory preflight → device check → upload plan
// (backends/webgpu/upload.js) → loader.forEachShard writes shards into GPU
// buffers → kernels compiled → graph (graph.js) runs prefill/decode with the KV
// cache on the GPU → greedy picked on the GPU, other samplers on the CPU from
// the last row. The OpenAI-style shapes (chunks, usage) are in openai.js.
//
// Context-window policy (item 5): the engine never drops turns by itself. A
// prompt that leaves no room for one new token throws ContextWindowExceededError
// (its message says to drop the oldest turns or raise `contextLength`);
// otherwise generation stops with finish_reason "length" when the window is full.

import {
  AbortError, ContextWindowExceededError, DeviceLostError, EngineStateError, InsufficientMemoryError,
  InvalidRequestError, ManifestError, MissingFeatureError, WebGPUUnavailableError,
  throwIfAborted,
} from "./errors.js";
import { resolveSamplingParams, sampleToken, createRng, StopStringMatcher, commonPrefixLength } from "./sampling.js";
import { planUpload, createBuffers, uploadShard, tensorParts } from "./backends/webgpu/upload.js";
import { createGraph } from "./graph.js";
import { requirementsOf, checkMemory } from "./loader/preflight.js";
import { readManifest } from "./manifest.js";
import { resolveSource, loadTokenizer } from "./source.js";
import { generationDefaults, usageOf, completionChunks } from "./openai.js";
import { IncrementalDecoder } from "./tokenizer/streaming.js";

/**
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
  // reports; features and buffer limits are checked against the adapter below, and the loader checks
  // the storage quota before its first fetch.
  checkMemory(manifest, { contextLength });
  const device = options.device ?? await requestDevice(manifest);
  try {
    return await loadOnto(device, manifest, loader, contextLength, options);
  } catch (e) {
    // A device we requested is ours to give back; a caller's device stays theirs.
    if (!options.device) device.destroy();
    throw e;
  }
}

/**
 * Everything after the device: check, upload, compile, warm up.
 * @param {GPUDevice} device @param {any} manifest @param {Loader} loader @param {number} contextLength
 * @param {EngineOptions} options
 */
async function loadOnto(device, manifest, loader, contextLength, options) {
  const { signal } = options;
  const config = manifest.config;
  const progress = (/** @type {ProgressEvent} */ e) => options.onProgress?.(e);
  checkDevice(device, manifest);
  throwIfAborted(signal);

  // Upload: plan once, allocate, then let each shard land where the plan says.
  const cap = options.maxBindingBytes ?? Infinity;
  const plan = planUpload(manifest, {
    maxStorageBufferBindingSize: Math.min(device.limits.maxStorageBufferBindingSize, cap),
    maxBufferSize: Math.min(device.limits.maxBufferSize, cap),
  });
  device.pushErrorScope("out-of-memory");
  const buffers = createBuffers(device, plan);
  const oom = await device.popErrorScope();
  if (oom) {
    buffers.forEach((b) => b.destroy());
    throw new InsufficientMemoryError(`The GPU ran out of memory allocating the model's ${formatBytes(plan.totalBytes)} ` +
      "of weights: close other GPU-heavy tabs or apps, or use a smaller or more quantized model.",
    { bytes: plan.totalBytes });
  }
  try {
    let shardsDone = 0;
    await loader.forEachShard({
      manifest, signal, onProgress: progress,
      onShard: async ({ index, bytes }) => {
        throwIfAborted(signal);
        uploadShard(device, plan, buffers, index, bytes);
        shardsDone++;
        progress({ phase: "upload", shardsDone, shardsTotal: manifest.shards.length,
          bytesDone: plan.shardBytes.slice(0, shardsDone).reduce((a, b) => a + b, 0), bytesTotal: plan.shardBytes.reduce((a, b) => a + b, 0) });
      },
    });
    await device.queue.onSubmittedWorkDone();
    throwIfAborted(signal);

    progress({ phase: "compile" });
    const { Kernels, shaderSourceFrom } = await import("./backends/webgpu/kernels.js");
    const compute = options.compute ?? "auto";
    if (!["auto", "f32", "f16"].includes(compute)) {
      throw new InvalidRequestError(`compute: expected "auto", "f32" or "f16", got ${JSON.stringify(compute)}.`,
        { param: "compute" });
    }
    const kernels = await Kernels.create(device, {
      ...(options.shaderBase ? { shaderSource: shaderSourceFrom(options.shaderBase) } : {}),
      f16: compute === "auto" ? undefined : compute === "f16",
    });
    const tokenizer = await loadTokenizer(manifest);
    device.pushErrorScope("out-of-memory");
    /** @type {ReturnType<typeof createGraph>} */
    let graph;
    try {
      graph = createGraph({
        device, kernels, config, contextLength,
        prefillChunk: options.prefillChunk ?? 256,
        weight: (/** @type {string} */ name) => (plan.tensors.has(name)
          ? /** @type {import("./graph.js").Part[]} */ (tensorParts(plan, buffers, name)) : null),
        sampleVocab: pickableVocab(manifest, tokenizer),
      });
    } catch (e) {
      // createGraph freed what it had allocated; the kernels' own buffers go too.
      await device.popErrorScope();
      kernels.destroy();
      throw e;
    }
    const oom2 = await device.popErrorScope();
    if (oom2) {
      graph.destroy();
      throw new InsufficientMemoryError(`The GPU ran out of memory allocating the KV cache for ${contextLength} ` +
        "positions: create the engine with a smaller contextLength.", { contextLength });
    }
    // Warm-up: drivers compile shaders on first use; run a short prefill (tiled
    // matmuls) and one decode step (matvecs) now, so the first request's
    // timings measure inference, not compilation. The cache is reset after.
    if (options.warmup ?? true) {
      const warm = Math.min(8, contextLength - 1);
      await graph.forward(new Int32Array(warm), 0);
      await graph.forward(new Int32Array(1), warm);
    }
    const chat = manifest.chat_template ? await import("./chat.js").catch((e) => ({ error: e })) : null;
    progress({ phase: "ready" });
    /** @type {Record<string, number>} */
    const splitTensors = {};
    for (const [name, t] of plan.tensors) if (t.parts.length > 1) splitTensors[name] = t.parts.length;
    const stats = { weightsBytes: plan.totalBytes, kvCacheBytes: graph.kvCacheBytes, splitTensors,
      compute: kernels.features.f16 ? "f16" : "f32" };
    return new Engine({ manifest, device, ownsDevice: !options.device, buffers, graph, tokenizer, chat, contextLength, stats });
  } catch (e) {
    buffers.forEach((b) => b.destroy());
    throw e;
  }
}

/** @param {number} n */
function formatBytes(n) {
  return n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(2)} GiB` : `${(n / 2 ** 20).toFixed(1)} MiB`;
}

/**
 * Request an adapter and a device with the limits the model needs
 * (WebGPU gives a device only its default limits unless asked).
 * @param {any} manifest
 * @returns {Promise<GPUDevice>}
 */
async function requestDevice(manifest) {
  /** @type {GPU | undefined} */
  let gpu = globalThis.navigator?.gpu;
  if (!gpu && typeof process !== "undefined" && process.versions?.node) {
    gpu = await (await import("./backends/webgpu/dawn.js")).getNodeGPU();
  }
  if (!gpu) {
    throw new WebGPUUnavailableError("This browser has no WebGPU: use a recent Chrome or Edge (or Safari 26, " +
      "Firefox 141+), or enable WebGPU in the browser's settings.");
  }
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) {
    throw new WebGPUUnavailableError("WebGPU is present but no GPU adapter is available (blocklisted driver or " +
      "GPU disabled): update the graphics driver or try another browser.");
  }
  const req = requirementsOf(manifest);
  checkLimits(adapter, manifest, "adapter");
  // Optional speed-ups the kernels use when present.
  const want = new Set([...req.features, ...req.optionalFeatures]);
  const requiredFeatures = /** @type {GPUFeatureName[]} */ ([...want].filter((f) => adapter.features.has(f)));
  const L = adapter.limits;
  let device;
  try {
    device = await adapter.requestDevice({
      requiredFeatures,
      requiredLimits: {
        maxStorageBufferBindingSize: L.maxStorageBufferBindingSize,
        maxBufferSize: L.maxBufferSize,
        maxStorageBuffersPerShaderStage: L.maxStorageBuffersPerShaderStage,
        maxComputeWorkgroupStorageSize: L.maxComputeWorkgroupStorageSize,
        maxComputeInvocationsPerWorkgroup: L.maxComputeInvocationsPerWorkgroup,
        maxComputeWorkgroupSizeX: L.maxComputeWorkgroupSizeX,
        maxComputeWorkgroupsPerDimension: L.maxComputeWorkgroupsPerDimension,
      },
    });
  } catch (e) {
    throw new WebGPUUnavailableError(`The GPU adapter refused to create a device (${/** @type {Error} */ (e).message}): ` +
      "close other GPU-heavy tabs or apps and reload, or update the graphics driver.");
  }
  return device;
}

/**
 * @param {GPUDevice} device
 * @param {any} manifest
 */
function checkDevice(device, manifest) {
  checkLimits(device, manifest, "device");
}

/**
 * Compare an adapter's or device's features with the manifest's
 * requirements; throw the error that says what is missing.
 * @param {{ features: GPUSupportedFeatures, limits: GPUSupportedLimits }} gpu
 * @param {any} manifest
 * @param {string} what
 */
export function checkLimits(gpu, manifest, what) {
  const req = requirementsOf(manifest);
  const missing = req.features.filter((f) => !gpu.features.has(f));
  if (missing.length) {
    throw new MissingFeatureError(`This GPU ${what} lacks WebGPU feature${missing.length > 1 ? "s" : ""} ` +
      `${missing.join(", ")}, which the model needs: use a browser/GPU that supports ${missing.length > 1 ? "them" : "it"}, ` +
      "or convert the model without it (e.g. --quant q4 instead of f16).", { missing });
  }
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
 * @property {AbortSignal} [signal]
 * @typedef {{ tokenId: number, text: string }} GenerateStep
 * @typedef {{ finishReason: "stop"|"length", promptTokens: number, cachedTokens: number, completionTokens: number,
 *   prefillMs: number, decodeMs: number, prefillTokensPerSecond: number, decodeTokensPerSecond: number,
 *   tokenIds: number[] }} GenerateResult
 */

export class Engine {
  /**
   * @param {{ manifest: any, device: GPUDevice, ownsDevice: boolean, buffers: GPUBuffer[],
   *   graph: ReturnType<typeof createGraph>, tokenizer: any, chat: any, contextLength: number,
   *   stats: { weightsBytes: number, kvCacheBytes: number, splitTensors: Record<string, number> } }} parts
   */
  constructor({ manifest, device, ownsDevice, buffers, graph, tokenizer, chat, contextLength, stats }) {
    this.manifest = manifest;
    this.config = manifest.config;
    this.device = device;
    this.contextLength = contextLength;
    /** GPU memory held (bytes) and the tensors split by rows (name → parts). */
    this.stats = stats;
    this.graph = graph;
    this._tokenizer = tokenizer;
    /** The chat-template module (runtime/chat.js), or `{error}` when it failed to load. */
    this._chat = chat;
    this._buffers = buffers;
    this._ownsDevice = ownsDevice;
    /** Token ids whose keys/values are in the KV cache, position 0 first. @type {number[]} */
    this._cached = [];
    /** @type {Promise<unknown>} */
    this._queue = Promise.resolve();
    this._unloaded = false;
    /** @type {Error | null} */
    this._lost = null;
    device.lost.then((info) => {
      if (!this._unloaded) {
        this._lost = new DeviceLostError(`The GPU device was lost (${info.reason}: ${info.message}); ` +
          "reload the page to load the model again.", { reason: info.reason });
      }
    });
    this._eos = eosIds(manifest, tokenizer?.error ? null : tokenizer);
    /** Rows of the output head that sampling may pick: those the tokenizer can decode. */
    this._pickable = pickableVocab(manifest, tokenizer);
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
   * named AbortError, which must not read as the caller's abort: wait briefly for `device.lost` (it
   * may settle a task later) and report the loss instead.
   * @param {unknown} error @returns {Promise<unknown>}
   */
  async _lossOr(error) {
    if (this._lost || this._unloaded || /** @type {any} */ (error)?.name !== "AbortError" || error instanceof AbortError) {
      return this._lost ?? error;
    }
    await Promise.race([this.device.lost, new Promise((resolve) => setTimeout(resolve, 1000))]);
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
   * Feed `ids` like `_feed` and return the greedy next token, chosen on the
   * GPU among the ids the tokenizer can decode (8 bytes read back, not the row).
   * @param {number[]} ids @returns {Promise<number>}
   */
  async _feedGreedy(ids) {
    return /** @type {Promise<number>} */ (this._run(ids, "greedy"));
  }

  /** @param {number[]} ids @param {"all" | "last" | "greedy"} mode */
  async _run(ids, mode) {
    const start = this._cached.length;
    // Marked stale first: if the pass fails, the cache no longer matches `_cached`.
    const saved = this._cached;
    this._cached = saved.slice(0, start);
    let logits;
    try {
      const tokens = Int32Array.from(ids);
      logits = mode === "greedy" ? await this.graph.forwardGreedy(tokens, start)
        : await this.graph.forward(tokens, start, { allPositions: mode === "all" });
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
    const keep = Math.min(commonPrefixLength(this._cached, ids), ids.length - 1);
    this._cached = this._cached.slice(0, keep);
    return keep;
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

    // Greedy without a repetition penalty is chosen on the GPU; every other
    // sampler reads the last row and never picks an id past the tokenizer's
    // vocabulary (padding rows of the embedding: Phi-2, Qwen2.5, test models).
    const onDevice = params.temperature === 0 && params.repetitionPenalty === 1;
    const pickable = this._pickable;
    /** @param {number[]} ids @returns {Promise<number>} */
    const next = async (ids) => {
      if (onDevice) return this._feedGreedy(ids);
      const logits = await this._feed(ids);
      if (pickable < logits.length) logits.fill(-Infinity, pickable);
      return sampleToken(logits, params, rng, seen);
    };
    const seen = promptIds.slice();
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
    while (generated.length < maxNew) {
      throwIfAborted(signal);
      if (!req.ignoreEos && this._eos.has(id)) { finishReason = "stop"; break; }
      generated.push(id);
      seen.push(id);
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
      if (generated.length >= maxNew) break;
      id = await next([id]);
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

  _tokenizerOrNull() {
    const t = this._tokenizer;
    return t && !t.error ? t : null;
  }

  /**
   * OpenAI-style chat completion. `stream: true` returns an async iterator of
   * `chat.completion.chunk`s (the last one has `usage` with timings);
   * otherwise a promise of one `chat.completion`.
   * @param {any} request  {messages, stream, max_tokens, temperature, top_p, top_k, min_p,
   *   repetition_penalty, seed, stop, signal}
   * @param {{ signal?: AbortSignal }} [options]
   */
  _createCompletion(request, options = {}) {
    this._checkUsable();
    const signal = options.signal ?? request?.signal;
    const promptIds = this._promptIds(request);
    const stop = request.stop == null ? [] : Array.isArray(request.stop) ? request.stop : [request.stop];
    const maxNewTokens = request.max_tokens ?? request.max_completion_tokens ?? request.max_new_tokens;
    const gen = this.generate({ promptIds, maxNewTokens, sampling: request, seed: request.seed, stop, signal });
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

  /** Free every GPU buffer (and the device when the engine created it). */
  async unload() {
    if (this._unloaded) return;
    await this._queue.catch(() => {});
    this._unloaded = true;
    this.graph.destroy();
    this._buffers.forEach((b) => b.destroy());
    this._buffers = [];
    this._cached = [];
    if (this._ownsDevice) this.device.destroy();
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
