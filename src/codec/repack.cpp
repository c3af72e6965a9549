#include "codec/repack.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "format/round_tile.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace packkv {

namespace {

#if defined(__SSE2__)
// The number of codes of r[0..n) that are <= m.
size_t count_le(const uint8_t* r, int n, uint8_t m) {
  const __m128i vm = _mm_set1_epi8((char)m), zero = _mm_setzero_si128();
  size_t total = 0;
  int i = 0;
  while (i + 16 <= n) {
    __m128i acc = _mm_setzero_si128();  // per-byte counts, at most 255 vectors per batch
    const int end = std::min(n - n % 16, i + 255 * 16);
    for (; i < end; i += 16) {
      const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(r + i));
      acc = _mm_sub_epi8(acc, _mm_cmpeq_epi8(_mm_min_epu8(x, vm), x));  // +1 where x <= m
    }
    const __m128i s = _mm_sad_epu8(acc, zero);
    total += (size_t)_mm_cvtsi128_si32(s) + (size_t)_mm_cvtsi128_si32(_mm_unpackhi_epi64(s, s));
  }
  for (; i < n; ++i) total += r[i] <= m;
  return total;
}

uint8_t max_code(const uint8_t* r, int n) {
  __m128i mx = _mm_setzero_si128();
  int i = 0;
  for (; i + 16 <= n; i += 16) mx = _mm_max_epu8(mx, _mm_loadu_si128(reinterpret_cast<const __m128i*>(r + i)));
  uint8_t b[16];
  _mm_storeu_si128(reinterpret_cast<__m128i*>(b), mx);
  uint8_t m = 0;
  for (int j = 0; j < 16; ++j) m = std::max(m, b[j]);
  for (; i < n; ++i) m = std::max(m, r[i]);
  return m;
}
#endif

// The lower median of a row: the smallest m with more than `rank` codes <= m.
int lower_median(const uint8_t* r, int row_len, int rank) {
#if defined(__SSE2__)
  // binary search over [0, max code]: a few counting passes instead of a histogram
  int lo = 0, hi = max_code(r, row_len);
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (count_le(r, row_len, (uint8_t)mid) > (size_t)rank) hi = mid;
    else lo = mid + 1;
  }
  return lo;
#else
  int hist[256] = {0};
  for (int i = 0; i < row_len; ++i) ++hist[r[i]];
  int seen = 0, m = 0;
  for (m = 0; m < 256; ++m) {
    seen += hist[m];
    if (seen > rank) break;
  }
  return m;
#endif
}

}  // namespace

void median_order(const uint8_t* v_codes, int n, int row_len, uint8_t* perm) {
  std::vector<int> key(n);
  const int rank = (row_len - 1) / 2;  // lower median
  for (int t = 0; t < n; ++t) key[t] = lower_median(v_codes + (size_t)t * row_len, row_len, rank);
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return key[a] > key[b]; });
  for (int j = 0; j < n; ++j) perm[j] = (uint8_t)order[j];
}

void greedy_order(const uint8_t* rows, int n, int row_len, int pack_tokens, uint8_t* perm) {
  std::vector<char> used(n, 0);
  std::vector<double> mean(row_len);
  std::vector<int> lo(row_len), hi(row_len);
  std::vector<uint8_t> order;
  order.reserve(n);
  for (int p = 0; p < n / pack_tokens; ++p) {
    // Seed: highest cosine similarity to the rounded mean of the remaining rows.
    std::fill(mean.begin(), mean.end(), 0.0);
    int remaining = 0;
    for (int t = 0; t < n; ++t) {
      if (used[t]) continue;
      ++remaining;
      const uint8_t* r = rows + (size_t)t * row_len;
      for (int i = 0; i < row_len; ++i) mean[i] += r[i];
    }
    double mean_norm = 0.0;
    for (int i = 0; i < row_len; ++i) {
      mean[i] = std::nearbyint(mean[i] / remaining);  // round half to even
      mean_norm += mean[i] * mean[i];
    }
    mean_norm = std::sqrt(mean_norm);
    int seed = -1;
    double best = -2.0;
    for (int t = 0; t < n; ++t) {
      if (used[t]) continue;
      const uint8_t* r = rows + (size_t)t * row_len;
      double dot = 0.0, norm = 0.0;
      for (int i = 0; i < row_len; ++i) {
        dot += r[i] * mean[i];
        norm += (double)r[i] * r[i];
      }
      double denom = std::sqrt(norm) * mean_norm;
      double cos = denom > 0.0 ? dot / denom : 0.0;
      if (seed < 0 || cos > best) {
        best = cos;
        seed = t;
      }
    }
    used[seed] = 1;
    order.push_back((uint8_t)seed);
    const uint8_t* sr = rows + (size_t)seed * row_len;
    for (int i = 0; i < row_len; ++i) lo[i] = hi[i] = sr[i];
    // Grow: add the row with the smallest increase of summed encode length.
    for (int k = 1; k < pack_tokens; ++k) {
      int pick = -1;
      long best_cost = 0;
      for (int t = 0; t < n; ++t) {
        if (used[t]) continue;
        const uint8_t* r = rows + (size_t)t * row_len;
        long cost = 0;
        for (int i = 0; i < row_len; ++i) {
          int v = r[i];
          if (v >= lo[i] && v <= hi[i]) continue;
          int nlo = std::min(lo[i], v), nhi = std::max(hi[i], v);
          cost += fmt::encode_length((uint32_t)(nhi - nlo)) - fmt::encode_length((uint32_t)(hi[i] - lo[i]));
        }
        if (pick < 0 || cost < best_cost) {
          pick = t;
          best_cost = cost;
        }
      }
      used[pick] = 1;
      order.push_back((uint8_t)pick);
      const uint8_t* pr = rows + (size_t)pick * row_len;
      for (int i = 0; i < row_len; ++i) {
        lo[i] = std::min(lo[i], (int)pr[i]);
        hi[i] = std::max(hi[i], (int)pr[i]);
      }
    }
  }
  std::copy(order.begin(), order.end(), perm);
}

}  // namespace packkv
