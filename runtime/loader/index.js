// Weight delivery (issue 5): fetch → verify → cache → GPU, one shard at a
// time, never holding the whole model.
//
//   const loader = createLoader({ baseUrl: "models/smollm2/" });
//   const result = await loader.forEachShard({ manifest, onShard, onProgress, signal });
//
// Memory: each of `concurrency` slots owns one shard-sized buffer, reused from
// shard to shard, and holds it from the first byte received until `onShard`
// has returned; sha256 and cache writes (which each copy a shard) run one at a
// time. So the loader's peak is (concurrency + 2) × shard_size plus stream
// chunks, whatever the model's size (item 4).

import { AbortError, ManifestError, ShardIntegrityError } from "../errors.js";
import { fetchInto, fetchJson, readBody } from "./fetch.js";
import { sha256Hex } from "./integrity.js";
import { openBackend, cacheName, completeVersion } from "./cache.js";
import { ProgressTracker } from "./progress.js";
import { checkStorage } from "./preflight.js";

export { fetchJson } from "./fetch.js";
export { listCachedModels, deleteCachedModel } from "./cache.js";
export { checkStorage } from "./preflight.js";
export { CorsError, ShardNotFoundError, NetworkError, StorageQuotaError } from "./errors.js";

/**
 * @typedef {{ index: number, bytes: Uint8Array, fromCache: boolean }} ShardData
 * @typedef {import("./progress.js").ProgressEvent} ProgressEvent
 * @typedef {import("./errors.js").LoaderWarning} LoaderWarning
 * @typedef {object} LoaderOptions
 * @property {string} [baseUrl]  where the shard files are (default: the page's URL)
 * @property {number} [concurrency]  parallel shard downloads (default 4; see docs/benchmarks.md)
 * @property {"auto" | "cache-storage" | "opfs" | "none" | import("./cache.js").CacheBackend} [cache]
 * @property {string} [modelId]  cache scope (default: the manifest's name)
 * @property {number} [retries]  retries per shard after a network error or 5xx (default 5)
 * @property {number} [backoffMs]  first retry delay, doubled each time (default 300)
 * @property {boolean} [verifyCached]  re-hash shards read from the cache (default true)
 * @property {typeof fetch} [fetchImpl]
 * @typedef {object} ForEachShardArgs
 * @property {any} manifest
 * @property {(s: ShardData) => Promise<void> | void} onShard
 * @property {AbortSignal} [signal]
 * @property {(e: ProgressEvent) => void} [onProgress]
 * @typedef {{ shards: number, fromCache: number, fromNetwork: number, bytes: number, bytesFromNetwork: number,
 *             requests: number, rangeRequests: number, refetched: number, cache: string, warnings: LoaderWarning[],
 *             evicted: string[], peakBufferedBytes: number, seconds: number, version: string }} LoadResult
 */

/**
 * The manifest's version for cache scoping: a hash of everything that decides
 * the shards' bytes, so a reconverted model never matches an old cache.
 * @param {any} manifest
 */
export async function manifestVersion(manifest) {
  const key = JSON.stringify([manifest.format, manifest.version, manifest.shard_size, manifest.shards]);
  return (await sha256Hex(new TextEncoder().encode(key))).slice(0, 16);
}

/** Run `fn`s one at a time. */
function serial() {
  let tail = Promise.resolve();
  return /** @type {<T>(fn: () => Promise<T>) => Promise<T>} */ ((fn) => {
    const run = tail.then(fn);
    tail = run.then(() => undefined, () => undefined);
    return run;
  });
}

/**
 * A loader for shards next to `baseUrl` (the interface of docs/internals.md).
 * @param {LoaderOptions} [options]
 */
export function createLoader(options = {}) {
  return {
    /** @param {ForEachShardArgs} args */
    forEachShard: (args) => forEachShard({ ...options, ...args }),
  };
}

/**
 * Deliver every shard of `manifest`, verified, to `onShard` (in any order).
 * @param {ForEachShardArgs & LoaderOptions} args
 * @returns {Promise<LoadResult>}
 */
export async function forEachShard(args) {
  const { manifest, onShard, signal, onProgress, concurrency = 4, cache = "auto", retries, backoffMs,
    verifyCached = true, fetchImpl } = args;
  const started = performance.now();
  /** @type {{file: string, bytes: number, sha256: string}[]} */
  const shards = manifest?.shards;
  if (!Array.isArray(shards) || !Number.isInteger(manifest.shard_size)) {
    throw new ManifestError("The model manifest has no shard table ('shards', 'shard_size'): convert the model again.", {});
  }
  const baseUrl = args.baseUrl ?? globalThis.location?.href;
  const modelId = args.modelId ?? manifest.name ?? "model";
  const version = await manifestVersion(manifest);
  const bytesTotal = shards.reduce((a, s) => a + s.bytes, 0);
  const progress = new ProgressTracker({ bytesTotal, shardsTotal: shards.length, onProgress });
  /** @type {LoaderWarning[]} */
  const warnings = [];
  const warn = (/** @type {LoaderWarning} */ w) => { warnings.push(w); progress.emit("check", "cache", undefined, w); };
  progress.emit("check", "network");

  // Cache: open this version's scope, or run without one and say why (item 3).
  const { backend, reason } = await openBackend(cache);
  if (!backend && cache !== "none") {
    warn({ name: "StorageUnavailable", message: `The browser refused storage (${reason}); the model will load `
      + "without a cache and download again on every visit." });
  }
  const store = backend ? await backend.open(cacheName(modelId, version)) : null;
  /** @type {Set<number>} */
  const cached = new Set();
  if (store) {
    const keys = new Set(await store.keys());
    shards.forEach((s, i) => { if (keys.has(s.file)) cached.add(i); });
  }

  // Room for what is missing, before any byte is fetched.
  if (store) {
    const missing = shards.reduce((a, s, i) => a + (cached.has(i) ? 0 : s.bytes), 0);
    const storage = await checkStorage(missing, modelId);
    if (storage.persisted === false && missing > 0) {
      warn({ name: "StorageNotPersisted", message: "The browser did not grant persistent storage; it may evict "
        + "the cached model when disk space runs low." });
    }
  }

  const inner = new AbortController();
  const onAbort = () => inner.abort();
  signal?.addEventListener("abort", onAbort, { once: true });
  const verifyOne = serial();
  const writeOne = serial();
  let live = 0, peak = 0;
  const hold = (/** @type {number} */ n) => { live += n; peak = Math.max(peak, live); };
  /** @type {LoadResult} */
  const result = { shards: shards.length, fromCache: 0, fromNetwork: 0, bytes: bytesTotal, bytesFromNetwork: 0,
    requests: 0, rangeRequests: 0, refetched: 0, cache: store ? /** @type {any} */ (backend).kind : "none",
    warnings, evicted: [], peakBufferedBytes: 0, seconds: 0, version };
  let cacheWritable = Boolean(store);

  /** sha256 of a shard; the digest copies the bytes, so one at a time. */
  const digest = (/** @type {Uint8Array} */ bytes) => verifyOne(async () => {
    hold(bytes.byteLength);
    try { return await sha256Hex(bytes); } finally { hold(-bytes.byteLength); }
  });

  /** @param {number} index @param {Uint8Array} into @param {{ buf: Uint8Array | null }} scratch */
  const download = async (index, into, scratch) => {
    const url = new URL(shards[index].file, baseUrl).href;
    let got = 0;
    const stats = await fetchInto(url, into, {
      signal: inner.signal, retries, backoffMs, fetchImpl, label: `shard ${index} (${shards[index].file})`,
      cacheMode: store ? "no-store" : "default", scratch,
      onBytes: (n) => { got += n; progress.addBytes(n, "network", index); },
      onRestart: (n) => { got -= n; progress.undoBytes(n); },
    });
    result.requests += stats.requests;
    result.rangeRequests += stats.rangeRequests;
    result.bytesFromNetwork += got;
    progress.emit("download", "network", index);
    return { url, got };
  };

  /** Fill `into` with shard `index`, verified; report where it came from. @param {number} index @param {Uint8Array} into */
  const obtain = async (index, into, /** @type {{ buf: Uint8Array | null }} */ scratch) => {
    const shard = shards[index];
    if (store && cached.has(index)) {
      const response = await store.match(shard.file);
      let n = 0;
      const read = response?.body && await readBody(response.body, into, 0,
        (k) => { n += k; progress.addBytes(k, "cache", index); }, scratch, false).catch(() => null);
      const ok = read && !read.overflow && read.end === into.byteLength;
      if (ok) progress.emit("download", "cache", index);
      if (ok && (!verifyCached || await digest(into) === shard.sha256)) return true;
      // A damaged or truncated entry: forget it and fetch the shard again.
      progress.undoBytes(n);
      await store.delete(shard.file);
      cached.delete(index);
    }
    let { url, got } = await download(index, into, scratch);
    progress.emit("verify", "network", index);
    let actual = await digest(into);
    if (actual !== shard.sha256) {
      // Refetch once, bypassing every HTTP cache; a second mismatch is an error (item 2).
      progress.undoBytes(got);
      result.refetched++;
      ({ url } = await download(index, into, scratch));
      actual = await digest(into);
      if (actual !== shard.sha256) {
        throw new ShardIntegrityError(`Shard ${index} (${shard.file}) is corrupt: its sha256 is ${actual}, the `
          + `manifest says ${shard.sha256} (fetched twice from ${url}). The file on the server differs from the one `
          + "the manifest describes: upload the model folder again, all files together.",
        { index, file: shard.file, url, expected: shard.sha256, actual });
      }
    }
    return false;
  };

  /** Store a verified shard; storage failures only turn caching off. @param {number} index @param {Uint8Array} bytes */
  const save = (index, bytes) => writeOne(async () => {
    if (!store || !cacheWritable) return;
    hold(bytes.byteLength);
    try {
      // The Response copies the bytes (Fetch: extracting a BufferSource body), so the slot can be reused.
      await store.put(shards[index].file, new Response(/** @type {Uint8Array<ArrayBuffer>} */ (bytes), { headers: { "Content-Length": String(bytes.byteLength) } }));
    } catch (e) {
      cacheWritable = false;
      warn({ name: "CacheWriteFailed", message: `Storing shard ${index} failed (${/** @type {Error} */ (e).message}); `
        + "the rest of the model loads without caching." });
    } finally { hold(-bytes.byteLength); }
  });

  let next = 0;
  /** @type {unknown} */
  let firstError = null;
  const worker = async () => {
    /** @type {Uint8Array | null} */
    let slot = null;
    const scratch = { buf: /** @type {Uint8Array | null} */ (null) };
    try {
      while (next < shards.length && !firstError) {
        if (inner.signal.aborted) throw new AbortError();
        const index = next++;
        const size = shards[index].bytes;
        if (!slot || slot.byteLength < size) {
          if (slot) hold(-slot.byteLength);
          slot = new Uint8Array(Math.max(size, manifest.shard_size));
          hold(slot.byteLength);
        }
        const bytes = slot.subarray(0, size);
        const fromCache = await obtain(index, bytes, scratch);
        if (fromCache) result.fromCache++; else result.fromNetwork++;
        await Promise.all([fromCache ? undefined : save(index, bytes),
          onShard({ index, bytes, fromCache })]);
        if (inner.signal.aborted) throw new AbortError();
        progress.shardsDone++;
        progress.emit("upload", fromCache ? "cache" : "network", index);
      }
    } catch (e) {
      if (!firstError) firstError = e;
      inner.abort();
    } finally {
      if (slot) hold(-slot.byteLength);
    }
  };

  try {
    await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, shards.length)) }, worker));
    if (firstError) {
      if (signal?.aborted) throw new AbortError("Loading the model was cancelled; the shards already stored will "
        + "not be downloaded again.", {});
      throw firstError;
    }
    if (store && backend && cacheWritable) {
      result.evicted = await completeVersion(backend, store, { modelId, version, name: manifest.name ?? modelId,
        shards: shards.length, bytes: bytesTotal });
    }
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
  result.peakBufferedBytes = peak;
  result.seconds = (performance.now() - started) / 1000;
  return result;
}
