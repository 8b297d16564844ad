// Preflight (issue 5, item 6): everything that can be known before the first
// shard byte is fetched, each failure its own actionable error.

import { InsufficientMemoryError, MissingFeatureError, BufferTooLargeError, WebGPUUnavailableError } from "../errors.js";
import { StorageQuotaError } from "./errors.js";
import { planUpload } from "../backends/webgpu/upload.js";

const GiB = 2 ** 30;

/** @param {number} n */
export function formatBytes(n) {
  if (n >= GiB) return `${(n / GiB).toFixed(2)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  return `${Math.round(n / 1024)} KiB`;
}

/**
 * The manifest's device requirements (snake_case or camelCase keys).
 * @param {any} manifest
 */
export function requirementsOf(manifest) {
  const r = manifest.requirements ?? {};
  const limits = { ...(r.limits ?? {}) };
  for (const [snake, camel] of [["max_storage_buffer_binding_size", "maxStorageBufferBindingSize"],
    ["max_buffer_size", "maxBufferSize"]]) {
    const v = r[camel] ?? r[snake];
    if (v) limits[camel] = v;
  }
  return {
    /** @type {string[]} */ features: r.features ?? [],
    /** @type {Record<string, number>} */ limits,
    /** @type {number} */ memoryBytes: r.memoryBytes ?? r.memory_bytes ?? r.gpu_memory_bytes ?? 0,
  };
}

/**
 * Is there room to store `missingBytes` more? Asks for persistent storage too.
 * Throws StorageQuotaError when the quota is known to be too small.
 * @param {number} missingBytes
 * @param {string} modelId
 * @returns {Promise<{ quota: number | null, usage: number | null, persisted: boolean | null }>}
 */
export async function checkStorage(missingBytes, modelId) {
  const storage = globalThis.navigator?.storage;
  /** @type {{ quota: number | null, usage: number | null, persisted: boolean | null }} */
  const out = { quota: null, usage: null, persisted: null };
  if (!storage?.estimate || missingBytes <= 0) return out;
  const { quota = 0, usage = 0 } = await storage.estimate();
  out.quota = quota;
  out.usage = usage;
  // Ask before checking: a persisted origin often gets a larger quota.
  try { out.persisted = storage.persist ? await storage.persist() : null; } catch { out.persisted = false; }
  const available = Math.max(0, quota - usage);
  if (quota > 0 && missingBytes > available) {
    throw new StorageQuotaError(`Not enough browser storage to keep ${modelId}: it needs ${formatBytes(missingBytes)} `
      + `more, and this site may use only ${formatBytes(available)} more (quota ${formatBytes(quota)}, used `
      + `${formatBytes(usage)}). Free disk space or delete cached models (listCachedModels/deleteCachedModel), `
      + "leave private browsing, or load without a cache (cache: 'none'; it downloads again on every visit).",
    { needed: missingBytes, available, quota, usage });
  }
  return out;
}

/**
 * Check WebGPU, the adapter's features and limits, a memory estimate and the
 * storage quota against the manifest, before any shard is fetched.
 * @param {{ manifest: any, gpu?: GPU, adapter?: GPUAdapter | null, modelId?: string, cachedBytes?: number,
 *           checkQuota?: boolean }} args
 * @returns {Promise<{ adapter: GPUAdapter, gpuBytes: number, storage: Awaited<ReturnType<typeof checkStorage>> }>}
 */
export async function preflight({ manifest, gpu = globalThis.navigator?.gpu, adapter, modelId, cachedBytes = 0,
  checkQuota = true }) {
  if (!gpu) {
    throw new WebGPUUnavailableError("This browser has no WebGPU, which the model needs: use a recent Chrome or "
      + "Edge (113+), Safari 26 or Firefox 141+, or turn WebGPU on in the browser's settings.", {});
  }
  const a = adapter ?? await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!a) {
    throw new WebGPUUnavailableError("WebGPU is present but the browser gave no GPU adapter (GPU blocklisted or "
      + "disabled): update the graphics driver, or check chrome://gpu.", {});
  }
  const req = requirementsOf(manifest);
  const missing = req.features.filter((f) => !a.features.has(f));
  if (missing.length) {
    throw new MissingFeatureError(`This GPU lacks the WebGPU feature(s) ${missing.join(", ")} that the model needs: `
      + "use another browser or GPU, or a model converted without them.", { missing });
  }
  for (const [key, need] of Object.entries(req.limits)) {
    const have = /** @type {any} */ (a.limits)[key];
    if (typeof have === "number" && have < need) {
      throw new BufferTooLargeError(`The model needs the GPU limit ${key} >= ${need}; this GPU allows ${have}: `
        + "use a GPU with larger limits, or a smaller model.", { limit: key, need, have });
    }
  }
  // The plan fails here (not mid-download) when a tensor cannot be split to fit the adapter's buffers.
  const plan = planUpload(manifest, a.limits);
  const gpuBytes = plan.totalBytes + req.memoryBytes;
  // No browser reports GPU memory; deviceMemory (RAM, capped at 8 GiB by Chrome) is a floor worth checking.
  const ram = /** @type {any} */ (globalThis.navigator)?.deviceMemory;
  if (typeof ram === "number" && ram > 0 && ram < 8 && gpuBytes > ram * GiB) {
    throw new InsufficientMemoryError(`The model needs about ${formatBytes(gpuBytes)} of GPU memory, more than this `
      + `device's ${ram} GiB of memory: use a smaller or more quantized model.`, { needed: gpuBytes, deviceMemory: ram });
  }
  const total = (manifest.shards ?? []).reduce((/** @type {number} */ s, /** @type {any} */ x) => s + x.bytes, 0);
  const storage = checkQuota ? await checkStorage(total - cachedBytes, modelId ?? manifest.name ?? "the model")
    : { quota: null, usage: null, persisted: null };
  return { adapter: a, gpuBytes, storage };
}
