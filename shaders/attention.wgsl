// Causal attention with grouped KV heads, one workgroup per (head, token):
// online softmax over the cached keys in chunks of WG keys (one key per
// invocation for the scores, one head dim per invocation for the values).
// Optional sliding window (keys j > pos - window) and score soft-capping.
// Grid: (heads, tokens).

var<workgroup> qs: array<f32, 256>;
var<workgroup> ps: array<f32, WG>;

const NEG: f32 = -3.0e38;

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
