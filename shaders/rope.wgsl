// RoPE (rotate-half, on the first 2*half dims of each head) and the KV-cache
// append, one workgroup per token at position pos = pos0 + t:
//   q[t] rotated in place; k_cache[pos] = rotate(k[t]); v_cache[pos] = v[t].
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
    for (var e = lid; e < P.heads * half; e += WG) {
      let b = qb + (e / half) * hd + e % half;
      let cs = cos_sin(pos, e % half);
      let x1 = q[b];
      let x2 = q[b + half];
      q[b] = x1 * cs.x - x2 * cs.y;
      q[b + half] = x2 * cs.x + x1 * cs.y;
    }
  }
  let kvd = P.kv_heads * hd;
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
    k_cache[pos * kvd + e] = val;
    v_cache[pos * kvd + e] = v[src];
  }
}
