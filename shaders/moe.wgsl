// Mixture-of-experts MLP (issue 12; graph op "moe", runtime/graph.js), three kernels:
//
//   moe_route  per token: softmax over the router logits [tokens, E], the top_k experts
//              (largest first, the lower index among equal logits), their probabilities
//              renormalised to sum 1 when NORM_TOPK. sel[t] = [ids (k u32) | weights (k f32 bits)].
//   moe_up     per token t, slot j, expert row r of expert e = sel[t].ids[j]:
//              hid[t, j, r] = act(gate[e] · x[t]) * (up[e] · x[t])
//   moe_down   per token t, output row r:
//              out[t, r] (+)= Σ_j sel[t].w[j] * (down[e_j] · hid[t, j])
//
// The router's choice never leaves the GPU: moe_up / moe_down read the expert ids from `sel`
// and touch only those experts' rows, so a decoded token reads top_k / E of each expert tensor.
//
// Expert tensors are [E, rows, K] (docs/weights-format.md#mixture-of-experts): expert e's row r is
// row e * rows + r of a [E * rows, K] matrix, with the usual planes (q4/q8 codes + f16 scales per
// 32 weights of a row, or f16/f32). A tensor split by rows for the binding limit is split at expert
// boundaries (upload.js), so one dispatch per part handles the experts [P.e0, P.e0 + P.ne) and skips
// slots whose expert lies elsewhere. Compute is f32 in every variant.
//
// moe_up / moe_down: TPR = 32 invocations per row stride over its 32-wide groups, RPW = WG / 32 rows
// per workgroup, partial sums meet in shared memory. Grid: (row blocks, tokens * top_k) for moe_up,
// (row blocks, tokens) for moe_down, (ceil(tokens / WG), 1) for moe_route.

const TPR: u32 = 32u;
const RPW: u32 = WG / TPR;

#if IS_MOE_ROUTE
@compute @workgroup_size(WG)
fn route_main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = gid.x;
  if (t >= S.tokens) { return; }
  let E = P.experts;
  let k = P.top_k;
  let base = t * E;
  var mx = -3.4e38;
  for (var e = 0u; e < E; e++) { mx = max(mx, logits[base + e]); }
  var total = 0.0;
  for (var e = 0u; e < E; e++) { total += exp(logits[base + e] - mx); }
  var taken: array<u32, 8>;  // bit e: expert e already chosen (E <= 256)
  var chosen = 0.0;
  let out = t * 2u * k;
  for (var j = 0u; j < k; j++) {
    var bi = 0u;
    var bv = -3.4e38;
    var found = false;
    for (var e = 0u; e < E; e++) {
      if ((taken[e >> 5u] & (1u << (e & 31u))) != 0u) { continue; }
      let v = logits[base + e];
      if (!found || v > bv) { bv = v; bi = e; found = true; }
    }
    taken[bi >> 5u] |= 1u << (bi & 31u);
    let p = exp(bv - mx) / total;  // softmax(router_logits)[bi]
    chosen += p;
    sel[out + j] = bi;
    sel[out + k + j] = bitcast<u32>(p);
  }
  if (NORM_TOPK) {  // router_top_value /= router_top_value.sum(dim=-1)
    for (var j = 0u; j < k; j++) {
      sel[out + k + j] = bitcast<u32>(bitcast<f32>(sel[out + k + j]) / chosen);
    }
  }
}
#else

// One 32-wide group g of row `row` of weight s (0 = gate or down, 1 = up), K columns, against
// 32 inputs from xin(xb + 32 g ..): Σ w * x, scale applied.
fn group_dot(s: u32, row: u32, g: u32, xb: u32) -> f32 {
  let K = wk(s);
  let e0 = row * K + g * 32u;  // element index of the group's first weight
  let xo = xb + g * 32u;
  var acc = 0.0;
#if W_Q4
  for (var i = 0u; i < 4u; i++) {
    let q = wword(s, e0 / 8u + i);
    let o = xo + 8u * i;
    acc += dot(q4_lo(q), vec4<f32>(xin(o), xin(o + 1u), xin(o + 2u), xin(o + 3u)))
         + dot(q4_hi(q), vec4<f32>(xin(o + 4u), xin(o + 5u), xin(o + 6u), xin(o + 7u)));
  }
  return acc * scale_of(s, e0 / 32u);
#elif W_Q8
  for (var i = 0u; i < 8u; i++) {
    let o = xo + 4u * i;
    acc += dot(q8_4(wword(s, e0 / 4u + i)), vec4<f32>(xin(o), xin(o + 1u), xin(o + 2u), xin(o + 3u)));
  }
  return acc * scale_of(s, e0 / 32u);
#elif W_F16
  for (var i = 0u; i < 16u; i++) {
    let h = unpack2x16float(wword(s, e0 / 2u + i));
    acc += h.x * xin(xo + 2u * i) + h.y * xin(xo + 2u * i + 1u);
  }
  return acc;
#else
  for (var i = 0u; i < 32u; i++) {
    acc += bitcast<f32>(wword(s, e0 + i)) * xin(xo + i);
  }
  return acc;
#endif
}

// The f16 scale of quantization group gi (an index over the whole tensor) of weight s.
fn scale_of(s: u32, gi: u32) -> f32 {
  return half_of(wword(s, wso(s) + gi / 2u), gi);
}

var<workgroup> red_a: array<f32, WG>;
var<workgroup> red_b: array<f32, WG>;

// Sum red_a (and red_b) over each row's TPR lanes; lane 0 of the row ends up with the totals.
fn reduce_rows(lane: u32, lid: u32) {
  workgroupBarrier();
  for (var s = TPR / 2u; s > 0u; s >>= 1u) {
    if (lane < s) {
      red_a[lid] += red_a[lid + s];
      red_b[lid] += red_b[lid + s];
    }
    workgroupBarrier();
  }
}
#endif

#if IS_MOE_UP
fn wword(s: u32, i: u32) -> u32 {
  if (s == 0u) { return gate[i]; }
  return up[i];
}
fn wso(s: u32) -> u32 { return select(P.up_so, P.gate_so, s == 0u); }
fn wk(s: u32) -> u32 { return P.gate_k; }
fn xin(i: u32) -> f32 { return x[i]; }

@compute @workgroup_size(WG)
fn up_main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
  let slot = wid.z;          // token t = slot / top_k, its j-th expert
  let t = slot / P.top_k;
  let j = slot % P.top_k;
  let lane = lid % TPR;
  let r = wg_index(wid, nwg) * RPW + lid / TPR;  // the expert's row (0 .. inter)
  let e = sel[t * 2u * P.top_k + j];
  let mine = e >= P.e0 && e < P.e0 + P.ne && r < P.inter;
  var a = 0.0;
  var b = 0.0;
  if (mine) {
    let row = (e - P.e0) * P.inter + r;
    let xb = t * P.gate_k;
    for (var g = lane; g < P.gate_k / 32u; g += TPR) {
      a += group_dot(0u, row, g, xb);
      b += group_dot(1u, row, g, xb);
    }
  }
  red_a[lid] = a;
  red_b[lid] = b;
  reduce_rows(lane, lid);
  if (mine && lane == 0u) {
    hid[slot * P.inter + r] = activate(red_a[lid]) * red_b[lid];  // act_fn(gate) * up
  }
}
#endif

#if IS_MOE_DOWN
fn wword(s: u32, i: u32) -> u32 { return down[i]; }
fn wso(s: u32) -> u32 { return P.down_so; }
fn wk(s: u32) -> u32 { return P.down_k; }
fn xin(i: u32) -> f32 { return hid[i]; }

@compute @workgroup_size(WG)
fn down_main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = wid.z;
  let lane = lid % TPR;
  let r = wg_index(wid, nwg) * RPW + lid / TPR;  // output row (0 .. hidden)
  let k = P.top_k;
  var a = 0.0;
  if (r < P.hidden) {
    for (var j = 0u; j < k; j++) {
      let e = sel[t * 2u * k + j];
      if (e >= P.e0 && e < P.e0 + P.ne) {
        let row = (e - P.e0) * P.hidden + r;
        var d = 0.0;
        for (var g = lane; g < P.down_k / 32u; g += TPR) {
          d += group_dot(0u, row, g, (t * k + j) * P.down_k);
        }
        a += bitcast<f32>(sel[t * 2u * k + k + j]) * d;  // down_proj(h) * top_k_weights
      }
    }
  }
  red_a[lid] = a;
  red_b[lid] = 0.0;
  reduce_rows(lane, lid);
  if (r < P.hidden && lane == 0u) {
    var y = red_a[lid];
    if (P.accumulate != 0u) { y += out[t * P.hidden + r]; }
    out[t * P.hidden + r] = y;
  }
}
#endif
