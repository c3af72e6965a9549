// The round kernels of cpu/round_kernels.h: portable, AVX2 + FMA and AVX-512 versions.
// The SIMD versions are functions with a target attribute (cpu/simd.h).
#include "cpu/round_kernels.h"

#include "cpu/simd.h"
#include "cpu/simd_unpack.h"
#include "format/shape.h"

#include <algorithm>
#include <cstring>
#include <type_traits>

namespace packkv {

namespace {

#if defined(PACKKV_X86_SIMD)
using simd::tables;
using simd::unpack_avx2;
using simd::unpack_avx512;
using simd::unpack_half_avx2;
using simd::UnpackTables;
#endif

constexpr int P = fmt::kPackTokens;

// ---------------------------------------------------------------------------
// Portable (baseline x86-64: SSE2; or plain C++)
// ---------------------------------------------------------------------------

// The 16 offsets of a pack of encode length L (compile-time, so that every shift is a
// constant; halves of 8 fields fit 32 bits for L <= 4) as floats.
template <int L>
inline void unpack16_l(const uint8_t* payload, float* off) {
  using Word = typename std::conditional<(L <= 4), uint32_t, uint64_t>::type;
  Word lo = 0, hi = 0;
  std::memcpy(&lo, payload, (size_t)L);  // little-endian: low L bytes of the word
  std::memcpy(&hi, payload + L, (size_t)L);
  constexpr Word mask = (Word)((1u << L) - 1u);
  int32_t v[16];
  for (int i = 0; i < 8; ++i) {
    v[i] = (int32_t)((hi >> ((7 - i) * L)) & mask);
    v[8 + i] = (int32_t)((lo >> ((7 - i) * L)) & mask);
  }
  for (int i = 0; i < 16; ++i) off[i] = (float)v[i];  // vectorizes (cvtdq2ps)
}

inline void unpack16(const uint8_t* payload, int L, float* off) {
  switch (L) {
    case 1: unpack16_l<1>(payload, off); break;
    case 2: unpack16_l<2>(payload, off); break;
    case 3: unpack16_l<3>(payload, off); break;
    case 4: unpack16_l<4>(payload, off); break;
    case 5: unpack16_l<5>(payload, off); break;
    case 6: unpack16_l<6>(payload, off); break;
    case 7: unpack16_l<7>(payload, off); break;
    default: unpack16_l<8>(payload, off); break;
  }
}

// acc[j][0..15] += q[j * d] * off[0..15] for j < n_q.
inline void axpy16(const float* __restrict q, int d, int n_q, const float* __restrict off, float* __restrict acc) {
#if defined(__SSE2__)
  const __m128 o0 = _mm_loadu_ps(off), o1 = _mm_loadu_ps(off + 4), o2 = _mm_loadu_ps(off + 8),
               o3 = _mm_loadu_ps(off + 12);
  for (int j = 0; j < n_q; ++j) {
    const __m128 qv = _mm_set1_ps(q[(size_t)j * d]);
    float* a = acc + (size_t)j * P;
    _mm_storeu_ps(a, _mm_add_ps(_mm_loadu_ps(a), _mm_mul_ps(qv, o0)));
    _mm_storeu_ps(a + 4, _mm_add_ps(_mm_loadu_ps(a + 4), _mm_mul_ps(qv, o1)));
    _mm_storeu_ps(a + 8, _mm_add_ps(_mm_loadu_ps(a + 8), _mm_mul_ps(qv, o2)));
    _mm_storeu_ps(a + 12, _mm_add_ps(_mm_loadu_ps(a + 12), _mm_mul_ps(qv, o3)));
  }
#else
  for (int j = 0; j < n_q; ++j) {
    const float qc = q[(size_t)j * d];
    float* a = acc + (size_t)j * P;
    for (int i = 0; i < P; ++i) a[i] += qc * off[i];
  }
#endif
}

void score_round_portable(fmt::RoundCursor* cur, int d, const float* q, const float* q_in, int n_q, float* acc,
                          double* min_term, const uint8_t*, float*) {
  std::fill(acc, acc + (size_t)n_q * P, 0.0f);
  std::fill(min_term, min_term + n_q, 0.0);
  float off[P];
  for (int ch = 0; ch < d; ++ch) {
    const fmt::Pack pk = cur->next_pack(ch);
    const float mn = (float)pk.min;
    for (int j = 0; j < n_q; ++j) min_term[j] += (double)q_in[(size_t)j * d + ch] * mn;  // exact in double
    if (pk.length == 0) continue;
    unpack16(pk.bytes, pk.length, off);
    axpy16(q + ch, d, n_q, off, acc);
  }
  cur->next_round();
}

void apply_round_portable(fmt::RoundCursor* cur, int d, const float* w, size_t w_ld, int n_q, float* part,
                          double* out, const double* wsum, size_t wsum_ld, const uint8_t*, float* offs) {
  float off[P];
  for (int ch = 0; ch < d; ++ch) {  // offs: [token][channel]
    const fmt::Pack pk = cur->next_pack(ch);
    const double mn = (double)pk.min;
    for (int j = 0; j < n_q; ++j) out[(size_t)j * d + ch] += mn * wsum[(size_t)j * wsum_ld];
    if (pk.length == 0) {
      for (int i = 0; i < P; ++i) offs[(size_t)i * d + ch] = 0.0f;
      continue;
    }
    unpack16(pk.bytes, pk.length, off);
    for (int i = 0; i < P; ++i) offs[(size_t)i * d + ch] = off[i];
  }
  cur->next_round();
  // part[j][:] += sum_i w[j][i] * offs[i][:], vectorized over channels
  for (int j = 0; j < n_q; ++j) {
    const float* wr = w + (size_t)j * w_ld;
    float* pj = part + (size_t)j * d;
    for (int i = 0; i < P; ++i) {
      const float wi = wr[i];
      const float* oi = offs + (size_t)i * d;
      for (int ch = 0; ch < d; ++ch) pj[ch] += wi * oi[ch];
    }
  }
}

#if defined(PACKKV_X86_SIMD)

// ---- AVX2 + FMA: a pack is two 8-lane vectors (tokens 0..7, 8..15) ----

// acc rows j0 .. j0+NJ-1 over every channel of the unpacked round offs ([ch][16]).
template <int NJ>
PACKKV_AVX2 PACKKV_ALWAYS_INLINE void fma_heads_avx2(const float* offs, int d, const float* q, float* acc) {
  __m256 a[NJ][2];
  for (int j = 0; j < NJ; ++j) a[j][0] = a[j][1] = _mm256_setzero_ps();
  for (int ch = 0; ch < d; ++ch) {
    const __m256 o0 = _mm256_loadu_ps(offs + (size_t)ch * P), o1 = _mm256_loadu_ps(offs + (size_t)ch * P + 8);
    for (int j = 0; j < NJ; ++j) {
      const __m256 qv = _mm256_broadcast_ss(q + (size_t)j * d + ch);
      a[j][0] = _mm256_fmadd_ps(qv, o0, a[j][0]);
      a[j][1] = _mm256_fmadd_ps(qv, o1, a[j][1]);
    }
  }
  for (int j = 0; j < NJ; ++j) {
    _mm256_storeu_ps(acc + (size_t)j * P, a[j][0]);
    _mm256_storeu_ps(acc + (size_t)j * P + 8, a[j][1]);
  }
}

// sum_ch a[ch] * b[ch] (float64; a float, b float; d a multiple of 16).
PACKKV_AVX2 PACKKV_ALWAYS_INLINE double dot_f64_avx2(const float* a, const float* b, int d) {
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  for (int ch = 0; ch < d; ch += 8) {
    s0 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(a + ch)), _mm256_cvtps_pd(_mm_loadu_ps(b + ch)), s0);
    s1 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(a + ch + 4)), _mm256_cvtps_pd(_mm_loadu_ps(b + ch + 4)), s1);
  }
  const __m256d s = _mm256_add_pd(s0, s1);
  const __m128d h = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
  return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}

PACKKV_AVX2 void score_round_avx2(fmt::RoundCursor* cur, int d, const float* q, const float* q_in, int n_q,
                                  float* acc, double* min_term, const uint8_t* end, float* offs) {
  const UnpackTables& t = tables();
  alignas(32) float mins[fmt::kMaxHeadDim];
  uint8_t min8[fmt::kMaxHeadDim], lens[fmt::kMaxHeadDim];
  simd::read_round_fields_avx2(*cur, d, end, min8, lens);
  const uint8_t* pay = cur->payload();
  size_t at = 0;
  for (int ch = 0; ch < d; ch += 8)
    _mm256_store_ps(mins + ch, _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(min8 + ch)))));
  for (int ch = 0; ch < d; ++ch) {  // offs: [channel][token]
    const int L = lens[ch];
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    if (L != 0) unpack_avx2(pay + at, L, end, t, &lo, &hi);
    at += 2 * (size_t)L;
    _mm256_storeu_ps(offs + (size_t)ch * P, lo);
    _mm256_storeu_ps(offs + (size_t)ch * P + 8, hi);
  }
  cur->next_round_after(at);
  for (int j = 0; j < n_q; ++j) min_term[j] = dot_f64_avx2(q_in + (size_t)j * d, mins, d);
  for (int j0 = 0; j0 < n_q; j0 += 4) {
    const float* qj = q + (size_t)j0 * d;
    float* aj = acc + (size_t)j0 * P;
    switch (std::min(4, n_q - j0)) {
      case 1: fma_heads_avx2<1>(offs, d, qj, aj); break;
      case 2: fma_heads_avx2<2>(offs, d, qj, aj); break;
      case 3: fma_heads_avx2<3>(offs, d, qj, aj); break;
      default: fma_heads_avx2<4>(offs, d, qj, aj); break;
    }
  }
}

// In-register 8x8 transpose: r[c][i] -> r[i][c].
PACKKV_AVX2 PACKKV_ALWAYS_INLINE void transpose8(__m256* r) {
  __m256 t[8], s[8];
  for (int k = 0; k < 4; ++k) {
    t[2 * k] = _mm256_unpacklo_ps(r[2 * k], r[2 * k + 1]);
    t[2 * k + 1] = _mm256_unpackhi_ps(r[2 * k], r[2 * k + 1]);
  }
  for (int k = 0; k < 2; ++k) {
    s[4 * k + 0] = _mm256_shuffle_ps(t[4 * k], t[4 * k + 2], 0x44);
    s[4 * k + 1] = _mm256_shuffle_ps(t[4 * k], t[4 * k + 2], 0xEE);
    s[4 * k + 2] = _mm256_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0x44);
    s[4 * k + 3] = _mm256_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0xEE);
  }
  for (int k = 0; k < 4; ++k) {
    r[k] = _mm256_permute2f128_ps(s[k], s[k + 4], 0x20);
    r[k + 4] = _mm256_permute2f128_ps(s[k], s[k + 4], 0x31);
  }
}

// The minimums of channels c .. c+3 as float64.
PACKKV_AVX2 PACKKV_ALWAYS_INLINE __m256d mins4_avx2(const uint8_t* min8) {
  int32_t m;
  std::memcpy(&m, min8, 4);
  return _mm256_cvtepi32_pd(_mm_cvtepu8_epi32(_mm_cvtsi32_si128(m)));
}

PACKKV_AVX2 void apply_round_avx2(fmt::RoundCursor* cur, int d, const float* w, size_t w_ld, int n_q, float* part,
                                  double* out, const double* wsum, size_t wsum_ld, const uint8_t* end, float*) {
  const UnpackTables& t = tables();
  uint8_t min8[fmt::kMaxHeadDim], lens[fmt::kMaxHeadDim];
  simd::read_round_fields_avx2(*cur, d, end, min8, lens);
  const uint8_t* pay = cur->payload();
  size_t at = 0;
  for (int c0 = 0; c0 < d; c0 += 8) {
    __m256i b[8];  // the 8 channels' packs, broadcast
    for (int c = 0; c < 8; ++c) {
      const int L = lens[c0 + c];
      b[c] = L != 0 ? simd::load_pack_x2(pay + at, L, end) : _mm256_setzero_si256();
      at += 2 * (size_t)L;
    }
    for (int h = 0; h < 2; ++h) {  // tokens 8h .. 8h+7 (one half at a time: 16 ymm registers)
      __m256 r[8];  // per channel; after the transpose: per token
      for (int c = 0; c < 8; ++c) r[c] = unpack_half_avx2(b[c], lens[c0 + c], h, t);  // L = 0: zero bytes give 0
      transpose8(r);
      for (int j = 0; j < n_q; ++j) {
        const float* wj = w + (size_t)j * w_ld + 8 * h;
        float* pj = part + (size_t)j * d + c0;
        __m256 a0 = _mm256_loadu_ps(pj), a1 = _mm256_setzero_ps();  // two chains of 4 FMAs
        for (int i = 0; i < 8; i += 2) {
          a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(wj + i), r[i], a0);
          a1 = _mm256_fmadd_ps(_mm256_broadcast_ss(wj + i + 1), r[i + 1], a1);
        }
        _mm256_storeu_ps(pj, _mm256_add_ps(a0, a1));
      }
    }
    const __m256d m0 = mins4_avx2(min8 + c0), m1 = mins4_avx2(min8 + c0 + 4);
    for (int j = 0; j < n_q; ++j) {
      const __m256d ws = _mm256_set1_pd(wsum[(size_t)j * wsum_ld]);
      double* oj = out + (size_t)j * d + c0;
      _mm256_storeu_pd(oj, _mm256_fmadd_pd(m0, ws, _mm256_loadu_pd(oj)));
      _mm256_storeu_pd(oj + 4, _mm256_fmadd_pd(m1, ws, _mm256_loadu_pd(oj + 4)));
    }
  }
  cur->next_round_after(at);
}

// ---- AVX-512: a pack is one 16-lane vector ----

template <int NJ>
PACKKV_AVX512 PACKKV_ALWAYS_INLINE void fma_heads_avx512(const float* offs, int d, const float* q, float* acc) {
  __m512 a[NJ][2];  // even and odd channels: two FMA chains per head
  for (int j = 0; j < NJ; ++j) a[j][0] = a[j][1] = _mm512_setzero_ps();
  for (int ch = 0; ch < d; ch += 2) {
    const __m512 o0 = _mm512_loadu_ps(offs + (size_t)ch * P), o1 = _mm512_loadu_ps(offs + (size_t)ch * P + P);
    for (int j = 0; j < NJ; ++j) {
      a[j][0] = _mm512_fmadd_ps(_mm512_set1_ps(q[(size_t)j * d + ch]), o0, a[j][0]);
      a[j][1] = _mm512_fmadd_ps(_mm512_set1_ps(q[(size_t)j * d + ch + 1]), o1, a[j][1]);
    }
  }
  for (int j = 0; j < NJ; ++j) _mm512_storeu_ps(acc + (size_t)j * P, _mm512_add_ps(a[j][0], a[j][1]));
}

PACKKV_AVX512 PACKKV_ALWAYS_INLINE double dot_f64_avx512(const float* a, const float* b, int d) {
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  for (int ch = 0; ch < d; ch += 16) {
    s0 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(a + ch)), _mm512_cvtps_pd(_mm256_loadu_ps(b + ch)), s0);
    s1 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm256_loadu_ps(a + ch + 8)), _mm512_cvtps_pd(_mm256_loadu_ps(b + ch + 8)),
                         s1);
  }
  return _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
}

PACKKV_AVX512 void score_round_avx512(fmt::RoundCursor* cur, int d, const float* q, const float* q_in, int n_q,
                                      float* acc, double* min_term, const uint8_t* end, float* offs) {
  const UnpackTables& t = tables();
  alignas(64) float mins[fmt::kMaxHeadDim];
  uint8_t min8[fmt::kMaxHeadDim], lens[fmt::kMaxHeadDim];
  simd::read_round_fields_avx2(*cur, d, end, min8, lens);
  const uint8_t* pay = cur->payload();
  size_t at = 0;
  for (int ch = 0; ch < d; ch += 16)
    _mm512_store_ps(mins + ch, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(min8 + ch)))));
  for (int ch = 0; ch < d; ++ch) {  // offs: [channel][token]
    const int L = lens[ch];
    _mm512_storeu_ps(offs + (size_t)ch * P, L != 0 ? unpack_avx512(pay + at, L, end, t) : _mm512_setzero_ps());
    at += 2 * (size_t)L;
  }
  cur->next_round_after(at);
  for (int j = 0; j < n_q; ++j) min_term[j] = dot_f64_avx512(q_in + (size_t)j * d, mins, d);
  for (int j0 = 0; j0 < n_q; j0 += 8) {
    const float* qj = q + (size_t)j0 * d;
    float* aj = acc + (size_t)j0 * P;
    switch (std::min(8, n_q - j0)) {
      case 1: fma_heads_avx512<1>(offs, d, qj, aj); break;
      case 2: fma_heads_avx512<2>(offs, d, qj, aj); break;
      case 3: fma_heads_avx512<3>(offs, d, qj, aj); break;
      case 4: fma_heads_avx512<4>(offs, d, qj, aj); break;
      case 5: fma_heads_avx512<5>(offs, d, qj, aj); break;
      case 6: fma_heads_avx512<6>(offs, d, qj, aj); break;
      case 7: fma_heads_avx512<7>(offs, d, qj, aj); break;
      default: fma_heads_avx512<8>(offs, d, qj, aj); break;
    }
  }
}

// In-register 16x16 transpose: r[c][i] -> r[i][c].
PACKKV_AVX512 PACKKV_ALWAYS_INLINE void transpose16(__m512* r) {
  __m512 t[16];
  for (int k = 0; k < 8; ++k) {
    t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
    t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
  }
  for (int k = 0; k < 4; ++k) {  // r[4k + m]: lane l = rows 4k..4k+3 at column 4l + m
    const __m512d a = _mm512_castps_pd(t[4 * k]), b = _mm512_castps_pd(t[4 * k + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * k + 2]), e = _mm512_castps_pd(t[4 * k + 3]);
    r[4 * k + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[4 * k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[4 * k + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, e));
    r[4 * k + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, e));
  }
  for (int m = 0; m < 4; ++m) {
    t[m] = _mm512_shuffle_f32x4(r[m], r[4 + m], 0x88);
    t[4 + m] = _mm512_shuffle_f32x4(r[m], r[4 + m], 0xdd);
    t[8 + m] = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0x88);
    t[12 + m] = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0xdd);
  }
  for (int m = 0; m < 4; ++m) {
    r[m] = _mm512_shuffle_f32x4(t[m], t[8 + m], 0x88);
    r[4 + m] = _mm512_shuffle_f32x4(t[4 + m], t[12 + m], 0x88);
    r[8 + m] = _mm512_shuffle_f32x4(t[m], t[8 + m], 0xdd);
    r[12 + m] = _mm512_shuffle_f32x4(t[4 + m], t[12 + m], 0xdd);
  }
}

PACKKV_AVX512 void apply_round_avx512(fmt::RoundCursor* cur, int d, const float* w, size_t w_ld, int n_q, float* part,
                                      double* out, const double* wsum, size_t wsum_ld, const uint8_t* end, float*) {
  const UnpackTables& t = tables();
  uint8_t min8[fmt::kMaxHeadDim], lens[fmt::kMaxHeadDim];
  simd::read_round_fields_avx2(*cur, d, end, min8, lens);
  const uint8_t* pay = cur->payload();
  size_t at = 0;
  for (int c0 = 0; c0 < d; c0 += P) {
    __m512 r[P];  // per channel; after the transpose: per token
    for (int c = 0; c < P; ++c) {
      const int L = lens[c0 + c];
      r[c] = L != 0 ? unpack_avx512(pay + at, L, end, t) : _mm512_setzero_ps();
      at += 2 * (size_t)L;
    }
    transpose16(r);
    const __m512d m0 = _mm512_cvtepi32_pd(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(min8 + c0))));
    const __m512d m1 = _mm512_cvtepi32_pd(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(min8 + c0 + 8))));
    for (int j = 0; j < n_q; ++j) {
      const float* wj = w + (size_t)j * w_ld;
      float* pj = part + (size_t)j * d + c0;
      __m512 a0 = _mm512_loadu_ps(pj), a1 = _mm512_setzero_ps();  // two chains of 8 FMAs
      for (int i = 0; i < P; i += 2) {
        a0 = _mm512_fmadd_ps(_mm512_set1_ps(wj[i]), r[i], a0);
        a1 = _mm512_fmadd_ps(_mm512_set1_ps(wj[i + 1]), r[i + 1], a1);
      }
      _mm512_storeu_ps(pj, _mm512_add_ps(a0, a1));
      const __m512d ws = _mm512_set1_pd(wsum[(size_t)j * wsum_ld]);
      double* oj = out + (size_t)j * d + c0;
      _mm512_storeu_pd(oj, _mm512_fmadd_pd(m0, ws, _mm512_loadu_pd(oj)));
      _mm512_storeu_pd(oj + 8, _mm512_fmadd_pd(m1, ws, _mm512_loadu_pd(oj + 8)));
    }
  }
  cur->next_round_after(at);
}

#endif  // PACKKV_X86_SIMD

}  // namespace

const RoundKernels& round_kernels(CpuIsa isa) {
  static const RoundKernels portable{score_round_portable, apply_round_portable};
#if defined(PACKKV_X86_SIMD)
  static const RoundKernels avx2{score_round_avx2, apply_round_avx2};
  static const RoundKernels avx512{score_round_avx512, apply_round_avx512};
  if (isa == CpuIsa::kAvx512) return avx512;
  if (isa == CpuIsa::kAvx2) return avx2;
#else
  (void)isa;
#endif
  return portable;
}

}  // namespace packkv
