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
#ifndef PACKKV_FORMAT_AFFINE_H
#define PACKKV_FORMAT_AFFINE_H

#include <stddef.h>
#include <stdint.h>

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
