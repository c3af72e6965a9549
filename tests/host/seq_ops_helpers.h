// The shape and helpers shared by the sequence-operation tests (test_seq_ops.cpp,
// test_seq_ops_levers.cpp, test_window.cpp): 2 KV heads x 32 channels, 4 query heads.
#ifndef PACKKV_TESTS_SEQ_OPS_HELPERS_H
#define PACKKV_TESTS_SEQ_OPS_HELPERS_H

#include <doctest/doctest.h>

#include <algorithm>
#include <vector>

#include "common/dtype.h"
#include "pool_helpers.h"

namespace seqt {

constexpr int H = 2, D = 32, kHq = 4;
constexpr size_t kRow = (size_t)H * D;

// Appends tokens [first, first + n) of k / v in steps of `step`.
inline void feed(packkv_cache_t* c, int seq, const std::vector<float>& k, const std::vector<float>& v, size_t first,
                 size_t n, int step) {
  for (size_t t = 0; t < n; t += step) pkt::append1(c, seq, k, v, first + t, (int)std::min<size_t>(step, n - t), kRow);
}

// packkv_attn_decode of one sequence (f32 queries [kHq][D], scale 0.17): out [kHq][D] then lse [kHq].
inline std::vector<float> decode(const packkv_cache_t* c, int seq, const std::vector<float>& q) {
  std::vector<float> out((size_t)kHq * D), lse(kHq);
  int32_t id = seq;
  REQUIRE(packkv_attn_decode(c, 1, &id, kHq, q.data(), PACKKV_DTYPE_F32, 0.17f, out.data(), lse.data(), nullptr, 0,
                             nullptr) == PACKKV_OK);
  out.insert(out.end(), lse.begin(), lse.end());
  return out;
}

// Tokens [from, to) of decompressed values, rounded to f16 (the kv_dtype of these tests).
inline std::vector<float> as_f16(const std::vector<float>& x, size_t from, size_t to) {
  std::vector<float> out(x.begin() + from * kRow, x.begin() + to * kRow);
  for (float& f : out) f = packkv::half_to_float(packkv::float_to_half(f));
  return out;
}

}  // namespace seqt

#endif  // PACKKV_TESTS_SEQ_OPS_HELPERS_H
