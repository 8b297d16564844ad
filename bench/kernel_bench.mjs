// Kernel micro-benchmark: device time of the decode kernels at real model shapes, from timestamp
// queries (each dispatch in a compute pass of its own; the median of 30), as achieved bandwidth.
// It is how the matvec tuning (lanes per row, rows per invocation) and the attention split were
// chosen: run it on the GPU machine (see ../shared/gpu/README.md) and read the GB/s.
//
//   node bench/kernel_bench.mjs [--shapes llama-3.2-1b] [--dtypes q4,q8] [--tune 32x1,32x2,32x4,...]
//                               [--contexts 128,512,4096] [--json] [--no-subgroups] [--prefill 512]
//                               [--attn-tune default,16x32,32x64,...] (split attention: keys per block x most spans)
//
// --prefill M also times each matrix (but the output head, which a prefill computes for one row) as a
// prefill of M tokens, in TFLOP/s: the f32 tiled matmul, and the integer product (xmm_main with its
// quantize dispatch) where the device has subgroup matrices.
//
// Weights are random bytes, scales included (their values do not change the time).

import { parseArgs } from "node:util";
import { Kernels, SUBGROUP_MATRIX } from "../runtime/backends/webgpu/kernels.js";
import { getNodeGPU } from "../runtime/backends/webgpu/dawn.js";
import { passTimer } from "./timestamps.mjs";

/**
 * Bytes and planes of an N x K weight (docs/weights-format.md): q4/q8 codes, then the f16 scales
 * at a 256-byte boundary. `fill` writes one chunk: random words for q4/q8 (codes and scales alike),
 * a constant for f16/f32.
 * @param {string} dtype @param {number} N @param {number} K
 */
function quantizedLayout(dtype, N, K) {
  const codes = dtype === "q4" ? N * K / 2 : dtype === "q8" ? N * K : dtype === "f16" ? N * K * 2 : N * K * 4;
  const quant = dtype === "q4" || dtype === "q8";
  const scalesOffset = quant ? Math.ceil(codes / 256) * 256 : 0;
  const bytes = quant ? scalesOffset + N * K / 16 : codes;
  return { bytes, scalesOffset, fill: (/** @type {Uint32Array} */ u32) => {
    for (let i = 0; i < u32.length; i++) u32[i] = dtype === "f32" ? 0x3c23d70a : quant ? (Math.random() * 2 ** 32) >>> 0 : 0x211f211f;
  } };
}

const SHAPES = {
  // [name, rows N, cols K, gated]: the matrices of one layer, and the output head.
  "smollm2-135m": { hidden: 576, heads: 9, kvHeads: 3, headDim: 64, mats: [["qkv", 960, 576, false], ["o", 576, 576, false],
    ["gate_up", 1536, 576, true], ["down", 576, 1536, false], ["lm_head", 49152, 576, false]] },
  "llama-3.2-1b": { hidden: 2048, heads: 32, kvHeads: 8, headDim: 64, mats: [["qkv", 3072, 2048, false], ["o", 2048, 2048, false],
    ["gate_up", 8192, 2048, true], ["down", 2048, 8192, false], ["lm_head", 128256, 2048, false]] },
  "gemma-7b": { hidden: 3072, heads: 16, kvHeads: 16, headDim: 256, mats: [["qkv", 12288, 3072, false], ["o", 3072, 4096, false],
    ["gate_up", 24576, 3072, true], ["down", 3072, 24576, false], ["lm_head", 256000, 3072, false]] },
};

const { values: v } = parseArgs({ options: {
  shapes: { type: "string", default: "llama-3.2-1b" }, dtypes: { type: "string", default: "q4" },
  tune: { type: "string", default: "default,8x1,16x1,32x1,64x1,16x2,32x2,64x2,16x4,32x4,32x8" },
  contexts: { type: "string", default: "128,512,4096" }, json: { type: "boolean" }, "no-subgroups": { type: "boolean" }, reps: { type: "string", default: "30" },
  prefill: { type: "string", default: "0" },
  // the split attention's keys per block x most spans ("default": the kernels' choice)
  "attn-tune": { type: "string", default: "default" },
} });
const REPS = Number(v.reps);

const gpu = await getNodeGPU();
/** @type {any} */ (globalThis).__benchGPU = gpu;  // dawn.node crashes once its GPU object is collected
const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
if (!adapter) throw new Error("no WebGPU adapter");
// (subgroup matrices, for the prefill's integer product: Dawn lists them with SITEGEN_DAWN_FLAGS=enable-dawn-features=allow_unsafe_apis)
const feats = /** @type {GPUFeatureName[]} */ (["subgroups", "timestamp-query", SUBGROUP_MATRIX].filter((f) => adapter.features.has(f)));
if (!feats.includes("timestamp-query")) throw new Error("the adapter has no timestamp-query");
const device = await adapter.requestDevice({ requiredFeatures: feats, requiredLimits: {
  maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize, maxBufferSize: adapter.limits.maxBufferSize,
  // as the engine asks (runtime/backends/webgpu/index.js): the matmul's K step follows this limit
  maxComputeWorkgroupStorageSize: adapter.limits.maxComputeWorkgroupStorageSize } });
// A variant that fails validation would leave the timestamps of the one before it in the readback.
device.addEventListener("uncapturederror", (/** @type {any} */ e) => { console.error(`WebGPU error: ${e.error.message}`); process.exit(1); });
const k = await Kernels.create(device, { f16: false, subgroups: feats.includes("subgroups") && !v["no-subgroups"] });
const kDot4 = await Kernels.create(device, { f16: false, subgroups: feats.includes("subgroups") && !v["no-subgroups"], prefillInt8: "dot4" });
const timePass = passTimer(device, REPS);
console.error(`prefill's integer product: ${JSON.stringify(k.features.xmm)}`);

/** @param {number} bytes @param {(u32: Uint32Array) => void} [fill] */
function buffer(bytes, fill) {
  const size = Math.ceil(bytes / 16) * 16;
  const b = device.createBuffer({ size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
  const chunk = 64 << 20;
  for (let off = 0; off < size; off += chunk) {
    const n = Math.min(chunk, size - off);
    const u32 = new Uint32Array(n / 4);
    if (fill) fill(u32); else for (let i = 0; i < u32.length; i++) u32[i] = (Math.random() * 2 ** 32) >>> 0;
    device.queue.writeBuffer(b, off, u32);
  }
  return b;
}

/** Median device time (ms) of `op` alone. @param {{ record: (p: GPUComputePassEncoder) => void }} op */
const time = (op) => timePass((p) => op.record(p));

const rows = [];
const out = (/** @type {any} */ r) => { rows.push(r); if (!v.json) console.log(JSON.stringify(r)); };
for (const shapeName of v.shapes.split(",")) {
  const shape = SHAPES[/** @type {keyof SHAPES} */ (shapeName)];
  if (!shape) throw new Error(`unknown shape ${shapeName}`);
  for (const dtype of /** @type {("q4" | "q8" | "f16" | "f32")[]} */ (v.dtypes.split(","))) {
    for (const [name, N, K, gated] of /** @type {[string, number, number, boolean][]} */ (shape.mats)) {
      const lay = quantizedLayout(dtype, N, K);
      const w = buffer(lay.bytes, (u32) => lay.fill(u32));
      const g = gated ? buffer(lay.bytes, (u32) => lay.fill(u32)) : null;
      const x = buffer(K * 4, (u32) => new Float32Array(u32.buffer).fill(0.5));
      const nw = buffer(K * 4, (u32) => new Float32Array(u32.buffer).fill(1));
      const o = buffer(N * 4, (u32) => u32.fill(0));
      const part = (/** @type {GPUBuffer} */ b) => ({ buffer: b, dtype, rows: N, cols: K, scalesOffset: lay.scalesOffset });
      const bytes = lay.bytes * (gated ? 2 : 1);
      k.setStep({ tokens: 1, pos0: 0 });
      for (const t of v.tune.split(",")) {
        const tune = t === "default" ? undefined : { tpr: Number(t.split("x")[0]), nr: Number(t.split("x")[1]) };
        for (const prenorm of name === "o" || name === "down" ? [false] : [false, true]) {
          const op = k.linear({ out: o, x, w: part(w), gate: g ? part(g) : null, act: gated ? "silu" : null, tune,
            prenorm: prenorm ? { x, weight: nw, eps: 1e-5 } : null });
          const ms = await time(op);
          out({ shape: shapeName, dtype, mat: name, N, K, variant: op.variant(1), ms: +ms.toFixed(5),
            GBs: +(bytes / ms / 1e6).toFixed(1) });
        }
      }
      const M = Number(v.prefill);
      if (M > 0 && name !== "lm_head") {
        const xm = buffer(M * K * 4, (u32) => { const f = new Float32Array(u32.buffer); for (let i = 0; i < f.length; i++) f[i] = Math.random() - 0.5; });
        const om = buffer(M * N * 4, (u32) => u32.fill(0));
        k.setStep({ tokens: M, pos0: 0 });
        kDot4.setStep({ tokens: M, pos0: 0 });
        // the f32 tiled matmul, and the integer product (with its quantize dispatch): on subgroup matrices
        // where the device has them, and its dot4I8Packed form (a device without them)
        for (const [impl, kk] of /** @type {const} */ ([["matmul", k], ["xmm", k], ["xmm", kDot4]])) {
          if (impl === "xmm" && !(kk.features.xmm && (dtype === "q4" || dtype === "q8"))) continue;
          const op = kk.linear({ out: om, x: xm, w: part(w), gate: g ? part(g) : null, act: gated ? "silu" : null, impl, maxTokens: M });
          const ms = await time(op);
          out({ shape: shapeName, dtype, mat: name, N, K, tokens: M, variant: op.variant(M), ms: +ms.toFixed(5),
            TFLOPs: +(2 * M * N * K * (gated ? 2 : 1) / ms / 1e9).toFixed(2) });
        }
        xm.destroy(); om.destroy();
      }
      for (const b of [w, g, x, nw, o]) b?.destroy();
    }
    // Attention at a few contexts: serial (one workgroup per head) and split (flash-decoding).
    for (const ctx of v.contexts.split(",").map(Number)) {
      const kvd = shape.kvHeads * shape.headDim;
      const kc = buffer(ctx * kvd * 4, (u32) => new Float32Array(u32.buffer).fill(0.01));
      const vc = buffer(ctx * kvd * 4, (u32) => new Float32Array(u32.buffer).fill(0.01));
      const q = buffer(shape.heads * shape.headDim * 4 * 4, (u32) => new Float32Array(u32.buffer).fill(0.1));
      const o = buffer(shape.heads * shape.headDim * 4 * 4);
      k.setStep({ tokens: 1, pos0: ctx - 1 });
      const tunes = v["attn-tune"].split(",").map((t) => (t === "default" ? null : t.split("x").map(Number)));
      for (const [impl, tune] of [["serial", null], ...tunes.map((t) => ["split", t])]) {
        const op = k.attention({ out: o, q, kCache: kc, vCache: vc, heads: shape.heads, kvHeads: shape.kvHeads,
          headDim: shape.headDim, scale: 0.125, impl: /** @type {"serial" | "split"} */ (impl),
          ...(tune ? { tune: { chunk: tune[0], splits: tune[1] } } : {}) });
        const ms = await time(op);
        out({ shape: shapeName, op: "attention", impl, context: ctx, tune: tune ? tune.join("x") : "default", variant: op.variant(1),
          ms: +ms.toFixed(5), GBs: +(2 * ctx * kvd * 4 / ms / 1e6).toFixed(1) });
      }
      for (const b of [kc, vc, q, o]) b.destroy();
    }
    // Greedy sampling over the vocabulary.
    const vocab = shape.mats[shape.mats.length - 1][1];
    const logits = buffer(vocab * 4, (u32) => { const f = new Float32Array(u32.buffer); for (let i = 0; i < f.length; i++) f[i] = Math.random(); });
    const chosen = buffer(8 * 256);
    for (const kk of [1, 40]) {
      const op = k.topk({ out: chosen, logits, n: vocab, k: kk });
      out({ shape: shapeName, op: "topk", k: kk, vocab, ms: +(await time(op)).toFixed(5) });
    }
    logits.destroy(); chosen.destroy();
  }
}
if (v.json) console.log(JSON.stringify({ adapter: adapter.info?.description, rows }));
process.exit(0);
