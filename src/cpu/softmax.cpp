// softmax_row (cpu/softmax.h) in the three instruction sets of cpu/isa.h. The SIMD paths
// share one exp (exp_neg_*): x = k ln2 + r with k = rint(x / ln2), |r| <= ln2 / 2
// (Cody-Waite: ln2 split in a high part with trailing zero bits, so k * ln2_hi is exact,
// and a low part), e^r by its Taylor polynomial of degree 11 (truncation error
// |r|^12 / 12! * e^|r| < 1e-14 relative), times 2^k built in the exponent bits. Inputs are
// x = scale * s_t - max <= 0 (up to the rounding of the max); below -708 (where 2^k would
// leave the normal range, and e^x < 1e-307 weighs nothing against the sum >= 1) the result
// is 0, as for -inf; NaN stays NaN. The SIMD paths multiply by 1 / sum (one division a
// row) where the portable path divides.
#include "cpu/softmax.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/isa.h"
#include "cpu/simd.h"

namespace packkv {

namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();
constexpr double kExpLow = -708.0;
constexpr double kLog2e = 1.4426950408889634;
constexpr double kLn2Hi = 0x1.62e42fee00000p-1;   // ln 2 rounded to 32 significant bits
constexpr double kLn2Lo = 0x1.a39ef35793c76p-33;  // ln 2 - kLn2Hi
// 1/k! for k = 11 down to 2 (the Horner steps; the last two coefficients are 1).
constexpr double kInvFact[10] = {1.0 / 39916800, 1.0 / 3628800, 1.0 / 362880, 1.0 / 40320, 1.0 / 5040,
                                 1.0 / 720,      1.0 / 120,     1.0 / 24,     1.0 / 6,     1.0 / 2};

double softmax_portable(double* s, int64_t len, float scale, float* probs) {
  double mx = kNegInf;
  for (int64_t t = 0; t < len; ++t) mx = std::max(mx, (double)scale * s[t]);
  if (mx == kNegInf) {
    std::fill(probs, probs + len, 0.0f);
    return kNegInf;
  }
  double sum = 0.0;
  for (int64_t t = 0; t < len; ++t) sum += (s[t] = std::exp((double)scale * s[t] - mx));
  for (int64_t t = 0; t < len; ++t) probs[t] = (float)(s[t] / sum);
  return mx + std::log(sum);
}

#if defined(PACKKV_X86_SIMD)

// ---- AVX2 + FMA: 4 tokens a vector ----

PACKKV_AVX2 PACKKV_ALWAYS_INLINE __m256d exp_neg_avx2(__m256d x) {
  const __m256d lo = _mm256_set1_pd(kExpLow);
  const __m256d xc = _mm256_max_pd(lo, x);  // NaN: x (the second operand) stays
  const __m256d k = _mm256_round_pd(_mm256_mul_pd(xc, _mm256_set1_pd(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256d r = _mm256_fnmadd_pd(k, _mm256_set1_pd(kLn2Hi), xc);
  r = _mm256_fnmadd_pd(k, _mm256_set1_pd(kLn2Lo), r);
  __m256d p = _mm256_set1_pd(kInvFact[0]);
  for (int i = 1; i < 10; ++i) p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(kInvFact[i]));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0));
  p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0));
  // 2^k, k in [-1021, 0]: 2^52 + 1023 + k holds 1023 + k in its low bits
  const __m256i e = _mm256_slli_epi64(_mm256_castpd_si256(_mm256_add_pd(k, _mm256_set1_pd(0x1p52 + 1023.0))), 52);
  const __m256d y = _mm256_mul_pd(p, _mm256_castsi256_pd(e));
  return _mm256_andnot_pd(_mm256_cmp_pd(x, lo, _CMP_LT_OQ), y);
}

PACKKV_AVX2 double softmax_avx2(double* s, int64_t len, float scale, float* probs) {
  const __m256d sc = _mm256_set1_pd((double)scale);
  __m256d m4 = _mm256_set1_pd(kNegInf);
  int64_t t = 0;
  for (; t + 4 <= len; t += 4) m4 = _mm256_max_pd(_mm256_mul_pd(sc, _mm256_loadu_pd(s + t)), m4);
  alignas(32) double m[4];
  _mm256_store_pd(m, m4);
  double mx = std::max(std::max(m[0], m[1]), std::max(m[2], m[3]));
  for (; t < len; ++t) mx = std::max(mx, (double)scale * s[t]);
  if (mx == kNegInf) {
    std::fill(probs, probs + len, 0.0f);
    return kNegInf;
  }
  const __m256d mv = _mm256_set1_pd(mx);
  __m256d sum4 = _mm256_setzero_pd();
  for (t = 0; t + 4 <= len; t += 4) {
    const __m256d e = exp_neg_avx2(_mm256_sub_pd(_mm256_mul_pd(sc, _mm256_loadu_pd(s + t)), mv));
    _mm256_storeu_pd(s + t, e);
    sum4 = _mm256_add_pd(sum4, e);
  }
  alignas(32) double part[4];
  _mm256_store_pd(part, sum4);
  double sum = (part[0] + part[1]) + (part[2] + part[3]);
  for (int64_t u = t; u < len; ++u) sum += (s[u] = _mm256_cvtsd_f64(exp_neg_avx2(_mm256_set1_pd((double)scale * s[u] - mx))));
  const double inv = 1.0 / sum;  // e * (1 / sum): within an ulp of e / sum, far below the fp32 rounding
  const __m256d iv = _mm256_set1_pd(inv);
  for (t = 0; t + 4 <= len; t += 4) _mm_storeu_ps(probs + t, _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_loadu_pd(s + t), iv)));
  for (; t < len; ++t) probs[t] = (float)(s[t] * inv);
  return mx + std::log(sum);
}

// ---- AVX-512: 8 tokens a vector ----

PACKKV_AVX512 PACKKV_ALWAYS_INLINE __m512d exp_neg_avx512(__m512d x) {
  const __m512d lo = _mm512_set1_pd(kExpLow);
  const __m512d xc = _mm512_max_pd(lo, x);  // NaN: x (the second operand) stays
  const __m512d k = _mm512_roundscale_pd(_mm512_mul_pd(xc, _mm512_set1_pd(kLog2e)), _MM_FROUND_TO_NEAREST_INT);
  __m512d r = _mm512_fnmadd_pd(k, _mm512_set1_pd(kLn2Hi), xc);
  r = _mm512_fnmadd_pd(k, _mm512_set1_pd(kLn2Lo), r);
  __m512d p = _mm512_set1_pd(kInvFact[0]);
  for (int i = 1; i < 10; ++i) p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(kInvFact[i]));
  p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0));
  p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0));
  const __m512i e = _mm512_slli_epi64(_mm512_castpd_si512(_mm512_add_pd(k, _mm512_set1_pd(0x1p52 + 1023.0))), 52);
  const __m512d y = _mm512_mul_pd(p, _mm512_castsi512_pd(e));
  return _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(x, lo, _CMP_NLT_UQ), y);
}

PACKKV_AVX512 double softmax_avx512(double* s, int64_t len, float scale, float* probs) {
  const __m512d sc = _mm512_set1_pd((double)scale);
  __m512d m8 = _mm512_set1_pd(kNegInf);
  int64_t t = 0;
  for (; t + 8 <= len; t += 8) m8 = _mm512_max_pd(_mm512_mul_pd(sc, _mm512_loadu_pd(s + t)), m8);
  double mx = _mm512_reduce_max_pd(m8);
  for (; t < len; ++t) mx = std::max(mx, (double)scale * s[t]);
  if (mx == kNegInf) {
    std::fill(probs, probs + len, 0.0f);
    return kNegInf;
  }
  const __m512d mv = _mm512_set1_pd(mx);
  __m512d sum8 = _mm512_setzero_pd();
  for (t = 0; t + 8 <= len; t += 8) {
    const __m512d e = exp_neg_avx512(_mm512_sub_pd(_mm512_mul_pd(sc, _mm512_loadu_pd(s + t)), mv));
    _mm512_storeu_pd(s + t, e);
    sum8 = _mm512_add_pd(sum8, e);
  }
  double sum = _mm512_reduce_add_pd(sum8);
  for (int64_t u = t; u < len; ++u)
    sum += (s[u] = _mm512_cvtsd_f64(exp_neg_avx512(_mm512_set1_pd((double)scale * s[u] - mx))));
  const double inv = 1.0 / sum;
  const __m512d iv = _mm512_set1_pd(inv);
  for (t = 0; t + 8 <= len; t += 8) _mm256_storeu_ps(probs + t, _mm512_cvtpd_ps(_mm512_mul_pd(_mm512_loadu_pd(s + t), iv)));
  for (; t < len; ++t) probs[t] = (float)(s[t] * inv);
  return mx + std::log(sum);
}

#endif  // PACKKV_X86_SIMD

}  // namespace

double softmax_row(double* scores, int64_t len, float scale, float* probs) {
#if defined(PACKKV_X86_SIMD)
  const CpuIsa isa = cpu_isa();
  if (isa == CpuIsa::kAvx512) return softmax_avx512(scores, len, scale, probs);
  if (isa == CpuIsa::kAvx2) return softmax_avx2(scores, len, scale, probs);
#endif
  return softmax_portable(scores, len, scale, probs);
}

}  // namespace packkv
