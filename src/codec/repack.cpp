#include "codec/repack.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "format/round_tile.h"

namespace packkv {

void median_order(const uint8_t* v_codes, int n, int row_len, uint8_t* perm) {
  std::vector<int> key(n);
  const int rank = (row_len - 1) / 2;  // lower median
  for (int t = 0; t < n; ++t) {
    int hist[256] = {0};
    const uint8_t* r = v_codes + (size_t)t * row_len;
    for (int i = 0; i < row_len; ++i) ++hist[r[i]];
    int seen = 0, m = 0;
    for (m = 0; m < 256; ++m) {
      seen += hist[m];
      if (seen > rank) break;
    }
    key[t] = m;
  }
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
