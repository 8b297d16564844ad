// RoPE (rotate-half, on the first 2*half dims of each head) and the KV-cache
// append, for each token at position pos = pos0 + t:
//   q_out[t] = rotate(q[t]); k_cache[pos mod rows] = rotate(k[t]); v_cache[pos mod rows] = v[t].
// P.rows: the cache's rows, a ring on a sliding-window layer (graph.js kvCacheLayout);
// the whole context elsewhere, where pos mod rows = pos.
// q, k, v are read-only, so they can be ranges of one buffer (fused q/k/v).
// table: [max_pos, half, 2] (cos, sin), built in float64 by kernels.js.
// Grid: (tokens split over x/y, slices of WG elements of [q | k and v] over z).
// The rotation itself is common.wgsl's `rotated` (shared with the split attention).

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = wg_index(wid, nwg);
  if (t >= S.tokens) { return; }
  let pos = S.pos0 + t;
  let hd = P.head_dim;
  // One element per invocation: q's heads * hd (when rotating), then k's and v's kvd. A decode
  // step is one token: walking its ~3k elements in one workgroup was a chain of ~10 dependent
  // load rounds (11 us a layer on an H200), so the elements are spread over grid.z workgroups.
  let nq = select(0u, P.heads * hd, ROTATE);
  let e = wid.z * WG + lid;
  if (e < nq) {
    let qb = t * P.heads * hd;
    let d = e % hd;
    q_out[qb + e] = rotated(false, qb + e - d, d, pos);
    return;
  }
  let kvd = P.kv_heads * hd;
  let ek = e - nq;
  if (ek >= kvd) { return; }
  let row = pos % P.rows;
  let src = t * kvd + ek;
  let d = ek % hd;
  k_cache[row * kvd + ek] = rotated(true, src - d, d, pos);
  v_cache[row * kvd + ek] = v[src];
}
