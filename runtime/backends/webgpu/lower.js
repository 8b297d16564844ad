// The WebGPU lowering of the model graph (runtime/graph.js): every graph op
// becomes one kernel op per weight part (a tensor larger than the device's
// binding limit is split by rows; docs/internals.md), built ONCE with its bind
// group; a forward call only writes the token ids and the 16-byte step,
// records the op list and submits once per chunk of at most `prefillChunk`
// tokens. Activations stay on the GPU; greedy and top-k sampling run on the
// GPU too, so a decode step reads back 8 bytes (greedy) or 8·k bytes.

import { InvalidRequestError, SitegenRuntimeError } from "../../errors.js";
import { checkStep } from "../../backend.js";
import { lowerMoe } from "./moe.js";
import { kvCacheLayout, opReads, opWrites } from "../../graph.js";

/** The most weights (rows x cols, both matrices of a gated pair) a product with a fused RMSNorm may have. */
const FUSED_NORM_MAX_WEIGHTS = 8 << 20;

/**
 * @typedef {import("./kernels.js").Kernels} Kernels
 * @typedef {import("./kernels.js").KernelOp} KernelOp
 * @typedef {import("./kernels.js").WeightPart} WeightPart
 * @typedef {import("./kernels.js").BufferRef} BufferRef
 * @typedef {WeightPart & { rowStart: number }} Part
 * @typedef {import("../../graph.js").Graph} Graph
 * @typedef {import("../../graph.js").GraphOp} GraphOp
 */

const USAGE_STORAGE = 0x0080, USAGE_COPY_SRC = 0x0004, USAGE_COPY_DST = 0x0008, USAGE_MAP_READ = 0x0001;
/** Most candidates `sampleTopK` returns (the kernel's limit). */
export const MAX_TOP_K = 256;

/**
 * The index of the only op that reads body op i's output before it is written again (-1: none,
 * several, or a reader past the body).
 * @param {Graph} graph @param {number} i
 */
function onlyReader(graph, i) {
  const [name] = opWrites(graph.body[i]);
  /** @param {GraphOp} op */
  const reads = (op) => opReads(op).includes(name);
  let reader = -1;
  for (let j = i + 1; j < graph.body.length; j++) {
    const op = graph.body[j];
    if (reads(op)) { if (reader >= 0) return -1; reader = j; }
    if (opWrites(op).includes(name)) return reader;
  }
  return [...graph.headLast, ...graph.headAll].some(reads) ? -1 : reader;
}

/**
 * @param {{ device: GPUDevice, kernels: Kernels, graph: Graph, contextLength: number, prefillChunk: number,
 *   weight: (name: string) => Part[] | null, sampleVocab?: number }} o
 *   sampleVocab: how many rows of the output head sampling may pick (the tokenizer's size; Phi-2,
 *   Qwen2.5 and random test models pad their embeddings with rows no token decodes to).
 */
export function lowerGraph(o) {
  // Everything allocated so far is freed if lowering fails part-way (a caller
  // that owns the device would otherwise keep the buffers).
  /** @type {GPUBuffer[]} */
  const owned = [];
  try {
    return lower(o, owned);
  } catch (e) {
    for (const b of owned) b.destroy();
    throw e;
  }
}

/**
 * @param {Parameters<typeof lowerGraph>[0]} o @param {GPUBuffer[]} owned
 */
function lower({ device, kernels: k, graph, contextLength, prefillChunk, weight, sampleVocab }, owned) {
  const c = graph.config;
  const vocab = c.vocab_size, hd = c.head_dim, heads = c.num_heads, kvHeads = c.num_kv_heads;
  const kvDim = kvHeads * hd;
  const C = Math.max(1, Math.min(prefillChunk, contextLength));
  const eps = c.norm_eps;

  /** @param {string} label @param {number} bytes @param {number} [usage] */
  const buffer = (label, bytes, usage = USAGE_STORAGE | USAGE_COPY_SRC | USAGE_COPY_DST) => {
    const b = device.createBuffer({ label, size: Math.max(16, Math.ceil(bytes / 16) * 16), usage });
    owned.push(b);
    return b;
  };
  /** @param {string} label @param {number} bytes */
  const staging = (label, bytes) => buffer(label, bytes, USAGE_MAP_READ | USAGE_COPY_DST);

  /** @param {string} name @returns {Part[]} */
  const parts = (name) => {
    const p = weight(name);
    if (!p || p.length === 0) throw new SitegenRuntimeError(`The model has no tensor '${name}', which ${c.architecture} needs: convert it again.`,
      { tensor: name });
    return p;
  };
  /**
   * A 1-D f32 tensor (norm weight, bias) as its buffer and its first element there (a member of a
   * q/k/v bias group starts inside the group's buffer).
   * @param {string} name @returns {{ buffer: GPUBuffer, base: number }}
   */
  const vector = (name) => {
    const p = parts(name);
    if (p.length !== 1 || p[0].dtype !== "f32") {
      throw new SitegenRuntimeError(`Tensor '${name}' should be one f32 vector; got ${p.length} part(s) of ${p[0]?.dtype}.`);
    }
    return { buffer: p[0].buffer, base: (p[0].rowOffset ?? 0) * p[0].cols };
  };

  // Activations, [C, width] f32 (one chunk of the prompt at most). An activation of parts (q | k | v of a
  // fused product) is one buffer with each part a dense [C, width] array at a 256-byte boundary.
  /** @type {Map<string, BufferRef>} */
  const acts = new Map();
  /** @type {Map<string, { from: number, base: number, stride: number }[]>} */
  const segmentsOf = new Map();
  for (const [name, a] of Object.entries(graph.activations)) {
    if (name === "logits") continue;
    if ("width" in a) { acts.set(name, buffer(name, C * a.width * 4)); continue; }
    const align = (/** @type {number} */ n) => Math.ceil(n / 64) * 64;
    let base = 0, row = 0;
    /** @type {{ name: string, base: number, width: number, row: number }[]} */
    const laid = [];
    for (const [part, width] of a.parts) { laid.push({ name: part, base, width, row }); base += align(C * width); row += width; }
    const b = buffer(name, base * 4);
    acts.set(name, b);
    for (const p of laid) acts.set(p.name, { buffer: b, offset: p.base * 4, size: C * p.width * 4 });
    segmentsOf.set(name, laid.slice(1).map((p) => ({ from: p.row, base: p.base, stride: p.width })));
  }
  const logitsLast = buffer("logits (last)", vocab * 4);
  acts.set("logits", logitsLast);
  const ids = buffer("ids", C * 4);
  /** @param {string} name */
  const act = (name) => {
    const r = acts.get(name);
    if (!r) throw new SitegenRuntimeError(`graph: unknown activation '${name}'.`);
    return r;
  };

  // KV cache: [rows, kv_heads*head_dim] f32 per layer, K and V; rows = contextLength, or on a
  // sliding-window layer a ring of window + chunk - 1 rows (graph.js kvCacheLayout, issue 12).
  const kvLayout = kvCacheLayout(c, contextLength, C);
  /** @type {GPUBuffer[]} */
  const kCache = [], vCache = [];
  for (let i = 0; i < c.num_layers; i++) {
    kCache.push(buffer(`k cache ${i}`, kvLayout.rows[i] * kvDim * 4));
    vCache.push(buffer(`v cache ${i}`, kvLayout.rows[i] * kvDim * 4));
  }

  // RoPE tables: one per theta (Gemma 3's sliding layers use rope_local_theta). `rope_scaling`
  // belongs to the global theta: Gemma 3's local layers use plain RoPE (HF Gemma3RotaryEmbedding
  // builds the local one with rope_type "default").
  /** @type {Map<boolean, ReturnType<Kernels["ropeTable"]>>} */
  const ropeTables = new Map();
  /** @param {boolean} local */
  const ropeTable = (local) => {
    if (c.position !== "rope" || !(c.rotary_dim ?? hd)) return null;
    let t = ropeTables.get(local);
    if (!t) {
      t = k.ropeTable({ theta: /** @type {number} */ (local ? c.rope_local_theta : c.rope_theta), rotaryDim: c.rotary_dim ?? hd,
        maxPositions: contextLength, scaling: local ? null : /** @type {any} */ (c.rope_scaling ?? null) });
      owned.push(t.buffer);
      ropeTables.set(local, t);
    }
    return t;
  };

  /**
   * A product over every part of a (possibly row-split) weight: one kernel op per part.
   * @param {{ out: BufferRef, x: BufferRef, w: string, gate?: string | null, bias?: string | null,
   *   gateBias?: string | null, act?: any, softcap?: number | null, accumulate?: boolean,
   *   rows?: "all" | "last" | "first", segments?: { from: number, base: number, stride: number }[], outStride?: number,
   *   prenorm?: { id: number, x: string, weight: string, rows: "all" | "last" | "first" },
   *   quantizeFor?: { dtype: "q4" | "q8", rows: "all" | "last" | "first" } | null,
   *   xqFrom?: import("./kernels.js").XqOut | null }} o
   * @returns {KernelOp[]}
   */
  const linear = (o) => {
    const wp = parts(o.w);
    const gp = o.gate ? parts(o.gate) : null;
    const N = wp.reduce((a, p) => a + p.rows, 0);
    if (gp && (gp.length !== wp.length || gp.some((g, i) => g.rowStart !== wp[i].rowStart || g.rows !== wp[i].rows))) {
      throw new SitegenRuntimeError(`Tensors '${o.gate}' and '${o.w}' are split differently: reconvert the model.`);
    }
    const bias = o.bias ? vector(o.bias) : null, gateBias = o.gateBias ? vector(o.gateBias) : null;
    // The graph's "norm" fusion: the matvec normalises its input itself. Its input row follows the
    // norm's row mode, which may differ from the product's only where the product has one row.
    // Not for a large product: its invocations each redo the norm's work for their rows (the norm
    // weight's loads beside x's, Σx²), a cost that grows with the matrix while the norm pass it saves
    // costs a dispatch (H200, bench/kernel_bench.mjs: +2 us on Llama-3.2-1B's 6M-weight q/k/v, +29 us on
    // its output head, +19 us on Gemma-7B's gate/up).
    // The integer-dot matvec (large q4/q8 products) normalises in its quantize dispatch, once per
    // row: no such cost there.
    const weights = N * wp[0].cols * (gp ? 2 : 1);
    const pn = o.prenorm && (weights <= FUSED_NORM_MAX_WEIGHTS || k.int8For(wp[0].dtype, wp[0].rows * wp[0].cols * (gp ? 2 : 1)))
      ? o.prenorm : null;
    const rowsOk = pn && (pn.rows === (o.rows ?? "all") || ((o.rows ?? "all") !== "all" && pn.rows !== "all"));
    const nw = pn && rowsOk && wp[0].cols % 32 === 0 ? vector(pn.weight) : null;
    const prenorm = pn && nw && !nw.base ? { x: act(pn.x), weight: nw.buffer, eps } : null;
    const rows = prenorm && pn ? pn.rows : o.rows ?? "all";
    // Output row m is the reader's input row m where the reader reads every row and so does this
    // product, or the reader reads its first row and this product has one.
    const q = o.quantizeFor;
    const quantizeFor = q && wp.length === 1 && (q.rows === "first" ? rows !== "all" : q.rows === "all" && rows === "all") ? q.dtype : null;
    const ops = wp.map((p, i) => k.linear({ out: o.out, x: o.x, w: p, gate: gp ? gp[i] : null, prenorm,
      bias: bias?.buffer ?? null, biasOffset: (bias?.base ?? 0) + p.rowStart,
      gateBias: gateBias?.buffer ?? null, gateBiasOffset: (gateBias?.base ?? 0) + p.rowStart,
      act: o.act ?? null, softcap: o.softcap ?? null, accumulate: o.accumulate ?? false,
      outOffset: p.rowStart, outStride: o.outStride ?? N, rows, segments: o.segments, quantizeFor, xqFrom: o.xqFrom ?? null,
      maxTokens: C }));
    if (pn) (normReaders.get(pn.id) ?? normReaders.set(pn.id, []).get(pn.id))?.push(...ops);
    return ops;
  };
  /** @type {Map<number, KernelOp[]>} the kernel ops that read each fusable norm (graph `fusedId`) */
  const normReaders = new Map();

  // A product whose output only the next op reads, an integer-dot matvec (a gate/up and its down
  // projection), writes that reader's int8 input itself (kernels.js `quantizeFor`, QOUT): one
  // quantize dispatch fewer a layer in a decode step.
  /** @type {Map<GraphOp, GraphOp>} producer -> reader */
  const xqReader = new Map();
  /** @type {Map<GraphOp, GraphOp>} reader -> producer */
  const xqProducer = new Map();
  /** @type {Map<GraphOp, import("./kernels.js").XqOut | null>} a lowered producer's int8 output */
  const xqOuts = new Map();
  // Likewise an attention whose only reader is a q4/q8 product (the o-projection): its merge writes
  // that product's int8 input, which makes the integer-dot path free for it whatever its size.
  graph.body.forEach((op, i) => {
    const next = graph.body[i + 1];
    const producer = (op.op === "linear" && !op.accumulate) || op.op === "attention";
    if (!producer || next?.op !== "linear" || next.x !== op.out || /** @type {any} */ (next).prenorm) return;
    if (onlyReader(graph, i) !== i + 1) return;
    const rp = parts(next.w);
    // (the merge writes token t's input at row t: a reader of every row)
    const takes = (/** @type {WeightPart} */ p) => op.op === "attention"
      ? (p.dtype === "q4" || p.dtype === "q8") && k.features.int8 === true && (next.rows ?? "all") === "all"
      : k.int8For(p.dtype, p.rows * p.cols * (next.gate ? 2 : 1));
    if (rp.every((p) => p.cols % 32 === 0 && takes(p))) {
      xqReader.set(op, next);
      xqProducer.set(next, op);
    }
  });

  /** @type {Map<string, GPUBuffer>} */
  const moeScratch = new Map();
  // Each layer's rope op (graph op, table) and attention kernel op: a one-token decode step's split
  // attention rotates q and appends the new key and value itself (kernels.js `attention({ rope })`),
  // and the rope dispatch is skipped: one dispatch fewer a layer.
  /** @type {Map<number, { op: any, table: ReturnType<Kernels["ropeTable"]> | null }>} */
  const ropeOf = new Map();
  /** @type {Map<number, KernelOp>} */
  const attentionOf = new Map();
  /** @param {GraphOp} op @returns {KernelOp[]} */
  const lowerOp = (op) => {
    switch (op.op) {
      case "embed":
        return parts(op.table).map((p) => k.embed({ out: act(op.out), ids, table: p, rowStart: p.rowStart, scale: op.scale }));
      case "pos_embed":
        return parts(op.table).map((p) => {
          if (p.rowStart !== 0) throw new SitegenRuntimeError("Split learned-position tables are not supported.");
          return k.embed({ out: act(op.out), table: p, positions: true, accumulate: true });
        });
      case "norm": {
        const w = vector(op.weight), b = op.bias ? vector(op.bias) : null;
        if (w.base || b?.base) throw new SitegenRuntimeError(`Norm weights cannot be group members ('${op.weight}').`);
        const nk = k.norm({ out: act(op.out), x: act(op.x), weight: w.buffer, bias: b?.buffer ?? null, n: op.n, eps, kind: op.kind,
          rowsPerToken: op.heads, perRowWeight: op.perHeadWeight, accumulate: op.accumulate, rows: op.rows });
        const id = /** @type {{ fusedId?: number }} */ (op).fusedId;
        // Skipped in the steps where every reader normalises its input itself (readers are lowered later).
        if (id) nk.skipWhen((tokens) => { const r = normReaders.get(id) ?? []; return r.length > 0 && r.every((x) => x.normsItself(tokens)); });
        return [nk];
      }
      case "linear": {
        const reader = xqReader.get(op);
        const producer = xqProducer.get(op);
        const ops = linear({ out: act(op.out), x: act(op.x), w: op.w, gate: op.gate, bias: op.bias, gateBias: op.gateBias,
          act: op.act, softcap: op.softcap, accumulate: op.accumulate, rows: op.rows, prenorm: /** @type {any} */ (op).prenorm,
          quantizeFor: reader?.op === "linear" ? { dtype: /** @type {"q4" | "q8"} */ (parts(reader.w)[0].dtype), rows: reader.rows ?? "all" } : null,
          xqFrom: producer ? xqOuts.get(producer) ?? null : null });
        if (reader) xqOuts.set(op, ops[0].xqOut);
        return ops;
      }
      case "linear_group": {
        const a = graph.activations[op.out];
        if (!("parts" in a)) throw new SitegenRuntimeError(`graph: '${op.out}' is not an activation of parts.`);
        return linear({ out: /** @type {BufferRef} */ (acts.get(op.out)), x: act(op.x), w: op.group, bias: op.bias,
          segments: segmentsOf.get(op.out), outStride: a.parts[0][1], prenorm: /** @type {any} */ (op).prenorm });
      }
      case "rope": {
        const table = op.rotate === false ? null : ropeTable(op.local);  // NoPE layer: cache append only
        const rk = k.rope({ q: act(op.q), k: act(op.k), v: act(op.v), qOut: table ? act(op.qOut) : null,
          kCache: kCache[op.layer], vCache: vCache[op.layer], cacheRows: kvLayout.rows[op.layer], heads, kvHeads, headDim: hd, table });
        // A one-token step's attention may do this op's work itself (below): skipped then.
        ropeOf.set(op.layer, { op, table });
        rk.skipWhen((tokens) => attentionOf.get(op.layer)?.fusesRope(tokens) ?? false);
        return [rk];
      }
      case "attention": {
        // The layer's rope op right before it, reading what the attention's q is made from.
        const r = ropeOf.get(op.layer);
        const prev = graph.body[graph.body.indexOf(op) - 1];
        const rope = r && prev === r.op && r.op.qOut === op.q ? { q: act(r.op.q), k: act(r.op.k), v: act(r.op.v), table: r.table } : null;
        const reader = xqReader.get(op);
        const ak = k.attention({ out: act(op.out), q: act(op.q), kCache: kCache[op.layer], vCache: vCache[op.layer],
          cacheRows: kvLayout.rows[op.layer], heads, kvHeads, headDim: hd, scale: op.scale, softcap: op.softcap, window: op.window,
          maxTokens: C, rope, quantizeFor: reader?.op === "linear" ? /** @type {"q4" | "q8"} */ (parts(reader.w)[0].dtype) : null });
        if (reader) xqOuts.set(op, ak.xqOut);
        attentionOf.set(op.layer, ak);
        return [ak];
      }
      case "moe":  // issue 12: router, top-k and experts on the GPU (moe.js)
        return lowerMoe(op, { kernels: k, hidden: c.hidden_size, chunk: C, out: act(op.out), x: act(op.x), parts, buffer,
          linear: (o) => linear(o), scratch: moeScratch });
      default:
        throw new SitegenRuntimeError(`graph: unknown op '${/** @type {any} */ (op).op}'.`);
    }
  };

  const body = graph.body.flatMap(lowerOp);
  const headLast = graph.headLast.flatMap(lowerOp);
  const stagingLast = staging("logits readback", vocab * 4);
  // Sampling on the GPU over the rows sampling may pick: greedy (argmax) and top-k candidates.
  const pickable = Math.max(1, Math.min(sampleVocab ?? vocab, vocab));
  const chosen = buffer("sampled", 8 * MAX_TOP_K);
  const stagingChosen = staging("sampled readback", 8 * MAX_TOP_K);
  const argmaxOp = k.argmax({ out: chosen, logits: logitsLast, n: pickable, rows: "first" });
  /** @type {Map<number, KernelOp>} */
  const topkOps = new Map();
  const topkOp = (/** @type {number} */ n) => {
    let op = topkOps.get(n);
    if (!op) { op = k.topk({ out: chosen, logits: logitsLast, n: pickable, k: n, rows: "first" }); topkOps.set(n, op); }
    return op;
  };
  // Constrained output (issue 17): the allowed-ids bitmask (one bit per id), uploaded with the step;
  // the masked top-k variant (greedy: k = 1) skips the ids without their bit.
  const maskWords = Math.ceil(pickable / 32);
  const allowedIds = buffer("allowed ids", 4 * maskWords);
  /** @type {Map<number, KernelOp>} */
  const maskedOps = new Map();
  const maskedOp = (/** @type {number} */ n) => {
    let op = maskedOps.get(n);
    if (!op) { op = k.topk({ out: chosen, logits: logitsLast, n: pickable, k: n, rows: "first", allowed: allowedIds }); maskedOps.set(n, op); }
    return op;
  };
  /** @type {{ ops: KernelOp[], logits: GPUBuffer, staging: GPUBuffer } | null} */
  let headAll = null;
  const allHead = () => {
    if (!headAll) {
      const logits = buffer("logits (all)", C * vocab * 4);
      acts.set("logits_all", logits);
      headAll = { logits, staging: staging("logits readback (all)", C * vocab * 4), ops: graph.headAll.flatMap(lowerOp) };
    }
    return headAll;
  };

  /** @type {{ key: string, cb: GPUCommandBuffer } | null} a one-token step encoded ahead (`run`) */
  let ahead = null;
  /** @param {number} pos0 @param {number} m @param {{ kind: string, k?: number }} mode @param {boolean} masked */
  const stepKey = (pos0, m, mode, masked) => `${pos0}:${m}:${mode.kind}:${mode.k ?? 0}:${masked}`;
  /**
   * Record a step of m tokens (the kernels' step already set) into a command buffer.
   * @param {number} m @param {boolean} last @param {{ kind: "all" | "last" | "greedy" | "topk" }} mode
   * @param {number} topK @param {boolean} masked
   */
  function encodeStep(m, last, mode, topK, masked) {
    const all = mode.kind === "all";
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    for (const op of body) op.record(pass);
    const head = all ? allHead().ops : last ? headLast : [];
    for (const op of head) op.record(pass);
    if (last && mode.kind === "greedy") (masked ? maskedOp(1) : argmaxOp).record(pass);
    if (last && mode.kind === "topk") (masked ? maskedOp(topK) : topkOp(topK)).record(pass);
    pass.end();
    if (all) enc.copyBufferToBuffer(allHead().logits, 0, allHead().staging, 0, m * vocab * 4);
    else if (last && mode.kind === "greedy") enc.copyBufferToBuffer(chosen, 0, stagingChosen, 0, 16);
    else if (last && mode.kind === "topk") enc.copyBufferToBuffer(chosen, 0, stagingChosen, 0, Math.ceil(8 * topK / 16) * 16);
    else if (last) enc.copyBufferToBuffer(logitsLast, 0, stagingLast, 0, vocab * 4);
    return enc.finish();
  }

  /**
   * @param {Int32Array} tokenIds @param {number} start
   * @param {{ kind: "all" | "last" | "greedy" | "topk", k?: number, allowed?: Uint32Array }} mode
   * @returns {Promise<Float32Array | number | { ids: Int32Array, logits: Float32Array }>}
   */
  async function run(tokenIds, start, mode) {
    const all = mode.kind === "all";
    const n = tokenIds.length;
    checkStep(tokenIds, start, contextLength, vocab);
    const topK = mode.kind === "topk" ? /** @type {number} */ (mode.k) : 0;
    if (mode.kind === "topk" && !(Number.isInteger(topK) && topK >= 1 && topK <= Math.min(MAX_TOP_K, pickable))) {
      throw new InvalidRequestError(`top-k on the device: k must be in [1, ${Math.min(MAX_TOP_K, pickable)}], got ${topK}.`, { param: "top_k" });
    }
    const out = all ? new Float32Array(n * vocab) : mode.kind === "last" ? new Float32Array(vocab) : null;
    const allowed = mode.allowed ?? null;
    if (allowed) {
      if (!(allowed instanceof Uint32Array) || allowed.length < maskWords) {
        throw new InvalidRequestError(`allowed: expected a Uint32Array of at least ${maskWords} words (one bit per id).`, { param: "allowed" });
      }
      device.queue.writeBuffer(allowedIds, 0, /** @type {Uint32Array<ArrayBuffer>} */ (allowed), 0, maskWords);
    }
    for (let off = 0; off < n; off += C) {
      const m = Math.min(C, n - off);
      const last = off + m === n;
      device.queue.writeBuffer(ids, 0, Uint32Array.from(tokenIds.subarray(off, off + m)));
      k.setStep({ tokens: m, pos0: start + off });
      // A one-token step encoded ahead by the previous call (below) is this one: submit it as it is.
      const key = stepKey(start + off, m, mode, Boolean(allowed));
      const cb = ahead?.key === key ? ahead.cb : encodeStep(m, last, mode, topK, Boolean(allowed));
      ahead = null;
      device.queue.submit([cb]);
      // While the GPU runs this decode step, encode the likely next one (one token at the next
      // position, the same kind of sampling): the ~1 ms of host encoding then overlaps the GPU, as
      // in the chained greedy decode, for the steps that cannot chain (a mask computed from this
      // step's choice, sampling on the host). Uniforms written now take effect after this submit.
      // (Not after an unmasked greedy step: the engine chains the next one through submitGreedy,
      // and the warm-up's has none.)
      if (n === 1 && !all && !(mode.kind === "greedy" && !allowed) && start + 1 < contextLength) {
        k.setStep({ tokens: 1, pos0: start + 1 });
        ahead = { key: stepKey(start + 1, 1, mode, Boolean(allowed)), cb: encodeStep(1, true, mode, topK, Boolean(allowed)) };
      }
      if (all) {
        const s = allHead().staging;
        await s.mapAsync(1 /* GPUMapMode.READ */, 0, m * vocab * 4);
        /** @type {Float32Array} */ (out).set(new Float32Array(s.getMappedRange(0, m * vocab * 4)), off * vocab);
        s.unmap();
      }
    }
    if (mode.kind === "greedy" || mode.kind === "topk") {
      const bytes = mode.kind === "greedy" ? 16 : Math.ceil(8 * topK / 16) * 16;
      await stagingChosen.mapAsync(1 /* GPUMapMode.READ */, 0, bytes);
      const words = new Uint32Array(stagingChosen.getMappedRange(0, bytes).slice(0));
      stagingChosen.unmap();
      if (mode.kind === "greedy") return words[0];
      const cand = { ids: Int32Array.from(words.subarray(0, topK)), logits: new Float32Array(words.buffer, 4 * topK, topK).slice() };
      // Past the last allowed id (a mask with fewer than k ids): id -1, logit -Infinity.
      for (let i = 0; i < topK; i++) if (cand.ids[i] < 0) cand.logits[i] = -Infinity;
      return cand;
    }
    if (!all) {
      await stagingLast.mapAsync(1 /* GPUMapMode.READ */);
      // (the staging buffer is rounded up to 16 bytes: a vocabulary such as GPT-2's 50,257 leaves a tail)
      /** @type {Float32Array} */ (out).set(new Float32Array(stagingLast.getMappedRange(0, vocab * 4)));
      stagingLast.unmap();
    }
    return /** @type {Float32Array} */ (out);
  }

  // Chained greedy decode: a step whose input is the previous step's choice, still on the GPU, can
  // be submitted before that choice is read back, so the host records step t+1 while the GPU runs
  // step t (no stall between tokens). Each step reads its choice back through its own staging
  // buffer of a small ring (a buffer being mapped cannot take a copy).
  /** @type {{ buffer: GPUBuffer, busy: Promise<unknown> | null }[]} */
  const ring = Array.from({ length: 3 }, (_, i) => ({ buffer: staging(`chained choice ${i}`, 16), busy: null }));
  let ringNext = 0;
  /**
   * Submit one greedy decode step at position `start` now and return the promise of its choice.
   * `tokenId`: the input token, or null for the choice of the previously submitted chained step.
   * @param {number | null} tokenId @param {number} start
   * @returns {Promise<number>}
   */
  function submitGreedy(tokenId, start) {
    checkStep(tokenId === null ? [0] : [tokenId], start, contextLength, vocab);  // (null: an id already checked)
    const slot = ring[ringNext];
    ringNext = (ringNext + 1) % ring.length;
    if (slot.busy) throw new SitegenRuntimeError("chained decode: more steps in flight than the readback ring holds.");
    if (tokenId !== null) device.queue.writeBuffer(ids, 0, Uint32Array.of(tokenId));
    k.setStep({ tokens: 1, pos0: start });
    const enc = device.createCommandEncoder();
    if (tokenId === null) enc.copyBufferToBuffer(chosen, 0, ids, 0, 4);  // the previous step's choice: chosen[0]
    const pass = enc.beginComputePass();
    for (const op of body) op.record(pass);
    for (const op of headLast) op.record(pass);
    argmaxOp.record(pass);
    pass.end();
    enc.copyBufferToBuffer(chosen, 0, slot.buffer, 0, 16);
    device.queue.submit([enc.finish()]);
    const done = slot.buffer.mapAsync(1 /* GPUMapMode.READ */, 0, 16).then(() => {
      const id = new Uint32Array(slot.buffer.getMappedRange(0, 16))[0];
      slot.buffer.unmap();
      return id;
    }).finally(() => { slot.busy = null; });
    slot.busy = done;
    return done;
  }

  /**
   * Profile one greedy step of `tokenIds` (the first chunk of them) at positions start..: every kernel op in
   * a compute pass of its own with timestamps at its start and end (needs the device feature
   * "timestamp-query"), then the same step recorded as usual, timed on the host. Writes the KV cache
   * like a real step. GPU times exclude the gaps between passes; `wallMs` is the normal step's.
   * @param {Int32Array} tokenIds @param {number} start
   * @returns {Promise<import("../../backend.js").StepProfile>}
   */
  async function profile(tokenIds, start) {
    if (!device.features.has(/** @type {GPUFeatureName} */ ("timestamp-query"))) {
      throw new SitegenRuntimeError("Profiling needs the WebGPU feature 'timestamp-query', which this device lacks.");
    }
    tokenIds = tokenIds.subarray(0, C);  // one chunk at most
    const n = tokenIds.length;
    if (n < 1 || n > C || start + n > contextLength) throw new SitegenRuntimeError(`profile: 1..${C} tokens within the context.`);
    const ops = [...body, ...headLast, argmaxOp];
    const count = 2 * ops.length;
    const querySet = device.createQuerySet({ type: "timestamp", count });
    const resolved = device.createBuffer({ size: count * 8, usage: 0x0200 /* QUERY_RESOLVE */ | USAGE_COPY_SRC });
    const read = device.createBuffer({ size: count * 8, usage: USAGE_MAP_READ | USAGE_COPY_DST });
    try {
      device.queue.writeBuffer(ids, 0, Uint32Array.from(tokenIds));
      k.setStep({ tokens: n, pos0: start });
      const enc = device.createCommandEncoder();
      ops.forEach((op, i) => {
        const pass = enc.beginComputePass({ timestampWrites: { querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } });
        op.record(pass);
        pass.end();
      });
      enc.resolveQuerySet(querySet, 0, count, resolved, 0);
      enc.copyBufferToBuffer(resolved, 0, read, 0, count * 8);
      device.queue.submit([enc.finish()]);
      await read.mapAsync(1);
      const t = new BigInt64Array(read.getMappedRange().slice(0));
      read.unmap();
      /** @type {Record<string, { ms: number, dispatches: number }>} */
      const byFamily = {};
      /** @type {{ label: string, variant: string, ms: number }[]} */
      const perOp = [];
      let gpuMs = 0;
      ops.forEach((op, i) => {
        const ms = Number(t[2 * i + 1] - t[2 * i]) / 1e6;
        const variant = op.variant(n, start);
        const fam = variant.split(":")[0];
        const f = (byFamily[fam] ??= { ms: 0, dispatches: 0 });
        f.ms += ms;
        f.dispatches += 1;
        gpuMs += ms;
        perOp.push({ label: op.label, variant, ms });
      });
      // The same step as a real one: one pass, one submit; host encode time and wall time.
      const t0 = performance.now();
      device.queue.writeBuffer(ids, 0, Uint32Array.from(tokenIds));
      k.setStep({ tokens: n, pos0: start });
      const enc2 = device.createCommandEncoder();
      const pass = enc2.beginComputePass();
      for (const op of ops) op.record(pass);
      pass.end();
      enc2.copyBufferToBuffer(chosen, 0, stagingChosen, 0, 16);
      const cb = enc2.finish();
      const encodeMs = performance.now() - t0;
      device.queue.submit([cb]);
      await stagingChosen.mapAsync(1, 0, 16);
      stagingChosen.unmap();
      const wallMs = performance.now() - t0;
      return { tokens: n, dispatches: ops.reduce((a, op) => a + op.dispatches(n, start), 0), submits: 1, encodeMs, wallMs, gpuMs, byFamily, perOp };
    } finally {
      querySet.destroy();
      resolved.destroy();
      read.destroy();
    }
  }

  return {
    /**
     * Run `tokenIds` at positions start.. and return logits: the last position's row [vocab], or
     * with `allPositions` every row [n, vocab].
     * @param {Int32Array} tokenIds @param {number} start @param {{ allPositions?: boolean }} [opt]
     */
    forward: async (tokenIds, start, { allPositions = false } = {}) =>
      /** @type {Float32Array} */ (await run(tokenIds, start, { kind: allPositions ? "all" : "last" })),
    /**
     * Run like `forward`; return the greedy choice after the last position (the lowest id among
     * equal maxima, like numpy.argmax), chosen on the GPU among the first `sampleVocab` rows
     * (and, with `allowed`, among the ids whose bit is set).
     * @param {Int32Array} tokenIds @param {number} start @param {{ allowed?: Uint32Array }} [opt]
     */
    forwardGreedy: async (tokenIds, start, opt = {}) =>
      /** @type {number} */ (await run(tokenIds, start, { kind: "greedy", allowed: opt.allowed })),
    /**
     * Run like `forward`; return the k largest logits after the last position and their ids,
     * descending, chosen on the GPU among the first `sampleVocab` rows.
     * With `allowed`, only ids whose bit is set are candidates (fewer than k: the rest are id -1, logit -Infinity).
     * @param {Int32Array} tokenIds @param {number} start @param {number} topK @param {{ allowed?: Uint32Array }} [opt]
     */
    forwardTopK: async (tokenIds, start, topK, opt = {}) =>
      /** @type {{ ids: Int32Array, logits: Float32Array }} */ (await run(tokenIds, start, { kind: "topk", k: topK, allowed: opt.allowed })),
    profile,
    submitGreedy,
    /** Bytes of the KV cache (K and V of every layer). */
    kvCacheBytes: kvLayout.bytes,
    /** KV-cache rows of each layer, and how far behind its furthest write a pass may start (graph.js kvCacheLayout). */
    kvCacheRows: kvLayout.rows,
    kvRewind: kvLayout.rewind,
    /** Kernel ops recorded per decode step (dispatches, one per weight part). */
    opsPerStep: [...body, ...headLast].reduce((a, op) => a + op.dispatches(1, 0), 0),
    destroy() {
      for (const b of owned) b.destroy();
      owned.length = 0;
      k.destroy();
    },
  };
}
