// The runtime's one manifest reader (runtime/manifest.js): what it refuses, and how it says so.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readManifest } from "../../runtime/manifest.js";

const good = {
  format: "sitegen-weights", version: 1, name: "m", shard_size: 256, shards: [], tensors: [],
  config: { vocab_size: 10, hidden_size: 8, num_layers: 1, num_heads: 2, num_kv_heads: 1, head_dim: 4 },
};

test("a manifest the runtime can use is returned as it is", () => {
  assert.equal(readManifest(good), good);
});

test("other formats, other versions and missing or malformed parts are ManifestErrors that say what to do", () => {
  assert.throws(() => readManifest({ ...good, format: "gguf" }), {
    name: "ManifestError", message: /not a sitegen model manifest .*convert the model with `sitegen convert`/ });
  assert.throws(() => readManifest({ ...good, version: 3 }), {
    name: "ManifestError", message: "The model manifest has version 3; this runtime reads versions 1, 2: rebuild the site with a matching sitegen." });
  assert.doesNotThrow(() => readManifest({ ...good, version: 2, groups: [] }));
  assert.throws(() => readManifest({ ...good, version: 2, groups: [], tensors: [{ name: "a.weight", group: "a.qkv.weight" }] }), {
    name: "ManifestError", message: /Tensor a.weight names group 'a.qkv.weight', which the manifest does not list/ });
  assert.throws(() => readManifest({ ...good, tensors: undefined }), { name: "ManifestError", message: /has no 'tensors'/ });
  assert.throws(() => readManifest({ ...good, config: { ...good.config, head_dim: 0 } }), {
    name: "ManifestError", message: /config\.head_dim is 0, not a positive integer: convert the model again/ });
  assert.throws(() => readManifest(null), { name: "ManifestError" });
});
