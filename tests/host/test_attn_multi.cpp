// packkv_attn_decode_multi (experimental API, issue 14): several queries per sequence
// against a float64 reference computed from the decompressed cache, q_len = 1 against
// packkv_attn_decode (bit for bit), and its argument errors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#define PACKKV_EXPERIMENTAL_API
#include "helpers.h"
#include "packkv/packkv_experimental.h"

namespace {

// A CPU cache with n_seqs sequences of different lengths (blocks and residual window).
struct MultiFixture {
  int hkv, d, n_seqs;
  size_t row;
  pkt::Cache cache;
  std::vector<int32_t> ids;
  MultiFixture(int hkv_, int d_, int n_seqs_)
      : hkv(hkv_), d(d_), n_seqs(n_seqs_), row((size_t)hkv_ * d_), cache(pkt::params(hkv_, d_, n_seqs_)) {
    for (int i = 0; i < n_seqs; ++i) {
      const int n = 200 + 157 * i;
      const std::vector<float> k = pkt::kv_data(n, hkv, d, 100 + i), v = pkt::kv_data(n, hkv, d, 200 + i, 0.5f);
      pkt::append1(cache, i, k, v, 0, n, row);
      ids.push_back(n_seqs - 1 - i);  // any order
    }
  }
};

}  // namespace

TEST_CASE("decode_multi: q_len queries per sequence match a float64 reference over every cached token") {
  for (int q_len : {1, 3, 4}) {
    for (int group : {1, 4}) {
      CAPTURE(q_len);
      CAPTURE(group);
      MultiFixture f(2, 64, 3);
      const int hq = f.hkv * group;
      std::mt19937 rng(7 + q_len * 10 + group);
      std::normal_distribution<float> n01(0.f, 1.f);
      // q [n_seqs][hq][q_len][d]
      std::vector<float> q((size_t)f.n_seqs * hq * q_len * f.d);
      for (float& x : q) x = n01(rng);
      size_t ws = 0;
      REQUIRE(packkv_attn_workspace_size(f.cache, f.n_seqs, hq * q_len, &ws) == PACKKV_OK);
      std::vector<uint8_t> work(ws + 1);
      std::vector<float> out(q.size(), NAN), lse((size_t)f.n_seqs * hq * q_len, NAN);
      const float scale = 1.0f / std::sqrt((float)f.d);
      packkv_status_t st = packkv_attn_decode_multi(f.cache, f.n_seqs, f.ids.data(), hq, q_len, q.data(),
                                                    PACKKV_DTYPE_F32, scale, out.data(), lse.data(), work.data(),
                                                    ws, nullptr);
      INFO(packkv_last_error_message());
      REQUIRE(st == PACKKV_OK);
      for (int i = 0; i < f.n_seqs; ++i) {
        const int seq = f.ids[i];
        const size_t n = (size_t)pkt::seq_len(f.cache, seq);
        const pkt::Decompressed dq = pkt::decompress(f.cache, seq, f.row);
        for (int t = 0; t < q_len; ++t) {
          // Query t of every head of sequence i, as [hq][d].
          std::vector<float> qt((size_t)hq * f.d);
          for (int j = 0; j < hq; ++j)
            std::memcpy(&qt[(size_t)j * f.d], &q[(((size_t)i * hq + j) * q_len + t) * f.d], f.d * sizeof(float));
          std::vector<double> rl;
          const std::vector<double> p = pkt::ref_softmax(pkt::ref_scores(dq.k, n, f.hkv, f.d, qt, hq), n, hq, scale, &rl);
          const std::vector<double> ro = pkt::ref_apply(dq.v, n, f.hkv, f.d, p, hq);
          std::vector<float> got((size_t)hq * f.d);
          for (int j = 0; j < hq; ++j) {
            std::memcpy(&got[(size_t)j * f.d], &out[(((size_t)i * hq + j) * q_len + t) * f.d], f.d * sizeof(float));
            CHECK(lse[((size_t)i * hq + j) * q_len + t] == doctest::Approx(rl[j]).epsilon(1e-6));
          }
          CHECK(pkt::rel_l2(ro, got) <= 1e-5);
        }
      }
      if (q_len == 1) {  // the single-query call, bit for bit
        std::vector<float> o1(out.size()), l1(lse.size());
        REQUIRE(packkv_attn_decode(f.cache, f.n_seqs, f.ids.data(), hq, q.data(), PACKKV_DTYPE_F32, scale, o1.data(),
                                   l1.data(), work.data(), ws, nullptr) == PACKKV_OK);
        CHECK(std::memcmp(o1.data(), out.data(), out.size() * 4) == 0);
        CHECK(std::memcmp(l1.data(), lse.data(), lse.size() * 4) == 0);
      }
    }
  }
}

TEST_CASE("decode_multi: bad arguments are refused with a message") {
  MultiFixture f(2, 32, 1);
  std::vector<float> q(2 * 3 * 32, 0.5f), out(q.size());
  size_t ws = 0;
  REQUIRE(packkv_attn_workspace_size(f.cache, 1, 2, &ws) == PACKKV_OK);
  std::vector<uint8_t> work(ws + 1);
  CHECK(packkv_attn_decode_multi(f.cache, 1, f.ids.data(), 2, 0, q.data(), PACKKV_DTYPE_F32, 1.0f, out.data(), nullptr,
                                 work.data(), ws, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(std::string(packkv_last_error_message()).find("q_len") != std::string::npos);
  CHECK(packkv_attn_decode_multi(f.cache, 1, f.ids.data(), 3, 2, q.data(), PACKKV_DTYPE_F32, 1.0f, out.data(), nullptr,
                                 work.data(), ws, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(std::string(packkv_last_error_message()).find("n_kv_heads") != std::string::npos);
  CHECK(packkv_attn_decode_multi(f.cache, 1, f.ids.data(), 2, 1 << 30, q.data(), PACKKV_DTYPE_F32, 1.0f, out.data(),
                                 nullptr, work.data(), ws, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_attn_decode_multi(f.cache, 1, f.ids.data(), 2, 3, q.data(), PACKKV_DTYPE_F32, 0.0f, out.data(), nullptr,
                                 work.data(), ws, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_attn_decode_multi(f.cache, 1, f.ids.data(), 2, 3, q.data(), PACKKV_DTYPE_F32, 1.0f, nullptr, nullptr,
                                 work.data(), ws, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_attn_decode_multi(nullptr, 1, f.ids.data(), 2, 3, q.data(), PACKKV_DTYPE_F32, 1.0f, out.data(), nullptr,
                                 work.data(), ws, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  // The CPU backend needs no workspace; whatever it needs is checked against 2 * 3 heads.
  size_t ws6 = 0;
  REQUIRE(packkv_attn_workspace_size(f.cache, 1, 6, &ws6) == PACKKV_OK);
  if (ws6 > 0)
    CHECK(packkv_attn_decode_multi(f.cache, 1, f.ids.data(), 2, 3, q.data(), PACKKV_DTYPE_F32, 1.0f, out.data(),
                                   nullptr, work.data(), ws6 - 1, nullptr) == PACKKV_ERR_WORKSPACE_TOO_SMALL);
  CHECK(packkv_attn_decode_multi(f.cache, 1, f.ids.data(), 2, 3, q.data(), PACKKV_DTYPE_F32, 1.0f, out.data(), nullptr,
                                 work.data(), ws, nullptr) == PACKKV_OK);
}
