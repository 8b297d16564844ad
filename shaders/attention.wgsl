// Causal attention with grouped KV heads. `main` (prefill): one workgroup per (head, token):
// online softmax over the cached keys in chunks of WG keys (one key per
// invocation for the scores, one head dim per invocation for the values).
// Optional sliding window (keys j > pos - window) and score soft-capping.
// Grid: (heads, tokens).

const NEG: f32 = -3.0e38;

#if IS_ATTENTION
var<workgroup> qs: array<f32, 256>;
var<workgroup> ps: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>
#if SUBGROUPS
        , @builtin(subgroup_size) sgs: u32, @builtin(subgroup_invocation_id) sgl: u32
#endif
        ) {
#if !SUBGROUPS
  let sgs = 0u;
  let sgl = 0u;
#endif
  let h = wid.x;
  let t = wid.y;
  if (t >= S.tokens) { return; }
  let hd = P.head_dim;
  let kvh = h / (P.heads / P.kv_heads);
  let kvd = P.kv_heads * hd;
  let pos = S.pos0 + t;
  let kend = pos + 1u;
  var kstart = 0u;
  if (P.window > 0u && kend > P.window) { kstart = kend - P.window; }
  let qb = (t * P.heads + h) * hd;
  if (lid < hd) { qs[lid] = q[qb + lid]; }
  workgroupBarrier();

  var m = NEG;
  var l = 0.0;
  var acc = 0.0;
  for (var c0 = kstart; c0 < kend; c0 += WG) {
    let key = c0 + lid;
    var s = NEG;
    if (key < kend) {
      let kb = key * kvd + kvh * hd;
      var d = 0.0;
      for (var i = 0u; i < hd; i++) { d += qs[i] * k_cache[kb + i]; }
      s = d * P.scale;
      if (P.softcap > 0.0) { s = P.softcap * tanh_c(s / P.softcap); }
    }
    let mnew = max(m, block_max(s, lid, sgs, sgl));
    var p = 0.0;
    if (key < kend) { p = exp(s - mnew); }
    ps[lid] = p;  // published by block_sum's barriers
    let psum = block_sum(p, lid, sgs, sgl);
    let corr = exp(m - mnew);
    l = l * corr + psum;
    if (lid < hd) {
      let cnt = min(WG, kend - c0);
      var a = 0.0;
      let vb = c0 * kvd + kvh * hd + lid;
      for (var j = 0u; j < cnt; j++) { a += ps[j] * v_cache[vb + j * kvd]; }
      acc = acc * corr + a;
    }
    m = mnew;
    workgroupBarrier();  // ps is rewritten by the next chunk
  }
  if (lid < hd) { out[qb + lid] = acc / l; }
}
#endif

#if IS_ATTN_SPLIT
// Decode attention split over the keys (flash-decoding): a step of few tokens
// has too few (head, token) pairs to fill a GPU, and walking a long context
// serially makes the cost grow with it. Workgroup (kv head, split s, token t)
// scores the keys [s*CH, (s+1)*CH) for the G = heads/kv_heads query heads that
// share the kv head (each key row read once for all of them), and writes, per
// query head, the split's max score m, its sum l = Σ exp(s - m) and
// acc = Σ exp(s - m) v to `part`; attn_combine merges the splits.
// CH * G <= WG (kernels.js picks CH), G * head_dim <= 2048.
// part layout: [tokens, heads, max_splits, head_dim + 2] (m, l, acc...).

var<workgroup> sq: array<f32, 2048>;  // q of the G heads
var<workgroup> sp: array<f32, WG>;    // scores, then probabilities, [G, CH]
var<workgroup> sr: array<f32, WG>;    // tree reductions

@compute @workgroup_size(WG)
fn split_main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let kvh = wid.x;
  let s = wid.y;
  let t = wid.z;
  let G = P.heads / P.kv_heads;
  let hd = P.head_dim;
  let CH = P.chunk;
  let kvd = P.kv_heads * hd;
  let pos = S.pos0 + t;
  let kend = pos + 1u;
  var kstart = 0u;
  if (P.window > 0u && kend > P.window) { kstart = kend - P.window; }
  let lo = max(s * CH, kstart);
  let hi = min((s + 1u) * CH, kend);
  let pb = (t * P.heads + kvh * G) * P.max_splits + s;  // part row of head g: pb + g * max_splits
  let stride = hd + 2u;
  if (t >= S.tokens) { return; }
  if (lo >= hi) {
    // No key of this split is visible to token t: an empty partial (m = -inf, l = 0, acc = 0).
    for (var i = lid; i < G * stride; i += WG) {
      let g = i / stride;
      let c = i % stride;
      part[(pb + g * P.max_splits) * stride + c] = select(0.0, NEG, c == 0u);
    }
    return;
  }
  for (var i = lid; i < G * hd; i += WG) {
    sq[i] = q[(t * P.heads + kvh * G) * hd + i];
  }
  workgroupBarrier();
  // One score per invocation: head g = lid / CH, key lo + lid % CH.
  let g = lid / CH;
  let kk = lid % CH;
  let key = lo + kk;
  var sc = NEG;
  if (g < G && key < hi) {
    let kb = key * kvd + kvh * hd;
    var d = 0.0;
    for (var i = 0u; i < hd; i++) { d += sq[g * hd + i] * k_cache[kb + i]; }
    sc = d * P.scale;
    if (P.softcap > 0.0) { sc = P.softcap * tanh_c(sc / P.softcap); }
  }
  // Max over each head's CH scores (tree in shared memory; CH is a power of two).
  sr[lid] = sc;
  workgroupBarrier();
  for (var w = CH / 2u; w > 0u; w >>= 1u) {
    if (kk < w) { sr[lid] = max(sr[lid], sr[lid + w]); }
    workgroupBarrier();
  }
  var m = NEG;
  if (g < G) { m = sr[g * CH]; }
  workgroupBarrier();
  var p = 0.0;
  if (g < G && key < hi) { p = exp(sc - m); }
  sp[lid] = p;
  sr[lid] = p;
  workgroupBarrier();
  for (var w = CH / 2u; w > 0u; w >>= 1u) {
    if (kk < w) { sr[lid] += sr[lid + w]; }
    workgroupBarrier();
  }
  if (g < G && kk == 0u) {
    let o = (pb + g * P.max_splits) * stride;
    part[o] = m;
    part[o + 1u] = sr[lid];
  }
  // Values: invocation (head g2, dim d) sums its head's probabilities times v over the split's keys.
  let n = hi - lo;
  for (var i = lid; i < G * hd; i += WG) {
    let g2 = i / hd;
    let d = i % hd;
    var a = 0.0;
    let vb = lo * kvd + kvh * hd + d;
    for (var j = 0u; j < n; j++) { a += sp[g2 * CH + j] * v_cache[vb + j * kvd]; }
    part[(pb + g2 * P.max_splits) * stride + 2u + d] = a;
  }
}
#endif

#if IS_ATTN_COMBINE
// Merge the splits of attn_split for (head h, token t): with M = max m_s,
// out = Σ exp(m_s - M) acc_s / Σ exp(m_s - M) l_s. Grid: (heads, tokens).
@compute @workgroup_size(WG)
fn combine_main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let h = wid.x;
  let t = wid.y;
  if (t >= S.tokens) { return; }
  let hd = P.head_dim;
  let stride = hd + 2u;
  let n = (S.pos0 + t) / P.chunk + 1u;  // splits holding keys 0..pos
  let base = (t * P.heads + h) * P.max_splits;
  var M = NEG;
  for (var s = 0u; s < n; s++) { M = max(M, part[(base + s) * stride]); }
  for (var d = lid; d < hd; d += WG) {
    var l = 0.0;
    var a = 0.0;
    for (var s = 0u; s < n; s++) {
      let o = (base + s) * stride;
      let f = exp(part[o] - M);
      l += f * part[o + 1u];
      a += f * part[o + 2u + d];
    }
    out[(t * P.heads + h) * hd + d] = a / l;
  }
}
#endif
