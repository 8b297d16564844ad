// Runs a JSON batch of kernel cases on a WebGPU device (Node + Dawn) for
// tests/test_kernels.py. Usage: node tests/kernels_harness.mjs BATCH.json
//
// BATCH: { dir, out?, cases: [{ id, variant: "plain"|"sg"|"smallgrid"|"f16", step: {tokens, pos0},
//   buffers: {name: file},             // raw bytes in dir (inputs, and initial contents of outputs)
//   ops: [{ op: "linear", opts }],     // opts: "$name" → that buffer; {"$weight": name, dtype, rows, cols,
//                                      //   scalesOffset, rowOffset?} → a WeightPart; {"$rope": {...}} → ropeTable(...);
//                                      //   {"$slice": name, offset, size} → a range of a buffer;
//                                      //   {"$xqOut": i, expect} → op i's xqOut (expect: whether it has one)
//   outputs: [name], kernels?: [[name]] }] }   // kernels: per op, names its step's pipeline keys must include
//                                              // ("!name": must not)
// Writes <out>/<id>.<name>.out per output (out defaults to dir), then <out>/results.json (also printed):
// { adapter, features, results: {id: "ok" | "skipped: why" | "error: message"} }.
import { create, globals } from "webgpu";
import fs from "node:fs";
import path from "node:path";
import { Kernels, SUBGROUP_MATRIX } from "../runtime/backends/webgpu/kernels.js";

Object.assign(globalThis, globals);
// SITEGEN_DAWN_FLAGS: Dawn options (the GPU machine: enable-dawn-features=allow_unsafe_apis lists subgroup matrices)
const gpu = create((process.env.SITEGEN_DAWN_FLAGS ?? "").split(",").map((f) => f.trim()).filter(Boolean));
// Kept for the process's life: dawn.node crashes (futex errors) once this object is collected, and a
// module-level const that no closure uses is not guaranteed to stay reachable.
/** @type {any} */ (globalThis).__sitegenGPU = gpu;

const batch = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const outDir = batch.out ?? batch.dir;
const adapter = await gpu.requestAdapter();
if (!adapter) throw new Error("no WebGPU adapter");
const want = ["shader-f16", "subgroups", SUBGROUP_MATRIX].filter((f) => adapter.features.has(f));
const device = await adapter.requestDevice({
  requiredFeatures: want,
  requiredLimits: { maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
    maxBufferSize: adapter.limits.maxBufferSize, maxComputeWorkgroupStorageSize: adapter.limits.maxComputeWorkgroupStorageSize },
});
/** @type {string[]} */
const uncaptured = [];
device.addEventListener("uncapturederror", (e) => uncaptured.push(String(e.error.message)));

// tuning "gpu": the cases check the matvec shapes a real GPU gets by default (the software adapter
// the tests run on would get the "cpu" shape, which the forced tpr=4/nr=4 cases cover).
const kernels = {
  plain: await Kernels.create(device, { f16: false, subgroups: false, tuning: "gpu" }),
  sg: device.features.has("subgroups") ? await Kernels.create(device, { f16: false, subgroups: true, tuning: "gpu" }) : null,
  // The grid wrap from x into y (past maxComputeWorkgroupsPerDimension), made cheap to reach.
  smallgrid: await Kernels.create(device, { f16: false, subgroups: false, maxWorkgroupsPerDim: 3, tuning: "gpu" }),
  // The prefill's integer product: with dot4I8Packed (everywhere), and on subgroup matrices where the
  // device has them (a GPU; the software adapters lack them).
  xmm: await Kernels.create(device, { f16: false, subgroups: false, tuning: "gpu", prefillInt8: "dot4" }),
  sgmat: await (async () => {
    const k = await Kernels.create(device, { f16: false, subgroups: true, tuning: "gpu", prefillInt8: "auto" });
    return k.features.xmm?.mode === "sgmat" ? k : null;
  })(),
  f16: device.features.has("shader-f16") ? await Kernels.create(device, { f16: true, subgroups: device.features.has("subgroups"), tuning: "gpu" }) : null,
};

const results = {};
for (const c of batch.cases) {
  const k = kernels[c.variant];
  if (!k) { results[c.id] = `skipped: device lacks the feature of variant '${c.variant}'`; continue; }
  const bufs = {};
  const t0 = performance.now();
  try {
    for (const [name, file] of Object.entries(c.buffers)) {
      const bytes = fs.readFileSync(path.join(batch.dir, file));
      const size = Math.max(16, Math.ceil(bytes.byteLength / 16) * 16);  // weight buffers: a multiple of 16 (kernels.js)
      const b = device.createBuffer({ label: name, size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
      const padded = new Uint8Array(size);
      padded.set(bytes);
      device.queue.writeBuffer(b, 0, padded);
      bufs[name] = b;
    }
    const resolve = (v) => {
      if (typeof v === "string" && v.startsWith("$")) {
        if (!bufs[v.slice(1)]) throw new Error(`unknown buffer ${v}`);
        return bufs[v.slice(1)];
      }
      if (v && typeof v === "object" && !Array.isArray(v)) {
        if ("$weight" in v) {
          return { buffer: bufs[v.$weight], dtype: v.dtype, rows: v.rows, cols: v.cols, scalesOffset: v.scalesOffset,
            rowOffset: v.rowOffset ?? 0 };
        }
        if ("$slice" in v) return { buffer: bufs[v.$slice], offset: v.offset, size: v.size };
        if ("$xqOut" in v) {
          // an earlier op's int8 output for its reader (linear's quantizeFor); `expect`: whether it has one
          const out = ops[v.$xqOut]?.xqOut ?? null;
          if ((out !== null) !== v.expect) throw new Error(`op ${v.$xqOut} ${out ? "has" : "has no"} int8 output for its reader`);
          return out;
        }
        if ("$rope" in v) return k.ropeTable(v.$rope);
        return Object.fromEntries(Object.entries(v).map(([a, b]) => [a, resolve(b)]));
      }
      return v;
    };
    device.pushErrorScope("validation");
    const ops = [];
    for (const o of c.ops) ops.push(k[o.op](resolve(o.opts)));
    k.setStep(c.step);
    // kernels: per op, names its step's pipelines must include (which path ran, not only its result)
    (c.kernels ?? []).forEach((names, i) => {
      const v = ops[i].variant(c.step.tokens);
      for (const n of names) {
        if (n.startsWith("!") ? v.includes(n.slice(1)) : !v.includes(n)) throw new Error(`op ${i} ran ${JSON.stringify(v)}: ${n}`);
      }
    });
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    for (const op of ops) op.record(pass);
    pass.end();
    const reads = c.outputs.map((name) => {
      const src = bufs[name];
      const rb = device.createBuffer({ size: src.size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      enc.copyBufferToBuffer(src, 0, rb, 0, src.size);
      return [name, rb];
    });
    device.queue.submit([enc.finish()]);
    const err = await device.popErrorScope();
    if (err) throw new Error(err.message);
    for (const [name, rb] of reads) {
      await rb.mapAsync(GPUMapMode.READ);
      fs.writeFileSync(path.join(outDir, `${c.id}.${name}.out`), new Uint8Array(rb.getMappedRange().slice(0)));
      rb.unmap();
      rb.destroy();
    }
    results[c.id] = uncaptured.length ? `error: ${uncaptured.splice(0).join("; ")}` : "ok";
  } catch (e) {
    results[c.id] = `error: ${e instanceof Error ? e.message : String(e)}`;
  } finally {
    for (const b of Object.values(bufs)) b.destroy();
    if (process.env.KERNELS_TIMING) console.error(`${c.id}: ${(performance.now() - t0).toFixed(0)} ms`);
  }
}
const report = JSON.stringify({ adapter: adapter.info.description || adapter.info.vendor, features: [...device.features], results });
fs.writeFileSync(path.join(outDir, "results.json"), report);
console.log(report);
// No device.destroy(): Dawn's teardown on SwiftShader has been seen to abort
// (a pthread priority assertion) after all the work was done.
process.exit(0);
