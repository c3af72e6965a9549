// CPU benchmark of the packkv CPU backend, one thread:
//  - encode throughput: fp16 K and V appended with residual_tokens = 0, so every token is
//    quantized, repacked and bit-packed; reported in GB/s of fp16 input (goal >= 1 GB/s);
//  - decode attention on the compressed cache vs a dense fp32 baseline on the same
//    (uncompressed) data in the same run (goal: not slower).
// Usage: packkv_cpu_bench [--tokens N] [--reps R]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench_util.h"
#include "packkv/packkv.h"

using packkv_bench::check;
using packkv_bench::to_half;

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// K-like data: per-channel offsets (outlier channels) plus a smooth per-token drift.
std::vector<float> make_kv(size_t tokens, int heads, int dim, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  const size_t row = (size_t)heads * dim;
  std::vector<float> offs(row);
  for (float& o : offs) o = 2.0f * n01(rng);
  std::vector<float> x(tokens * row);
  for (size_t t = 0; t < tokens; ++t)
    for (size_t i = 0; i < row; ++i) x[t * row + i] = offs[i] + 0.7f * n01(rng);
  return x;
}

struct Shape {
  const char* name;
  int heads, dim;
};

// Dense fp32 decode attention (GQA), the baseline: scores, softmax, weighted sum.
void dense_decode(const float* k, const float* v, size_t n, int hkv, int d, const float* q, int hq, float scale,
                  float* out, std::vector<float>& p) {
  const int g = hq / hkv;
  p.resize(n);
  for (int j = 0; j < hq; ++j) {
    const int h = j / g;
    const float* qj = q + (size_t)j * d;
    float mx = -INFINITY;
    for (size_t t = 0; t < n; ++t) {
      const float* kt = k + (t * hkv + h) * d;
      float s = 0.0f;
      for (int c = 0; c < d; ++c) s += qj[c] * kt[c];
      p[t] = s * scale;
      mx = std::max(mx, p[t]);
    }
    float sum = 0.0f;
    for (size_t t = 0; t < n; ++t) sum += (p[t] = std::exp(p[t] - mx));
    float* o = out + (size_t)j * d;
    std::fill(o, o + d, 0.0f);
    for (size_t t = 0; t < n; ++t) {
      const float w = p[t] / sum;
      const float* vt = v + (t * hkv + h) * d;
      for (int c = 0; c < d; ++c) o[c] += w * vt[c];
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  size_t tokens = 8192;
  int reps = 5;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) {
      std::printf(
          "usage: %s [--tokens N] [--reps R]\n"
          "CPU backend benchmark, one thread: encode throughput (GB/s of fp16 input, every token\n"
          "compressed) and decode attention on the compressed cache vs a dense fp32 baseline over\n"
          "the same data, for two head shapes and the three repacking modes.\n"
          "  --tokens N  tokens per sequence (default 8192)\n"
          "  --reps R    timed repetitions, the median is reported (default 5)\n",
          argv[0]);
      return 0;
    }
    const bool has_value = i + 1 < argc;
    if (!std::strcmp(argv[i], "--tokens") && has_value) {
      tokens = (size_t)std::atol(argv[++i]);
    } else if (!std::strcmp(argv[i], "--reps") && has_value) {
      reps = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "%s: unknown or incomplete argument '%s' (try --help)\n", argv[0], argv[i]);
      return 2;
    }
  }
  if (tokens < 1 || reps < 1) {
    std::fprintf(stderr, "%s: --tokens and --reps must be positive\n", argv[0]);
    return 2;
  }
  std::printf("%s\n", packkv_build_info());
  std::printf("%-22s %-8s %10s %12s %10s %12s %12s %8s\n", "shape", "repack", "tokens", "encode GB/s", "ratio",
              "dense ms", "packkv ms", "speedup");
  const Shape shapes[] = {{"smollm2 3x64", 3, 64}, {"llama3-8b 8x128", 8, 128}};
  for (const Shape& sh : shapes) {
    const size_t row = (size_t)sh.heads * sh.dim;
    const std::vector<float> kf = make_kv(tokens, sh.heads, sh.dim, 1), vf = make_kv(tokens, sh.heads, sh.dim, 2);
    std::vector<uint16_t> kh(kf.size()), vh(vf.size());
    std::vector<float> kr(kf.size()), vr(vf.size());  // fp16-rounded values for the dense baseline
    for (size_t i = 0; i < kf.size(); ++i) {
      kh[i] = to_half(kf[i]);
      vh[i] = to_half(vf[i]);
    }
    for (packkv_repack_t repack : {PACKKV_REPACK_NONE, PACKKV_REPACK_MEDIAN, PACKKV_REPACK_GREEDY}) {
      packkv_cache_params_t p;
      check(packkv_cache_params_init(&p, sizeof p), "params_init");
      p.n_kv_heads = sh.heads;
      p.head_dim = sh.dim;
      p.repack = repack;
      p.residual_tokens = 0;
      p.rel_scale_k = 0.1f;  // the recorded results' rates (not the library's defaults)
      p.rel_scale_v = 0.2f;
      p.sink_tokens = 0;
      p.max_tokens_per_seq = (int64_t)tokens;
      std::vector<double> enc;
      packkv_cache_t* cache = nullptr;
      const int enc_reps = repack == PACKKV_REPACK_GREEDY ? 1 : reps;
      for (int r = 0; r < enc_reps; ++r) {
        if (cache) packkv_cache_destroy(cache);
        check(packkv_cache_create(&p, &cache), "create");
        int32_t id = 0, n = (int32_t)tokens;
        const auto t0 = Clock::now();
        check(packkv_cache_append(cache, 1, &id, &n, kh.data(), vh.data(), PACKKV_DTYPE_F16, nullptr), "append");
        enc.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
      }
      const double gbps = (double)tokens * row * 2 * 2 / median(enc) / 1e9;
      packkv_cache_stats_t st;
      st.struct_size = sizeof st;
      check(packkv_cache_stats(cache, 0, &st), "stats");
      const double ratio = (double)st.fp16_bytes / (double)(st.compressed_bytes_used + st.residual_bytes);
      // decode attention, GQA group 4
      const int hq = sh.heads * 4;
      std::vector<float> q = make_kv(1, hq, sh.dim, 3), out(hq * sh.dim), ref(hq * sh.dim), pbuf;
      std::vector<float> kd(kf.size()), vd(vf.size());
      check(packkv_cache_decompress(cache, 0, kd.data(), vd.data(), (int64_t)tokens, nullptr), "decompress");
      const float scale = 1.0f / std::sqrt((float)sh.dim);
      std::vector<double> td, tp;
      for (int r = 0; r < reps; ++r) {
        auto t0 = Clock::now();
        dense_decode(kd.data(), vd.data(), tokens, sh.heads, sh.dim, q.data(), hq, scale, ref.data(), pbuf);
        td.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
        int32_t id = 0;
        t0 = Clock::now();
        check(packkv_attn_decode(cache, 1, &id, hq, q.data(), PACKKV_DTYPE_F32, scale, out.data(), nullptr, nullptr,
                                 0, nullptr),
              "decode");
        tp.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
      }
      double num = 0, den = 0;
      for (size_t i = 0; i < out.size(); ++i) {
        num += (out[i] - ref[i]) * (out[i] - ref[i]);
        den += ref[i] * ref[i];
      }
      if (std::sqrt(num / den) > 1e-4) {
        std::fprintf(stderr, "packkv decode disagrees with dense decode on the same data: %g\n", std::sqrt(num / den));
        return 1;
      }
      const char* rn = repack == PACKKV_REPACK_NONE ? "none" : repack == PACKKV_REPACK_MEDIAN ? "median" : "greedy";
      std::printf("%-22s %-8s %10zu %12.3f %10.2f %12.3f %12.3f %8.2f\n", sh.name, rn, tokens, gbps, ratio,
                  median(td) * 1e3, median(tp) * 1e3, median(td) / median(tp));
      packkv_cache_destroy(cache);
    }
  }
  return 0;
}
