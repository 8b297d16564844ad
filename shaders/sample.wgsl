// Greedy sampling on the GPU: argmax of one logits row in one workgroup
// (lowest index among equal maxima, like numpy.argmax).
// out[0] = index, out[1] = bits of the max logit. Grid: 1.

var<workgroup> best_v: array<f32, WG>;
var<workgroup> best_i: array<u32, WG>;

@compute @workgroup_size(WG)
fn argmax_main(@builtin(local_invocation_index) lid: u32) {
  let base = in_row(0u) * P.row_stride;
  var bv = -3.4e38;
  var bi = 0xffffffffu;
  for (var i = lid; i < P.n; i += WG) {
    let v = logits[base + i];
    if (v > bv) { bv = v; bi = i; }  // i increases: the first maximum wins
  }
  best_v[lid] = bv;
  best_i[lid] = bi;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      let ov = best_v[lid + s];
      let oi = best_i[lid + s];
      if (ov > best_v[lid] || (ov == best_v[lid] && oi < best_i[lid])) { best_v[lid] = ov; best_i[lid] = oi; }
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    out[0] = best_i[0];
    out[1] = bitcast<u32>(best_v[0]);
  }
}
