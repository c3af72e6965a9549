// Numerical edge cases through the public API (issue 7 item 4), beyond the codec-level
// bound checks of test_quantize.cpp: for every data class (constant tokens, one 1e4
// outlier channel, all zeros, subnormals, fp16 and bf16 range limits) x kv_dtype x
// repacking x scale granularity:
//   - appending one token at a time, all at once, and in uneven chunks gives
//     identical compressed bytes and identical decompressed values;
//   - decompressed values are finite, exact where the format promises exactness
//     (constant and all-zero groups, residual window) and within r * range / 2
//     otherwise;
//   - scores and decode attention are finite and match float64 arithmetic on the
//     decompressed cache.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "api/cache_impl.h"
#include "common/dtype.h"
#include "helpers.h"
#include "api/internal_access.h"

namespace {

constexpr int kHeads = 2, kDim = 32, kTokens = 150;  // 2 blocks of 64 + 22 residual (residual 16)
constexpr size_t kRow = (size_t)kHeads * kDim;

enum Edge { kConstant, kOutlier, kZeros, kSubnormal, kBf16Limit, kFp16Limit, kNumEdges };
const char* const kEdgeName[] = {"constant tokens", "one 1e4 outlier channel", "all zeros", "subnormals",
                                 "bf16 range limits", "fp16 range limits"};

/// K (kv == 0) or V of kTokens tokens of one edge class (finite in every kv_dtype the
/// class is used with).
std::vector<float> edge_data(Edge e, int kv) {
  std::vector<float> x = pkt::kv_data(kTokens, kHeads, kDim, 100 + 7 * (unsigned)e + (unsigned)kv);
  for (size_t t = 0; t < kTokens; ++t) {
    float* r = &x[t * kRow];
    switch (e) {
      case kConstant:
        for (size_t i = 0; i < kRow; ++i) r[i] = t % 5 == 4 ? 0.0f : 0.25f * (float)((int)(t % 9) - 4) + 0.125f;
        break;
      case kOutlier:
        r[(kv + 1) * 7] = 1e4f;  // one channel, every token
        break;
      case kZeros:
        std::fill(r, r + kRow, 0.0f);
        break;
      case kSubnormal:
        for (size_t i = 0; i < kRow; ++i) r[i] = (float)((int)((t + i) % 7) - 3) * 1.4e-45f * (float)(1 + t % 3);
        break;
      case kBf16Limit:  // +-bf16 max and neighbours in the same token; symmetric so that
        // (q + z) * s stays below FLT_MAX (see the known-issue test below)
        for (size_t i = 0; i < kRow; ++i) r[i] = (i % 2 ? 1.0f : -1.0f) * packkv::bf16_to_float((uint16_t)(0x7f7f - (t + i) % 3));
        break;
      case kFp16Limit:
        for (size_t i = 0; i < kRow; ++i) r[i] = (i % 3 == 0 ? -1.0f : 1.0f) * (65504.0f - (float)((t * 31 + i) % 64));
        break;
      default: break;
    }
  }
  return x;
}

/// Rounds to kv_dtype as the cache does on entry.
std::vector<float> rounded(const std::vector<float>& x, packkv_dtype_t dtype) {
  std::vector<float> y(x);
  for (float& f : y)
    f = dtype == PACKKV_DTYPE_F16    ? packkv::half_to_float(packkv::float_to_half(f))
        : dtype == PACKKV_DTYPE_BF16 ? packkv::bf16_to_float(packkv::float_to_bf16(f))
                                     : f;
  return y;
}

std::vector<std::vector<uint8_t>> blocks_of(const packkv_cache_t* c) {
  const packkv::CacheImpl& impl = packkv::internal_impl(c);
  std::vector<std::vector<uint8_t>> out;
  for (int64_t b = 0; b < impl.n_blocks(0); ++b) out.push_back(impl.block_bytes(0, b));
  return out;
}

/// Checks decompressed values against the (rounded) input: exact in the residual
/// window and for constant groups, within r * range / 2 (+ fp32 rounding) otherwise.
void check_values(const std::vector<float>& in, const std::vector<float>& got, int64_t compressed, float r,
                  int groups) {
  const size_t glen = kRow / groups;
  for (size_t t = 0; t < kTokens; ++t)
    for (int g = 0; g < groups; ++g) {
      const size_t first = t * kRow + g * glen;
      double lo = in[first], hi = in[first];
      for (size_t i = 0; i < glen; ++i) {
        lo = std::min(lo, (double)in[first + i]);
        hi = std::max(hi, (double)in[first + i]);
      }
      const bool exact = (int64_t)t >= compressed || lo == hi;
      const double bound = exact ? 0.0 : (double)r * (hi - lo) / 2 * (1 + 1e-6);
      for (size_t i = 0; i < glen; ++i) {
        const double x = in[first + i], y = got[first + i];
        REQUIRE(std::isfinite(y));
        const double slack = exact ? 0.0 : 2.4e-7 * std::fabs(x) + 1.5e-45;
        if (!(std::fabs(y - x) - slack <= bound))
          FAIL("token " << t << " group " << g << " channel " << i << ": " << x << " decompressed to " << y
                        << ", bound " << bound);
      }
    }
}

/// Scores and decode attention: finite, and equal (within fp32 accumulation) to float64
/// arithmetic on the decompressed values.
void check_attention(const packkv_cache_t* c, const pkt::Decompressed& d) {
  const int hq = 2 * kHeads;
  double kmax = 0;
  for (float x : d.k) kmax = std::max(kmax, (double)std::fabs(x));
  // queries small enough that q . k stays inside fp32 even at the bf16 range limit
  std::vector<float> q = pkt::kv_data(1, hq, kDim, 77, 0.5f);
  if (kmax > 1e30)
    for (float& x : q) x *= 1e-3f;
  int32_t id = 0;
  std::vector<float> scores((size_t)hq * kTokens, NAN), out((size_t)hq * kDim, NAN), lse(hq, NAN);
  REQUIRE(packkv_attn_scores(c, 1, &id, hq, q.data(), PACKKV_DTYPE_F32, scores.data(), kTokens, nullptr, 0,
                             nullptr) == PACKKV_OK);
  const std::vector<double> ref = pkt::ref_scores(d.k, kTokens, kHeads, kDim, q, hq);
  for (int j = 0; j < hq; ++j) {
    double qsum = 0;
    for (int x = 0; x < kDim; ++x) qsum += std::fabs((double)q[(size_t)j * kDim + x]);
    for (size_t t = 0; t < (size_t)kTokens; ++t) {
      const size_t i = (size_t)j * kTokens + t;
      REQUIRE(std::isfinite(scores[i]));
      CHECK(std::fabs(scores[i] - ref[i]) <= 1e-5 * kmax * qsum + 1e-30);
    }
  }
  // decode with a scale that keeps scale * score moderate whatever the data magnitude
  const float scale = (float)(1.0 / std::max(1.0, kmax * kDim));
  REQUIRE(packkv_attn_decode(c, 1, &id, hq, q.data(), PACKKV_DTYPE_F32, scale, out.data(), lse.data(), nullptr, 0,
                             nullptr) == PACKKV_OK);
  for (float x : out) REQUIRE(std::isfinite(x));
  for (float x : lse) REQUIRE(std::isfinite(x));
  std::vector<double> lref;
  const std::vector<double> p = pkt::ref_softmax(ref, kTokens, hq, scale, &lref);
  const std::vector<double> oref = pkt::ref_apply(d.v, kTokens, kHeads, kDim, p, hq);
  double vmax = 0;
  for (float x : d.v) vmax = std::max(vmax, (double)std::fabs(x));
  for (size_t i = 0; i < oref.size(); ++i) CHECK(std::fabs(out[i] - oref[i]) <= 1e-4 * vmax + 1e-30);
}

}  // namespace

TEST_CASE("numeric edges: one at a time == all at once == chunks, exact or bounded, attention finite") {
  for (int e = 0; e < kNumEdges; ++e)
    for (packkv_dtype_t kv_dtype : {PACKKV_DTYPE_F16, PACKKV_DTYPE_BF16, PACKKV_DTYPE_F32})
      for (packkv_repack_t repack : {PACKKV_REPACK_NONE, PACKKV_REPACK_MEDIAN, PACKKV_REPACK_GREEDY})
        for (packkv_scale_granularity_t gran : {PACKKV_SCALE_PER_TOKEN, PACKKV_SCALE_PER_TOKEN_HEAD}) {
          const Edge edge = (Edge)e;
          if (edge == kBf16Limit && kv_dtype == PACKKV_DTYPE_F16) continue;  // not representable: rejected
          const std::string edge_name = kEdgeName[e];
          CAPTURE(edge_name);
          CAPTURE(kv_dtype);
          CAPTURE(repack);
          CAPTURE(gran);
          packkv_cache_params_t p = pkt::params(kHeads, kDim);
          p.kv_dtype = kv_dtype;
          p.repack = repack;
          p.scale_granularity = gran;
          p.residual_tokens = 16;
          const std::vector<float> k = edge_data(edge, 0), v = edge_data(edge, 1);
          pkt::Cache all(p), one(p), chunks(p);
          pkt::append1(all, 0, k, v, 0, kTokens, kRow);
          for (int t = 0; t < kTokens; ++t) pkt::append1(one, 0, k, v, (size_t)t, 1, kRow);
          for (int t = 0, n = 1; t < kTokens; t += n, n = n * 3 % 71 + 1)
            pkt::append1(chunks, 0, k, v, (size_t)t, std::min(n, kTokens - t), kRow);
          REQUIRE(pkt::stats(all).n_compressed_tokens == 128);
          const auto ba = blocks_of(all);
          CHECK(ba == blocks_of(one));
          CHECK(ba == blocks_of(chunks));
          const pkt::Decompressed da = pkt::decompress(all, 0, kRow), d1 = pkt::decompress(one, 0, kRow);
          CHECK(std::memcmp(da.k.data(), d1.k.data(), da.k.size() * 4) == 0);
          CHECK(std::memcmp(da.v.data(), d1.v.data(), da.v.size() * 4) == 0);
          const int groups = gran == PACKKV_SCALE_PER_TOKEN ? 1 : kHeads;
          check_values(rounded(k, kv_dtype), da.k, 128, p.rel_scale_k, groups);
          check_values(rounded(v, kv_dtype), da.v, 128, p.rel_scale_v, groups);
          check_attention(all, da);
        }
}

TEST_CASE("numeric edges: values beyond the fp16 range are rejected by an fp16 cache, kept by bf16 / fp32") {
  const std::vector<float> k = edge_data(kBf16Limit, 0), v = edge_data(kBf16Limit, 1);
  for (packkv_dtype_t kv_dtype : {PACKKV_DTYPE_F16, PACKKV_DTYPE_BF16, PACKKV_DTYPE_F32}) {
    packkv_cache_params_t p = pkt::params(kHeads, kDim);
    p.kv_dtype = kv_dtype;
    pkt::Cache c(p);
    int32_t id = 0, n = kTokens;
    const packkv_status_t st =
        packkv_cache_append(c, 1, &id, &n, k.data(), v.data(), PACKKV_DTYPE_F32, nullptr);
    CHECK(st == (kv_dtype == PACKKV_DTYPE_F16 ? PACKKV_ERR_INVALID_ARGUMENT : PACKKV_OK));
    CHECK(pkt::seq_len(c, 0) == (kv_dtype == PACKKV_DTYPE_F16 ? 0 : kTokens));
  }
}

TEST_CASE("numeric edges: fp32 subnormal tokens whose r * range underflows are compressed exactly") {
  packkv_cache_params_t p = pkt::params(kHeads, kDim);
  p.kv_dtype = PACKKV_DTYPE_F32;
  p.residual_tokens = 0;
  pkt::Cache c(p);
  std::vector<float> k(kTokens * kRow), v(kTokens * kRow);
  for (size_t i = 0; i < k.size(); ++i) {
    k[i] = (float)((int)(i % 3) - 1) * 1.4e-45f;  // {-1, 0, 1} x the smallest subnormal
    v[i] = (float)(i % 2) * 1.4e-45f;
  }
  pkt::append1(c, 0, k, v, 0, kTokens, kRow);
  const pkt::Decompressed d = pkt::decompress(c, 0, kRow);
  const size_t n = (size_t)pkt::stats(c).n_compressed_tokens * kRow;
  REQUIRE(n == 128 * kRow);
  for (size_t i = 0; i < n; ++i) REQUIRE(d.k[i] == k[i]);
  for (size_t i = 0; i < n; ++i) REQUIRE(d.v[i] == v[i]);
}

// A token spanning [-1e38, 3.38e38] (finite in bf16 and fp32): its largest value's grid
// point rint(x / s) * s = 8 * 4.38e37 lies beyond FLT_MAX; dequantization clamps it to
// FLT_MAX (closer to x), so decompress stays finite (regression of the issue-7 fuzzing).
TEST_CASE("numeric edges: a token spanning [-1e38, 3.38e38] decompresses to finite values") {
  for (packkv_dtype_t kv_dtype : {PACKKV_DTYPE_BF16, PACKKV_DTYPE_F32}) {
    packkv_cache_params_t p = pkt::params(1, 32);
    p.kv_dtype = kv_dtype;
    p.residual_tokens = 0;
    p.block_tokens = 16;
    pkt::Cache c(p);
    std::vector<float> k(16 * 32, 1.0f), v(16 * 32, 1.0f);
    k[0] = 3.38e38f;
    k[1] = -1e38f;
    pkt::append1(c, 0, k, v, 0, 16, 32);
    REQUIRE(pkt::stats(c).n_compressed_tokens == 16);
    const pkt::Decompressed d = pkt::decompress(c, 0, 32);
    CAPTURE(d.k[0]);
    CHECK(std::isfinite(d.k[0]));
  }
}

// Regression (fuzz_api, UBSan): with an empty residual window (here: residual_tokens 0
// and a whole number of blocks) attention converted 0 residual values with
// memcpy(NULL, NULL, 0), undefined behaviour. Run under the `asan` preset.
TEST_CASE("numeric edges: every read call on a sequence whose residual window is empty") {
  for (packkv_dtype_t kv_dtype : {PACKKV_DTYPE_F16, PACKKV_DTYPE_BF16, PACKKV_DTYPE_F32}) {
    CAPTURE(kv_dtype);
    packkv_cache_params_t p = pkt::params(kHeads, kDim, 2);
    p.kv_dtype = kv_dtype;
    p.residual_tokens = 0;
    pkt::Cache c(p);
    const std::vector<float> k = pkt::kv_data(64, kHeads, kDim, 5), v = pkt::kv_data(64, kHeads, kDim, 6);
    pkt::append1(c, 0, k, v, 0, 64, kRow);
    REQUIRE(pkt::stats(c).n_residual_tokens == 0);
    const int32_t ids[2] = {0, 1};  // one compressed-only sequence, one empty one
    const int hq = kHeads;
    std::vector<float> q = pkt::kv_data(2, hq, kDim, 7, 0.5f), scores(2 * hq * 64), probs(2 * hq * 64, 1.0f / 64);
    std::vector<float> out(2 * hq * kDim), lse(2 * hq);
    CHECK(packkv_attn_scores(c, 2, ids, hq, q.data(), PACKKV_DTYPE_F32, scores.data(), 64, nullptr, 0, nullptr) ==
          PACKKV_OK);
    CHECK(packkv_attn_apply(c, 2, ids, hq, probs.data(), 64, out.data(), nullptr, 0, nullptr) == PACKKV_OK);
    CHECK(packkv_attn_decode(c, 2, ids, hq, q.data(), PACKKV_DTYPE_F32, 0.125f, out.data(), lse.data(), nullptr, 0,
                             nullptr) == PACKKV_OK);
    for (int j = 0; j < hq; ++j) CHECK(std::isfinite(lse[j]));
    const pkt::Decompressed d = pkt::decompress(c, 0, kRow);
    CHECK(d.k.size() == 64 * kRow);
  }
}

// Issue 18 item 3: an fp32 cache holding K and V near +-3e38 (inside the fp32 range, so
// accepted by append). The folded arithmetic splits V^ = (o + z) * s into o * s and z * s,
// each of which can exceed FLT_MAX while their sum does not, and q . k can exceed FLT_MAX
// (the raw score is then legitimately +-inf) while softmax(scale * q . K) V cannot. apply
// and decode must stay finite and match float64 arithmetic on the decompressed values;
// scores must be finite wherever the exact score is inside the fp32 range.
TEST_CASE("numeric edges: attention over K and V near +-3e38 stays finite (fp32 cache, both granularities)") {
  constexpr int kH = 4, kD = 64, kN = 300, kHq = 8;
  constexpr size_t kR = (size_t)kH * kD;
  std::mt19937 rng(18);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> x(kN * kR);
  for (float& e : x) e = u(rng) * 3e38f;
  for (packkv_scale_granularity_t gran : {PACKKV_SCALE_PER_TOKEN, PACKKV_SCALE_PER_TOKEN_HEAD})
    for (packkv_repack_t repack : {PACKKV_REPACK_NONE, PACKKV_REPACK_MEDIAN}) {
      CAPTURE(gran);
      CAPTURE(repack);
      packkv_cache_params_t p = pkt::params(kH, kD);
      p.kv_dtype = PACKKV_DTYPE_F32;
      p.scale_granularity = gran;
      p.repack = repack;
      pkt::Cache c(p);
      pkt::append1(c, 0, x, x, 0, kN, kR);
      REQUIRE(pkt::stats(c).n_compressed_tokens > 0);
      const pkt::Decompressed d = pkt::decompress(c, 0, kR);
      for (float e : d.v) REQUIRE(std::isfinite(e));
      double vmax = 0;
      for (float e : d.v) vmax = std::max(vmax, (double)std::fabs(e));
      int32_t id = 0;

      // apply, one-hot on token 3 (the reproducer): V^ of token 3 itself
      std::vector<float> probs((size_t)kHq * kN, 0.0f), out((size_t)kHq * kD, NAN);
      for (int j = 0; j < kHq; ++j) probs[(size_t)j * kN + 3] = 1.0f;
      REQUIRE(packkv_attn_apply(c, 1, &id, kHq, probs.data(), kN, out.data(), nullptr, 0, nullptr) == PACKKV_OK);
      for (int j = 0; j < kHq; ++j)
        for (int ch = 0; ch < kD; ++ch) {
          const float want = d.v[3 * kR + (size_t)(j / (kHq / kH)) * kD + ch];
          const float got = out[(size_t)j * kD + ch];
          REQUIRE(std::isfinite(got));
          CHECK(std::fabs((double)got - want) <= 1e-6 * vmax);
        }
      // apply, random probabilities summing to 1
      std::vector<double> pd(probs.size());
      for (int j = 0; j < kHq; ++j) {
        double sum = 0;
        for (int t = 0; t < kN; ++t) sum += pd[(size_t)j * kN + t] = 0.5 + 0.5 * u(rng);
        for (int t = 0; t < kN; ++t) probs[(size_t)j * kN + t] = (float)(pd[(size_t)j * kN + t] /= sum);
        for (int t = 0; t < kN; ++t) pd[(size_t)j * kN + t] = probs[(size_t)j * kN + t];
      }
      REQUIRE(packkv_attn_apply(c, 1, &id, kHq, probs.data(), kN, out.data(), nullptr, 0, nullptr) == PACKKV_OK);
      std::vector<double> oref = pkt::ref_apply(d.v, kN, kH, kD, pd, kHq);
      for (size_t i = 0; i < oref.size(); ++i) {
        REQUIRE(std::isfinite(out[i]));
        CHECK(std::fabs(out[i] - oref[i]) <= 1e-5 * vmax);
      }

      // decode: q of magnitude 1 (scores ~1e39 overflow fp32; softmax is one-hot) and of
      // magnitude 1e-37 (scores ~10: a spread-out softmax)
      for (float qmag : {1.0f, 1e-37f}) {
        CAPTURE(qmag);
        std::vector<float> q((size_t)kHq * kD);
        for (float& e : q) e = u(rng) * qmag;
        const std::vector<double> sref = pkt::ref_scores(d.k, kN, kH, kD, q, kHq);
        std::vector<float> lse(kHq, NAN);
        const float scale = 0.125f;
        REQUIRE(packkv_attn_decode(c, 1, &id, kHq, q.data(), PACKKV_DTYPE_F32, scale, out.data(), lse.data(),
                                   nullptr, 0, nullptr) == PACKKV_OK);
        std::vector<double> lref;
        const std::vector<double> pr = pkt::ref_softmax(sref, kN, kHq, scale, &lref);
        oref = pkt::ref_apply(d.v, kN, kH, kD, pr, kHq);
        double err = 0;
        for (size_t i = 0; i < oref.size(); ++i) {
          REQUIRE(std::isfinite(out[i]));
          err = std::max(err, std::fabs(out[i] - oref[i]));
        }
        CAPTURE(err / vmax);
        CHECK(err <= 1e-4 * vmax);
        for (int j = 0; j < kHq; ++j) {  // lse beyond the fp32 range is +inf (fp32 result)
          if (lref[j] > 3.4028234663852886e38)
            CHECK(lse[j] == INFINITY);
          else
            CHECK(std::fabs(lse[j] - lref[j]) <= 1e-5 * std::fabs(lref[j]) + 1e-5);
        }
        // scores: finite and accurate where the exact score fits fp32
        std::vector<float> sc((size_t)kHq * kN, NAN);
        REQUIRE(packkv_attn_scores(c, 1, &id, kHq, q.data(), PACKKV_DTYPE_F32, sc.data(), kN, nullptr, 0,
                                   nullptr) == PACKKV_OK);
        for (size_t i = 0; i < sc.size(); ++i)
          if (std::fabs(sref[i]) < 1e38) {
            REQUIRE(std::isfinite(sc[i]));
          } else if (std::fabs(sref[i]) > 3.5e38) {  // beyond fp32 (the header says so): +-inf
            CHECK(sc[i] == (sref[i] > 0 ? INFINITY : -INFINITY));
          }
      }
    }
}

// Queries near the fp32 limit against small K: q . k_int in fp32 overflowed before the scale
// brought the score back into range.
TEST_CASE("numeric edges: queries near +-3e38 give finite scores when q . k fits fp32") {
  constexpr int kD = 64, kN = 64;
  packkv_cache_params_t p = pkt::params(1, kD);
  p.kv_dtype = PACKKV_DTYPE_F32;
  p.residual_tokens = 0;
  pkt::Cache c(p);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> k((size_t)kN * kD);
  for (float& e : k) e = u(rng) * 1e-3f;
  pkt::append1(c, 0, k, k, 0, kN, kD);
  REQUIRE(pkt::stats(c).n_compressed_tokens == kN);
  const pkt::Decompressed d = pkt::decompress(c, 0, kD);
  std::vector<float> q(kD);
  for (float& e : q) e = u(rng) * 3e38f;
  int32_t id = 0;
  std::vector<float> sc(kN, NAN);
  REQUIRE(packkv_attn_scores(c, 1, &id, 1, q.data(), PACKKV_DTYPE_F32, sc.data(), kN, nullptr, 0, nullptr) ==
          PACKKV_OK);
  const std::vector<double> sref = pkt::ref_scores(d.k, kN, 1, kD, q, 1);
  for (int t = 0; t < kN; ++t) {
    REQUIRE(std::isfinite(sc[t]));
    CHECK(std::fabs(sc[t] - sref[t]) <= 1e-5 * 3e38 * 1e-3 * kD);
  }
}

TEST_CASE("numeric edges: a query head with NaN or infinity decodes to NaN, not to an empty sequence") {
  // fresh8 F1: its NaN scores were passed over by the softmax's maximum, so decode gave
  // zeros and lse -inf, the result of an empty sequence (packkv.h: non-finite inputs give
  // non-finite outputs). The other query heads keep their finite results.
  for (int t : {3, 200, 2000}) {
    CAPTURE(t);
    packkv_cache_params_t p = pkt::params(2, 64, 1);
    p.n_threads = 1;
    pkt::Cache c(p);
    std::vector<float> k((size_t)t * 2 * 64);
    for (size_t i = 0; i < k.size(); ++i) k[i] = std::sin(0.37f * (float)i);
    int32_t id = 0, n = t;
    REQUIRE(packkv_cache_append(c, 1, &id, &n, k.data(), k.data(), PACKKV_DTYPE_F32, nullptr) == PACKKV_OK);
    std::vector<float> q(4 * 64, 0.25f), out(4 * 64), lse(4);
    q[0 * 64 + 5] = std::nanf("");
    for (int i = 0; i < 64; ++i) q[1 * 64 + i] = INFINITY;
    q[3 * 64 + 7] = -INFINITY;
    REQUIRE(packkv_attn_decode(c, 1, &id, 4, q.data(), PACKKV_DTYPE_F32, 0.125f, out.data(), lse.data(), nullptr, 0,
                               nullptr) == PACKKV_OK);
    for (int h : {0, 1, 3}) {
      CAPTURE(h);
      CHECK(std::isnan(lse[h]));
      for (int i = 0; i < 64; ++i) CHECK(std::isnan(out[(size_t)h * 64 + i]));
    }
    CHECK(std::isfinite(lse[2]));  // head 2: all 0.25, a finite result
    for (int i = 0; i < 64; ++i) CHECK(std::isfinite(out[2 * 64 + i]));
  }
}
