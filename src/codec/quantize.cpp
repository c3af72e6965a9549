#include "codec/quantize.h"

#include <algorithm>
#include <cmath>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace packkv {

namespace {

constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: (y + kRound) - kRound = rint(y) for |y| <= 2^22

// Minimum and maximum of n finite floats (the caller has rejected NaN and infinity).
// When the extreme is zero its sign depends on the order of the reductions; no caller
// output does (group_affine and group_affine_compact give the same fields for -0 and
// +0, the quantizer uses |lo| and |hi| only).
void min_max(const float* x, int n, float* lo_out, float* hi_out) {
  float lo = x[0], hi = x[0];
  int i = 0;
#if defined(__SSE2__)
  if (n >= 4) {
    __m128 vlo = _mm_loadu_ps(x), vhi = vlo;
    i = 4;
    if (n >= 20) {  // 16 values a step, two chains
      __m128 vlo1 = vlo, vhi1 = vhi;
      for (; i + 16 <= n; i += 16) {
        const __m128 a = _mm_loadu_ps(x + i), b = _mm_loadu_ps(x + i + 4);
        const __m128 c = _mm_loadu_ps(x + i + 8), d = _mm_loadu_ps(x + i + 12);
        vlo = _mm_min_ps(vlo, _mm_min_ps(a, b));
        vhi = _mm_max_ps(vhi, _mm_max_ps(a, b));
        vlo1 = _mm_min_ps(vlo1, _mm_min_ps(c, d));
        vhi1 = _mm_max_ps(vhi1, _mm_max_ps(c, d));
      }
      vlo = _mm_min_ps(vlo, vlo1);
      vhi = _mm_max_ps(vhi, vhi1);
    }
    for (; i + 4 <= n; i += 4) {
      const __m128 v = _mm_loadu_ps(x + i);
      vlo = _mm_min_ps(vlo, v);
      vhi = _mm_max_ps(vhi, v);
    }
    float l[4], h[4];
    _mm_storeu_ps(l, vlo);
    _mm_storeu_ps(h, vhi);
    lo = std::min(std::min(l[0], l[1]), std::min(l[2], l[3]));
    hi = std::max(std::max(h[0], h[1]), std::max(h[2], h[3]));
  }
#endif
  for (; i < n; ++i) {
    lo = x[i] < lo ? x[i] : lo;
    hi = x[i] > hi ? x[i] : hi;
  }
  *lo_out = lo;
  *hi_out = hi;
}

// q = clamp(rint(x / s) - z, 0, qmax) for |x / s| <= 2^22 and |z| < 2^22: the same
// values as fmt::quantize (IEEE division, round half to even, exact integer steps).
void quantize_fast(const float* x, int n, float s, float z, float qmax, uint8_t* q) {
  int i = 0;
#if defined(__SSE2__)
  // (y + kRound) - (kRound + z) = rint(y) - z exactly: kRound + z and y + kRound are integers
  // in [2^23, 2^24] (exact in fp32), their difference an integer below 2^23 in magnitude
  const __m128 vs = _mm_set1_ps(s), vrz = _mm_set1_ps(kRound + z), vr = _mm_set1_ps(kRound);
  const __m128 v0 = _mm_setzero_ps(), vq = _mm_set1_ps(qmax);
  for (; i + 16 <= n; i += 16) {
    __m128i w[4];
    for (int k = 0; k < 4; ++k) {
      __m128 y = _mm_div_ps(_mm_loadu_ps(x + i + 4 * k), vs);
      y = _mm_sub_ps(_mm_add_ps(y, vr), vrz);
      y = _mm_min_ps(_mm_max_ps(y, v0), vq);
      w[k] = _mm_cvttps_epi32(y);
    }
    const __m128i lo = _mm_packs_epi32(w[0], w[1]), hi = _mm_packs_epi32(w[2], w[3]);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), _mm_packus_epi16(lo, hi));
  }
#endif
  for (; i < n; ++i) {
    float y = ((x[i] / s + kRound) - kRound) - z;
    y = y < 0.0f ? 0.0f : y;
    y = y > qmax ? qmax : y;
    q[i] = (uint8_t)(int)y;
  }
}

}  // namespace

bool quantize_tokens(const float* x, int n_tokens, int n_heads, int head_dim, int scale_groups,
                     float rel_scale, int bits, bool compact, uint8_t* codes, fmt::Affine* affine) {
  const int row = n_heads * head_dim;
  const int group_len = row / scale_groups;  // values per scale group
  const uint32_t qmax = (1u << bits) - 1u;
  for (int t = 0; t < n_tokens; ++t) {
    for (int g = 0; g < scale_groups; ++g) {
      const float* xs = x + (size_t)t * row + (size_t)g * group_len;
      uint8_t* qs = codes + (size_t)t * row + (size_t)g * group_len;
      float lo, hi;
      min_max(xs, group_len, &lo, &hi);
      fmt::Affine a;
      if (!compact) {
        a = fmt::group_affine(lo, hi, rel_scale);
      } else if (!fmt::group_affine_compact(lo, hi, rel_scale, &a)) {
        return false;
      }
      affine[(size_t)g * n_tokens + t] = a;
      const float amax = std::max(std::fabs(lo), std::fabs(hi));
      if (a.scale != 0.0f && amax / std::fabs(a.scale) < 4194304.0f) {
        quantize_fast(xs, group_len, a.scale, (float)a.zero, (float)qmax, qs);
      } else {
        for (int i = 0; i < group_len; ++i) qs[i] = (uint8_t)fmt::quantize(xs[i], a, qmax);
      }
    }
  }
  return true;
}

}  // namespace packkv
