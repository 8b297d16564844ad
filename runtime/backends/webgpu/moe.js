// The WebGPU lowering of the graph's `moe` op (runtime/graph.js; issue 12): a sparse
// mixture-of-experts MLP in four dispatches per layer and step, none of which goes back to the host:
//
//   router   x · routerᵀ → logits [tokens, experts]      (the ordinary linear kernels; the router is f32)
//   route    softmax, top-k, weights → sel [tokens, 2k]   (kernels.moeRoute, shaders/moe.wgsl)
//   up       act(gate[e] · x) * (up[e] · x) → hid [tokens, k, inter], for the chosen e only
//   down     out (+)= Σ_j w_j · down[e_j] · hid[t, j]
//
// Expert tensors are [experts, rows, cols]; the upload plan (upload.js) sees them as matrices of
// `experts` rows of rows·cols weights, so a part split for the binding limit holds whole experts.
// Here each part is viewed as the [experts·rows, cols] matrix it also is (same bytes: quantization
// groups run along the last dim), and gets its own up/down dispatch over its experts.
// A decode step therefore reads top_k of the experts' rows, plus the small router.

import { SitegenRuntimeError } from "../../errors.js";

/**
 * @typedef {import("./kernels.js").Kernels} Kernels
 * @typedef {import("./kernels.js").KernelOp} KernelOp
 * @typedef {import("./kernels.js").BufferRef} BufferRef
 * @typedef {import("./kernels.js").WeightPart} WeightPart
 * @typedef {WeightPart & { rowStart: number }} Part
 * @typedef {Extract<import("../../graph.js").GraphOp, { op: "moe" }>} MoeOp
 */

/**
 * @param {MoeOp} op
 * @param {{ kernels: Kernels, hidden: number, chunk: number, out: BufferRef, x: BufferRef,
 *   parts: (name: string) => Part[], buffer: (label: string, bytes: number) => GPUBuffer,
 *   linear: (o: { out: BufferRef, x: BufferRef, w: string }) => KernelOp[], scratch: Map<string, GPUBuffer> }} ctx
 *   chunk: the most tokens of one step; scratch: buffers shared by every MoE layer (one op runs at a time)
 * @returns {KernelOp[]}
 */
export function lowerMoe(op, { kernels: k, hidden, chunk, out, x, parts, buffer, linear, scratch }) {
  const E = op.experts, K = op.topK, I = op.inter;
  /** @param {string} label @param {number} bytes */
  const shared = (label, bytes) => {
    let b = scratch.get(label);
    if (!b || b.size < bytes) {
      b = buffer(`moe ${label}`, bytes);
      scratch.set(label, b);
    }
    return b;
  };
  // (each MoE layer of a model has the same shape, so the first layer's buffers fit the others)
  const logits = shared("router logits", chunk * E * 4);
  const sel = shared("selection", chunk * 2 * K * 4);
  const hid = shared("expert activations", chunk * K * I * 4);

  /**
   * An expert tensor's parts as [experts_in_part · rows, cols] matrices.
   * @param {string} name @param {number} rows @param {number} cols
   */
  const experts = (name, rows, cols) => parts(name).map((p) => {
    if (p.cols !== rows * cols || (p.rowOffset ?? 0) !== 0) {
      throw new SitegenRuntimeError(`Tensor '${name}' is not [${E}, ${rows}, ${cols}] experts: reconvert the model.`,
        { tensor: name });
    }
    return { part: { ...p, rows: p.rows * rows, cols }, e0: p.rowStart, ne: p.rows };
  });
  const gate = experts(op.gate, I, hidden), up = experts(op.up, I, hidden), down = experts(op.down, hidden, I);
  if (gate.length !== up.length || gate.some((g, i) => g.e0 !== up[i].e0 || g.ne !== up[i].ne)) {
    throw new SitegenRuntimeError(`Tensors '${op.gate}' and '${op.up}' are split differently: reconvert the model.`);
  }
  return [
    ...linear({ out: logits, x, w: op.router }),                                   // router_logits = x · routerᵀ
    k.moeRoute({ sel, logits, experts: E, topK: K, norm: op.normTopK }),           // top-k of softmax(router_logits)
    ...gate.map((g, i) => k.moeUp({ hid, x, sel, gate: g.part, up: up[i].part, expertStart: g.e0, experts: g.ne,
      inter: I, topK: K, act: op.act })),                                          // act(gate_e(x)) * up_e(x)
    ...down.map((d, i) => k.moeDown({ out, hid, sel, down: d.part, expertStart: d.e0, experts: d.ne, hidden,
      topK: K, accumulate: op.accumulate || i > 0 })),                             // out (+)= Σ w_j down_e(h_j)
  ];
}
