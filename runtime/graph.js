// One decoder-only transformer graph for every supported architecture
// (issue 4, item 1). Architecture features are options read from the
// normalised config (docs/internals.md), never per-model copies:
//   norm_type rmsnorm|layernorm (+ biases), activation, mlp_gated, attn/mlp/lm_head biases,
//   partial rotary (rotary_dim), rope_scaling, learned positions, qk_norm,
//   parallel_block, sandwich_norm, embed_scale, attn/final soft-capping,
//   sliding windows per layer (with their own rope theta).
//
// The forward pass, per layer (HF LlamaDecoderLayer; shapes [T, ·] for T tokens):
//   x  = norm(h)                              (attn_norm)
//   q  = x·Wqᵀ (+bq)  [T, heads*hd];  k, v = x·Wkᵀ, x·Wvᵀ (+b)  [T, kv_heads*hd]
//   q, k = qk_norm(q), qk_norm(k)             (Qwen3, Gemma 3)
//   q, k = rope(q, k); cache[pos0 + t] = k, v
//   a  = softmax(q·Kᵀ * scale, causal [, window] [, softcap]) · V
//   h += a·Woᵀ (+bo)                          (sandwich: h += norm(a·Woᵀ))
//   x  = norm(h)                              (mlp_norm; a parallel block reuses the first x)
//   h += down(act(x·Wgᵀ) * (x·Wuᵀ))           (or down(act(x·Wuᵀ + bu)) when not gated)
// then logits = norm(h)·Wlmᵀ (tied: the embedding), optionally soft-capped.
//
// Every op is built once (bind groups included); a forward call only writes
// the token ids and the 16-byte step, records the op list and submits once per
// chunk of at most `prefillChunk` tokens. Activations stay on the GPU; only
// the logits that sampling needs are read back.

import { InvalidRequestError, SitegenRuntimeError } from "./errors.js";

/**
 * @typedef {import("./backends/webgpu/kernels.js").Kernels} Kernels
 * @typedef {import("./backends/webgpu/kernels.js").KernelOp} KernelOp
 * @typedef {import("./backends/webgpu/kernels.js").WeightPart} WeightPart
 * @typedef {WeightPart & { rowStart: number }} Part
 */

const USAGE_STORAGE = 0x0080, USAGE_COPY_SRC = 0x0004, USAGE_COPY_DST = 0x0008, USAGE_MAP_READ = 0x0001;

/**
 * @param {{ device: GPUDevice, kernels: Kernels, config: any, contextLength: number, prefillChunk: number,
 *   weight: (name: string) => Part[] | null, sampleVocab?: number }} o
 *   sampleVocab: how many rows of the output head sampling may pick (the tokenizer's size; Phi-2,
 *   Qwen2.5 and random test models pad their embeddings with rows no token decodes to).
 */
export function createGraph(o) {
  // Everything allocated so far is freed if building the graph fails part-way
  // (a caller that owns the device would otherwise keep the buffers).
  /** @type {GPUBuffer[]} */
  const owned = [];
  try {
    return buildGraph(o, owned);
  } catch (e) {
    for (const b of owned) b.destroy();
    throw e;
  }
}

/**
 * @param {Parameters<typeof createGraph>[0]} o @param {GPUBuffer[]} owned
 */
function buildGraph({ device, kernels: k, config: c, contextLength, prefillChunk, weight, sampleVocab }, owned) {
  const hidden = c.hidden_size, heads = c.num_heads, kvHeads = c.num_kv_heads, hd = c.head_dim;
  const vocab = c.vocab_size, inter = c.intermediate_size;
  const qDim = heads * hd, kvDim = kvHeads * hd;
  const C = Math.max(1, Math.min(prefillChunk, contextLength));
  const normKind = c.norm_type === "layernorm" ? "layer" : "rms";
  const eps = c.norm_eps;

  /** @param {string} label @param {number} bytes @param {number} [extra] */
  const buffer = (label, bytes, extra = 0) => {
    const b = device.createBuffer({ label, size: Math.max(16, Math.ceil(bytes / 16) * 16),
      usage: USAGE_STORAGE | USAGE_COPY_SRC | USAGE_COPY_DST | extra });
    owned.push(b);
    return b;
  };

  /** @param {string} name @returns {Part[]} */
  const parts = (name) => {
    const p = weight(name);
    if (!p) throw new SitegenRuntimeError(`The model has no tensor '${name}', which ${c.architecture} needs: convert it again.`,
      { tensor: name });
    return p;
  };
  /** A 1-D tensor (norm weight, bias) as a plain buffer, or null when absent. @param {string} name */
  const vector = (name) => {
    const p = weight(name);
    if (!p) return null;
    if (p.length !== 1 || p[0].dtype !== "f32") {
      throw new SitegenRuntimeError(`Tensor '${name}' should be one f32 vector; got ${p.length} part(s) of ${p[0]?.dtype}.`);
    }
    return p[0].buffer;
  };
  const need = (/** @type {string} */ name) => /** @type {GPUBuffer} */ (vector(name) ?? parts(name)[0].buffer);

  // Activations, [C, features] f32 (one chunk of the prompt at most).
  const ids = buffer("ids", C * 4);
  const h = buffer("h (residual)", C * hidden * 4);
  const x = buffer("x (normed)", C * hidden * 4);
  const x2 = c.parallel_block ? buffer("x2 (mlp normed)", C * hidden * 4) : x;
  const q = buffer("q", C * qDim * 4);
  const kb = buffer("k", C * kvDim * 4);
  const vb = buffer("v", C * kvDim * 4);
  const qn = c.qk_norm ? buffer("q normed", C * qDim * 4) : q;
  const kn = c.qk_norm ? buffer("k normed", C * kvDim * 4) : kb;
  const att = buffer("attention out", C * qDim * 4);
  const mlp = buffer("mlp hidden", C * inter * 4);
  const tmp = c.sandwich_norm ? buffer("sandwich tmp", C * hidden * 4) : null;
  const logitsLast = buffer("logits (last)", vocab * 4);
  const stagingLast = device.createBuffer({ label: "logits readback", size: vocab * 4, usage: USAGE_MAP_READ | USAGE_COPY_DST });
  owned.push(stagingLast);

  // KV cache: [contextLength, kv_heads*head_dim] f32 per layer, K and V.
  const kvBytes = contextLength * kvDim * 4;
  const kCache = [], vCache = [];
  for (let i = 0; i < c.num_layers; i++) {
    kCache.push(buffer(`k cache ${i}`, kvBytes));
    vCache.push(buffer(`v cache ${i}`, kvBytes));
  }

  // RoPE tables: one per theta (Gemma 3's sliding layers use rope_local_theta).
  // `rope_scaling` belongs to the global theta: Gemma 3's local layers use plain RoPE (HF
  // Gemma3RotaryEmbedding builds the local one with rope_type "default").
  /** @type {Map<string, ReturnType<Kernels["ropeTable"]>>} */
  const ropeTables = new Map();
  const rotaryDim = c.rotary_dim ?? hd;
  /** @param {boolean} local */
  const ropeTable = (local) => {
    if (c.position !== "rope") return null;
    const theta = local ? c.rope_local_theta : c.rope_theta;
    const scaling = local ? null : c.rope_scaling ?? null;
    const key = `${theta}:${JSON.stringify(scaling)}`;
    let t = ropeTables.get(key);
    if (!t) {
      t = k.ropeTable({ theta, rotaryDim, maxPositions: contextLength, scaling });
      owned.push(t.buffer);
      ropeTables.set(key, t);
    }
    return t;
  };

  /**
   * A linear layer over all parts of a (possibly row-split) weight.
   * @param {{ out: GPUBuffer, x: GPUBuffer, w: string, gate?: string, bias?: GPUBuffer | null,
   *   gateBias?: GPUBuffer | null, act?: any,
   *   softcap?: number | null, accumulate?: boolean, rows?: "all" | "last" | "first" }} o
   * @returns {KernelOp[]}
   */
  const linear = (o) => {
    const wp = parts(o.w);
    const gp = o.gate ? parts(o.gate) : null;
    const N = wp.reduce((a, p) => a + p.rows, 0);
    /** The rows of a bias vector that part `p` produces. @param {GPUBuffer | null | undefined} b @param {Part} p */
    const slice = (b, p) => {
      if (!b) return null;
      const off = p.rowStart * 4;
      if (off % 256 !== 0) {
        throw new SitegenRuntimeError(`Tensor '${o.w}' is split at row ${p.rowStart}, where its bias cannot be bound ` +
          "(offset not a multiple of 256 bytes): use a GPU with a larger maxStorageBufferBindingSize.");
      }
      return { buffer: b, offset: off, size: p.rows * 4 };
    };
    if (gp && gp.some((g, i) => g.rowStart !== wp[i]?.rowStart || g.rows !== wp[i]?.rows)) {
      throw new SitegenRuntimeError(`Tensors '${o.gate}' and '${o.w}' are split differently: reconvert the model.`);
    }
    return wp.map((p, i) => {
      const bias = slice(o.bias, p), gateBias = slice(o.gateBias, p);
      return k.linear({ out: o.out, x: o.x, w: p, gate: gp ? gp[i] : null, bias, gateBias, act: o.act ?? null,
        softcap: o.softcap ?? null, accumulate: o.accumulate ?? false, outOffset: p.rowStart, outStride: N,
        rows: o.rows ?? "all" });
    });
  };
  /** @param {string} prefix  e.g. "layers.0.attn_norm" @param {GPUBuffer} out @param {GPUBuffer} input
   *  @param {{ rows?: "all"|"last", accumulate?: boolean }} [opt] */
  const norm = (prefix, out, input, opt = {}) => k.norm({ out, x: input, weight: need(`${prefix}.weight`),
    bias: vector(`${prefix}.bias`), n: hidden, eps, kind: normKind, rows: opt.rows ?? "all", accumulate: opt.accumulate });

  /** @type {KernelOp[]} */
  const body = [];
  // Embedding (+ learned positions).
  for (const p of parts("embed.weight")) {
    body.push(k.embed({ out: h, ids, table: p, rowStart: p.rowStart, scale: c.embed_scale ?? 1 }));
  }
  if (c.position === "learned") {
    for (const p of parts("pos_embed.weight")) {
      if (p.rowStart !== 0) throw new SitegenRuntimeError("Split learned-position tables are not supported.");
      body.push(k.embed({ out: h, table: p, positions: true, accumulate: true }));
    }
  }

  const bias = c.attn_bias ?? {};
  for (let i = 0; i < c.num_layers; i++) {
    const L = `layers.${i}`;
    const sliding = c.layer_types?.[i] === "sliding";
    body.push(norm(`${L}.attn_norm`, x, h));
    if (c.parallel_block && (c.parallel_mlp_norm ?? weight(`${L}.mlp_norm.weight`))) body.push(norm(`${L}.mlp_norm`, x2, h));
    body.push(...linear({ out: q, x, w: `${L}.attn.q.weight`, bias: bias.q ? need(`${L}.attn.q.bias`) : null }));
    body.push(...linear({ out: kb, x, w: `${L}.attn.k.weight`, bias: bias.k ? need(`${L}.attn.k.bias`) : null }));
    body.push(...linear({ out: vb, x, w: `${L}.attn.v.weight`, bias: bias.v ? need(`${L}.attn.v.bias`) : null }));
    if (c.qk_norm) {
      // RMSNorm over head_dim (Qwen3, Gemma 3) or a per-head LayerNorm (StableLM).
      // "layernorm" (Phi's qk_layernorm: one weight+bias over head_dim) and "layernorm_per_head" are
      // both LayerNorms; only "rmsnorm" is an RMSNorm (docs/internals.md, normalised config).
      const kind = c.qk_norm === "rmsnorm" ? "rms" : "layer";
      for (const [which, src, dst, nh] of /** @type {const} */ ([["q", q, qn, heads], ["k", kb, kn, kvHeads]])) {
        const w = parts(`${L}.attn.${which}_norm.weight`)[0];
        body.push(k.norm({ out: dst, x: src, weight: w.buffer, bias: vector(`${L}.attn.${which}_norm.bias`), n: hd, eps,
          kind, rowsPerToken: nh, perRowWeight: w.rows * w.cols > hd }));
      }
    }
    body.push(k.rope({ q: qn, k: kn, v: vb, kCache: kCache[i], vCache: vCache[i], heads, kvHeads, headDim: hd,
      table: ropeTable(Boolean(sliding && c.rope_local_theta)) }));
    body.push(k.attention({ out: att, q: qn, kCache: kCache[i], vCache: vCache[i], heads, kvHeads, headDim: hd,
      scale: c.attn_scale ?? 1 / Math.sqrt(hd), softcap: c.attn_softcap ?? null,
      window: sliding ? c.sliding_window : null }));
    const oBias = bias.o ? need(`${L}.attn.o.bias`) : null;
    if (c.sandwich_norm) {
      const t = /** @type {GPUBuffer} */ (tmp);
      body.push(...linear({ out: t, x: att, w: `${L}.attn.o.weight`, bias: oBias }));
      body.push(norm(`${L}.post_attn_norm`, h, t, { accumulate: true }));
    } else if (!c.parallel_block) {
      body.push(...linear({ out: h, x: att, w: `${L}.attn.o.weight`, bias: oBias, accumulate: true }));
    }
    // MLP input: a parallel block reads the block input (normed before attention changed h).
    let mx = x;
    if (!c.parallel_block) body.push(norm(`${L}.mlp_norm`, x, h));
    else if (c.parallel_mlp_norm ?? weight(`${L}.mlp_norm.weight`)) mx = x2;
    const upBias = c.mlp_bias ? vector(`${L}.mlp.up.bias`) : null;
    if (c.mlp_gated) {
      // Llama's mlp_bias: act(x·Wgᵀ + bg) * (x·Wuᵀ + bu), both biases fused into the dual matvec.
      const gateBias = c.mlp_bias ? vector(`${L}.mlp.gate.bias`) : null;
      body.push(...linear({ out: mlp, x: mx, w: `${L}.mlp.up.weight`, gate: `${L}.mlp.gate.weight`, act: c.activation,
        bias: upBias, gateBias }));
    } else {
      body.push(...linear({ out: mlp, x: mx, w: `${L}.mlp.up.weight`, bias: upBias, act: c.activation }));
    }
    const downBias = c.mlp_bias ? vector(`${L}.mlp.down.bias`) : null;
    if (c.sandwich_norm) {
      const t = /** @type {GPUBuffer} */ (tmp);
      body.push(...linear({ out: t, x: mlp, w: `${L}.mlp.down.weight`, bias: downBias }));
      body.push(norm(`${L}.post_mlp_norm`, h, t, { accumulate: true }));
    } else {
      body.push(...linear({ out: h, x: mlp, w: `${L}.mlp.down.weight`, bias: downBias, accumulate: true }));
    }
    if (c.parallel_block) {
      // Attention's output joins after the MLP has read the block input.
      body.push(...linear({ out: h, x: att, w: `${L}.attn.o.weight`, bias: oBias, accumulate: true }));
    }
  }

  const lmWeight = weight("lm_head.weight") ? "lm_head.weight" : "embed.weight";
  const lmBias = c.lm_head_bias ? need("lm_head.bias") : null;
  /** Final norm + lm_head: only the last position ("last"), or every position of the chunk. */
  const headLast = [norm("final_norm", x, h, { rows: "last" }),
    ...linear({ out: logitsLast, x, w: lmWeight, bias: lmBias, softcap: c.final_softcap, rows: "first" })];
  // Greedy decoding on the GPU: the argmax of the last logits row over the
  // tokens sampling may pick, so a decode step reads back 8 bytes, not the row.
  const pickable = Math.max(1, Math.min(sampleVocab ?? vocab, vocab));
  const chosen = buffer("greedy choice", 16);
  const stagingChosen = device.createBuffer({ label: "greedy readback", size: 16, usage: USAGE_MAP_READ | USAGE_COPY_DST });
  owned.push(stagingChosen);
  const argmaxOp = k.argmax({ out: chosen, logits: logitsLast, n: pickable, rows: "first" });
  /** @type {{ ops: KernelOp[], logits: GPUBuffer, staging: GPUBuffer } | null} */
  let headAll = null;
  const allHead = () => {
    if (!headAll) {
      const logits = buffer("logits (all)", C * vocab * 4);
      const staging = device.createBuffer({ label: "logits readback (all)", size: C * vocab * 4,
        usage: USAGE_MAP_READ | USAGE_COPY_DST });
      owned.push(staging);
      headAll = { logits, staging, ops: [norm("final_norm", x, h),
        ...linear({ out: logits, x, w: lmWeight, bias: lmBias, softcap: c.final_softcap })] };
    }
    return headAll;
  };

  /**
   * Run `tokenIds` at positions start.. and return logits: the last
   * position's row [vocab], or with `allPositions` every row [n, vocab].
   * @param {Int32Array} tokenIds
   * @param {number} start  positions already in the KV cache
   * @param {{ allPositions?: boolean }} [opt]
   * @returns {Promise<Float32Array>}
   */
  async function forward(tokenIds, start, { allPositions = false } = {}) {
    return /** @type {Promise<Float32Array>} */ (run(tokenIds, start, allPositions ? "all" : "last"));
  }

  /**
   * Run `tokenIds` like `forward` and return the greedy choice after the last
   * position: the id of the largest logit among the first `sampleVocab` rows
   * (the lowest id on ties, like numpy.argmax), computed on the GPU.
   * @param {Int32Array} tokenIds @param {number} start
   * @returns {Promise<number>}
   */
  async function forwardGreedy(tokenIds, start) {
    return /** @type {Promise<number>} */ (run(tokenIds, start, "greedy"));
  }

  /**
   * @param {Int32Array} tokenIds @param {number} start @param {"all" | "last" | "greedy"} mode
   * @returns {Promise<Float32Array | number>}
   */
  async function run(tokenIds, start, mode) {
    const allPositions = mode === "all";
    const n = tokenIds.length;
    if (n === 0) throw new SitegenRuntimeError("forward: no tokens.");
    if (start + n > contextLength) {
      throw new SitegenRuntimeError(`forward: positions ${start}..${start + n - 1} exceed the KV cache (${contextLength}).`);
    }
    for (const id of tokenIds) {
      if (!(id >= 0 && id < vocab)) {
        throw new InvalidRequestError(`Token id ${id} is outside the vocabulary (0..${vocab - 1}).`, { param: "tokens", id });
      }
    }
    const out = allPositions ? new Float32Array(n * vocab) : mode === "last" ? new Float32Array(vocab) : null;
    for (let off = 0; off < n; off += C) {
      const m = Math.min(C, n - off);
      const last = off + m === n;
      device.queue.writeBuffer(ids, 0, Uint32Array.from(tokenIds.subarray(off, off + m)));
      k.setStep({ tokens: m, pos0: start + off });
      const enc = device.createCommandEncoder();
      const pass = enc.beginComputePass();
      for (const op of body) op.record(pass);
      const head = allPositions ? allHead().ops : last ? headLast : [];
      for (const op of head) op.record(pass);
      if (last && mode === "greedy") argmaxOp.record(pass);
      pass.end();
      if (allPositions) enc.copyBufferToBuffer(allHead().logits, 0, allHead().staging, 0, m * vocab * 4);
      else if (last && mode === "greedy") enc.copyBufferToBuffer(chosen, 0, stagingChosen, 0, 16);
      else if (last) enc.copyBufferToBuffer(logitsLast, 0, stagingLast, 0, vocab * 4);
      device.queue.submit([enc.finish()]);
      if (allPositions) {
        const s = allHead().staging;
        await s.mapAsync(1 /* GPUMapMode.READ */, 0, m * vocab * 4);
        /** @type {Float32Array} */ (out).set(new Float32Array(s.getMappedRange(0, m * vocab * 4)), off * vocab);
        s.unmap();
      }
    }
    if (mode === "greedy") {
      await stagingChosen.mapAsync(1 /* GPUMapMode.READ */);
      const id = new Uint32Array(stagingChosen.getMappedRange(0, 4))[0];
      stagingChosen.unmap();
      return id;
    }
    if (!allPositions) {
      await stagingLast.mapAsync(1 /* GPUMapMode.READ */);
      /** @type {Float32Array} */ (out).set(new Float32Array(stagingLast.getMappedRange()));
      stagingLast.unmap();
    }
    return /** @type {Float32Array} */ (out);
  }

  return {
    forward,
    forwardGreedy,
    /** Bytes of the KV cache. */
    kvCacheBytes: 2 * c.num_layers * kvBytes,
    destroy() {
      for (const b of owned) b.destroy();
      owned.length = 0;
      k.destroy();
    },
  };
}
