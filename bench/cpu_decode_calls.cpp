// A fixed decode workload for instruction counts of the CPU backend (issue 19): one sequence
// of T tokens (synthetic fp16 K: Gaussian with per-channel offsets, V: Gaussian; the
// Llama-3-8B layer shape 8 KV heads x 128, GQA 4, every token compressed at r_K 0.1 /
// r_V 0.2, n_threads 1), then `calls` packkv_attn_decode calls; prints the median time of
// a call and a checksum of the outputs. Meant for
//     valgrind --tool=callgrind --toggle-collect=packkv_attn_decode packkv_cpu_decode_calls 2048 10
// (instructions inside packkv_attn_decode only; PACKKV_CPU_ISA=avx2 where valgrind lacks
// AVX-512). Uses the public C API alone, so the same source builds against any version.
// Usage: packkv_cpu_decode_calls [tokens (2048)] [calls (10)]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "bench_util.h"
#include "packkv/packkv.h"

using packkv_bench::check;

int main(int argc, char** argv) {
  const int T = argc > 1 ? std::atoi(argv[1]) : 2048, calls = argc > 2 ? std::atoi(argv[2]) : 10;
  if (T < 1 || calls < 1) {
    std::fprintf(stderr, "usage: %s [tokens] [calls]\n", argv[0]);
    return 2;
  }
  const int H = 8, d = 128, g = 4, hq = H * g;
  std::mt19937 rng(1);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  std::vector<float> offs((size_t)H * d);
  for (float& o : offs) o = 2.0f * n01(rng);
  std::vector<uint16_t> k((size_t)T * H * d), v(k.size());
  for (size_t i = 0; i < k.size(); ++i) {
    k[i] = packkv_bench::to_half(offs[i % offs.size()] + 0.7f * n01(rng));
    v[i] = packkv_bench::to_half(n01(rng));
  }
  std::vector<float> q((size_t)hq * d), out(q.size());
  for (float& x : q) x = n01(rng);
  packkv_cache_params_t p = packkv_bench::all_compressed_params(H, d);
  p.max_tokens_per_seq = T;
  p.n_threads = 1;
  packkv_cache_t* c = nullptr;
  check(packkv_cache_create(&p, &c), "create");
  int32_t id = 0, n = T;
  check(packkv_cache_append(c, 1, &id, &n, k.data(), v.data(), PACKKV_DTYPE_F16, nullptr), "append");
  double sum = 0;
  std::vector<double> ts;
  for (int r = 0; r < calls; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    check(packkv_attn_decode(c, 1, &id, hq, q.data(), PACKKV_DTYPE_F32, 0.088388f, out.data(), nullptr, nullptr, 0,
                             nullptr),
          "decode");
    ts.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    for (float x : out) sum += x;
  }
  std::sort(ts.begin(), ts.end());
  std::printf("tokens %d, %d calls: median %.3f ms a call (min %.3f); checksum %.9g\n", T, calls,
              ts[ts.size() / 2] * 1e3, ts[0] * 1e3, sum);
  packkv_cache_destroy(c);
  return 0;
}
