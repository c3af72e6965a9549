// Shared by the GPU test files: device buffers, the test shapes and params, data, and a
// Pair of a CPU and a CUDA cache fed the same tokens and compared (identical blocks,
// stats, decompression; attention within 1e-5 relative).
#ifndef PACKKV_TESTS_GPU_PAIR_H
#define PACKKV_TESTS_GPU_PAIR_H

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../host/helpers.h"
#include "api/cache_impl.h"
#include "api/internal_access.h"
#include "format/shape.h"
#include "packkv/packkv.h"
#define PACKKV_EXPERIMENTAL_API
#include "packkv/packkv_experimental.h"

namespace gpu_test {

#define CUDA_OK(x) REQUIRE((x) == cudaSuccess)

// Device buffer (RAII).
struct DBuf {
  void* p = nullptr;
  size_t n = 0;
  explicit DBuf(size_t bytes) : n(bytes) { CUDA_OK(cudaMalloc(&p, bytes ? bytes : 1)); }
  ~DBuf() { cudaFree(p); }
  DBuf(const DBuf&) = delete;
  DBuf& operator=(const DBuf&) = delete;
  template <typename T> T* as() const { return static_cast<T*>(p); }
};

template <typename T> inline void to_dev(DBuf& d, const std::vector<T>& h) {
  REQUIRE(h.size() * sizeof(T) <= d.n);
  CUDA_OK(cudaMemcpy(d.p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
}
template <typename T> inline std::vector<T> from_dev(const DBuf& d, size_t count) {
  std::vector<T> h(count);
  CUDA_OK(cudaMemcpy(h.data(), d.p, count * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}

using Cache = pkt::Cache;  // RAII owner of a cache, shared with the host suite

struct Shape {
  int heads = 2, dim = 64, seqs = 2, q_heads = 4;
  int block = 64, residual = 128;
  float rk = 0.1f, rv = 0.2f;
  int bits_k = 0, bits_v = 0;
  packkv_repack_t repack = PACKKV_REPACK_MEDIAN;
  packkv_scale_granularity_t gran = PACKKV_SCALE_PER_TOKEN;
  packkv_dtype_t kv_dtype = PACKKV_DTYPE_F16;
  packkv_dtype_t in_dtype = PACKKV_DTYPE_F32;
  packkv_dtype_t q_dtype = PACKKV_DTYPE_F32;
  packkv_zs_format_t zs = PACKKV_ZS_COMPACT;
  int sinks = 0;  // sink_tokens
  bool center = false;  // k_transform = PACKKV_K_TRANSFORM_CENTER
};

inline packkv_cache_params_t make_params(const Shape& s, int device) {
  packkv_cache_params_t p;
  REQUIRE(packkv_cache_params_init(&p, sizeof p) == PACKKV_OK);
  p.device = device;
  p.n_kv_heads = s.heads;
  p.head_dim = s.dim;
  p.max_seqs = s.seqs;
  p.max_tokens_per_seq = 1 << 15;
  p.rel_scale_k = s.rk;
  p.rel_scale_v = s.rv;
  p.bits_k = s.bits_k;
  p.bits_v = s.bits_v;
  p.repack = s.repack;
  p.scale_granularity = s.gran;
  p.kv_dtype = s.kv_dtype;
  p.block_tokens = s.block;
  p.residual_tokens = s.residual;
  p.zs_format = s.zs;
  p.sink_tokens = s.sinks;
  p.k_transform = s.center ? PACKKV_K_TRANSFORM_CENTER : PACKKV_K_TRANSFORM_NONE;
  return p;
}

// Gaussian data with per-channel offsets (outlier channels, like real K).
inline std::vector<float> kv_data(size_t tokens, size_t row, std::mt19937& rng, float spread) {
  std::normal_distribution<float> n01(0.f, 1.f);
  std::vector<float> offs(row);
  for (float& o : offs) o = spread * n01(rng);
  std::vector<float> x(tokens * row);
  for (size_t t = 0; t < tokens; ++t)
    for (size_t i = 0; i < row; ++i) x[t * row + i] = offs[i] + n01(rng);
  return x;
}

inline std::vector<uint16_t> to_half_bits(const std::vector<float>& x) {
  std::vector<uint16_t> h(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    __half v = __float2half_rn(x[i]);
    std::memcpy(&h[i], &v, 2);
  }
  return h;
}

inline double rel_err(const std::vector<float>& ref, const std::vector<float>& got) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    double e = static_cast<double>(got[i]) - ref[i];
    num += e * e;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1.0));
}

// Statistics of sequence `seq` of `c` (-1: the whole cache); the call must succeed.
inline packkv_cache_stats_t stats_of(packkv_cache_t* c, int seq) {
  packkv_cache_stats_t g;
  std::memset(&g, 0, sizeof g);
  g.struct_size = sizeof g;
  REQUIRE(packkv_cache_stats(c, seq, &g) == PACKKV_OK);
  return g;
}

// The counts and byte sizes both backends must report alike (reserved bytes may differ).
inline void check_same_sizes(const packkv_cache_stats_t& a, const packkv_cache_stats_t& g) {
  CHECK(a.n_tokens == g.n_tokens);
  CHECK(a.n_blocks == g.n_blocks);
  CHECK(a.k_tile_bytes == g.k_tile_bytes);
  CHECK(a.v_tile_bytes == g.v_tile_bytes);
  CHECK(a.k_scale_bytes == g.k_scale_bytes);
  CHECK(a.v_scale_bytes == g.v_scale_bytes);
  CHECK(a.perm_bytes == g.perm_bytes);
  CHECK(a.residual_bytes == g.residual_bytes);
}

// A CPU and a CUDA cache with the same parameters, fed the same tokens.
struct Pair {
  Shape s;
  Cache cpu, gpu;
  size_t row;
  explicit Pair(const Shape& sh) : s(sh), cpu(make_params(sh, -1)), gpu(make_params(sh, 0)),
                                   row(static_cast<size_t>(sh.heads) * sh.dim) {}
  // Caches made elsewhere (e.g. in pools), owned from here on.
  Pair(const Shape& sh, packkv_cache_t* cpu_cache, packkv_cache_t* gpu_cache)
      : s(sh), cpu(cpu_cache), gpu(gpu_cache), row(static_cast<size_t>(sh.heads) * sh.dim) {}

  // Appends counts[i] tokens to sequence ids[i] in both caches.
  void append(const std::vector<int32_t>& ids, const std::vector<int32_t>& counts, std::mt19937& rng) {
    size_t total = 0;
    for (int32_t n : counts) total += n;
    append_data(ids, counts, kv_data(total, row, rng, 2.0f), kv_data(total, row, rng, 0.5f));
  }
  // Same with given K and V (f32 values, [tokens][H][D]).
  void append_data(const std::vector<int32_t>& ids, const std::vector<int32_t>& counts,
                   const std::vector<float>& k, const std::vector<float>& v) {
    size_t total = 0;
    for (int32_t n : counts) total += n;
    REQUIRE(k.size() == total * row);
    const packkv_dtype_t dt = s.in_dtype;
    std::vector<uint16_t> kh, vh;
    const void* hk = k.data();
    const void* hv = v.data();
    size_t esz = 4;
    if (dt != PACKKV_DTYPE_F32) {
      REQUIRE(dt == PACKKV_DTYPE_F16);
      kh = to_half_bits(k);
      vh = to_half_bits(v);
      hk = kh.data();
      hv = vh.data();
      esz = 2;
    }
    packkv_status_t st = packkv_cache_append(cpu.c, static_cast<int32_t>(ids.size()), ids.data(),
                                             counts.data(), hk, hv, dt, nullptr);
    INFO(packkv_last_error_message());
    REQUIRE(st == PACKKV_OK);
    DBuf dk(total * row * esz), dv(total * row * esz);
    CUDA_OK(cudaMemcpy(dk.p, hk, total * row * esz, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dv.p, hv, total * row * esz, cudaMemcpyHostToDevice));
    st = packkv_cache_append(gpu.c, static_cast<int32_t>(ids.size()), ids.data(), counts.data(), dk.p,
                             dv.p, dt, nullptr);
    INFO(packkv_last_error_message());
    REQUIRE(st == PACKKV_OK);
    st = packkv_cache_sync(gpu.c);
    INFO(packkv_last_error_message());
    REQUIRE(st == PACKKV_OK);
  }

  int64_t len(int seq) const {
    int64_t n = -1, m = -2;
    REQUIRE(packkv_cache_seq_length(cpu.c, seq, &n) == PACKKV_OK);
    REQUIRE(packkv_cache_seq_length(gpu.c, seq, &m) == PACKKV_OK);
    REQUIRE(n == m);
    return n;
  }

  void check_bytes_and_stats() {
    const packkv::CacheImpl& ci = packkv::internal_impl(cpu.c);
    const packkv::CacheImpl& gi = packkv::internal_impl(gpu.c);
    for (int q = 0; q < s.seqs; ++q) {
      REQUIRE(ci.n_blocks(q) == gi.n_blocks(q));
      for (int64_t b = 0; b < ci.n_blocks(q); ++b) {
        std::vector<uint8_t> x = ci.block_bytes(q, b), y = gi.block_bytes(q, b);
        INFO("seq " << q << " block " << b);
        REQUIRE(x.size() == y.size());
        size_t first = x.size();
        for (size_t i = 0; i < x.size(); ++i)
          if (x[i] != y[i]) { first = i; break; }
        INFO("first differing byte " << first);
        REQUIRE(first == x.size());
      }
      const packkv_cache_stats_t a = stats_of(cpu.c, q), g = stats_of(gpu.c, q);
      check_same_sizes(a, g);
      CHECK(a.n_residual_tokens == g.n_residual_tokens);
      CHECK(a.fp16_bytes == g.fp16_bytes);
      CHECK(g.compressed_bytes_reserved >= g.compressed_bytes_used);
    }
  }

  void check_decompress() {
    for (int q = 0; q < s.seqs; ++q) {
      const int64_t n = len(q);
      if (n == 0) continue;
      std::vector<float> ck(n * row), cv(n * row);
      REQUIRE(packkv_cache_decompress(cpu.c, q, ck.data(), cv.data(), n, nullptr) == PACKKV_OK);
      DBuf gk(n * row * 4), gv(n * row * 4);
      REQUIRE(packkv_cache_decompress(gpu.c, q, gk.as<float>(), gv.as<float>(), n, nullptr) == PACKKV_OK);
      REQUIRE(packkv_cache_sync(gpu.c) == PACKKV_OK);
      std::vector<float> xk = from_dev<float>(gk, n * row), xv = from_dev<float>(gv, n * row);
      INFO("seq " << q);
      CHECK(std::memcmp(ck.data(), xk.data(), ck.size() * 4) == 0);
      CHECK(std::memcmp(cv.data(), xv.data(), cv.size() * 4) == 0);
    }
  }

  // scores, apply and decode over the given sequences, CPU vs GPU.
  void check_attention(const std::vector<int32_t>& ids, std::mt19937& rng) {
    const int ns = static_cast<int>(ids.size()), hq = s.q_heads, D = s.dim;
    int64_t ld = 1;
    for (int32_t id : ids) ld = std::max<int64_t>(ld, len(id));
    std::normal_distribution<float> n01(0.f, 1.f);
    std::vector<float> q(static_cast<size_t>(ns) * hq * D);
    for (float& x : q) x = n01(rng);
    std::vector<uint16_t> qh;
    const void* qhost = q.data();
    size_t qes = 4;
    if (s.q_dtype == PACKKV_DTYPE_F16) {
      qh = to_half_bits(q);
      for (size_t i = 0; i < q.size(); ++i) {  // the CPU gets the same rounded values
        __half h;
        std::memcpy(&h, &qh[i], 2);
        q[i] = __half2float(h);
      }
      qhost = qh.data();
      qes = 2;
    }
    DBuf dq(q.size() * qes);
    CUDA_OK(cudaMemcpy(dq.p, qhost, q.size() * qes, cudaMemcpyHostToDevice));
    size_t wc = 0, wg = 0;
    REQUIRE(packkv_attn_workspace_size(cpu.c, ns, hq, &wc) == PACKKV_OK);
    REQUIRE(packkv_attn_workspace_size(gpu.c, ns, hq, &wg) == PACKKV_OK);
    std::vector<uint8_t> wsc(wc + 1);
    DBuf wsg(wg);
    // scores
    const size_t nsc = static_cast<size_t>(ns) * hq * ld;
    std::vector<float> sc_c(nsc, 0.f);
    REQUIRE(packkv_attn_scores(cpu.c, ns, ids.data(), hq, q.data(), PACKKV_DTYPE_F32, sc_c.data(), ld,
                               wsc.data(), wc, nullptr) == PACKKV_OK);
    DBuf dsc(nsc * 4);
    CUDA_OK(cudaMemset(dsc.p, 0, nsc * 4));
    packkv_status_t st = packkv_attn_scores(gpu.c, ns, ids.data(), hq, dq.p, s.q_dtype, dsc.as<float>(), ld,
                                            wsg.p, wg, nullptr);
    INFO(packkv_last_error_message());
    REQUIRE(st == PACKKV_OK);
    REQUIRE(packkv_cache_sync(gpu.c) == PACKKV_OK);
    std::vector<float> sc_g = from_dev<float>(dsc, nsc);
    CHECK(rel_err(sc_c, sc_g) <= 1e-5);
    // apply with softmax-like probabilities
    std::vector<float> probs(nsc, 0.f);
    for (int i = 0; i < ns; ++i)
      for (int64_t t = 0; t < len(ids[i]); ++t)
        for (int j = 0; j < hq; ++j)
          probs[(static_cast<size_t>(i) * hq + j) * ld + t] = std::exp(0.3f * n01(rng));
    DBuf dp(nsc * 4);
    to_dev(dp, probs);
    const size_t no = static_cast<size_t>(ns) * hq * D;
    std::vector<float> ao_c(no);
    REQUIRE(packkv_attn_apply(cpu.c, ns, ids.data(), hq, probs.data(), ld, ao_c.data(), wsc.data(), wc,
                              nullptr) == PACKKV_OK);
    DBuf dao(no * 4);
    st = packkv_attn_apply(gpu.c, ns, ids.data(), hq, dp.as<float>(), ld, dao.as<float>(), wsg.p, wg, nullptr);
    INFO(packkv_last_error_message());
    REQUIRE(st == PACKKV_OK);
    REQUIRE(packkv_cache_sync(gpu.c) == PACKKV_OK);
    CHECK(rel_err(ao_c, from_dev<float>(dao, no)) <= 1e-5);
    // decode
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    std::vector<float> o_c(no), l_c(static_cast<size_t>(ns) * hq);
    REQUIRE(packkv_attn_decode(cpu.c, ns, ids.data(), hq, q.data(), PACKKV_DTYPE_F32, scale, o_c.data(),
                               l_c.data(), wsc.data(), wc, nullptr) == PACKKV_OK);
    DBuf dout(no * 4), dlse(l_c.size() * 4);
    CUDA_OK(cudaMemset(dout.p, 0xff, no * 4));  // poison: NaN
    st = packkv_attn_decode(gpu.c, ns, ids.data(), hq, dq.p, s.q_dtype, scale, dout.as<float>(),
                            dlse.as<float>(), wsg.p, wg, nullptr);
    INFO(packkv_last_error_message());
    REQUIRE(st == PACKKV_OK);
    REQUIRE(packkv_cache_sync(gpu.c) == PACKKV_OK);
    std::vector<float> o_g = from_dev<float>(dout, no), l_g = from_dev<float>(dlse, l_c.size());
    CHECK(rel_err(o_c, o_g) <= 1e-5);
    for (size_t i = 0; i < l_c.size(); ++i) {
      if (std::isinf(l_c[i])) {
        CHECK(std::isinf(l_g[i]));
      } else {
        CHECK(std::fabs(l_c[i] - l_g[i]) <= 1e-5 * std::max(1.0f, std::fabs(l_c[i])));
      }
    }
  }

  void check_all(std::mt19937& rng) {
    check_bytes_and_stats();
    check_decompress();
    std::vector<int32_t> ids;
    for (int q = 0; q < s.seqs; ++q) ids.push_back(q);
    std::shuffle(ids.begin(), ids.end(), rng);
    check_attention(ids, rng);
  }
};

}  // namespace gpu_test

#endif  // PACKKV_TESTS_GPU_PAIR_H
