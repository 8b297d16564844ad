// The compute kernels of the inference runtime (issue 4, item 2): WGSL sources
// in `shaders/`, one file per op family, turned into pipelines here.
//
// How to use it (the graph builds its ops ONCE per model, then records them
// every step; nothing is allocated in the hot path):
//
//   const k = await Kernels.create(device, { f16: false, subgroups: true });
//   const ops = [                                       // once per model
//     k.embed({ out: h, ids, table: embedPart, hidden, scale }),
//     k.norm({ out: xn, x: h, weight: w, n: hidden, eps, kind: "rms" }),
//     k.linear({ out: q, x: xn, w: qPart, N: qDim, K: hidden }),
//     ...
//   ];
//   k.setStep({ tokens, pos0 });                        // per forward call: one 16-byte write
//   const enc = device.createCommandEncoder();
//   const pass = enc.beginComputePass();
//   for (const op of ops) op.record(pass);              // grid sizes follow the step
//   pass.end(); device.queue.submit([enc.finish()]);
//
// Conventions shared by every op:
// - Activations are f32 GPU buffers laid out [tokens, features] row-major.
//   "tokens" is the current step's token count (`setStep`); `pos0` is the
//   position of the step's first token (= the number of tokens already in the
//   KV cache). Ops whose output has one row per token take `rows`:
//   "all" (default: row t → row t), "last" (input row tokens-1 → output row 0,
//   e.g. the final norm or lm_head of a prefill) or "first" (row 0 → row 0).
// - A buffer that an op writes must not be bound as another of its inputs
//   (WebGPU forbids a writable and a read-only use of one buffer in a dispatch).
// - Weights are `WeightPart`s (docs/weights-format.md): matrices
//   [rows = out, cols = in], dtype f32 | f16 | q8 | q4. A tensor split by rows
//   into several parts is handled by one op per part (`outOffset`, `rowStart`).
// - Every op has an f32-compute path; with `f16: true` (needs the device
//   feature "shader-f16") matmul/matvec multiply in f16 and accumulate per
//   32-wide group in f16 (activations and accumulators across groups stay f32).
//   Norms, RoPE, attention, softmax and argmax always compute in f32 (they are
//   reductions or transcendental-heavy and cheap; f16 there costs accuracy).
// - With `subgroups: true` (device feature "subgroups") reductions use
//   subgroupAdd/subgroupMax, else shared memory; results agree to rounding.
// - Each variant is named by a key (e.g. "matvec:q4:ct=f32:sg:tpr=32:silu")
//   that yields both its WGSL defines and its pipeline label; pipelines are
//   cached by key. The uniform `Params` struct of each kernel is described once
//   below (FAMILIES) and generated into the WGSL source and the JS writer.

import { MissingFeatureError, SitegenRuntimeError } from "../../errors.js";

/** @typedef {"f32" | "f16" | "q8" | "q4"} WeightDtype */
/**
 * One self-contained weight matrix in one GPU buffer (docs/weights-format.md).
 * q4/q8: the `q` plane starts at byte `offset` (default 0) and the f16 `scales`
 * plane at byte `offset + scalesOffset` (a multiple of 16; the format makes it 256).
 * The buffer's size must be a multiple of 16 bytes (matvec reads it as vec4<u32>;
 * round the size up when creating it).
 * `rowOffset`: the matrix starts at that row of the buffer's planes (a member
 * of a tensor group shares its group's buffer; docs/weights-format.md).
 * @typedef {{ buffer: GPUBuffer, dtype: WeightDtype, rows: number, cols: number,
 *   scalesOffset?: number, offset?: number, rowOffset?: number }} WeightPart
 */
/**
 * A GPU buffer, or a range of one (offset a multiple of the device's
 * minStorageBufferOffsetAlignment, 256 in practice).
 * @typedef {GPUBuffer | { buffer: GPUBuffer, offset?: number, size?: number }} BufferRef
 */
/** @typedef {"all" | "last" | "first"} RowsMode */
/**
 * A product's int8 output for an integer-dot reader (`linear`'s `quantizeFor` / `xqFrom`): the
 * buffer, the reader's weight dtype, the groups per row (the reader's K / 32), the rows it holds,
 * and whether the product writes it (rather than its f32 `out`) in a step of `tokens`.
 * @typedef {{ buffer: GPUBuffer, dtype: "q4" | "q8", groups: number, rows: number, active: (tokens: number) => boolean }} XqOut
 */
/** @typedef {"silu" | "gelu_tanh" | "gelu"} Activation */
/**
 * The prefill's integer product (`Kernels.create`'s `prefillInt8`): on subgroup matrices (with the
 * device's spelling, `probeSubgroupMatrix`), on dot4I8Packed, or none (the f32 tiled matmul).
 * @typedef {null | { mode: "sgmat", syntax: "mk" | "km" | "bool", unit: number } | { mode: "dot4" }} XmmMode
 */
/**
 * RoPE frequency scaling, as in the normalised config's `rope_scaling`.
 * @typedef {null | { type: "linear", factor: number } | { type: "llama3", factor: number,
 *   low_freq_factor: number, high_freq_factor: number, original_max_position_embeddings: number }} RopeScaling
 */
/** @typedef {(name: string) => Promise<string>} ShaderSource */

/** Threads per workgroup of the 1-D kernels (the WebGPU default limit is 256). */
const WG = 256;
/** Above this many tokens `linear` switches from the matvec kernel to the tiled matmul. */
const MATVEC_MAX_TOKENS = 4;
/**
 * The same on a CPU adapter ("cpu" tuning): there the tiled matmul computes whole 64-token tiles
 * whatever the step's tokens (SwiftShader: a 5-token SmolLM2 prompt took 120-155 s, the matvec 6 s a
 * token), so the matvec takes steps of up to this many tokens.
 */
const CPU_MATVEC_MAX_TOKENS = 16;
/** matvec takes several rows per invocation only while the grid keeps at least this many workgroups. */
const MATVEC_MIN_WORKGROUPS = 128;
/**
 * The fewest weights (rows x cols, both matrices of a gated pair) for which a q4/q8 matvec takes the
 * integer-dot path (XQ): below it the quantize dispatch in front (~3.5 us on the H200) costs more than
 * the faster product saves (bench/matvec_lab.mjs: Llama-3.2-1B's 6M-weight q/k/v 6.8 -> 5.0 us, its
 * 34M-weight gate/up 14.4 -> 5.7 us, Gemma-7B's output head 236 -> 109 us).
 */
const INT8_MIN_WEIGHTS = 8 << 20;
/** Workgroup memory that the prefill's integer product needs (shaders/matmul.wgsl xmm_main, gated: 21.6 KB). */
const XMM_WORKGROUP_BYTES = 24 << 10;
const ROWS_CODE = { all: 0, last: 1, first: 2 };
const ACT_CODE = { none: 0, silu: 1, gelu_tanh: 2, gelu: 3 };
const DTYPE_CODE = { f32: 0, f16: 1, q8: 2, q4: 3 };
const SHADER_FILES = ["common", "embed", "norm", "matvec", "matmul", "rope", "attention", "sample", "moe"];

/**
 * @typedef {{ name: string, kind: "read" | "rw" | "weight", type?: string }} BindingSpec
 * `weight` bindings are u32 words (vec4<u32> where the variant vectorises)
 * and add `<name>_k` (cols), `<name>_so` (scales' word offset) and `<name>_r0`
 * (the first row, for a member of a tensor group) to Params.
 * @typedef {{ file: string, entry: string, params: [string, "u32" | "f32"][], bindings: BindingSpec[] }} Family
 */

/** @type {[string, "u32"][]} The output segments of linear (common.wgsl linear_store). */
const SEGMENT_PARAMS = [["seg1", "u32"], ["seg2", "u32"], ["base1", "u32"], ["base2", "u32"], ["stride1", "u32"], ["stride2", "u32"]];
const NO_SEGMENT = 0xffffffff;

/**
 * Every kernel: its WGSL file and entry point, its uniform Params (fields in
 * order; all 4-byte scalars, so field i sits at byte 4*i in both languages),
 * and its storage bindings (binding 0 is Params, 1 the shared Step uniform).
 * @type {Record<string, Family>}
 */
export const FAMILIES = {
  embed: {
    file: "embed", entry: "main",
    params: [["hidden", "u32"], ["row_start", "u32"], ["rows", "u32"], ["ids_offset", "u32"], ["scale", "f32"]],
    bindings: [{ name: "ids", kind: "read", type: "array<u32>" }, { name: "table", kind: "weight" },
      { name: "out", kind: "rw", type: "array<f32>" }],
  },
  norm: {
    file: "norm", entry: "main",
    params: [["n", "u32"], ["rows_per_token", "u32"], ["eps", "f32"]],
    bindings: [{ name: "x", kind: "read", type: "array<f32>" }, { name: "weight", kind: "read", type: "array<f32>" },
      { name: "bias", kind: "read", type: "array<f32>" }, { name: "out", kind: "rw", type: "array<f32>" }],
  },
  matvec: {
    file: "matvec", entry: "main",
    params: [["n", "u32"], ["out_stride", "u32"], ["out_offset", "u32"], ["softcap", "f32"],
      ["bias_off", "u32"], ["gate_bias_off", "u32"], ...SEGMENT_PARAMS, ["norm_eps", "f32"], ["qout_groups", "u32"]],
    bindings: [{ name: "x", kind: "read" }, { name: "w", kind: "weight" }, { name: "gate", kind: "weight" },
      { name: "bias", kind: "read", type: "array<f32>" }, { name: "gate_bias", kind: "read", type: "array<f32>" },
      { name: "norm_w", kind: "read", type: "array<vec4<f32>>" }, { name: "out", kind: "rw", type: "array<f32>" },
      { name: "xq", kind: "read", type: "array<vec4<u32>>" }],
  },
  // the int8 input of the matvec's XQ variant (shaders/matvec.wgsl quant_main)
  xquant: {
    file: "matvec", entry: "quant_main",
    params: [["k", "u32"]],
    bindings: [{ name: "x", kind: "read", type: "array<vec4<f32>>" }, { name: "norm_w", kind: "read", type: "array<vec4<f32>>" },
      { name: "xq", kind: "rw", type: "array<vec4<u32>>" }],
  },
  matmul: {
    file: "matmul", entry: "main",
    params: [["n", "u32"], ["out_stride", "u32"], ["out_offset", "u32"], ["softcap", "f32"],
      ["bias_off", "u32"], ["gate_bias_off", "u32"], ...SEGMENT_PARAMS],
    bindings: [{ name: "x", kind: "read", type: "array<f32>" }, { name: "w", kind: "weight", type: "array<u32>" },
      { name: "gate", kind: "weight", type: "array<u32>" },
      { name: "bias", kind: "read", type: "array<f32>" }, { name: "gate_bias", kind: "read", type: "array<f32>" },
      { name: "out", kind: "rw", type: "array<f32>" }],
  },
  // the prefill product over an int8 input (shaders/matmul.wgsl xmm_main; its input from xquant)
  xmatmul: {
    file: "matmul", entry: "xmm_main",
    params: [["n", "u32"], ["out_stride", "u32"], ["out_offset", "u32"], ["softcap", "f32"],
      ["bias_off", "u32"], ["gate_bias_off", "u32"], ...SEGMENT_PARAMS],
    bindings: [{ name: "xq", kind: "read", type: "array<vec4<u32>>" }, { name: "w", kind: "weight", type: "array<vec4<u32>>" },
      { name: "gate", kind: "weight", type: "array<vec4<u32>>" },
      { name: "bias", kind: "read", type: "array<f32>" }, { name: "gate_bias", kind: "read", type: "array<f32>" },
      { name: "out", kind: "rw", type: "array<f32>" }],
  },
  rope: {
    file: "rope", entry: "main",
    params: [["heads", "u32"], ["kv_heads", "u32"], ["head_dim", "u32"], ["half", "u32"], ["max_pos", "u32"], ["rows", "u32"]],
    bindings: [{ name: "table", kind: "read", type: "array<f32>" }, { name: "q", kind: "read", type: "array<f32>" },
      { name: "k", kind: "read", type: "array<f32>" }, { name: "v", kind: "read", type: "array<f32>" },
      { name: "q_out", kind: "rw", type: "array<f32>" },
      { name: "k_cache", kind: "rw", type: "array<f32>" }, { name: "v_cache", kind: "rw", type: "array<f32>" }],
  },
  attention: {
    file: "attention", entry: "main",
    params: [["heads", "u32"], ["kv_heads", "u32"], ["head_dim", "u32"], ["window", "u32"],
      ["scale", "f32"], ["softcap", "f32"], ["rows", "u32"]],
    bindings: [{ name: "q", kind: "read", type: "array<f32>" }, { name: "k_cache", kind: "read", type: "array<f32>" },
      { name: "v_cache", kind: "read", type: "array<f32>" }, { name: "out", kind: "rw", type: "array<f32>" }],
  },
  attn_split: {
    file: "attention", entry: "split_main",
    params: [["heads", "u32"], ["kv_heads", "u32"], ["head_dim", "u32"], ["window", "u32"],
      ["scale", "f32"], ["softcap", "f32"], ["rows", "u32"], ["chunk", "u32"], ["lpk", "u32"], ["splits", "u32"],
      ["gblock", "u32"], ["half", "u32"]],
    // (k_cache, v_cache: written only by the ROPE variant; table, k, v (the new key and value): read only by it)
    bindings: [{ name: "q", kind: "read", type: "array<f32>" }, { name: "k_cache", kind: "rw", type: "array<f32>" },
      { name: "v_cache", kind: "rw", type: "array<f32>" }, { name: "part", kind: "rw", type: "array<f32>" },
      { name: "table", kind: "read", type: "array<f32>" }, { name: "k", kind: "read", type: "array<f32>" },
      { name: "v", kind: "read", type: "array<f32>" }],
  },
  attn_combine: {
    file: "attention", entry: "combine_main",
    params: [["heads", "u32"], ["head_dim", "u32"], ["chunk", "u32"], ["splits", "u32"], ["qout", "u32"], ["qout_groups", "u32"]],
    bindings: [{ name: "part", kind: "read", type: "array<f32>" }, { name: "out", kind: "rw", type: "array<f32>" },
      { name: "xq", kind: "rw", type: "array<vec4<u32>>" }],
  },
  // mixture-of-experts (issue 12, shaders/moe.wgsl): route, expert gate/up, weighted expert down
  moe_route: {
    file: "moe", entry: "route_main",
    params: [["experts", "u32"], ["top_k", "u32"]],
    bindings: [{ name: "logits", kind: "read", type: "array<f32>" }, { name: "sel", kind: "rw", type: "array<u32>" }],
  },
  moe_up: {
    file: "moe", entry: "up_main",
    params: [["e0", "u32"], ["ne", "u32"], ["inter", "u32"], ["top_k", "u32"]],
    bindings: [{ name: "x", kind: "read", type: "array<f32>" }, { name: "sel", kind: "read", type: "array<u32>" },
      { name: "gate", kind: "weight" }, { name: "up", kind: "weight" }, { name: "hid", kind: "rw", type: "array<f32>" }],
  },
  moe_down: {
    file: "moe", entry: "down_main",
    params: [["e0", "u32"], ["ne", "u32"], ["hidden", "u32"], ["top_k", "u32"], ["accumulate", "u32"]],
    bindings: [{ name: "hid", kind: "read", type: "array<f32>" }, { name: "sel", kind: "read", type: "array<u32>" },
      { name: "down", kind: "weight" }, { name: "out", kind: "rw", type: "array<f32>" }],
  },
  topk: {
    file: "sample", entry: "topk_main",
    params: [["n", "u32"], ["row_stride", "u32"], ["k", "u32"], ["slice", "u32"], ["slices", "u32"]],
    bindings: [{ name: "logits", kind: "read", type: "array<f32>" }, { name: "out", kind: "rw", type: "array<u32>" },
      { name: "allowed", kind: "read", type: "array<u32>" }, { name: "cand", kind: "read", type: "array<u32>" }],
  },
};

/**
 * The shader-source hook: `name` ("matvec") → WGSL text of `shaders/<name>.wgsl`.
 * In the browser it fetches relative to `base`; for a file: URL (Node) it reads the file.
 * @param {string | URL} [base] the shaders folder (default: the repository's `shaders/`, three folders up from this module)
 * @returns {ShaderSource}
 */
export function shaderSourceFrom(base = new URL("../../../shaders/", import.meta.url)) {
  const root = new URL(String(base).endsWith("/") ? String(base) : `${base}/`);
  return async (name) => {
    const url = new URL(`${name}.wgsl`, root);
    if (url.protocol === "file:") {
      // Node: fetch() has no file: URLs. The specifier is a variable so that
      // browsers (and tsc without Node's types) never resolve it.
      const fsName = "node:fs/promises";
      const fs = /** @type {{ readFile: (u: URL, enc: string) => Promise<string> }} */ (await import(fsName));
      return fs.readFile(url, "utf8");
    }
    const res = await fetch(url);
    if (!res.ok) throw new SitegenRuntimeError(`Could not load shader ${url} (HTTP ${res.status}).`, { url: String(url) });
    return res.text();
  };
}

/**
 * A tiny preprocessor: `#if NAME`, `#if !NAME`, `#elif [!]NAME`, `#else`, `#endif`
 * over boolean defines. Unknown names and unbalanced directives throw (a typo
 * must not silently drop code).
 * @param {string} src
 * @param {Record<string, boolean | number | string>} defines
 * @param {string} file for error messages
 */
export function preprocess(src, defines, file = "shader") {
  /** @type {{ active: boolean, taken: boolean, parent: boolean }[]} */
  const stack = [];
  let active = true;
  /** @type {string[]} */
  const out = [];
  const lines = src.split("\n");
  /** @param {string} expr @param {number} i */
  const test = (expr, i) => {
    const m = /^(!?)([A-Za-z_][A-Za-z0-9_]*)$/.exec(expr.trim());
    if (!m) throw new SitegenRuntimeError(`${file}.wgsl:${i + 1}: bad #if expression '${expr.trim()}'`);
    if (!(m[2] in defines)) throw new SitegenRuntimeError(`${file}.wgsl:${i + 1}: unknown define '${m[2]}'`);
    return Boolean(defines[m[2]]) !== (m[1] === "!");
  };
  lines.forEach((line, i) => {
    const d = /^\s*#(if|elif|else|endif)\b(.*)$/.exec(line);
    if (!d) { out.push(active ? line : ""); return; }
    const [, dir, rest] = d;
    if (dir === "if") {
      const t = active && test(rest, i);
      stack.push({ active, taken: t, parent: active });
      active = t;
    } else {
      const top = stack[stack.length - 1];
      if (!top) throw new SitegenRuntimeError(`${file}.wgsl:${i + 1}: #${dir} without #if`);
      if (dir === "elif") { const t = top.parent && !top.taken && test(rest, i); top.taken ||= t; active = t; }
      else if (dir === "else") { active = top.parent && !top.taken; top.taken = true; }
      else { stack.pop(); active = top.parent; }
    }
    out.push("");   // keep line numbers of compiler messages
  });
  if (stack.length) throw new SitegenRuntimeError(`${file}.wgsl: #if without #endif`);
  return out.join("\n");
}

/**
 * Pipelines per device and shader sources, shared by every Kernels on that device: engines for
 * several models in one page or process (tests, a model switch) compile each variant once. A
 * variant's key names everything its code depends on besides the sources.
 * @type {WeakMap<GPUDevice, Map<string, Map<string, { pipeline: GPUComputePipeline, layout: GPUBindGroupLayout }>>>}
 */
const PIPELINES = new WeakMap();

/** @param {GPUDevice} device @param {Record<string, string>} sources */
function sharedPipelines(device, sources) {
  let bySources = PIPELINES.get(device);
  if (!bySources) { bySources = new Map(); PIPELINES.set(device, bySources); }
  const id = Object.keys(sources).sort().map((k) => `${k}\u0000${sources[k]}`).join("\u0001");
  let cache = bySources.get(id);
  if (!cache) { cache = new Map(); bySources.set(id, cache); }
  return cache;
}

/** Bytes of a buffer or of a range of one. @param {BufferRef} r */
function bufferRefSize(r) {
  if ("buffer" in r) return r.size ?? r.buffer.size - (r.offset ?? 0);
  return r.size;
}

/** @param {number} n */
const pow2ceil = (n) => 2 ** Math.ceil(Math.log2(Math.max(1, n)));

/**
 * Split `count` workgroups over x and y (x ≤ limit); shaders rebuild the
 * linear index as `wid.x + wid.y * nwg.x` (`wg_index` in common.wgsl).
 * @param {number} count
 * @param {number} [limit] the device's maxComputeWorkgroupsPerDimension
 * @returns {[number, number]}
 */
function grid2(count, limit = 65535) {
  if (count <= limit) return [Math.max(count, 1), 1];
  const y = Math.ceil(count / limit);
  return [Math.ceil(count / y), y];
}

/**
 * @typedef {(tokens: number, pos0: number) => { pipeline: GPUComputePipeline, bindGroup: GPUBindGroup,
 *   grid: [number, number, number] } | null} DispatchPlan  what to dispatch for a step (null: nothing)
 */

/**
 * One recorded kernel call (or two dependent ones): pipelines, bind groups and grids that follow the step.
 */
export class KernelOp {
  /**
   * @param {Kernels} kernels
   * @param {string} label
   * @param {DispatchPlan} plan
   * @param {DispatchPlan} [then] a second dispatch that depends on the first (e.g. attention's merge)
   */
  constructor(kernels, label, plan, then) {
    this.kernels = kernels;
    this.label = label;
    this.plans = then ? [plan, then] : [plan];
    /** linear: whether it computes its fused RMSNorm itself in a step of `tokens` (see `prenorm`). */
    /** @type {(tokens: number) => boolean} */
    this.normsItself = () => false;
    /** linear: its int8 output for its reader (`quantizeFor`), or null. */
    /** @type {XqOut | null} */
    this.xqOut = null;
    /** attention: whether a step of `tokens` does the `rope` op's work itself (its `rope` option). */
    /** @type {(tokens: number) => boolean} */
    this.fusesRope = () => false;
  }

  /**
   * Skip this op in the steps where `when(tokens)` holds (a norm that its readers compute themselves).
   * @param {(tokens: number) => boolean} when
   */
  skipWhen(when) {
    this.plans = this.plans.map((f) => (tokens, pos0) => (when(tokens) ? null : f(tokens, pos0)));
    return this;
  }

  /**
   * The variants (pipeline keys) this op runs for a step, "+"-joined ("" when it is skipped).
   * @param {number} tokens @param {number} [pos0]
   */
  variant(tokens, pos0 = this.kernels.step.pos0) {
    return this.plans.map((f) => f(tokens, pos0)?.pipeline.label).filter(Boolean).join("+");
  }

  /**
   * Record this op into a compute pass, sized for the tokens and position of the current step.
   * @param {GPUComputePassEncoder} pass
   */
  record(pass) {
    const { tokens, pos0 } = this.kernels.step;
    for (const plan of this.plans) {
      const p = plan(tokens, pos0);
      if (!p) continue;
      pass.setPipeline(p.pipeline);
      pass.setBindGroup(0, p.bindGroup);
      pass.dispatchWorkgroups(...p.grid);
    }
  }

  /** Dispatches this op records for a step. @param {number} tokens @param {number} [pos0] */
  dispatches(tokens, pos0 = this.kernels.step.pos0) {
    return this.plans.filter((f) => f(tokens, pos0)).length;
  }
}

/**
 * Whether the device is a CPU implementation of WebGPU (Chrome's SwiftShader fallback, Mesa's
 * llvmpipe/lavapipe), from the adapter's info where the browser gives it.
 * @param {GPUDevice} device
 */
export function isSoftwareAdapter(device) {
  const info = /** @type {any} */ (device).adapterInfo;
  if (!info) return false;
  return Boolean(info.isFallbackAdapter) || /swiftshader|llvmpipe|lavapipe/i.test(`${info.architecture} ${info.device} ${info.description}`);
}

/** @type {WeakMap<GPUDevice, XmmMode>} what `Kernels.create` found of a device's subgroup matrices */
const SGMAT_MODES = new WeakMap();

/** The WebGPU feature of subgroup matrices (Dawn: with the toggle allow_unsafe_apis; Chrome: behind a flag). */
export const SUBGROUP_MATRIX = "chromium-experimental-subgroup-matrix";

/**
 * How this device spells the i8 subgroup-matrix builtins, or null where they are absent or give a
 * wrong product. Dawn's spelling moved (type parameters <T, M, K> or <T, K, M>; the layout as a
 * template argument or a bool), and the unit of a packed 8-bit matrix's offset and stride (array
 * elements or matrix elements) is not written down anywhere we could find: each candidate computes
 * one 16x16x32 product of known integers, read from offsets and strides that tell the units apart,
 * and the first whose result is exact is taken.
 * @param {GPUDevice} device
 * @param {(line: string) => void} [log] why each candidate failed (bench/adapter_info.mjs prints it)
 * @returns {Promise<{ syntax: "mk" | "km" | "bool", unit: number } | null>}
 */
export async function probeSubgroupMatrix(device, log = (/** @type {string} */ _line) => {}) {
  if (!device.features.has(/** @type {GPUFeatureName} */ (SUBGROUP_MATRIX)) || !device.features.has("subgroups")) return null;
  // A [16 x 32] row-major at word 8, row stride 12 words; B [32 x 16] column-major at word 4, column
  // stride 12 words (in a second buffer); C = A B, i32, column-major with stride 16.
  const A = Array.from({ length: 16 * 32 }, (_, i) => ((i * 7 + 3) % 15) - 7);
  const B = Array.from({ length: 32 * 16 }, (_, i) => ((i * 5 + 1) % 11) - 5);
  /** Row (or column) i's 32 values at(i, k) as 8 words, from word `off` with a stride of 12 words. */
  const pack = (/** @type {(i: number, k: number) => number} */ at, /** @type {number} */ off) => {
    const u = new Uint32Array(off + 16 * 12);
    for (let i = 0; i < 16; i++) for (let w = 0; w < 8; w++) {
      let v = 0;
      for (let b = 0; b < 4; b++) v |= (at(i, 4 * w + b) & 255) << (8 * b);
      u[off + i * 12 + w] = v >>> 0;
    }
    return u;
  };
  const a = pack((r, k) => A[r * 32 + k], 8);
  const b = pack((c, k) => B[k * 16 + c], 4);
  const want = new Int32Array(256);
  for (let r = 0; r < 16; r++) for (let c = 0; c < 16; c++) {
    let s = 0;
    for (let k = 0; k < 32; k++) s += A[r * 32 + k] * B[k * 16 + c];
    want[c * 16 + r] = s;
  }
  const buf = (/** @type {Uint32Array} */ data, /** @type {number} */ usage) => {
    const x = device.createBuffer({ size: Math.max(16, data.byteLength), usage, mappedAtCreation: true });
    new Uint32Array(x.getMappedRange()).set(data);
    x.unmap();
    return x;
  };
  const S = GPUBufferUsage.STORAGE;
  const ga = buf(a, S), gb = buf(b, S);
  const out = device.createBuffer({ size: 1024, usage: S | GPUBufferUsage.COPY_SRC });
  const read = device.createBuffer({ size: 1024, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  try {
    for (const syntax of /** @type {const} */ (["mk", "km", "bool"])) {
      for (const unit of [1, 4]) {
        const code = `${sgmHeader(syntax).join("\n")}
@group(0) @binding(0) var<storage, read> pa: array<i32>;
@group(0) @binding(1) var<storage, read> pb: array<i32>;
@group(0) @binding(2) var<storage, read_write> pc: array<i32>;
@compute @workgroup_size(128)
fn main() {
  // every subgroup computes the same product (and stores the same values)
  let l = ${sgmLoad(syntax, "left", "pa", `8u * ${unit}u`, `12u * ${unit}u`)};
  let r = ${sgmLoad(syntax, "right", "pb", `4u * ${unit}u`, `12u * ${unit}u`)};
  ${sgmStore(syntax, "pc", "0u", "subgroupMatrixMultiply<i32>(l, r)", "16u")};
}`;
        device.pushErrorScope("validation");
        const module = device.createShaderModule({ code });
        const info = await module.getCompilationInfo();
        let pipeline = null;
        const errors = info.messages.filter((x) => x.type === "error");
        if (!errors.length) pipeline = device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" } });
        const compileErr = await device.popErrorScope();
        if (compileErr || !pipeline) {
          log(`${syntax}/${unit}: ${errors.map((x) => `${x.lineNum}:${x.linePos} ${x.message}`).join("; ") || compileErr?.message}`);
          continue;
        }
        device.pushErrorScope("validation");
        const bg = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [
          { binding: 0, resource: { buffer: ga } }, { binding: 1, resource: { buffer: gb } }, { binding: 2, resource: { buffer: out } }] });
        const enc = device.createCommandEncoder();
        enc.clearBuffer(out);
        const pass = enc.beginComputePass();
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, bg);
        pass.dispatchWorkgroups(1);
        pass.end();
        enc.copyBufferToBuffer(out, 0, read, 0, 1024);
        device.queue.submit([enc.finish()]);
        const err = await device.popErrorScope();
        await read.mapAsync(GPUMapMode.READ);
        const got = new Int32Array(read.getMappedRange().slice(0));
        read.unmap();
        if (!err && want.every((v, i) => got[i] === v)) return { syntax, unit };
        log(`${syntax}/${unit}: ${err ? err.message : `wrong product: ${got.slice(0, 6).join(",")} for ${want.slice(0, 6).join(",")}`}`);
      }
    }
    return null;
  } finally {
    for (const x of [ga, gb, out, read]) x.destroy();
  }
}

/**
 * Whether xmm_main on subgroup matrices gives exactly what its dot4I8Packed form gives (the same
 * integer tiles, folded in the same order) on small products that cover its tiling: two row blocks,
 * three groups, a last partial tile of tokens, with and without a gate. The probe above checks one
 * product's builtins; this checks the kernel's own loads and stores before a prefill relies on them
 * (the kernel tests run it against numpy only where a GPU has the matrices).
 * @param {GPUDevice} device @param {Record<string, string>} sources @param {XmmMode} mode
 */
export async function xmmAgrees(device, sources, mode) {
  const N = 128, K = 96, T = 40;
  const scalesOffset = N * K / 2;  // a multiple of 256
  const S = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  /** @type {GPUBuffer[]} */
  const bufs = [];
  const buffer = (/** @type {Uint32Array<ArrayBuffer>} */ data) => {
    const b = device.createBuffer({ size: data.byteLength, usage: S });
    device.queue.writeBuffer(b, 0, data);
    bufs.push(b);
    return b;
  };
  let seed = 7;
  const rand = () => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return seed; };
  const weight = () => {
    const u = new Uint32Array((scalesOffset + N * K / 16) / 4);
    for (let i = 0; i < scalesOffset / 4; i++) u[i] = rand();
    for (let i = scalesOffset / 4; i < u.length; i++) u[i] = 0x2c002c00 + (rand() & 0x03ff03ff);  // f16 scales in [1/16, 1/8)
    return { buffer: buffer(u), dtype: /** @type {"q4"} */ ("q4"), rows: N, cols: K, scalesOffset };
  };
  const w = weight(), g = weight();
  const xf = new Float32Array(T * K);
  for (let i = 0; i < xf.length; i++) xf[i] = rand() / 2 ** 31 - 1;
  const x = buffer(new Uint32Array(xf.buffer));
  const outs = [];
  const kernels = [];
  device.pushErrorScope("validation");
  device.pushErrorScope("internal");
  try {
    const enc = device.createCommandEncoder();
    for (const m of [mode, /** @type {XmmMode} */ ({ mode: "dot4" })]) {
      const k = new Kernels(device, sources, { f16: false, subgroups: m?.mode === "sgmat", int8: true, xmm: m });
      kernels.push(k);
      k.setStep({ tokens: T, pos0: 0 });
      for (const gate of [null, g]) {
        const out = buffer(new Uint32Array(T * N));
        const op = k.linear({ out, x, w, gate, act: gate ? "silu" : null, impl: "xmm", maxTokens: T });
        const pass = enc.beginComputePass();
        op.record(pass);
        pass.end();
        outs.push(out);
      }
    }
    const read = device.createBuffer({ size: outs.length * T * N * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    bufs.push(read);
    outs.forEach((o, i) => enc.copyBufferToBuffer(o, 0, read, i * T * N * 4, T * N * 4));
    device.queue.submit([enc.finish()]);
    const errs = [await device.popErrorScope(), await device.popErrorScope()];
    if (errs.some(Boolean)) return false;
    await read.mapAsync(GPUMapMode.READ);
    const f = new Float32Array(read.getMappedRange().slice(0));
    read.unmap();
    // (the same integer tiles folded in the same order: equal but for how a compiler contracts the
    // fold's multiply-adds, so within 1e-5 of each product's largest output; a wrong tile is far off)
    for (let o = 0; o < 2; o++) {
      const a = f.subarray(o * T * N, (o + 1) * T * N), b = f.subarray((2 + o) * T * N, (3 + o) * T * N);
      const tol = 1e-5 * b.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      for (let i = 0; i < b.length; i++) if (!(Math.abs(a[i] - b[i]) <= tol)) return false;
    }
    return true;
  } catch {
    await device.popErrorScope().catch(() => null);
    await device.popErrorScope().catch(() => null);
    return false;
  } finally {
    for (const k of kernels) k.destroy();
    for (const b of bufs) b.destroy();
  }
}

/**
 * The enables and the i8 16x16x32 matrix types of a subgroup-matrix spelling (`probeSubgroupMatrix`).
 * @param {"mk" | "km" | "bool"} syntax
 */
function sgmHeader(syntax) {
  const [l, r] = syntax === "mk" ? ["16, 32", "32, 16"] : ["32, 16", "16, 32"];
  return ["enable subgroups;", "enable chromium_experimental_subgroup_matrix;",
    "diagnostic(off, chromium.subgroup_matrix_uniformity);",
    `alias SgmLeft = subgroup_matrix_left<i8, ${l}>;`, `alias SgmRight = subgroup_matrix_right<i8, ${r}>;`,
    "alias SgmResult = subgroup_matrix_result<i32, 16, 16>;"];
}

/** A left (row-major) or right (column-major) i8 matrix load. @param {"mk" | "km" | "bool"} syntax
 * @param {"left" | "right"} side @param {string} arr @param {string} off @param {string} stride */
function sgmLoad(syntax, side, arr, off, stride) {
  const ty = side === "left" ? "SgmLeft" : "SgmRight";
  const major = side === "left" ? "row_major" : "col_major";
  return syntax === "bool" ? `subgroupMatrixLoad<${ty}>(&${arr}, ${off}, ${side === "right"}, ${stride})`
    : `subgroupMatrixLoad<${ty}, ${major}>(&${arr}, ${off}, ${stride})`;
}

/** A column-major result store. @param {"mk" | "km" | "bool"} syntax @param {string} arr @param {string} off
 * @param {string} value @param {string} stride */
function sgmStore(syntax, arr, off, value, stride) {
  return syntax === "bool" ? `subgroupMatrixStore(&${arr}, ${off}, ${value}, true, ${stride})`
    : `subgroupMatrixStore<col_major>(&${arr}, ${off}, ${value}, ${stride})`;
}

/**
 * The kernel side of the spelling: the loads and the store xmm_main calls (shaders/matmul.wgsl).
 * @param {"mk" | "km" | "bool"} syntax
 */
function sgmFunctions(syntax) {
  return [...sgmHeader(syntax),
    `fn sgm_load_left(off: u32, stride: u32) -> SgmLeft { return ${sgmLoad(syntax, "left", "xwt", "off", "stride")}; }`,
    `fn sgm_load_right(off: u32, stride: u32) -> SgmRight { return ${sgmLoad(syntax, "right", "xxt", "off", "stride")}; }`,
    `fn sgm_store(off: u32, c: SgmResult) { ${sgmStore(syntax, "xres", "off", "c", "XBM")}; }`];
}

/**
 * Whether the device compiles WGSL's packed 4x8 integer dot product (dot4I8Packed, pack4xI8): the
 * browser's `wgslLanguageFeatures` where it has them, else a probe module (Node + Dawn).
 * @param {GPUDevice} device
 */
async function hasInt8Dot(device) {
  const lf = /** @type {any} */ (globalThis.navigator)?.gpu?.wgslLanguageFeatures;
  if (lf && typeof lf.has === "function") return Boolean(lf.has("packed_4x8_integer_dot_product"));
  device.pushErrorScope("validation");
  const m = device.createShaderModule({ code: "@compute @workgroup_size(1) fn main() { _ = dot4I8Packed(pack4xI8(vec4<i32>(1)), 2u); }" });
  const info = await m.getCompilationInfo();
  const err = await device.popErrorScope();
  return !err && !info.messages.some((x) => x.type === "error");
}

export class Kernels {
  /**
   * @param {GPUDevice} device
   * @param {Record<string, string>} sources
   * @param {{ f16: boolean, subgroups: boolean, int8?: boolean, xmm?: XmmMode }} features
   * @param {number} [gridLimit] workgroups per grid dimension (default: the device limit)
   * @param {"gpu" | "cpu"} [tuning] default matvec shape (see `create`)
   * @param {number} [int8MinWeights] the integer-dot matvec's size threshold (see `create`)
   */
  constructor(device, sources, features, gridLimit, tuning = "gpu", int8MinWeights = INT8_MIN_WEIGHTS) {
    this.device = device;
    this.sources = sources;
    /** What the kernels use: f16 compute, subgroup reductions, WGSL's packed int8 dot products. */
    this.features = features;
    /** The current step (`setStep`). */
    this.step = { tokens: 1, pos0: 0 };
    /** @type {Map<string, { pipeline: GPUComputePipeline, layout: GPUBindGroupLayout }>} */
    this.cache = sharedPipelines(device, sources);
    this.stepBuffer = device.createBuffer({ label: "kernels.step", size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    // Bound where an optional input is absent (the variant never reads it); an absent writable binding
    // gets its own, since one buffer may not be both read-only and writable in a dispatch.
    this.dummy = device.createBuffer({ label: "kernels.dummy", size: 256, usage: GPUBufferUsage.STORAGE });
    this.dummyRw = device.createBuffer({ label: "kernels.dummy (rw)", size: 256, usage: GPUBufferUsage.STORAGE });
    /** @type {GPUBuffer[]} */
    this.paramChunks = [];
    /** @type {GPUBuffer[]} */
    this.scratch = [];
    /** @type {Map<string, GPUBuffer>} */
    this.scratchByKey = new Map();
    this.paramUsed = Infinity;
    this.gridLimit = gridLimit ?? device.limits.maxComputeWorkgroupsPerDimension;
    /** Default matvec shape: "gpu" (lanes and rows per invocation measured on the H200) or "cpu". */
    this.tuning = tuning;
    /** q4/q8 matvecs of at least this many weights take the integer-dot path (where `features.int8`). */
    this.int8MinWeights = int8MinWeights;
    this.setStep({ tokens: 1, pos0: 0 });
  }

  /**
   * Load the shader sources and check the requested features.
   * @param {GPUDevice} device
   * @param {{ shaderSource?: ShaderSource, f16?: boolean, subgroups?: boolean, maxWorkgroupsPerDim?: number,
   *   tuning?: "gpu" | "cpu", int8MinWeights?: number, prefillInt8?: "auto" | "dot4" | "off" }} [options]
   *   f16/subgroups: use the feature (default: when the device has it).
   *   maxWorkgroupsPerDim: where big grids wrap from x into y (default: the device
   *   limit; tests lower it to exercise the wrap cheaply).
   *   int8MinWeights: q4/q8 matvecs of at least this many weights (both matrices of a gated pair) use
   *   integer dot products over an int8 input quantized in front (shaders/matvec.wgsl XQ; default 8M,
   *   0: every quantized matvec, as the quantized whole-model tests run, Infinity: never).
   *   prefillInt8: how a prefill's q4/q8 products run. "auto" (default): on i8 subgroup matrices where
   *   the device has them and they pass `probeSubgroupMatrix` (shaders/matmul.wgsl xmm_main), else the
   *   f32 tiled matmul; "dot4": the same integer kernel with dot4I8Packed in place of the matrices
   *   (tests: the software adapter has no subgroup matrices); "off": the f32 tiled matmul.
   *   tuning: the matvec's default shape. "cpu" (the default on a software adapter: SwiftShader,
   *   llvmpipe) gives each row one subgroup's worth of lanes and 4 rows per invocation: a CPU runs a
   *   workgroup's invocations as a few SIMD lanes and pays for every barrier of a wide reduction,
   *   so the GPU shape (32-64 lanes per row) is 3-5x slower there (bench/kernel_bench.mjs, SwiftShader).
   */
  static async create(device, { shaderSource = shaderSourceFrom(), f16, subgroups, maxWorkgroupsPerDim, tuning, int8MinWeights, prefillInt8 } = {}) {
    const has = (/** @type {string} */ f) => device.features.has(/** @type {GPUFeatureName} */ (f));
    if (f16 && !has("shader-f16")) {
      throw new MissingFeatureError("f16 compute needs the WebGPU feature 'shader-f16', which this device lacks.", { feature: "shader-f16" });
    }
    if (subgroups && !has("subgroups")) {
      throw new MissingFeatureError("Subgroup reductions need the WebGPU feature 'subgroups', which this device lacks.", { feature: "subgroups" });
    }
    const names = SHADER_FILES;
    const texts = await Promise.all(names.map((n) => shaderSource(n)));
    /** @type {Record<string, string>} */
    const sources = {};
    names.forEach((n, i) => { sources[n] = texts[i]; });
    const int8 = int8MinWeights !== Infinity && await hasInt8Dot(device);
    /** @type {XmmMode} */
    let xmm = null;
    // xmm_main keeps ~22 KB of workgroup memory (the WebGPU default limit is 16 KB; 32 KB is common)
    const xmmFits = device.limits.maxComputeWorkgroupStorageSize >= XMM_WORKGROUP_BYTES;
    if (int8 && xmmFits && prefillInt8 === "dot4") xmm = { mode: "dot4" };
    else if (int8 && xmmFits && (prefillInt8 ?? "auto") === "auto") {
      // (once per device: a model switch or a second engine on it does not probe again)
      let found = SGMAT_MODES.get(device);
      if (found === undefined) {
        // (an optional speed-up: a probe that throws leaves it off, not the model)
        const sgm = await probeSubgroupMatrix(device).catch(() => null);
        const mode = sgm ? /** @type {XmmMode} */ ({ mode: "sgmat", ...sgm }) : null;
        found = mode && await xmmAgrees(device, sources, mode) ? mode : null;
        SGMAT_MODES.set(device, found);
      }
      xmm = found;
    }
    return new Kernels(device, sources, { f16: f16 ?? has("shader-f16"), subgroups: subgroups ?? has("subgroups"), int8, xmm },
      maxWorkgroupsPerDim, tuning ?? (isSoftwareAdapter(device) ? "cpu" : "gpu"), int8MinWeights);
  }

  /**
   * Set the step that the next recorded ops run: `tokens` rows starting at
   * position `pos0`. Writes the 16-byte step uniform (ordered before the next submit).
   * @param {{ tokens: number, pos0: number }} step
   */
  setStep({ tokens, pos0 }) {
    if (!(Number.isInteger(tokens) && tokens >= 1 && Number.isInteger(pos0) && pos0 >= 0)) {
      throw new SitegenRuntimeError(`setStep: tokens must be an integer >= 1 and pos0 >= 0, got ${tokens}, ${pos0}.`);
    }
    this.step = { tokens, pos0 };
    this.device.queue.writeBuffer(this.stepBuffer, 0, new Uint32Array([tokens, pos0, 0, 0]));
  }

  // ---------------------------------------------------------------- ops

  /**
   * Embedding lookup: out[t, :] (=|+=) table[ids[idsOffset + t] - rowStart, :] * scale,
   * for the ids that fall in this part's rows [rowStart, rowStart + table.rows)
   * (one op per part of a split table). With `positions: true` the row is
   * `pos0 + t` instead (learned position embeddings, GPT-2), usually with `accumulate`.
   * @param {{ out: BufferRef, ids?: BufferRef | null, idsOffset?: number, table: WeightPart,
   *   rowStart?: number, scale?: number, positions?: boolean, accumulate?: boolean }} o
   */
  embed(o) {
    const { table } = o;
    const hidden = table.cols;
    const positions = Boolean(o.positions);
    if (!positions && !o.ids) throw new SitegenRuntimeError("embed: 'ids' is required unless positions is true.");
    const key = `embed:${table.dtype}${positions ? ":pos" : ""}${o.accumulate ? ":acc" : ""}`;
    const defines = { ...dtypeDefines("table", table.dtype), POSITIONS: positions, ACCUM: Boolean(o.accumulate) };
    const k = this.#pipeline("embed", key, defines);
    const params = { hidden, row_start: o.rowStart ?? 0, rows: table.rows, ids_offset: o.idsOffset ?? 0, scale: o.scale ?? 1,
      ...weightParams("table", table) };
    const bg = this.#bindGroup("embed", k, params, { ids: o.ids ?? null, table, out: o.out });
    return new KernelOp(this, key, (tokens) => ({ pipeline: k.pipeline, bindGroup: bg, grid: [...this.#grid(tokens), 1] }));
  }

  /**
   * RMSNorm (`x / sqrt(mean(x²) + eps) * weight`) or LayerNorm
   * (`(x - mean) / sqrt(var + eps) * weight + bias`) over rows of `n`.
   * Each token has `rowsPerToken` rows (1 for the hidden state; `heads` for a
   * q/k norm over head_dim). `weight` has `n` values, or `rowsPerToken * n`
   * with `perRowWeight` (StableLM's per-head LayerNorm).
   * `accumulate`: out += norm(x) (Gemma's sandwich norms add into the residual).
   * @param {{ out: BufferRef, x: BufferRef, weight: BufferRef, bias?: BufferRef | null, n: number, eps: number,
   *   kind: "rms" | "layer", rowsPerToken?: number, perRowWeight?: boolean, accumulate?: boolean, rows?: RowsMode }} o
   */
  norm(o) {
    const rowsPerToken = o.rowsPerToken ?? 1;
    const rows = o.rows ?? "all";
    if (o.kind !== "rms" && o.kind !== "layer") throw new SitegenRuntimeError(`norm: kind must be 'rms' or 'layer', got '${o.kind}'.`);
    const sg = this.features.subgroups;
    const key = `norm:${o.kind}${o.bias ? ":bias" : ""}${o.perRowWeight ? ":perrow" : ""}${o.accumulate ? ":acc" : ""}:rows=${rows}${sg ? ":sg" : ""}`;
    const defines = { LAYER: o.kind === "layer", BIAS: Boolean(o.bias), PER_ROW: Boolean(o.perRowWeight),
      ACCUM: Boolean(o.accumulate), ROWS: ROWS_CODE[rows], SUBGROUPS: sg };
    const k = this.#pipeline("norm", key, defines);
    const bg = this.#bindGroup("norm", k, { n: o.n, rows_per_token: rowsPerToken, eps: o.eps },
      { x: o.x, weight: o.weight, bias: o.bias ?? null, out: o.out });
    return new KernelOp(this, key, (tokens) => ({ pipeline: k.pipeline, bindGroup: bg,
      grid: [...this.#grid((rows === "all" ? tokens : 1) * rowsPerToken), 1] }));
  }

  /**
   * y = x · wᵀ (+ bias) for x [M, K] → out[m, outOffset + j], j < N, row stride
   * `outStride` (default N). Epilogue options:
   * - `gate` (a weight like `w`): y = act(x · gateᵀ + gateBias) * (x · wᵀ + bias)  (gated MLP, up = w)
   * - `act` without gate: y = act(x · wᵀ + bias)                                  (GPT-2 style MLP)
   * - `softcap`: y = softcap * tanh(y / softcap)                                  (Gemma 2 final logits)
   * - `accumulate`: out += y                                                      (residual add fused)
   * M is the step's tokens (or 1 with rows "last"/"first"). M ≤ 4 runs the
   * matvec kernel (whole rows per workgroup, bandwidth-bound decode), larger M
   * the tiled matmul; `impl` forces one (tests).
   * - `biasOffset`/`gateBiasOffset`: the biases of row j are bias[biasOffset + j] (a part or group member)
   * - `segments`: output rows from `from` on go to out[base + m * stride + (row - from)] instead
   *   (one or two cuts: a fused q/k/v matvec writes three dense arrays; rows count from outOffset)
   * @param {{ out: BufferRef, x: BufferRef, w: WeightPart, gate?: WeightPart | null, bias?: BufferRef | null,
   *   gateBias?: BufferRef | null, act?: Activation | null, softcap?: number | null, accumulate?: boolean,
   *   outOffset?: number, outStride?: number, rows?: RowsMode, impl?: "matvec" | "matmul" | "xmm", maxTokens?: number,
   *   biasOffset?: number, gateBiasOffset?: number, prenorm?: { x: BufferRef, weight: BufferRef, eps: number } | null,
   *   tune?: { tpr?: number, nr?: number, int8?: boolean }, segments?: { from: number, base: number, stride: number }[],
   *   quantizeFor?: "q4" | "q8" | null, xqFrom?: XqOut | null }} o
   * - `maxTokens`: the most tokens a step has (the prefill chunk): sizes the int8 input of the
   *   prefill's integer product (xmm_main, where the device has one: `Kernels.create`'s `prefillInt8`),
   *   which a q4/q8 product with K % 32 == 0 runs in steps of more than MATVEC_MAX_TOKENS tokens, up to
   *   this many ("xmm" forces it; without maxTokens those steps run the f32 tiled matmul)
   * - `prenorm`: the matvec computes its input itself as RMSNorm(prenorm.x) with that weight and eps
   *   (x, the normed activation, is still what the tiled matmul reads: a prefill keeps its norm op)
   * - `tune`: the matvec's lanes per row and rows per invocation, and whether a q4/q8 matvec takes
   *   the integer-dot path (benchmarks, tests; default: chosen from the shape, `int8For`)
   * - `quantizeFor`: this product's only reader is an integer-dot matvec over weights of that dtype
   *   (`xqFrom` its op's `xqOut`): where the matvec shape allows (`xqOut` not null), its matvec
   *   writes the reader's int8 input instead of `out` (QOUT), saving the reader's quantize dispatch.
   *   The tiled matmul (more tokens) still writes `out`, and the reader then reads that.
   */
  linear(o) {
    const { w, gate } = o;
    const N = w.rows, K = w.cols;
    if (gate && (gate.dtype !== w.dtype || gate.rows !== N || gate.cols !== K)) {
      throw new SitegenRuntimeError(`linear: gate (${gate.dtype} ${gate.rows}x${gate.cols}) must match w (${w.dtype} ${N}x${K}).`);
    }
    const rows = o.rows ?? "all";
    const act = o.act ?? "none";
    if (!(act in ACT_CODE)) throw new SitegenRuntimeError(`linear: unknown activation '${act}' (expected silu, gelu_tanh or gelu).`);
    const ct = this.features.f16 ? "f16" : "f32";
    const sg = this.features.subgroups;
    const common = {
      ...dtypeDefines("w", w.dtype), GATED: Boolean(gate), ACT: ACT_CODE[/** @type {keyof ACT_CODE} */ (act)],
      BIAS: Boolean(o.bias), GATE_BIAS: Boolean(o.gateBias), SOFTCAP: Boolean(o.softcap), ACCUM: Boolean(o.accumulate),
      ROWS: ROWS_CODE[rows], F16: ct === "f16",
    };
    const tail = `${gate ? ":gated" : ""}${act !== "none" ? `:${act}` : ""}${o.bias ? ":bias" : ""}${o.gateBias ? ":gbias" : ""}` +
      `${o.softcap ? ":softcap" : ""}${o.accumulate ? ":acc" : ""}:rows=${rows}:ct=${ct}`;
    const prenorm = o.prenorm ?? null;
    if (prenorm && (K % 32 !== 0 || o.impl === "matmul")) {
      throw new SitegenRuntimeError(`linear: a fused RMSNorm needs the vectorised matvec (K % 32 == 0), got K = ${K}.`);
    }
    const seg = o.segments ?? [];
    if (seg.length > 2) throw new SitegenRuntimeError("linear: at most 3 output segments (q, k, v).");
    const params = { n: N, out_stride: o.outStride ?? N, out_offset: o.outOffset ?? 0, softcap: o.softcap ?? 0,
      bias_off: o.biasOffset ?? 0, gate_bias_off: o.gateBiasOffset ?? 0,
      seg1: seg[0]?.from ?? NO_SEGMENT, base1: seg[0]?.base ?? 0, stride1: seg[0]?.stride ?? 0,
      seg2: seg[1]?.from ?? NO_SEGMENT, base2: seg[1]?.base ?? 0, stride2: seg[1]?.stride ?? 0,
      norm_eps: prenorm?.eps ?? 0, ...weightParams("w", w), ...weightParams("gate", gate ?? w) };
    const buffers = { x: o.x, w, gate: gate ?? null, bias: o.bias ?? null, gate_bias: o.gateBias ?? null, out: o.out };

    // matvec: TPR threads reduce one row; vectorised (one 32-wide group per
    // thread step, vec4 loads) when K is a multiple of 32, else element-wise.
    const vec = K % 32 === 0;
    for (const part of gate ? [w, gate] : [w]) {
      if (vec && (part.buffer.size - (part.offset ?? 0)) % 16 !== 0) {
        throw new SitegenRuntimeError(`linear: the buffer of a ${part.dtype} ${N}x${K} weight has ${part.buffer.size} bytes ` +
          "(from its offset); weight buffers must be sized to a multiple of 16 bytes.", { size: part.buffer.size });
      }
    }
    // TPR lanes per row (a lane takes every TPR-th 32-wide group), NR rows per invocation (fewer
    // when the matrix is too small to give every compute unit work).
    const units = vec ? K / 32 : K;
    const cpu = this.tuning === "cpu";
    // XQ: the input quantized to int8 by a dispatch in front (xquant, which also applies the fused
    // norm's weight), then integer dot products (shaders/matvec.wgsl).
    const xq = vec && o.impl !== "matmul" && this.features.int8 === true &&
      (w.dtype === "q4" || w.dtype === "q8") && (o.tune?.int8 ?? (Boolean(o.xqFrom) || this.int8For(w.dtype, N * K * (gate ? 2 : 1))));
    // Measured on the H200 (bench/matvec_lab.mjs, bench/kernel_bench.mjs; docs/benchmarks.md):
    // - q4/q8 with K % 32 == 0: one subgroup's 32 lanes and 4 rows each, the sums reduced within the
    //   subgroup (2 rows for an output head's 64k+ rows); 64 lanes and 2 rows where 32x4 would leave
    //   fewer than 256 workgroups (a long-K product with few rows, e.g. a down projection). H200, both
    //   paths: Llama-3.2-1B q/k/v 13.1 -> 12.0 us, down 23.0 -> 17.7, output head 113.7 -> 66.9;
    //   Gemma-7B gate/up 85.2 -> 52.3, down 63.8 -> 30.6 (the integer-dot ones with their quantize).
    //   Either way fewer rows while that would leave fewer than MATVEC_MIN_WORKGROUPS workgroups (a
    //   small model's products: SmolLM2-135M's decode lost 7 % with 2 rows on its 960-row q/k/v).
    // - otherwise (f16/f32 weights, the element-wise path): 64 lanes and 4 rows each for K >= 2048, 8 rows
    //   for an output head, fewer rows while that would leave fewer than MATVEC_MIN_WORKGROUPS workgroups.
    const quantVec = vec && (w.dtype === "q4" || w.dtype === "q8");
    const rowsEff = N * (gate ? 2 : 1);
    const gpuShape = quantVec
      ? (N >= 65536 ? [32, 2] : rowsEff / 32 >= 256 ? [32, 4] : [64, 2])
      : null;
    const tpr = o.tune?.tpr ?? (cpu ? 4 : gpuShape ? Math.min(gpuShape[0], Math.max(4, pow2ceil(units))) : Math.min(WG, Math.max(4, pow2ceil(Math.min(units, N >= 65536 ? 32 : 64)))));
    const nr = o.tune?.nr ?? (!vec ? 1 : cpu ? 4 :
      [gpuShape ? gpuShape[1] : N >= 65536 ? 8 : 4, 2].find((r) => N / ((WG / tpr) * r) >= MATVEC_MIN_WORKGROUPS) ?? 1);
    if (!(tpr >= 1 && tpr <= WG && WG % tpr === 0 && nr >= 1 && nr <= 8)) throw new SitegenRuntimeError(`linear: bad tuning tpr=${tpr} nr=${nr}.`);
    const rpw = (WG / tpr) * nr;
    // The quantized input rows: at most the matvec's tokens (more only where a test forces the matvec).
    const xqRows = o.impl === "matvec" ? 64 : cpu ? CPU_MATVEC_MAX_TOKENS : MATVEC_MAX_TOKENS;
    // QOUT (`quantizeFor`): the epilogue quantizes whole 32-groups of the reader's input, so a
    // workgroup's rows must be whole groups, and the output plain rows (no residual, no segments).
    const outStride = o.outStride ?? N;
    const qoutDtype = o.quantizeFor ?? null;
    const qout = qoutDtype !== null && vec && o.impl !== "matmul" && !o.accumulate && seg.length === 0 &&
      rpw % 32 === 0 && N % 32 === 0 && (o.outOffset ?? 0) % 32 === 0 && outStride % 32 === 0 && this.features.int8 === true;
    const qoutBuf = qout ? this.#scratch("xq-next", xqRows * (outStride / 32) * 80) : null;
    const mvKey = `matvec:${w.dtype}:tpr=${tpr}:nr=${nr}${vec ? ":vec" : ""}${xq ? ":xq" : ""}${qout ? `:qout=${qoutDtype}` : ""}` +
      `${prenorm ? ":rmsnorm" : ""}${sg ? ":sg" : ""}${tail}`;
    const mv = this.#pipeline("matvec", mvKey, { ...common, VEC: vec, XQ: xq, TPR: tpr, NR: nr, NR8: nr > 4, PRENORM: Boolean(prenorm), SUBGROUPS: sg,
      QOUT: qout, QOUT_Q4: qoutDtype === "q4", QGROUP: xq || qout },
      { x: vec ? "array<vec4<f32>>" : "array<f32>", w: vec ? "array<vec4<u32>>" : "array<u32>", gate: vec ? "array<vec4<u32>>" : "array<u32>",
        ...(qout ? { out: "array<vec4<u32>>" } : {}) });
    // A reader of a QOUT product reads (and, in a step where that product does not write it, writes)
    // the product's buffer.
    const from = o.xqFrom ?? null;
    if (from && !(xq && from.dtype === w.dtype && from.groups === K / 32 && !prenorm && from.rows >= xqRows)) {
      throw new SitegenRuntimeError(`linear: a ${w.dtype} ${N}x${K} product cannot read a ${from.dtype} product's int8 output ` +
        `(${from.groups} groups): it is not an integer-dot matvec over that input.`);
    }
    const xqBufs = { xq: xq ? from?.buffer ?? this.#scratch("xq", xqRows * (K / 32) * 80) : null };  // 5 vec4 a group
    const mvBg = this.#bindGroup("matvec", mv, { ...params, qout_groups: qout ? outStride / 32 : 0 },
      /** @type {Record<string, BufferRef | WeightPart | null>} */ ({ ...buffers, ...(prenorm ? { x: prenorm.x, norm_w: prenorm.weight } : {}),
        ...xqBufs, ...(qoutBuf ? { out: qoutBuf } : {}) }));
    /** @type {DispatchPlan | null} */
    let xqPlan = null;
    if (xq) {
      const qKey = `xquant:${w.dtype}${prenorm ? ":rmsnorm" : ""}:rows=${rows}`;
      const qk = this.#pipeline("xquant", qKey, { ...dtypeDefines("w", w.dtype), PRENORM: Boolean(prenorm), ROWS: ROWS_CODE[rows] });
      const qBg = this.#bindGroup("xquant", qk, { k: K },
        { x: prenorm ? prenorm.x : o.x, norm_w: prenorm?.weight ?? null, ...xqBufs });
      xqPlan = (tokens) => {
        const M = rows === "all" ? tokens : 1;
        if (useMatmul(tokens) || from?.active(tokens)) return null;
        if (M > xqRows) throw new SitegenRuntimeError(`linear: the integer-dot matvec takes at most ${xqRows} rows, got ${M}.`);
        return { pipeline: qk.pipeline, bindGroup: qBg, grid: [...this.#grid(Math.ceil(M * (K / 32) / WG)), 1] };
      };
    }
    // The prefill's integer product (xmm_main) over its input quantized in front by xquant (no fused
    // norm: a prefill reads x, which its norm op wrote); tokens in steps of XBN, the int8 rows padded
    // to a multiple of 32 so a step's last tile of tokens reads rows inside the buffer.
    const xmmMode = this.features.xmm ?? null;
    const xmmRows = Math.ceil(Math.max(MATVEC_MAX_TOKENS + 1, o.maxTokens ?? 0) / 32) * 32;
    const xmmOk = xmmMode !== null && quantVec && rows === "all" && o.impl !== "matvec" && o.impl !== "matmul" &&
      (o.impl === "xmm" || o.maxTokens !== undefined);
    if (o.impl === "xmm" && !xmmOk) {
      throw new SitegenRuntimeError(`linear: a ${w.dtype} ${N}x${K} product cannot run the integer prefill kernel here ` +
        `(${xmmMode ? "it needs q4/q8 weights with K % 32 == 0 and every row" : "these kernels have none: Kernels.create's prefillInt8"}).`);
    }
    /** @type {{ pipeline: GPUComputePipeline, bg: GPUBindGroup, quant: GPUComputePipeline, quantBg: GPUBindGroup } | null} */
    let xm = null;
    const xmmPlan = () => {
      if (!xm && xmmMode) {
        const xqBuf = this.#scratch("xq-mm", xmmRows * (K / 32) * 80);
        const sgm = xmmMode.mode === "sgmat";
        const p = this.#pipeline("xmatmul", `xmatmul:${w.dtype}:${sgm ? `sgmat-${xmmMode.syntax}-${xmmMode.unit}` : "dot4"}${tail}`,
          { ...common, F16: false, SGMAT: sgm, SGM_UNIT: sgm ? xmmMode.unit : 1, SUBGROUPS: sgm });
        const q = this.#pipeline("xquant", `xquant:${w.dtype}:rows=all`, { ...dtypeDefines("w", w.dtype), PRENORM: false, ROWS: 0 });
        xm = { pipeline: p.pipeline, bg: this.#bindGroup("xmatmul", p, params, { ...buffers, xq: xqBuf }),
          quant: q.pipeline, quantBg: this.#bindGroup("xquant", q, { k: K }, { x: o.x, norm_w: null, xq: xqBuf }) };
      }
      return xm;
    };
    if (o.impl === "xmm") xmmPlan();
    const mmKey = `matmul:${w.dtype}${tail}`;
    /** @type {{ pipeline: GPUComputePipeline, bg: GPUBindGroup } | null} */
    let mm = null;
    const matmul = () => {
      if (!mm) {
        const p = this.#pipeline("matmul", mmKey, { ...common });
        mm = { pipeline: p.pipeline, bg: this.#bindGroup("matmul", p, params, buffers) };
      }
      return mm;
    };
    if (o.impl === "matmul") matmul();
    const useMatmul = (/** @type {number} */ tokens) => {
      const M = rows === "all" ? tokens : 1;
      return o.impl === "matmul" || o.impl === "xmm" || (o.impl !== "matvec" && M > (cpu ? CPU_MATVEC_MAX_TOKENS : MATVEC_MAX_TOKENS));
    };
    const useXmm = (/** @type {number} */ tokens) => {
      if (o.impl === "xmm" && tokens > xmmRows) throw new SitegenRuntimeError(`linear: a step of ${tokens} tokens, past maxTokens (${o.maxTokens}).`);
      return xmmOk && useMatmul(tokens) && tokens <= xmmRows;
    };
    /** @type {DispatchPlan} the dispatch in front: the int8 input of the integer matvec or of xmm_main */
    const pre = (tokens, pos0) => {
      if (!useXmm(tokens)) return xqPlan ? xqPlan(tokens, pos0) : null;
      const p = /** @type {NonNullable<typeof xm>} */ (xmmPlan());
      return { pipeline: p.quant, bindGroup: p.quantBg, grid: [...this.#grid(Math.ceil(tokens * (K / 32) / WG)), 1] };
    };
    /** @type {DispatchPlan} */
    const main = (tokens) => {
      const M = rows === "all" ? tokens : 1;
      if (useMatmul(tokens)) {
        if (from?.active(tokens)) throw new SitegenRuntimeError(`linear ${N}x${K}: its input product wrote only int8 rows in a step of ${tokens} tokens.`);
        if (useXmm(tokens)) {
          const p = /** @type {NonNullable<typeof xm>} */ (xmmPlan());
          return { pipeline: p.pipeline, bindGroup: p.bg, grid: [Math.ceil(N / 64), Math.ceil(M / (gate ? 16 : 32)), 1] };
        }
        const p = matmul();
        return { pipeline: p.pipeline, bindGroup: p.bg, grid: [Math.ceil(N / 64), Math.ceil(M / 64), 1] };
      }
      return { pipeline: mv.pipeline, bindGroup: mvBg, grid: [...this.#grid(Math.ceil(N / rpw)), M] };
    };
    const op = xqPlan || xmmOk ? new KernelOp(this, `linear ${N}x${K}`, pre, main) : new KernelOp(this, `linear ${N}x${K}`, main);
    // Whether a step of `tokens` computes the fused RMSNorm itself (the matvec) or reads `x` (the matmul).
    op.normsItself = (/** @type {number} */ tokens) => Boolean(prenorm) && !useMatmul(tokens);
    /** @type {XqOut | null} what a reader passes as `xqFrom` (QOUT; null: this product writes `out` only) */
    op.xqOut = qoutBuf && qoutDtype ? { buffer: qoutBuf, dtype: qoutDtype, groups: outStride / 32, rows: xqRows,
      active: (/** @type {number} */ tokens) => !useMatmul(tokens) } : null;
    return op;
  }

  /**
   * Whether a q4/q8 matvec of `weights` weights (both matrices of a gated pair) takes the
   * integer-dot path by default on this device.
   * @param {string} dtype @param {number} weights
   */
  int8For(dtype, weights) {
    return this.features.int8 === true && (dtype === "q4" || dtype === "q8") && weights >= this.int8MinWeights;
  }

  /**
   * Rotary position embedding (rotate-half / NeoX on the first `2*half` dims
   * of each head) and the KV-cache append, in one dispatch per step:
   * q [tokens, heads*headDim] is rotated into qOut; k [tokens, kvHeads*headDim]
   * is rotated into kCache[(pos0 + t) mod cacheRows] and v copied into vCache[...]
   * (caches: [cacheRows, kvHeads*headDim] f32; `cacheRows` defaults to what the buffer holds; a
   * sliding-window layer's cache is a ring of fewer rows than the context, graph.js kvCacheLayout).
   * q, k and v are only read,
   * so they may be ranges of one buffer (a fused q/k/v matvec's output).
   * `table` comes from `ropeTable` (cos/sin per position); without it (learned
   * positions) only the cache append happens and qOut is not written.
   * @param {{ q: BufferRef, k: BufferRef, v: BufferRef, qOut?: BufferRef | null, kCache: BufferRef, vCache: BufferRef,
   *   heads: number, kvHeads: number, headDim: number, table?: { buffer: GPUBuffer, half: number, maxPositions: number } | null,
   *   cacheRows?: number }} o
   */
  rope(o) {
    const rotate = Boolean(o.table && o.table.half > 0);
    if (rotate && !o.qOut) throw new SitegenRuntimeError("rope: qOut is required when rotating.");
    const key = `rope${rotate ? "" : ":norotate"}`;
    const k = this.#pipeline("rope", key, { ROTATE: rotate });
    const bg = this.#bindGroup("rope", k, { heads: o.heads, kv_heads: o.kvHeads, head_dim: o.headDim,
      half: rotate ? /** @type {{half: number}} */ (o.table).half : 0, max_pos: o.table?.maxPositions ?? 0,
      rows: cacheRowsOf(o) },
    { table: o.table?.buffer ?? null, q: o.q, k: o.k, v: o.v, q_out: rotate ? /** @type {BufferRef} */ (o.qOut) : null,
      k_cache: o.kCache, v_cache: o.vCache });
    // one invocation per element of q (when rotating) and of k/v (rope.wgsl)
    const slices = Math.ceil(((rotate ? o.heads : 0) + o.kvHeads) * o.headDim / WG);
    return new KernelOp(this, key, (tokens) => ({ pipeline: k.pipeline, bindGroup: bg, grid: [...this.#grid(tokens), slices] }));
  }

  /**
   * The cos/sin table of `rope`, computed in float64 here:
   * inv_freq[i] = theta^(-2i / rotaryDim), adjusted by `scaling` (linear or
   * llama3, as transformers' rope init functions do), angle = pos * inv_freq.
   * Layout [maxPositions, half, 2] f32 (cos, sin).
   * @param {{ theta: number, rotaryDim: number, maxPositions: number, scaling?: RopeScaling }} o
   * @returns {{ buffer: GPUBuffer, half: number, maxPositions: number }}
   */
  ropeTable({ theta, rotaryDim, maxPositions, scaling = null }) {
    const data = ropeTableData({ theta, rotaryDim, maxPositions, scaling });
    const buffer = this.device.createBuffer({ label: `rope table θ=${theta}`, size: Math.max(16, data.byteLength),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
    this.device.queue.writeBuffer(buffer, 0, data);
    return { buffer, half: rotaryDim / 2, maxPositions };
  }

  /**
   * Causal attention with grouped KV heads: for token t (position pos0 + t)
   * and head h (kv head h / (heads / kvHeads)), over cached keys
   * j ≤ pos0 + t (and j > pos0 + t - window when `window` is set):
   * s = (q · k_j) * scale, then softcap * tanh(s / softcap) when `softcap`,
   * softmax, out = Σ p_j v_j. q/out [tokens, heads*headDim]; caches as in `rope` (key j in row
   * j mod cacheRows).
   * @param {{ out: BufferRef, q: BufferRef, kCache: BufferRef, vCache: BufferRef, heads: number, kvHeads: number,
   *   headDim: number, scale: number, softcap?: number | null, window?: number | null, impl?: "split" | "serial",
   *   cacheRows?: number, maxTokens?: number, tune?: { chunk?: number, splits?: number },
   *   rope?: { q: BufferRef, k: BufferRef, v: BufferRef, table: { buffer: GPUBuffer, half: number } | null } | null,
   *   quantizeFor?: "q4" | "q8" | null }} o
   *   quantizeFor: this output's only reader is a q4/q8 product (the o-projection): a decode step's merge
   *   also writes that product's int8 input (`xqOut`, for the reader's `xqFrom`; null where it cannot)
   *   tune: the split kernel's keys per block and most spans (benchmarks, tests; default below)
   *   rope: the `rope` op in front of this one (its q, k, v and table): a one-token step on the split
   *   kernel does its work itself (`fusesRope`), reading the raw q and appending the new key and value
   *   to the caches; the `rope` op is then skipped (lower.js). Other steps read `q` as usual.
   *   impl: force the split or the serial kernel (tests); default: split for a step of few tokens, and
   *   on a GPU ("gpu" tuning) for a prefill chunk of up to `maxTokens` tokens too
   *   maxTokens: the most tokens a step of this op has (the prefill chunk; default MATVEC_MAX_TOKENS)
   */
  attention(o) {
    if (o.heads % o.kvHeads !== 0) throw new SitegenRuntimeError(`attention: heads (${o.heads}) must be a multiple of kvHeads (${o.kvHeads}).`);
    if (o.headDim > 2 * 128) throw new SitegenRuntimeError(`attention: headDim ${o.headDim} > 256 is not supported.`);
    const sg = this.features.subgroups;
    const key = `attention${sg ? ":sg" : ""}`;
    const k = this.#pipeline("attention", key, { SUBGROUPS: sg });
    const cacheRows = cacheRowsOf(o);
    const params = { heads: o.heads, kv_heads: o.kvHeads, head_dim: o.headDim, window: o.window ?? 0, scale: o.scale,
      softcap: o.softcap ?? 0, rows: cacheRows };
    const bg = this.#bindGroup("attention", k, params, { q: o.q, k_cache: o.kCache, v_cache: o.vCache, out: o.out });
    const serial = { pipeline: k.pipeline, bindGroup: bg };

    // Few tokens (decode): the keys split across workgroups (attn_split), then merged (attn_combine),
    // so that the cost stays flat as the context grows. The visible keys are cut into `splits`
    // spans (enough workgroups to fill a large GPU: ~512 with the kv heads; fewer while the context
    // is under `splits` blocks, so a short context launches no empty workgroups), walked in blocks of
    // CH keys; LPK lanes per key score it: G' * CH * LPK = WG (G' = G rounded up to a power of 2).
    // A workgroup takes a block of at most 64 of a group's G query heads, with their q (block × headDim)
    // in 2048 floats of shared memory: larger groups are cut into equal blocks (grid x: kv heads × blocks).
    const G = o.heads / o.kvHeads;
    const blocks = Math.ceil(G / Math.min(64, Math.floor(2048 / o.headDim)));
    const gblock = Math.ceil(G / blocks);
    // Keys per block: 16, or 32 for one query head a kv head (G = 1: Gemma-7B, Phi-3-mini), whose
    // blocks of 16 keys gave a workgroup 16 (head, key) pairs between barriers (H200, kernel_bench
    // --attn-tune: Gemma-7B 102 -> 84 us a layer at 512 keys, 252 -> 75 at 4,096; Llama-3.2-1B's G = 4
    // keeps 16: 19 us at 512, 39 at 4,096, 32 is 4-10 % slower).
    const chunk = o.tune?.chunk ?? Math.min(pow2ceil(gblock) === 1 ? 32 : 16, WG / pow2ceil(gblock));
    if (!(chunk >= 1 && pow2ceil(chunk) === chunk && chunk * pow2ceil(gblock) <= WG)) {
      throw new SitegenRuntimeError(`attention: bad chunk ${chunk} (a power of two, at most ${WG / pow2ceil(gblock)} here).`);
    }
    const lpk = WG / (pow2ceil(gblock) * chunk);
    // (at most WG spans: attn_combine reads one per invocation)
    const splits = o.tune?.splits ??
      Math.max(1, Math.min(Math.ceil(cacheRows / chunk), Math.max(8, Math.min(128, Math.ceil(512 / (o.kvHeads * blocks))))));
    if (!(Number.isInteger(splits) && splits >= 1 && splits <= WG)) throw new SitegenRuntimeError(`attention: bad splits ${splits} (1 to ${WG}).`);
    const canSplit = o.impl !== "serial" && cacheRows > 0;
    if (o.impl === "split" && !canSplit) throw new SitegenRuntimeError("attention: the split kernel cannot run this shape.");
    /** @type {(tokens: number, pos0: number) => { pipeline: GPUComputePipeline, bindGroup: GPUBindGroup, grid: [number, number, number] } | null} */
    let second = () => null;
    /** @type {(tokens: number, pos0: number) => { pipeline: GPUComputePipeline, bindGroup: GPUBindGroup, grid: [number, number, number] }} */
    let first = (tokens) => ({ ...serial, grid: [o.heads, tokens, 1] });
    /** @type {(tokens: number) => boolean} */
    let fusesRope = () => false;
    /** @type {XqOut | null} */
    let xqOut = null;
    if (canSplit) {
      // A prefill chunk runs the split kernel too, with fewer spans per token (its tokens already give
      // kv heads x tokens workgroups): the serial kernel walks a (head, token)'s keys one per invocation
      // with uncoalesced loads, and reads each key once per query head of the group. Not on a CPU
      // adapter, where the split kernel's barriers cost more than its parallelism gains (SwiftShader).
      const maxTokens = Math.max(MATVEC_MAX_TOKENS, o.maxTokens ?? MATVEC_MAX_TOKENS);
      const prefillSplit = maxTokens > MATVEC_MAX_TOKENS && (o.impl === "split" || (!o.impl && this.tuning === "gpu"));
      const splitsP = Math.min(splits, 4);
      const part = this.#scratch("attention", Math.max(MATVEC_MAX_TOKENS * splits, prefillSplit ? maxTokens * splitsP : 0) *
        o.heads * (o.headDim + 2) * 4);
      const sgk = sg ? ":sg" : "";  // subgroup reductions of the block's scores (attention.wgsl split_main)
      const sk = this.#pipeline("attn_split", `attn_split${sgk}`, { ROPE: false, ROTATE: false, SUBGROUPS: sg });
      // QOUT (`quantizeFor`): a decode step's merge also writes its reader's int8 input (a head's dims
      // are whole 32-groups: head_dim % 32 == 0), so the reader (the o-projection) needs no quantize
      // dispatch; a prefill chunk's merge writes f32 only, which its reader (the tiled matmul) reads.
      const qoutDtype = o.quantizeFor && this.features.int8 === true && o.headDim % 32 === 0 ? o.quantizeFor : null;
      const qoutGroups = qoutDtype ? o.heads * o.headDim / 32 : 0;
      // (rows for the reader's matvec steps: on a CPU adapter it takes up to 16 tokens, quantizing those
      // past a decode step's itself, into this buffer)
      const qoutRows = this.tuning === "cpu" ? CPU_MATVEC_MAX_TOKENS : MATVEC_MAX_TOKENS;
      const qoutBuf = qoutDtype ? this.#scratch("xq-attn", qoutRows * qoutGroups * 80) : null;
      const ck = this.#pipeline("attn_combine", `attn_combine${sgk}${qoutDtype ? `:qout=${qoutDtype}` : ""}`,
        { SUBGROUPS: sg, QOUT: qoutDtype !== null, QOUT_Q4: qoutDtype === "q4", QGROUP: qoutDtype !== null });
      // One pair of bind groups per span count (the part layout's stride).
      const groups = (/** @type {number} */ n, /** @type {boolean} */ q) => ({
        split: this.#bindGroup("attn_split", sk, { ...params, chunk, lpk, splits: n, gblock, half: 0 }, { q: o.q, k_cache: o.kCache, v_cache: o.vCache, part }),
        combine: this.#bindGroup("attn_combine", ck, { heads: o.heads, head_dim: o.headDim, chunk, splits: n,
          qout: q && qoutBuf ? 1 : 0, qout_groups: qoutGroups }, { part, out: o.out, xq: q ? qoutBuf : null }),
        n });
      const decode = groups(splits, true);
      const prefill = prefillSplit ? groups(splitsP, false) : null;
      // The RoPE dispatch folded in (one token, a group in one block: its kv head's new row is
      // written by one workgroup; with several blocks others would read it unsynchronised).
      const r = o.rope && blocks === 1 ? o.rope : null;
      const rotate = Boolean(r?.table && r.table.half > 0);
      const rk = r ? this.#pipeline("attn_split", `attn_split:rope${rotate ? "" : ":norotate"}${sgk}`,
        { ROPE: true, ROTATE: rotate, ROPE_FN: true, SUBGROUPS: sg }) : null;
      /** @type {{ pipeline: GPUComputePipeline, bindGroup: GPUBindGroup } | null} the split of a one-token step with the rope op's work */
      const withRope = r && rk ? { pipeline: rk.pipeline, bindGroup: this.#bindGroup("attn_split", rk,
        { ...params, chunk, lpk, splits, gblock, half: rotate ? /** @type {{half: number}} */ (r.table).half : 0 },
        { q: r.q, k_cache: o.kCache, v_cache: o.vCache, part, table: r.table?.buffer ?? null, k: r.k, v: r.v }) } : null;
      fusesRope = (tokens) => withRope !== null && tokens === 1;
      xqOut = qoutBuf && qoutDtype ? { buffer: qoutBuf, dtype: qoutDtype, groups: qoutGroups, rows: qoutRows,
        active: (/** @type {number} */ tokens) => tokens <= MATVEC_MAX_TOKENS } : null;
      // (the partial sums are sized for maxTokens tokens: a longer step runs the serial kernel)
      const pick = (/** @type {number} */ tokens) => (tokens <= MATVEC_MAX_TOKENS ? decode : tokens <= maxTokens ? prefill : null);
      const serialFirst = first;
      first = (tokens, pos0) => {
        const g = pick(tokens);
        if (!g) return serialFirst(tokens, pos0);
        const split = withRope && tokens === 1 ? withRope : { pipeline: sk.pipeline, bindGroup: g.split };
        return { ...split, grid: [o.kvHeads * blocks, Math.min(g.n, Math.ceil((pos0 + tokens) / chunk)), tokens] };
      };
      second = (tokens) => {
        const g = pick(tokens);
        return g ? { pipeline: ck.pipeline, bindGroup: g.combine, grid: [o.heads, tokens, 1] } : null;
      };
    }
    const op = new KernelOp(this, key, first, second);
    op.fusesRope = fusesRope;
    op.xqOut = xqOut;
    return op;
  }

  /**
   * Greedy sampling on the GPU: out[0] = argmax of one logits row (lowest
   * index on ties, like numpy), out[1] = the max logit's f32 bits.
   * `rows`: "first" (default; row 0, e.g. lm_head run with rows "last") or "last" (row tokens-1).
   * @param {{ out: BufferRef, logits: BufferRef, n: number, rowStride?: number, rows?: "first" | "last" }} o
   */
  argmax(o) {
    // Greedy is the top-1 candidate: the same kernel, the same output layout (index, then bits).
    return this.topk({ ...o, k: 1 });
  }

  /**
   * Top-k candidates on the GPU: out[i] = index of the i-th largest logit of one row (descending;
   * lower index first among equal values), out[k + i] = its f32 bits, for i < k (k <= 256).
   * `allowed` (constrained output, issue 17): a bitmask of ceil(n/32) u32 words, bit i of word i >> 5
   * set when id i may be chosen; ids without their bit are skipped, and out[i] = 0xffffffff past
   * the last allowed id.
   * A long row is cut into slices (one workgroup each chooses its slice's k best), then the
   * candidates are merged by one workgroup: `slices` overrides how many (tests; default from n).
   * @param {{ out: BufferRef, logits: BufferRef, n: number, k: number, rowStride?: number, rows?: "first" | "last",
   *   allowed?: BufferRef | null, slices?: number }} o
   */
  topk(o) {
    if (!(Number.isInteger(o.k) && o.k >= 1 && o.k <= Math.min(256, o.n))) {
      throw new SitegenRuntimeError(`topk: k must be an integer in [1, min(256, n)], got ${o.k}.`);
    }
    const rows = o.rows ?? "first";
    const masked = Boolean(o.allowed);
    // About 8 ids per invocation per pass in each slice; at most 64 slices, so the merge walks <= 64k ids.
    const slices = Math.max(1, Math.min(o.slices ?? Math.floor(o.n / (8 * WG)), 64, o.n));
    const slice = Math.ceil(o.n / slices);
    const params = { n: o.n, row_stride: o.rowStride ?? o.n, k: o.k, slice, slices };
    if (slices === 1) {
      const key = `topk:rows=${rows}${masked ? ":masked" : ""}`;
      const k = this.#pipeline("topk", key, { ROWS: ROWS_CODE[rows], MASKED: masked, STAGE: 0 });
      const bg = this.#bindGroup("topk", k, params, { logits: o.logits, out: o.out, allowed: o.allowed ?? null, cand: null });
      return new KernelOp(this, key, () => ({ pipeline: k.pipeline, bindGroup: bg, grid: [1, 1, 1] }));
    }
    const cand = this.#scratch("topk", slices * 2 * o.k * 4);
    const k1 = this.#pipeline("topk", `topk:slices:rows=${rows}${masked ? ":masked" : ""}`, { ROWS: ROWS_CODE[rows], MASKED: masked, STAGE: 1 });
    const bg1 = this.#bindGroup("topk", k1, params, { logits: o.logits, out: cand, allowed: o.allowed ?? null, cand: null });
    const k2 = this.#pipeline("topk", "topk:merge", { ROWS: 0, MASKED: false, STAGE: 2 });
    const bg2 = this.#bindGroup("topk", k2, params, { logits: null, out: o.out, allowed: null, cand });
    return new KernelOp(this, k1.pipeline.label, () => ({ pipeline: k1.pipeline, bindGroup: bg1, grid: [slices, 1, 1] }),
      () => ({ pipeline: k2.pipeline, bindGroup: bg2, grid: [1, 1, 1] }));
  }

  // ---------------------------------------------------------------- mixture-of-experts (issue 12)

  /**
   * The router's choice, on the GPU: per token, softmax over `logits` [tokens, experts], the `topK`
   * largest (lower index first among equal logits), their probabilities (renormalised to sum 1 when
   * `norm`). `sel` [tokens, 2 * topK] u32: the expert ids, then the weights' f32 bits.
   * @param {{ sel: BufferRef, logits: BufferRef, experts: number, topK: number, norm: boolean }} o
   */
  moeRoute(o) {
    if (!(o.experts >= 1 && o.experts <= 256 && o.topK >= 1 && o.topK <= o.experts)) {
      throw new SitegenRuntimeError(`moe: ${o.experts} experts, top ${o.topK}: need 1 <= top_k <= experts <= 256.`);
    }
    const key = `moe_route${o.norm ? ":norm" : ""}`;
    const k = this.#pipeline("moe_route", key, { NORM_TOPK: o.norm });
    const bg = this.#bindGroup("moe_route", k, { experts: o.experts, top_k: o.topK }, { logits: o.logits, sel: o.sel });
    return new KernelOp(this, key, (tokens) => ({ pipeline: k.pipeline, bindGroup: bg, grid: [Math.ceil(tokens / WG), 1, 1] }));
  }

  /**
   * The chosen experts' gate and up products: hid[t, j, r] = act(gate[e] · x[t]) * (up[e] · x[t]) for
   * e = sel[t].ids[j], r < inter. `gate`/`up`: the experts [expertStart, expertStart + experts) of an
   * [E, inter, hidden] tensor, viewed as [experts * inter, hidden] (rows = experts * inter).
   * @param {{ hid: BufferRef, x: BufferRef, sel: BufferRef, gate: WeightPart, up: WeightPart, expertStart: number,
   *   experts: number, inter: number, topK: number, act: Activation }} o
   */
  moeUp(o) {
    if (o.gate.dtype !== o.up.dtype || o.gate.cols % 32 !== 0) {
      throw new SitegenRuntimeError(`moe: gate/up experts must share a dtype and have a multiple of 32 columns (got ${o.gate.dtype}/${o.up.dtype}, ${o.gate.cols}).`);
    }
    const key = `moe_up:${o.gate.dtype}:${o.act}`;
    const k = this.#pipeline("moe_up", key, { ...dtypeDefines("w", o.gate.dtype), ACT: ACT_CODE[o.act] });
    const bg = this.#bindGroup("moe_up", k, { e0: o.expertStart, ne: o.experts, inter: o.inter, top_k: o.topK,
      ...weightParams("gate", o.gate), ...weightParams("up", o.up) }, { x: o.x, sel: o.sel, gate: o.gate, up: o.up, hid: o.hid });
    const blocks = this.#grid(Math.ceil(o.inter / (WG / 32)));
    return new KernelOp(this, key, (tokens) => ({ pipeline: k.pipeline, bindGroup: bg, grid: [...blocks, tokens * o.topK] }));
  }

  /**
   * The chosen experts' down products, weighted and summed: out[t, r] (+)= Σ_j w[t, j] * (down[e_j] · hid[t, j])
   * over the slots whose expert is in [expertStart, expertStart + experts) (`down`: [experts * hidden, inter]).
   * @param {{ out: BufferRef, hid: BufferRef, sel: BufferRef, down: WeightPart, expertStart: number, experts: number,
   *   hidden: number, topK: number, accumulate: boolean }} o
   */
  moeDown(o) {
    if (o.down.cols % 32 !== 0) throw new SitegenRuntimeError(`moe: down experts need a multiple of 32 columns, got ${o.down.cols}.`);
    const key = `moe_down:${o.down.dtype}`;
    const k = this.#pipeline("moe_down", key, dtypeDefines("w", o.down.dtype));
    const bg = this.#bindGroup("moe_down", k, { e0: o.expertStart, ne: o.experts, hidden: o.hidden, top_k: o.topK,
      accumulate: o.accumulate ? 1 : 0, ...weightParams("down", o.down) }, { hid: o.hid, sel: o.sel, down: o.down, out: o.out });
    const blocks = this.#grid(Math.ceil(o.hidden / (WG / 32)));
    return new KernelOp(this, key, (tokens) => ({ pipeline: k.pipeline, bindGroup: bg, grid: [...blocks, tokens] }));
  }

  /** Free the kernels' own buffers (not the caller's). */
  destroy() {
    for (const b of [this.stepBuffer, this.dummy, this.dummyRw, ...this.paramChunks, ...this.scratch]) b.destroy();
    this.paramChunks = [];
    this.scratch = [];
    this.scratchByKey.clear();
  }

  /**
   * A buffer of the kernels' own for an op's intermediate results (attention's partial sums, top-k's
   * candidates). Ops of one kind and size share one (every layer's attention): dispatches run one
   * after another, and each writes its scratch before it reads it.
   * @param {string} kind @param {number} bytes
   */
  #scratch(kind, bytes) {
    const size = Math.max(16, Math.ceil(bytes / 16) * 16);
    const key = `${kind}:${size}`;
    let b = this.scratchByKey.get(key);
    if (!b) {
      b = this.device.createBuffer({ label: `kernels.scratch ${key}`, size, usage: GPUBufferUsage.STORAGE });
      this.scratch.push(b);
      this.scratchByKey.set(key, b);
    }
    return b;
  }

  // ---------------------------------------------------------------- internals

  /** @param {number} count */
  #grid(count) {
    return grid2(count, this.gridLimit);
  }

  /**
   * Build (or fetch from the cache) the pipeline of a variant.
   * @param {string} family
   * @param {string} key unique variant key, also the pipeline label
   * @param {Record<string, boolean | number>} defines
   * @param {Record<string, string>} [types] binding WGSL types that depend on the variant
   */
  #pipeline(family, key, defines, types = {}) {
    const hit = this.cache.get(key);
    if (hit) return hit;
    const code = this.source(family, defines, types);
    const fam = FAMILIES[family];
    const module = this.device.createShaderModule({ label: key, code });
    const layout = this.device.createBindGroupLayout({
      label: key,
      entries: [
        { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: "uniform" } },
        { binding: 1, visibility: GPUShaderStage.COMPUTE, buffer: { type: "uniform" } },
        ...fam.bindings.map((b, i) => ({ binding: i + 2, visibility: GPUShaderStage.COMPUTE,
          buffer: { type: /** @type {GPUBufferBindingType} */ (b.kind === "rw" ? "storage" : "read-only-storage") } })),
      ],
    });
    const pipeline = this.device.createComputePipeline({
      label: key,
      layout: this.device.createPipelineLayout({ label: key, bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: fam.entry },
    });
    const entry = { pipeline, layout };
    this.cache.set(key, entry);
    return entry;
  }

  /**
   * The full WGSL of a variant: generated header (enables, defines as
   * consts, Params/Step structs, bindings) + common.wgsl + the family file,
   * preprocessed. Public so tests can compile every variant.
   * @param {string} family
   * @param {Record<string, boolean | number>} defines
   * @param {Record<string, string>} [types]
   */
  source(family, defines, types = {}) {
    const fam = FAMILIES[family];
    if (!fam) throw new SitegenRuntimeError(`Unknown kernel family '${family}'.`);
    // Every shader sees these (common.wgsl reads them); variants override.
    const all = { F16: false, SUBGROUPS: false, ROWS: 0, ACT: 0, LINEAR: family === "matvec" || family === "matmul" || family === "xmatmul",
      SGMAT: false, SGM_UNIT: 1,
      QOUT: false, QOUT_Q4: false, QGROUP: family === "xquant", ROPE_FN: family === "rope",
      ...Object.fromEntries(Object.keys(FAMILIES).map((f) => [`IS_${f.toUpperCase()}`, f === family])), ...defines };
    const head = [];
    if (all.F16) head.push("enable f16;");
    if (all.SGMAT) {
      if (!this.features.xmm || this.features.xmm.mode !== "sgmat") throw new SitegenRuntimeError("subgroup matrices: not on this device.");
      head.push(...sgmFunctions(this.features.xmm.syntax));
    } else if (all.SUBGROUPS) head.push("enable subgroups;");
    head.push(`alias ct = ${all.F16 ? "f16" : "f32"};`, `alias ct4 = vec4<${all.F16 ? "f16" : "f32"}>;`);
    head.push(`const WG: u32 = ${WG}u;`);
    for (const [name, v] of Object.entries(all)) {
      head.push(typeof v === "boolean" ? `const ${name}: bool = ${v};` : `const ${name}: u32 = ${v}u;`);
    }
    head.push(`struct Params {\n${paramFields(fam).map(([n, t]) => `  ${n}: ${t},`).join("\n")}\n}`);
    head.push("struct Step { tokens: u32, pos0: u32, _pad0: u32, _pad1: u32 }");
    head.push("@group(0) @binding(0) var<uniform> P: Params;", "@group(0) @binding(1) var<uniform> S: Step;");
    fam.bindings.forEach((b, i) => {
      const type = types[b.name] ?? b.type ?? "array<u32>";
      head.push(`@group(0) @binding(${i + 2}) var<storage, ${b.kind === "rw" ? "read_write" : "read"}> ${b.name}: ${type};`);
    });
    const body = preprocess(this.sources.common, all, "common") + "\n" + preprocess(this.sources[fam.file], all, fam.file);
    return `${head.join("\n")}\n${body}`;
  }

  /**
   * Write an op's Params into a slot of a shared uniform buffer and build its bind group.
   * @param {string} family
   * @param {{ layout: GPUBindGroupLayout }} k
   * @param {Record<string, number>} values
   * @param {Record<string, BufferRef | WeightPart | null>} buffers
   */
  #bindGroup(family, k, values, buffers) {
    const fam = FAMILIES[family];
    const fields = paramFields(fam);
    const data = new ArrayBuffer(Math.max(16, Math.ceil(fields.length / 4) * 16));
    const u32 = new Uint32Array(data), f32 = new Float32Array(data);
    fields.forEach(([name, type], i) => {
      const v = values[name];
      if (typeof v !== "number" || !Number.isFinite(v)) throw new SitegenRuntimeError(`${family}: parameter '${name}' is missing or not a number (${v}).`);
      if (type === "f32") f32[i] = v;
      else {
        if (!Number.isInteger(v) || v < 0) throw new SitegenRuntimeError(`${family}: parameter '${name}' must be a non-negative integer, got ${v}.`);
        u32[i] = v;
      }
    });
    const slot = this.#paramSlot(data);
    const entries = [
      { binding: 0, resource: { buffer: slot.buffer, offset: slot.offset, size: data.byteLength } },
      { binding: 1, resource: { buffer: this.stepBuffer } },
      ...fam.bindings.map((b, i) => {
        const ref = buffers[b.name];
        /** @type {GPUBufferBinding} */
        let resource;
        if (!ref) resource = { buffer: b.kind === "rw" ? this.dummyRw : this.dummy };
        else if ("dtype" in ref) resource = { buffer: ref.buffer, offset: ref.offset ?? 0 };
        else if ("buffer" in ref) resource = { buffer: ref.buffer, offset: ref.offset ?? 0, ...(ref.size ? { size: ref.size } : {}) };
        else resource = { buffer: ref };
        return { binding: i + 2, resource };
      }),
    ];
    return this.device.createBindGroup({ label: family, layout: k.layout, entries });
  }

  /** @param {ArrayBuffer} data */
  #paramSlot(data) {
    const CHUNK = 64 * 1024, SLOT = 256;
    if (this.paramUsed + SLOT > CHUNK) {
      this.paramChunks.push(this.device.createBuffer({ label: "kernels.params", size: CHUNK,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST }));
      this.paramUsed = 0;
    }
    const buffer = this.paramChunks[this.paramChunks.length - 1];
    const offset = this.paramUsed;
    this.paramUsed += SLOT;
    this.device.queue.writeBuffer(buffer, offset, data);
    return { buffer, offset };
  }
}

/**
 * Params fields of a family: its own, then `<w>_k`/`<w>_so` per weight binding.
 * @param {Family} fam
 * @returns {[string, "u32" | "f32"][]}
 */
function paramFields(fam) {
  /** @type {[string, "u32" | "f32"][]} */
  const extra = [];
  for (const b of fam.bindings) {
    if (b.kind === "weight") extra.push([`${b.name}_k`, "u32"], [`${b.name}_so`, "u32"], [`${b.name}_r0`, "u32"]);
  }
  return [...fam.params, ...extra];
}

/**
 * Defines that select a weight binding's dtype (`<NAME>_Q4` ... and `<NAME>_DT`).
 * @param {string} name binding name
 * @param {WeightDtype} dtype
 */
function dtypeDefines(name, dtype) {
  if (!(dtype in DTYPE_CODE)) throw new SitegenRuntimeError(`Unknown weight dtype '${dtype}' (expected f32, f16, q8 or q4).`);
  const N = name.toUpperCase();
  return { [`${N}_F32`]: dtype === "f32", [`${N}_F16`]: dtype === "f16", [`${N}_Q8`]: dtype === "q8", [`${N}_Q4`]: dtype === "q4",
    [`${N}_QUANT`]: dtype === "q8" || dtype === "q4" };  // codes times a per-group scale
}

/**
 * Params of a weight binding: cols, and the scales plane's offset in u32 words
 * from the binding's start.
 * @param {string} name
 * @param {WeightPart} w
 */
function weightParams(name, w) {
  const quant = w.dtype === "q4" || w.dtype === "q8";
  if (quant) {
    if (w.cols % 32 !== 0) throw new SitegenRuntimeError(`${w.dtype} weight with ${w.cols} columns: q4/q8 need a multiple of 32.`);
    if (w.scalesOffset === undefined || w.scalesOffset % 16 !== 0) {
      throw new SitegenRuntimeError(`${w.dtype} weight: scalesOffset must be given and a multiple of 16 bytes, got ${w.scalesOffset}.`);
    }
  }
  return { [`${name}_k`]: w.cols, [`${name}_so`]: quant ? /** @type {number} */ (w.scalesOffset) / 4 : 0,
    [`${name}_r0`]: w.rowOffset ?? 0 };
}

/**
 * The rows of a KV cache (`rope`, `attention`): `cacheRows` when given (a sliding-window layer's
 * ring), else as many as the K buffer holds.
 * @param {{ kCache: BufferRef, kvHeads: number, headDim: number, cacheRows?: number }} o
 */
function cacheRowsOf(o) {
  const held = Math.floor(bufferRefSize(o.kCache) / (4 * o.kvHeads * o.headDim));
  const rows = o.cacheRows ?? held;
  if (!(Number.isInteger(rows) && rows >= 1 && rows <= held)) {
    throw new SitegenRuntimeError(`KV cache: ${rows} rows asked of a buffer holding ${held}.`);
  }
  return rows;
}

/**
 * cos/sin table of RoPE in float64 (see `Kernels.ropeTable`).
 * @param {{ theta: number, rotaryDim: number, maxPositions: number, scaling?: RopeScaling }} o
 */
export function ropeTableData({ theta, rotaryDim, maxPositions, scaling = null }) {
  const half = rotaryDim / 2;
  if (!Number.isInteger(half)) throw new SitegenRuntimeError(`rope: rotaryDim must be even, got ${rotaryDim}.`);
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) {
    // transformers computes inv_freq in float32; round the same way.
    inv[i] = Math.fround(1 / theta ** ((2 * i) / rotaryDim));
  }
  if (scaling?.type === "linear") {
    for (let i = 0; i < half; i++) inv[i] /= scaling.factor;
  } else if (scaling?.type === "llama3") {
    const { factor, low_freq_factor: lo, high_freq_factor: hi, original_max_position_embeddings: old } = scaling;
    const loWave = old / lo, hiWave = old / hi;
    for (let i = 0; i < half; i++) {
      const wave = (2 * Math.PI) / inv[i];
      if (wave > loWave) inv[i] /= factor;
      else if (wave >= hiWave) {
        const smooth = (old / wave - lo) / (hi - lo);
        inv[i] = (1 - smooth) * inv[i] / factor + smooth * inv[i];
      }
    }
  } else if (scaling) {
    throw new SitegenRuntimeError(`rope: unsupported rope_scaling type '${/** @type {{type: string}} */ (scaling).type}' (supported: linear, llama3).`);
  }
  const data = new Float32Array(maxPositions * half * 2);
  for (let p = 0; p < maxPositions; p++) {
    for (let i = 0; i < half; i++) {
      const a = p * inv[i];
      data[(p * half + i) * 2] = Math.cos(a);
      data[(p * half + i) * 2 + 1] = Math.sin(a);
    }
  }
  return data;
}
