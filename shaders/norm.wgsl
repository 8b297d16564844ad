// RMSNorm / LayerNorm: one workgroup per row of n values. A token has
// rows_per_token rows (1, or heads for a q/k norm over head_dim).
// Two passes over x (mean, then variance) for LayerNorm, for accuracy.
// Grid: rows (split over x/y).

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
  let R = P.rows_per_token;
  let row = wg_index(wid, nwg);  // output row
  if (row >= rows_count() * R) { return; }
  let h = row % R;
  let xb = (in_row(row / R) * R + h) * P.n;
  let ob = row * P.n;
  let n = P.n;
  var wb = 0u;
  if (PER_ROW) { wb = h * n; }

  var mean = 0.0;
  if (LAYER) {
    var s = 0.0;
    for (var i = lid; i < n; i += WG) { s += x[xb + i]; }
    mean = block_sum(s, lid, sgs, sgl) / f32(n);
  }
  var s2 = 0.0;
  for (var i = lid; i < n; i += WG) {
    let d = x[xb + i] - mean;
    s2 += d * d;
  }
  let inv = inverseSqrt(block_sum(s2, lid, sgs, sgl) / f32(n) + P.eps);
  for (var i = lid; i < n; i += WG) {
    var y = (x[xb + i] - mean) * inv * weight[wb + i];
    if (BIAS) { y += bias[wb + i]; }
    if (ACCUM) { y += out[ob + i]; }
    out[ob + i] = y;
  }
}
