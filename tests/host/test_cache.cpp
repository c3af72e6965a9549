// Cache state: flush policy (T7), append granularity, sequences, memory accounting,
// capacity, and "a failed call changes nothing".
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "api/cache_impl.h"
#include "common/dtype.h"
#include "cpu/cpu_cache.h"
#include "helpers.h"
#include "api/internal_access.h"

namespace {
std::vector<std::vector<uint8_t>> all_blocks(const packkv_cache_t* c, int seq) {
  const packkv::CacheImpl& impl = packkv::internal_impl(c);
  std::vector<std::vector<uint8_t>> out;
  for (int64_t b = 0; b < impl.n_blocks(seq); ++b) out.push_back(impl.block_bytes(seq, b));
  return out;
}

struct Snapshot {
  packkv_cache_stats_t stats;
  std::vector<int64_t> lens;
  std::vector<pkt::Decompressed> data;
  std::vector<std::vector<std::vector<uint8_t>>> blocks;
};
Snapshot snapshot(const packkv_cache_t* c, int n_seqs, size_t row) {
  Snapshot s;
  s.stats = pkt::stats(c);
  for (int i = 0; i < n_seqs; ++i) {
    s.lens.push_back(pkt::seq_len(c, i));
    s.data.push_back(pkt::decompress(c, i, row));
    s.blocks.push_back(all_blocks(c, i));
  }
  return s;
}
void check_same(const Snapshot& a, const Snapshot& b) {
  CHECK(std::memcmp(&a.stats, &b.stats, sizeof a.stats) == 0);
  CHECK(a.lens == b.lens);
  for (size_t i = 0; i < a.data.size(); ++i) {  // bitwise equal (NaN-safe), empty included
    CHECK(a.data[i].k.size() == b.data[i].k.size());
    CHECK(a.data[i].v.size() == b.data[i].v.size());
    if (!a.data[i].k.empty()) CHECK(std::memcmp(a.data[i].k.data(), b.data[i].k.data(), a.data[i].k.size() * 4) == 0);
    if (!a.data[i].v.empty()) CHECK(std::memcmp(a.data[i].v.data(), b.data[i].v.data(), a.data[i].v.size() * 4) == 0);
  }
  CHECK(a.blocks == b.blocks);
}
}  // namespace

TEST_CASE("T7: flush schedule with block 64 and residual 128") {
  const int H = 1, D = 32;
  const size_t row = H * D;
  auto k = pkt::kv_data(1100, H, D, 1), v = pkt::kv_data(1100, H, D, 2);
  {
    pkt::Cache c(pkt::params(H, D));
    pkt::append1(c, 0, k, v, 0, 191, row);
    CHECK(pkt::stats(c).n_compressed_tokens == 0);
    pkt::append1(c, 0, k, v, 191, 1, row);
    CHECK(pkt::stats(c).n_compressed_tokens == 64);
    CHECK(pkt::stats(c).n_residual_tokens == 128);
  }
  {
    pkt::Cache c(pkt::params(H, D));
    pkt::append1(c, 0, k, v, 0, 1000, row);
    CHECK(pkt::stats(c).n_compressed_tokens == 832);
    CHECK(pkt::stats(c).n_residual_tokens == 168);
  }
  {
    // steady decode: 128 after a flush, grows to 191, flushes every 64 steps
    pkt::Cache c(pkt::params(H, D));
    pkt::append1(c, 0, k, v, 0, 192, row);
    CHECK(pkt::stats(c).n_residual_tokens == 128);
    for (int step = 0; step < 128; ++step) {
      pkt::append1(c, 0, k, v, 192 + step, 1, row);
      const int64_t res = pkt::stats(c).n_residual_tokens;
      CHECK(res == 128 + (step + 1) % 64);
    }
    CHECK(pkt::stats(c).n_blocks == 3);
  }
}

TEST_CASE("block and residual sizes are configurable") {
  packkv_cache_params_t p = pkt::params(2, 48);
  p.block_tokens = 32;
  p.residual_tokens = 5;
  pkt::Cache c(p);
  auto k = pkt::kv_data(100, 2, 48, 3), v = pkt::kv_data(100, 2, 48, 4);
  pkt::append1(c, 0, k, v, 0, 100, 96);
  // window 100: flush while >= 37 -> 2 blocks (64 tokens), 36 left
  CHECK(pkt::stats(c).n_compressed_tokens == 64);
  CHECK(pkt::stats(c).n_residual_tokens == 36);
}

TEST_CASE("appending all tokens at once or one at a time gives identical bytes") {
  for (packkv_repack_t m : {PACKKV_REPACK_NONE, PACKKV_REPACK_MEDIAN, PACKKV_REPACK_GREEDY}) {
    packkv_cache_params_t p = pkt::params(3, 64);
    p.repack = m;
    const size_t row = 192;
    auto k = pkt::kv_data(700, 3, 64, 7), v = pkt::kv_data(700, 3, 64, 8);
    pkt::Cache a(p), b(p), c(p);
    pkt::append1(a, 0, k, v, 0, 700, row);
    for (int t = 0; t < 700; ++t) pkt::append1(b, 0, k, v, t, 1, row);
    pkt::append1(c, 0, k, v, 0, 300, row);  // prefill, then mixed chunks
    pkt::append1(c, 0, k, v, 300, 1, row);
    pkt::append1(c, 0, k, v, 301, 399, row);
    const Snapshot sa = snapshot(a, 1, row), sb = snapshot(b, 1, row), sc = snapshot(c, 1, row);
    CHECK(sa.blocks.at(0).size() == 8);
    CHECK(sa.blocks == sb.blocks);
    CHECK(sa.blocks == sc.blocks);
    CHECK(std::memcmp(sa.data[0].k.data(), sb.data[0].k.data(), sa.data[0].k.size() * 4) == 0);
    CHECK(std::memcmp(sa.data[0].v.data(), sc.data[0].v.data(), sa.data[0].v.size() * 4) == 0);
  }
}

TEST_CASE("input dtypes: fp16, bf16 and fp32 inputs of the same values agree") {
  const int H = 2, D = 32;
  const size_t row = H * D, n = 300;
  auto kf = pkt::kv_data(n, H, D, 31), vf = pkt::kv_data(n, H, D, 32);
  std::vector<uint16_t> kh(kf.size()), vh(vf.size());
  for (size_t i = 0; i < kf.size(); ++i) {  // values exactly representable in fp16
    kh[i] = packkv::float_to_half(kf[i]);
    vh[i] = packkv::float_to_half(vf[i]);
    kf[i] = packkv::half_to_float(kh[i]);
    vf[i] = packkv::half_to_float(vh[i]);
  }
  pkt::Cache a(pkt::params(H, D)), b(pkt::params(H, D));
  pkt::append1(a, 0, kf, vf, 0, (int)n, row);
  int32_t id = 0, cnt = (int)n;
  REQUIRE(packkv_cache_append(b, 1, &id, &cnt, kh.data(), vh.data(), PACKKV_DTYPE_F16, nullptr) == PACKKV_OK);
  CHECK(all_blocks(a, 0) == all_blocks(b, 0));
  // residual window holds the inputs exactly (kv_dtype fp16)
  auto d = pkt::decompress(b, 0, row);
  const int64_t first = pkt::stats(b).n_compressed_tokens;
  for (size_t i = (size_t)first * row; i < n * row; ++i) CHECK(d.k[i] == kf[i]);
}

TEST_CASE("sequences are independent, remove_seq and reset") {
  const int H = 1, D = 64;
  const size_t row = 64;
  packkv_cache_params_t p = pkt::params(H, D, 3);
  pkt::Cache c(p), solo(p);
  auto k = pkt::kv_data(900, H, D, 11), v = pkt::kv_data(900, H, D, 12);
  // batched append of two sequences with different lengths
  int32_t ids[2] = {2, 0}, cnt[2] = {500, 400};
  REQUIRE(packkv_cache_append(c, 2, ids, cnt, k.data(), v.data(), PACKKV_DTYPE_F32, nullptr) == PACKKV_OK);
  pkt::append1(solo, 0, k, v, 500, 400, row);
  CHECK(pkt::seq_len(c, 2) == 500);
  CHECK(pkt::seq_len(c, 0) == 400);
  CHECK(pkt::seq_len(c, 1) == 0);
  CHECK(all_blocks(c, 0) == all_blocks(solo, 0));
  const packkv_cache_stats_t s0 = pkt::stats(c, 0), s2 = pkt::stats(c, 2), all = pkt::stats(c);
  CHECK(all.n_tokens == s0.n_tokens + s2.n_tokens);
  CHECK(all.compressed_bytes_used == s0.compressed_bytes_used + s2.compressed_bytes_used);
  REQUIRE(packkv_cache_remove_seq(c, 2) == PACKKV_OK);
  CHECK(pkt::seq_len(c, 2) == 0);
  CHECK(pkt::seq_len(c, 0) == 400);
  CHECK(all_blocks(c, 0) == all_blocks(solo, 0));
  pkt::append1(c, 2, k, v, 0, 10, row);  // id reusable at once
  CHECK(pkt::seq_len(c, 2) == 10);
  REQUIRE(packkv_cache_reset(c) == PACKKV_OK);
  CHECK(pkt::stats(c).n_tokens == 0);
  CHECK(pkt::stats(c).compressed_bytes_used == 0);
}

TEST_CASE("stats: every stored byte accounted, fp16 reference size, reserved >= used") {
  const int H = 3, D = 64;
  const size_t row = 192;
  pkt::Cache c(pkt::params(H, D));
  auto k = pkt::kv_data(1000, H, D, 13), v = pkt::kv_data(1000, H, D, 14);
  pkt::append1(c, 0, k, v, 0, 1000, row);
  const packkv_cache_stats_t s = pkt::stats(c);
  CHECK(s.n_tokens == 1000);
  CHECK(s.n_blocks == 13);
  CHECK(s.fp16_bytes == 1000 * 192 * 2 * 2);
  CHECK(s.residual_bytes == 168 * 192 * 2 * 2);  // kv_dtype fp16, K and V
  CHECK(s.k_scale_bytes == 13 * 64 * 4);          // int16 zero + 16-bit scale per token (compact)
  CHECK(s.v_scale_bytes == 13 * 64 * 4);
  CHECK(s.perm_bytes == 13 * 64);                 // median repacking by default
  CHECK(s.compressed_bytes_used ==
        s.k_tile_bytes + s.v_tile_bytes + s.k_scale_bytes + s.v_scale_bytes + s.index_bytes + s.perm_bytes);
  CHECK(s.compressed_bytes_reserved >= s.compressed_bytes_used);
  // K at r = 0.1 (4 bits) must be smaller than plain 4-bit codes + metadata (<= 4.6 bits/value)
  CHECK(s.k_tile_bytes * 8.0 / (832.0 * 192) < 4.6);
  CHECK(s.k_tile_bytes > 0);
}

TEST_CASE("capacity: a sequence cannot exceed max_tokens_per_seq, and nothing is appended") {
  packkv_cache_params_t p = pkt::params(1, 32, 2);
  p.max_tokens_per_seq = 200;
  pkt::Cache c(p);
  auto k = pkt::kv_data(300, 1, 32, 1), v = pkt::kv_data(300, 1, 32, 2);
  pkt::append1(c, 0, k, v, 0, 150, 32);
  const Snapshot before = snapshot(c, 2, 32);
  int32_t ids[2] = {1, 0}, cnt[2] = {10, 51};
  CHECK(packkv_cache_append(c, 2, ids, cnt, k.data(), v.data(), PACKKV_DTYPE_F32, nullptr) == PACKKV_ERR_CAPACITY_EXCEEDED);
  CHECK(std::string(packkv_last_error_message()).find("max_tokens_per_seq") != std::string::npos);
  check_same(before, snapshot(c, 2, 32));
  cnt[1] = 50;  // exactly full is fine
  CHECK(packkv_cache_append(c, 2, ids, cnt, k.data(), v.data(), PACKKV_DTYPE_F32, nullptr) == PACKKV_OK);
  CHECK(pkt::seq_len(c, 0) == 200);
}

TEST_CASE("non-finite K/V are rejected, naming sequence and token, and nothing is appended") {
  const int H = 2, D = 32;
  const size_t row = 64;
  packkv_cache_params_t p = pkt::params(H, D, 2);
  pkt::Cache c(p);
  auto k = pkt::kv_data(400, H, D, 1), v = pkt::kv_data(400, H, D, 2);
  pkt::append1(c, 0, k, v, 0, 190, row);
  const Snapshot before = snapshot(c, 2, row);
  for (float bad : {NAN, INFINITY, -INFINITY, 1e6f /* overflows the fp16 window */}) {
    for (int kv = 0; kv < 2; ++kv) {
      std::vector<float> k2(k), v2(v);
      // batch: sequence 0 gets 100 good tokens (would flush), sequence 1 has a bad value
      (kv == 0 ? k2 : v2)[(100 + 7) * row + 5] = bad;
      int32_t ids[2] = {0, 1}, cnt[2] = {100, 20};
      CHECK(packkv_cache_append(c, 2, ids, cnt, k2.data(), v2.data(), PACKKV_DTYPE_F32, nullptr) ==
            PACKKV_ERR_INVALID_ARGUMENT);
      const std::string msg = packkv_last_error_message();
      CHECK(msg.find("sequence 1") != std::string::npos);
      CHECK(msg.find("token 7") != std::string::npos);
      check_same(before, snapshot(c, 2, row));
    }
  }
  // a bf16 cache accepts 1e6
  packkv_cache_params_t pb = p;
  pb.kv_dtype = PACKKV_DTYPE_BF16;
  pkt::Cache cb(pb);
  std::vector<float> k3(k);
  k3[5] = 1e6f;
  pkt::append1(cb, 0, k3, v, 0, 10, row);
}

TEST_CASE("an append of zero tokens is a no-op and accepts NULL data") {
  pkt::Cache c(pkt::params(1, 32));
  int32_t id = 0, n = 0;
  CHECK(packkv_cache_append(c, 1, &id, &n, nullptr, nullptr, PACKKV_DTYPE_F16, nullptr) == PACKKV_OK);
  CHECK(pkt::seq_len(c, 0) == 0);
}

// packkv.h, max_seqs: "a CPU cache 192 bytes of host memory per slot (its per-sequence
// record, x86-64 build)": the record is CpuSeq, one per slot from creation. Fails when the
// record changes size, so that the documented cost is updated with it.
#if defined(__x86_64__) && defined(__GLIBCXX__)
TEST_CASE("the documented per-slot cost of max_seqs on a CPU cache") {
  CHECK(sizeof(packkv::CpuSeq) == 192);
}
#endif
