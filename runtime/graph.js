// The model graph: one backend-neutral op list for every supported
// architecture (issue 10, item 2), built from the normalised config
// (docs/internals.md) and read beside sitegen/reference/model.py: the same
// steps, in the same order, under the same names (`attention`, `mlp`,
// `block`, `forward`). A backend lowers the list to its kernels
// (runtime/backends/webgpu/lower.js); it never branches on the family.
//
// Architecture features are options of the config, never per-model copies:
//   norm_type rmsnorm|layernorm (+ biases), activation, mlp_gated, attn/mlp/lm_head biases,
//   partial rotary (rotary_dim), rope_scaling, learned positions, qk_norm,
//   parallel_block, sandwich_norm, embed_scale, attn/final soft-capping,
//   sliding windows per layer (with their own rope theta).
//
// Fusions are chosen here, so that every backend can use them or not:
// - "qkv": q, k and v from one product over a q/k/v tensor group (format v2)
//   into one activation `qkv` whose parts `q`, `k`, `v` are dense arrays;
//   without the group, or when the backend declines, three `linear` ops.
// - the gated MLP is always one `linear` with a `gate` (act(x·Wgᵀ) * (x·Wuᵀ)
//   in one pass; a backend without that epilogue runs it as two products and
//   a multiply); gate and up may be members of one gate_up group.
// - the residual add is the `accumulate` flag of the op that produces it.
// - "norm": an RMSNorm read only by products may be computed inside them (`prenorm` on the
//   products, `fusedId` on the norm; fuseNorms below), saving a pass per norm.
//
// Ops (every tensor input is a canonical tensor name or null, every
// activation a name from `activations`; each activation is [tokens, width] f32):
//   {op: "embed", out, table, scale}                       out = table[ids] * scale
//   {op: "pos_embed", out, table}                          out += table[positions]
//   {op: "norm", out, x, weight, bias, kind, n, heads, perHeadWeight, accumulate, rows}
//   {op: "linear", out, x, w, bias, gate, gateBias, act, softcap, accumulate, rows}
//   {op: "linear_group", out, x, group, bias}               out = the group's product (q|k|v parts)
//   {op: "rope", q, k, v, qOut, layer, local}              q/k rotated (none for learned positions);
//                                                           k, v appended to layer's KV cache
//   {op: "attention", out, q, layer, scale, softcap, window}
//   {op: "moe", out, x, router, gate, up, down, experts, topK, normTopK, inter, act, accumulate}
//       a sparse mixture-of-experts MLP (Mixtral, Qwen3-MoE; model.py `_moe`), per token t:
//       p = softmax(x[t]·routerᵀ) over `experts`; the topK largest p (lower index first among
//       equals), divided by their sum when normTopK; out[t] (+)= Σ_j p_j · down[e_j]·(act(gate[e_j]·x[t])
//       * up[e_j]·x[t]). gate/up are [experts, inter, hidden], down [experts, hidden, inter].
// `rope` has `rotate: false` on a layer without RoPE (SmolLM3's NoPE layers, config.nope_layers):
// then k, v are only appended to the cache and qOut is q.
// `rows: "last"` (the head of a prefill) reads the last token and writes row 0;
// `rows: "first"` reads and writes row 0.

import { SitegenRuntimeError } from "./errors.js";

/**
 * @typedef {import("./manifest.js").NormalizedConfig} NormalizedConfig
 * @typedef {"all" | "last" | "first"} RowsMode
 * @typedef {{ op: "embed", out: string, table: string, scale: number }
 *   | { op: "pos_embed", out: string, table: string }
 *   | { op: "norm", out: string, x: string, weight: string, bias: string | null, kind: "rms" | "layer", n: number,
 *       heads: number, perHeadWeight: boolean, accumulate: boolean, rows: RowsMode }
 *   | { op: "linear", out: string, x: string, w: string, bias: string | null, gate: string | null,
 *       gateBias: string | null, act: "silu" | "gelu_tanh" | "gelu" | null, softcap: number | null,
 *       accumulate: boolean, rows: RowsMode }
 *   | { op: "linear_group", out: string, x: string, group: string, bias: string | null }
 *   | { op: "rope", q: string, k: string, v: string, qOut: string, layer: number, local: boolean, rotate: boolean }
 *   | { op: "attention", out: string, q: string, layer: number, scale: number, softcap: number | null,
 *       window: number | null }
 *   | { op: "moe", out: string, x: string, router: string, gate: string, up: string, down: string, experts: number,
 *       topK: number, normTopK: boolean, inter: number, act: "silu" | "gelu_tanh" | "gelu", accumulate: boolean }} GraphOp
 * @typedef {{ width: number } | { parts: [string, number][] }} Activation
 *   width floats per token, or an activation made of named dense parts (q | k | v) of one allocation
 * @typedef {object} Graph
 * @property {NormalizedConfig} config
 * @property {Record<string, Activation>} activations  name → per-token shape
 * @property {GraphOp[]} body     embedding and every layer, for each chunk of tokens
 * @property {GraphOp[]} headLast final norm + output head of the last token → `logits` row 0
 * @property {GraphOp[]} headAll  the same for every token of the chunk → `logits_all`
 * @property {string[]} fused     the fusions used (e.g. "qkv"), for stats and tests
 * @typedef {object} GraphOptions
 * @property {(name: string) => boolean} has  whether the model has a tensor, group or group member
 * @property {(group: string) => string[] | null} members  a tensor group's members in row order (null: no such group)
 * @property {{ qkv?: boolean, norm?: boolean }} [fuse]  fusions the backend can run (default: all)
 */

/**
 * Build the op list of a model.
 * @param {NormalizedConfig} c
 * @param {GraphOptions} o
 * @returns {Graph}
 */
export function buildGraph(c, { has, members, fuse = {} }) {
  const hidden = c.hidden_size, heads = c.num_heads, kvHeads = c.num_kv_heads, hd = c.head_dim;
  const qDim = heads * hd, kvDim = kvHeads * hd;
  const normKind = c.norm_type === "layernorm" ? "layer" : "rms";
  const bias = c.attn_bias ?? { q: false, k: false, v: false, o: false };
  /** @type {string[]} */
  const fused = [];

  /** @param {string} name */
  const need = (name) => {
    if (!has(name)) {
      throw new SitegenRuntimeError(`The model has no tensor '${name}', which ${c.architecture} needs: convert it again.`,
        { tensor: name });
    }
    return name;
  };
  /** @param {string} name */
  const maybe = (name) => (has(name) ? name : null);

  /** @type {Record<string, Activation>} */
  const activations = { h: { width: hidden }, x: { width: hidden }, att: { width: qDim },
    mlp: { width: c.intermediate_size } };

  /**
   * norm(x) of the hidden state (`prefix` e.g. "layers.0.attn_norm").
   * @param {string} prefix @param {string} out @param {string} x
   * @param {{ accumulate?: boolean, rows?: RowsMode }} [opt]
   * @returns {GraphOp}
   */
  const norm = (prefix, out, x, opt = {}) => ({ op: "norm", out, x, weight: need(`${prefix}.weight`),
    bias: maybe(`${prefix}.bias`), kind: normKind, n: hidden, heads: 1, perHeadWeight: false,
    accumulate: opt.accumulate ?? false, rows: opt.rows ?? "all" });

  /**
   * x·Wᵀ (+ b): `prefix` e.g. "layers.0.attn.o".
   * @param {string} prefix @param {string} out @param {string} x @param {boolean} withBias
   * @param {{ accumulate?: boolean, act?: NormalizedConfig["activation"] | null, gate?: string | null,
   *   rows?: RowsMode, softcap?: number | null, w?: string }} [opt]
   * @returns {GraphOp}
   */
  const linear = (prefix, out, x, withBias, opt = {}) => ({ op: "linear", out, x, w: need(opt.w ?? `${prefix}.weight`),
    bias: withBias ? need(`${prefix}.bias`) : null,
    gate: opt.gate ? need(`${opt.gate}.weight`) : null,
    gateBias: opt.gate && withBias ? need(`${opt.gate}.bias`) : null,
    act: opt.act ?? null, softcap: opt.softcap ?? null, accumulate: opt.accumulate ?? false, rows: opt.rows ?? "all" });

  // q/k/v as one product when the weights are one group and the backend takes it.
  const qkvGroup = (/** @type {number} */ i) => {
    const g = `layers.${i}.attn.qkv.weight`;
    const m = members(g);
    const p = `layers.${i}.attn.`;
    const fusable = fuse.qkv !== false && m !== null
      && m.join() === [`${p}q.weight`, `${p}k.weight`, `${p}v.weight`].join()
      && (!(bias.q || bias.k || bias.v) || members(`${p}qkv.bias`)?.join() === [`${p}q.bias`, `${p}k.bias`, `${p}v.bias`].join());
    return fusable ? g : null;
  };

  /**
   * Attention of layer i: x (normed) → `att` [T, heads*hd], KV cache appended; the o projection
   * is left to `block` (it accumulates into the residual or feeds a sandwich norm).
   * @param {number} i @returns {GraphOp[]}
   */
  const attention = (i) => {
    const p = `layers.${i}.attn.`;
    /** @type {GraphOp[]} */
    const ops = [];
    const group = qkvGroup(i);
    if (group) {
      activations.qkv = { parts: [["q", qDim], ["k", kvDim], ["v", kvDim]] };
      ops.push({ op: "linear_group", out: "qkv", x: "x", group,
        bias: bias.q ? need(`${p}qkv.bias`) : null });                   // q, k, v = x·[Wq;Wk;Wv]ᵀ (+ b)
      if (!fused.includes("qkv")) fused.push("qkv");
    } else {
      activations.q = { width: qDim };
      activations.k = { width: kvDim };
      activations.v = { width: kvDim };
      ops.push(linear(`${p}q`, "q", "x", bias.q));                       // q = q_proj(x)  [T, H*D]
      ops.push(linear(`${p}k`, "k", "x", bias.k));                       // k = k_proj(x)  [T, KV*D]
      ops.push(linear(`${p}v`, "v", "x", bias.v));                       // v = v_proj(x)  [T, KV*D]
    }
    let q = "q", k = "k";
    if (c.qk_norm) {
      // q, k = qk_norm(q), qk_norm(k) over head_dim, before RoPE (Qwen3, Gemma 3 RMSNorm; Phi's
      // LayerNorm with one weight for all heads; StableLM's LayerNorm with a weight per head).
      const kind = c.qk_norm === "rmsnorm" ? "rms" : "layer";
      activations.qn = { width: qDim };
      activations.kn = { width: kvDim };
      for (const [which, src, dst, nh] of /** @type {const} */ ([["q", "q", "qn", heads], ["k", "k", "kn", kvHeads]])) {
        ops.push({ op: "norm", out: dst, x: src, weight: need(`${p}${which}_norm.weight`), bias: maybe(`${p}${which}_norm.bias`),
          kind, n: hd, heads: nh, perHeadWeight: c.qk_norm === "layernorm_per_head", accumulate: false, rows: "all" });
      }
      q = "qn";
      k = "kn";
    }
    // RoPE on q and k (the sliding layers' own base on Gemma 3), then k, v into the cache.
    const rotary = c.position === "rope" && (c.rotary_dim ?? hd) > 0 && !(c.nope_layers ?? []).includes(i);
    if (rotary) activations.qr = { width: qDim };
    ops.push({ op: "rope", q, k, v: "v", qOut: rotary ? "qr" : q, layer: i,
      local: c.layer_types?.[i] === "sliding" && Boolean(c.rope_local_theta), rotate: rotary });
    ops.push({ op: "attention", out: "att", q: rotary ? "qr" : q, layer: i,          // softmax(q·Kᵀ·scale [+mask]) · V
      scale: c.attn_scale ?? 1 / Math.sqrt(hd), softcap: c.attn_softcap ?? null, window: layerWindow(c, i) });
    return ops;
  };

  /**
   * The MLP of layer i: `mx` (normed) → `out` (accumulated into the residual unless sandwiched).
   * @param {number} i @param {string} mx @param {string} out @param {boolean} accumulate
   * @returns {GraphOp[]}
   */
  const mlp = (i, mx, out, accumulate) => {
    const p = `layers.${i}.mlp.`;
    if (c.moe && c.moe.layers.includes(i)) {                                // Mixtral / Qwen3-MoE sparse layer
      return [{ op: "moe", out, x: mx, router: need(`${p}router.weight`), gate: need(`${p}experts.gate.weight`),
        up: need(`${p}experts.up.weight`), down: need(`${p}experts.down.weight`), experts: c.moe.num_experts,
        topK: c.moe.top_k, normTopK: c.moe.norm_topk_prob, inter: c.moe.intermediate_size, act: c.activation, accumulate }];
    }
    return [
      c.mlp_gated
        ? linear(`${p}up`, "mlp", mx, c.mlp_bias, { gate: `${p}gate`, act: c.activation })   // act(gate(x)) * up(x)
        : linear(`${p}up`, "mlp", mx, c.mlp_bias, { act: c.activation }),                   // act(fc1(x))
      linear(`${p}down`, out, "mlp", c.mlp_bias, { accumulate }),                             // down(·)
    ];
  };

  /** One transformer layer: h → h. @param {number} i @returns {GraphOp[]} */
  const block = (i) => {
    const p = `layers.${i}.`;
    const o = `${p}attn.o`;
    /** @type {GraphOp[]} */
    const ops = [norm(`${p}attn_norm`, "x", "h")];                      // x = input_layernorm(h)
    if (c.parallel_block) {
      // Phi-2, Falcon, StableLM parallel: h + attn(ln(h)) + mlp(ln(h)); Falcon's new decoder
      // architecture normalises the MLP input on its own (ln_mlp).
      const ownNorm = c.parallel_mlp_norm || has(`${p}mlp_norm.weight`);
      if (ownNorm) {
        activations.x2 = { width: hidden };
        ops.push(norm(`${p}mlp_norm`, "x2", "h"));
      }
      ops.push(...attention(i));
      ops.push(...mlp(i, ownNorm ? "x2" : "x", "h", true));             // h += mlp(·)
      ops.push(linear(o, "h", "att", bias.o, { accumulate: true }));    // h += o_proj(att), after the MLP read h
      return ops;
    }
    ops.push(...attention(i));
    if (c.sandwich_norm) {
      activations.tmp = { width: hidden };
      ops.push(linear(o, "tmp", "att", bias.o));                        // Gemma 2/3: h += post_attn_norm(o_proj(att))
      ops.push(norm(`${p}post_attn_norm`, "h", "tmp", { accumulate: true }));
    } else {
      ops.push(linear(o, "h", "att", bias.o, { accumulate: true }));    // h += o_proj(att)
    }
    ops.push(norm(`${p}mlp_norm`, "x", "h"));                           // x = post_attention_layernorm(h)
    if (c.sandwich_norm) {
      ops.push(...mlp(i, "x", "tmp", false));
      ops.push(norm(`${p}post_mlp_norm`, "h", "tmp", { accumulate: true }));  // h += post_mlp_norm(mlp(x))
    } else {
      ops.push(...mlp(i, "x", "h", true));                              // h += mlp(x)
    }
    return ops;
  };

  // forward: embed (+ learned positions), the layers, then the head.
  /** @type {GraphOp[]} */
  const body = [{ op: "embed", out: "h", table: need("embed.weight"), scale: c.embed_scale ?? 1 }];
  if (c.position === "learned") body.push({ op: "pos_embed", out: "h", table: need("pos_embed.weight") });
  for (let i = 0; i < c.num_layers; i++) body.push(...block(i));

  const head = has("lm_head.weight") ? "lm_head" : "embed";             // tied: the embedding
  /** @param {"last" | "all"} which @returns {GraphOp[]} */
  const headOps = (which) => {
    const out = which === "last" ? "logits" : "logits_all";
    return [
      norm("final_norm", "x", "h", { rows: which === "last" ? "last" : "all" }),
      linear(head, out, "x", Boolean(c.lm_head_bias), { rows: which === "last" ? "first" : "all",
        softcap: c.final_softcap ?? null, w: `${head}.weight` }),
    ];
  };
  activations.logits = { width: c.vocab_size };
  const headLast = headOps("last"), headAll = headOps("all");
  if (fuse.norm !== false && (fuseNorms(body) + fuseNorms(headLast) + fuseNorms(headAll)) > 0) fused.push("norm");
  return { config: c, activations, body, headLast, headAll, fused };
}

/**
 * The sliding window of layer i's attention (keys p-W+1..p for the query at p), or null for full attention.
 * @param {NormalizedConfig} c @param {number} i
 */
export function layerWindow(c, i) {
  return c.layer_types?.[i] === "sliding" && c.sliding_window ? c.sliding_window : null;
}

/**
 * The KV cache's rows per layer (issue 12, item 3). A layer with full attention keeps every position
 * of the context; a sliding-window layer (attention `window` W: the query at p sees keys p-W+1..p,
 * model.py's `key_pos > positions - window`) keeps only the keys a pass can still read: a pass of at
 * most `prefillChunk` tokens writes its m keys before its first query reads back to W-1 keys behind
 * it, so W + chunk - 1 rows hold every visible key, used as a ring (position p at row p mod rows).
 * `rewind`: how far behind the furthest position written a pass may start and still find the keys it
 * sees (rows - W + 1 for the smallest ring; Infinity without one); an engine that goes back further
 * (a reused prefix, a recomputed step) feeds the prefix again.
 * `bytes`: the whole cache, K and V of every layer at f32.
 * @param {NormalizedConfig} c @param {number} contextLength @param {number} prefillChunk
 * @returns {{ rows: number[], rewind: number, bytes: number }}
 */
export function kvCacheLayout(c, contextLength, prefillChunk) {
  const chunk = Math.max(1, Math.min(prefillChunk, contextLength));
  /** @type {number[]} */
  const rows = [];
  let rewind = Infinity;
  for (let i = 0; i < c.num_layers; i++) {
    const w = layerWindow(c, i);
    const r = w ? Math.min(contextLength, w + chunk - 1) : contextLength;
    rows.push(r);
    if (w && r < contextLength) rewind = Math.min(rewind, r - w + 1);
  }
  return { rows, rewind, bytes: 2 * rows.reduce((a, r) => a + r, 0) * c.num_kv_heads * c.head_dim * 4 };
}

/**
 * The activations op reads: its inputs, its output where it accumulates into it, and a fused norm's
 * raw input (`prenorm.x`, which a reader that normalises its input itself reads).
 * @param {GraphOp} op @returns {string[]}
 */
export function opReads(op) {
  const o = /** @type {any} */ (op);
  const reads = op.op === "rope" ? [o.q, o.k, o.v] : [o.x, o.q, ...(o.accumulate || op.op === "pos_embed" ? [o.out] : [])];
  return [...reads, ...(o.prenorm ? [o.prenorm.x] : [])].filter(Boolean);
}

/**
 * The activations op writes (RoPE: its rotated q; the caches are not activations).
 * @param {GraphOp} op @returns {string[]}
 */
export function opWrites(op) {
  const o = /** @type {any} */ (op);
  return [o.out, ...(op.op === "rope" ? [o.qOut] : [])].filter(Boolean);
}

/**
 * The "norm" fusion: an RMSNorm whose output is read only by linear products (until it is
 * overwritten), while its input stays unchanged, may be computed by those products themselves
 * from its input. Each such reader gets `prenorm: {id, x, weight, rows}` (its input is
 * norm(prenorm.x) with that weight, row mode `rows`, and the config's norm_eps) and the norm gets
 * `fusedId` = id: a backend that fuses skips the norm when every reader took the fusion in that step;
 * one that does not ignores both. Returns how many norms were marked.
 * @param {GraphOp[]} ops
 */
function fuseNorms(ops) {
  /** @type {Map<string, { norm: Extract<GraphOp, { op: "norm" }>, readers: any[], ok: boolean, rawChanged: boolean }>} */
  const pending = new Map();
  let marked = 0;
  const finish = (/** @type {string} */ a) => {
    const p = pending.get(a);
    pending.delete(a);
    if (!p || !p.ok || p.readers.length === 0) return;
    const id = ++fuseNorms.ids;
    /** @type {any} */ (p.norm).fusedId = id;
    for (const r of p.readers) r.prenorm = { id, x: p.norm.x, weight: p.norm.weight, rows: p.norm.rows };
    marked++;
  };
  for (const op of ops) {
    const o = /** @type {any} */ (op);
    const linear = op.op === "linear" || op.op === "linear_group";
    for (const a of opReads(op)) {
      const p = pending.get(a);
      if (!p) continue;
      if (linear && !p.rawChanged && o.x === a) p.readers.push(op);
      else p.ok = false;
    }
    const writes = opWrites(op);
    for (const p of pending.values()) if (writes.includes(p.norm.x)) p.rawChanged = true;
    for (const a of writes) if (pending.has(a)) finish(a);
    if (op.op === "norm" && op.kind === "rms" && !op.bias && op.heads === 1 && !op.perHeadWeight && !op.accumulate
      && op.x !== op.out) {
      pending.set(op.out, { norm: op, readers: [], ok: true, rawChanged: false });
    }
  }
  for (const a of [...pending.keys()]) finish(a);
  return marked;
}
fuseNorms.ids = 0;
