// The quantizer arithmetic of libpackkv, for host (C++) and device (CUDA) code alike: how
// a scale group's values map to b-bit codes and back. The CPU encoder
// (codec/quantize.cpp), the CUDA encoder and every decoder use these functions, so that
// both encoders round identically and write the same bytes. Where the codes, zero points
// and scales sit in a blob is the byte layout's business (format/shape.h, round_tile.h).
//
// Quantization (PACKKV.md section 3.1, default "/scale, -min_int" variant): for one
// scale group G (a token across all KV heads, or a token of one KV head),
//     s = float((double(max G) - double(min G)) * double(r))
//     z = rint(min G / s)                    (int32, may be negative)
//     q = clamp(rint(x / s) - z, 0, 2^b - 1) (round half to even)
//     x^ = float(q + z) * s
// so |x - x^| <= s/2 <= r * range / 2 (up to the fp32 rounding of s and of (q + z) * s)
// whenever b >= bits_for_rel_scale(r).
// Constant groups are exact: s = x, z = 1, q = 0 (s = z = 0 when x = 0). A group whose
// range is so small against its magnitude that |min/s| >= 2^30 (only possible for
// fp32 data) gets s = max|x| / 2^29 instead, an error of at most max|x| * 2^-30; when
// r * range underflows to zero, s is the smallest subnormal (exact for such data).
// The compact encoding of (z, s) (16 + 16 bits) has its own rule: group_affine_compact.
#ifndef PACKKV_FORMAT_AFFINE_H
#define PACKKV_FORMAT_AFFINE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/hd.h"

namespace packkv {
namespace fmt {

struct Affine {
  float scale;
  int32_t zero;
};

PACKKV_HD float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

PACKKV_HD float rint_f(float x) {
#if defined(__CUDA_ARCH__)
  return rintf(x);
#else
  return __builtin_rintf(x);
#endif
}

// Zero point and scale of a group with minimum xmin and maximum xmax (both finite).
PACKKV_HD Affine group_affine(float xmin, float xmax, float rel_scale) {
  Affine a;
  if (!(xmax > xmin)) {  // constant group: exact
    // All-zero groups store +0.0 whatever the signs of their zeros, so that encoders
    // whose min/max reductions pick different signed zeros write the same bytes.
    a.scale = xmin == 0.0f ? 0.0f : xmin;
    a.zero = xmin == 0.0f ? 0 : 1;
    return a;
  }
  float s = (float)(((double)xmax - (double)xmin) * (double)rel_scale);
  // r * range below the smallest subnormal: every subnormal is a multiple of it, so
  // such groups are then quantized exactly (their range / s is still < 1/r).
  if (!(s > 0.0f)) s = 1.40129846e-45f;
  float amax = xmax > -xmin ? xmax : -xmin;
  if (!(div_rn(amax, s) < 1073741824.0f)) s = div_rn(amax, 536870912.0f);  // 2^30, 2^29
  a.scale = s;
  a.zero = (int32_t)rint_f(div_rn(xmin, s));
  return a;
}

// ---- compact zero points and scales (ZsFormat::kCompact of format/shape.h) ----
//
// A 16-bit scale field holds bits 30..15 of the fp32 scale s >= 0: its 8 exponent bits
// and its 8 leading fraction bits. Decoding shifts them back (the low 15 fraction bits
// become zero), so the stored scale s16 is s rounded toward zero, s16 > s * (1 - 2^-8)
// for a normal s, and both encoders and every decoder agree bit for bit.
PACKKV_HD float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  memcpy(&f, &u, 4);
  return f;
#endif
}
PACKKV_HD uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
#endif
}
PACKKV_HD uint16_t scale16_encode(float s) { return (uint16_t)((float_to_bits(s) >> 15) & 0xFFFFu); }
PACKKV_HD float scale16_decode(uint16_t f) { return bits_to_float((uint32_t)f << 15); }

// Zero point and scale of a group for the compact fields: an int16 zero point and a
// scale that scale16_encode stores exactly. Returns false when the group has none that
// keeps the guarantees of group_affine (the block is then stored with wide fields):
//   - all-zero group: s = z = 0 (as group_affine);
//   - constant group x != 0: s = 2^(e - 14) with e the binary exponent of x, so that
//     z = x / s lies in [2^14, 2^15) in magnitude; exact when x has at most 15
//     significant bits (every fp16 and bf16 value; an fp32 value or an fp32-subnormal
//     one otherwise returns false);
//   - otherwise s = group_affine's scale rounded down to its stored value (the same
//     r * range before rounding), z = rint(min / s), so |x - x^| <= s/2 <= r * range / 2
//     still holds; returns false when that s is not a normal fp32 number (r * range
//     below 2^-126: only subnormal-range fp32 or bf16 data) or |z| > 32767 (a group
//     far from zero against its range).
// Codes then reach at most range / s + 1 < (1/r) / (1 - 2^-8) + 1: the code width
// derived for a compact cache leaves room for that (api/config.cpp).
PACKKV_HD bool group_affine_compact(float xmin, float xmax, float rel_scale, Affine* out) {
  Affine a;
  if (!(xmax > xmin)) {
    if (xmin == 0.0f) {
      a.scale = 0.0f;
      a.zero = 0;
      *out = a;
      return true;
    }
    const uint32_t u = float_to_bits(xmin);
    const int e = (int)((u >> 23) & 0xFFu);  // biased exponent
    const uint32_t sig = (u & 0x7FFFFFu) | 0x800000u;
    if (e < 1 + 14 || (sig & 0x1FFu) != 0) return false;  // s not normal, or > 15 significant bits
    a.scale = bits_to_float((uint32_t)(e - 14) << 23);     // 2^(e - 127 - 14): 8 fraction bits zero
    const int32_t m = (int32_t)(sig >> 9);                 // in [2^14, 2^15)
    a.zero = (u >> 31) ? -m : m;
    *out = a;
    return true;
  }
  float s = (float)(((double)xmax - (double)xmin) * (double)rel_scale);
  if (!(s >= 1.17549435e-38f)) return false;  // FLT_MIN: a subnormal s loses precision in 16 bits
  s = scale16_decode(scale16_encode(s));
  const float zf = rint_f(div_rn(xmin, s));
  if (!(zf >= -32767.0f && zf <= 32767.0f)) return false;
  a.scale = s;
  a.zero = (int32_t)zf;
  *out = a;
  return true;
}

PACKKV_HD uint32_t quantize(float x, Affine a, uint32_t qmax) {
  if (a.scale == 0.0f) return 0;  // the all-zero group (constant groups give x / s = 1 = z)
  int64_t q = (int64_t)rint_f(div_rn(x, a.scale)) - (int64_t)a.zero;
  if (q < 0) q = 0;
  if (q > (int64_t)qmax) q = (int64_t)qmax;
  return (uint32_t)q;
}

// x^ = (q + z) * s, computed exactly in double (equal to the fp32 product whenever
// |q + z| < 2^24) and clamped to the finite fp32 range: a value near FLT_MAX whose
// grid point lies beyond it reconstructs as +-FLT_MAX, which is closer to it.
PACKKV_HD float dequantize(uint32_t q, Affine a) {
  double v = (double)((int64_t)q + (int64_t)a.zero) * (double)a.scale;
  const double kMax = 3.4028234663852886e38;  // FLT_MAX
  v = v > kMax ? kMax : (v < -kMax ? -kMax : v);
  return (float)v;
}

}  // namespace fmt
}  // namespace packkv

#endif  // PACKKV_FORMAT_AFFINE_H
