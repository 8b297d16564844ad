// matmul: out[m, j] = x[m, :] · W[j, :] for many tokens (prefill). 64x64
// output tiles, K in steps of 16; each of the 256 invocations computes 4x4
// outputs (rows ty + 16i, columns tx + 16j). Weights are dequantized to ct
// while they are staged in shared memory. The next step's global loads are
// issued into registers before this step's products and stored after them,
// so their latency hides behind the FMAs (gate/up of a 1B model at 512 tokens:
// 21.5 -> 25.8 TFLOP/s on an H200). Grid: (ceil(N/64), ceil(M/64)).

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
