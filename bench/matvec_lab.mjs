// Matvec lab: stand-alone q4 matvec kernels over the runtime's weight layout (docs/weights-format.md:
// row-major 32-code groups as vec4<u32>, one f16 scale per group in a plane of its own), to find out
// what bounds the decode matvec on a GPU before the runtime's kernel changes. Each variant is
// generated straight-line (no register arrays), checked against a CPU reference on a few rows, and
// timed by timestamp queries: alone (one dispatch in a pass) and chained (20 dispatches in one
// pass, as a decode step records them).
//
//   node bench/matvec_lab.mjs [--shapes 3072x2048,...] [--variants f32cur:32:4:1,...] [--reps 30]
//
// A variant is decode:tpr:rows:unroll. decode is
//   f32cur  the runtime's decode (codes OR-ed into 2^23's mantissa after a shift per code)
//   f32mask codes masked in place (no shift but one per word), x pre-scaled by the power of 16
//   dp4a    x quantised to int8 per 32-group (given), dot4I8Packed over the codes' nibbles
//   dp4a2   the same with two int8 levels (hi, lo: the runtime's XQ input), twice the dot products
//   load    the same loads, XOR-ed (the structure's ceiling)
// tpr lanes per row (8..256; subgroups reduce up to the subgroup size, shared memory past it),
// rows per lane, groups per loop iteration.

import { parseArgs } from "node:util";
import { getNodeGPU } from "../runtime/backends/webgpu/dawn.js";
import { passTimer } from "./timestamps.mjs";

const { values: v } = parseArgs({ options: {
  shapes: { type: "string", default: "3072x2048,2048x2048,16384x2048,2048x8192,128256x2048,49152x3072,3072x24576,256000x3072" },
  variants: { type: "string", default: "f32cur:32:4:1,f32mask:32:4:1,f32mask:32:4:2,f32mask:32:8:1,f32mask:16:4:1,f32mask:64:4:1,f32mask:128:2:1,dp4a:32:4:1,dp4a:32:4:2,load:32:4:1" },
  reps: { type: "string", default: "30" }, chain: { type: "string", default: "20" },
} });
const REPS = Number(v.reps), CHAIN = Number(v.chain);

const gpu = await getNodeGPU();
/** @type {any} */ (globalThis).__labGPU = gpu;
const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
if (!adapter) throw new Error("no WebGPU adapter");
const feats = /** @type {GPUFeatureName[]} */ (["subgroups", "timestamp-query"].filter((f) => adapter.features.has(f)));
const device = await adapter.requestDevice({ requiredFeatures: feats, requiredLimits: {
  maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize, maxBufferSize: adapter.limits.maxBufferSize } });
device.addEventListener("uncapturederror", (/** @type {any} */ e) => { console.error(`WebGPU error: ${e.error.message}`); process.exit(1); });
const hasTs = feats.includes("timestamp-query");
// subgroup reductions only where every subgroup has at least the lanes of a row (H200: 32; SwiftShader: 4)
const sgMin = /** @type {any} */ (adapter.info)?.subgroupMinSize ?? 0;
const hasSg = feats.includes("subgroups");
const dp4aOk = /** @type {any} */ (globalThis.navigator?.gpu ?? gpu).wgslLanguageFeatures?.has?.("packed_4x8_integer_dot_product") ?? true;
console.log(JSON.stringify({ adapter: adapter.info?.description ?? adapter.info?.device, subgroups: hasSg, timestamps: hasTs, dp4a: dp4aOk, sgMin }));

const WG = 256;

/**
 * WGSL of one variant. Bindings: 0 codes (vec4<u32>), 1 scales (u32, two f16 each), 2 x (vec4<f32>),
 * 3 xq (vec4<u32>: per group the 8 packed words, even codes' x then odd ones'), 4 xs (vec2<f32>: the group's
 * int8 scale and 8 * sum of its codes), 5 y, 6 params (N, K/32, 0, 0).
 * @param {string} decode @param {number} tpr @param {number} R @param {number} U
 */
function wgsl(decode, tpr, R, U) {
  const sgRed = hasSg && tpr <= sgMin;
  const L = [];
  if (hasSg) L.push("enable subgroups;");
  L.push(`@group(0) @binding(0) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> sc: array<u32>;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> xq: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> xs: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
@group(0) @binding(6) var<uniform> P: vec4<u32>;
@group(0) @binding(7) var<storage, read> xq2: array<vec4<u32>>;
@group(0) @binding(8) var<storage, read> xs2: array<vec4<f32>>;
const TPR: u32 = ${tpr}u;
const MAGIC: u32 = 0x4b000000u;
const MK_LO = vec4<u32>(0xFu, 0xF0u, 0xF00u, 0xF000u);
const MK_HI = vec4<u32>(0xF0000u, 0xFu, 0xF0u, 0xF00u);
const SUB_LO = vec4<f32>(8388616.0, 8388736.0, 8390656.0, 8421376.0);
const SUB_HI = vec4<f32>(8912896.0, 8388616.0, 8388736.0, 8390656.0);
const PS_LO = vec4<f32>(1.0, 0.0625, 0.00390625, 0.000244140625);
const PS_HI = vec4<f32>(0.0000152587890625, 1.0, 0.0625, 0.00390625);
fn q4_lo(q: u32) -> vec4<f32> {
  return bitcast<vec4<f32>>(((vec4<u32>(q) >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u)) | vec4<u32>(MAGIC)) - 8388616.0;
}
fn q4_hi(q: u32) -> vec4<f32> {
  return bitcast<vec4<f32>>(((vec4<u32>(q) >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u)) | vec4<u32>(MAGIC)) - 8388616.0;
}
fn scale(i: u32) -> f32 { return unpack2x16float(sc[i >> 1u])[i & 1u]; }
var<workgroup> red: array<f32, ${WG * R}>;`);
  // the group's x, per decode
  const xload = (/** @type {string} */ s) => {
    if (decode === "dp4a") return `let xa${s} = xq[2u * g${s}]; let xb${s} = xq[2u * g${s} + 1u]; let xd${s} = xs[g${s}];`;
    if (decode === "dp4a2") {
      return `let xa${s} = xq2[4u * g${s}]; let xb${s} = xq2[4u * g${s} + 1u]; let xc${s} = xq2[4u * g${s} + 2u]; ` +
        `let xe${s} = xq2[4u * g${s} + 3u]; let xd${s} = xs2[g${s}];`;
    }
    const a = [];
    for (let i = 0; i < 8; i++) a.push(`var x${s}_${i} = x[8u * g${s} + ${i}u];`);
    if (decode === "f32mask") for (let i = 0; i < 8; i++) a.push(`x${s}_${i} *= ${i % 2 ? "PS_HI" : "PS_LO"};`);
    return a.join(" ");
  };
  const dot = (/** @type {string} */ s, /** @type {number} */ r) => {
    const q = `q${s}_${r}`;
    const parts = [];
    if (decode === "f32cur") {
      for (let i = 0; i < 4; i++) parts.push(`dot(q4_lo(${q}[${i}]), x${s}_${2 * i}) + dot(q4_hi(${q}[${i}]), x${s}_${2 * i + 1})`);
      return `(${parts.join(" + ")}) * scale(rr${r} * G + g${s})`;
    }
    if (decode === "f32mask") {
      for (let i = 0; i < 4; i++) {
        parts.push(`dot(bitcast<vec4<f32>>((vec4<u32>(${q}[${i}]) & MK_LO) | vec4<u32>(MAGIC)) - SUB_LO, x${s}_${2 * i}) + ` +
          `dot(bitcast<vec4<f32>>((vec4<u32>(${q}[${i}], ${q}[${i}] >> 20u, ${q}[${i}] >> 20u, ${q}[${i}] >> 20u) & MK_HI) | vec4<u32>(MAGIC)) - SUB_HI, x${s}_${2 * i + 1})`);
      }
      return `(${parts.join(" + ")}) * scale(rr${r} * G + g${s})`;
    }
    if (decode === "dp4a") {
      // word i's low nibbles are codes 0, 2, 4, 6 of its 8; xa holds the even x of words 0..3, xb the odd
      for (let i = 0; i < 4; i++) {
        parts.push(`dot4I8Packed(${q}[${i}] & 0x0F0F0F0Fu, xa${s}[${i}]) + dot4I8Packed((${q}[${i}] >> 4u) & 0x0F0F0F0Fu, xb${s}[${i}])`);
      }
      return `(f32(${parts.join(" + ")}) - xd${s}.y) * xd${s}.x * scale(rr${r} * G + g${s})`;
    }
    if (decode === "dp4a2") {
      // two int8 levels (the runtime's XQ): hi and lo words against the same nibbles
      const hs = [], ls = [];
      for (let i = 0; i < 4; i++) {
        hs.push(`dot4I8Packed(${q}[${i}] & 0x0F0F0F0Fu, xa${s}[${i}]) + dot4I8Packed((${q}[${i}] >> 4u) & 0x0F0F0F0Fu, xb${s}[${i}])`);
        ls.push(`dot4I8Packed(${q}[${i}] & 0x0F0F0F0Fu, xc${s}[${i}]) + dot4I8Packed((${q}[${i}] >> 4u) & 0x0F0F0F0Fu, xe${s}[${i}])`);
      }
      return `(f32(256i * (${hs.join(" + ")}) + ${ls.join(" + ")}) * xd${s}.x - xd${s}.y) * scale(rr${r} * G + g${s})`;
    }
    return `bitcast<f32>((${q}.x ^ ${q}.y ^ ${q}.z ^ ${q}.w ^ sc[(rr${r} * G + g${s}) >> 1u]) & 0x3fffffffu)`;
  };
  const body = [];
  for (let u = 0; u < U; u++) {
    const s = `${u}`;
    const inner = [`let g${s} = g + ${u * tpr}u;`, xload(s)];
    for (let r = 0; r < R; r++) inner.push(`let q${s}_${r} = w[rr${r} * G + g${s}];`);
    if (decode === "load") for (let r = 0; r < R; r++) inner.push(`s${r} += ${dot(s, r)} + bitcast<f32>(bitcast<u32>(x[g${s}].x) & 0x3fffffffu);`);
    else for (let r = 0; r < R; r++) inner.push(`s${r} += ${dot(s, r)};`);
    body.push(u === 0 ? inner.join("\n      ") : `if (g + ${u * tpr}u < G) {\n      ${inner.join("\n      ")}\n    }`);
  }
  const rows = [], sums = [], reduce = [], store = [];
  for (let r = 0; r < R; r++) {
    rows.push(`let rr${r} = min(r0 + ${r}u, N - 1u);`);
    sums.push(`var s${r} = 0.0;`);
    store.push(`if (r0 + ${r}u < N) { y[r0 + ${r}u] = s${r}; }`);
  }
  if (sgRed) {
    for (let r = 0; r < R; r++) {
      if (tpr === sgMin) reduce.push(`s${r} = subgroupAdd(s${r});`);
      else for (let o = tpr / 2; o >= 1; o /= 2) reduce.push(`s${r} += subgroupShuffleXor(s${r}, ${o}u);`);
    }
  } else {
    for (let r = 0; r < R; r++) reduce.push(`red[${r * WG}u + lid] = s${r};`);
    reduce.push("workgroupBarrier();");
    reduce.push(`if (lane == 0u) {`);
    for (let r = 0; r < R; r++) reduce.push(`  for (var c = 1u; c < TPR; c++) { s${r} += red[${r * WG}u + lid + c]; }`);
    reduce.push("}");
  }
  L.push(`@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let N = P.x; let G = P.y;
  let slot = lid / TPR; let lane = lid % TPR;
  let r0 = ((wid.x + wid.y * nwg.x) * ${WG / tpr}u + slot) * ${R}u;
  ${rows.join(" ")}
  ${sums.join(" ")}
  for (var g = lane; g < G; g += ${U * tpr}u) {
    ${body.join("\n    ")}
  }
  ${reduce.join("\n  ")}
  if (lane == 0u) { ${store.join(" ")} }
}`);
  return L.join("\n");
}

const bgl = device.createBindGroupLayout({ entries: [
  ...[0, 1, 2, 3, 4].map((b) => ({ binding: b, visibility: GPUShaderStage.COMPUTE, buffer: { type: /** @type {const} */ ("read-only-storage") } })),
  { binding: 5, visibility: GPUShaderStage.COMPUTE, buffer: { type: /** @type {const} */ ("storage") } },
  { binding: 6, visibility: GPUShaderStage.COMPUTE, buffer: { type: /** @type {const} */ ("uniform") } },
  ...[7, 8].map((b) => ({ binding: b, visibility: GPUShaderStage.COMPUTE, buffer: { type: /** @type {const} */ ("read-only-storage") } }))] });
const layout = device.createPipelineLayout({ bindGroupLayouts: [bgl] });

/** @param {number} bytes @param {(u32: Uint32Array, off: number) => void} fill */
function buffer(bytes, fill, usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC) {
  const size = Math.ceil(bytes / 16) * 16;
  const b = device.createBuffer({ size, usage });
  const chunk = 64 << 20;
  for (let off = 0; off < size; off += chunk) {
    const u32 = new Uint32Array(Math.min(chunk, size - off) / 4);
    fill(u32, off / 4);
    device.queue.writeBuffer(b, off, u32);
  }
  return b;
}
const f16 = (/** @type {number} */ h) => {
  const e = (h >> 10) & 31, m = h & 1023, s = h & 0x8000 ? -1 : 1;
  return e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
};

const timePass = hasTs ? passTimer(device, REPS) : null;

/** Median ms of `n` dispatches recorded in one pass (wall time over 3 n where there are no timestamps). */
async function time(/** @type {(p: GPUComputePassEncoder) => void} */ rec, /** @type {number} */ n) {
  if (timePass) return timePass((p) => { for (let j = 0; j < n; j++) rec(p); });
  const t0 = performance.now();
  const enc = device.createCommandEncoder(); const p = enc.beginComputePass();
  for (let i = 0; i < n * 3; i++) rec(p);
  p.end(); device.queue.submit([enc.finish()]); await device.queue.onSubmittedWorkDone();
  return (performance.now() - t0) / 3;
}

const pipelines = new Map();
for (const shape of v.shapes.split(",")) {
  const [N, K] = shape.split("x").map(Number);
  const G = K / 32;
  // codes: random; scales: f16 in [2^-8, 2^-7) with random sign; x in [-1, 1); xq: random int8 in [-127, 127]
  const codes = buffer(N * K / 2, (u) => { for (let i = 0; i < u.length; i++) u[i] = (Math.random() * 2 ** 32) >>> 0; });
  const scaleWord = (/** @type {number} */ i) => { const h = (j) => (((j * 2654435761) >>> 13) & 1 ? 0x8000 : 0) | (0x1c00 + ((j * 40503) & 1023)); return h(2 * i) | (h(2 * i + 1) << 16); };
  const scales = buffer(N * G * 2, (u, off) => { for (let i = 0; i < u.length; i++) u[i] = scaleWord(off + i) >>> 0; });
  const xf = new Float32Array(K).map(() => Math.random() * 2 - 1);
  const x = buffer(K * 4, (u) => u.set(new Uint32Array(xf.buffer)));
  const xi8 = new Int8Array(K).map(() => Math.round(Math.random() * 254 - 127));
  const xqw = new Uint32Array(K / 4);
  for (let g = 0; g < G; g++) for (let i = 0; i < 4; i++) for (let j = 0; j < 4; j++) {
    xqw[8 * g + i] |= (xi8[32 * g + 8 * i + 2 * j] & 255) << (8 * j);
    xqw[8 * g + 4 + i] |= (xi8[32 * g + 8 * i + 2 * j + 1] & 255) << (8 * j);
  }
  const xq = buffer(K, (u) => u.set(xqw));
  const xsf = new Float32Array(2 * G);
  for (let g = 0; g < G; g++) { let s = 0; for (let i = 0; i < 32; i++) s += xi8[32 * g + i]; xsf[2 * g] = 0.01; xsf[2 * g + 1] = 8 * s; }
  const xs = buffer(8 * G, (u) => u.set(new Uint32Array(xsf.buffer)));
  // two levels: lo = hi, so each input is h + h / 256 (d = 0.01 / 256, the offset term 8 d Σ 257 h)
  const xq2w = new Uint32Array(K / 2);
  for (let g = 0; g < G; g++) for (let i = 0; i < 8; i++) { xq2w[16 * g + i] = xqw[8 * g + i]; xq2w[16 * g + 8 + i] = xqw[8 * g + i]; }
  const xq2 = buffer(2 * K, (u) => u.set(xq2w));
  const xs2f = new Float32Array(4 * G);
  for (let g = 0; g < G; g++) { xs2f[4 * g] = 0.01 / 256; xs2f[4 * g + 1] = xsf[2 * g + 1] * 257 * 0.01 / 256; }
  const xs2 = buffer(16 * G, (u) => u.set(new Uint32Array(xs2f.buffer)));
  const y = buffer(N * 4, (u) => u.fill(0), GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST);
  const yr = device.createBuffer({ size: Math.ceil(N * 4 / 16) * 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const params = buffer(16, (u) => u.set([N, G, 0, 0]), GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
  const bg = device.createBindGroup({ layout: bgl, entries: [codes, scales, x, xq, xs, y, params, xq2, xs2].map((b, i) => ({ binding: i, resource: { buffer: b } })) });
  // reference rows: the first 4, 4 in the middle, the last 4 (codes read back from what was written)
  const check = [0, 1, 2, 3, N >> 1, (N >> 1) + 1, N - 4, N - 3, N - 2, N - 1];
  const ref = { f32: new Map(), dp4a: new Map() };
  {
    const rb = device.createBuffer({ size: K / 2, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    for (const r of check) {
      const enc = device.createCommandEncoder(); enc.copyBufferToBuffer(codes, r * K / 2, rb, 0, K / 2); device.queue.submit([enc.finish()]);
      await rb.mapAsync(GPUMapMode.READ); const q = new Uint32Array(rb.getMappedRange().slice(0)); rb.unmap();
      let sf = 0, sd = 0;
      for (let g = 0; g < G; g++) {
        const si = r * G + g, word = scaleWord(si >> 1) >>> 0, s = f16(si & 1 ? word >>> 16 : word & 0xffff);
        let a = 0, b = 0;
        for (let i = 0; i < 4; i++) for (let j = 0; j < 8; j++) {
          const c = ((q[4 * g + i] >>> (4 * j)) & 15) - 8;
          a += c * xf[32 * g + 8 * i + j]; b += c * xi8[32 * g + 8 * i + j];
        }
        sf += a * s; sd += b * 0.01 * s;
      }
      ref.f32.set(r, sf); ref.dp4a.set(r, sd);
    }
    rb.destroy();
  }
  const bytes = N * K / 2 + N * G * 2;
  for (const variant of v.variants.split(",")) {
    const [decode, tprS, RS, US] = variant.split(":");
    const tpr = Number(tprS), R = Number(RS), U = Number(US ?? 1);
    if (decode.startsWith("dp4a") && !dp4aOk) continue;
    const key = variant;
    if (!pipelines.has(key)) {
      const code = wgsl(decode, tpr, R, U);
      const module = device.createShaderModule({ code });
      const info = await module.getCompilationInfo();
      if (info.messages.some((m) => m.type === "error")) { console.log(JSON.stringify({ variant, error: info.messages.map((m) => m.message).join("; ") })); pipelines.set(key, null); continue; }
      pipelines.set(key, device.createComputePipeline({ layout, compute: { module, entryPoint: "main" } }));
    }
    const pl = pipelines.get(key);
    if (!pl) continue;
    const wgs = Math.ceil(N / ((WG / tpr) * R));
    const gx = Math.min(wgs, 65535), gy = Math.ceil(wgs / gx);
    const rec = (/** @type {GPUComputePassEncoder} */ p) => { p.setPipeline(pl); p.setBindGroup(0, bg); p.dispatchWorkgroups(gx, gy); };
    // correctness on the reference rows
    const enc = device.createCommandEncoder(); const p = enc.beginComputePass(); rec(p); p.end();
    enc.copyBufferToBuffer(y, 0, yr, 0, yr.size); device.queue.submit([enc.finish()]);
    await yr.mapAsync(GPUMapMode.READ); const got = new Float32Array(yr.getMappedRange().slice(0)); yr.unmap();
    let err = 0;
    if (decode !== "load") {
      for (const r of check) {
        const want = decode === "dp4a" ? ref.dp4a.get(r) : decode === "dp4a2" ? ref.dp4a.get(r) * 257 / 256 : ref.f32.get(r);
        err = Math.max(err, Math.abs(got[r] - want) / (Math.abs(want) + 1e-3 * Math.sqrt(K)));
      }
    }
    const one = await time(rec, 1);
    const chained = (await time(rec, CHAIN)) / CHAIN;
    console.log(JSON.stringify({ N, K, variant, wgs, err: +err.toExponential(2), ok: decode === "load" || err < 1e-3,
      us: +(one * 1000).toFixed(2), GBs: +(bytes / one / 1e6).toFixed(0), chain_us: +(chained * 1000).toFixed(2),
      chain_GBs: +(bytes / chained / 1e6).toFixed(0) }));
  }
  for (const b of [codes, scales, x, xq, xs, xq2, xs2, y, yr, params]) b.destroy();
}
process.exit(0);
