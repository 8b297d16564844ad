// matvec: out[m, j] = x[m, :] · W[j, :] for few tokens (decode). Bandwidth
// bound, so each row of W is read once per token by TPR invocations that
// stride over it (a 32-wide quantization group per step, as vec4<u32> loads,
// when K % 32 == 0); each invocation computes NR rows, so a group's x is loaded
// once for the NR rows (and, GATED, their gate rows: one pass over x for both)
// and NR (2 NR) weight loads are in flight; WG / TPR * NR rows share a
// workgroup. The TPR partial sums of a row meet through subgroupAdd (if
// available) and shared memory. With PRENORM (VEC only) the input is
// RMSNorm(x) computed here: x ⊙ norm_w in the sums, 1/rms applied to them.
// Grid: (row blocks split over x/y, tokens).
//
// XQ (q4/q8 weights): integer dot products. Decoding a code to a float and one f32 FMA per weight
// held the f32 path ALU-bound at 15-40 % of the H200's bandwidth (bench/matvec_lab.mjs); with
// dot4I8Packed four codes meet four int8 inputs in one instruction. The input row comes from
// quant_main below (one dispatch before the matvec, which also applies the RMSNorm weight):
// per 32-group, x ≈ d · (h + l / 256) with h = round(x / d), d = max|x| / 127, and l the
// rounded remainder in 1/256 steps, both int8, so the input keeps ~16 bits relative to its group's
// largest value (error <= d / 256): the products stay within the f32 path's tolerance (kernel tests).
// QOUT: a product whose only reader is an XQ matvec (a gate/up feeding its down projection) writes
// its output rows already quantized for it (quant_group, in the epilogue: a workgroup's rows are
// whole 32-groups) instead of as f32, which saves that product's quantize dispatch.
//
// Bindings (generated): x [tokens, K] f32 (vec4 when VEC), w / gate weight
// words (vec4<u32> when VEC), bias, gate_bias, norm_w (vec4 f32), out (QOUT: the reader's xq,
// vec4<u32>), xq (XQ: quant_main's output; one binding, as a stage has 8 storage buffers by default).

#if IS_MATVEC
const RPW: u32 = WG / TPR;  // row slots per workgroup; each slot computes NR rows
#if QOUT
var<workgroup> qo_v: array<f32, RPW * NR>;  // the workgroup's output rows, for their quantization
#endif

// An invocation's sums: its rows 0..3 in w0 (4..7 in w1), the gate's in g0/g1, Σx² (PRENORM) in
// ss. Vector components, not an array: where the compiler keeps a row loop rolled, a dynamic
// index into a vector still addresses registers (an array's would spill to local memory).
struct Dots { w0: vec4<f32>, w1: vec4<f32>, g0: vec4<f32>, g1: vec4<f32>, ss: f32 }

fn put(d: ptr<function, Dots>, i: u32, vw: f32, vg: f32) {
  if (i < 4u) {
    (*d).w0[i] += vw;
#if GATED
    (*d).g0[i] += vg;
#endif
  } else {
    (*d).w1[i - 4u] += vw;
#if GATED
    (*d).g1[i - 4u] += vg;
#endif
  }
}

#if SUBGROUPS
// Where a row's lanes span several subgroups their sums meet here: one entry per subgroup (WebGPU's
// subgroups have at least 4 invocations), so 16 KB of workgroup memory, WebGPU's default, suffice.
const PARTIALS: u32 = WG / 4u;
var<workgroup> red_w0: array<vec4<f32>, PARTIALS>;
#if NR8
var<workgroup> red_w1: array<vec4<f32>, PARTIALS>;
#endif
#if GATED
var<workgroup> red_g0: array<vec4<f32>, PARTIALS>;
#if NR8
var<workgroup> red_g1: array<vec4<f32>, PARTIALS>;
#endif
#endif
#if PRENORM
var<workgroup> red_ss: array<f32, PARTIALS>;
#endif

fn red_put(i: u32, d: Dots) {
  red_w0[i] = d.w0;
#if NR8
  red_w1[i] = d.w1;
#endif
#if GATED
  red_g0[i] = d.g0;
#if NR8
  red_g1[i] = d.g1;
#endif
#endif
#if PRENORM
  red_ss[i] = d.ss;
#endif
}

fn red_get(i: u32) -> Dots {
  var d: Dots;
  d.w0 = red_w0[i];
#if NR8
  d.w1 = red_w1[i];
#endif
#if GATED
  d.g0 = red_g0[i];
#if NR8
  d.g1 = red_g1[i];
#endif
#endif
#if PRENORM
  d.ss = red_ss[i];
#endif
  return d;
}
#else
// Without subgroups the TPR lanes of a row meet in a tree over shared memory, one field of Dots at
// a time (one array of WG vectors: 4 KB).
var<workgroup> red_v: array<vec4<f32>, WG>;

fn field(d: Dots, f: u32) -> vec4<f32> {
  switch f {
    case 0u: { return d.w0; }
    case 1u: { return d.w1; }
    case 2u: { return d.g0; }
    case 3u: { return d.g1; }
    default: { return vec4<f32>(d.ss, 0.0, 0.0, 0.0); }
  }
}

fn set_field(d: ptr<function, Dots>, f: u32, v: vec4<f32>) {
  switch f {
    case 0u: { (*d).w0 = v; }
    case 1u: { (*d).w1 = v; }
    case 2u: { (*d).g0 = v; }
    case 3u: { (*d).g1 = v; }
    default: { (*d).ss = v.x; }
  }
}

// Whether field f holds anything in this variant.
fn field_used(f: u32) -> bool {
  switch f {
    case 0u: { return true; }
    case 1u: { return NR8; }
    case 2u: { return GATED; }
    case 3u: { return GATED && NR8; }
    default: { return PRENORM; }
  }
}
#endif

fn dots_add(a: Dots, b: Dots) -> Dots {
  return Dots(a.w0 + b.w0, a.w1 + b.w1, a.g0 + b.g0, a.g1 + b.g1, a.ss + b.ss);
}

#if VEC
fn wv(gate_sel: bool, i: u32) -> vec4<u32> {
  if (gate_sel) { return gate[i]; }
  return w[i];
}

// One 32-wide group g of row r against the group's x (xv), unscaled (the
// caller multiplies by the group's scale), computed in ct.
fn group_dot(gate_sel: bool, r: u32, g: u32, xv: array<vec4<f32>, 8>) -> f32 {
  let K = P.w_k;
  var s = ct(0.0);
#if W_Q4
  // 32 codes = 4 words = one vec4<u32>
  let q = wv(gate_sel, r * (K / 32u) + g);
  for (var i = 0u; i < 4u; i++) {
    s += dot(ct4(q4_lo(q[i])), ct4(xv[2u * i])) + dot(ct4(q4_hi(q[i])), ct4(xv[2u * i + 1u]));
  }
#elif W_Q8
  for (var h = 0u; h < 2u; h++) {
    let q = wv(gate_sel, r * (K / 16u) + 2u * g + h);
    for (var i = 0u; i < 4u; i++) {
      s += dot(ct4(q8_4(q[i])), ct4(xv[4u * h + i]));
    }
  }
#elif W_F16
  for (var h = 0u; h < 4u; h++) {
    let q = wv(gate_sel, r * (K / 8u) + 4u * g + h);
    s += dot(ct4(vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y))), ct4(xv[2u * h]));
    s += dot(ct4(vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w))), ct4(xv[2u * h + 1u]));
  }
#else
  for (var h = 0u; h < 8u; h++) {
    let q = wv(gate_sel, r * (K / 4u) + 8u * g + h);
    s += dot(ct4(bitcast<vec4<f32>>(q)), ct4(xv[h]));
  }
#endif
  return f32(s);
}

// The f16 scale of group g of row r (q4/q8), from the scales plane at word P.w_so.
fn group_scale(gate_sel: bool, r: u32, g: u32) -> f32 {
  let hi = 2u * select(P.w_so, P.gate_so, gate_sel) + r * (P.w_k / 32u) + g;  // index of the f16 scale
  let v = wv(gate_sel, hi / 8u);
  return half_of(v[(hi / 2u) % 4u], hi);
}

// group_dot times the group's scale (q4/q8).
fn scaled_dot(gate_sel: bool, r: u32, g: u32, xv: array<vec4<f32>, 8>) -> f32 {
#if W_QUANT
  return group_dot(gate_sel, r, g, xv) * group_scale(gate_sel, r, g);
#else
  return group_dot(gate_sel, r, g, xv);
#endif
}

#if XQ
// One group of row r against the quantized input's group (e/o: the int8 words of its codes'
// order, hi then lo level; a: (d / 256, 8 d Σ(h + l/256) for q4's offset of 8, Σx², 0)), scaled.
fn int_dot(gate_sel: bool, r: u32, g: u32, eh: vec4<u32>, oh: vec4<u32>, el: vec4<u32>, ol: vec4<u32>, a: vec4<f32>) -> f32 {
  var sh = 0i;
  var sl = 0i;
#if W_Q4
  // codes 0..15 (the stored code, offset 8 applied through a.y): the low nibbles of a word are
  // its codes 0, 2, 4, 6 and the high ones 1, 3, 5, 7; quant_main packed x in that order
  let q = wv(gate_sel, r * (P.w_k / 32u) + g);
  for (var i = 0u; i < 4u; i++) {
    let lo = q[i] & 0x0F0F0F0Fu;
    let hi = (q[i] >> 4u) & 0x0F0F0F0Fu;
    sh += dot4I8Packed(lo, eh[i]) + dot4I8Packed(hi, oh[i]);
    sl += dot4I8Packed(lo, el[i]) + dot4I8Packed(hi, ol[i]);
  }
#else
  // q8: signed codes in order, four to a word
  let q0 = wv(gate_sel, r * (P.w_k / 16u) + 2u * g);
  let q1 = wv(gate_sel, r * (P.w_k / 16u) + 2u * g + 1u);
  for (var i = 0u; i < 4u; i++) {
    sh += dot4I8Packed(q0[i], eh[i]) + dot4I8Packed(q1[i], oh[i]);
    sl += dot4I8Packed(q0[i], el[i]) + dot4I8Packed(q1[i], ol[i]);
  }
#endif
  // |256 sh + sl| < 2^24 for q4 (exact in f32); q8's may round in the 24th bit
  return (f32(sh * 256i + sl) * a.x - a.y) * group_scale(gate_sel, r, g);
}

// As the f32 rows_dot below, over quant_main's row m (the output row: it quantized in_row(m)).
fn rows_dot(r0: u32, m: u32, lane: u32) -> Dots {
  let groups = P.w_k / 32u;
  let base = m * groups;
  var acc: Dots;
  for (var g = lane; g < groups; g += TPR) {
    let at = 5u * (base + g);
    let eh = xq[at];
    let oh = xq[at + 1u];
    let el = xq[at + 2u];
    let ol = xq[at + 3u];
    let a = bitcast<vec4<f32>>(xq[at + 4u]);
#if PRENORM
    acc.ss += a.z;
#endif
    for (var i = 0u; i < NR; i++) {
      let r = min(r0 + i, P.n - 1u);
      var vg = 0.0;
#if GATED
      vg = int_dot(true, r + P.gate_r0, g, eh, oh, el, ol, a);
#endif
      put(&acc, i, int_dot(false, r + P.w_r0, g, eh, oh, el, ol, a), vg);
    }
  }
  return acc;
}
#else
// Rows r0 .. r0 + NR - 1 (clamped to the last row) against input row m_in: each
// lane strides over the 32-wide groups; a group's x is loaded once for the NR rows
// of W and (GATED) of its gate.
// ss holds the lane's Σx² (PRENORM): a row's lanes together see all of x once,
// so the norm's sum of squares is reduced with the products, at no extra load.
fn rows_dot(r0: u32, m_in: u32, lane: u32) -> Dots {
  let groups = P.w_k / 32u;
  let xrow = m_in * (P.w_k / 4u);
  var acc: Dots;
  for (var g = lane; g < groups; g += TPR) {
    var xv: array<vec4<f32>, 8>;
    for (var i = 0u; i < 8u; i++) {
      xv[i] = x[xrow + 8u * g + i];
#if PRENORM
      acc.ss += dot(xv[i], xv[i]);
      xv[i] *= norm_w[8u * g + i];  // RMSNorm's weight; its 1/rms is applied to the sums
#endif
    }
    for (var i = 0u; i < NR; i++) {
      // The weight's rows: a member of a tensor group starts at row w_r0 / gate_r0 of its buffer.
      let r = min(r0 + i, P.n - 1u);
      var vg = 0.0;
#if GATED
      vg = scaled_dot(true, r + P.gate_r0, g, xv);
#endif
      put(&acc, i, scaled_dot(false, r + P.w_r0, g, xv), vg);
    }
  }
  return acc;
}
#endif
#else
// Element-wise path (f16/f32 weights whose K is not a multiple of 32).
fn welem(gate_sel: bool, r: u32, c: u32) -> f32 {
  let e = r * P.w_k + c;
#if W_F16
  var word: u32;
  if (gate_sel) { word = gate[e / 2u]; } else { word = w[e / 2u]; }
  return half_of(word, e);
#else
  if (gate_sel) { return bitcast<f32>(gate[e]); }
  return bitcast<f32>(w[e]);
#endif
}

fn rows_dot(r0: u32, m_in: u32, lane: u32) -> Dots {
  let K = P.w_k;
  var acc: Dots;
  for (var i = 0u; i < NR; i++) {
    let r = min(r0 + i, P.n - 1u);
    for (var c = lane; c < K; c += TPR) {
      let xc = x[m_in * K + c];
      var vg = 0.0;
#if GATED
      vg = welem(true, r + P.gate_r0, c) * xc;
#endif
      put(&acc, i, welem(false, r + P.w_r0, c) * xc, vg);
    }
  }
  return acc;
}
#endif

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>
#if SUBGROUPS
        , @builtin(subgroup_size) sgs: u32, @builtin(subgroup_invocation_id) sgl: u32
#endif
        ) {
#if !SUBGROUPS
  let sgs = 0u;
  let sgl = 0u;
#endif
  let m = wid.z;
  let slot = lid / TPR;
  let lane = lid % TPR;
  let r0 = (wg_index(wid, nwg) * RPW + slot) * NR;
  let m_in = in_row(m);
  // Rows past N still take part in the barriers, on a valid row (rows_dot clamps).
#if XQ
  let dots = rows_dot(r0, m, lane);
#else
  let dots = rows_dot(r0, m_in, lane);
#endif
  var d = dots;

#if SUBGROUPS
  if (TPR <= sgs) {
    // A row's lanes lie in one subgroup: reduced there, no barrier.
    if (TPR == sgs) {
      d.w0 = subgroupAdd(d.w0);
#if NR8
      d.w1 = subgroupAdd(d.w1);
#endif
#if GATED
      d.g0 = subgroupAdd(d.g0);
#if NR8
      d.g1 = subgroupAdd(d.g1);
#endif
#endif
#if PRENORM
      d.ss = subgroupAdd(d.ss);
#endif
    } else {
      for (var o = TPR / 2u; o > 0u; o >>= 1u) {
        d.w0 += subgroupShuffleXor(d.w0, o);
#if NR8
        d.w1 += subgroupShuffleXor(d.w1, o);
#endif
#if GATED
        d.g0 += subgroupShuffleXor(d.g0, o);
#if NR8
        d.g1 += subgroupShuffleXor(d.g1, o);
#endif
#endif
#if PRENORM
        d.ss += subgroupShuffleXor(d.ss, o);
#endif
      }
    }
  } else {
    // TPR / sgs whole subgroups per row: each sums its lanes, the sums meet in shared memory.
    var t: Dots;
    t.w0 = subgroupAdd(d.w0);
#if NR8
    t.w1 = subgroupAdd(d.w1);
#endif
#if GATED
    t.g0 = subgroupAdd(d.g0);
#if NR8
    t.g1 = subgroupAdd(d.g1);
#endif
#endif
#if PRENORM
    t.ss = subgroupAdd(d.ss);
#endif
    if (sgl == 0u) { red_put(lid / sgs, t); }
    workgroupBarrier();
    if (lane == 0u) {
      d = red_get(lid / sgs);
      for (var c = 1u; c < TPR / sgs; c++) { d = dots_add(d, red_get(lid / sgs + c)); }
    }
  }
#else
  for (var f = 0u; f < 5u; f++) {
    if (!field_used(f)) { continue; }
    red_v[lid] = field(d, f);
    workgroupBarrier();
    for (var s = TPR / 2u; s > 0u; s >>= 1u) {
      if (lane < s) { red_v[lid] += red_v[lid + s]; }
      workgroupBarrier();
    }
    if (lane == 0u) { set_field(&d, f, red_v[lid]); }
    workgroupBarrier();  // before the next field overwrites red_v
  }
#endif
  if (lane == 0u) {
#if PRENORM
    let inv = inverseSqrt(d.ss / f32(P.w_k) + P.norm_eps);  // RMSNorm's 1 / rms of the input row
#else
    let inv = 1.0;
#endif
    for (var i = 0u; i < NR; i++) {
      var tw = d.w1[i % 4u];
      var tg = d.g1[i % 4u];
      if (i < 4u) { tw = d.w0[i]; tg = d.g0[i]; }
#if QOUT
      qo_v[slot * NR + i] = linear_value(r0 + i, tw * inv, tg * inv);
#else
      if (r0 + i < P.n) { linear_store(m, r0 + i, tw * inv, tg * inv); }
#endif
    }
  }
#if QOUT
  // The workgroup's RPW * NR rows are whole 32-groups of the next product's input (kernels.js
  // checks that, N % 32 == 0 and out_offset % 32 == 0): an invocation quantizes each, as
  // quant_main would, into row m of that product's xq (bound as out).
  workgroupBarrier();
  let first = wg_index(wid, nwg) * RPW * NR;
  if (lid < RPW * NR / 32u && first + 32u * lid < P.n) {
    var v: array<vec4<f32>, 8>;
    for (var i = 0u; i < 8u; i++) {
      let b = 32u * lid + 4u * i;
      v[i] = vec4<f32>(qo_v[b], qo_v[b + 1u], qo_v[b + 2u], qo_v[b + 3u]);
    }
    let q = quant_group(v, 0.0, QOUT_Q4);
    let at = 5u * (m * P.qout_groups + (P.out_offset + first) / 32u + lid);
    for (var c = 0u; c < 5u; c++) { out[at + c] = q[c]; }
  }
#endif
}
#endif


#if IS_XQUANT
// The matvec's XQ input: one invocation per 32-group of each output row m (grid: tokens x groups),
// quantizing x[in_row(m)] (⊙ norm_w with PRENORM; Σx² kept for the matvec's 1/rms): per group five
// vec4<u32> in xq (quant_group).
@compute @workgroup_size(WG)
fn quant_main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let groups = P.k / 32u;
  let t = gid.x + gid.y * nwg.x * WG;
  if (t >= rows_count() * groups) { return; }
  let m = t / groups;
  let g = t % groups;
  let xrow = in_row(m) * (P.k / 4u);
  var v: array<vec4<f32>, 8>;
  var ss = 0.0;
  for (var i = 0u; i < 8u; i++) {
    v[i] = x[xrow + 8u * g + i];
#if PRENORM
    ss += dot(v[i], v[i]);
    v[i] *= norm_w[8u * g + i];
#endif
  }
  let q = quant_group(v, ss, W_Q4);
  for (var c = 0u; c < 5u; c++) { xq[5u * t + c] = q[c]; }
}
#endif
