// The WebAssembly CPU kernels (issue 14, item 1): freestanding C (no libc) for
// clang --target=wasm32 -msimd128, built by scripts/build-wasm into
// kernels.wasm (one thread) and kernels-threads.wasm (shared memory, the same
// code). Every pointer is a byte offset into the one linear memory, which the
// JavaScript side (../kernels.js) lays out: weights exactly as the shard
// stream has them (docs/weights-format.md), activations [tokens, width] f32,
// KV caches [positions, kv_heads*head_dim] f32.
//
// Threads: a kernel that can be split takes (part, parts) and does its share
// (rows of a matrix product, heads of attention); the thread pool calls it
// once per thread on the same arguments. No kernel keeps state or uses the C
// stack (scripts/build-wasm checks the threaded build never touches
// __stack_pointer), so instances in several workers can share one memory.
//
// Storage types (docs/weights-format.md#storage-types), rows = output features:
//   0 f32 · 1 f16 (IEEE half) · 2 q8 (int8 codes, f16 scale per 32) · 3 q4 (4-bit
//   codes, 8 per u32, value (q - 8) * scale, f16 scale per 32).
// Weights are dequantized in registers; activations and sums stay f32, so the
// results match the numpy reference (sitegen/reference/model.py) to rounding.

#include <stdint.h>
#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(#name)))
#define INLINE static inline __attribute__((always_inline))

enum { F32 = 0, F16 = 1, Q8 = 2, Q4 = 3 };
enum { ACT_NONE = 0, ACT_SILU = 1, ACT_GELU_TANH = 2, ACT_GELU = 3 };

// --- scalar math (no libm) ---------------------------------------------------

INLINE float f32_from_bits(uint32_t u) { union { uint32_t u; float f; } v = { u }; return v.f; }
INLINE uint32_t bits_of(float f) { union { float f; uint32_t u; } v = { f }; return v.u; }

// IEEE half → float, exact for normals, subnormals and zeros: the magnitude bits
// shifted into a float's place read as 2^-112 times the value, so one multiply
// by 2^112 fixes the exponent (weights are finite: no inf/NaN handling needed).
INLINE float half_to_float(uint16_t h) {
  float mag = f32_from_bits((uint32_t)(h & 0x7fff) << 13) * 5.192296858534828e33f;  // 2^112
  return f32_from_bits(bits_of(mag) | ((uint32_t)(h & 0x8000) << 16));
}

// e^x with |relative error| < 2e-7 on [-87, 88]: x = n ln2 + r, |r| <= ln2/2,
// a degree-6 Taylor polynomial for e^r, times 2^n built in the exponent bits.
static float exp_f(float x) {
  if (x > 88.0f) x = 88.0f;
  if (x < -87.0f) return 0.0f;
  float n = __builtin_nearbyintf(x * 1.4426950408889634f);
  float r = x - n * 0.693145751953125f - n * 1.428606765330187e-6f;
  float p = 1.0f + r * (1.0f + r * (0.5f + r * (0.16666667f + r * (0.041666668f + r * (0.008333334f
            + r * 0.0013888889f)))));
  return p * f32_from_bits((uint32_t)((int32_t)n + 127) << 23);
}

// tanh through e^{2|x|}: absolute error below 1e-7, saturating without overflow.
static float tanh_f(float x) {
  float a = x < 0 ? -x : x;
  if (a > 9.0f) return x < 0 ? -1.0f : 1.0f;
  float e = exp_f(2.0f * a);
  float t = (e - 1.0f) / (e + 1.0f);
  return x < 0 ? -t : t;
}

// erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), as shaders/common.wgsl.
static float erf_f(float x) {
  float a = x < 0 ? -x : x;
  float t = 1.0f / (1.0f + 0.3275911f * a);
  float y = 1.0f - (((((1.061405429f * t - 1.453152027f) * t) + 1.421413741f) * t - 0.284496736f) * t
            + 0.254829592f) * t * exp_f(-a * a);
  return x < 0 ? -y : y;
}

INLINE float activation(int act, float x) {
  switch (act) {
    case ACT_SILU: return x / (1.0f + exp_f(-x));
    case ACT_GELU_TANH: return 0.5f * x * (1.0f + tanh_f(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case ACT_GELU: return 0.5f * x * (1.0f + erf_f(x * 0.7071067811865476f));
    default: return x;
  }
}

INLINE float hsum(v128_t v) {
  return wasm_f32x4_extract_lane(v, 0) + wasm_f32x4_extract_lane(v, 1)
       + wasm_f32x4_extract_lane(v, 2) + wasm_f32x4_extract_lane(v, 3);
}

// Eight halves → two float vectors (the same trick as half_to_float, four lanes at a time).
INLINE void halves_to_floats(v128_t h, v128_t* lo, v128_t* hi) {
  const v128_t k = wasm_f32x4_splat(5.192296858534828e33f);
  v128_t a = wasm_u32x4_extend_low_u16x8(h), b = wasm_u32x4_extend_high_u16x8(h);
  v128_t sa = wasm_i32x4_shl(wasm_v128_and(a, wasm_i32x4_splat(0x8000)), 16);
  v128_t sb = wasm_i32x4_shl(wasm_v128_and(b, wasm_i32x4_splat(0x8000)), 16);
  a = wasm_f32x4_mul(wasm_i32x4_shl(wasm_v128_and(a, wasm_i32x4_splat(0x7fff)), 13), k);
  b = wasm_f32x4_mul(wasm_i32x4_shl(wasm_v128_and(b, wasm_i32x4_splat(0x7fff)), 13), k);
  *lo = wasm_v128_or(a, sa);
  *hi = wasm_v128_or(b, sb);
}

// Sixteen unsigned bytes → four float vectors of (byte - bias), in order, exactly: a byte b in
// the low mantissa bits of 2^23 (the bits 0x4B000000 | b) is the float 2^23 + b, so one subtraction
// gives b - bias. (A vector int → float conversion of extended bytes is lowered by LLVM 14 lane by
// lane, through scalar code; this stays in SIMD registers.)
INLINE void ubytes_to_floats(v128_t q, float bias, v128_t f[4]) {
  const v128_t magic = wasm_i32x4_splat(0x4B000000);
  const v128_t off = wasm_f32x4_splat(8388608.0f + bias);
  v128_t lo = wasm_u16x8_extend_low_u8x16(q), hi = wasm_u16x8_extend_high_u8x16(q);
  f[0] = wasm_f32x4_sub(wasm_v128_or(wasm_u32x4_extend_low_u16x8(lo), magic), off);
  f[1] = wasm_f32x4_sub(wasm_v128_or(wasm_u32x4_extend_high_u16x8(lo), magic), off);
  f[2] = wasm_f32x4_sub(wasm_v128_or(wasm_u32x4_extend_low_u16x8(hi), magic), off);
  f[3] = wasm_f32x4_sub(wasm_v128_or(wasm_u32x4_extend_high_u16x8(hi), magic), off);
}

// Sixteen signed bytes (q8 codes) → four float vectors, in order: flipping the sign bit makes
// them unsigned b = q + 128.
INLINE void bytes_to_floats(v128_t q, v128_t f[4]) {
  ubytes_to_floats(wasm_v128_xor(q, wasm_i8x16_splat((int8_t)0x80)), 128.0f, f);
}

// One q4 group of 32 (16 bytes of codes) → eight float vectors of (q - 8): the low
// nibbles are the even columns and the high nibbles the odd ones, so the x a group
// multiplies is read deinterleaved (see deinterleave32).
INLINE void q4_group(const uint8_t* p, v128_t f[8]) {
  v128_t q = wasm_v128_load(p);
  ubytes_to_floats(wasm_v128_and(q, wasm_i8x16_splat(0x0f)), 8.0f, f);
  ubytes_to_floats(wasm_u8x16_shr(q, 4), 8.0f, f + 4);
}

// --- dot products of one weight row with 1..4 activation rows -----------------
// x rows are `xs` floats apart; out[i] = Σ_c w[c] x_i[c] for i < nt.

__attribute__((noinline)) static void dot_f32(const float* w, const float* x, int xs, int cols, int nt, float* out) {
  v128_t a0 = wasm_f32x4_splat(0), a1 = a0, a2 = a0, a3 = a0;
  int c = 0;
  for (; c + 4 <= cols; c += 4) {
    v128_t wv = wasm_v128_load(w + c);
    a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(wv, wasm_v128_load(x + c)));
    if (nt > 1) a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(wv, wasm_v128_load(x + xs + c)));
    if (nt > 2) a2 = wasm_f32x4_add(a2, wasm_f32x4_mul(wv, wasm_v128_load(x + 2 * xs + c)));
    if (nt > 3) a3 = wasm_f32x4_add(a3, wasm_f32x4_mul(wv, wasm_v128_load(x + 3 * xs + c)));
  }
  float s[4] = { hsum(a0), hsum(a1), hsum(a2), hsum(a3) };
  for (; c < cols; c++) for (int i = 0; i < nt; i++) s[i] += w[c] * x[i * xs + c];
  for (int i = 0; i < nt; i++) out[i] = s[i];
}

__attribute__((noinline)) static void dot_f16(const uint16_t* w, const float* x, int xs, int cols, int nt, float* out) {
  v128_t a0 = wasm_f32x4_splat(0), a1 = a0, a2 = a0, a3 = a0;
  int c = 0;
  for (; c + 8 <= cols; c += 8) {
    v128_t lo, hi;
    halves_to_floats(wasm_v128_load(w + c), &lo, &hi);
    a0 = wasm_f32x4_add(a0, wasm_f32x4_add(wasm_f32x4_mul(lo, wasm_v128_load(x + c)), wasm_f32x4_mul(hi, wasm_v128_load(x + c + 4))));
    if (nt > 1) a1 = wasm_f32x4_add(a1, wasm_f32x4_add(wasm_f32x4_mul(lo, wasm_v128_load(x + xs + c)), wasm_f32x4_mul(hi, wasm_v128_load(x + xs + c + 4))));
    if (nt > 2) a2 = wasm_f32x4_add(a2, wasm_f32x4_add(wasm_f32x4_mul(lo, wasm_v128_load(x + 2 * xs + c)), wasm_f32x4_mul(hi, wasm_v128_load(x + 2 * xs + c + 4))));
    if (nt > 3) a3 = wasm_f32x4_add(a3, wasm_f32x4_add(wasm_f32x4_mul(lo, wasm_v128_load(x + 3 * xs + c)), wasm_f32x4_mul(hi, wasm_v128_load(x + 3 * xs + c + 4))));
  }
  float s[4] = { hsum(a0), hsum(a1), hsum(a2), hsum(a3) };
  for (; c < cols; c++) {
    float wc = half_to_float(w[c]);
    for (int i = 0; i < nt; i++) s[i] += wc * x[i * xs + c];
  }
  for (int i = 0; i < nt; i++) out[i] = s[i];
}

// q8: per group, Σ q·x in a group accumulator, then times the group's scale.
__attribute__((noinline)) static void dot_q8(const int8_t* w, const uint16_t* sc, const float* x, int xs, int cols, int nt, float* out) {
  v128_t a0 = wasm_f32x4_splat(0), a1 = a0, a2 = a0, a3 = a0;
  for (int g = 0, c = 0; c < cols; g++, c += 32) {
    v128_t f[8];
    bytes_to_floats(wasm_v128_load(w + c), f);
    bytes_to_floats(wasm_v128_load(w + c + 16), f + 4);
    v128_t s = wasm_f32x4_splat(half_to_float(sc[g]));
    for (int k = 0; k < 8; k++) f[k] = wasm_f32x4_mul(f[k], s);
    const float* xc = x + c;
    for (int k = 0; k < 8; k++) {
      a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(f[k], wasm_v128_load(xc + 4 * k)));
      if (nt > 1) a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(f[k], wasm_v128_load(xc + xs + 4 * k)));
      if (nt > 2) a2 = wasm_f32x4_add(a2, wasm_f32x4_mul(f[k], wasm_v128_load(xc + 2 * xs + 4 * k)));
      if (nt > 3) a3 = wasm_f32x4_add(a3, wasm_f32x4_mul(f[k], wasm_v128_load(xc + 3 * xs + 4 * k)));
    }
  }
  out[0] = hsum(a0);
  if (nt > 1) out[1] = hsum(a1);
  if (nt > 2) out[2] = hsum(a2);
  if (nt > 3) out[3] = hsum(a3);
}

// q4 of one activation row (decode): the group sum is scaled once per group.
__attribute__((noinline)) static float dot1_q4(const uint8_t* w, const uint16_t* sc, const float* xp, int cols) {
  v128_t acc = wasm_f32x4_splat(0);
  for (int g = 0, c = 0; c < cols; g++, c += 32) {
    v128_t f[8];
    q4_group(w + c / 2, f);
    const float* xc = xp + c;
    v128_t s0 = wasm_f32x4_mul(f[0], wasm_v128_load(xc));
    v128_t s1 = wasm_f32x4_mul(f[1], wasm_v128_load(xc + 4));
    s0 = wasm_f32x4_add(s0, wasm_f32x4_mul(f[2], wasm_v128_load(xc + 8)));
    s1 = wasm_f32x4_add(s1, wasm_f32x4_mul(f[3], wasm_v128_load(xc + 12)));
    s0 = wasm_f32x4_add(s0, wasm_f32x4_mul(f[4], wasm_v128_load(xc + 16)));
    s1 = wasm_f32x4_add(s1, wasm_f32x4_mul(f[5], wasm_v128_load(xc + 20)));
    s0 = wasm_f32x4_add(s0, wasm_f32x4_mul(f[6], wasm_v128_load(xc + 24)));
    s1 = wasm_f32x4_add(s1, wasm_f32x4_mul(f[7], wasm_v128_load(xc + 28)));
    acc = wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_f32x4_add(s0, s1), wasm_f32x4_splat(half_to_float(sc[g]))));
  }
  return hsum(acc);
}

// q4 of 2..4 activation rows (prefill): the group is dequantized and scaled once for all.
__attribute__((noinline)) static void dotn_q4(const uint8_t* w, const uint16_t* sc, const float* xp, int xs, int cols, int nt, float* out) {
  v128_t a0 = wasm_f32x4_splat(0), a1 = a0, a2 = a0, a3 = a0;
  for (int g = 0, c = 0; c < cols; g++, c += 32) {
    v128_t f[8];
    q4_group(w + c / 2, f);
    v128_t s = wasm_f32x4_splat(half_to_float(sc[g]));
    for (int k = 0; k < 8; k++) f[k] = wasm_f32x4_mul(f[k], s);
    const float* xc = xp + c;
    for (int k = 0; k < 8; k++) {
      a0 = wasm_f32x4_add(a0, wasm_f32x4_mul(f[k], wasm_v128_load(xc + 4 * k)));
      a1 = wasm_f32x4_add(a1, wasm_f32x4_mul(f[k], wasm_v128_load(xc + xs + 4 * k)));
      if (nt > 2) a2 = wasm_f32x4_add(a2, wasm_f32x4_mul(f[k], wasm_v128_load(xc + 2 * xs + 4 * k)));
      if (nt > 3) a3 = wasm_f32x4_add(a3, wasm_f32x4_mul(f[k], wasm_v128_load(xc + 3 * xs + 4 * k)));
    }
  }
  out[0] = hsum(a0);
  out[1] = hsum(a1);
  if (nt > 2) out[2] = hsum(a2);
  if (nt > 3) out[3] = hsum(a3);
}

// --- decode (one activation row) of q4/q8: integer dot products -------------------
// A matrix-vector product reads each weight once, so converting every code to a float costs more
// than the multiply. Instead the one activation row is put in 16-bit fixed point per group of 32
// (xq = round(x / s), s = max|x| / 32767: a relative error below 1.6e-5 of the group's largest
// |x|), and each group is one i32x4.dot_i16x8_s per 8 codes; the group's integer sum becomes a
// float once, times (weight scale · s). Codes stay exact; only x is rounded, far below the
// bounds of the tests (tests/test_wasm_kernels.py states it).
// Layout of the quantized row at xq (see quantize_x16): per group, 32 int16 values, then after all
// groups one f32 scale per group and one int32 Σ xq per group (for q4's −8 offset).

// Quantize n floats (n % 32 == 0; for q4 already deinterleaved) into the layout above.
EXPORT(quantize_x16) void quantize_x16(int16_t* xq, const float* x, int n) {
  int groups = n / 32;
  float* scales = (float*)(xq + n);
  int32_t* sums = (int32_t*)(scales + groups);
  for (int g = 0; g < groups; g++) {
    const float* xg = x + g * 32;
    v128_t m = wasm_f32x4_splat(0);
    for (int k = 0; k < 8; k++) m = wasm_f32x4_max(m, wasm_f32x4_abs(wasm_v128_load(xg + 4 * k)));
    float a = wasm_f32x4_extract_lane(m, 0), b = wasm_f32x4_extract_lane(m, 1);
    float c = wasm_f32x4_extract_lane(m, 2), d = wasm_f32x4_extract_lane(m, 3);
    float mx = a > b ? a : b; if (c > mx) mx = c; if (d > mx) mx = d;
    float s = mx / 32767.0f, inv = mx > 0 ? 32767.0f / mx : 0.0f;
    int32_t sum = 0;
    for (int k = 0; k < 32; k++) {
      float v = xg[k] * inv;
      int32_t q = (int32_t)(v < 0 ? v - 0.5f : v + 0.5f);
      xq[g * 32 + k] = (int16_t)q;
      sum += q;
    }
    scales[g] = s;
    sums[g] = sum;
  }
}

__attribute__((noinline)) static float dot1_q4_x16(const uint8_t* w, const uint16_t* sc, const int16_t* xq, int cols) {
  int groups = cols / 32;
  const float* xs = (const float*)(xq + cols);
  const int32_t* sums = (const int32_t*)(xs + groups);
  v128_t acc = wasm_f32x4_splat(0);
  for (int g = 0; g < groups; g++) {
    // The code bytes widened to 16 bits first, then split into nibbles there (a 16-bit shift is
    // one x86 instruction; an 8-bit one is emulated, and measured 2-3x slower here). Bytes 0-7
    // hold columns 0-15 (low nibble even, high odd), bytes 8-15 columns 16-31; x is deinterleaved
    // (even columns, then odd), so its four runs of 8 are at 0, 16, 8 and 24.
    v128_t q = wasm_v128_load(w + g * 16);
    v128_t a = wasm_u16x8_extend_low_u8x16(q), b = wasm_u16x8_extend_high_u8x16(q);
    const v128_t m = wasm_i16x8_splat(0x0f), eight = wasm_i16x8_splat(8);
    const int16_t* x = xq + g * 32;
    v128_t d = wasm_i32x4_add(
        wasm_i32x4_add(wasm_i32x4_dot_i16x8(wasm_i16x8_sub(wasm_v128_and(a, m), eight), wasm_v128_load(x)),
                       wasm_i32x4_dot_i16x8(wasm_i16x8_sub(wasm_u16x8_shr(a, 4), eight), wasm_v128_load(x + 16))),
        wasm_i32x4_add(wasm_i32x4_dot_i16x8(wasm_i16x8_sub(wasm_v128_and(b, m), eight), wasm_v128_load(x + 8)),
                       wasm_i32x4_dot_i16x8(wasm_i16x8_sub(wasm_u16x8_shr(b, 4), eight), wasm_v128_load(x + 24))));
    acc = wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(d), wasm_f32x4_splat(half_to_float(sc[g]) * xs[g])));
  }
  (void)sums;
  return hsum(acc);
}

__attribute__((noinline)) static float dot1_q8_x16(const int8_t* w, const uint16_t* sc, const int16_t* xq, int cols) {
  int groups = cols / 32;
  const float* xs = (const float*)(xq + cols);
  v128_t acc = wasm_f32x4_splat(0);
  for (int g = 0; g < groups; g++) {
    v128_t a = wasm_v128_load(w + g * 32), b = wasm_v128_load(w + g * 32 + 16);
    const int16_t* x = xq + g * 32;
    v128_t d = wasm_i32x4_add(
        wasm_i32x4_add(wasm_i32x4_dot_i16x8(wasm_i16x8_extend_low_i8x16(a), wasm_v128_load(x)),
                       wasm_i32x4_dot_i16x8(wasm_i16x8_extend_high_i8x16(a), wasm_v128_load(x + 8))),
        wasm_i32x4_add(wasm_i32x4_dot_i16x8(wasm_i16x8_extend_low_i8x16(b), wasm_v128_load(x + 16)),
                       wasm_i32x4_dot_i16x8(wasm_i16x8_extend_high_i8x16(b), wasm_v128_load(x + 24))));
    acc = wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_f32x4_convert_i32x4(d), wasm_f32x4_splat(half_to_float(sc[g]) * xs[g])));
  }
  return hsum(acc);
}

// Row r of a weight: out[i] = w_r · x_i for nt <= 4 rows of x.
// xq: the row quantized by quantize_x16 (one token of q4/q8), or 0 for the float path.
INLINE void dot_row(int dtype, const uint8_t* w, const uint16_t* sc, int r, int cols, const float* x, int xs,
                    const int16_t* xq, int nt, float* out) {
  switch (dtype) {
    case F32: dot_f32((const float*)w + (long)r * cols, x, xs, cols, nt, out); break;
    case F16: dot_f16((const uint16_t*)w + (long)r * cols, x, xs, cols, nt, out); break;
    case Q8:
      if (xq) out[0] = dot1_q8_x16((const int8_t*)w + (long)r * cols, sc + r * (cols / 32), xq, cols);
      else dot_q8((const int8_t*)w + (long)r * cols, sc + r * (cols / 32), x, xs, cols, nt, out);
      break;
    default:
      if (xq) out[0] = dot1_q4_x16(w + (long)r * (cols / 2), sc + r * (cols / 32), xq, cols);
      else if (nt == 1) out[0] = dot1_q4(w + (long)r * (cols / 2), sc + r * (cols / 32), x, cols);
      else dotn_q4(w + (long)r * (cols / 2), sc + r * (cols / 32), x, xs, cols, nt, out);
  }
}

// The x a q4 product reads: in each group of 32, the even columns then the odd ones
// (the order of the low and high nibbles of the group's 16 code bytes). n % 32 == 0.
EXPORT(deinterleave32) void deinterleave32(float* out, const float* x, int n) {
  for (int g = 0; g < n; g += 32) {
    for (int k = 0; k < 16; k++) { out[g + k] = x[g + 2 * k]; out[g + 16 + k] = x[g + 2 * k + 1]; }
  }
}

// out[t, r] (+)= epilogue(x[t] · w[r] (+ bias[r])) for t < T and the part's rows of [0, rows):
//   gated:   act(x·gᵀ + gate_bias) * (x·wᵀ + bias)   (gate of the same dtype and shape as w)
//   act:     act(x·wᵀ + bias);   softcap: cap * tanh(v / cap);   accumulate: out += v.
// x [T, cols] with rows xs floats apart (for q4: deinterleaved); out rows os floats apart.
// xq (q4/q8 with T == 1, else 0): x quantized by quantize_x16, for the integer dot products.
// Rows are taken in blocks of 16 and tokens in blocks of 4: a block of weights stays in
// the L1 cache while every token passes over it, and 4 tokens share each dequantized group.
EXPORT(matmul) void matmul(float* out, int os, const float* x, int xs, int T, int rows, int cols, int dtype,
                           const uint8_t* w, const uint16_t* sc, const float* bias,
                           const uint8_t* gw, const uint16_t* gsc, const float* gbias,
                           int act, float softcap, int accumulate, const int16_t* xq, int part, int parts) {
  // The part's rows: multiples of 4 so parts never share a cache line of the output much.
  int per = ((rows + parts - 1) / parts + 3) & ~3;
  int r0 = part * per, r1 = r0 + per < rows ? r0 + per : rows;
  float v[4], g[4];
  for (int rb = r0; rb < r1; rb += 16) {
    int re = rb + 16 < r1 ? rb + 16 : r1;
    for (int t0 = 0; t0 < T; t0 += 4) {
      int nt = T - t0 < 4 ? T - t0 : 4;
      const float* xt = x + (long)t0 * xs;
      for (int r = rb; r < re; r++) {
        dot_row(dtype, w, sc, r, cols, xt, xs, T == 1 ? xq : 0, nt, v);
        if (gw) dot_row(dtype, gw, gsc, r, cols, xt, xs, T == 1 ? xq : 0, nt, g);
        for (int i = 0; i < nt; i++) {
          float y = v[i] + (bias ? bias[r] : 0.0f);
          if (gw) y *= activation(act, g[i] + (gbias ? gbias[r] : 0.0f));
          else if (act) y = activation(act, y);
          if (softcap > 0) y = softcap * tanh_f(y / softcap);
          float* o = out + (long)(t0 + i) * os + r;
          *o = accumulate ? *o + y : y;
        }
      }
    }
  }
}

// --- the other ops ---------------------------------------------------------------

// out[t] (+)= table[ids[t]] * scale, each row dequantized (any storage type).
EXPORT(embed) void embed(float* out, const int32_t* ids, int T, const uint8_t* w, const uint16_t* sc, int dtype,
                         int cols, float scale, int accumulate) {
  for (int t = 0; t < T; t++) {
    long r = ids[t];
    float* o = out + (long)t * cols;
    for (int c = 0; c < cols; c++) {
      float y;
      switch (dtype) {
        case F32: y = ((const float*)w)[r * cols + c]; break;
        case F16: y = half_to_float(((const uint16_t*)w)[r * cols + c]); break;
        case Q8: y = ((const int8_t*)w)[r * cols + c] * half_to_float(sc[r * (cols / 32) + c / 32]); break;
        default: {
          uint8_t b = w[r * (cols / 2) + c / 2];
          int q = (c & 1) ? b >> 4 : b & 15;
          y = (q - 8) * half_to_float(sc[r * (cols / 32) + c / 32]);
        }
      }
      y *= scale;
      o[c] = accumulate ? o[c] + y : y;
    }
  }
}

// RMSNorm (kind 0) or LayerNorm (kind 1) over n values, `heads` rows of n per token
// (q/k norms over head_dim), weight [n] or per head [heads, n]; LayerNorm in two passes.
EXPORT(norm) void norm(float* out, const float* x, int T, int n, int heads, const float* weight, const float* bias,
                       int per_head, int kind, float eps, int accumulate) {
  for (int row = 0; row < T * heads; row++) {
    const float* xr = x + (long)row * n;
    float* o = out + (long)row * n;
    const float* wr = weight + (per_head ? (row % heads) * n : 0);
    const float* br = bias ? bias + (per_head ? (row % heads) * n : 0) : 0;
    float mean = 0;
    if (kind == 1) {
      v128_t s = wasm_f32x4_splat(0);
      int i = 0;
      for (; i + 4 <= n; i += 4) s = wasm_f32x4_add(s, wasm_v128_load(xr + i));
      float m = hsum(s);
      for (; i < n; i++) m += xr[i];
      mean = m / n;
    }
    v128_t s2 = wasm_f32x4_splat(0), mv = wasm_f32x4_splat(mean);
    int i = 0;
    for (; i + 4 <= n; i += 4) { v128_t d = wasm_f32x4_sub(wasm_v128_load(xr + i), mv); s2 = wasm_f32x4_add(s2, wasm_f32x4_mul(d, d)); }
    float var = hsum(s2);
    for (; i < n; i++) { float d = xr[i] - mean; var += d * d; }
    float inv = 1.0f / __builtin_sqrtf(var / n + eps);
    for (i = 0; i < n; i++) {
      float y = (xr[i] - mean) * inv * wr[i];
      if (br) y += br[i];
      o[i] = accumulate ? o[i] + y : y;
    }
  }
}

// RoPE (rotate-half on the first 2*half dims of each head) and the KV-cache append for
// tokens at positions pos0..: q_out[t] = rotate(q[t]) (when half > 0), k_cache[pos mod rows] =
// rotate(k[t]), v_cache[pos mod rows] = v[t]. table [positions, half, 2] (cos, sin).
// rows: the cache's rows, a ring on a sliding-window layer (runtime/graph.js kvCacheLayout);
// rows <= 0 (a caller that passes none) is a cache as long as the positions.
EXPORT(rope) void rope(const float* q, const float* k, const float* v, float* q_out, float* kc, float* vc,
                       const float* table, int T, int pos0, int heads, int kv_heads, int hd, int half, int rows) {
  int kvd = kv_heads * hd;
  for (int t = 0; t < T; t++) {
    int pos = pos0 + t;
    int row = rows > 0 ? pos % rows : pos;
    const float* cs = table + (long)pos * half * 2;
    if (half > 0) {
      for (int h = 0; h < heads; h++) {
        const float* qi = q + (long)t * heads * hd + h * hd;
        float* qo = q_out + (long)t * heads * hd + h * hd;
        for (int d = 0; d < half; d++) {
          float c = cs[2 * d], s = cs[2 * d + 1];
          qo[d] = qi[d] * c - qi[d + half] * s;
          qo[d + half] = qi[d + half] * c + qi[d] * s;
        }
        for (int d = 2 * half; d < hd; d++) qo[d] = qi[d];
      }
    }
    for (int h = 0; h < kv_heads; h++) {
      const float* ki = k + (long)t * kvd + h * hd;
      float* ko = kc + (long)row * kvd + h * hd;
      for (int d = 0; d < half; d++) {
        float c = cs[2 * d], s = cs[2 * d + 1];
        ko[d] = ki[d] * c - ki[d + half] * s;
        ko[d + half] = ki[d + half] * c + ki[d] * s;
      }
      for (int d = 2 * half; d < hd; d++) ko[d] = ki[d];
    }
    const float* vi = v + (long)t * kvd;
    float* vo = vc + (long)row * kvd;
    for (int e = 0; e < kvd; e++) vo[e] = vi[e];
  }
}

INLINE float dot_hd(const float* a, const float* b, int n) {
  v128_t s = wasm_f32x4_splat(0);
  int i = 0;
  for (; i + 4 <= n; i += 4) s = wasm_f32x4_add(s, wasm_f32x4_mul(wasm_v128_load(a + i), wasm_v128_load(b + i)));
  float r = hsum(s);
  for (; i < n; i++) r += a[i] * b[i];
  return r;
}

// Causal attention over the KV cache, grouped KV heads: token t (position pos0 + t),
// head h (kv head h / (heads / kv_heads)) sees keys j <= pos (and j > pos - window when
// window > 0): s_j = q·k_j * scale (softcap * tanh(s / softcap) when softcap > 0), softmax,
// out = Σ p_j v_j. The part's share is a range of (token, head) pairs; `scratch` holds
// `positions` scores for each part (parts * positions floats).
// `positions`: the cache's rows; key j lies in row j mod positions, a ring on a sliding-window
// layer (runtime/graph.js kvCacheLayout), the whole context elsewhere. The keys a query sees
// (at most the window, or the context) never outnumber the rows.
EXPORT(attention) void attention(float* out, const float* q, const float* kc, const float* vc, int T, int pos0,
                                 int heads, int kv_heads, int hd, float scale, float softcap, int window,
                                 float* scratch, int positions, int part, int parts) {
  int group = heads / kv_heads, kvd = kv_heads * hd;
  int n = T * heads, per = (n + parts - 1) / parts;
  int i0 = part * per, i1 = i0 + per < n ? i0 + per : n;
  float* sc = scratch + (long)part * positions;
  for (int i = i0; i < i1; i++) {
    int t = i / heads, h = i % heads, pos = pos0 + t;
    int j0 = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
    const float* qh = q + (long)t * heads * hd + h * hd;
    int kvo = (h / group) * hd;
    int n = pos - j0 + 1, r0 = j0 % positions;  // keys j0..pos; key j0 + i is in row r0 + i, wrapped
    float m = -3.4e38f;
    for (int i = 0, r = r0; i < n; i++, r = r + 1 == positions ? 0 : r + 1) {
      float s = dot_hd(qh, kc + (long)r * kvd + kvo, hd) * scale;
      if (softcap > 0) s = softcap * tanh_f(s / softcap);
      sc[i] = s;
      if (s > m) m = s;
    }
    float sum = 0;
    for (int i = 0; i < n; i++) { float e = exp_f(sc[i] - m); sc[i] = e; sum += e; }
    float inv = 1.0f / sum;
    float* o = out + (long)t * heads * hd + h * hd;
    int d = 0;
    for (; d + 4 <= hd; d += 4) {
      v128_t acc = wasm_f32x4_splat(0);
      for (int i = 0, r = r0; i < n; i++, r = r + 1 == positions ? 0 : r + 1)
        acc = wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_f32x4_splat(sc[i]), wasm_v128_load(vc + (long)r * kvd + kvo + d)));
      wasm_v128_store(o + d, wasm_f32x4_mul(acc, wasm_f32x4_splat(inv)));
    }
    for (; d < hd; d++) {
      float acc = 0;
      for (int i = 0, r = r0; i < n; i++, r = r + 1 == positions ? 0 : r + 1) acc += sc[i] * vc[(long)r * kvd + kvo + d];
      o[d] = acc * inv;
    }
  }
}

// --- sampling ---------------------------------------------------------------------

// The k largest of logits[0..n) where mask (a bitmask of allowed ids, or 0 for all)
// allows, descending, the lower id first among equal values: ids_out[i], vals_out[i].
// Returns how many were found (< k when fewer ids are allowed). k >= 1.
EXPORT(topk) int topk(const float* logits, int n, const uint32_t* mask, int k, int32_t* ids_out, float* vals_out) {
  int m = 0;
  for (int i = 0; i < n; i++) {
    if (mask && !((mask[i >> 5] >> (i & 31)) & 1)) continue;
    float v = logits[i];
    if (v != v) continue;  // NaN never wins
    if (m == k && !(v > vals_out[k - 1])) continue;
    int j = m < k ? m++ : k - 1;
    while (j > 0 && v > vals_out[j - 1]) { vals_out[j] = vals_out[j - 1]; ids_out[j] = ids_out[j - 1]; j--; }
    vals_out[j] = v;
    ids_out[j] = i;
  }
  return m;
}
