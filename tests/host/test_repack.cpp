// Repacking (PACKKV.md section 4; golden vectors T10, T12).
#include <doctest/doctest.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "helpers.h"
#include "codec/repack.h"
#include "format/round_tile.h"

using namespace packkv;

TEST_CASE("T12: greedy on 4 tokens x 2 dims, pack 2") {
  const uint8_t rows[8] = {0, 0, 7, 7, 1, 0, 7, 6};
  uint8_t perm[4];
  greedy_order(rows, 4, 2, 2, perm);
  CHECK(std::vector<int>(perm, perm + 4) == std::vector<int>{3, 1, 0, 2});
  // summed encode length of the 4 dim-packs: 2 after greedy, 12 in original order
  auto total_l = [&](const uint8_t* order) {
    int sum = 0;
    for (int pk = 0; pk < 2; ++pk)
      for (int dim = 0; dim < 2; ++dim) {
        int a = rows[order[2 * pk] * 2 + dim], b = rows[order[2 * pk + 1] * 2 + dim];
        sum += fmt::encode_length((uint32_t)std::abs(a - b));
      }
    return sum;
  };
  const uint8_t identity[4] = {0, 1, 2, 3};
  CHECK(total_l(perm) == 2);
  CHECK(total_l(identity) == 12);
}

TEST_CASE("T12: median order with V-medians (3, 1, 2, 0)") {
  // one V code per token equal to its median
  const uint8_t v[4] = {3, 1, 2, 0};
  uint8_t perm[4];
  median_order(v, 4, 1, perm);
  CHECK(std::vector<int>(perm, perm + 4) == std::vector<int>{0, 2, 1, 3});
}

TEST_CASE("median uses the lower median and a stable sort") {
  // token rows of 4 codes: lower median = 2nd smallest
  const uint8_t v[4 * 4] = {1, 9, 9, 2,   // sorted 1 2 9 9 -> 2
                            5, 5, 0, 0,   // 0 0 5 5 -> 0
                            2, 3, 2, 8,   // 2 2 3 8 -> 2
                            7, 7, 7, 7};  // 7
  uint8_t perm[4];
  median_order(v, 4, 4, perm);
  CHECK(std::vector<int>(perm, perm + 4) == std::vector<int>{3, 0, 2, 1});
}

TEST_CASE("greedy and median always return permutations") {
  std::mt19937 rng(1);
  for (int n : {16, 64, 256}) {
    std::vector<uint8_t> rows((size_t)n * 40);
    for (uint8_t& x : rows) x = (uint8_t)(rng() % 16);
    uint8_t perm[256];
    for (int method = 0; method < 2; ++method) {
      if (method == 0)
        greedy_order(rows.data(), n, 40, 16, perm);
      else
        median_order(rows.data(), n, 40, perm);
      std::vector<int> sorted(perm, perm + n);
      std::sort(sorted.begin(), sorted.end());
      std::vector<int> expect(n);
      std::iota(expect.begin(), expect.end(), 0);
      CHECK(sorted == expect);
    }
  }
}

namespace {
struct Run {
  std::vector<float> scores, out;
  int64_t tile_bytes;
};
Run run(packkv_repack_t repack, const std::vector<float>& k, const std::vector<float>& v, const std::vector<float>& q) {
  packkv_cache_params_t p = pkt::params(2, 64);
  p.repack = repack;
  p.residual_tokens = 0;
  pkt::Cache c(p);
  pkt::append1(c, 0, k, v, 0, 128, 128);
  Run r;
  int32_t id = 0;
  r.scores.assign(4 * 128, 0.0f);
  r.out.assign(4 * 64, 0.0f);
  REQUIRE(packkv_attn_scores(c, 1, &id, 4, q.data(), PACKKV_DTYPE_F32, r.scores.data(), 128, nullptr, 0, nullptr) == PACKKV_OK);
  REQUIRE(packkv_attn_decode(c, 1, &id, 4, q.data(), PACKKV_DTYPE_F32, 0.125f, r.out.data(), nullptr, nullptr, 0, nullptr) == PACKKV_OK);
  const packkv_cache_stats_t s = pkt::stats(c);
  r.tile_bytes = s.k_tile_bytes + s.v_tile_bytes;
  return r;
}
}  // namespace

TEST_CASE("T10: attention does not depend on repacking, permuting K alone changes it") {
  auto k = pkt::kv_data(128, 2, 64, 21), v = pkt::kv_data(128, 2, 64, 22), q = pkt::kv_data(4, 1, 64, 23);
  const Run none = run(PACKKV_REPACK_NONE, k, v, q);
  for (packkv_repack_t m : {PACKKV_REPACK_MEDIAN, PACKKV_REPACK_GREEDY}) {
    const Run r = run(m, k, v, q);
    // scores near 0 come from cancelling sums of fp32 products: compare at 1e-5 of the
    // largest score (repacking changes the packs, and so the fp32 rounding of each sum)
    double smax = 0;
    for (float x : none.scores) smax = std::max(smax, (double)std::fabs(x));
    for (size_t i = 0; i < none.scores.size(); ++i)
      CHECK(r.scores[i] == doctest::Approx(none.scores[i]).epsilon(1e-5).scale(smax));
    for (size_t i = 0; i < none.out.size(); ++i) CHECK(r.out[i] == doctest::Approx(none.out[i]).epsilon(1e-5));
  }
  // negative test: swap the K rows of tokens 0 and 100 only
  std::vector<float> k2(k);
  std::swap_ranges(k2.begin(), k2.begin() + 128, k2.begin() + 100 * 128);
  const Run bad = run(PACKKV_REPACK_NONE, k2, v, q);
  double diff = 0;
  for (size_t i = 0; i < none.out.size(); ++i) diff = std::max(diff, (double)std::fabs(bad.out[i] - none.out[i]));
  CHECK(diff > 1e-3);
}

TEST_CASE("repacking shrinks tiles on data with token clusters") {
  // two interleaved clusters of tokens: packing them apart lowers encode lengths. The V
  // clusters have distinct medians (+1.5), which is what median repacking keys on; with
  // symmetric clusters their medians tie and the median order is decided by noise (it
  // then depends on the rounding of the scales: wide vs compact fields).
  std::mt19937 rng(9);
  std::vector<float> k(128 * 128), v(128 * 128);
  for (int t = 0; t < 128; ++t)
    for (int i = 0; i < 128; ++i) {
      const float base = (t % 2 ? 3.0f : -3.0f) * (float)((i % 5) - 2);
      k[t * 128 + i] = base + 0.05f * (float)(rng() % 10);
      v[t * 128 + i] = base + (t % 2 ? 1.5f : 0.0f) + 0.05f * (float)(rng() % 10) + (i == 0 ? 20.0f : 0.0f);
    }
  auto q = pkt::kv_data(4, 1, 64, 3);
  const Run none = run(PACKKV_REPACK_NONE, k, v, q);
  const Run med = run(PACKKV_REPACK_MEDIAN, k, v, q);
  const Run greedy = run(PACKKV_REPACK_GREEDY, k, v, q);
  CHECK(greedy.tile_bytes < none.tile_bytes);
  CHECK(med.tile_bytes <= none.tile_bytes);
}
