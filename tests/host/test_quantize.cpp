// Per-token quantization (PACKKV.md section 3; golden vector T6) and the error bound
// |x - x^| <= r * range / 2 through the whole cache.
#include <doctest/doctest.h>

#include <cfloat>
#include <cstring>
#include <cmath>
#include <vector>

#include "common/dtype.h"
#include "helpers.h"
#include "codec/quantize.h"
#include "format/affine.h"
#include "api/config.h"
#include "format/shape.h"

using namespace packkv;

TEST_CASE("T6: x = [-1, 0, 1, 3], r = 0.25") {
  const float x[4] = {-1, 0, 1, 3};
  uint8_t q[4];
  fmt::Affine a;
  quantize_tokens(x, 1, 1, 4, 1, 0.25f, 3, false, q, &a);
  CHECK(a.scale == 1.0f);
  CHECK(a.zero == -1);
  CHECK(std::vector<int>(q, q + 4) == std::vector<int>{0, 1, 2, 4});
  for (int i = 0; i < 4; ++i) CHECK(fmt::dequantize(q[i], a) == x[i]);
}

TEST_CASE("T6: x = [0, 0.26, 0.5, 1], r = 0.25") {
  const float x[4] = {0, 0.26f, 0.5f, 1};
  uint8_t q[4];
  fmt::Affine a;
  quantize_tokens(x, 1, 1, 4, 1, 0.25f, 3, false, q, &a);
  CHECK(a.scale == 0.25f);
  CHECK(a.zero == 0);
  CHECK(std::vector<int>(q, q + 4) == std::vector<int>{0, 1, 2, 4});
  CHECK(fmt::dequantize(q[1], a) == 0.25f);
}

TEST_CASE("T6: round half to even") {
  fmt::Affine a{1.0f, 0};
  CHECK(fmt::quantize(2.5f, a, 15) == 2);
  CHECK(fmt::quantize(3.5f, a, 15) == 4);
  CHECK(fmt::quantize(0.5f, a, 15) == 0);
}

TEST_CASE("T6: constant tokens are exact and never NaN") {
  for (float c : {0.0f, -0.0f, 3.25f, -7.5f, 1e-42f, 65504.0f, -3.0e38f}) {
    std::vector<float> x(64, c);
    std::vector<uint8_t> q(64);
    fmt::Affine a;
    quantize_tokens(x.data(), 1, 1, 64, 1, 0.1f, 4, false, q.data(), &a);
    for (int i = 0; i < 64; ++i) {
      const float back = fmt::dequantize(q[i], a);
      CHECK(!std::isnan(back));
      CHECK(back == c);
    }
  }
}

TEST_CASE("codes are clamped to the bit range") {
  // r = 1/15 can produce q = 16 (PACKKV.md 8.2); with 4 bits it must clamp to 15
  fmt::Affine a = fmt::group_affine(0.0f, 1.0f, 1.0f / 15.0f);
  CHECK(fmt::quantize(1.0f, a, 15) <= 15u);
  CHECK(fmt::quantize(-100.0f, a, 15) == 0u);
  CHECK(fmt::quantize(100.0f, a, 15) == 15u);
}

TEST_CASE("bits derived from the relative scale") {
  int32_t b = 0;
  REQUIRE(packkv_bits_for_rel_scale(0.1f, &b) == PACKKV_OK);
  CHECK(b == 4);
  REQUIRE(packkv_bits_for_rel_scale(0.2f, &b) == PACKKV_OK);
  CHECK(b == 3);
  REQUIRE(packkv_bits_for_rel_scale(1.0f, &b) == PACKKV_OK);
  CHECK(b == 2);  // levels 0, 1, 2
  REQUIRE(packkv_bits_for_rel_scale(1.0f / 254.0f, &b) == PACKKV_OK);
  CHECK(b == 8);
  CHECK(packkv_bits_for_rel_scale(0.001f, &b) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_bits_for_rel_scale(NAN, &b) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_bits_for_rel_scale(0.1f, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
}

TEST_CASE("every possible code fits the derived width (exhaustive over grid offsets)") {
  // r values whose 1/r sits just below a code-width limit (15, 31, 63, 127, 255 codes)
  // stress the compact scale, which is rounded down by up to 2^-8 of itself.
  for (float r : {1.0f, 0.5f, 1.0f / 3.0f, 0.25f, 0.2f, 0.1f, 1.0f / 15.0f, 0.05f, 0.01f, 1.0f / 14.99f,
                  1.0f / 13.95f, 1.0f / 29.9f, 1.0f / 253.9f, 1.0f / 254.0f}) {
    for (fmt::ZsFormat zs : {fmt::ZsFormat::kWide, fmt::ZsFormat::kCompact}) {
      const int bits = packkv::bits_for_rel_scale(r, zs);
      CAPTURE(r);
      CAPTURE((int)zs);
      for (int k = 0; k < 2000; ++k) {
        const float lo = -3.0f + 0.00173f * (float)k, hi = lo + 1.0f + 0.0007f * (float)(k % 13);
        fmt::Affine a;
        if (zs == fmt::ZsFormat::kWide) a = fmt::group_affine(lo, hi, r);
        else REQUIRE(fmt::group_affine_compact(lo, hi, r, &a));
        for (float x : {lo, hi, 0.5f * (lo + hi)}) {
          const double q = std::rint((double)(x / a.scale)) - a.zero;  // unclamped
          CHECK(q <= (double)((1 << bits) - 1));
          CHECK(q >= 0.0);
        }
      }
    }
  }
  int32_t b = 0;  // the public function gives the compact width
  REQUIRE(packkv_bits_for_rel_scale(1.0f / 14.99f, &b) == PACKKV_OK);
  CHECK(b == packkv::bits_for_rel_scale(1.0f / 14.99f, fmt::ZsFormat::kCompact));
  CHECK(b == 5);
  CHECK(packkv::bits_for_rel_scale(1.0f / 14.99f, fmt::ZsFormat::kWide) == 4);
}

namespace {
// Appends data through a cache and checks the bound on every compressed value.
void check_bound_zs(int heads, int dim, float rk, float rv, packkv_dtype_t dtype, packkv_scale_granularity_t gran,
                    const std::vector<float>& k_in, const std::vector<float>& v_in, size_t tokens,
                    packkv_zs_format_t zs) {
  CAPTURE(zs);
  packkv_cache_params_t p = pkt::params(heads, dim);
  p.zs_format = zs;
  p.rel_scale_k = rk;
  p.rel_scale_v = rv;
  p.residual_tokens = 0;
  p.scale_granularity = gran;
  p.kv_dtype = dtype;
  pkt::Cache c(p);
  const size_t row = (size_t)heads * dim;
  // Values are rounded to the cache's dtype on entry; the bound applies to those.
  std::vector<float> k(k_in), v(v_in);
  for (std::vector<float>* x : {&k, &v})
    for (float& f : *x)
      f = dtype == PACKKV_DTYPE_F16 ? half_to_float(float_to_half(f))
                                    : dtype == PACKKV_DTYPE_BF16 ? bf16_to_float(float_to_bf16(f)) : f;
  pkt::append1(c, 0, k_in, v_in, 0, (int)tokens, row);
  const pkt::Decompressed d = pkt::decompress(c, 0, row);
  const int64_t compressed = pkt::stats(c).n_compressed_tokens;
  const int groups = gran == PACKKV_SCALE_PER_TOKEN ? 1 : heads;
  const size_t glen = row / groups;
  for (int kv = 0; kv < 2; ++kv) {
    const std::vector<float>& x = kv == 0 ? k : v;
    const std::vector<float>& y = kv == 0 ? d.k : d.v;
    const double r = kv == 0 ? rk : rv;
    for (int64_t t = 0; t < (int64_t)tokens; ++t)
      for (int g = 0; g < groups; ++g) {
        const size_t first = (size_t)t * row + g * glen;
        double lo = x[first], hi = x[first];
        for (size_t i = 0; i < glen; ++i) {
          lo = std::min(lo, (double)x[first + i]);
          hi = std::max(hi, (double)x[first + i]);
        }
        // exact-arithmetic bound, plus the fp32 rounding of s and of (q + z) * s
        const double bound = t < compressed ? r * (hi - lo) / 2 * (1 + 1e-6) : 0.0;
        for (size_t i = 0; i < glen; ++i) {
          const double slack = t < compressed ? 2.4e-7 * std::fabs((double)x[first + i]) : 0.0;
          const double err = std::fabs((double)y[first + i] - (double)x[first + i]) - slack;
          if (!(err <= bound)) {
            FAIL_CHECK("bound violated: kv " << kv << " token " << t << " value " << x[first + i] << " got "
                                             << y[first + i] << " bound " << bound);
            return;
          }
        }
      }
  }
}
// Both encodings of the zero points and scales.
void check_bound(int heads, int dim, float rk, float rv, packkv_dtype_t dtype, packkv_scale_granularity_t gran,
                 const std::vector<float>& k_in, const std::vector<float>& v_in, size_t tokens) {
  for (packkv_zs_format_t zs : {PACKKV_ZS_COMPACT, PACKKV_ZS_WIDE})
    check_bound_zs(heads, dim, rk, rv, dtype, gran, k_in, v_in, tokens, zs);
}
}  // namespace

TEST_CASE("error bound |x - x^| <= r * range / 2 for every head_dim, bit width and dtype") {
  const float scales[] = {1.0f, 0.5f, 0.2f, 0.1f, 0.05f, 0.02f, 0.01f, 1.0f / 254.0f};  // 2..8 bits
  int dim_i = 0;
  for (int dim = 32; dim <= 256; dim += 16, ++dim_i) {
    const float r = scales[dim_i % 8];
    for (packkv_dtype_t dt : {PACKKV_DTYPE_F16, PACKKV_DTYPE_BF16, PACKKV_DTYPE_F32}) {
      const int heads = 1 + dim_i % 3;
      auto k = pkt::kv_data(64, heads, dim, 100 + dim_i);
      auto v = pkt::kv_data(64, heads, dim, 200 + dim_i);
      CAPTURE(dim);
      CAPTURE(dt);
      CAPTURE(r);
      check_bound(heads, dim, r, r, dt, PACKKV_SCALE_PER_TOKEN, k, v, 64);
      check_bound(heads, dim, r, 0.2f, dt, PACKKV_SCALE_PER_TOKEN_HEAD, k, v, 64);
    }
  }
}

TEST_CASE("error bound on adversarial data: outliers, tiny ranges, huge ranges, subnormals") {
  const int heads = 2, dim = 64, n = 64;
  const size_t row = (size_t)heads * dim;
  std::vector<float> k = pkt::kv_data(n, heads, dim, 5), v = pkt::kv_data(n, heads, dim, 6);
  k[3 * row + 17] = 1e4f;                                      // one huge outlier
  for (size_t i = 0; i < row; ++i) k[5 * row + i] = 1000.0f + 1e-3f * (float)(i % 7);  // tiny range, large offset
  for (size_t i = 0; i < row; ++i) v[7 * row + i] = (i % 2 ? 1 : -1) * 3.0e38f;       // fp32 range limit
  for (size_t i = 0; i < row; ++i) v[9 * row + i] = (float)(i % 5) * 1e-44f;           // subnormals
  for (size_t i = 0; i < row; ++i) k[11 * row + i] = 0.0f;                             // all zeros
  for (float r : {0.1f, 0.5f, 1.0f / 254.0f}) check_bound(heads, dim, r, r, PACKKV_DTYPE_F32, PACKKV_SCALE_PER_TOKEN, k, v, n);
  // bf16 range limits
  std::vector<float> kb(k);
  for (size_t i = 0; i < row; ++i) kb[13 * row + i] = (i % 2 ? 1 : -1) * 3.38e38f;
  check_bound(heads, dim, 0.1f, 0.2f, PACKKV_DTYPE_BF16, PACKKV_SCALE_PER_TOKEN, kb, v, n);
}

TEST_CASE("all-zero groups store +0.0 whatever the signs of their zeros") {
  for (float lo : {0.0f, -0.0f})
    for (float hi : {0.0f, -0.0f}) {
      const fmt::Affine a = fmt::group_affine(lo, hi, 0.1f);
      uint32_t bits;
      std::memcpy(&bits, &a.scale, 4);
      CHECK(bits == 0u);
      CHECK(a.zero == 0);
    }
}

TEST_CASE("fp16 -> fp32 bulk conversion (F16C where the CPU has it) equals the scalar definition") {
  std::vector<uint16_t> all(65536);
  for (uint32_t i = 0; i < 65536; ++i) all[i] = (uint16_t)i;
  std::vector<float> bulk(all.size());
  to_float(all.data(), PACKKV_DTYPE_F16, all.size(), bulk.data());
  int mismatches = 0;
  for (uint32_t i = 0; i < 65536; ++i) {
    const float one = half_to_float((uint16_t)i);
    if (std::isnan(one)) {
      mismatches += !std::isnan(bulk[i]);
      continue;
    }
    uint32_t a, b;
    std::memcpy(&a, &one, 4);
    std::memcpy(&b, &bulk[i], 4);
    mismatches += a != b;
  }
  CHECK(mismatches == 0);
  // hand-worked values: 1.0, -2.0, the largest half, the smallest subnormal
  CHECK(half_to_float(0x3c00) == 1.0f);
  CHECK(half_to_float(0xc000) == -2.0f);
  CHECK(half_to_float(0x7bff) == 65504.0f);
  CHECK(half_to_float(0x0001) == 5.9604644775390625e-08f);
}
