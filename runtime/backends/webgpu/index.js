// The WebGPU backend (runtime/backend.js): the device (requested with the
// limits the model needs), the weight upload plan (upload.js), the kernels
// (kernels.js) and the lowering of the model graph to them (lower.js).

import {
  InsufficientMemoryError, InvalidRequestError, MissingFeatureError, SitegenRuntimeError, WebGPUUnavailableError,
} from "../../errors.js";
import { requirementsOf } from "../../loader/preflight.js";
import { planUpload, createBuffers, uploadShard, tensorParts, hasTensor } from "./upload.js";
import { lowerGraph, MAX_TOP_K } from "./lower.js";

/** kernels.js SUBGROUP_MATRIX (that module loads only once a model compiles). */
const SUBGROUP_MATRIX = "chromium-experimental-subgroup-matrix";

/**
 * @typedef {import("../../backend.js").Backend} Backend
 * @typedef {import("../../backend.js").BackendOptions} BackendOptions
 * @typedef {import("../../manifest.js").Manifest} Manifest
 */

/**
 * SITEGEN_PREFILL_INT8 (Node only): how a prefill's q4/q8 products run (kernels.js `prefillInt8`:
 * "auto", "dot4" — the integer kernel without subgroup matrices, as the whole-model tests run it on
 * the software adapter — or "off"), for tests and benchmarks. Unset: "auto".
 * @returns {"auto" | "dot4" | "off" | undefined}
 */
function prefillInt8() {
  const v = /** @type {any} */ (globalThis).process?.env?.SITEGEN_PREFILL_INT8;
  if (v === undefined || v === "") return undefined;
  if (v !== "auto" && v !== "dot4" && v !== "off") {
    throw new InvalidRequestError(`SITEGEN_PREFILL_INT8: expected auto, dot4 or off, got ${JSON.stringify(v)}.`,
      { param: "SITEGEN_PREFILL_INT8" });
  }
  return v;
}

/**
 * SITEGEN_INT8_MIN_WEIGHTS (Node only): the integer-dot matvec's size threshold (kernels.js
 * `int8MinWeights`; 0 puts every q4/q8 matvec on it, as the quantized whole-model tests do,
 * "never" none), for tests and benchmarks. Unset: the kernels' default.
 * @returns {number | undefined}
 */
function int8MinWeights() {
  const v = /** @type {any} */ (globalThis).process?.env?.SITEGEN_INT8_MIN_WEIGHTS;
  if (v === undefined || v === "") return undefined;
  if (v === "never") return Infinity;
  const n = Number(v);
  if (!(Number.isInteger(n) && n >= 0)) {
    throw new InvalidRequestError(`SITEGEN_INT8_MIN_WEIGHTS: expected a whole number of weights or "never", got ${JSON.stringify(v)}.`,
      { param: "SITEGEN_INT8_MIN_WEIGHTS" });
  }
  return n;
}

/**
 * @param {Manifest} manifest
 * @param {BackendOptions} [options]
 * @returns {Promise<Backend>}
 */
export async function createBackend(manifest, options = {}) {
  const compute = options.compute ?? "auto";
  if (!["auto", "f32", "f16"].includes(compute)) {
    throw new InvalidRequestError(`compute: expected "auto", "f32" or "f16", got ${JSON.stringify(compute)}.`,
      { param: "compute" });
  }
  const device = options.device ?? await requestDevice(manifest, { profile: Boolean(options.profile) });
  const owns = !options.device;
  try {
    checkLimits(device, manifest, "device");
  } catch (e) {
    if (owns) device.destroy();
    throw e;
  }
  const f16 = compute === "auto" ? device.features.has("shader-f16") : compute === "f16";
  if (f16 && !device.features.has("shader-f16")) {
    if (owns) device.destroy();
    throw new MissingFeatureError("f16 compute needs the WebGPU feature 'shader-f16', which this device lacks.",
      { feature: "shader-f16" });
  }
  /** @type {ReturnType<typeof planUpload> | null} */
  let plan = null;
  /** @type {GPUBuffer[]} */
  let buffers = [];
  let destroyed = false;

  /** @type {Backend} */
  const backend = {
    name: "webgpu",
    compute: f16 ? "f16" : "f32",
    fusions: { qkv: true, norm: true },
    device,
    lost: device.lost.then((info) => ({ reason: String(info.reason), message: info.message })),

    async planWeights(m) {
      const cap = options.maxBindingBytes ?? Infinity;
      plan = planUpload(m, {
        maxStorageBufferBindingSize: Math.min(device.limits.maxStorageBufferBindingSize, cap),
        maxBufferSize: Math.min(device.limits.maxBufferSize, cap),
      });
      device.pushErrorScope("out-of-memory");
      buffers = createBuffers(device, plan);
      const oom = await device.popErrorScope();
      if (oom) {
        buffers.forEach((b) => b.destroy());
        buffers = [];
        throw new InsufficientMemoryError(`The GPU ran out of memory allocating the model's ${formatBytes(plan.totalBytes)} ` +
          "of weights: close other GPU-heavy tabs or apps, or use a smaller or more quantized model.",
        { bytes: plan.totalBytes });
      }
      /** @type {Record<string, number>} */
      const splitTensors = {};
      for (const [name, t] of plan.tensors) if (t.parts.length > 1) splitTensors[name] = t.parts.length;
      return { totalBytes: plan.totalBytes, shardBytes: plan.shardBytes, splitTensors };
    },

    receiveShard(index, bytes) {
      if (!plan) throw new InvalidRequestError("receiveShard before planWeights.", {});
      uploadShard(device, plan, buffers, index, bytes);
    },

    async weightsDone() {
      await device.queue.onSubmittedWorkDone();
    },

    async compile({ graph, contextLength, prefillChunk, sampleVocab }) {
      const p = plan;
      if (!p) throw new InvalidRequestError("compile before planWeights.", {});
      const { Kernels, shaderSourceFrom } = await import("./kernels.js");
      const kernels = await Kernels.create(device, {
        ...(options.shaderBase ? { shaderSource: shaderSourceFrom(options.shaderBase) } : {}), f16,
        ...(int8MinWeights() !== undefined ? { int8MinWeights: int8MinWeights() } : {}),
        ...(prefillInt8() !== undefined ? { prefillInt8: prefillInt8() } : {}),
      });
      device.pushErrorScope("out-of-memory");
      /** @type {ReturnType<typeof lowerGraph>} */
      let lowered;
      try {
        lowered = lowerGraph({ device, kernels, graph, contextLength, prefillChunk, sampleVocab,
          weight: (name) => (hasTensor(p, name) ? tensorParts(p, buffers, name) : null) });
      } catch (e) {
        // lowerGraph freed what it had allocated; the kernels' own buffers go too.
        await device.popErrorScope();
        kernels.destroy();
        throw e;
      }
      const oom = await device.popErrorScope();
      if (oom) {
        lowered.destroy();
        throw new InsufficientMemoryError(`The GPU ran out of memory allocating the KV cache for ${contextLength} ` +
          "positions: create the engine with a smaller contextLength.", { contextLength });
      }
      // A kernel the device rejects (a validation error) is skipped by WebGPU and reported only as an
      // event; its results would be silently wrong, so a pass during which one arrives fails instead.
      /** @type {string[]} */
      const rejected = [];
      device.addEventListener?.("uncapturederror", (e) => {
        rejected.push(String(/** @type {GPUUncapturedErrorEvent} */ (e).error?.message ?? e));
      });
      /** @template {any[]} A @template R @param {(...a: A) => Promise<R>} fn @returns {(...a: A) => Promise<R>} */
      const checked = (fn) => async (...a) => {
        const r = await fn(...a);
        if (rejected.length) {
          const msg = rejected.splice(0).join("; ");
          throw new SitegenRuntimeError(`The GPU rejected a command of this model (${msg.slice(0, 300)}): please report ` +
            "it with your browser and GPU.", { gpuError: msg.slice(0, 2000) });
        }
        return r;
      };
      return {
        forward: checked(lowered.forward),
        sampleGreedy: checked(lowered.forwardGreedy),
        sampleTopK: checked(lowered.forwardTopK),
        maxTopK: Math.min(MAX_TOP_K, sampleVocab),
        profile: checked(lowered.profile),
        // (the step is submitted synchronously by the call; its checks run when its choice is in)
        submitGreedy: (id, start) => checked(() => lowered.submitGreedy(id, start))(),
        kvCacheBytes: lowered.kvCacheBytes,
        kvCacheRows: lowered.kvCacheRows,
        kvRewind: lowered.kvRewind,
        destroy: lowered.destroy,
      };
    },

    destroy() {
      if (destroyed) return;
      destroyed = true;
      buffers.forEach((b) => b.destroy());
      buffers = [];
      if (owns) device.destroy();
    },
  };
  return backend;
}

/** @param {number} n */
function formatBytes(n) {
  return n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(2)} GiB` : `${(n / 2 ** 20).toFixed(1)} MiB`;
}

/**
 * Request an adapter and a device with the limits the model needs
 * (WebGPU gives a device only its default limits unless asked).
 * @param {Manifest} manifest
 * @param {{ profile: boolean }} o  profile: also request "timestamp-query" (kernel timings)
 * @returns {Promise<GPUDevice>}
 */
async function requestDevice(manifest, { profile }) {
  /** @type {GPU | undefined} */
  let gpu = globalThis.navigator?.gpu;
  if (!gpu && typeof process !== "undefined" && process.versions?.node) {
    gpu = await (await import("./dawn.js")).getNodeGPU();
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
  // (subgroup matrices: the prefill's integer product, kernels.js probeSubgroupMatrix; listed by Dawn
  // only with its allow_unsafe_apis toggle, by Chrome only behind a flag)
  const want = new Set([...req.features, ...req.optionalFeatures, SUBGROUP_MATRIX, ...(profile ? ["timestamp-query"] : [])]);
  const requiredFeatures = /** @type {GPUFeatureName[]} */ ([...want].filter((f) => adapter.features.has(f)));
  const L = adapter.limits;
  try {
    return await adapter.requestDevice({
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
}

/**
 * Compare an adapter's or device's features with the manifest's
 * requirements; throw the error that says what is missing.
 * @param {{ features: GPUSupportedFeatures, limits: GPUSupportedLimits }} gpu
 * @param {Manifest} manifest
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
