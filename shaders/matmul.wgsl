// matmul: out[m, j] = x[m, :] · W[j, :] for many tokens (prefill). 64x64
// output tiles, K in steps of 16; each of the 256 invocations computes 4x4
// outputs (rows ty + 16i, columns tx + 16j). Weights are dequantized to ct
// while they are staged in shared memory. Grid: (ceil(N/64), ceil(M/64)).

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

// Stage W[n0 .. n0+64, k0 .. k0+16] (rows past N and columns past K as 0).
fn load_w(gate_sel: bool, n0: u32, k0: u32, lid: u32) {
  let K = P.w_k;
#if W_Q4
  // 64 rows x 2 words of 8 codes
  if (lid < 128u) {
    let rr = lid / 2u;
    let wi = lid % 2u;
    let r = min(n0 + rr, P.n - 1u) + select(P.w_r0, P.gate_r0, gate_sel);  // + a group member's first row
    let q = wword(gate_sel, r * (K / 8u) + k0 / 8u + wi);
    let s = wscale(gate_sel, r, k0 / 32u);
    for (var j = 0u; j < 8u; j++) {
      put_w(gate_sel, rr * LD + wi * 8u + j, ct(q4_code(q, j) * s));
    }
  }
#elif W_Q8
  // 64 rows x 4 words of 4 codes
  let rr = lid / 4u;
  let wi = lid % 4u;
  let r = min(n0 + rr, P.n - 1u) + select(P.w_r0, P.gate_r0, gate_sel);  // + a group member's first row
  let q = wword(gate_sel, r * (K / 4u) + k0 / 4u + wi);
  let s = wscale(gate_sel, r, k0 / 32u);
  for (var j = 0u; j < 4u; j++) {
    put_w(gate_sel, rr * LD + wi * 4u + j, ct(q8_code(q, j) * s));
  }
#else
  for (var t = 0u; t < 4u; t++) {
    let e = lid + t * WG;
    let rr = e / BK;
    let kk = e % BK;
    let r = min(n0 + rr, P.n - 1u) + select(P.w_r0, P.gate_r0, gate_sel);  // + a group member's first row
    let c = k0 + kk;
    var v = 0.0;
    if (c < K) {
      let idx = r * K + c;
#if W_F16
      v = half_of(wword(gate_sel, idx / 2u), idx);
#else
      v = bitcast<f32>(wword(gate_sel, idx));
#endif
    }
    put_w(gate_sel, rr * LD + kk, ct(v));
  }
#endif
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

  for (var k0 = 0u; k0 < K; k0 += BK) {
    // Stage x[m0 .. m0+64, k0 .. k0+16].
    for (var t = 0u; t < 4u; t++) {
      let e = lid + t * WG;
      let rr = e / BK;
      let kk = e % BK;
      var v = 0.0;
      if (m0 + rr < M && k0 + kk < K) { v = x[in_row(m0 + rr) * K + k0 + kk]; }
      xs[rr * LD + kk] = ct(v);
    }
    load_w(false, n0, k0, lid);
#if GATED
    load_w(true, n0, k0, lid);
#endif
    workgroupBarrier();
    var part: array<ct, 16>;
    var part_g: array<ct, 16>;
    for (var i = 0u; i < 16u; i++) { part[i] = ct(0.0); part_g[i] = ct(0.0); }
    for (var kk = 0u; kk < BK; kk++) {
      var a: array<ct, 4>;
      for (var i = 0u; i < 4u; i++) { a[i] = xs[(ty + 16u * i) * LD + kk]; }
      for (var jj = 0u; jj < 4u; jj++) {
        let b = ws[(tx + 16u * jj) * LD + kk];
#if GATED
        let bg = gs[(tx + 16u * jj) * LD + kk];
#endif
        for (var i = 0u; i < 4u; i++) {
          part[i * 4u + jj] += a[i] * b;
#if GATED
          part_g[i * 4u + jj] += a[i] * bg;
#endif
        }
      }
    }
    for (var i = 0u; i < 16u; i++) { acc[i] += f32(part[i]); acc_g[i] += f32(part_g[i]); }
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
