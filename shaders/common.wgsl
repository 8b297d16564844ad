// Helpers shared by every kernel (prepended to each family's source after the
// generated header that declares WG, the defines, Params P, Step S and the
// bindings; see runtime/kernels.js). Pure functions, plus the block
// reductions over one workgroup.

// Linear workgroup index of a grid split over x and y (kernels.js grid2).
fn wg_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wid.x + wid.y * nwg.x;
}

// Rows an op processes this step: every token, or one (rows "last"/"first").
fn rows_count() -> u32 {
  if (ROWS == 0u) { return S.tokens; }
  return 1u;
}

// Input row of output row m: rows "last" reads the step's last token.
fn in_row(m: u32) -> u32 {
  if (ROWS == 1u) { return S.tokens - 1u; }
  return m;
}

// tanh saturates to ±1 in f32 beyond |x| = 15; clamping keeps exp() in
// implementations that build tanh from it from overflowing to NaN.
fn tanh_c(x: f32) -> f32 {
  return tanh(clamp(x, -15.0, 15.0));
}

// erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): WGSL has no erf.
fn erf_as(x: f32) -> f32 {
  let a = abs(x);
  let t = 1.0 / (1.0 + 0.3275911 * a);
  let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return sign(x) * (1.0 - poly * exp(-a * a));
}

fn silu(x: f32) -> f32 { return x / (1.0 + exp(-x)); }
fn gelu_tanh(x: f32) -> f32 { return 0.5 * x * (1.0 + tanh_c(0.7978845608028654 * (x + 0.044715 * x * x * x))); }
fn gelu_exact(x: f32) -> f32 { return 0.5 * x * (1.0 + erf_as(x * 0.7071067811865476)); }

// The variant's activation (ACT: 0 none, 1 silu, 2 gelu_tanh, 3 gelu).
fn activate(x: f32) -> f32 {
  if (ACT == 1u) { return silu(x); }
  if (ACT == 2u) { return gelu_tanh(x); }
  if (ACT == 3u) { return gelu_exact(x); }
  return x;
}

// Weight decoding (docs/weights-format.md). q4: code j of a word is bits 4j..4j+3, w = (q - 8) * scale.
// q8: byte j of a word is a signed code, w = q * scale.
// A code becomes a float without an int-to-float conversion, which runs at a quarter of the FMA
// rate on NVIDIA and held the q4 matvec ALU-bound far below the memory bandwidth: a code c < 2^23
// placed in the mantissa of 2^23 is exactly the float 2^23 + c, and one subtraction of 2^23 + bias
// leaves c - bias (exact: every value is an integer below 2^24).
const MAGIC: u32 = 0x4b000000u;  // the bits of 2^23 as f32
fn q4_lo(q: u32) -> vec4<f32> {
  return bitcast<vec4<f32>>(((vec4<u32>(q) >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u)) | vec4<u32>(MAGIC)) - 8388616.0;
}
fn q4_hi(q: u32) -> vec4<f32> {
  return bitcast<vec4<f32>>(((vec4<u32>(q) >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u)) | vec4<u32>(MAGIC)) - 8388616.0;
}
// q8: the byte XOR 0x80 is the code + 128 (0..255).
fn q8_4(q: u32) -> vec4<f32> {
  return bitcast<vec4<f32>>(((vec4<u32>(q) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(255u)) ^ vec4<u32>(MAGIC | 128u)) - 8388736.0;
}
fn q4_code(q: u32, j: u32) -> f32 { return bitcast<f32>(((q >> (4u * j)) & 15u) | MAGIC) - 8388616.0; }
fn q8_code(q: u32, j: u32) -> f32 { return bitcast<f32>(((q >> (8u * j)) & 255u) ^ (MAGIC | 128u)) - 8388736.0; }
// The f16 value i (0 or 1) of a packed pair.
fn half_of(word: u32, i: u32) -> f32 { return unpack2x16float(word)[i & 1u]; }

// Block reductions over the WG invocations of a workgroup. Call from
// uniform control flow; every invocation gets the result. With subgroups,
// invocation lid is assumed to sit in subgroup lid / sgs (how every
// implementation lays out a 1-D workgroup).
var<workgroup> wg_red: array<f32, WG>;

fn block_sum(v: f32, lid: u32, sgs: u32, sgl: u32) -> f32 {
  workgroupBarrier();  // a previous call's readers are done with wg_red
#if SUBGROUPS
  let s = subgroupAdd(v);
  if (sgl == 0u) { wg_red[lid / sgs] = s; }
  workgroupBarrier();
  var t = 0.0;
  for (var i = 0u; i < WG / sgs; i++) { t += wg_red[i]; }
  return t;
#else
  wg_red[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { wg_red[lid] += wg_red[lid + s]; }
    workgroupBarrier();
  }
  return wg_red[0];
#endif
}

fn block_max(v: f32, lid: u32, sgs: u32, sgl: u32) -> f32 {
  workgroupBarrier();
#if SUBGROUPS
  let s = subgroupMax(v);
  if (sgl == 0u) { wg_red[lid / sgs] = s; }
  workgroupBarrier();
  var t = wg_red[0];
  for (var i = 1u; i < WG / sgs; i++) { t = max(t, wg_red[i]); }
  return t;
#else
  wg_red[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { wg_red[lid] = max(wg_red[lid], wg_red[lid + s]); }
    workgroupBarrier();
  }
  return wg_red[0];
#endif
}

#if ROPE_FN
// RoPE on element d of a head whose elements start at index b of q (key false) or k (key true), at
// position pos: rotate-half on the first 2 * P.half dims (ROTATE false, or past them: unchanged), with
// cos/sin from table [max_pos, half, 2]. Shared by rope.wgsl and the split attention that does
// the rope op's work (attention.wgsl ROPE).
fn cos_sin(pos: u32, i: u32) -> vec2<f32> {
  let b = (pos * P.half + i) * 2u;
  return vec2<f32>(table[b], table[b + 1u]);
}

fn rotated(key: bool, b: u32, d: u32, pos: u32) -> f32 {
  var x = 0.0;
  var y = 0.0;  // the element half a rotation away
  let h = P.half;
  if (key) { x = k[b + d]; } else { x = q[b + d]; }
  if (!ROTATE || d >= 2u * h) { return x; }
  let o = select(b + d - h, b + d + h, d < h);
  if (key) { y = k[o]; } else { y = q[o]; }
  if (d < h) {
    let cs = cos_sin(pos, d);
    return x * cs.x - y * cs.y;
  }
  let cs = cos_sin(pos, d - h);
  return x * cs.x + y * cs.y;
}
#endif

#if LINEAR
// The epilogue of linear (matvec and matmul): bias, gated or plain
// activation, soft-capping, store or accumulate into out.
// Output row jg = out_offset + j goes to out[m * out_stride + jg], except that
// rows from seg1 on (and from seg2 on) go to their own dense [tokens, ·]
// blocks at base1 (base2) with row stride stride1 (stride2): a fused q/k/v
// matvec writes q, k and v as three separate arrays of one buffer.
// (A matvec with QOUT writes its rows quantized for the next product instead: matvec.wgsl.)

// Row j's value: the bias, the gated or plain activation, soft-capping.
fn linear_value(j: u32, acc_w: f32, acc_g: f32) -> f32 {
  var y = acc_w;
  if (BIAS) { y += bias[P.bias_off + j]; }
  if (GATED) {
    var g = acc_g;
    if (GATE_BIAS) { g += gate_bias[P.gate_bias_off + j]; }
    y = activate(g) * y;
  } else {
    y = activate(y);
  }
  if (SOFTCAP) { y = P.softcap * tanh_c(y / P.softcap); }
  return y;
}

#if !QOUT
fn linear_store(m: u32, j: u32, acc_w: f32, acc_g: f32) {
  var y = linear_value(j, acc_w, acc_g);
  let jg = P.out_offset + j;
  var o = m * P.out_stride + jg;
  if (jg >= P.seg2) { o = P.base2 + m * P.stride2 + (jg - P.seg2); }
  else if (jg >= P.seg1) { o = P.base1 + m * P.stride1 + (jg - P.seg1); }
  if (ACCUM) { y += out[o]; }
  out[o] = y;
}
#endif
#endif

#if QGROUP
// One 32-group v of the XQ matvec's input quantized as described at the top of matvec.wgsl (ss: its Σx² with a
// fused norm, else 0): five vec4<u32>, the hi level's words, the lo level's, then the f32 (d / 256,
// the q4 offset's term, Σx², 0). The words follow the codes of the product that reads them (q4:
// even codes', odd codes'; q8: in order).
fn quant_group(v: array<vec4<f32>, 8>, ss: f32, q4: bool) -> array<vec4<u32>, 5> {
  var amax = 0.0;
  for (var i = 0u; i < 8u; i++) {
    let av = abs(v[i]);
    amax = max(amax, max(max(av.x, av.y), max(av.z, av.w)));
  }
  let inv = select(0.0, 127.0 / amax, amax > 0.0);
  var hw: array<u32, 8>;
  var lw: array<u32, 8>;
  var sum = 0i;
  for (var i = 0u; i < 8u; i++) {
    let a = v[i] * inv;
    let h = round(a);
    let l = clamp(round((a - h) * 256.0), vec4<f32>(-127.0), vec4<f32>(127.0));
    let hi = vec4<i32>(h);
    let li = vec4<i32>(l);
    sum += 256i * (hi.x + hi.y + hi.z + hi.w) + li.x + li.y + li.z + li.w;
    hw[i] = pack4xI8(hi);
    lw[i] = pack4xI8(li);
  }
  let d = amax / (127.0 * 256.0);
  var r: array<vec4<u32>, 5>;
  var bias = 0.0;
  if (q4) {
    // word j of the group holds codes 8j..8j+7 = v[2j] (4 values) and v[2j+1]: its even codes'
    // inputs are bytes 0 and 2 of hw[2j] and of hw[2j+1], the odd ones' bytes 1 and 3
    for (var lvl = 0u; lvl < 2u; lvl++) {
      var e: vec4<u32>;
      var o: vec4<u32>;
      for (var j = 0u; j < 4u; j++) {
        var a0 = hw[2u * j];
        var a1 = hw[2u * j + 1u];
        if (lvl == 1u) { a0 = lw[2u * j]; a1 = lw[2u * j + 1u]; }
        e[j] = (a0 & 0xFFu) | ((a0 >> 8u) & 0xFF00u) | ((a1 & 0xFFu) << 16u) | ((a1 << 8u) & 0xFF000000u);
        o[j] = ((a0 >> 8u) & 0xFFu) | ((a0 >> 16u) & 0xFF00u) | (((a1 >> 8u) & 0xFFu) << 16u) | (a1 & 0xFF000000u);
      }
      r[2u * lvl] = e;
      r[2u * lvl + 1u] = o;
    }
    bias = 8.0 * d * f32(sum);
  } else {
    // q8: codes 4j..4j+3 in word j: the inputs in order
    r[0] = vec4<u32>(hw[0], hw[1], hw[2], hw[3]);
    r[1] = vec4<u32>(hw[4], hw[5], hw[6], hw[7]);
    r[2] = vec4<u32>(lw[0], lw[1], lw[2], lw[3]);
    r[3] = vec4<u32>(lw[4], lw[5], lw[6], lw[7]);
  }
  r[4] = bitcast<vec4<u32>>(vec4<f32>(d, bias, ss, 0.0));
  return r;
}
#endif
