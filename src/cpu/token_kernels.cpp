// The token kernels of cpu/token_kernels.h: portable, AVX2 + FMA and AVX-512 versions
// (SIMD: functions with a target attribute, cpu/simd.h).
#include "cpu/token_kernels.h"

#include <cmath>

#include "cpu/simd.h"
#include "format/round_tile.h"

namespace packkv {

namespace {

constexpr int P = fmt::kPackTokens;
constexpr float kWeightLimit = 0x1p100f;  // weights at or above: the caller rescales

// ---------------------------------------------------------------------------
// Portable
// ---------------------------------------------------------------------------

void fold_round_portable(const float* acc, int n_q, const double* unscale, const double* min_term,
                         const double* sum_q, const double* bias, const int32_t* zero, const float* scale,
                         double* out) {
  for (int j = 0; j < n_q; ++j)
    for (int i = 0; i < P; ++i) {
      const double u = (double)acc[j * P + i] * unscale[j] + min_term[j] + (double)zero[i] * sum_q[j];
      out[j * P + i] = u * (double)scale[i] + bias[j];
    }
}

bool weights_portable(const float* probs, size_t ld, int n_q, int n, const int32_t* orig, const float* scale,
                      const int32_t* zero, float* w, double* wsum, double* beta) {
  const int rounds = n / P;
  for (int j = 0; j < n_q; ++j) {
    const float* pj = probs + (size_t)j * ld;
    double b = 0.0;
    for (int r = 0; r < rounds; ++r) {
      double ws = 0.0;
      for (int slot = r * P; slot < (r + 1) * P; ++slot) {
        const float x = pj[orig ? orig[slot] : slot] * scale[slot];
        if (!(std::fabs(x) < kWeightLimit)) return false;
        w[(size_t)j * n + slot] = x;
        ws += (double)x;
        b += (double)x * (double)zero[slot];
      }
      wsum[(size_t)j * rounds + r] = ws;
    }
    beta[j] = b;
  }
  return true;
}

void add_part_portable(const float* part, int n_q, int d, double unscale, const double* beta, double* out) {
  for (int j = 0; j < n_q; ++j)
    for (int ch = 0; ch < d; ++ch) out[(size_t)j * d + ch] += (double)part[(size_t)j * d + ch] * unscale + beta[j];
}

#if defined(PACKKV_X86_SIMD)

// ---- AVX2 + FMA ----

PACKKV_AVX2 PACKKV_ALWAYS_INLINE double hsum_avx2(__m256d v) {
  const __m128d h = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}

PACKKV_AVX2 void fold_round_avx2(const float* acc, int n_q, const double* unscale, const double* min_term,
                                 const double* sum_q, const double* bias, const int32_t* zero, const float* scale,
                                 double* out) {
  __m256d z[4], s[4];
  for (int k = 0; k < 4; ++k) {
    z[k] = _mm256_cvtepi32_pd(_mm_loadu_si128(reinterpret_cast<const __m128i*>(zero + 4 * k)));
    s[k] = _mm256_cvtps_pd(_mm_loadu_ps(scale + 4 * k));
  }
  for (int j = 0; j < n_q; ++j) {
    const __m256d un = _mm256_set1_pd(unscale[j]), mt = _mm256_set1_pd(min_term[j]), sq = _mm256_set1_pd(sum_q[j]),
                  b = _mm256_set1_pd(bias[j]);
    for (int k = 0; k < 4; ++k) {
      const __m256d a = _mm256_cvtps_pd(_mm_loadu_ps(acc + j * P + 4 * k));
      const __m256d u = _mm256_fmadd_pd(z[k], sq, _mm256_fmadd_pd(a, un, mt));
      _mm256_storeu_pd(out + j * P + 4 * k, _mm256_fmadd_pd(u, s[k], b));
    }
  }
}

PACKKV_AVX2 bool weights_avx2(const float* probs, size_t ld, int n_q, int n, const int32_t* orig, const float* scale,
                              const int32_t* zero, float* w, double* wsum, double* beta) {
  const int rounds = n / P;
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)), limit = _mm256_set1_ps(kWeightLimit);
  __m256 bad = _mm256_setzero_ps();
  for (int j = 0; j < n_q; ++j) {
    const float* pj = probs + (size_t)j * ld;
    __m256d b0 = _mm256_setzero_pd(), b1 = _mm256_setzero_pd();
    for (int r = 0; r < rounds; ++r) {
      __m256d rs = _mm256_setzero_pd();
      for (int h = 0; h < P; h += 8) {
        const int slot = r * P + h;
        const __m256 p = orig ? _mm256_i32gather_ps(pj, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(orig + slot)), 4)
                              : _mm256_loadu_ps(pj + slot);
        const __m256 x = _mm256_mul_ps(p, _mm256_loadu_ps(scale + slot));
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_and_ps(x, abs_mask), limit, _CMP_NLT_UQ));
        _mm256_storeu_ps(w + (size_t)j * n + slot, x);
        const __m256d x0 = _mm256_cvtps_pd(_mm256_castps256_ps128(x)), x1 = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
        const __m256i zi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(zero + slot));
        b0 = _mm256_fmadd_pd(x0, _mm256_cvtepi32_pd(_mm256_castsi256_si128(zi)), b0);
        b1 = _mm256_fmadd_pd(x1, _mm256_cvtepi32_pd(_mm256_extracti128_si256(zi, 1)), b1);
        rs = _mm256_add_pd(rs, _mm256_add_pd(x0, x1));
      }
      wsum[(size_t)j * rounds + r] = hsum_avx2(rs);
    }
    beta[j] = hsum_avx2(_mm256_add_pd(b0, b1));
  }
  return _mm256_movemask_ps(bad) == 0;
}

PACKKV_AVX2 void add_part_avx2(const float* part, int n_q, int d, double unscale, const double* beta, double* out) {
  const __m256d un = _mm256_set1_pd(unscale);
  for (int j = 0; j < n_q; ++j) {
    const __m256d b = _mm256_set1_pd(beta[j]);
    const float* pj = part + (size_t)j * d;
    double* oj = out + (size_t)j * d;
    for (int ch = 0; ch < d; ch += 4)
      _mm256_storeu_pd(oj + ch, _mm256_add_pd(_mm256_loadu_pd(oj + ch), _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(pj + ch)), un, b)));
  }
}

// ---- AVX-512 ----

PACKKV_AVX512 void fold_round_avx512(const float* acc, int n_q, const double* unscale, const double* min_term,
                                     const double* sum_q, const double* bias, const int32_t* zero, const float* scale,
                                     double* out) {
  __m512d z[2], s[2];
  for (int k = 0; k < 2; ++k) {
    z[k] = _mm512_cvtepi32_pd(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(zero + 8 * k)));
    s[k] = _mm512_cvtps_pd(_mm256_loadu_ps(scale + 8 * k));
  }
  for (int j = 0; j < n_q; ++j) {
    const __m512d un = _mm512_set1_pd(unscale[j]), mt = _mm512_set1_pd(min_term[j]), sq = _mm512_set1_pd(sum_q[j]),
                  b = _mm512_set1_pd(bias[j]);
    for (int k = 0; k < 2; ++k) {
      const __m512d a = _mm512_cvtps_pd(_mm256_loadu_ps(acc + j * P + 8 * k));
      const __m512d u = _mm512_fmadd_pd(z[k], sq, _mm512_fmadd_pd(a, un, mt));
      _mm512_storeu_pd(out + j * P + 8 * k, _mm512_fmadd_pd(u, s[k], b));
    }
  }
}

PACKKV_AVX512 bool weights_avx512(const float* probs, size_t ld, int n_q, int n, const int32_t* orig,
                                  const float* scale, const int32_t* zero, float* w, double* wsum, double* beta) {
  const int rounds = n / P;
  const __m512 limit = _mm512_set1_ps(kWeightLimit);
  __mmask16 bad = 0;
  for (int j = 0; j < n_q; ++j) {
    const float* pj = probs + (size_t)j * ld;
    __m512d b0 = _mm512_setzero_pd(), b1 = _mm512_setzero_pd();
    for (int r = 0; r < rounds; ++r) {
      const int slot = r * P;
      const __m512 p = orig ? _mm512_i32gather_ps(_mm512_loadu_si512(orig + slot), pj, 4) : _mm512_loadu_ps(pj + slot);
      const __m512 x = _mm512_mul_ps(p, _mm512_loadu_ps(scale + slot));
      bad |= _mm512_cmp_ps_mask(_mm512_abs_ps(x), limit, _CMP_NLT_UQ);
      _mm512_storeu_ps(w + (size_t)j * n + slot, x);
      const __m512d x0 = _mm512_cvtps_pd(_mm512_castps512_ps256(x));
      const __m512d x1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
      const __m512i zi = _mm512_loadu_si512(zero + slot);
      b0 = _mm512_fmadd_pd(x0, _mm512_cvtepi32_pd(_mm512_castsi512_si256(zi)), b0);
      b1 = _mm512_fmadd_pd(x1, _mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(zi, 1)), b1);
      wsum[(size_t)j * rounds + r] = _mm512_reduce_add_pd(_mm512_add_pd(x0, x1));
    }
    beta[j] = _mm512_reduce_add_pd(_mm512_add_pd(b0, b1));
  }
  return bad == 0;
}

PACKKV_AVX512 void add_part_avx512(const float* part, int n_q, int d, double unscale, const double* beta,
                                   double* out) {
  const __m512d un = _mm512_set1_pd(unscale);
  for (int j = 0; j < n_q; ++j) {
    const __m512d b = _mm512_set1_pd(beta[j]);
    const float* pj = part + (size_t)j * d;
    double* oj = out + (size_t)j * d;
    for (int ch = 0; ch < d; ch += 8)
      _mm512_storeu_pd(oj + ch, _mm512_add_pd(_mm512_loadu_pd(oj + ch),
                                              _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(pj + ch)), un, b)));
  }
}

#endif  // PACKKV_X86_SIMD

}  // namespace

const TokenKernels& token_kernels(CpuIsa isa) {
  static const TokenKernels portable{fold_round_portable, weights_portable, add_part_portable};
#if defined(PACKKV_X86_SIMD)
  static const TokenKernels avx2{fold_round_avx2, weights_avx2, add_part_avx2};
  static const TokenKernels avx512{fold_round_avx512, weights_avx512, add_part_avx512};
  if (isa == CpuIsa::kAvx512) return avx512;
  if (isa == CpuIsa::kAvx2) return avx2;
#else
  (void)isa;
#endif
  return portable;
}

}  // namespace packkv
