// The sequence operations of issue 16 (packkv_x_cache_truncate, _fork, _set_window,
// _export / _import) on caches with the levers of issue 15: sink tokens (the first
// sink_tokens tokens kept exact) and K centring (blocks store K minus the mean of block 0).
// References are built independently: a fresh cache fed the kept tokens (original values
// where the cache keeps them, the stored values where a cut block returns to the window),
// float64 attention over the decompressed tokens of the window. Failures change nothing.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>

#include "common/dtype.h"
#include "format/seq_export.h"
#include "seq_ops_helpers.h"

namespace {

using namespace seqt;
const int kN = 16;  // block_tokens

struct Levers {
  int sinks;
  bool centre;
};
const Levers kLevers[] = {{4, false}, {0, true}, {4, true}, {1, true}};

packkv_cache_params_t lever_params(const Levers& l, int max_seqs = 2) {
  packkv_cache_params_t p = pkt::params(H, D, max_seqs);
  p.sink_tokens = l.sinks;
  p.k_transform = l.centre ? PACKKV_K_TRANSFORM_CENTER : PACKKV_K_TRANSFORM_NONE;
  p.block_tokens = kN;
  p.residual_tokens = 16;
  p.rel_scale_k = 0.05f;
  p.rel_scale_v = 0.1f;
  return p;
}

void feed_values(packkv_cache_t* c, int seq, const std::vector<float>& k, const std::vector<float>& v) {
  if (k.empty()) return;
  int32_t id = seq, n = (int32_t)(k.size() / kRow);
  REQUIRE(packkv_cache_append(c, 1, &id, &n, k.data(), v.data(), PACKKV_DTYPE_F32, nullptr) == PACKKV_OK);
}

bool same_floats(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

// Two sequences hold the same: blocks byte for byte, decompressed values, decode.
void check_same(const packkv_cache_t* a, int sa, const packkv_cache_t* b, int sb, const std::vector<float>& q) {
  CHECK(pkt::seq_len(a, sa) == pkt::seq_len(b, sb));
  CHECK(pkt::blocks_of(a, sa) == pkt::blocks_of(b, sb));
  const pkt::Decompressed x = pkt::decompress(a, sa, kRow), y = pkt::decompress(b, sb, kRow);
  CHECK(same_floats(x.k, y.k));
  CHECK(same_floats(x.v, y.v));
  CHECK(decode(a, sa, q) == decode(b, sb, q));
  const packkv_cache_stats_t s = pkt::stats(a, sa), t = pkt::stats(b, sb);
  CHECK(s.n_residual_tokens == t.n_residual_tokens);
  CHECK(s.residual_bytes == t.residual_bytes);
  CHECK(s.k_scale_bytes == t.k_scale_bytes);  // the K mean included
}

}  // namespace

TEST_CASE("truncate with sink tokens / K centring: a fresh sequence fed the kept stored values, then the same") {
  auto k = pkt::kv_data(400, H, D, 1), v = pkt::kv_data(400, H, D, 2);
  auto q = pkt::kv_data(1, kHq, D, 3);
  for (const Levers& l : kLevers) {
    const packkv_cache_params_t p = lever_params(l);
    const int64_t S = l.sinks;
    // inside the sinks, at their end, in block 0, at its end, in block 2, in the window
    for (int64_t n : {(int64_t)0, S / 2, S, S + 5, S + kN, S + 2 * kN + 7, S + 3 * kN, (int64_t)140}) {
      CAPTURE(l.sinks);
      CAPTURE(l.centre);
      CAPTURE(n);
      pkt::Cache c(p);
      feed(c, 0, k, v, 0, 150, 23);
      const int64_t blocks_before = pkt::stats(c).n_blocks;
      REQUIRE(blocks_before >= 4);
      const pkt::Decompressed full = pkt::decompress(c, 0, kRow);
      const auto blocks = pkt::blocks_of(c, 0);
      REQUIRE(packkv_x_cache_truncate(c, 0, n) == PACKKV_OK);
      CHECK(pkt::seq_len(c, 0) == n);
      // the kept tokens: exact where they were exact, stored values where a block was cut
      const int64_t sinks = std::min(n, S);
      const int64_t kept_blocks = n > S ? std::min<int64_t>((n - S) / kN, blocks_before) : 0;
      const int64_t exact_end = S + kept_blocks * kN;  // tokens [0, exact_end) fed as given
      const auto kept = pkt::blocks_of(c, 0);
      CHECK(kept == std::vector<std::vector<uint8_t>>(blocks.begin(), blocks.begin() + kept_blocks));
      // tokens before orig_end keep their values; the cut block's tokens are its stored
      // values rounded to f16 (the window's dtype)
      const int64_t orig_end = std::min(n, exact_end);
      const pkt::Decompressed got = pkt::decompress(c, 0, kRow);
      std::vector<float> wk(full.k.begin(), full.k.begin() + orig_end * kRow), wv(full.v.begin(), full.v.begin() + orig_end * kRow);
      const std::vector<float> ck = as_f16(full.k, orig_end, n), cv = as_f16(full.v, orig_end, n);
      wk.insert(wk.end(), ck.begin(), ck.end());
      wv.insert(wv.end(), cv.begin(), cv.end());
      CHECK(same_floats(got.k, wk));
      CHECK(same_floats(got.v, wv));
      CHECK(pkt::stats(c).n_residual_tokens == sinks + (n - orig_end));
      // packkv_x_cache_truncate's doc: a cut inside a block returns its first
      // (n - sink_tokens) % block_tokens tokens to the window; none for n <= sink_tokens
      if (n < S + blocks_before * kN) CHECK(n - orig_end == (n > S ? (n - S) % kN : 0));
      // reference: original tokens up to the kept blocks' end, then the cut block's stored
      // values, then both go on with the same new tokens (the cut tokens are compressed
      // again, with a K mean computed again when block 0 was cut)
      pkt::Cache ref(p);
      feed(ref, 0, k, v, 0, (size_t)orig_end, 5);
      feed_values(ref, 0, ck, cv);
      feed(c, 0, k, v, 200, 120, 1);
      feed(ref, 0, k, v, 200, 120, 1);
      check_same(c, 0, ref, 0, q);
    }
  }
}

TEST_CASE("fork with sink tokens / K centring: the copy holds the sinks and the mean, both go on independently") {
  auto k = pkt::kv_data(500, H, D, 7), v = pkt::kv_data(500, H, D, 8);
  auto k2 = pkt::kv_data(500, H, D, 9), v2 = pkt::kv_data(500, H, D, 10);
  auto q = pkt::kv_data(1, kHq, D, 11);
  for (const Levers& l : kLevers) {
    for (size_t at : {(size_t)2, (size_t)l.sinks, (size_t)30, (size_t)133}) {
      CAPTURE(l.sinks);
      CAPTURE(l.centre);
      CAPTURE(at);
      const packkv_cache_params_t p = lever_params(l, 3);
      pkt::Cache c(p);
      feed(c, 0, k, v, 0, at, 9);
      REQUIRE(packkv_x_cache_fork(c, 0, 2) == PACKKV_OK);
      check_same(c, 0, c, 2, q);
      feed(c, 0, k, v, at, 150, 1);
      feed(c, 2, k2, v2, at, 130, 17);
      pkt::Cache ref(p);
      feed(ref, 0, k, v, 0, at, 9);
      feed(ref, 0, k, v, at, 150, 1);
      feed(ref, 2, k, v, 0, at, 9);
      feed(ref, 2, k2, v2, at, 130, 17);
      check_same(c, 0, ref, 0, q);
      check_same(c, 2, ref, 2, q);
      // the fork outlives its source
      REQUIRE(packkv_cache_remove_seq(c, 0) == PACKKV_OK);
      check_same(c, 2, ref, 2, q);
    }
  }
}

TEST_CASE("window with sink tokens / K centring: a sink token older than the window is not attended") {
  auto k = pkt::kv_data(700, H, D, 12), v = pkt::kv_data(700, H, D, 13);
  auto q = pkt::kv_data(1, kHq, D, 14);
  for (const Levers& l : kLevers) {
    for (int64_t W : {1, 3, 40, 100, 1000}) {
      for (int step : {1, 29}) {
        CAPTURE(l.sinks);
        CAPTURE(l.centre);
        CAPTURE(W);
        CAPTURE(step);
        const packkv_cache_params_t p = lever_params(l);
        pkt::Pool pool(pkt::pool_params(16384));
        pkt::PoolCache c(p, pool);
        REQUIRE(packkv_x_cache_set_window(c, W) == PACKKV_OK);
        pkt::Cache ref(p);  // no window
        for (size_t L : {(size_t)2, (size_t)250}) {
          const size_t have = (size_t)pkt::seq_len(c, 0);
          feed(c, 0, k, v, have, L - have, step);
          feed(ref, 0, k, v, have, L - have, step);
          CAPTURE(L);
          const int64_t start = std::max<int64_t>(0, (int64_t)L - W);
          int64_t got_start = -1;
          REQUIRE(packkv_x_cache_window_start(c, 0, &got_start) == PACKKV_OK);
          CHECK(got_start == start);
          // scores: -inf before the start (sink tokens included), the windowless ones after
          std::vector<float> s(kHq * L), r(kHq * L);
          int32_t id = 0;
          REQUIRE(packkv_attn_scores(c, 1, &id, kHq, q.data(), PACKKV_DTYPE_F32, s.data(), L, nullptr, 0, nullptr) ==
                  PACKKV_OK);
          REQUIRE(packkv_attn_scores(ref, 1, &id, kHq, q.data(), PACKKV_DTYPE_F32, r.data(), L, nullptr, 0,
                                     nullptr) == PACKKV_OK);
          bool ok = true;
          for (int j = 0; j < kHq; ++j)
            for (size_t t = 0; t < L; ++t)
              ok = ok && s[j * L + t] == ((int64_t)t < start ? -std::numeric_limits<float>::infinity() : r[j * L + t]);
          CHECK(ok);
          // apply: weights before the start count 0, whatever probs says
          std::vector<float> pr(kHq * L), pz(kHq * L);
          for (size_t i = 0; i < pr.size(); ++i) pr[i] = pz[i] = 0.001f * (float)(1 + i % 97);
          for (int j = 0; j < kHq; ++j)
            for (int64_t t = 0; t < start; ++t) pz[j * L + t] = 0.0f;
          std::vector<float> oa(kHq * D), ob(kHq * D);
          REQUIRE(packkv_attn_apply(c, 1, &id, kHq, pr.data(), L, oa.data(), nullptr, 0, nullptr) == PACKKV_OK);
          REQUIRE(packkv_attn_apply(ref, 1, &id, kHq, pz.data(), L, ob.data(), nullptr, 0, nullptr) == PACKKV_OK);
          CHECK(oa == ob);
          // decode: float64 softmax over the window's decompressed tokens
          const pkt::Decompressed full = pkt::decompress(ref, 0, kRow);
          const size_t n = L - (size_t)start;
          std::vector<float> wk(full.k.begin() + start * kRow, full.k.end());
          std::vector<float> wv(full.v.begin() + start * kRow, full.v.end());
          std::vector<double> rlse;
          const auto probs = pkt::ref_softmax(pkt::ref_scores(wk, n, H, D, q, kHq), n, kHq, 0.2, &rlse);
          const auto want = pkt::ref_apply(wv, n, H, D, probs, kHq);
          std::vector<float> od(kHq * D), lse(kHq);
          REQUIRE(packkv_attn_decode(c, 1, &id, kHq, q.data(), PACKKV_DTYPE_F32, 0.2f, od.data(), lse.data(),
                                     nullptr, 0, nullptr) == PACKKV_OK);
          CHECK(pkt::rel_l2(want, od) < 1e-5);
          for (int j = 0; j < kHq; ++j) CHECK(std::abs(lse[j] - rlse[j]) < 1e-4);
          // decompress: NaN before the start, the windowless values after it
          const pkt::Decompressed got = pkt::decompress(c, 0, kRow);
          bool nan_ok = true, same = true;
          for (size_t i = 0; i < got.k.size(); ++i) {
            if ((int64_t)(i / kRow) < start) nan_ok = nan_ok && std::isnan(got.k[i]) && std::isnan(got.v[i]);
            else same = same && got.k[i] == full.k[i] && got.v[i] == full.v[i];
          }
          CHECK(nan_ok);
          CHECK(same);
          // memory: blocks wholly before the start are freed (sinks stay stored)
          const int64_t ref_blocks = pkt::stats(ref).n_blocks;
          const int64_t gone = std::min<int64_t>(ref_blocks, std::max<int64_t>(0, start - l.sinks) / kN);
          CHECK(pkt::stats(c).n_blocks == ref_blocks - gone);
        }
      }
    }
  }
}

TEST_CASE("export / import with sink tokens / K centring restores the sequence exactly, in every state") {
  auto k = pkt::kv_data(400, H, D, 15), v = pkt::kv_data(400, H, D, 16);
  auto q = pkt::kv_data(1, kHq, D, 17);
  for (const Levers& l : kLevers) {
    for (size_t tokens : {(size_t)0, (size_t)2, (size_t)10, (size_t)95, (size_t)300}) {
      for (int64_t window : {0, 37}) {
        CAPTURE(l.sinks);
        CAPTURE(l.centre);
        CAPTURE(tokens);
        CAPTURE(window);
        const packkv_cache_params_t p = lever_params(l);
        pkt::Cache c(p), dst(p);
        if (window) {
          REQUIRE(packkv_x_cache_set_window(c, window) == PACKKV_OK);
          REQUIRE(packkv_x_cache_set_window(dst, window) == PACKKV_OK);
        }
        feed(c, 0, k, v, 0, tokens, 13);
        size_t bytes = 0, written = 0;
        REQUIRE(packkv_x_cache_export_size(c, 0, &bytes) == PACKKV_OK);
        std::vector<uint8_t> e(bytes);
        REQUIRE(packkv_x_cache_export(c, 0, e.data(), bytes, &written) == PACKKV_OK);
        CHECK(written == bytes);
        CHECK(packkv::fmt::get_u32(e.data() + packkv::fmt::kSeqVersion) == 2);
        CHECK(packkv::fmt::get_u64(e.data() + packkv::fmt::kSeqSinkLen) == std::min<size_t>(tokens, l.sinks));
        // the payload: blocks, window, then the sinks and the mean (sizes by hand)
        const packkv_cache_stats_t st = pkt::stats(c, 0);
        const bool mean = l.centre && !pkt::blocks_of(c, 0).empty();  // block 0 was flushed
        size_t blob_records = 0;
        for (const auto& b : pkt::blocks_of(c, 0)) blob_records += b.empty() ? 0 : 8 + (b.size() + 7) / 8 * 8;
        CHECK(bytes == 128 + blob_records + (size_t)st.residual_bytes + (mean ? kRow * 4 : 0));
        REQUIRE(packkv_x_cache_import(dst, 1, e.data(), e.size()) == PACKKV_OK);
        int64_t s0 = -1, s1 = -2;
        REQUIRE(packkv_x_cache_window_start(c, 0, &s0) == PACKKV_OK);
        REQUIRE(packkv_x_cache_window_start(dst, 1, &s1) == PACKKV_OK);
        CHECK(s0 == s1);
        if (tokens > 0) check_same(c, 0, dst, 1, q);
        std::vector<uint8_t> again(bytes);
        REQUIRE(packkv_x_cache_export(dst, 1, again.data(), bytes, &written) == PACKKV_OK);
        CHECK(again == e);
        // both go on alike (the sinks fill, the mean is used or computed the same way)
        feed(c, 0, k, v, tokens, 90, 1);
        feed(dst, 1, k, v, tokens, 90, 1);
        check_same(c, 0, dst, 1, q);
      }
    }
  }
}

TEST_CASE("import with sink tokens / K centring: corrupt, mismatched and old-version exports") {
  auto k = pkt::kv_data(200, H, D, 18), v = pkt::kv_data(200, H, D, 19);
  const Levers both{4, true};
  const packkv_cache_params_t p = lever_params(both);
  pkt::Cache c(p);
  feed(c, 0, k, v, 0, 100, 100);
  size_t bytes = 0, written = 0;
  REQUIRE(packkv_x_cache_export_size(c, 0, &bytes) == PACKKV_OK);
  std::vector<uint8_t> good(bytes);
  REQUIRE(packkv_x_cache_export(c, 0, good.data(), bytes, &written) == PACKKV_OK);
  pkt::Pool pool(pkt::pool_params(65536));
  pkt::PoolCache dst(p, pool);
  feed(dst, 1, k, v, 0, 30, 7);
  const pkt::State before = pkt::state(dst, 2, kRow, pool);
  auto reseal = [](std::vector<uint8_t>* e) {
    packkv::fmt::put_u64(e->data() + packkv::fmt::kSeqChecksum, packkv::fmt::fnv1a64(e->data() + 32, e->size() - 32));
  };
  auto expect = [&](const std::vector<uint8_t>& e, packkv_status_t code, const char* what) {
    CAPTURE(what);
    CHECK(packkv_x_cache_import(dst, 0, e.data(), e.size()) == code);
    const std::string msg = packkv_last_error_message();
    CAPTURE(msg);
    CHECK(msg.find("packkv_x_cache_import") != std::string::npos);
    CHECK(msg.find(what) != std::string::npos);
    CHECK(pkt::state(dst, 2, kRow, pool) == before);
  };
  const size_t mean_at = good.size() - kRow * 4, sinks_v_end = mean_at;
  {
    std::vector<uint8_t> e = good;  // a NaN (f16 0x7E00) in the sink tokens' V
    e[sinks_v_end - 2] = 0x00;
    e[sinks_v_end - 1] = 0x7E;
    reseal(&e);
    expect(e, PACKKV_ERR_INVALID_ARGUMENT, "corrupt sink tokens");
  }
  {
    std::vector<uint8_t> e = good;  // an inf in the K mean
    packkv::fmt::put_u32(e.data() + mean_at + 8, 0x7F800000u);
    reseal(&e);
    expect(e, PACKKV_ERR_INVALID_ARGUMENT, "corrupt K mean");
  }
  {
    std::vector<uint8_t> e = good;  // one sink token fewer: the counts disagree
    packkv::fmt::put_u64(e.data() + packkv::fmt::kSeqSinkLen, 3);
    reseal(&e);
    expect(e, PACKKV_ERR_INVALID_ARGUMENT, "inconsistent counts");
  }
  {
    std::vector<uint8_t> e(good.begin(), good.end() - 4 * kRow);  // the mean left out
    packkv::fmt::put_u64(e.data() + packkv::fmt::kSeqTotal, e.size());
    reseal(&e);
    expect(e, PACKKV_ERR_INVALID_ARGUMENT, "size mismatch");
  }
  {
    std::vector<uint8_t> e = good;
    packkv::fmt::put_u32(e.data() + packkv::fmt::kSeqVersion, 3);
    expect(e, PACKKV_ERR_VERSION_MISMATCH, "version 3");
  }
  {
    std::vector<uint8_t> e = good;  // version 1 had no sink tokens: bytes 112.. must be zero
    packkv::fmt::put_u32(e.data() + packkv::fmt::kSeqVersion, 1);
    reseal(&e);
    expect(e, PACKKV_ERR_INVALID_ARGUMENT, "reserved fields of a version 1 export");
  }
  // params mismatch: a cache with other sink_tokens or without centring
  for (const Levers& other : {Levers{2, true}, Levers{4, false}}) {
    pkt::Cache o(lever_params(other));
    CHECK(packkv_x_cache_import(o, 0, good.data(), good.size()) == PACKKV_ERR_INVALID_ARGUMENT);
    const std::string msg = packkv_last_error_message();
    CAPTURE(msg);
    CHECK(msg.find(other.sinks != 4 ? "params mismatch: the export has sink_tokens = 4, this cache 2"
                                    : "params mismatch: the export has k_transform = 1, this cache 0") !=
          std::string::npos);
    CHECK(pkt::seq_len(o, 0) == 0);
  }
  // the budget: nothing imported
  {
    pkt::Pool tiny(pkt::pool_params(8192, 8192));
    pkt::PoolCache t(p, tiny);
    feed(t, 1, k, v, 0, 40, 40);  // takes the one page
    REQUIRE(pkt::pool_stats(tiny).bytes_in_use == 8192);
    const pkt::State tb = pkt::state(t, 2, kRow, tiny);
    CHECK(packkv_x_cache_import(t, 0, good.data(), good.size()) == PACKKV_X_ERR_BUDGET_EXCEEDED);
    CHECK(pkt::state(t, 2, kRow, tiny) == tb);
  }
}

TEST_CASE("import of a version 1 export (before sink tokens) into a cache without them") {
  auto k = pkt::kv_data(200, H, D, 20), v = pkt::kv_data(200, H, D, 21);
  auto q = pkt::kv_data(1, kHq, D, 22);
  const packkv_cache_params_t p = lever_params({0, false});
  pkt::Cache c(p);
  feed(c, 0, k, v, 0, 150, 31);
  size_t bytes = 0, written = 0;
  REQUIRE(packkv_x_cache_export_size(c, 0, &bytes) == PACKKV_OK);
  std::vector<uint8_t> e(bytes);
  REQUIRE(packkv_x_cache_export(c, 0, e.data(), bytes, &written) == PACKKV_OK);
  // a version 1 export of this state is these bytes with version 1 (same layout, bytes
  // 112..127 zero, nothing after the residual window)
  for (size_t i = 112; i < 128; ++i) REQUIRE(e[i] == 0);
  packkv::fmt::put_u32(e.data() + packkv::fmt::kSeqVersion, 1);
  packkv::fmt::put_u64(e.data() + packkv::fmt::kSeqChecksum, packkv::fmt::fnv1a64(e.data() + 32, e.size() - 32));
  pkt::Cache dst(p);
  REQUIRE(packkv_x_cache_import(dst, 0, e.data(), e.size()) == PACKKV_OK);
  check_same(c, 0, dst, 0, q);
  // into a cache with sink tokens: refused by name
  pkt::Cache s(lever_params({4, false}));
  CHECK(packkv_x_cache_import(s, 0, e.data(), e.size()) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(std::string(packkv_last_error_message()).find("sink_tokens = 0, this cache 4") != std::string::npos);
}

TEST_CASE("sequence operations with sink tokens / K centring: bad arguments change nothing") {
  auto k = pkt::kv_data(100, H, D, 23), v = pkt::kv_data(100, H, D, 24);
  for (const Levers& l : kLevers) {
    CAPTURE(l.sinks);
    CAPTURE(l.centre);
    pkt::Cache c(lever_params(l, 3));
    REQUIRE(packkv_x_cache_set_window(c, 50) == PACKKV_OK);
    feed(c, 0, k, v, 0, 80, 80);
    feed(c, 1, k, v, 0, 3, 3);
    const pkt::State before = pkt::state(c, 3, kRow);
    CHECK(packkv_x_cache_truncate(c, 0, 29) == PACKKV_ERR_INVALID_ARGUMENT);  // before the start 30
    CHECK(packkv_x_cache_truncate(c, 0, 81) == PACKKV_ERR_INVALID_ARGUMENT);
    CHECK(packkv_x_cache_truncate(c, 1, -1) == PACKKV_ERR_INVALID_ARGUMENT);
    CHECK(packkv_x_cache_fork(c, 0, 1) == PACKKV_ERR_INVALID_STATE);
    CHECK(packkv_x_cache_set_window(c, 10) == PACKKV_ERR_INVALID_STATE);
    CHECK(pkt::state(c, 3, kRow) == before);
  }
}

TEST_CASE("a cache with sink tokens or K centring in a shared pool holds what a private cache holds") {
  for (const Levers& l : kLevers) {
    CAPTURE(l.sinks);
    CAPTURE(l.centre);
    auto k = pkt::kv_data(90, H, D, 5), v = pkt::kv_data(90, H, D, 6);
    const packkv_cache_params_t p = lever_params(l);
    int64_t page_bytes = 0;
    REQUIRE(packkv_x_pool_page_bytes_for(&p, &page_bytes) == PACKKV_OK);
    pkt::Pool pool(pkt::pool_params(page_bytes));
    pkt::PoolCache a(p, pool);
    pkt::Cache b(p);
    for (size_t t = 0; t < 90; t += 30) {
      pkt::append1(a, 0, k, v, t, 30, kRow);
      pkt::append1(b, 0, k, v, t, 30, kRow);
    }
    const pkt::State sa = pkt::state(a, 1, kRow), sb = pkt::state(b, 1, kRow);
    CHECK(sa.blocks == sb.blocks);
    CHECK(sa.data[0].k == sb.data[0].k);
    CHECK(sa.data[0].v == sb.data[0].v);
    CHECK(pkt::stats(a, 0).n_residual_tokens == pkt::stats(b, 0).n_residual_tokens);
  }
}
