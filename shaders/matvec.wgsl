// matvec: out[m, j] = x[m, :] · W[j, :] for few tokens (decode). Bandwidth
// bound, so each row of W is read once per token by TPR invocations that
// stride over it (a 32-wide quantization group per step, as vec4<u32> loads,
// when K % 32 == 0), and WG / TPR rows share a workgroup. The TPR partial
// sums of a row meet through subgroupAdd (if available) and shared memory.
// Grid: (row blocks split over x/y, tokens).
//
// Bindings (generated): x [tokens, K] f32 (vec4 when VEC), w / gate weight
// words (vec4<u32> when VEC), bias, gate_bias, out.

const RPW: u32 = WG / TPR;  // rows per workgroup

var<workgroup> red_w: array<f32, WG>;
#if GATED
var<workgroup> red_g: array<f32, WG>;
#endif

#if VEC
// One 32-wide group g of row r: sum_{c in group} W[r, c] * x[c], unscaled
// (the caller multiplies by the group's scale) and computed in ct.
fn wv(gate_sel: bool, i: u32) -> vec4<u32> {
  if (gate_sel) { return gate[i]; }
  return w[i];
}

fn group_dot(gate_sel: bool, r: u32, g: u32, xb: u32) -> f32 {
  let K = P.w_k;
  var s = ct(0.0);
#if W_Q4
  // 32 codes = 4 words = one vec4<u32>
  let q = wv(gate_sel, r * (K / 32u) + g);
  for (var i = 0u; i < 4u; i++) {
    s += dot(ct4(q4_lo(q[i])), ct4(x[xb + 2u * i])) + dot(ct4(q4_hi(q[i])), ct4(x[xb + 2u * i + 1u]));
  }
#elif W_Q8
  for (var h = 0u; h < 2u; h++) {
    let q = wv(gate_sel, r * (K / 16u) + 2u * g + h);
    for (var i = 0u; i < 4u; i++) {
      s += dot(ct4(q8_4(q[i])), ct4(x[xb + 4u * h + i]));
    }
  }
#elif W_F16
  for (var h = 0u; h < 4u; h++) {
    let q = wv(gate_sel, r * (K / 8u) + 4u * g + h);
    s += dot(ct4(vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y))), ct4(x[xb + 2u * h]));
    s += dot(ct4(vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w))), ct4(x[xb + 2u * h + 1u]));
  }
#else
  for (var h = 0u; h < 8u; h++) {
    let q = wv(gate_sel, r * (K / 4u) + 8u * g + h);
    s += dot(ct4(bitcast<vec4<f32>>(q)), ct4(x[xb + h]));
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

fn row_dot(gate_sel: bool, r_out: u32, m_in: u32, lane: u32) -> f32 {
  // The weight's row: a member of a tensor group starts at row w_r0 / gate_r0 of its buffer.
  let r = r_out + select(P.w_r0, P.gate_r0, gate_sel);
  let groups = P.w_k / 32u;
  let xrow = m_in * (P.w_k / 4u);
  var acc = 0.0;
  for (var g = lane; g < groups; g += TPR) {
    let d = group_dot(gate_sel, r, g, xrow + 8u * g);
#if W_Q4
    acc += d * group_scale(gate_sel, r, g);
#elif W_Q8
    acc += d * group_scale(gate_sel, r, g);
#else
    acc += d;
#endif
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

fn row_dot(gate_sel: bool, r_out: u32, m_in: u32, lane: u32) -> f32 {
  let r = r_out + select(P.w_r0, P.gate_r0, gate_sel);
  let K = P.w_k;
  var acc = 0.0;
  for (var c = lane; c < K; c += TPR) {
    acc += welem(gate_sel, r, c) * x[m_in * K + c];
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
  let m = wid.z;
  let slot = lid / TPR;
  let lane = lid % TPR;
  let j = wg_index(wid, nwg) * RPW + slot;
  // Rows past N still take part in the barriers, on a valid row.
  let r = min(j, P.n - 1u);
  let m_in = in_row(m);
  let aw = row_dot(false, r, m_in, lane);
#if GATED
  let ag = row_dot(true, r, m_in, lane);
#endif

#if SUBGROUPS
  // Each subgroup sums its lanes; a row's TPR lanes are TPR / sgs whole
  // subgroups when sgs <= TPR, else lanes are summed from shared memory.
  let sw = subgroupAdd(aw);
#if GATED
  let sg_ = subgroupAdd(ag);
#endif
  let fold = sgs <= TPR;
  if (fold) {
    if (sgl == 0u) {
      red_w[lid / sgs] = sw;
#if GATED
      red_g[lid / sgs] = sg_;
#endif
    }
  } else {
    red_w[lid] = aw;
#if GATED
    red_g[lid] = ag;
#endif
  }
  workgroupBarrier();
  if (lane == 0u && j < P.n) {
    let cnt = select(TPR, TPR / sgs, fold);
    let base = select(lid, lid / sgs, fold);
    var tw = 0.0;
    var tg = 0.0;
    for (var i = 0u; i < cnt; i++) {
      tw += red_w[base + i];
#if GATED
      tg += red_g[base + i];
#endif
    }
    linear_store(m, j, tw, tg);
  }
#else
  red_w[lid] = aw;
#if GATED
  red_g[lid] = ag;
#endif
  workgroupBarrier();
  for (var s = TPR / 2u; s > 0u; s >>= 1u) {
    if (lane < s) {
      red_w[lid] += red_w[lid + s];
#if GATED
      red_g[lid] += red_g[lid + s];
#endif
    }
    workgroupBarrier();
  }
  if (lane == 0u && j < P.n) {
#if GATED
    linear_store(m, j, red_w[lid], red_g[lid]);
#else
    linear_store(m, j, red_w[lid], 0.0);
#endif
  }
#endif
}
