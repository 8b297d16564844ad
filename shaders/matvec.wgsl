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
// Bindings (generated): x [tokens, K] f32 (vec4 when VEC), w / gate weight
// words (vec4<u32> when VEC), bias, gate_bias, norm_w (vec4 f32), out.

const RPW: u32 = WG / TPR;  // row slots per workgroup; each slot computes NR rows

// NR1 = NR + 1 when PRENORM (the last slot reduces Σx²), else NR.
const NR1: u32 = NR + select(0u, 1u, PRENORM);
var<workgroup> red_w: array<f32, WG * NR1>;
#if GATED
var<workgroup> red_g: array<f32, WG * NR>;
#endif

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

// Rows r0 .. r0 + NR - 1 (clamped to the last row) against input row m_in: each
// lane strides over the 32-wide groups; a group's x is loaded once for the NR rows
// of W and (GATED) of its gate.
// Slot NR of w holds the lane's Σx² (PRENORM): a row's lanes together see all of x once,
// so the norm's sum of squares is reduced with the products, at no extra load.
struct Dots { w: array<f32, NR1>, g: array<f32, NR> }

fn rows_dot(r0: u32, m_in: u32, lane: u32) -> Dots {
  let groups = P.w_k / 32u;
  let xrow = m_in * (P.w_k / 4u);
  var acc: Dots;
  for (var g = lane; g < groups; g += TPR) {
    var xv: array<vec4<f32>, 8>;
    for (var i = 0u; i < 8u; i++) {
      xv[i] = x[xrow + 8u * g + i];
#if PRENORM
      acc.w[NR] += dot(xv[i], xv[i]);
      xv[i] *= norm_w[8u * g + i];  // RMSNorm's weight; its 1/rms is applied to the sums
#endif
    }
    for (var i = 0u; i < NR; i++) {
      // The weight's rows: a member of a tensor group starts at row w_r0 / gate_r0 of its buffer.
      let r = min(r0 + i, P.n - 1u);
      acc.w[i] += scaled_dot(false, r + P.w_r0, g, xv);
#if GATED
      acc.g[i] += scaled_dot(true, r + P.gate_r0, g, xv);
#endif
    }
  }
  return acc;
}
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

struct Dots { w: array<f32, NR1>, g: array<f32, NR> }

fn rows_dot(r0: u32, m_in: u32, lane: u32) -> Dots {
  let K = P.w_k;
  var acc: Dots;
  for (var i = 0u; i < NR; i++) {
    let r = min(r0 + i, P.n - 1u);
    for (var c = lane; c < K; c += TPR) {
      let xc = x[m_in * K + c];
      acc.w[i] += welem(false, r + P.w_r0, c) * xc;
#if GATED
      acc.g[i] += welem(true, r + P.gate_r0, c) * xc;
#endif
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
  let dots = rows_dot(r0, m_in, lane);
  let aw = dots.w;
#if GATED
  let ag = dots.g;
#endif

#if SUBGROUPS
  // Each subgroup sums its lanes; a row's TPR lanes are TPR / sgs whole
  // subgroups when sgs <= TPR, else lanes are summed from shared memory.
  let fold = sgs <= TPR;
  for (var i = 0u; i < NR1; i++) {
    let sw = subgroupAdd(aw[i]);
#if GATED
    var sg_ = 0.0;
    if (i < NR) { sg_ = subgroupAdd(ag[i]); }
#endif
    if (fold) {
      if (sgl == 0u) {
        red_w[i * WG + lid / sgs] = sw;
#if GATED
        if (i < NR) { red_g[i * WG + lid / sgs] = sg_; }
#endif
      }
    } else {
      red_w[i * WG + lid] = aw[i];
#if GATED
      if (i < NR) { red_g[i * WG + lid] = ag[i]; }
#endif
    }
  }
  workgroupBarrier();
  if (lane == 0u) {
    let cnt = select(TPR, TPR / sgs, fold);
    let base = select(lid, lid / sgs, fold);
#if PRENORM
    var ss = 0.0;
    for (var c = 0u; c < cnt; c++) { ss += red_w[NR * WG + base + c]; }
    let inv = inverseSqrt(ss / f32(P.w_k) + P.norm_eps);  // RMSNorm's 1 / rms of the input row
#else
    let inv = 1.0;
#endif
    for (var i = 0u; i < NR; i++) {
      var tw = 0.0;
      var tg = 0.0;
      for (var c = 0u; c < cnt; c++) {
        tw += red_w[i * WG + base + c];
#if GATED
        tg += red_g[i * WG + base + c];
#endif
      }
      if (r0 + i < P.n) { linear_store(m, r0 + i, tw * inv, tg * inv); }
    }
  }
#else
  for (var i = 0u; i < NR1; i++) {
    red_w[i * WG + lid] = aw[i];
#if GATED
    if (i < NR) { red_g[i * WG + lid] = ag[i]; }
#endif
  }
  workgroupBarrier();
  for (var s = TPR / 2u; s > 0u; s >>= 1u) {
    if (lane < s) {
      for (var i = 0u; i < NR1; i++) {
        red_w[i * WG + lid] += red_w[i * WG + lid + s];
#if GATED
        if (i < NR) { red_g[i * WG + lid] += red_g[i * WG + lid + s]; }
#endif
      }
    }
    workgroupBarrier();
  }
  if (lane == 0u) {
#if PRENORM
    let inv = inverseSqrt(red_w[NR * WG + lid] / f32(P.w_k) + P.norm_eps);  // RMSNorm's 1 / rms
#else
    let inv = 1.0;
#endif
    for (var i = 0u; i < NR; i++) {
#if GATED
      let tg = red_g[i * WG + lid];
#else
      let tg = 0.0;
#endif
      if (r0 + i < P.n) { linear_store(m, r0 + i, red_w[i * WG + lid] * inv, tg * inv); }
    }
  }
#endif
}
