// The backend interface (issue 10, item 1): everything the engine needs from
// the hardware that runs a model. The engine, the worker and the page talk to
// a Backend, never to a GPUDevice; a backend lives in one folder under
// runtime/backends/ (webgpu/ today) and adding one (a WebAssembly CPU backend)
// is that folder plus one line in `BACKENDS` below.
//
// Life of a backend, as the engine drives it (runtime/engine.js):
//   const backend = await createBackend(manifest, options);      // device, limits, features
//   const plan = await backend.planWeights(manifest);            // memory allocated, or an error
//   loader.forEachShard(... backend.receiveShard(index, bytes)); // each verified shard, once, any order
//   await backend.weightsDone();
//   const model = await backend.compile({ graph, contextLength, prefillChunk, sampleVocab });
//   await model.forward(ids, start, { allPositions });           // logits rows
//   await model.sampleGreedy(ids, start);                        // the argmax, chosen by the backend
//   await model.sampleTopK(ids, start, k);                       // k candidates for the CPU samplers
//   await model.sampleGreedy(ids, start, { allowed });           // constrained output: only the bitmask's ids
//   backend.lost.then(...);  model.destroy();  backend.destroy();
//
// `graph` is the backend-neutral op list of runtime/graph.js; the backend
// lowers it (and says in `fusions` which fused ops it can run).

/**
 * @typedef {import("./manifest.js").Manifest} Manifest
 * @typedef {import("./graph.js").Graph} Graph
 * @typedef {object} WeightsPlan
 * @property {number} totalBytes   memory the weights take on this backend
 * @property {number[]} shardBytes bytes of each shard, in order (for progress)
 * @property {Record<string, number>} splitTensors  tensors held in more than one part (name → parts)
 * @typedef {object} CompiledModel  a model compiled for one context length; it owns its KV cache
 * @property {(ids: Int32Array, start: number, opt?: { allPositions?: boolean }) => Promise<Float32Array>} forward
 *   run ids at positions start..; the last position's logits [vocab], or every position's [n, vocab]
 * @property {(ids: Int32Array, start: number, opt?: SampleOptions) => Promise<number>} sampleGreedy
 *   run like forward; the argmax of the last row among the first `sampleVocab` ids (lowest id on ties)
 *   and, with `opt.allowed`, among the ids the mask allows
 * @property {(ids: Int32Array, start: number, k: number, opt?: SampleOptions) => Promise<{ ids: Int32Array, logits: Float32Array }>} sampleTopK
 *   run like forward; the k largest logits of the last row (among the first `sampleVocab` ids, and the
 *   mask's), descending; when the mask allows fewer than k ids the rest are id -1 with logit -Infinity
 * @property {number} maxTopK  the largest k sampleTopK takes
 * @property {(tokenId: number | null, start: number) => Promise<number>} [submitGreedy]
 *   a greedy decode step of one token at `start`, submitted before the call returns; `tokenId` null
 *   takes the previous submitted step's choice as input without it leaving the device, so step t+1
 *   can be queued while step t runs (a backend with a queue; the engine's greedy decode uses it)
 * @property {(ids: Int32Array, start: number) => Promise<StepProfile>} [profile]
 *   run one greedy step with per-kernel timings (a backend that can time its kernels; bench --profile)
 * @property {number} kvCacheBytes  bytes of the KV cache (K and V, every layer)
 * @property {number[]} [kvCacheRows]  the KV cache's rows per layer: the context, or on a sliding-window
 *   layer a ring of fewer (graph.js kvCacheLayout)
 * @property {number} [kvRewind]  how many positions behind the furthest one written a pass may start and
 *   still find every key it sees (Infinity or absent: any; a ring holds only its last rows)
 * @property {() => void} destroy
 * @typedef {object} StepProfile  one step's costs (bench --profile)
 * @property {number} tokens      tokens of the step
 * @property {number} dispatches  kernel launches of the step
 * @property {number} submits     command submissions of the step
 * @property {number} encodeMs    host time to record the step
 * @property {number} wallMs      host time of the step, recorded as usual, to its result on the host
 * @property {number} gpuMs       the kernels' summed device time (each timed alone)
 * @property {Record<string, { ms: number, dispatches: number }>} byFamily  device time per op family
 * @property {{ label: string, variant: string, ms: number }[]} perOp
 * @typedef {object} SampleOptions
 * @property {Uint32Array} [allowed]  constrained output (issue 17, runtime/grammar/): a bitmask over the
 *   vocabulary, ceil(sampleVocab / 32) words (more are ignored), id i allowed when bit (i & 31) of word
 *   (i >>> 5) is set. A backend applies it where the logits are (WebGPU: uploaded with the step, and
 *   the top-k kernel skips masked ids; a CPU backend: skip them in its argmax / top-k loop) and reads
 *   back only the chosen id or candidates, never the row. The mask always allows at least one id.
 * @typedef {object} CompileOptions
 * @property {Graph} graph
 * @property {number} contextLength  KV-cache positions
 * @property {number} prefillChunk   most tokens per pass
 * @property {number} sampleVocab    ids sampling may pick (the tokenizer's; padding rows of the head excluded)
 * @typedef {object} Backend
 * @property {string} name      "webgpu" or "wasm"
 * @property {number} [threads]  the CPU backend's threads (1 unless the page is cross-origin isolated)
 * @property {string} [fallback] why "auto" chose this backend over WebGPU (the WebGPU error's message)
 * @property {string} compute   the arithmetic of its matrix products: "f16" or "f32"
 * @property {{ qkv?: boolean, norm?: boolean }} fusions  fused graph ops it runs (graph.js)
 * @property {(manifest: Manifest) => Promise<WeightsPlan>} planWeights
 *   decide where every tensor goes and allocate it (InsufficientMemoryError / BufferTooLargeError if it cannot)
 * @property {(index: number, bytes: Uint8Array) => void} receiveShard
 *   take one verified shard; the bytes may be dropped when it returns
 * @property {() => Promise<void>} weightsDone  every shard is in
 * @property {(o: CompileOptions) => Promise<CompiledModel>} compile
 * @property {Promise<{ reason: string, message: string }>} lost  settles when the device is gone
 * @property {() => void} destroy  free the weights (and the device when the backend requested it)
 * @property {GPUDevice} [device]   the WebGPU backend's device (tests simulate a driver reset with it)
 * @typedef {object} BackendOptions
 * @property {GPUDevice} [device]   WebGPU: use this device instead of requesting one (it stays the caller's)
 * @property {"auto" | "f32" | "f16"} [compute]
 * @property {string} [shaderBase]
 * @property {number} [maxBindingBytes]
 * @property {number} [threads]        wasm: threads of the pool (default: the cores of a cross-origin isolated page, else 1)
 * @property {number} [contextLength]  wasm: KV-cache positions, for the memory preflight before any download
 * @property {number} [prefillChunk]   wasm: tokens per pass, for the same preflight
 * @property {number} [memoryLimit]    wasm: refuse models needing more bytes than this (default 4 GiB, wasm32's limit)
 * @property {boolean} [profile]  WebGPU: also request "timestamp-query" so that `CompiledModel.profile` works
 */

import { InvalidRequestError, SitegenRuntimeError } from "./errors.js";

/** The backends, in order of preference: a new backend is one line here and one folder. */
const BACKENDS = {
  webgpu: () => import("./backends/webgpu/index.js"),
  wasm: () => import("./backends/wasm/index.js"),
};

/** WebGPU errors after which "auto" runs the model on the CPU instead (issue 14, item 4). */
const FALL_BACK_ON = ["WebGPUUnavailableError", "MissingFeatureError", "BufferTooLargeError"];

/**
 * Create the backend that runs `manifest` (WebGPU: request an adapter and a device with the limits
 * the model needs and check its features). "auto": WebGPU when it can run the model, else the
 * WebAssembly CPU backend (`backend.fallback` says why).
 * @param {Manifest} manifest
 * @param {BackendOptions & { backend?: keyof typeof BACKENDS | "auto" }} [options]
 * @returns {Promise<Backend>}
 */
export async function createBackend(manifest, options = {}) {
  const name = options.backend ?? "webgpu";
  if (name === "auto" && !options.device) {
    try {
      return await (await BACKENDS.webgpu()).createBackend(manifest, options);
    } catch (e) {
      if (!FALL_BACK_ON.includes(/** @type {Error} */ (e)?.name)) throw e;
      const cpu = await (await BACKENDS.wasm()).createBackend(manifest, options);
      cpu.fallback = /** @type {Error} */ (e).message;
      return cpu;
    }
  }
  const load = BACKENDS[name === "auto" ? "webgpu" : name];
  if (!load) {
    throw new InvalidRequestError(`backend: unknown backend '${name}' (known: auto, ${Object.keys(BACKENDS).join(", ")}).`,
      { param: "backend" });
  }
  return (await load()).createBackend(manifest, options);
}

/**
 * The checks every backend makes on a forward step before any work: tokens given, positions
 * start..start+n-1 inside the KV cache, every id inside the vocabulary.
 * @param {ArrayLike<number>} tokenIds @param {number} start @param {number} contextLength @param {number} vocab
 */
export function checkStep(tokenIds, start, contextLength, vocab) {
  const n = tokenIds.length;
  if (n === 0) throw new SitegenRuntimeError("forward: no tokens.");
  if (start + n > contextLength) {
    throw new SitegenRuntimeError(`forward: positions ${start}..${start + n - 1} exceed the KV cache (${contextLength}).`);
  }
  for (let i = 0; i < n; i++) {
    const id = tokenIds[i];
    if (!(id >= 0 && id < vocab && Number.isInteger(id))) {
      throw new InvalidRequestError(`Token id ${id} is outside the vocabulary (0..${vocab - 1}).`, { param: "tokens", id });
    }
  }
}
