// The WebAssembly CPU backend (issue 14; runtime/backend.js): the same models
// for visitors without WebGPU. The kernels are src/kernels.c built with SIMD128
// (scripts/build-wasm); kernels.js holds their memory, threads.js the pool that
// splits matrix rows over workers when the page is cross-origin isolated.
//
// Weights: the shard stream is laid into the Wasm memory byte for byte (shard
// i at weightsBase + i * shard_size), so every tensor, group and group member
// is where its manifest entry says: receiveShard is one copy of the shard into
// the memory, and no tensor is ever copied again or held in JavaScript.
// Preflight (createBackend, before any download): the weights, the KV cache
// for the context length and the activations must fit the wasm32 address
// space (4 GiB; less where the browser grants less), else InsufficientMemoryError.
//
// Lowering: each graph op (runtime/graph.js) becomes one closure over byte
// offsets that calls a kernel; a forward pass runs them chunk by chunk of at
// most `prefillChunk` tokens. Sampling (argmax, top-k) is a kernel too.

import { InsufficientMemoryError, InvalidRequestError, SitegenRuntimeError } from "../../errors.js";
import { checkStep } from "../../backend.js";
import { kvCacheLayout } from "../../graph.js";
import { physicalTensors } from "../../manifest.js";
import { ropeTableData } from "../webgpu/kernels.js";
import { DTYPE as DT, WasmKernels, WASM32_LIMIT, formatBytes } from "./kernels.js";
import { CONTROL_BYTES, STACK_BYTES } from "./threads.js";

/**
 * @typedef {import("../../backend.js").Backend} Backend
 * @typedef {import("../../backend.js").BackendOptions} BackendOptions
 * @typedef {import("../../backend.js").CompiledModel} CompiledModel
 * @typedef {import("../../manifest.js").Manifest} Manifest
 * @typedef {import("../../manifest.js").TensorEntry} TensorEntry
 * @typedef {import("../../graph.js").Graph} Graph
 * @typedef {import("../../graph.js").GraphOp} GraphOp
 * @typedef {{ ptr: number, scales: number, dtype: "f32" | "f16" | "q8" | "q4", rows: number, cols: number }} Weight
 */

/** Most candidates sampleTopK returns (the same bound as the WebGPU backend's). */
export const MAX_TOP_K = 256;
const QUANT_GROUP = 32;

/**
 * How many threads the pool should have: a cross-origin isolated page (or Node) can share memory.
 * @param {number | undefined} asked  BackendOptions.threads
 */
export function defaultThreads(asked) {
  const shared = typeof SharedArrayBuffer !== "undefined" && (globalThis.crossOriginIsolated ?? isNode());
  if (asked !== undefined) {
    if (!Number.isInteger(asked) || asked < 1 || asked > 64) {
      throw new InvalidRequestError(`threads: expected an integer in [1, 64], got ${asked}.`, { param: "threads" });
    }
    return shared ? asked : 1;
  }
  // Under Node one thread unless asked (tests and the CLI share the machine); on a page, every core
  // up to 8 (beyond that the memory bandwidth, not the cores, bounds a matrix-vector product).
  if (!shared || isNode()) return 1;
  return Math.max(1, Math.min(8, globalThis.navigator?.hardwareConcurrency ?? 1));
}

function isNode() {
  return typeof process !== "undefined" && Boolean(process.versions?.node) && typeof window === "undefined";
}

/**
 * Bytes the model needs in Wasm memory for `contextLength` positions (weights as the shard
 * stream, KV cache, activations of one chunk, the head's logits). Used by preflight.
 * @param {Manifest} m @param {{ contextLength: number, prefillChunk: number, threads: number }} o
 */
export function memoryNeeded(m, { contextLength, prefillChunk, threads }) {
  const c = m.config;
  const weights = m.shards.reduce((a, s) => a + s.bytes, 0);
  const kvDim = c.num_kv_heads * c.head_dim;
  const C = Math.max(1, Math.min(prefillChunk, contextLength));
  const kv = kvCacheLayout(c, contextLength, C).bytes;
  const widths = 4 * c.hidden_size + 4 * c.num_heads * c.head_dim + 3 * kvDim + c.intermediate_size
    + Math.max(c.hidden_size, c.intermediate_size, c.num_heads * c.head_dim);
  const acts = C * widths * 4 + c.vocab_size * 4 + threads * contextLength * 4;
  const rope = 2 * contextLength * (c.rotary_dim ?? c.head_dim) * 4;
  const fixed = 65536 + threads * (STACK_BYTES + 64) + CONTROL_BYTES + (1 << 20);  // stacks, pool, slack
  return { weights, kv, total: weights + kv + acts + rope + fixed };
}

/**
 * @param {Manifest} manifest
 * @param {BackendOptions} [options]
 * @returns {Promise<Backend>}
 */
export async function createBackend(manifest, options = {}) {
  if (options.compute && !["auto", "f32"].includes(options.compute)) {
    throw new InvalidRequestError(`compute: the CPU backend computes in f32; got ${JSON.stringify(options.compute)} ` +
      "(use \"auto\" or \"f32\").", { param: "compute" });
  }
  if (typeof WebAssembly !== "object" || !WebAssembly.validate?.(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]))) {
    throw new SitegenRuntimeError("This browser has no WebAssembly: it cannot run the model on the CPU either.");
  }
  const threads = defaultThreads(options.threads);
  checkModel(manifest);
  // Preflight, before any download: does the model fit the wasm32 address space?
  const contextLength = options.contextLength ?? Math.min(manifest.config.max_position_embeddings ?? 2048, 2048);
  const need = memoryNeeded(manifest, { contextLength, prefillChunk: options.prefillChunk ?? 256, threads });
  const limit = Math.min(WASM32_LIMIT, options.memoryLimit ?? WASM32_LIMIT);
  if (need.total > limit) {
    throw new InsufficientMemoryError(`The model needs about ${formatBytes(need.total)} of memory on the CPU ` +
      `(weights ${formatBytes(need.weights)}, KV cache ${formatBytes(need.kv)} for ${contextLength} positions), more than ` +
      `WebAssembly's ${formatBytes(limit)} address space: use a smaller or more quantized model, or a shorter ` +
      "contextLength.", { needed: need.total, limit });
  }
  const kernels = await WasmKernels.create({ threaded: threads > 1, limit });
  if (threads > 1) {
    const { createPool } = await import("./threads.js");
    kernels.pool = await createPool(kernels, threads);
  }
  /** @type {number | null} */
  let weightsBase = null;
  let received = 0;
  let destroyed = false;

  /** @type {Backend} */
  const backend = {
    name: "wasm",
    compute: "f32",
    // Neither fused graph op: q/k/v as three products (each member is a tensor of its own in the
    // stream), norms as their own pass (cheap on a CPU next to the products).
    fusions: /** @type {{ qkv: boolean }} */ ({ qkv: false, norm: false }),
    threads,
    // The CPU is never lost; the promise stays pending.
    lost: new Promise(() => {}),

    async planWeights(m) {
      const streamBytes = m.shards.reduce((a, s) => a + s.bytes, 0);
      // Shard i lands at weightsBase + i * shard_size: the stream, so tensor offsets hold as they are.
      const span = m.shards.length ? (m.shards.length - 1) * m.shard_size + m.shards[m.shards.length - 1].bytes : 0;
      if (span !== streamBytes && m.shards.slice(0, -1).some((s) => s.bytes !== m.shard_size)) {
        throw new SitegenRuntimeError("manifest.json: every shard but the last must be shard_size bytes: reconvert the model.");
      }
      weightsBase = kernels.alloc(span, "the model's weights");
      return { totalBytes: span, shardBytes: m.shards.map((s) => s.bytes), splitTensors: {} };
    },

    receiveShard(index, bytes) {
      if (weightsBase === null) throw new InvalidRequestError("receiveShard before planWeights.", {});
      const expected = manifest.shards[index]?.bytes;
      if (expected !== bytes.byteLength) {
        throw new SitegenRuntimeError(`Shard ${index} has ${bytes.byteLength} bytes, the manifest says ${expected}.`);
      }
      kernels.u8.set(bytes, weightsBase + index * manifest.shard_size);
      received++;
    },

    async weightsDone() {
      if (received < manifest.shards.length) {
        throw new SitegenRuntimeError(`Only ${received} of ${manifest.shards.length} shards arrived.`);
      }
    },

    async compile({ graph, contextLength: ctx, prefillChunk, sampleVocab }) {
      if (weightsBase === null) throw new InvalidRequestError("compile before planWeights.", {});
      return lower({ kernels, manifest, weightsBase, graph, contextLength: ctx, prefillChunk, sampleVocab });
    },

    destroy() {
      if (destroyed) return;
      destroyed = true;
      kernels.pool?.destroy();
      kernels.pool = null;
    },
  };
  return backend;
}

/**
 * Refuse what the kernels cannot read, before any download.
 * @param {Manifest} m
 */
function checkModel(m) {
  for (const t of physicalTensors(m)) {
    if (!["f32", "f16", "q8", "q4"].includes(t.dtype)) {
      throw new SitegenRuntimeError(`Tensor ${t.name} has dtype '${t.dtype}', which the CPU backend cannot read ` +
        "(expected f32, f16, q8 or q4): rebuild the site with this sitegen version.", { tensor: t.name });
    }
    if ((t.dtype === "q4" || t.dtype === "q8") && (t.group_size ?? QUANT_GROUP) !== QUANT_GROUP) {
      throw new SitegenRuntimeError(`Tensor ${t.name} is quantized in groups of ${t.group_size}; the CPU kernels read ` +
        `groups of ${QUANT_GROUP}: convert the model again with this sitegen.`, { tensor: t.name });
    }
  }
  if (m.config.head_dim % 2 !== 0) throw new SitegenRuntimeError(`head_dim ${m.config.head_dim} is odd: not supported.`);
}

/**
 * Lower the graph to kernel calls over byte offsets and return the compiled model.
 * @param {{ kernels: WasmKernels, manifest: Manifest, weightsBase: number, graph: Graph, contextLength: number,
 *   prefillChunk: number, sampleVocab: number }} o
 * @returns {CompiledModel}
 */
function lower({ kernels: k, manifest, weightsBase, graph, contextLength, prefillChunk, sampleVocab }) {
  const c = graph.config;
  const vocab = c.vocab_size, hd = c.head_dim, heads = c.num_heads, kvHeads = c.num_kv_heads;
  const kvDim = kvHeads * hd;
  const C = Math.max(1, Math.min(prefillChunk, contextLength));
  const ex = /** @type {Record<string, Function>} */ (/** @type {unknown} */ (k.exports));
  const threads = k.pool?.threads ?? 1;

  const entries = new Map([...manifest.tensors, ...(manifest.groups ?? [])].map((t) => [t.name, t]));
  /** @param {string} name @returns {Weight} */
  const weight = (name) => {
    const t = /** @type {TensorEntry | undefined} */ (entries.get(name));
    if (!t) throw new SitegenRuntimeError(`The model has no tensor '${name}', which ${c.architecture} needs: convert it again.`,
      { tensor: name });
    const base = weightsBase + t.shard * manifest.shard_size + t.offset;
    const plane = (/** @type {string} */ p) => t.planes?.find((x) => x.name === p)?.offset ?? 0;
    // A matrix of rows × cols: the last dimension is the row ([experts, inter, hidden] is experts·inter rows).
    const cols = t.shape[t.shape.length - 1] ?? 1;
    const rows = t.shape.slice(0, -1).reduce((a, b) => a * b, 1);
    const quantized = t.dtype === "q4" || t.dtype === "q8";
    return { ptr: base + (quantized ? plane("q") : plane("data")), scales: quantized ? base + plane("scales") : 0,
      dtype: t.dtype, rows, cols };
  };
  /** A 1-D f32 tensor's offset. @param {string} name */
  const vector = (name) => {
    const w = weight(name);
    if (w.dtype !== "f32") throw new SitegenRuntimeError(`Tensor '${name}' should be f32; got ${w.dtype}.`);
    return w.ptr;
  };

  // Activations [C, width] f32; an activation of parts (q | k | v) is its parts, each dense.
  /** @type {Map<string, { ptr: number, width: number }>} */
  const acts = new Map();
  let maxWidth = 0;
  for (const [name, a] of Object.entries(graph.activations)) {
    if (name === "logits") continue;
    if ("width" in a) {
      acts.set(name, { ptr: k.alloc(C * a.width * 4, `activation ${name}`), width: a.width });
      maxWidth = Math.max(maxWidth, a.width);
    } else {
      for (const [part, width] of a.parts) {
        acts.set(part, { ptr: k.alloc(C * width * 4, `activation ${part}`), width });
        maxWidth = Math.max(maxWidth, width);
      }
    }
  }
  /** @param {string} name */
  const act = (name) => {
    const a = acts.get(name);
    if (!a) throw new SitegenRuntimeError(`graph: unknown activation '${name}'.`);
    return a;
  };
  const logits = k.alloc(vocab * 4, "the logits");
  acts.set("logits", { ptr: logits, width: vocab });
  const moeInter = /** @type {any} */ (c).moe?.intermediate_size ?? 0;
  const widest = Math.max(maxWidth, c.hidden_size, moeInter);
  const xp = k.alloc(C * widest * 4, "the q4 products' input");
  const xq = k.alloc(widest * 2 + widest / 4 + 64, "the decode products' input");
  const ids = k.alloc(C * 4, "token ids");
  const positions = c.position === "learned" ? k.alloc(C * 4, "positions") : 0;
  const scores = k.alloc(threads * contextLength * 4, "attention scores");
  const picked = k.alloc(MAX_TOP_K * 8 + 64, "sampled ids");

  // KV caches: [rows, kv_heads*head_dim] f32 per layer, K and V; rows = contextLength, or on a
  // sliding-window layer a ring of window + chunk - 1 rows (graph.js kvCacheLayout, issue 12).
  const kvLayout = kvCacheLayout(c, contextLength, C);
  const kCache = [], vCache = [];
  for (let i = 0; i < c.num_layers; i++) {
    kCache.push(k.alloc(kvLayout.rows[i] * kvDim * 4, `the KV cache (layer ${i})`));
    vCache.push(k.alloc(kvLayout.rows[i] * kvDim * 4, `the KV cache (layer ${i})`));
  }

  // RoPE tables (cos, sin per position): the WebGPU backend's table builder, one per theta.
  /** @type {Map<boolean, { ptr: number, half: number }>} */
  const ropeTables = new Map();
  /** @param {boolean} local */
  const ropeTable = (local) => {
    const rotary = c.rotary_dim ?? hd;
    if (c.position !== "rope" || !rotary) return { ptr: 0, half: 0 };
    let t = ropeTables.get(local);
    if (!t) {
      const data = ropeTableData({ theta: /** @type {number} */ (local ? c.rope_local_theta : c.rope_theta),
        rotaryDim: rotary, maxPositions: contextLength, scaling: local ? null : /** @type {any} */ (c.rope_scaling ?? null) });
      const ptr = k.alloc(data.byteLength, "the RoPE table");
      k.f32(ptr, data.length).set(data);
      t = { ptr, half: rotary / 2 };
      ropeTables.set(local, t);
    }
    return t;
  };

  /**
   * The rows a head op reads and writes: "last" reads token T-1 and writes row 0.
   * @param {"all" | "last" | "first"} rows @param {{ ptr: number, width: number }} a @param {number} T
   */
  const inRow = (rows, a, T) => (rows === "last" ? a.ptr + (T - 1) * a.width * 4 : a.ptr);
  const count = (/** @type {"all" | "last" | "first"} */ rows, /** @type {number} */ T) => (rows === "all" ? T : 1);

  /**
   * @param {{ out: { ptr: number, width: number }, x: { ptr: number, width: number }, w: string, bias: string | null,
   *   gate?: string | null, gateBias?: string | null, act?: string | null, softcap?: number | null, accumulate?: boolean,
   *   rows?: "all" | "last" | "first" }} o
   * @returns {(T: number) => void}
   */
  const linear = (o) => {
    const w = weight(o.w), g = o.gate ? weight(o.gate) : null;
    if (w.cols !== o.x.width || w.rows !== o.out.width) {
      throw new SitegenRuntimeError(`Tensor '${o.w}' is [${w.rows}, ${w.cols}]; the graph multiplies [${o.x.width}] into [${o.out.width}].`);
    }
    if (g && (g.dtype !== w.dtype || g.rows !== w.rows || g.cols !== w.cols)) {
      throw new SitegenRuntimeError(`Tensors '${o.gate}' and '${o.w}' differ in shape or storage type: reconvert the model.`);
    }
    const bias = o.bias ? vector(o.bias) : 0, gateBias = o.gateBias ? vector(o.gateBias) : 0;
    const rows = o.rows ?? "all";
    const actName = /** @type {any} */ (o.act ?? "none");
    return (T) => k.matmul({ out: o.out.ptr, os: o.out.width, x: inRow(rows, o.x, T), xs: o.x.width, T: count(rows, T),
      rows: w.rows, cols: w.cols, dtype: w.dtype, w: w.ptr, scales: w.scales, bias, gate: g?.ptr ?? 0,
      gateScales: g?.scales ?? 0, gateBias, act: actName, softcap: o.softcap ?? 0, accumulate: o.accumulate, xp, xq });
  };

  /**
   * Rows r0.. of a weight as a weight of its own (an expert of a [experts, rows, cols] tensor).
   * @param {Weight} w @param {number} r0 @param {number} rows @returns {Weight}
   */
  const rowsOf = (w, r0, rows) => {
    const rowBytes = { f32: w.cols * 4, f16: w.cols * 2, q8: w.cols, q4: w.cols / 2 }[w.dtype];
    return { ...w, rows, ptr: w.ptr + r0 * rowBytes, scales: w.scales ? w.scales + r0 * (w.cols / QUANT_GROUP) * 2 : 0 };
  };

  /**
   * A sparse mixture-of-experts MLP (graph.js `moe`, model.py `_moe`): per token, the router's softmax,
   * its topK largest (lower expert first among equals; renormalised when normTopK), and for each
   * chosen expert act(gate·x) * (up·x) then down, added with its weight. The router's and the
   * experts' products are the matmul kernel on the expert's rows; the few weighted sums are here.
   * @param {Extract<GraphOp, { op: "moe" }>} op @returns {(T: number) => void}
   */
  const moe = (op) => {
    const x = act(op.x), out = act(op.out);
    const router = weight(op.router), gate = weight(op.gate), up = weight(op.up), down = weight(op.down);
    const hidden = x.width, E = op.experts, inter = op.inter;
    if (router.rows !== E || gate.rows !== E * inter || up.rows !== E * inter || down.rows !== E * hidden || down.cols !== inter) {
      throw new SitegenRuntimeError(`moe: the expert tensors of '${op.up}' do not match ${E} experts of ${inter}.`);
    }
    const probs = k.alloc(C * E * 4, "the router's logits");
    const mid = k.alloc(inter * 4, "an expert's activation");
    const res = k.alloc(hidden * 4, "an expert's output");
    const mm = (/** @type {Weight} */ w, /** @type {number} */ o, /** @type {number} */ xi, /** @type {number} */ T,
      /** @type {{ gate?: Weight, act?: any }} */ g = {}) => k.matmul({ out: o, os: w.rows, x: xi, xs: w.cols, T, rows: w.rows,
      cols: w.cols, dtype: w.dtype, w: w.ptr, scales: w.scales, gate: g.gate?.ptr, gateScales: g.gate?.scales,
      act: g.act, xp, xq });
    return (T) => {
      mm(router, probs, x.ptr, T);
      const logitsOf = k.f32(probs, T * E).slice();
      for (let t = 0; t < T; t++) {
        const row = logitsOf.subarray(t * E, (t + 1) * E);
        const m = Math.max(...row);
        const p = Array.from(row, (v) => Math.exp(v - m));
        const sum = p.reduce((a, b) => a + b, 0);
        const chosen = p.map((v, e) => [v / sum, e]).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, op.topK);
        const norm = op.normTopK ? chosen.reduce((a, [v]) => a + v, 0) : 1;
        const o = k.f32(out.ptr + t * hidden * 4, hidden);
        if (!op.accumulate) o.fill(0);
        for (const [pe, e] of chosen) {
          mm(rowsOf(up, e * inter, inter), mid, x.ptr + t * hidden * 4, 1, { gate: rowsOf(gate, e * inter, inter), act: op.act });
          mm(rowsOf(down, e * hidden, hidden), res, mid, 1);
          const r = k.f32(res, hidden), wgt = pe / norm;
          for (let i = 0; i < hidden; i++) o[i] += wgt * r[i];
        }
      }
    };
  };

  /** @param {GraphOp} op @returns {(T: number, pos0: number) => void} */
  const lowerOp = (op) => {
    switch (op.op) {
      case "embed": {
        const t = weight(op.table), out = act(op.out);
        return (T) => ex.embed(out.ptr, ids, T, t.ptr, t.scales, DT[t.dtype], t.cols, op.scale, 0);
      }
      case "pos_embed": {
        const t = weight(op.table), out = act(op.out);
        return (T, pos0) => {
          const p = k.i32(positions, T);
          for (let i = 0; i < T; i++) p[i] = pos0 + i;
          ex.embed(out.ptr, positions, T, t.ptr, t.scales, DT[t.dtype], t.cols, 1, 1);
        };
      }
      case "norm": {
        const w = vector(op.weight), b = op.bias ? vector(op.bias) : 0, out = act(op.out), x = act(op.x);
        return (T) => ex.norm(out.ptr, inRow(op.rows, x, T), count(op.rows, T), op.n, op.heads, w, b,
          op.perHeadWeight ? 1 : 0, op.kind === "layer" ? 1 : 0, c.norm_eps, op.accumulate ? 1 : 0);
      }
      case "linear":
        return linear({ out: act(op.out), x: act(op.x), w: op.w, bias: op.bias, gate: op.gate, gateBias: op.gateBias,
          act: op.act, softcap: op.softcap, accumulate: op.accumulate, rows: op.rows });
      case "linear_group": {
        // q | k | v as one product (the graph asks only when fusions.qkv): each member into its part.
        const a = graph.activations[op.out];
        const members = (manifest.groups ?? []).find((g) => g.name === op.group)?.members;
        const biases = op.bias ? (manifest.groups ?? []).find((g) => g.name === op.bias)?.members : null;
        if (!("parts" in a) || !members || members.length !== a.parts.length) {
          throw new SitegenRuntimeError(`graph: group '${op.group}' does not match activation '${op.out}'.`);
        }
        const runs = a.parts.map(([part], i) => linear({ out: act(part), x: act(op.x), w: members[i],
          bias: biases ? biases[i] : null }));
        return (T) => runs.forEach((r) => r(T));
      }
      case "rope": {
        // rotate: false on a layer without RoPE (SmolLM3's NoPE layers): only the cache append.
        const table = op.rotate === false ? { ptr: 0, half: 0 } : ropeTable(op.local);
        const q = act(op.q), kk = act(op.k), v = act(op.v), qOut = act(op.qOut);
        return (T, pos0) => ex.rope(q.ptr, kk.ptr, v.ptr, table.half ? qOut.ptr : 0, kCache[op.layer], vCache[op.layer],
          table.ptr, T, pos0, heads, kvHeads, hd, table.half, kvLayout.rows[op.layer]);
      }
      case "attention": {
        if (heads % kvHeads !== 0) throw new SitegenRuntimeError(`attention: heads (${heads}) must be a multiple of kv heads (${kvHeads}).`);
        const out = act(op.out), q = act(op.q);
        return (T, pos0) => k.split("attention", [out.ptr, q.ptr, kCache[op.layer], vCache[op.layer], T, pos0, heads,
          kvHeads, hd, op.scale, op.softcap ?? 0, op.window ?? 0, scores, kvLayout.rows[op.layer]]);
      }
      case "moe":
        return moe(op);
      default:
        throw new SitegenRuntimeError(`op '${/** @type {any} */ (op).op}' is not supported by the wasm backend: ` +
          "use the WebGPU backend for this model, or a sitegen version whose CPU backend has it.",
        { op: /** @type {any} */ (op).op });
    }
  };

  const body = graph.body.map(lowerOp);
  const headLast = graph.headLast.map(lowerOp);
  /** @type {{ ops: ((T: number, pos0: number) => void)[], ptr: number } | null} */
  let headAll = null;
  const allHead = () => {
    if (!headAll) {
      const ptr = k.alloc(C * vocab * 4, "the logits of every position");
      acts.set("logits_all", { ptr, width: vocab });
      headAll = { ptr, ops: graph.headAll.map(lowerOp) };
    }
    return headAll;
  };
  const pickable = Math.max(1, Math.min(sampleVocab ?? vocab, vocab));

  /**
   * @param {Int32Array} tokenIds @param {number} start @param {boolean} all
   * @returns {Float32Array | null} every position's logits when `all`; else the last row is at `logits`
   */
  const run = (tokenIds, start, all) => {
    const n = tokenIds.length;
    checkStep(tokenIds, start, contextLength, vocab);
    const out = all ? new Float32Array(n * vocab) : null;
    for (let off = 0; off < n; off += C) {
      const T = Math.min(C, n - off), pos0 = start + off;
      k.i32(ids, T).set(tokenIds.subarray(off, off + T));
      for (const op of body) op(T, pos0);
      if (all) {
        const h = allHead();
        for (const op of h.ops) op(T, pos0);
        /** @type {Float32Array} */ (out).set(k.f32(h.ptr, T * vocab), off * vocab);
      } else if (off + T === n) {
        for (const op of headLast) op(T, pos0);
      }
    }
    return out;
  };

  const maskWords = Math.ceil(pickable / 32);
  const maskPtr = k.alloc(maskWords * 4, "the allowed-token mask");
  /**
   * The kk best of the last row (constrained output: only ids the mask allows; issue 17). When the
   * mask allows fewer than kk ids the rest are id -1 with logit -Infinity (backend.js).
   * @param {number} kk @param {Uint32Array | undefined} allowed
   */
  const topk = (kk, allowed) => {
    if (allowed) {
      const m = new Uint32Array(k.memory.buffer, maskPtr, maskWords);
      m.fill(0);
      m.set(allowed.subarray(0, maskWords));
    }
    const found = ex.topk(logits, pickable, allowed ? maskPtr : 0, kk, picked, picked + MAX_TOP_K * 4);
    const ids = new Int32Array(kk).fill(-1), vals = new Float32Array(kk).fill(-Infinity);
    ids.set(k.i32(picked, found));
    vals.set(k.f32(picked + MAX_TOP_K * 4, found));
    return { ids, logits: vals };
  };

  return {
    async forward(tokenIds, start, { allPositions = false } = {}) {
      const all = run(tokenIds, start, allPositions);
      return all ?? k.f32(logits, vocab).slice();
    },
    async sampleGreedy(tokenIds, start, opt = {}) {
      run(tokenIds, start, false);
      return topk(1, opt.allowed).ids[0];
    },
    async sampleTopK(tokenIds, start, kk, opt = {}) {
      if (!(Number.isInteger(kk) && kk >= 1 && kk <= Math.min(MAX_TOP_K, pickable))) {
        throw new InvalidRequestError(`top-k: k must be in [1, ${Math.min(MAX_TOP_K, pickable)}], got ${kk}.`, { param: "top_k" });
      }
      run(tokenIds, start, false);
      return topk(kk, opt.allowed);
    },
    maxTopK: Math.min(MAX_TOP_K, pickable),
    kvCacheBytes: kvLayout.bytes,
    kvCacheRows: kvLayout.rows,
    kvRewind: kvLayout.rewind,
    destroy() {
      // The memory belongs to the backend (freed with it); nothing to release per model.
    },
  };
}
