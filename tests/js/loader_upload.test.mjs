// The upload plan (runtime/loader/upload.js) against an independent oracle:
// a synthetic stream is laid out exactly as docs/weights-format.md says, the
// plan uploads it shard by shard through Dawn (SwiftShader), and every part
// buffer read back must equal the rows sliced directly from the stream.
// Run: VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json LD_LIBRARY_PATH=/usr/lib/chromium node --test tests/js/
import test from "node:test";
import assert from "node:assert/strict";
import { planUpload, createBuffers, uploadShard, tensorParts } from "../../runtime/backends/webgpu/upload.js";
import { getNodeGPU } from "../../runtime/backends/webgpu/dawn.js";

const align = (n, a) => Math.ceil(n / a) * a;

/** Lay tensors end to end (256-aligned), fill with a seeded pattern, cut into shards. */
function makeModel(specs, shardSize) {
  const tensors = [];
  let pos = 0;
  for (const [name, dtype, shape] of specs) {
    const rows = shape.length > 1 ? shape[0] : 1;
    const cols = shape.length > 1 ? shape[1] : shape[0];
    const rowBytes = { f32: cols * 4, f16: cols * 2, q8: cols, q4: cols / 2 }[dtype];
    const entry = { name, dtype, shape, shard: Math.floor(pos / shardSize), offset: pos % shardSize };
    if (dtype === "q4" || dtype === "q8") {
      const qn = rows * rowBytes, sn = rows * (cols / 32) * 2;
      entry.group_size = 32;
      entry.planes = [{ name: "q", offset: 0, nbytes: qn }, { name: "scales", offset: align(qn, 256), nbytes: sn }];
      entry.nbytes = align(qn, 256) + sn;
    } else {
      entry.nbytes = rows * rowBytes;
    }
    tensors.push(entry);
    pos = align(pos + entry.nbytes, 256);
  }
  const total = tensors.at(-1).shard * shardSize + tensors.at(-1).offset + tensors.at(-1).nbytes;
  const stream = new Uint8Array(total);
  let x = 12345;
  for (let i = 0; i < total; i++) { x = (x * 1103515245 + 12345) >>> 0; stream[i] = x >>> 24; }
  const shards = [];
  for (let o = 0; o < total; o += shardSize) shards.push({ file: `shard-${shards.length}.bin`, bytes: Math.min(shardSize, total - o), sha256: "" });
  return { manifest: { shard_size: shardSize, shards, tensors }, stream };
}

async function readBack(device, buffer, size) {
  const staging = device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const enc = device.createCommandEncoder();
  enc.copyBufferToBuffer(buffer, 0, staging, 0, size);
  device.queue.submit([enc.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const out = new Uint8Array(staging.getMappedRange().slice(0));
  staging.unmap();
  staging.destroy();
  return out;
}

test("split and straddling tensors are assembled in place, part by part", async () => {
  const gpu = await getNodeGPU();
  const adapter = await gpu.requestAdapter();
  const device = await adapter.requestDevice();
  // Odd group counts (cols 32*3) give 6-byte scale rows; f16 with odd cols gives ragged rows; 1-D tail tensor.
  const { manifest, stream } = makeModel([
    ["a.q4", "q4", [100, 96]], ["b.q8", "q8", [77, 160]], ["c.f16", "f16", [9, 7]],
    ["d.q4big", "q4", [1000, 32]], ["e.f32", "f32", [13]], ["g.f16", "f16", [5]],
  ], 1024);
  const limits = { maxStorageBufferBindingSize: 4096, maxBufferSize: 1 << 20 };
  const plan = planUpload(manifest, limits);
  assert.ok(plan.tensors.get("d.q4big").parts.length > 1, "the big tensor is split");
  for (const b of plan.buffers) assert.ok(b.size <= 4096 && b.size % 4 === 0, `buffer ${b.label} size ${b.size}`);
  const buffers = createBuffers(device, plan);
  // Shards arrive in any order.
  for (const s of [...manifest.shards.keys()].reverse()) {
    const start = s * manifest.shard_size;
    uploadShard(device, plan, buffers, s, stream.slice(start, start + manifest.shards[s].bytes));
  }
  for (const t of manifest.tensors) {
    const tp = plan.tensors.get(t.name);
    const base = t.shard * manifest.shard_size + t.offset;
    const parts = tensorParts(plan, buffers, t.name);
    for (const [i, p] of tp.parts.entries()) {
      const got = await readBack(device, buffers[p.bufferIndex], plan.buffers[p.bufferIndex].size);
      const q = t.planes ? t.planes[0] : { offset: 0, nbytes: t.nbytes };
      const qRow = q.nbytes / tp.rows;
      const want = stream.subarray(base + q.offset + p.rowStart * qRow, base + q.offset + p.rowEnd * qRow);
      assert.deepEqual(got.subarray(0, want.length), want, `${t.name} part ${i} codes`);
      if (t.planes) {
        const s = t.planes[1], sRow = s.nbytes / tp.rows;
        const wantS = stream.subarray(base + s.offset + p.rowStart * sRow, base + s.offset + p.rowEnd * sRow);
        assert.equal(p.scalesOffset % 256, 0);
        assert.deepEqual(got.subarray(p.scalesOffset, p.scalesOffset + wantS.length), wantS, `${t.name} part ${i} scales`);
      }
      assert.equal(parts[i].rows, p.rowEnd - p.rowStart);
    }
  }
  device.destroy();
});

test("a 1-D tensor above the binding limit is a clear error", () => {
  const { manifest } = makeModel([["norm", "f32", [2048]]], 4096);
  assert.throws(() => planUpload(manifest, { maxStorageBufferBindingSize: 4096, maxBufferSize: 4096 }),
    { name: "BufferTooLargeError", message: /Tensor norm \(1-D, 8192 bytes\) is larger than this GPU's largest storage buffer \(4096 bytes\)/ });
});

test("planes that disagree with the shape are a manifest error", () => {
  const { manifest } = makeModel([["w", "q4", [8, 64]]], 4096);
  manifest.tensors[0].planes[0].nbytes = 100;
  assert.throws(() => planUpload(manifest, { maxStorageBufferBindingSize: 1 << 20, maxBufferSize: 1 << 20 }),
    { name: "ManifestError", message: /Tensor w \(q4, shape \[8,64\]\) has planes that do not match its shape/ });
});

test("a quantization group size the kernels cannot decode is refused before any download", () => {
  const { manifest } = makeModel([["w", "q4", [8, 64]]], 4096);
  assert.doesNotThrow(() => planUpload(manifest, { maxStorageBufferBindingSize: 1 << 20, maxBufferSize: 1 << 20 }));
  manifest.tensors[0].group_size = 64;
  manifest.tensors[0].planes[1].nbytes = 8 * (64 / 64) * 2;
  assert.throws(() => planUpload(manifest, { maxStorageBufferBindingSize: 1 << 20, maxBufferSize: 1 << 20 }),
    { name: "ManifestError", message: /Tensor w is quantized in groups of 64; this runtime's kernels read groups of 32/ });
});

test("a tensor group is one tensor, split at member boundaries; each member is a row range of it", () => {
  // q/k/v of 64 + 32 + 32 rows as one q4 group [128, 64]: members keep their own entries (group, group_row).
  const { manifest } = makeModel([["g.qkv", "q4", [128, 64]], ["n", "f32", [64]]], 4096);
  const [g] = manifest.tensors;
  const members = [["g.q", 0, 64], ["g.k", 64, 32], ["g.v", 96, 32]];
  manifest.groups = [{ ...g, members: members.map(([n]) => n) }];
  manifest.tensors = [manifest.tensors[1], ...members.map(([name, row, rows]) => ({ name, dtype: "q4", shape: [rows, 64],
    group: "g.qkv", group_row: row, shard: 0, offset: 0, nbytes: 1, planes: [] }))];
  const whole = planUpload(manifest, { maxStorageBufferBindingSize: 1 << 20, maxBufferSize: 1 << 20 });
  assert.equal(whole.tensors.get("g.qkv").parts.length, 1, "the group is one buffer");
  assert.equal(whole.buffers.length, 2, "members take no buffer of their own");
  const fake = whole.buffers.map((_, i) => /** @type {any} */ ({ id: i }));
  const gi = whole.tensors.get("g.qkv").parts[0].bufferIndex;
  assert.deepEqual(tensorParts(whole, fake, "g.k").map((p) => [p.rows, p.rowOffset, p.rowStart, p.buffer.id]), [[32, 64, 0, gi]]);
  // A binding limit below the group's size: cut at members (64 | 32 | 32), each part self-contained.
  const split = planUpload(manifest, { maxStorageBufferBindingSize: 3072, maxBufferSize: 1 << 20 });
  assert.deepEqual(split.tensors.get("g.qkv").parts.map((p) => [p.rowStart, p.rowEnd]), [[0, 64], [64, 96], [96, 128]]);
  const bufs = split.buffers.map((_, i) => /** @type {any} */ ({ id: i }));
  assert.deepEqual(tensorParts(split, bufs, "g.v").map((p) => [p.rows, p.rowOffset, p.rowStart]), [[32, 0, 0]]);
  assert.deepEqual(tensorParts(split, bufs, "g.qkv").map((p) => p.rowStart), [0, 64, 96]);
  // A member the group does not place where the tensor table says is a manifest error.
  manifest.tensors[2].group_row = 60;
  assert.throws(() => planUpload(manifest, { maxStorageBufferBindingSize: 1 << 20, maxBufferSize: 1 << 20 }),
    { name: "ManifestError", message: /Tensor group g.qkv lists member g.k, which the tensor table does not place at row 64/ });
});
