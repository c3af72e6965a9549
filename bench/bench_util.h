// Small helpers shared by the host benchmarks (cpu_bench, memory_bench, page_size): exit on a
// failed libpackkv call, and fp32 -> fp16 bits for synthetic bench data. Not library code.
#ifndef PACKKV_BENCH_UTIL_H
#define PACKKV_BENCH_UTIL_H

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "packkv/packkv.h"

namespace packkv_bench {

// Prints the library's message for a failed call and exits 1.
inline void check(packkv_status_t st, const char* what) {
  if (st != PACKKV_OK) {
    std::fprintf(stderr, "%s failed: %s\n", what, packkv_last_error_message());
    std::exit(1);
  }
}

// fp32 -> fp16 bits, round to nearest even, normal range only (bench data; tiny values flush to 0).
inline uint16_t to_half(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
  if (a < 0x38800000u) return (uint16_t)sign;
  const uint32_t r = a + 0xfffu + ((a >> 13) & 1u);
  return (uint16_t)(sign | (((r >> 23) - 112u) << 10) | ((r >> 13) & 0x3ffu));
}

// Parameters of a cache that compresses every token (no residual window, no sink tokens) at
// the rates of the recorded CPU results (r_K 0.1 / r_V 0.2, not the library's defaults).
inline packkv_cache_params_t all_compressed_params(int n_kv_heads, int head_dim) {
  packkv_cache_params_t p;
  check(packkv_cache_params_init(&p, sizeof p), "params_init");
  p.n_kv_heads = n_kv_heads;
  p.head_dim = head_dim;
  p.residual_tokens = 0;
  p.sink_tokens = 0;
  p.rel_scale_k = 0.1f;
  p.rel_scale_v = 0.2f;
  return p;
}

}  // namespace packkv_bench

#endif  // PACKKV_BENCH_UTIL_H
