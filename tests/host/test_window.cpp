// Sliding window (packkv_x_cache_set_window): attention over the last W tokens equals the
// same computation on a cache without a window with the expired tokens' weights set to 0;
// decompress marks expired tokens NaN; wholly expired blocks are freed (pool pages
// return); failures change nothing.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "seq_ops_helpers.h"

using namespace seqt;

TEST_CASE("window: attention covers the last W tokens, as a windowless cache with expired weights 0") {
  auto k = pkt::kv_data(3000, H, D, 1), v = pkt::kv_data(3000, H, D, 2);
  auto q = pkt::kv_data(1, kHq, D, 3);
  for (int64_t W : {1, 100, 200, 257, 1000}) {
    for (int step : {1, 77}) {
      CAPTURE(W);
      CAPTURE(step);
      pkt::Pool pool(pkt::pool_params(16384));
      pkt::PoolCache c(pkt::params(H, D, 1), pool);
      REQUIRE(packkv_x_cache_set_window(c, W) == PACKKV_OK);
      pkt::Cache ref(pkt::params(H, D, 1));
      const size_t L = step == 1 ? 1200 : 2900;
      feed(c, 0, k, v, 0, L, step);
      feed(ref, 0, k, v, 0, L, step);
      const int64_t start = std::max<int64_t>(0, (int64_t)L - W);
      int64_t got_start = -1;
      REQUIRE(packkv_x_cache_window_start(c, 0, &got_start) == PACKKV_OK);
      CHECK(got_start == start);
      CHECK(pkt::seq_len(c, 0) == (int64_t)L);
      // scores: -inf before the start, the windowless scores after it
      std::vector<float> s(kHq * L), r(kHq * L);
      int32_t id = 0;
      REQUIRE(packkv_attn_scores(c, 1, &id, kHq, q.data(), PACKKV_DTYPE_F32, s.data(), L, nullptr, 0, nullptr) == PACKKV_OK);
      REQUIRE(packkv_attn_scores(ref, 1, &id, kHq, q.data(), PACKKV_DTYPE_F32, r.data(), L, nullptr, 0, nullptr) == PACKKV_OK);
      bool ok = true;
      for (int j = 0; j < kHq; ++j)
        for (size_t t = 0; t < L; ++t) {
          const float want = (int64_t)t < start ? -std::numeric_limits<float>::infinity() : r[j * L + t];
          ok = ok && s[j * L + t] == want;
        }
      CHECK(ok);
      // apply: probs before the start are ignored
      std::vector<float> p(kHq * L), pz(kHq * L);
      for (size_t i = 0; i < p.size(); ++i) p[i] = pz[i] = 0.001f * (float)(i % 97);
      for (int j = 0; j < kHq; ++j)
        for (int64_t t = 0; t < start; ++t) pz[j * L + t] = 0.0f;
      std::vector<float> oa(kHq * D), ob(kHq * D);
      REQUIRE(packkv_attn_apply(c, 1, &id, kHq, p.data(), L, oa.data(), nullptr, 0, nullptr) == PACKKV_OK);
      REQUIRE(packkv_attn_apply(ref, 1, &id, kHq, pz.data(), L, ob.data(), nullptr, 0, nullptr) == PACKKV_OK);
      CHECK(oa == ob);
      // decode: softmax over the window only (float64 reference on the windowless scores)
      std::vector<float> od(kHq * D), lse(kHq);
      REQUIRE(packkv_attn_decode(c, 1, &id, kHq, q.data(), PACKKV_DTYPE_F32, 0.2f, od.data(), lse.data(), nullptr, 0,
                                 nullptr) == PACKKV_OK);
      const pkt::Decompressed full = pkt::decompress(ref, 0, kRow);
      std::vector<float> wk(full.k.begin() + start * kRow, full.k.end()), wv(full.v.begin() + start * kRow, full.v.end());
      const size_t n = L - start;
      std::vector<double> rlse;
      const auto probs = pkt::ref_softmax(pkt::ref_scores(wk, n, H, D, q, kHq), n, kHq, 0.2, &rlse);
      const auto want = pkt::ref_apply(wv, n, H, D, probs, kHq);
      CHECK(pkt::rel_l2(want, od) < 1e-5);
      for (int j = 0; j < kHq; ++j) CHECK(std::abs(lse[j] - rlse[j]) < 1e-4);
      // decompress: NaN before the start, the stored values after it
      const pkt::Decompressed got = pkt::decompress(c, 0, kRow);
      bool nan_ok = true, same = true;
      for (size_t i = 0; i < got.k.size(); ++i) {
        if ((int64_t)(i / kRow) < start) nan_ok = nan_ok && std::isnan(got.k[i]) && std::isnan(got.v[i]);
        else same = same && got.k[i] == full.k[i] && got.v[i] == full.v[i];
      }
      CHECK(nan_ok);
      CHECK(same);
      // memory: only blocks holding window tokens remain
      const packkv_cache_stats_t st = pkt::stats(c);
      CHECK(st.n_blocks <= (W + 63) / 64 + 1);
      const int64_t ref_blocks = pkt::stats(ref).n_blocks;
      CHECK(st.n_blocks == ref_blocks - std::min<int64_t>(ref_blocks, start / 64));
    }
  }
}

TEST_CASE("window: pages return to the pool as blocks expire, so a budget holds a long decode") {
  auto k = pkt::kv_data(6000, H, D, 4), v = pkt::kv_data(6000, H, D, 5);
  const int64_t page = 16384;
  pkt::Pool pool(pkt::pool_params(page, 6 * page));
  pkt::PoolCache c(pkt::params(H, D, 1), pool);
  REQUIRE(packkv_x_cache_set_window(c, 512) == PACKKV_OK);
  feed(c, 0, k, v, 0, 6000, 1);  // would need ~20 pages without the window
  CHECK(pkt::seq_len(c, 0) == 6000);
  CHECK(pkt::pool_stats(pool).bytes_in_use <= 6 * page);
  // truncate and fork keep the window start
  REQUIRE(packkv_x_cache_truncate(c, 0, 5600) == PACKKV_OK);
  int64_t start = 0;
  REQUIRE(packkv_x_cache_window_start(c, 0, &start) == PACKKV_OK);
  CHECK(start == 6000 - 512);
  REQUIRE(packkv_x_cache_fork(c, 0, 0) == PACKKV_ERR_INVALID_ARGUMENT);
}

TEST_CASE("window: bad arguments and states change nothing") {
  auto k = pkt::kv_data(800, H, D, 6), v = pkt::kv_data(800, H, D, 7);
  pkt::Cache c(pkt::params(H, D, 2));
  CHECK(packkv_x_cache_set_window(nullptr, 10) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_x_cache_set_window(c, -1) == PACKKV_ERR_INVALID_ARGUMENT);
  REQUIRE(packkv_x_cache_set_window(c, 300) == PACKKV_OK);
  feed(c, 1, k, v, 0, 800, 800);
  const pkt::State before = pkt::state(c, 2, kRow);
  CHECK(packkv_x_cache_set_window(c, 10) == PACKKV_ERR_INVALID_STATE);
  CHECK(std::string(packkv_last_error_message()).find("packkv_x_cache_set_window") != std::string::npos);
  CHECK(packkv_x_cache_truncate(c, 1, 499) == PACKKV_ERR_INVALID_ARGUMENT);  // before the start 500
  CHECK(std::string(packkv_last_error_message()).find("sliding window") != std::string::npos);
  int64_t start = 0;
  CHECK(packkv_x_cache_window_start(c, 2, &start) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_x_cache_window_start(c, 1, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(pkt::state(c, 2, kRow) == before);
  // fork copies the window start; the fork's later tokens follow its own length
  REQUIRE(packkv_x_cache_fork(c, 1, 0) == PACKKV_OK);
  REQUIRE(packkv_x_cache_window_start(c, 0, &start) == PACKKV_OK);
  CHECK(start == 500);
  REQUIRE(packkv_x_cache_truncate(c, 1, 500) == PACKKV_OK);
}

// A truncate to the window start is allowed and leaves no token inside the window: the
// sequence then attends like an empty one (packkv.h: zero outputs, lse = -inf), never NaN
// (a NaN lse would poison the caller's flash-attention merge), for decode and
// decode_multi, alone and next to a sequence that still has tokens in its window; its
// scores are all -inf and apply gives zeros. Lengths: 5 (truncated to 0), 100 (one span),
// 650 (two spans of cpu/attention.cpp, both wholly expired: the merge gave NaN before
// the fix; fresh-findings F10).
TEST_CASE("window: truncate to the window start leaves an empty window: out 0, lse -inf") {
  const float inf = std::numeric_limits<float>::infinity();
  auto k = pkt::kv_data(700, H, D, 11), v = pkt::kv_data(700, H, D, 12);
  const int qn = 3;  // queries per head for decode_multi
  auto q = pkt::kv_data(qn, kHq, D, 13);
  for (int sinks : {0, 4}) {
    for (int centre : {0, 1}) {
      for (size_t L : {(size_t)5, (size_t)100, (size_t)650}) {
        CAPTURE(sinks);
        CAPTURE(centre);
        CAPTURE(L);
        packkv_cache_params_t p = pkt::params(H, D, 2);
        p.sink_tokens = sinks;
        p.k_transform = centre ? PACKKV_K_TRANSFORM_CENTER : PACKKV_K_TRANSFORM_NONE;
        pkt::Cache c(p);
        REQUIRE(packkv_x_cache_set_window(c, 8) == PACKKV_OK);
        feed(c, 0, k, v, 0, L, 37);
        feed(c, 1, k, v, 0, 300, 300);
        int64_t start = -1;
        REQUIRE(packkv_x_cache_window_start(c, 0, &start) == PACKKV_OK);
        CHECK(start == std::max<int64_t>(0, (int64_t)L - 8));
        REQUIRE(packkv_x_cache_truncate(c, 0, start) == PACKKV_OK);
        CHECK(pkt::seq_len(c, 0) == start);
        // sequence 1 alone: its results must not change when sequence 0 joins the call
        const int32_t one = 1, both[2] = {0, 1};
        std::vector<float> out1(kHq * D), lse1(kHq);
        REQUIRE(packkv_attn_decode(c, 1, &one, kHq, q.data(), PACKKV_DTYPE_F32, 0.2f, out1.data(), lse1.data(),
                                   nullptr, 0, nullptr) == PACKKV_OK);
        std::vector<float> qq((size_t)2 * kHq * D);
        std::copy(q.begin(), q.begin() + kHq * D, qq.begin());
        std::copy(q.begin(), q.begin() + kHq * D, qq.begin() + kHq * D);
        std::vector<float> out(2 * kHq * D, 7.0f), lse(2 * kHq, 7.0f);
        REQUIRE(packkv_attn_decode(c, 2, both, kHq, qq.data(), PACKKV_DTYPE_F32, 0.2f, out.data(), lse.data(),
                                   nullptr, 0, nullptr) == PACKKV_OK);
        bool ok = true;
        for (int j = 0; j < kHq; ++j) {
          ok = ok && lse[j] == -inf;
          for (int d = 0; d < D; ++d) ok = ok && out[j * D + d] == 0.0f;
        }
        CHECK(ok);
        CHECK(std::equal(out1.begin(), out1.end(), out.begin() + kHq * D));
        CHECK(std::equal(lse1.begin(), lse1.end(), lse.begin() + kHq));
        CHECK(std::isfinite(lse1[0]));
        // decode_multi: q_len queries per head, same promise
        std::vector<float> qm((size_t)2 * kHq * qn * D);
        for (size_t i = 0; i < qm.size(); ++i) qm[i] = q[i % q.size()];
        std::vector<float> om(qm.size(), 7.0f), lm((size_t)2 * kHq * qn, 7.0f);
        REQUIRE(packkv_attn_decode_multi(c, 2, both, kHq, qn, qm.data(), PACKKV_DTYPE_F32, 0.2f, om.data(),
                                         lm.data(), nullptr, 0, nullptr) == PACKKV_OK);
        ok = true;
        for (int i = 0; i < kHq * qn; ++i) {
          ok = ok && lm[i] == -inf && std::isfinite(lm[kHq * qn + i]);
          for (int d = 0; d < D; ++d) ok = ok && om[(size_t)i * D + d] == 0.0f;
        }
        CHECK(ok);
        // scores: every position of sequence 0 is before the window start
        const int32_t zero = 0;
        std::vector<float> s(kHq * std::max<size_t>(1, (size_t)start), 7.0f);
        REQUIRE(packkv_attn_scores(c, 1, &zero, kHq, q.data(), PACKKV_DTYPE_F32, s.data(), std::max<int64_t>(1, start),
                                   nullptr, 0, nullptr) == PACKKV_OK);
        ok = true;
        for (int j = 0; j < kHq; ++j)
          for (int64_t t = 0; t < start; ++t) ok = ok && s[(size_t)j * start + t] == -inf;
        CHECK(ok);
        // apply: weights of expired tokens are ignored whatever probs says
        std::vector<float> pr(s.size(), 0.5f), ao(kHq * D, 7.0f);
        REQUIRE(packkv_attn_apply(c, 1, &zero, kHq, pr.data(), std::max<int64_t>(1, start), ao.data(), nullptr, 0,
                                  nullptr) == PACKKV_OK);
        CHECK(std::all_of(ao.begin(), ao.end(), [](float x) { return x == 0.0f; }));
      }
    }
  }
}
