// Sampling on the GPU (the `topk` kernel; greedy is k = 1).

var<workgroup> best_v: array<f32, WG>;
var<workgroup> best_i: array<u32, WG>;

// Top-k candidates on the GPU, for the samplers other than greedy: the k
// largest logits of one row in descending order (lower index first among
// equal values), in one workgroup. Pass i finds the largest entry ordered
// after pass i-1's choice, so the row is read k times — from cache: it is
// one row of at most a few hundred kB — and nothing but 8k bytes goes back
// to the host. out[i] = index, out[k + i] = bits of its logit, i < k (index
// 0xffffffff when fewer than k ids are allowed by the MASKED variant). With
// k = 1 this is greedy: out[0] = argmax (lowest index among equal maxima,
// like numpy.argmax), out[1] = the max logit's bits.
// Grid: 1 (STAGE 0 and 2), or the slices (STAGE 1).

fn after(v: f32, i: u32, pv: f32, pi: u32) -> bool {
  return v < pv || (v == pv && i > pi);
}

// Items the passes walk (STAGE): 0 the whole row (one workgroup); 1 slice wid.x of the row
// (P.slice ids per workgroup; its k best go to out[wid.x * 2k ..]); 2 the slices' candidates
// (cand: per slice k ids then k bits; id 0xffffffff = none), merged into out.
// Two stages keep a long row (a 128k vocabulary, k = 40) from being walked k times by one workgroup.
fn item_range(wid: u32) -> vec2<u32> {
  if (STAGE == 1u) { return vec2<u32>(wid * P.slice, min((wid + 1u) * P.slice, P.n)); }
  if (STAGE == 2u) { return vec2<u32>(0u, P.slices * P.k); }
  return vec2<u32>(0u, P.n);
}

@compute @workgroup_size(WG)
fn topk_main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wgid: vec3<u32>) {
  let base = in_row(0u) * P.row_stride;
  let range = item_range(wgid.x);
  var obase = 0u;
  if (STAGE == 1u) { obase = wgid.x * 2u * P.k; }
  var pv = 3.4e38;
  var pi = 0u;
  var first = true;
  for (var c = 0u; c < P.k; c++) {
    var bv = -3.4e38;
    var bi = 0xffffffffu;
    for (var j = range.x + lid; j < range.y; j += WG) {
      var i = j;
      var v = 0.0;
      if (STAGE == 2u) {
        let s = j / P.k;
        i = cand[s * 2u * P.k + j % P.k];
        if (i == 0xffffffffu) { continue; }
        v = bitcast<f32>(cand[s * 2u * P.k + P.k + j % P.k]);
      } else {
        // MASKED (constrained output, issue 17): ids whose bit in `allowed` is 0 are never chosen.
        if (MASKED && (allowed[i >> 5u] & (1u << (i & 31u))) == 0u) { continue; }
        v = logits[base + i];
      }
      if ((first || after(v, i, pv, pi)) && (v > bv || bi == 0xffffffffu || (v == bv && i < bi))) { bv = v; bi = i; }
    }
    best_v[lid] = bv;
    best_i[lid] = bi;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
      if (lid < s) {
        let ov = best_v[lid + s];
        let oi = best_i[lid + s];
        let take = oi != 0xffffffffu && (best_i[lid] == 0xffffffffu || ov > best_v[lid]
          || (ov == best_v[lid] && oi < best_i[lid]));
        if (take) { best_v[lid] = ov; best_i[lid] = oi; }
      }
      workgroupBarrier();
    }
    pv = best_v[0];
    pi = best_i[0];
    first = false;
    if (lid == 0u) {
      out[obase + c] = pi;
      out[obase + P.k + c] = bitcast<u32>(pv);
    }
    workgroupBarrier();
  }
}
