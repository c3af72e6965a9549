// CPU benchmark of the packkv CPU backend (issues 2 and 19), every baseline measured in the
// same run:
//  1. memory bandwidth of this machine: a streaming read (sum of 64-bit words) and a copy
//     (memcpy) of 512 MiB, on 1 thread and on all threads;
//  2. encode throughput: fp16 K and V appended with residual_tokens = 0 (every token is
//     quantized, repacked and bit-packed), in GB/s of fp16 input, n_threads 1 and all;
//  3. decode attention over T tokens (one sequence, one query per head, GQA) on the
//     compressed cache for n_threads = 1, 2, 4, ... against dense fp32 and dense fp16
//     attention over the same (decompressed) values written as a user would: one pass of
//     scores per KV head (the GQA group's queries together, an `omp simd` dot product the
//     compiler vectorises), softmax, one pass of weighted V; on 1 thread and on
//     min(threads, KV heads) threads (one KV head per thread). Also the compressed bytes
//     streamed per second against the measured read bandwidth.
// The packkv output is checked against the dense fp32 output (relative L2 <= 1e-4) before
// any time is printed.
// Usage: packkv_cpu_bench [--tokens 1024,4096,16384,32768] [--threads 1,2,4,...] [--reps R]
//                         [--heads H] [--dim D] [--gqa G] [--no-encode]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#if defined(__F16C__)
#include <immintrin.h>
#endif
#include "packkv/packkv.h"

using packkv_bench::check;
using packkv_bench::to_half;
using packkv_bench::all_compressed_params;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::vector<int> parse_list(const char* s) {
  std::vector<int> v;
  for (const char* p = s; *p;) {
    v.push_back(std::atoi(p));
    while (*p && *p != ',') ++p;
    if (*p == ',') ++p;
  }
  return v;
}

// Runs fn(t) on n threads (t = 0 on the calling thread) and waits.
void on_threads(int n, const std::function<void(int)>& fn) {
  std::vector<std::thread> ts;
  for (int t = 1; t < n; ++t) ts.emplace_back(fn, t);
  fn(0);
  for (std::thread& t : ts) t.join();
}

// ---- 1. memory bandwidth ----

struct Bandwidth {
  double read_gbs, copy_gbs;
};

Bandwidth measure_bandwidth(int threads) {
  const size_t bytes = (size_t)512 << 20, words = bytes / 8;
  std::vector<uint64_t> a(words), b(words);
  on_threads(threads, [&](int t) {  // first touch by the thread that reads the part later
    const size_t lo = words * t / threads, hi = words * (t + 1) / threads;
    for (size_t i = lo; i < hi; ++i) a[i] = b[i] = i;
  });
  std::vector<uint64_t> sums(threads);
  double best_read = 1e30, best_copy = 1e30;
  for (int r = 0; r < 3; ++r) {
    auto t0 = Clock::now();
    on_threads(threads, [&](int t) {
      const size_t lo = words * t / threads, hi = words * (t + 1) / threads;
      uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      size_t i = lo;
      for (; i + 4 <= hi; i += 4) {
        s0 += a[i];
        s1 += a[i + 1];
        s2 += a[i + 2];
        s3 += a[i + 3];
      }
      for (; i < hi; ++i) s0 += a[i];
      sums[t] = s0 + s1 + s2 + s3;
    });
    best_read = std::min(best_read, seconds_since(t0));
    t0 = Clock::now();
    on_threads(threads, [&](int t) {
      const size_t lo = words * t / threads, hi = words * (t + 1) / threads;
      std::memcpy(b.data() + lo, a.data() + lo, (hi - lo) * 8);
    });
    best_copy = std::min(best_copy, seconds_since(t0));
  }
  uint64_t s = 0;
  for (uint64_t x : sums) s += x;
  if (s != (uint64_t)words * (words - 1) / 2 || b[words - 1] != words - 1) std::printf("(bandwidth check failed)\n");
  return {bytes / best_read / 1e9, 2.0 * bytes / best_copy / 1e9};  // copy: bytes read + written
}

// ---- 3. dense baselines ----

// K-like data: per-channel offsets (outlier channels) plus a per-token Gaussian part.
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

#if defined(__FLT16_MAX__)
using Half = _Float16;  // what a user of GCC >= 12 on x86 writes for fp16 data
#else
using Half = float;  // no fp16 type: the fp16 rows then measure fp32 again (printed)
#endif

// A row of d values as float: fp32 rows are used in place; fp16 rows are converted into buf
// first (F16C when compiled for it, 8 values an instruction, as llama.cpp's fp16 rows do).
inline const float* row_f32(const float* x, int, float*) { return x; }
#if defined(__FLT16_MAX__)
inline const float* row_f32(const Half* x, int d, float* buf) {
#if defined(__F16C__)
  for (int c = 0; c < d; c += 8)
    _mm256_storeu_ps(buf + c, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + c))));
#else
  for (int c = 0; c < d; ++c) buf[c] = (float)x[c];
#endif
  return buf;
}
#endif

// Dense decode attention of the g query heads of KV head h, T tokens, K/V [T][H][d] of
// element type E: scores, softmax, weighted V. p: scratch of g * T floats.
template <typename E>
void dense_head(const E* k, const E* v, size_t T, int H, int d, int h, const float* q, int g, float scale, float* out,
                float* p) {
  float buf[1024];
  for (size_t t = 0; t < T; ++t) {
    const float* kt = row_f32(k + (t * H + h) * d, d, buf);
    for (int j = 0; j < g; ++j) {
      const float* qj = q + (size_t)j * d;
      float s = 0.0f;
#pragma omp simd reduction(+ : s)
      for (int c = 0; c < d; ++c) s += qj[c] * kt[c];
      p[(size_t)j * T + t] = s * scale;
    }
  }
  for (int j = 0; j < g; ++j) {
    float* pj = p + (size_t)j * T;
    float mx = -INFINITY;
    for (size_t t = 0; t < T; ++t) mx = std::max(mx, pj[t]);
    float sum = 0.0f;
    for (size_t t = 0; t < T; ++t) sum += (pj[t] = std::exp(pj[t] - mx));
    for (size_t t = 0; t < T; ++t) pj[t] /= sum;
    std::fill(out + (size_t)j * d, out + (size_t)(j + 1) * d, 0.0f);
  }
  for (size_t t = 0; t < T; ++t) {
    const float* vt = row_f32(v + (t * H + h) * d, d, buf);
    for (int j = 0; j < g; ++j) {
      const float w = p[(size_t)j * T + t];
      float* o = out + (size_t)j * d;
#pragma omp simd
      for (int c = 0; c < d; ++c) o[c] += w * vt[c];
    }
  }
}

// All heads, KV heads spread over `threads` threads.
template <typename E>
void dense_decode(const E* k, const E* v, size_t T, int H, int d, const float* q, int g, float scale, float* out,
                  int threads, std::vector<std::vector<float>>& scratch) {
  threads = std::max(1, std::min(threads, H));
  scratch.resize(threads);
  on_threads(threads, [&](int t) {
    scratch[t].resize((size_t)g * T);
    for (int h = t; h < H; h += threads)
      dense_head(k, v, T, H, d, h, q + (size_t)h * g * d, g, scale, out + (size_t)h * g * d, scratch[t].data());
  });
}

template <typename F>
double time_median(int reps, F&& f) {
  std::vector<double> ts;
  f();  // warm-up
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    f();
    ts.push_back(seconds_since(t0));
  }
  return median(ts);
}

packkv_cache_t* make_cache(int H, int d, size_t T, int n_threads, const std::vector<uint16_t>& kh,
                           const std::vector<uint16_t>& vh, double* encode_s) {
  packkv_cache_params_t p = all_compressed_params(H, d);
  p.max_tokens_per_seq = (int64_t)T;
  p.n_threads = n_threads;
  packkv_cache_t* c = nullptr;
  check(packkv_cache_create(&p, &c), "create");
  int32_t id = 0, n = (int32_t)T;
  const auto t0 = Clock::now();
  check(packkv_cache_append(c, 1, &id, &n, kh.data(), vh.data(), PACKKV_DTYPE_F16, nullptr), "append");
  if (encode_s) *encode_s = seconds_since(t0);
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> tokens = {1024, 4096, 16384, 32768}, threads;
  int reps = 5, H = 8, d = 128, g = 4;
  bool encode = true;
  for (int i = 1; i < argc; ++i) {
    const bool has_value = i + 1 < argc;
    if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) {
      std::printf(
          "usage: %s [--tokens 1024,4096,16384,32768] [--threads 1,2,4,...] [--reps R] [--heads H] [--dim D]\n"
          "          [--gqa G] [--no-encode]\n"
          "CPU backend benchmark: memory bandwidth, encode throughput, and decode attention on the\n"
          "compressed cache for each thread count against dense fp32 / fp16 attention on the same data.\n"
          "  --tokens    sequence lengths (default 1024,4096,16384,32768)\n"
          "  --threads   n_threads values (default 1, 2, 4, ... up to the CPUs of this process)\n"
          "  --reps R    timed repetitions, the median is reported (default 5)\n"
          "  --heads H --dim D --gqa G  KV heads, head_dim, query heads per KV head (default 8, 128, 4)\n",
          argv[0]);
      return 0;
    }
    if (!std::strcmp(argv[i], "--tokens") && has_value) {
      tokens = parse_list(argv[++i]);
    } else if (!std::strcmp(argv[i], "--threads") && has_value) {
      threads = parse_list(argv[++i]);
    } else if (!std::strcmp(argv[i], "--reps") && has_value) {
      reps = std::atoi(argv[++i]);
    } else if (!std::strcmp(argv[i], "--heads") && has_value) {
      H = std::atoi(argv[++i]);
    } else if (!std::strcmp(argv[i], "--dim") && has_value) {
      d = std::atoi(argv[++i]);
    } else if (!std::strcmp(argv[i], "--gqa") && has_value) {
      g = std::atoi(argv[++i]);
    } else if (!std::strcmp(argv[i], "--no-encode")) {
      encode = false;
    } else {
      std::fprintf(stderr, "%s: unknown or incomplete argument '%s' (try --help)\n", argv[0], argv[i]);
      return 2;
    }
  }
  const int cpus = (int)std::max(1u, std::thread::hardware_concurrency());
  if (threads.empty()) {
    for (int t = 1; t < cpus; t *= 2) threads.push_back(t);
    threads.push_back(cpus);
  }
  if (reps < 1 || H < 1 || d < 8 || d > 1024 || d % 8 != 0 || g < 1 || tokens.empty() || threads.empty()) {
    std::fprintf(stderr, "%s: bad arguments\n", argv[0]);
    return 2;
  }
  const int max_threads = *std::max_element(threads.begin(), threads.end());
  std::printf("%s\nCPUs: %d; PACKKV_CPU_ISA=%s; fp16 baseline type: %s\n", packkv_build_info(), cpus,
              std::getenv("PACKKV_CPU_ISA") ? std::getenv("PACKKV_CPU_ISA") : "(unset)",
              sizeof(Half) == 2 ? "_Float16" : "float (no _Float16: fp16 rows are fp32)");

  const Bandwidth bw1 = measure_bandwidth(1), bwn = measure_bandwidth(max_threads);
  std::printf("\nmemory bandwidth (512 MiB): read %.1f GB/s (1 thread), %.1f GB/s (%d threads); copy %.1f / %.1f GB/s\n",
              bw1.read_gbs, bwn.read_gbs, max_threads, bw1.copy_gbs, bwn.copy_gbs);

  std::printf("\n%-7s %-9s %8s %8s %8s %8s | %8s %7s %7s %7s %7s %8s %6s\n", "tokens", "threads", "f32 1t", "f32 Nt",
              "f16 1t", "f16 Nt", "packkv", "x1t", "xf32-1t", "xf32-Nt", "xf16-Nt", "GB/s", "%bw");
  std::printf("%-7s %-9s %8s %8s %8s %8s | %8s %7s %7s %7s %7s %8s %6s\n", "", "", "ms", "ms", "ms", "ms", "ms", "", "",
              "", "", "compr", "");
  for (int T : tokens) {
    const size_t row = (size_t)H * d;
    const std::vector<float> kf = make_kv(T, H, d, 1), vf = make_kv(T, H, d, 2);
    std::vector<uint16_t> kh(kf.size()), vh(vf.size());
    for (size_t i = 0; i < kf.size(); ++i) {
      kh[i] = to_half(kf[i]);
      vh[i] = to_half(vf[i]);
    }
    const int hq = H * g;
    const std::vector<float> q = make_kv(1, hq, d, 3);
    const float scale = 1.0f / std::sqrt((float)d);
    // dense baselines over the decompressed values (what the cache attends to)
    packkv_cache_t* c1 = make_cache(H, d, T, 1, kh, vh, nullptr);
    std::vector<float> kd((size_t)T * row), vd((size_t)T * row);
    check(packkv_cache_decompress(c1, 0, kd.data(), vd.data(), T, nullptr), "decompress");
    packkv_cache_stats_t st;
    st.struct_size = sizeof st;
    check(packkv_cache_stats(c1, 0, &st), "stats");
    packkv_cache_destroy(c1);
    std::vector<Half> k16(kd.size()), v16(vd.size());
    for (size_t i = 0; i < kd.size(); ++i) {
      k16[i] = (Half)kd[i];
      v16[i] = (Half)vd[i];
    }
    std::vector<float> ref((size_t)hq * d), out(ref.size());
    std::vector<std::vector<float>> scratch;
    const int dense_nt = std::min(max_threads, H);
    const double f32_1 = time_median(reps, [&] {
      dense_decode(kd.data(), vd.data(), T, H, d, q.data(), g, scale, ref.data(), 1, scratch);
    });
    const double f32_n = time_median(reps, [&] {
      dense_decode(kd.data(), vd.data(), T, H, d, q.data(), g, scale, ref.data(), dense_nt, scratch);
    });
    const double f16_1 = time_median(reps, [&] {
      dense_decode(k16.data(), v16.data(), T, H, d, q.data(), g, scale, out.data(), 1, scratch);
    });
    const double f16_n = time_median(reps, [&] {
      dense_decode(k16.data(), v16.data(), T, H, d, q.data(), g, scale, out.data(), dense_nt, scratch);
    });
    dense_decode(kd.data(), vd.data(), T, H, d, q.data(), g, scale, ref.data(), 1, scratch);
    const double compressed = (double)(st.compressed_bytes_used + st.residual_bytes);
    double packkv_1 = 0;
    for (int nt : threads) {
      packkv_cache_t* c = make_cache(H, d, T, nt, kh, vh, nullptr);
      int32_t id = 0;
      auto call = [&] {
        check(packkv_attn_decode(c, 1, &id, hq, q.data(), PACKKV_DTYPE_F32, scale, out.data(), nullptr, nullptr, 0,
                                 nullptr),
              "decode");
      };
      call();
      double num = 0, den = 0;
      for (size_t i = 0; i < out.size(); ++i) {
        num += (double)(out[i] - ref[i]) * (out[i] - ref[i]);
        den += (double)ref[i] * ref[i];
      }
      if (std::sqrt(num / den) > 1e-4) {
        std::fprintf(stderr, "packkv decode disagrees with dense decode on the same data: %g\n", std::sqrt(num / den));
        return 1;
      }
      const double tp = time_median(reps, call);
      if (nt == threads.front()) packkv_1 = tp;
      const double gbs = compressed / tp / 1e9;
      std::printf("%-7d %-9d %8.3f %8.3f %8.3f %8.3f | %8.3f %7.2f %7.2f %7.2f %7.2f %8.2f %5.1f%%\n", T, nt,
                  f32_1 * 1e3, f32_n * 1e3, f16_1 * 1e3, f16_n * 1e3, tp * 1e3, packkv_1 / tp, f32_1 / tp, f32_n / tp,
                  f16_n / tp, gbs, 100.0 * gbs / bwn.read_gbs);
      packkv_cache_destroy(c);
    }
    std::printf("        (all-in compression ratio vs fp16: %.2f; dense Nt = %d threads, one KV head each)\n",
                (double)st.fp16_bytes / compressed, dense_nt);
  }

  if (encode) {
    const int T = *std::max_element(tokens.begin(), tokens.end());
    const std::vector<float> kf = make_kv(T, H, d, 1), vf = make_kv(T, H, d, 2);
    std::vector<uint16_t> kh(kf.size()), vh(vf.size());
    for (size_t i = 0; i < kf.size(); ++i) {
      kh[i] = to_half(kf[i]);
      vh[i] = to_half(vf[i]);
    }
    std::printf("\nencode (one append of %d tokens, residual_tokens 0, median repacking), GB/s of fp16 input:\n", T);
    double e1 = 0;
    for (int nt : {1, max_threads}) {
      std::vector<double> ts;
      for (int r = 0; r < std::max(1, reps / 2); ++r) {
        double s = 0;
        packkv_cache_destroy(make_cache(H, d, T, nt, kh, vh, &s));
        ts.push_back(s);
      }
      const double gbs = (double)T * H * d * 2 * 2 / median(ts) / 1e9;
      if (nt == 1) e1 = gbs;
      std::printf("  n_threads %-3d %7.3f GB/s  (x%.2f of 1 thread)\n", nt, gbs, gbs / e1);
      if (max_threads == 1) break;
    }
  }
  return 0;
}
