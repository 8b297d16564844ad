// Causal attention with grouped KV heads. `main` (prefill): one workgroup per (head, token):
// online softmax over the cached keys in chunks of WG keys (one key per
// invocation for the scores, one head dim per invocation for the values).
// Optional sliding window (keys j > pos - window) and score soft-capping.
// Grid: (heads, tokens).
//
// Key positions are absolute (the mask and window work on them); key j lies in
// cache row j mod P.rows (shaders/rope.wgsl): a ring on a sliding-window layer,
// whose cache holds window + chunk - 1 rows (graph.js kvCacheLayout), the whole
// context elsewhere. The keys one query sees span at most the window (or the
// context), never more than P.rows, so a run of them wraps past the last row once
// at most: `wrap` below is one subtraction, not a modulo per key.

const NEG: f32 = -3.0e38;

// Row r0 + i of a ring of `rows` rows, for r0 < rows and i < rows.
fn wrap(r: u32, rows: u32) -> u32 { return select(r, r - rows, r >= rows); }

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
    let r0 = c0 % P.rows;  // the row of key c0
    var s = NEG;
    if (key < kend) {
      let kb = wrap(r0 + lid, P.rows) * kvd + kvh * hd;
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
      let vb = kvh * hd + lid;
      for (var j = 0u; j < cnt; j++) { a += ps[j] * v_cache[wrap(r0 + j, P.rows) * kvd + vb]; }
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
// serially makes the cost grow with it. The visible keys of token t are cut
// into equal spans (P.splits of them, fewer while the context is shorter
// than P.splits blocks), one workgroup per (kv head, span, token), so the grid
// fills the GPU at any context length past a few hundred keys; a workgroup walks its span in blocks of CH keys with an online
// softmax, for the G = heads / kv_heads query heads that share the kv head
// (each key row read once for all of them). A key's score is the sum of LPK
// lanes (consecutive lanes read consecutive dims: coalesced); G' * CH * LPK =
// WG, G' = G rounded up to a power of two. Per query head it writes the
// span's max score m, its sum l = Σ exp(s - m) and acc = Σ exp(s - m) v to
// `part`; attn_combine merges the spans.
// A workgroup takes at most P.gblock <= 64 of a group's query heads, gblock * head_dim <= 2048 (the
// shared q): a larger group (Falcon-7B: 71 heads on one kv head) is cut into blocks of the grid's x,
// each reading the kv head's keys once for its heads (kernels.js picks gblock).
// part layout: [tokens, heads, splits, head_dim + 2] (m, l, acc...).
// ROPE (a one-token step, a group in one block): the RoPE dispatch in front is folded in. q is the
// product's raw q, rotated as it is loaded; the workgroup whose span holds the new key (the last)
// writes it, rotated, and its value into the caches (k, v: the product's raw k and v) before it
// reads them, as shaders/rope.wgsl would (common.wgsl `rotated`; ROTATE false: a layer without RoPE,
// append only). No other workgroup reads that row: the spans split the keys, each in a row of its own.

const NV: u32 = 2048u / WG;             // (head, dim) pairs of the values per invocation, at most
var<workgroup> sq: array<f32, 2048>;  // q of the G heads
var<workgroup> sp: array<f32, WG>;    // the block's scores, then probabilities, [G', CH]
var<workgroup> sr: array<f32, WG>;    // tree reductions
var<workgroup> sm: array<f32, 64>;    // per head: running max,
var<workgroup> sl: array<f32, 64>;    // running sum,
var<workgroup> sf: array<f32, 64>;    // and this block's rescale of the old sums
#if SUBGROUPS
var<workgroup> ss: array<f32, 64>;    // per subgroup: its part of a head's block sum (WG / 4 subgroups at most)
#endif


@compute @workgroup_size(WG)
fn split_main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>
#if SUBGROUPS
              , @builtin(subgroup_size) sgs: u32, @builtin(subgroup_invocation_id) sgl: u32
#endif
              ) {
  // wid.x: (kv head, block of its query heads); a block has P.gblock heads (the last may have fewer)
  let Gall = P.heads / P.kv_heads;
  let nblk = (Gall + P.gblock - 1u) / P.gblock;
  let kvh = wid.x / nblk;
  let g0 = (wid.x % nblk) * P.gblock;  // the block's first query head within the group
  let s = wid.y;
  let t = wid.z;
  let G = min(P.gblock, Gall - g0);
  let hd = P.head_dim;
  let CH = P.chunk;
  let LPK = P.lpk;
  let slots = WG / LPK;  // G' * CH
  let kvd = P.kv_heads * hd;
  let pos = S.pos0 + t;
  let kend = pos + 1u;
  var kstart = 0u;
  if (P.window > 0u && kend > P.window) { kstart = kend - P.window; }
  // Spans in use this step: no more than blocks of keys the step's last token sees (the host's grid).
  let nsplit = min(P.splits, (S.pos0 + S.tokens + CH - 1u) / CH);
  let span = (kend - kstart + nsplit - 1u) / nsplit;
  let lo = kstart + s * span;
  let hi = min(lo + span, kend);
  let pb = (t * P.heads + kvh * Gall + g0) * P.splits + s;  // part row of head g: pb + g * splits
  let stride = hd + 2u;
  if (t >= S.tokens) { return; }
  if (lo >= hi) {
    // No key of this span is visible to token t: an empty partial (m = NEG, l = 0, acc = 0).
    for (var i = lid; i < G * stride; i += WG) {
      let g = i / stride;
      let c = i % stride;
      part[(pb + g * P.splits) * stride + c] = select(0.0, NEG, c == 0u);
    }
    return;
  }
#if ROPE
  // (t = 0: one token) q rotated as it is loaded; the new key and value into the caches.
  for (var i = lid; i < G * hd; i += WG) {
    sq[i] = rotated(false, (kvh * Gall + g0 + i / hd) * hd, i % hd, pos);
  }
  if (pos >= lo && pos < hi) {
    let row = pos % P.rows;
    for (var d = lid; d < hd; d += WG) {
      k_cache[row * kvd + kvh * hd + d] = rotated(true, kvh * hd, d, pos);
      v_cache[row * kvd + kvh * hd + d] = v[kvh * hd + d];
    }
  }
  storageBarrier();  // the new row, written above, is read below by other invocations
#else
  for (var i = lid; i < G * hd; i += WG) {
    sq[i] = q[(t * P.heads + kvh * Gall + g0) * hd + i];
  }
#endif
  if (lid < G) {
    sm[lid] = NEG;
    sl[lid] = 0.0;
  }
  workgroupBarrier();
  let slot = lid / LPK;
  let lane = lid % LPK;
  // Invocation lid < slots stands for (head lid / CH, key lid % CH of the block) in the softmax.
  let gs = lid / CH;
  let ks = lid % CH;
  var acc: array<f32, NV>;
#if SUBGROUPS
  // With subgroups, where a (head, key)'s LPK lanes lie in one subgroup and a subgroup in one head's
  // CH * LPK lanes: the score is summed by shuffles and the block's max and sum per head by subgroup
  // operations, whose per-subgroup results meet in shared memory: 3 barriers a block instead of ~15
  // (the tree reductions below; 1B shape on an H200: LPK 4, CH 16, subgroups of 32).
  let fast = LPK <= sgs && CH * LPK >= sgs;
  let nsub = max(1u, CH * LPK / sgs);  // subgroups per head (fast)
#endif
  for (var b = lo; b < hi; b += CH) {
    let rb = b % P.rows;  // the row of key b (the block wraps past the last row at most once)
    // Scores: LPK lanes per (head, key).
    let g = slot / CH;
    let key = b + slot % CH;
    var d = 0.0;
    if (g < G && key < hi) {
      // Four loads issued before their products (this loop is latency-bound, not bandwidth-bound).
      let kb = wrap(rb + slot % CH, P.rows) * kvd + kvh * hd;
      let qb = g * hd;
      var d4 = vec4<f32>(0.0);
      var i = lane;
      for (; i + 3u * LPK < hd; i += 4u * LPK) {
        let kv4 = vec4<f32>(k_cache[kb + i], k_cache[kb + i + LPK], k_cache[kb + i + 2u * LPK], k_cache[kb + i + 3u * LPK]);
        d4 += kv4 * vec4<f32>(sq[qb + i], sq[qb + i + LPK], sq[qb + i + 2u * LPK], sq[qb + i + 3u * LPK]);
      }
      for (; i < hd; i += LPK) { d4.x += sq[qb + i] * k_cache[kb + i]; }
      d = d4.x + d4.y + d4.z + d4.w;
    }
#if SUBGROUPS
    if (fast) {
      for (var w = LPK / 2u; w > 0u; w >>= 1u) { d += subgroupShuffleXor(d, w); }
      let valid = g < G && key < hi;
      var sc = NEG;
      if (valid) {
        sc = d * P.scale;
        if (P.softcap > 0.0) { sc = P.softcap * tanh_c(sc / P.softcap); }
      }
      let mx = subgroupMax(sc);
      if (sgl == 0u) { sr[lid / sgs] = mx; }
      workgroupBarrier();
      // the head's block max over its subgroups, folded into its running max (as lid < G does below)
      var bm = NEG;
      for (var i = 0u; i < nsub; i++) { bm = max(bm, sr[g * nsub + i]); }
      let mn = max(sm[g], bm);
      var p = 0.0;
      if (valid) { p = exp(sc - mn); }
      let psum = subgroupAdd(select(0.0, p, lane == 0u));  // each key once (its first lane)
      if (lane == 0u) { sp[slot] = p; }
      if (sgl == 0u) { ss[lid / sgs] = psum; }
      workgroupBarrier();
      if (lid < G) {
        var bm2 = NEG;
        var bs = 0.0;
        for (var i = 0u; i < nsub; i++) {
          bm2 = max(bm2, sr[lid * nsub + i]);
          bs += ss[lid * nsub + i];
        }
        let mo = sm[lid];
        let mn2 = max(mo, bm2);
        let f = exp(mo - mn2);
        sf[lid] = f;
        sm[lid] = mn2;
        sl[lid] = sl[lid] * f + bs;
      }
      workgroupBarrier();
    } else {
#endif
    sr[lid] = d;
    workgroupBarrier();
    for (var w = LPK / 2u; w > 0u; w >>= 1u) {
      if (lane < w) { sr[lid] += sr[lid + w]; }
      workgroupBarrier();
    }
    var sc = NEG;
    if (lid < slots && gs < G && b + ks < hi) {
      sc = sr[lid * LPK] * P.scale;
      if (P.softcap > 0.0) { sc = P.softcap * tanh_c(sc / P.softcap); }
    }
    workgroupBarrier();
    sp[lid] = sc;
    sr[lid] = sc;
    workgroupBarrier();
    // The block's max per head (a tree over CH, a power of two), folded into the running max.
    for (var w = CH / 2u; w > 0u; w >>= 1u) {
      if (lid < slots && ks < w) { sr[lid] = max(sr[lid], sr[lid + w]); }
      workgroupBarrier();
    }
    if (lid < G) {
      let mo = sm[lid];
      let mn = max(mo, sr[lid * CH]);
      sf[lid] = exp(mo - mn);
      sm[lid] = mn;
    }
    workgroupBarrier();
    var p = 0.0;
    if (lid < slots && gs < G && b + ks < hi) { p = exp(sp[lid] - sm[gs]); }
    sp[lid] = p;
    sr[lid] = p;
    workgroupBarrier();
    for (var w = CH / 2u; w > 0u; w >>= 1u) {
      if (lid < slots && ks < w) { sr[lid] += sr[lid + w]; }
      workgroupBarrier();
    }
    if (lid < G) { sl[lid] = sl[lid] * sf[lid] + sr[lid * CH]; }
#if SUBGROUPS
    }
#endif
    // Values: invocation (head g2, dim d) rescales its sum and adds the block's p · v.
    let n = min(CH, hi - b);
    // Rows rb..rb+n-1 in order unless the block wraps (rare: once per pass over the ring), which
    // takes the row of each key.
    let contiguous = rb + n <= P.rows;
    for (var j = 0u; j < NV; j++) {
      let i = lid + j * WG;
      if (i < G * hd && !contiguous) {
        let g2 = i / hd;
        var a = acc[j] * sf[g2];
        for (var jj = 0u; jj < n; jj++) { a += sp[g2 * CH + jj] * v_cache[wrap(rb + jj, P.rows) * kvd + kvh * hd + i % hd]; }
        acc[j] = a;
      } else if (i < G * hd) {
        let g2 = i / hd;
        let vb = rb * kvd + kvh * hd + i % hd;
        let pb2 = g2 * CH;
        var a4 = vec4<f32>(acc[j] * sf[g2], 0.0, 0.0, 0.0);
        var jj = 0u;
        for (; jj + 3u < n; jj += 4u) {
          let v4 = vec4<f32>(v_cache[vb + jj * kvd], v_cache[vb + (jj + 1u) * kvd], v_cache[vb + (jj + 2u) * kvd],
                             v_cache[vb + (jj + 3u) * kvd]);
          a4 += v4 * vec4<f32>(sp[pb2 + jj], sp[pb2 + jj + 1u], sp[pb2 + jj + 2u], sp[pb2 + jj + 3u]);
        }
        for (; jj < n; jj++) { a4.x += sp[pb2 + jj] * v_cache[vb + jj * kvd]; }
        acc[j] = a4.x + a4.y + a4.z + a4.w;
      }
    }
    workgroupBarrier();  // sp, sf and sl are rewritten by the next block
  }
  if (lid < G) {
    let o = (pb + lid * P.splits) * stride;
    part[o] = sm[lid];
    part[o + 1u] = sl[lid];
  }
  for (var j = 0u; j < NV; j++) {
    let i = lid + j * WG;
    if (i < G * hd) { part[(pb + (i / hd) * P.splits) * stride + 2u + i % hd] = acc[j]; }
  }
}
#endif

#if IS_ATTN_COMBINE
// Merge the spans of attn_split for (head h, token t): with M = max m_s,
// out = Σ exp(m_s - M) acc_s / Σ exp(m_s - M) l_s (an empty span adds 0). QOUT: also the reader's int8
// input (kernels.js attention({quantizeFor})).
// The spans are read in parallel (splits <= WG): a walk over them in one
// invocation would wait on each load in turn. Grid: (heads, tokens).
var<workgroup> cr: array<f32, WG>;  // partial sums of acc
var<workgroup> cf: array<f32, WG>;  // exp(m_s - M)
#if QOUT
var<workgroup> cq: array<f32, 256>;  // the head's output, for its quantization
#endif

@compute @workgroup_size(WG)
fn combine_main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>
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
  let stride = hd + 2u;
  let n = min(P.splits, (S.pos0 + S.tokens + P.chunk - 1u) / P.chunk);  // spans in use (as attn_split)
  let base = (t * P.heads + h) * P.splits;
  var m = NEG;
  if (lid < n) { m = part[(base + lid) * stride]; }
  // (common.wgsl's block reductions: subgroup operations where the device has them, else trees)
  let M = block_max(m, lid, sgs, sgl);
  var lf = 0.0;
  if (lid < n) {
    let f = exp(m - M);
    cf[lid] = f;
    lf = f * part[(base + lid) * stride + 1u];
  }
  let L = block_sum(lf, lid, sgs, sgl);  // (its barriers also publish cf)
  // acc: `groups` invocations per dim, each over every groups-th span, then summed.
  let groups = max(1u, WG / hd);
  let d = lid % hd;
  let gi = lid / hd;
  var a = 0.0;
  if (gi < groups) {
    for (var s = gi; s < n; s += groups) { a += cf[s] * part[(base + s) * stride + 2u + d]; }
  }
  cr[lid] = a;
  workgroupBarrier();
  if (gi == 0u) {
    var tot = 0.0;
    for (var j = 0u; j < groups; j++) { tot += cr[j * hd + d]; }
    out[(t * P.heads + h) * hd + d] = tot / L;
#if QOUT
    cq[d] = tot / L;
#endif
  }
#if QOUT
  // QOUT (a step of few tokens, P.qout): the head's hd / 32 groups quantized for the product that
  // reads this output (the o-projection, an integer-dot matvec), as its quantize dispatch would.
  workgroupBarrier();
  if (P.qout == 1u && lid < hd / 32u) {
    var v: array<vec4<f32>, 8>;
    for (var i = 0u; i < 8u; i++) {
      let b = 32u * lid + 4u * i;
      v[i] = vec4<f32>(cq[b], cq[b + 1u], cq[b + 2u], cq[b + 3u]);
    }
    let q = quant_group(v, 0.0, QOUT_Q4);
    let at = 5u * (t * P.qout_groups + (h * hd) / 32u + lid);
    for (var c = 0u; c < 5u; c++) { xq[at + c] = q[c]; }
  }
#endif
}
#endif
