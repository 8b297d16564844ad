// The weights cache (issue 5, item 3).
//
// Two backends behind one interface shaped like the Web Cache API
// (`open(name)` → `{match, put, delete, keys}`): Cache Storage and the Origin
// Private File System. Each model version gets its own cache, named
//   sitegen-weights-v1/<model id>/<version>
// where <version> hashes the manifest's shard table, so an upgraded model can
// never read a previous version's bytes; the "v1" is the cache layout's own
// version, bumped by a runtime that stores things differently. A `__meta__`
// entry, written once every shard is in, marks a version complete; only then
// are the model's older versions deleted.

/**
 * @typedef {{ match(key: string): Promise<Response | undefined>, put(key: string, response: Response): Promise<void>,
 *             delete(key: string): Promise<boolean>, keys(): Promise<string[]> }} CacheLike
 * @typedef {{ kind: "cache-storage" | "opfs", open(name: string): Promise<CacheLike>,
 *             delete(name: string): Promise<boolean>, keys(): Promise<string[]> }} CacheBackend
 * @typedef {{ modelId: string, version: string, name: string, bytes: number, shards: number,
 *             shardsCached: number, complete: boolean, backend: string }} CachedModel
 */

export const CACHE_PREFIX = "sitegen-weights-v1/";
const META = "__meta__";
// Cache Storage keys must be http(s) URLs; this one never reaches a network.
const KEY_BASE = "https://sitegen-cache.invalid/";

/** @returns {CacheBackend} */
export function cacheStorageBackend() {
  const storage = globalThis.caches;
  return {
    kind: "cache-storage",
    async open(name) {
      const c = await storage.open(name);
      return {
        async match(key) { return (await c.match(KEY_BASE + encodeURIComponent(key))) ?? undefined; },
        async put(key, response) { await c.put(KEY_BASE + encodeURIComponent(key), response); },
        async delete(key) { return c.delete(KEY_BASE + encodeURIComponent(key)); },
        async keys() { return (await c.keys()).map((r) => decodeURIComponent(r.url.slice(KEY_BASE.length))); },
      };
    },
    delete: (name) => storage.delete(name),
    keys: () => storage.keys(),
  };
}

/**
 * OPFS: one directory per cache under `sitegen-cache/`, one file per entry.
 * `createWritable()` writes to a swap file committed on `close()`, so a
 * half-written shard is never visible.
 * @returns {CacheBackend}
 */
export function opfsBackend() {
  const rootDir = async () => (await navigator.storage.getDirectory()).getDirectoryHandle("sitegen-cache", { create: true });
  const dirName = (/** @type {string} */ name) => encodeURIComponent(name);
  return {
    kind: "opfs",
    async open(name) {
      const dir = await (await rootDir()).getDirectoryHandle(dirName(name), { create: true });
      return {
        async match(key) {
          try {
            const file = await (await dir.getFileHandle(encodeURIComponent(key))).getFile();
            return new Response(file, { headers: { "Content-Length": String(file.size) } });
          } catch { return undefined; }
        },
        async put(key, response) {
          const writable = await (await dir.getFileHandle(encodeURIComponent(key), { create: true })).createWritable();
          if (!response.body) { await writable.close(); return; }
          await response.body.pipeTo(writable); // closes (commits) the writable
        },
        async delete(key) {
          try { await dir.removeEntry(encodeURIComponent(key)); return true; } catch { return false; }
        },
        async keys() {
          /** @type {string[]} */
          const out = [];
          // @ts-ignore: async iteration of a directory handle is not in every lib.dom version
          for await (const k of dir.keys()) if (!k.endsWith(".crswap")) out.push(decodeURIComponent(k));
          return out;
        },
      };
    },
    async delete(name) {
      try { await (await rootDir()).removeEntry(dirName(name), { recursive: true }); return true; } catch { return false; }
    },
    async keys() {
      /** @type {string[]} */
      const out = [];
      // @ts-ignore: see above
      for await (const k of (await rootDir()).keys()) out.push(decodeURIComponent(k));
      return out;
    },
  };
}

/**
 * Open the backend asked for, or explain why there is none.
 * "auto" is Cache Storage (see docs/benchmarks.md, "Weight delivery", for the measurement).
 * @param {"auto" | "cache-storage" | "opfs" | "none" | CacheBackend} choice
 * @returns {Promise<{ backend: CacheBackend | null, reason: string }>}
 */
export async function openBackend(choice) {
  if (choice === "none") return { backend: null, reason: "caching is turned off for this model" };
  if (typeof choice === "object") return { backend: choice, reason: "" };
  const kind = choice === "auto" ? "cache-storage" : choice;
  try {
    const backend = kind === "opfs" ? opfsBackend() : cacheStorageBackend();
    if (kind === "opfs" && !navigator.storage?.getDirectory) throw new Error("OPFS is not supported");
    if (kind === "cache-storage" && !globalThis.caches) throw new Error("Cache Storage is not available");
    // Browsers refuse storage in private windows or for opaque origins by throwing here.
    const probe = await backend.open(CACHE_PREFIX + "probe");
    await probe.keys();
    await backend.delete(CACHE_PREFIX + "probe");
    return { backend, reason: "" };
  } catch (e) {
    return { backend: null, reason: `${/** @type {Error} */ (e).message || e}` };
  }
}

/** @param {string} modelId @param {string} version */
export const cacheName = (modelId, version) => `${CACHE_PREFIX}${modelId}/${version}`;

/** @param {string} name */
function parseName(name) {
  if (!name.startsWith(CACHE_PREFIX)) return null;
  const rest = name.slice(CACHE_PREFIX.length);
  const slash = rest.lastIndexOf("/");
  if (slash <= 0) return null;
  return { modelId: rest.slice(0, slash), version: rest.slice(slash + 1) };
}

/**
 * Byte size of a cached entry without reading it.
 * @param {Response} r
 */
async function entrySize(r) {
  const n = Number(r.headers.get("Content-Length"));
  if (Number.isFinite(n) && n > 0) return n;
  return (await r.arrayBuffer()).byteLength;
}

/**
 * Every model version in a backend's storage, with sizes.
 * @param {{ cache?: "auto" | "cache-storage" | "opfs" | CacheBackend }} [options]
 * @returns {Promise<CachedModel[]>}
 */
export async function listCachedModels({ cache = "auto" } = {}) {
  const { backend } = await openBackend(cache);
  if (!backend) return [];
  /** @type {CachedModel[]} */
  const out = [];
  for (const name of await backend.keys()) {
    const parsed = parseName(name);
    if (!parsed) continue;
    const c = await backend.open(name);
    let bytes = 0, shardsCached = 0;
    /** @type {any} */
    let meta = null;
    for (const key of await c.keys()) {
      const r = await c.match(key);
      if (!r) continue;
      if (key === META) { meta = await r.json(); continue; }
      bytes += await entrySize(r);
      shardsCached++;
    }
    out.push({ ...parsed, name: meta?.name ?? parsed.modelId, bytes, shards: meta?.shards ?? shardsCached,
      shardsCached, complete: Boolean(meta), backend: backend.kind });
  }
  return out;
}

/**
 * Delete every cached version of a model (or one version).
 * @param {string} modelId
 * @param {{ version?: string, cache?: "auto" | "cache-storage" | "opfs" | CacheBackend }} [options]
 * @returns {Promise<number>} how many versions were deleted
 */
export async function deleteCachedModel(modelId, { version, cache = "auto" } = {}) {
  const { backend } = await openBackend(cache);
  if (!backend) return 0;
  let n = 0;
  for (const name of await backend.keys()) {
    const parsed = parseName(name);
    if (parsed && parsed.modelId === modelId && (!version || parsed.version === version)) {
      if (await backend.delete(name)) n++;
    }
  }
  return n;
}

/**
 * Mark a model version complete and delete the model's other versions.
 * @param {CacheBackend} backend @param {CacheLike} cache
 * @param {{ modelId: string, version: string, name: string, shards: number, bytes: number }} meta
 * @returns {Promise<string[]>} names of the evicted caches
 */
export async function completeVersion(backend, cache, meta) {
  await cache.put(META, new Response(JSON.stringify({ ...meta, completedAt: new Date().toISOString() }),
    { headers: { "Content-Type": "application/json" } }));
  /** @type {string[]} */
  const evicted = [];
  for (const name of await backend.keys()) {
    const parsed = parseName(name);
    if (parsed && parsed.modelId === meta.modelId && parsed.version !== meta.version) {
      await backend.delete(name);
      evicted.push(name);
    }
  }
  return evicted;
}
