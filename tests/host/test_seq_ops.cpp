// packkv_x_cache_truncate and packkv_x_cache_fork: contents against references built
// independently (fresh caches fed the same tokens), attention on the result, statistics
// of shared blocks, page reuse, and "a failed call changes nothing".
#include <doctest/doctest.h>

#include <string>

#include "common/dtype.h"
#include "seq_ops_helpers.h"

namespace {

using namespace seqt;

// count floats equal bit for bit (true for count 0, whatever the pointers).
bool same_floats(const float* a, const float* b, size_t count) {
  return count == 0 || std::memcmp(a, b, count * 4) == 0;
}

}  // namespace

TEST_CASE("truncate: inside the residual window keeps an exact prefix") {
  auto k = pkt::kv_data(1000, H, D, 1), v = pkt::kv_data(1000, H, D, 2);
  pkt::Cache c(pkt::params(H, D, 1));
  feed(c, 0, k, v, 0, 1000, 37);
  const pkt::Decompressed before = pkt::decompress(c, 0, kRow);
  const packkv_cache_stats_t s0 = pkt::stats(c);
  const int64_t compressed = s0.n_compressed_tokens;
  const int64_t n = compressed + 5;
  REQUIRE(packkv_x_cache_truncate(c, 0, n) == PACKKV_OK);
  CHECK(pkt::seq_len(c, 0) == n);
  const pkt::Decompressed after = pkt::decompress(c, 0, kRow);
  CHECK(same_floats(after.k.data(), before.k.data(), (size_t)n * kRow));
  CHECK(same_floats(after.v.data(), before.v.data(), (size_t)n * kRow));
  const packkv_cache_stats_t s1 = pkt::stats(c);
  CHECK(s1.n_blocks == s0.n_blocks);
  CHECK(s1.n_residual_tokens == 5);
  CHECK(s1.residual_bytes == 5 * (int64_t)kRow * 2 * 2);
  // same length: nothing changes
  const pkt::State st = pkt::state(c, 1, kRow);
  REQUIRE(packkv_x_cache_truncate(c, 0, n) == PACKKV_OK);
  CHECK(pkt::state(c, 1, kRow) == st);
}

TEST_CASE("truncate: a cut block returns to the window from its stored values, then the cache goes on") {
  auto k = pkt::kv_data(2000, H, D, 3), v = pkt::kv_data(2000, H, D, 4);
  auto q = pkt::kv_data(1, kHq, D, 5);
  const packkv_cache_params_t p = pkt::params(H, D, 1);
  for (int64_t n : {64 * 5 + 17, 64 * 5, 1, 0, 63, 65}) {
    CAPTURE(n);
    pkt::Cache c(p);
    feed(c, 0, k, v, 0, 1500, 100);
    const pkt::Decompressed full = pkt::decompress(c, 0, kRow);
    const auto blocks = pkt::blocks_of(c, 0);
    REQUIRE(packkv_x_cache_truncate(c, 0, n) == PACKKV_OK);
    CHECK(pkt::seq_len(c, 0) == n);
    const int64_t kept_blocks = n / 64, cut = n % 64;
    CHECK(pkt::stats(c).n_blocks == kept_blocks);
    CHECK(pkt::stats(c).n_residual_tokens == cut);
    // kept blocks: the same bytes; the window: the dequantized values rounded to f16
    const auto kept = pkt::blocks_of(c, 0);
    CHECK(kept == std::vector<std::vector<uint8_t>>(blocks.begin(), blocks.begin() + kept_blocks));
    const pkt::Decompressed got = pkt::decompress(c, 0, kRow);
    CHECK(same_floats(got.k.data(), full.k.data(), (size_t)kept_blocks * 64 * kRow));
    const std::vector<float> wk = as_f16(full.k, kept_blocks * 64, n), wv = as_f16(full.v, kept_blocks * 64, n);
    CHECK(same_floats(got.k.data() + kept_blocks * 64 * kRow, wk.data(), wk.size()));
    CHECK(same_floats(got.v.data() + kept_blocks * 64 * kRow, wv.data(), wv.size()));
    // reference: a fresh cache fed the kept tokens' original values for the kept blocks and
    // the window's values for the rest, then the same new tokens
    pkt::Cache ref(p);
    feed(ref, 0, k, v, 0, (size_t)kept_blocks * 64, 64);
    if (cut) {
      int32_t id = 0, m = (int32_t)cut;
      REQUIRE(packkv_cache_append(ref, 1, &id, &m, wk.data(), wv.data(), PACKKV_DTYPE_F32, nullptr) == PACKKV_OK);
    }
    feed(c, 0, k, v, 1500, 400, 1);
    feed(ref, 0, k, v, 1500, 400, 1);
    CHECK(pkt::blocks_of(c, 0) == pkt::blocks_of(ref, 0));
    const pkt::Decompressed a = pkt::decompress(c, 0, kRow), b = pkt::decompress(ref, 0, kRow);
    CHECK(same_floats(a.k.data(), b.k.data(), a.k.size()));
    CHECK(decode(c, 0, q) == decode(ref, 0, q));
  }
}

TEST_CASE("truncate: the open page is rewound, so a rollback and re-append takes no new page") {
  auto k = pkt::kv_data(3000, H, D, 6), v = pkt::kv_data(3000, H, D, 7);
  pkt::Pool pool(pkt::pool_params(65536));
  pkt::PoolCache c(pkt::params(H, D, 1), pool);
  feed(c, 0, k, v, 0, 1000, 1);
  const packkv_x_pool_stats_t p0 = pkt::pool_stats(pool);
  const auto blocks0 = pkt::blocks_of(c, 0);
  // speculative decoding: append 200, roll back 150 of them, many times
  for (int round = 0; round < 20; ++round) {
    feed(c, 0, k, v, 1000 + 50 * round, 200, 200);
    REQUIRE(packkv_x_cache_truncate(c, 0, 1000 + 50 * (round + 1)) == PACKKV_OK);
  }
  CHECK(pkt::seq_len(c, 0) == 2000);
  pkt::Cache ref(pkt::params(H, D, 1));
  feed(ref, 0, k, v, 0, 1000, 1);
  CHECK(pkt::pool_stats(pool).bytes_in_use <= p0.bytes_in_use + 2 * 65536);
  REQUIRE(packkv_x_cache_truncate(c, 0, 1000) == PACKKV_OK);
  CHECK(pkt::pool_stats(pool).bytes_in_use == p0.bytes_in_use);
  (void)blocks0;
}

TEST_CASE("truncate: bad arguments change nothing") {
  auto k = pkt::kv_data(700, H, D, 8), v = pkt::kv_data(700, H, D, 9);
  pkt::Cache c(pkt::params(H, D, 2));
  feed(c, 0, k, v, 0, 700, 700);
  const pkt::State before = pkt::state(c, 2, kRow);
  struct Case {
    packkv_cache_t* cache;
    int32_t seq;
    int64_t n;
  } cases[] = {{nullptr, 0, 1}, {c, -1, 1}, {c, 2, 1}, {c, 0, -1}, {c, 0, 701}, {c, 1, 1}, {c, 0, INT64_MIN}};
  for (const Case& x : cases) {
    CAPTURE(x.seq);
    CAPTURE(x.n);
    CHECK(packkv_x_cache_truncate(x.cache, x.seq, x.n) == PACKKV_ERR_INVALID_ARGUMENT);
    CHECK(std::string(packkv_last_error_message()).find("packkv_x_cache_truncate") != std::string::npos);
    CHECK(pkt::state(c, 2, kRow) == before);
  }
  // the messages say what is wrong with n_tokens (not "before the sliding window's start")
  CHECK(packkv_x_cache_truncate(c, 0, -1) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(std::string(packkv_last_error_message()).find("n_tokens must be >= 0 (the number of tokens to keep), got -1") !=
        std::string::npos);
  CHECK(packkv_x_cache_truncate(c, 0, 701) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(std::string(packkv_last_error_message()).find("n_tokens 701 is more than sequence 0 holds (700 tokens)") !=
        std::string::npos);
}

TEST_CASE("fork: shares blocks, copies the window, then both evolve like independent sequences") {
  auto k = pkt::kv_data(3000, H, D, 10), v = pkt::kv_data(3000, H, D, 11);
  auto k2 = pkt::kv_data(3000, H, D, 12), v2 = pkt::kv_data(3000, H, D, 13);
  auto q = pkt::kv_data(1, kHq, D, 14);
  const packkv_cache_params_t p = pkt::params(H, D, 3);
  pkt::Pool pool(pkt::pool_params(65536));
  pkt::PoolCache c(p, pool);
  feed(c, 0, k, v, 0, 1100, 50);
  const packkv_cache_stats_t src0 = pkt::stats(c, 0);
  const packkv_x_pool_stats_t pool0 = pkt::pool_stats(pool);
  REQUIRE(packkv_x_cache_fork(c, 0, 2) == PACKKV_OK);
  CHECK(pkt::pool_stats(pool).bytes_in_use == pool0.bytes_in_use);  // nothing copied into the pool
  CHECK(pkt::blocks_of(c, 2) == pkt::blocks_of(c, 0));
  const pkt::Decompressed d0 = pkt::decompress(c, 0, kRow), d2 = pkt::decompress(c, 2, kRow);
  CHECK(same_floats(d0.k.data(), d2.k.data(), d0.k.size()));
  CHECK(decode(c, 0, q) == decode(c, 2, q));
  // stats: each sequence counts the shared blocks; the whole cache counts them once
  const packkv_cache_stats_t s2 = pkt::stats(c, 2), all = pkt::stats(c);
  CHECK(s2.n_blocks == src0.n_blocks);
  CHECK(s2.compressed_bytes_used == src0.compressed_bytes_used);
  CHECK(all.n_blocks == src0.n_blocks);
  CHECK(all.n_compressed_tokens == src0.n_compressed_tokens);
  CHECK(all.n_residual_tokens == 2 * src0.n_residual_tokens);
  CHECK(all.compressed_bytes_used == src0.compressed_bytes_used);
  CHECK(all.fp16_bytes == (src0.n_compressed_tokens + 2 * src0.n_residual_tokens) * (int64_t)kRow * 4);
  // both go on with different tokens; each equals a fresh sequence fed prefix + its own tokens
  feed(c, 0, k, v, 1100, 900, 1);
  feed(c, 2, k2, v2, 1100, 700, 33);
  pkt::Cache ref(p);
  feed(ref, 0, k, v, 0, 1100, 50);
  feed(ref, 0, k, v, 1100, 900, 1);
  feed(ref, 2, k, v, 0, 1100, 50);
  feed(ref, 2, k2, v2, 1100, 700, 33);
  for (int s : {0, 2}) {
    CAPTURE(s);
    CHECK(pkt::blocks_of(c, s) == pkt::blocks_of(ref, s));
    const pkt::Decompressed a = pkt::decompress(c, s, kRow), b = pkt::decompress(ref, s, kRow);
    CHECK(same_floats(a.k.data(), b.k.data(), a.k.size()));
    CHECK(same_floats(a.v.data(), b.v.data(), a.v.size()));
    CHECK(decode(c, s, q) == decode(ref, s, q));
  }
  // removing the source keeps the fork intact; a fork of a fork; truncating one leaves the other
  REQUIRE(packkv_x_cache_fork(c, 2, 1) == PACKKV_OK);
  REQUIRE(packkv_cache_remove_seq(c, 0) == PACKKV_OK);
  const pkt::Decompressed r2 = pkt::decompress(ref, 2, kRow);
  CHECK(same_floats(pkt::decompress(c, 2, kRow).k.data(), r2.k.data(), r2.k.size()));
  REQUIRE(packkv_x_cache_truncate(c, 1, 100) == PACKKV_OK);
  CHECK(same_floats(pkt::decompress(c, 2, kRow).v.data(), r2.v.data(), r2.v.size()));
  CHECK(pkt::blocks_of(c, 2) == pkt::blocks_of(ref, 2));
  REQUIRE(packkv_cache_reset(c) == PACKKV_OK);
  CHECK(pkt::pool_stats(pool).bytes_in_use == 0);
  CHECK(pkt::pool_stats(pool).bytes_held == 0);
}

TEST_CASE("fork: needs no pool pages, bad arguments change nothing") {
  auto k = pkt::kv_data(1000, H, D, 15), v = pkt::kv_data(1000, H, D, 16);
  const int64_t page = 16384;
  pkt::Pool pool(pkt::pool_params(page, 2 * page));
  pkt::PoolCache c(pkt::params(H, D, 3), pool);
  packkv_status_t st = PACKKV_OK;
  size_t t = 0;
  while (st == PACKKV_OK && t < 1000) st = pkt::try_append(c, 0, k, v, t++, 1, kRow);
  REQUIRE(st == PACKKV_X_ERR_BUDGET_EXCEEDED);
  pkt::append1(c, 1, k, v, 0, 10, kRow);
  const pkt::State before = pkt::state(c, 3, kRow, pool);
  struct Case {
    packkv_cache_t* cache;
    int32_t src, dst;
    packkv_status_t code;
  } cases[] = {{nullptr, 0, 2, PACKKV_ERR_INVALID_ARGUMENT}, {c, 0, 0, PACKKV_ERR_INVALID_ARGUMENT},
               {c, -1, 2, PACKKV_ERR_INVALID_ARGUMENT},      {c, 0, 3, PACKKV_ERR_INVALID_ARGUMENT},
               {c, 3, 2, PACKKV_ERR_INVALID_ARGUMENT},       {c, 0, 1, PACKKV_ERR_INVALID_STATE}};
  for (const Case& x : cases) {
    CAPTURE(x.src);
    CAPTURE(x.dst);
    CHECK(packkv_x_cache_fork(x.cache, x.src, x.dst) == x.code);
    CHECK(std::string(packkv_last_error_message()).find("packkv_x_cache_fork") != std::string::npos);
    CHECK(pkt::state(c, 3, kRow, pool) == before);
  }
  REQUIRE(packkv_x_cache_fork(c, 0, 2) == PACKKV_OK);  // at a full budget
  CHECK(pkt::seq_len(c, 2) == pkt::seq_len(c, 0));
}
