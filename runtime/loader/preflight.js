// Preflight (issue 5, item 6): everything that can be known before the first
// shard byte is fetched, each failure its own actionable error: the memory
// estimate and the storage quota here; WebGPU, its features and the weight
// plan against the device's limits in the backend (runtime/backends/webgpu/),
// which the engine creates and asks to plan before the loader fetches a byte.

import { InsufficientMemoryError } from "../errors.js";
import { StorageQuotaError } from "./errors.js";

const GiB = 2 ** 30;

/** @param {number} n */
export function formatBytes(n) {
  if (n >= GiB) return `${(n / GiB).toFixed(2)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  return `${Math.round(n / 1024)} KiB`;
}

/**
 * The manifest's device requirements, exactly the keys the converter writes
 * (sitegen/convert/manifest.py `requirements`, docs/weights-format.md#requirements).
 * The one reader of them: the engine (checkMemory) and the backends (features, limits) use it.
 * @param {any} manifest
 * @param {{ contextLength?: number, prefillChunk?: number }} [opts]  KV-cache positions the memory
 *   estimate includes (default 1024), and the most tokens per pass (default 256, the engine's), which
 *   sizes a sliding-window layer's ring
 */
export function requirementsOf(manifest, { contextLength = 1024, prefillChunk = 256 } = {}) {
  const r = manifest?.requirements ?? {};
  const num = (/** @type {unknown} */ v) => (typeof v === "number" && Number.isFinite(v) && v >= 0 ? v : 0);
  const weightsBytes = num(r.weights_bytes);
  // Full-attention layers per started 1k positions; sliding-window layers (kv_cache_sliding, issue 12)
  // a ring of min(context, window + chunk - 1) positions, as runtime/graph.js kvCacheLayout allocates.
  const sliding = r.kv_cache_sliding;
  const slidingPerPosition = Math.min(num(sliding?.bytes_per_position), num(r.kv_cache_bytes_per_1k_tokens) / 1024);
  const ring = Math.min(contextLength, num(sliding?.window) + Math.max(1, Math.min(prefillChunk, contextLength)) - 1);
  const kvBytes = (num(r.kv_cache_bytes_per_1k_tokens) - 1024 * slidingPerPosition) * Math.ceil(contextLength / 1024)
    + slidingPerPosition * ring;
  return {
    /** WebGPU features the model cannot run without. @type {string[]} */
    features: Array.isArray(r.features) ? r.features : [],
    /** Features the kernels use when the adapter has them. @type {string[]} */
    optionalFeatures: Array.isArray(r.optional_features) ? r.optional_features : ["shader-f16", "subgroups"],
    weightsBytes,
    /** Weight bytes a decoded token reads (a mixture-of-experts model reads only its chosen experts). */
    weightsBytesPerToken: typeof r.weights_bytes_per_token === "number" ? num(r.weights_bytes_per_token) : weightsBytes,
    kvBytes,
    /** GPU memory the model needs: weights plus the KV cache for `contextLength`. */
    memoryBytes: weightsBytes + kvBytes,
  };
}

/**
 * The memory check that can be made before any download: no browser reports
 * GPU memory, but `navigator.deviceMemory` (RAM, capped at 8 GiB by Chrome) is
 * a floor worth checking on small devices. Throws InsufficientMemoryError.
 * @param {any} manifest
 * @param {{ contextLength?: number, prefillChunk?: number, deviceMemory?: number }} [opts]
 * @returns {number} the estimate (bytes)
 */
export function checkMemory(manifest, { contextLength, prefillChunk, deviceMemory } = {}) {
  const need = requirementsOf(manifest, { contextLength, prefillChunk }).memoryBytes;
  const ram = deviceMemory ?? /** @type {any} */ (globalThis.navigator)?.deviceMemory;
  if (typeof ram === "number" && ram > 0 && ram < 8 && need > ram * GiB) {
    throw new InsufficientMemoryError(`The model needs about ${formatBytes(need)} of GPU memory, more than this `
      + `device's ${ram} GiB of memory: use a smaller or more quantized model.`, { needed: need, deviceMemory: ram });
  }
  return need;
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

