// RoPE (rotate-half, on the first 2*half dims of each head) and the KV-cache
// append, one workgroup per token at position pos = pos0 + t:
//   q_out[t] = rotate(q[t]); k_cache[pos mod rows] = rotate(k[t]); v_cache[pos mod rows] = v[t].
// P.rows: the cache's rows, a ring on a sliding-window layer (graph.js kvCacheLayout);
// the whole context elsewhere, where pos mod rows = pos.
// q, k, v are read-only, so they can be ranges of one buffer (fused q/k/v).
// table: [max_pos, half, 2] (cos, sin), built in float64 by kernels.js.
// Grid: tokens (split over x/y).

fn cos_sin(pos: u32, i: u32) -> vec2<f32> {
  let b = (pos * P.half + i) * 2u;
  return vec2<f32>(table[b], table[b + 1u]);
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = wg_index(wid, nwg);
  if (t >= S.tokens) { return; }
  let pos = S.pos0 + t;
  let hd = P.head_dim;
  let half = P.half;
  if (ROTATE) {
    let qb = t * P.heads * hd;
    for (var e = lid; e < P.heads * hd; e += WG) {
      let d = e % hd;
      var val = q[qb + e];
      if (d < half) {
        let cs = cos_sin(pos, d);
        val = q[qb + e] * cs.x - q[qb + e + half] * cs.y;
      } else if (d < 2u * half) {
        let cs = cos_sin(pos, d - half);
        val = q[qb + e] * cs.x + q[qb + e - half] * cs.y;
      }
      q_out[qb + e] = val;
    }
  }
  let kvd = P.kv_heads * hd;
  let row = pos % P.rows;
  for (var e = lid; e < kvd; e += WG) {
    let src = t * kvd + e;
    let d = e % hd;
    var val = k[src];
    if (ROTATE && d < 2u * half) {
      if (d < half) {
        let cs = cos_sin(pos, d);
        val = k[src] * cs.x - k[src + half] * cs.y;
      } else {
        let cs = cos_sin(pos, d - half);
        val = k[src] * cs.x + k[src - half] * cs.y;
      }
    }
    k_cache[row * kvd + e] = val;
    v_cache[row * kvd + e] = v[src];
  }
}
