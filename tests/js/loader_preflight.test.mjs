// Preflight errors (runtime/loader/preflight.js): each failure is its own class with an actionable message.
import test from "node:test";
import assert from "node:assert/strict";
import { checkStorage } from "../../runtime/loader/preflight.js";
import { createBackend } from "../../runtime/backend.js";
import { ProgressTracker } from "../../runtime/loader/progress.js";

const manifest = {
  name: "m", shard_size: 1024, shards: [{ file: "shard-00000.bin", bytes: 600, sha256: "" }],
  tensors: [{ name: "w", dtype: "f32", shape: [4, 4], shard: 0, offset: 0, nbytes: 64 }],
  // The keys sitegen/convert/manifest.py writes (tests/test_convert.py checks the converter's side).
  requirements: { features: ["shader-f16"], optional_features: ["subgroups"], max_buffer_bytes: 64,
    max_binding_bytes: 64, weights_bytes: 64, kv_cache_bytes_per_1k_tokens: 3 * 2 ** 30 },
};
const limits = { maxStorageBufferBindingSize: 1 << 27, maxBufferSize: 1 << 28 };
const adapter = (features) => ({ features: new Set(features), limits });

test("no adapter, a missing feature and a tensor too large to split are distinct errors, before any download", async () => {
  // The WebGPU backend does these checks (runtime/backends/webgpu/index.js); the engine creates it and asks it
  // to plan the weights before the loader fetches a byte.
  const saved = globalThis.navigator;
  try {
    globalThis.navigator = /** @type {any} */ ({ gpu: { requestAdapter: async () => null } });
    await assert.rejects(createBackend(/** @type {any} */ (manifest)), {
      name: "WebGPUUnavailableError", message: /no GPU adapter is available \(blocklisted driver or GPU disabled\)/ });
    globalThis.navigator = /** @type {any} */ ({ gpu: { requestAdapter: async () => adapter([]) } });
    await assert.rejects(createBackend(/** @type {any} */ (manifest)), {
      name: "MissingFeatureError",
      message: /^This GPU adapter lacks WebGPU feature shader-f16, which the model needs/ });
  } finally {
    globalThis.navigator = saved;
  }
  // A 1-D tensor larger than the device's largest binding cannot be split by rows: refused when planning.
  const big = { ...manifest, tensors: [{ name: "norm", dtype: "f32", shape: [2 ** 26], shard: 0, offset: 0, nbytes: 2 ** 28 }],
    shards: [{ file: "shard-00000.bin", bytes: 2 ** 28, sha256: "" }], shard_size: 2 ** 28 };
  const device = /** @type {any} */ ({ ...adapter(["shader-f16"]), lost: new Promise(() => {}), destroy() {} });
  const backend = await createBackend(/** @type {any} */ (big), { device });
  await assert.rejects(backend.planWeights(/** @type {any} */ (big)), {
    name: "BufferTooLargeError", message: /Tensor norm \(1-D, 268435456 bytes\) is larger than this GPU's largest storage buffer/ });
});

test("storage: too small a quota is a StorageQuotaError; persist() is asked", async () => {
  let asked = false;
  globalThis.navigator ??= /** @type {any} */ ({});
  Object.defineProperty(globalThis.navigator, "storage", { configurable: true, value: {
    estimate: async () => ({ quota: 10 * 2 ** 20, usage: 9 * 2 ** 20 }),
    persist: async () => { asked = true; return false; } } });
  await assert.rejects(checkStorage(5 * 2 ** 20, "gemma"), {
    name: "StorageQuotaError",
    message: "Not enough browser storage to keep gemma: it needs 5.0 MiB more, and this site may use only 1.0 MiB "
      + "more (quota 10.0 MiB, used 9.0 MiB). Free disk space or delete cached models "
      + "(listCachedModels/deleteCachedModel), leave private browsing, or load without a cache (cache: 'none'; "
      + "it downloads again on every visit)." });
  assert.ok(asked);
  const ok = await checkStorage(512 * 1024, "gemma");
  assert.equal(ok.persisted, false);
});

test("progress: rate over recent bytes and an ETA", () => {
  let t = 0;
  const events = [];
  const p = new ProgressTracker({ bytesTotal: 1000, shardsTotal: 2, onProgress: (e) => events.push(e), now: () => t });
  t = 1000; p.addBytes(100, "network", 0);
  t = 2000; p.addBytes(100, "network", 0);
  const e = events.at(-1);
  assert.equal(e.phase, "download");
  assert.equal(e.rate, 100);            // 200 bytes in 2 s
  assert.equal(e.eta, 8);               // 800 bytes left at 100 B/s
  assert.equal(e.source, "network");
});

test("memory: weights plus the KV cache for the context length, against deviceMemory", async () => {
  const { requirementsOf, checkMemory } = await import("../../runtime/loader/preflight.js");
  const r = requirementsOf(manifest, { contextLength: 2048 });
  assert.deepEqual([r.features, r.optionalFeatures, r.weightsBytes, r.kvBytes], [["shader-f16"], ["subgroups"], 64, 6 * 2 ** 30]);
  assert.equal(checkMemory(manifest, { contextLength: 1024, deviceMemory: 4 }), 64 + 3 * 2 ** 30);
  assert.throws(() => checkMemory(manifest, { contextLength: 2048, deviceMemory: 4 }), {
    name: "InsufficientMemoryError",
    message: "The model needs about 6.00 GiB of GPU memory, more than this device's 4 GiB of memory: use a smaller "
      + "or more quantized model." });
});
