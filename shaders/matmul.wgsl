// matmul: out[m, j] = x[m, :] · W[j, :] for many tokens (prefill). 64x64
// output tiles, K in steps of 16; each of the 256 invocations computes 4x4
// outputs (rows ty + 16i, columns tx + 16j). Weights are dequantized to ct
// while they are staged in shared memory. The next step's global loads are
// issued into registers before this step's products and stored after them,
// so their latency hides behind the FMAs (gate/up of a 1B model at 512 tokens:
// 21.5 -> 25.8 TFLOP/s on an H200). Grid: (ceil(N/64), ceil(M/64)).

#if IS_MATMUL
const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;
const LD: u32 = 17u;  // padded row stride of the tiles (no bank conflicts on column reads)

var<workgroup> xs: array<ct, 1088>;  // BM * LD
var<workgroup> ws: array<ct, 1088>;
#if GATED
var<workgroup> gs: array<ct, 1088>;
#endif

fn wword(gate_sel: bool, i: u32) -> u32 {
  if (gate_sel) { return gate[i]; }
  return w[i];
}

fn wscale(gate_sel: bool, r: u32, g: u32) -> f32 {
  let i = 2u * select(P.w_so, P.gate_so, gate_sel) + r * (P.w_k / 32u) + g;  // index of the f16 scale
  return half_of(wword(gate_sel, i / 2u), i);
}

// The next K step's global loads go to registers (fetch) while this step's
// products run, and into shared memory after them (stash).
#if W_Q4
const WT: u32 = 1u;   // 64 rows x 2 words of 8 codes: invocations 0..127 one word each
#elif W_Q8
const WT: u32 = 1u;   // 64 rows x 4 words of 4 codes
#else
const WT: u32 = 4u;   // f16/f32: 64 rows x 16 elements, as f32 bits
#endif
struct WRegs { q: array<u32, WT>, s: f32 }

fn fetch_w(gate_sel: bool, n0: u32, k0: u32, lid: u32) -> WRegs {
  let K = P.w_k;
  var o: WRegs;
#if W_Q4
  if (lid < 128u) {
    let r = min(n0 + lid / 2u, P.n - 1u) + select(P.w_r0, P.gate_r0, gate_sel);  // + a group member's first row
    o.q[0] = wword(gate_sel, r * (K / 8u) + k0 / 8u + lid % 2u);
    o.s = wscale(gate_sel, r, k0 / 32u);
  }
#elif W_Q8
  let r = min(n0 + lid / 4u, P.n - 1u) + select(P.w_r0, P.gate_r0, gate_sel);
  o.q[0] = wword(gate_sel, r * (K / 4u) + k0 / 4u + lid % 4u);
  o.s = wscale(gate_sel, r, k0 / 32u);
#else
  for (var t = 0u; t < 4u; t++) {
    let e = lid + t * WG;
    let r = min(n0 + e / BK, P.n - 1u) + select(P.w_r0, P.gate_r0, gate_sel);
    let c = k0 + e % BK;
    var v = 0.0;
    if (c < K) {
      let idx = r * K + c;
#if W_F16
      v = half_of(wword(gate_sel, idx / 2u), idx);
#else
      v = bitcast<f32>(wword(gate_sel, idx));
#endif
    }
    o.q[t] = bitcast<u32>(v);
  }
#endif
  return o;
}

fn stash_w(gate_sel: bool, o: WRegs, lid: u32) {
#if W_Q4
  if (lid < 128u) {
    for (var j = 0u; j < 8u; j++) { put_w(gate_sel, (lid / 2u) * LD + (lid % 2u) * 8u + j, ct(q4_code(o.q[0], j) * o.s)); }
  }
#elif W_Q8
  for (var j = 0u; j < 4u; j++) { put_w(gate_sel, (lid / 4u) * LD + (lid % 4u) * 4u + j, ct(q8_code(o.q[0], j) * o.s)); }
#else
  for (var t = 0u; t < 4u; t++) {
    let e = lid + t * WG;
    put_w(gate_sel, (e / BK) * LD + e % BK, ct(bitcast<f32>(o.q[t])));
  }
#endif
}

fn fetch_x(m0: u32, k0: u32, lid: u32, M: u32) -> vec4<f32> {
  let K = P.w_k;
  var o: vec4<f32>;
  for (var t = 0u; t < 4u; t++) {
    let e = lid + t * WG;
    let rr = e / BK;
    let kk = e % BK;
    if (m0 + rr < M && k0 + kk < K) { o[t] = x[in_row(m0 + rr) * K + k0 + kk]; }
  }
  return o;
}

fn stash_x(o: vec4<f32>, lid: u32) {
  for (var t = 0u; t < 4u; t++) {
    let e = lid + t * WG;
    xs[(e / BK) * LD + e % BK] = ct(o[t]);
  }
}

fn put_w(gate_sel: bool, i: u32, v: ct) {
#if GATED
  if (gate_sel) { gs[i] = v; return; }
#endif
  ws[i] = v;
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
  let K = P.w_k;
  let M = rows_count();
  let n0 = wid.x * BN;
  let m0 = wid.y * BM;
  let tx = lid % 16u;
  let ty = lid / 16u;
  var acc: array<f32, 16>;
  var acc_g: array<f32, 16>;
  for (var i = 0u; i < 16u; i++) { acc[i] = 0.0; acc_g[i] = 0.0; }

  var xr = fetch_x(m0, 0u, lid, M);
  var wr = fetch_w(false, n0, 0u, lid);
#if GATED
  var gr = fetch_w(true, n0, 0u, lid);
#endif
  for (var k0 = 0u; k0 < K; k0 += BK) {
    stash_x(xr, lid);
    stash_w(false, wr, lid);
#if GATED
    stash_w(true, gr, lid);
#endif
    workgroupBarrier();
    if (k0 + BK < K) {
      xr = fetch_x(m0, k0 + BK, lid, M);
      wr = fetch_w(false, n0, k0 + BK, lid);
#if GATED
      gr = fetch_w(true, n0, k0 + BK, lid);
#endif
    }
#if F16
    var part: array<ct, 16>;
    var part_g: array<ct, 16>;
    for (var i = 0u; i < 16u; i++) { part[i] = ct(0.0); part_g[i] = ct(0.0); }
#endif
    for (var kk = 0u; kk < BK; kk++) {
      var a: array<ct, 4>;
      for (var i = 0u; i < 4u; i++) { a[i] = xs[(ty + 16u * i) * LD + kk]; }
      for (var jj = 0u; jj < 4u; jj++) {
        let b = ws[(tx + 16u * jj) * LD + kk];
#if GATED
        let bg = gs[(tx + 16u * jj) * LD + kk];
#endif
        for (var i = 0u; i < 4u; i++) {
#if F16
          part[i * 4u + jj] += a[i] * b;
#if GATED
          part_g[i * 4u + jj] += a[i] * bg;
#endif
#else
          acc[i * 4u + jj] += a[i] * b;
#if GATED
          acc_g[i * 4u + jj] += a[i] * bg;
#endif
#endif
        }
      }
    }
#if F16
    for (var i = 0u; i < 16u; i++) { acc[i] += f32(part[i]); acc_g[i] += f32(part_g[i]); }
#endif
    workgroupBarrier();
  }

  for (var i = 0u; i < 4u; i++) {
    let m = m0 + ty + 16u * i;
    for (var jj = 0u; jj < 4u; jj++) {
      let j = n0 + tx + 16u * jj;
      if (m < M && j < P.n) { linear_store(m, j, acc[i * 4u + jj], acc_g[i * 4u + jj]); }
    }
  }
}
#endif

#if IS_XMATMUL
// xmm_main: the prefill product of q4/q8 weights over an int8 input, out[m, j] = x[m, :] · W[j, :] for
// a chunk of tokens. The f32 tiled matmul above decodes every code and spends one FMA a weight (ALU
// bound at 18-26 TFLOP/s on an H200); here x comes quantized per 32-group by the matvec's quant_main
// (two int8 levels: x ≈ d (h + l / 256), matvec.wgsl) and each group's products are integer dot
// products: on subgroup matrices (SGMAT: chromium-experimental-subgroup-matrix, i8 x i8 -> i32 16x16x32,
// tensor cores on NVIDIA) or, without them, dot4I8Packed (the same tile, computed by every invocation;
// the kernel tests run this form on the software adapter).
//
// A workgroup owns XBM = 64 weight rows x XBN tokens (32; 16 with a gate: its rows are a second set).
// Per group: the rows' codes are staged as int8 words (q4's low nibbles then high ones, the order
// quant_main packs x in), the 16x16 i32 tiles of both levels go to xres, and each invocation folds one
// row's tiles into its f32 sums with the group's scales: w_scale (d (256 h·q + l·q) - 8 d Σ(256h + l)),
// the last term being q4's code offset (0 for q8). A group's i32 tile cannot be scaled inside a subgroup
// matrix (its scales differ by row and by column), hence the round trip through workgroup memory.
// Bindings: xq (quant_main's output, 5 vec4<u32> a group: hi level 2, lo level 2, then d and the
// offset term; rows padded to a multiple of 32 tokens), w / gate (vec4<u32>), bias, gate_bias, out.
// A group's global loads are issued while the group before it is multiplied and folded (registers,
// XStage); the matrices then read workgroup memory only.
// Grid: (ceil(N / 64), ceil(M / XBN)).
const XWG: u32 = 128u;
const XBM: u32 = 64u;
#if GATED
const XBN: u32 = 16u;
const MATS: u32 = 2u;
#else
const XBN: u32 = 32u;
const MATS: u32 = 1u;
#endif
const TPI: u32 = XBN / 2u;                   // tokens per invocation in the fold (two halves of the workgroup)
const TILES: u32 = MATS * 2u * (XBM / 16u) * (XBN / 16u);   // 16x16 i32 tiles a group (both levels)

var<workgroup> xres: array<i32, MATS * 2u * XBN * XBM>;   // [mat][level][token][row]: 16 KB
var<workgroup> xwt: array<i32, MATS * XBM * 8u>;           // [mat][row][8 words]: one group's codes as int8
                                                           // (i32: the element type an i8 matrix loads from)
var<workgroup> xxt: array<i32, XBN * 16u>;                 // [token][16 words]: its int8 input, hi then lo level
var<workgroup> xws: array<f32, MATS * XBM>;                // the rows' scales
var<workgroup> xxs: array<vec2<f32>, XBN>;                 // the tokens' (d, offset term)

fn xword(gate_sel: bool, i: u32) -> vec4<u32> {
  if (gate_sel) { return gate[i]; }
  return w[i];
}

fn xscale(gate_sel: bool, r: u32, g: u32) -> f32 {
  let hi = 2u * select(P.w_so, P.gate_so, gate_sel) + r * (P.w_k / 32u) + g;  // index of the f16 scale
  return half_of(xword(gate_sel, hi / 8u)[(hi / 2u) % 4u], hi);
}

// One group's global loads, held in registers while the group before it is multiplied (fetch), then
// written to workgroup memory (stash): invocation i < MATS * 64 loads row i % 64 of matrix i / 64
// (its codes and scale), i < XBN * 4 a quarter of token i / 4's input words, i < XBN the token's scales.
struct XStage { q0: vec4<u32>, q1: vec4<u32>, sc: f32, x: vec4<u32>, xs: vec2<f32> }

fn xfetch(g: u32, lid: u32, n0: u32, m0: u32) -> XStage {
  let groups = P.w_k / 32u;
  var st: XStage;
  if (lid < MATS * XBM) {
    let gsel = lid >= XBM;
    let row = min(n0 + lid % XBM, P.n - 1u) + select(P.w_r0, P.gate_r0, gsel);
#if W_Q4
    st.q0 = xword(gsel, row * groups + g);
#else
    st.q0 = xword(gsel, row * (P.w_k / 16u) + 2u * g);
    st.q1 = xword(gsel, row * (P.w_k / 16u) + 2u * g + 1u);
#endif
    st.sc = xscale(gsel, row, g);
  }
  // (token rows past the step's lie inside the buffer: kernels.js pads it to 32 tokens; unused)
  if (lid < XBN * 4u) { st.x = xq[((m0 + lid / 4u) * groups + g) * 5u + lid % 4u]; }
  if (lid < XBN) { st.xs = bitcast<vec4<f32>>(xq[((m0 + lid) * groups + g) * 5u + 4u]).xy; }
  return st;
}

fn xstash(st: XStage, lid: u32) {
  if (lid < MATS * XBM) {
#if W_Q4
    // q4: the low nibbles of the group's words (its codes 0, 2, 4, 6 of each word), then the high
    // ones: the order quant_main packs the input in
    for (var i = 0u; i < 4u; i++) {
      xwt[lid * 8u + i] = bitcast<i32>(st.q0[i] & 0x0F0F0F0Fu);
      xwt[lid * 8u + 4u + i] = bitcast<i32>((st.q0[i] >> 4u) & 0x0F0F0F0Fu);
    }
#else
    for (var i = 0u; i < 4u; i++) { xwt[lid * 8u + i] = bitcast<i32>(st.q0[i]); xwt[lid * 8u + 4u + i] = bitcast<i32>(st.q1[i]); }
#endif
    xws[lid] = st.sc;
  }
  if (lid < XBN * 4u) {
    for (var i = 0u; i < 4u; i++) { xxt[lid * 4u + i] = bitcast<i32>(st.x[i]); }
  }
  if (lid < XBN) { xxs[lid] = st.xs; }
}

@compute @workgroup_size(XWG)
fn xmm_main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>
#if SGMAT
  , @builtin(subgroup_size) sg_size: u32
#endif
) {
  let groups = P.w_k / 32u;
  let M = rows_count();
  let n0 = wid.x * XBM;
  let m0 = wid.y * XBN;
  let n = lid % XBM;
  let th = lid / XBM;
  var acc: array<f32, TPI>;
  var acc_g: array<f32, TPI>;
  for (var j = 0u; j < TPI; j++) { acc[j] = 0.0; acc_g[j] = 0.0; }

  var st = xfetch(0u, lid, n0, m0);
  for (var g = 0u; g < groups; g++) {
    xstash(st, lid);
    workgroupBarrier();
    if (g + 1u < groups) { st = xfetch(g + 1u, lid, n0, m0); }  // in flight during this group's work
#if SGMAT
    // tile e: level e % 2, token tile (e / 2) % (XBN / 16), row tile, matrix; subgroup s of the nsg
    // takes tiles s, s + nsg, .. (a trip count the same in every subgroup: the matrices are built in
    // uniform control flow; nsg divides TILES for subgroups of 8 to 128, and with smaller ones the
    // subgroups past the last tile compute it again and store the same values)
    let nsg = XWG / sg_size;
    for (var k = 0u; k < (TILES + nsg - 1u) / nsg; k++) {
      let e = min(k * nsg + lid / sg_size, TILES - 1u);
      let lvl = e % 2u;
      let tt = (e / 2u) % (XBN / 16u);
      let nt = (e / (2u * (XBN / 16u))) % (XBM / 16u);
      let mat = e / (2u * (XBN / 16u) * (XBM / 16u));
      let a = sgm_load_left(((mat * XBM + nt * 16u) * 8u) * SGM_UNIT, 8u * SGM_UNIT);
      let b = sgm_load_right((tt * 16u * 16u + 8u * lvl) * SGM_UNIT, 16u * SGM_UNIT);
      sgm_store(((mat * 2u + lvl) * XBN + tt * 16u) * XBM + nt * 16u, subgroupMatrixMultiply<i32>(a, b));
    }
#else
    // the same tiles from dot4I8Packed: entry e = ((mat * 2 + level) * XBN + token) * XBM + row
    for (var e = lid; e < MATS * 2u * XBN * XBM; e += XWG) {
      let row = e % XBM;
      let t = (e / XBM) % XBN;
      let lvl = (e / (XBM * XBN)) % 2u;
      let mat = e / (2u * XBM * XBN);
      var s = 0i;
      for (var i = 0u; i < 8u; i++) {
        s += dot4I8Packed(bitcast<u32>(xwt[(mat * XBM + row) * 8u + i]), bitcast<u32>(xxt[t * 16u + 8u * lvl + i]));
      }
      xres[e] = s;
    }
#endif
    workgroupBarrier();
    // fold: invocation (n, th) takes row n and tokens th * TPI ..
    for (var j = 0u; j < TPI; j++) {
      let t = th * TPI + j;
      let xs = xxs[t];
      let h = xres[t * XBM + n];
      let l = xres[(XBN + t) * XBM + n];
      acc[j] += (f32(h * 256i + l) * xs.x - xs.y) * xws[n];
#if GATED
      let hg = xres[(2u * XBN + t) * XBM + n];
      let lg = xres[(3u * XBN + t) * XBM + n];
      acc_g[j] += (f32(hg * 256i + lg) * xs.x - xs.y) * xws[XBM + n];
#endif
    }
    workgroupBarrier();
  }

  for (var j = 0u; j < TPI; j++) {
    let m = m0 + th * TPI + j;
    if (m < M && n0 + n < P.n) { linear_store(m, n0 + n, acc[j], acc_g[j]); }
  }
}
#endif
