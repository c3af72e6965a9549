#include "cpu/block_attention.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <type_traits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "format/round_cursor.h"
#include "format/shape.h"

namespace packkv {

namespace {

constexpr int P = fmt::kPackTokens;

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

// acc[j][0..15] += q[j * d] * off[0..15] for j < n_q (the integer-domain partial dot
// products of one channel for 16 tokens and every query head of the GQA group).
inline void axpy16(const float* __restrict q, int d, int n_q, const float* __restrict off,
                   float* __restrict acc) {
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

}  // namespace

void block_scores(const fmt::Shape& sh, const uint8_t* blob, int head, const float* q, int n_q,
                  float* out, size_t ld, AttnScratch* scratch, const double* bias) {
  const int n = sh.block_tokens, d = sh.head_dim;
  const fmt::HeadView v = sh.head(blob, fmt::kK, head);
  scratch->f.resize((size_t)n_q * P);
  scratch->d.resize(2 * (size_t)n_q);
  float* acc = scratch->f.data();
  double* sum_q = scratch->d.data();
  double* min_term = sum_q + n_q;
  for (int j = 0; j < n_q; ++j) {
    double s = 0;
    for (int ch = 0; ch < d; ++ch) s += q[(size_t)j * d + ch];
    sum_q[j] = s;
  }
  fmt::RoundCursor cur(v.tile, d, sh.bits_k);
  float off[P];
  for (int r = 0; r < n / P; ++r, cur.next_round()) {
    std::fill(acc, acc + (size_t)n_q * P, 0.0f);
    std::fill(min_term, min_term + n_q, 0.0);
    for (int ch = 0; ch < d; ++ch) {
      const fmt::Pack pk = cur.next_pack(ch);
      const float mn = (float)pk.min;
      for (int j = 0; j < n_q; ++j) min_term[j] += q[(size_t)j * d + ch] * mn;  // exact in double
      if (pk.length == 0) continue;
      unpack16(pk.bytes, pk.length, off);
      axpy16(q + ch, d, n_q, off, acc);
    }
    for (int i = 0; i < P; ++i) {
      const int slot = r * P + i;
      const fmt::Affine a = v.affine(slot);
      const int t = v.original(slot);
      for (int j = 0; j < n_q; ++j) {
        const double u = (double)acc[(size_t)j * P + i] + min_term[j] + (double)a.zero * sum_q[j];
        out[(size_t)j * ld + t] = (float)(u * (double)a.scale + (bias ? bias[j] : 0.0));
      }
    }
  }
}

void block_apply(const fmt::Shape& sh, const uint8_t* blob, int head, const float* probs, int n_q,
                 size_t ld, double* out, AttnScratch* scratch) {
  const int n = sh.block_tokens, d = sh.head_dim;
  const fmt::HeadView v = sh.head(blob, fmt::kV, head);
  // w = p * s in stored order; per round sum of w (for the pack minimums); beta = sum w z.
  const int rounds = n / P;
  scratch->f.resize((size_t)n_q * n + (size_t)n_q * d + (size_t)P * d);
  scratch->d.resize((size_t)n_q * (1 + rounds));
  float* w = scratch->f.data();
  float* part = w + (size_t)n_q * n;  // [n_q][d] sum of w * offset
  float* offs = part + (size_t)n_q * d;  // one round decoded: [token][channel]
  double* beta = scratch->d.data();
  double* wsum = beta + n_q;  // [n_q][rounds]
  std::fill(beta, beta + (size_t)n_q * (1 + rounds), 0.0);
  std::fill(part, part + (size_t)n_q * d, 0.0f);
  for (int slot = 0; slot < n; ++slot) {
    const fmt::Affine a = v.affine(slot);
    const int t = v.original(slot);
    for (int j = 0; j < n_q; ++j) {
      const float ws = (float)((double)probs[(size_t)j * ld + t] * (double)a.scale);
      w[(size_t)j * n + slot] = ws;
      beta[j] += (double)ws * (double)a.zero;
      wsum[(size_t)j * rounds + slot / P] += (double)ws;
    }
  }
  fmt::RoundCursor cur(v.tile, d, sh.bits_v);
  float off[P];
  for (int r = 0; r < rounds; ++r, cur.next_round()) {
    for (int ch = 0; ch < d; ++ch) {
      const fmt::Pack pk = cur.next_pack(ch);
      const double mn = (double)pk.min;
      for (int j = 0; j < n_q; ++j) out[(size_t)j * d + ch] += mn * wsum[(size_t)j * rounds + r];
      if (pk.length == 0) {
        for (int i = 0; i < P; ++i) offs[(size_t)i * d + ch] = 0.0f;
        continue;
      }
      unpack16(pk.bytes, pk.length, off);
      for (int i = 0; i < P; ++i) offs[(size_t)i * d + ch] = off[i];
    }
    // part[j][:] += sum_i w[j][i] * offs[i][:], vectorized over channels
    for (int j = 0; j < n_q; ++j) {
      const float* wr = w + (size_t)j * n + (size_t)r * P;
      float* pj = part + (size_t)j * d;
      for (int i = 0; i < P; ++i) {
        const float wi = wr[i];
        const float* oi = offs + (size_t)i * d;
        for (int ch = 0; ch < d; ++ch) pj[ch] += wi * oi[ch];
      }
    }
  }
  for (int j = 0; j < n_q; ++j)
    for (int ch = 0; ch < d; ++ch) out[(size_t)j * d + ch] += (double)part[(size_t)j * d + ch] + beta[j];
}

}  // namespace packkv
