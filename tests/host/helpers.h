// Shared helpers of the host tests: cache construction, random data, float64
// references computed independently of the library's attention code.
#ifndef PACKKV_TESTS_HELPERS_H
#define PACKKV_TESTS_HELPERS_H

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "packkv/packkv.h"

namespace pkt {

// The tests' reference configuration, set field by field so that no test depends on the
// library's defaults (which follow measurements and change): r_K 0.1, r_V 0.2 (4- and
// 3-bit codes), block 64, residual window 128, no sink tokens, no K transform, median
// repacking, per-token scales, compact z/s, f16 residual window.
inline packkv_cache_params_t params(int heads, int dim, int max_seqs = 1) {
  packkv_cache_params_t p;
  REQUIRE(packkv_cache_params_init(&p, sizeof p) == PACKKV_OK);
  p.n_kv_heads = heads;
  p.head_dim = dim;
  p.max_seqs = max_seqs;
  p.max_tokens_per_seq = 1 << 16;
  p.rel_scale_k = 0.1f;
  p.rel_scale_v = 0.2f;
  p.block_tokens = 64;
  p.residual_tokens = 128;
  p.sink_tokens = 0;
  p.k_transform = PACKKV_K_TRANSFORM_NONE;
  p.repack = PACKKV_REPACK_MEDIAN;
  p.scale_granularity = PACKKV_SCALE_PER_TOKEN;
  p.zs_format = PACKKV_ZS_COMPACT;
  p.kv_dtype = PACKKV_DTYPE_F16;
  return p;
}

// RAII owner of a cache.
struct Cache {
  packkv_cache_t* c = nullptr;
  explicit Cache(const packkv_cache_params_t& p) {
    packkv_status_t st = packkv_cache_create(&p, &c);
    INFO(packkv_last_error_message());
    REQUIRE(st == PACKKV_OK);
  }
  // Takes ownership of a cache made elsewhere (e.g. in a pool); REQUIREs it non-null.
  explicit Cache(packkv_cache_t* owned) : c(owned) { REQUIRE(owned != nullptr); }
  ~Cache() { packkv_cache_destroy(c); }
  Cache(const Cache&) = delete;
  Cache& operator=(const Cache&) = delete;
  operator packkv_cache_t*() const { return c; }
};

// Gaussian data with per-channel offsets (like real K: outlier channels).
inline std::vector<float> kv_data(size_t tokens, int heads, int dim, unsigned seed, float channel_spread = 2.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  std::vector<float> offs((size_t)heads * dim);
  for (float& o : offs) o = channel_spread * n01(rng);
  std::vector<float> x(tokens * heads * dim);
  for (size_t t = 0; t < tokens; ++t)
    for (size_t i = 0; i < offs.size(); ++i) x[t * offs.size() + i] = offs[i] + n01(rng);
  return x;
}

inline void append1(packkv_cache_t* c, int seq, const std::vector<float>& k, const std::vector<float>& v,
                    size_t first_token, int n_tokens, size_t row) {
  int32_t id = seq, n = n_tokens;
  packkv_status_t st = packkv_cache_append(c, 1, &id, &n, k.data() + first_token * row,
                                           v.data() + first_token * row, PACKKV_DTYPE_F32, nullptr);
  INFO(packkv_last_error_message());
  REQUIRE(st == PACKKV_OK);
}

inline int64_t seq_len(const packkv_cache_t* c, int seq) {
  int64_t n = -1;
  REQUIRE(packkv_cache_seq_length(c, seq, &n) == PACKKV_OK);
  return n;
}

inline packkv_cache_stats_t stats(const packkv_cache_t* c, int seq = -1) {
  packkv_cache_stats_t s;
  std::memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  REQUIRE(packkv_cache_stats(c, seq, &s) == PACKKV_OK);
  return s;
}

// K and V of a sequence as the cache reconstructs them.
struct Decompressed {
  std::vector<float> k, v;
};
inline Decompressed decompress(const packkv_cache_t* c, int seq, size_t row) {
  Decompressed d;
  const int64_t n = seq_len(c, seq);
  d.k.assign((size_t)n * row, NAN);
  d.v.assign((size_t)n * row, NAN);
  REQUIRE(packkv_cache_decompress(c, seq, d.k.data(), d.v.data(), n, nullptr) == PACKKV_OK);
  return d;
}

inline double rel_l2(const std::vector<double>& ref, const std::vector<float>& got) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    double e = (double)got[i] - ref[i];
    num += e * e;
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1.0));
}

// Float64 references over K/V [n][hkv][d] (row-major), q [hq][d].
inline std::vector<double> ref_scores(const std::vector<float>& k, size_t n, int hkv, int d,
                                      const std::vector<float>& q, int hq) {
  std::vector<double> s((size_t)hq * n);
  const int g = hq / hkv;
  for (int j = 0; j < hq; ++j)
    for (size_t t = 0; t < n; ++t) {
      double acc = 0;
      for (int c = 0; c < d; ++c)
        acc += (double)q[(size_t)j * d + c] * (double)k[(t * hkv + j / g) * d + c];
      s[(size_t)j * n + t] = acc;
    }
  return s;
}

inline std::vector<double> ref_apply(const std::vector<float>& v, size_t n, int hkv, int d,
                                     const std::vector<double>& p, int hq) {
  std::vector<double> o((size_t)hq * d, 0.0);
  const int g = hq / hkv;
  for (int j = 0; j < hq; ++j)
    for (size_t t = 0; t < n; ++t)
      for (int c = 0; c < d; ++c) o[(size_t)j * d + c] += p[(size_t)j * n + t] * (double)v[(t * hkv + j / g) * d + c];
  return o;
}

inline std::vector<double> ref_softmax(const std::vector<double>& s, size_t n, int hq, double scale,
                                       std::vector<double>* lse = nullptr) {
  std::vector<double> p(s.size());
  if (lse) lse->assign(hq, 0.0);
  for (int j = 0; j < hq; ++j) {
    double mx = -INFINITY;
    for (size_t t = 0; t < n; ++t) mx = std::max(mx, scale * s[(size_t)j * n + t]);
    double sum = 0;
    for (size_t t = 0; t < n; ++t) sum += std::exp(scale * s[(size_t)j * n + t] - mx);
    for (size_t t = 0; t < n; ++t) p[(size_t)j * n + t] = std::exp(scale * s[(size_t)j * n + t] - mx) / sum;
    if (lse) (*lse)[j] = mx + std::log(sum);
  }
  return p;
}

}  // namespace pkt

#endif
