// GPU suite, issue 16: fork, truncate, export / import on CUDA caches, each against the
// CPU backend doing the same (gpu_pair.h: identical blocks, stats and decompression,
// attention within 1e-5), and every failing call leaving both caches unchanged.
#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gpu_pair.h"

namespace {

using namespace gpu_test;

// The variants every case runs: plain, and sink tokens with K centring (the copies of
// sinks and the K mean, the K mean added back when a block returns to the window).
std::vector<Shape> variants() {
  Shape a;
  a.seqs = 4;
  Shape b = a;
  b.sinks = 4;
  b.center = true;
  b.heads = 4;
  b.dim = 128;
  b.q_heads = 8;
  return {a, b};
}

void both(Pair& p, packkv_status_t (*op)(packkv_cache_t*, int32_t, int64_t), int32_t seq, int64_t n) {
  packkv_status_t st = op(p.cpu.c, seq, n);
  INFO(packkv_last_error_message());
  REQUIRE(st == PACKKV_OK);
  st = op(p.gpu.c, seq, n);
  INFO(packkv_last_error_message());
  REQUIRE(st == PACKKV_OK);
}

void fork_both(Pair& p, int32_t src, int32_t dst) {
  packkv_status_t st = packkv_x_cache_fork(p.cpu.c, src, dst);
  INFO(packkv_last_error_message());
  REQUIRE(st == PACKKV_OK);
  st = packkv_x_cache_fork(p.gpu.c, src, dst);
  INFO(packkv_last_error_message());
  REQUIRE(st == PACKKV_OK);
}

// Whole-cache stats: shared blocks count once on both backends.
void check_total_stats(Pair& p) {
  const packkv_cache_stats_t a = stats_of(p.cpu.c, -1), g = stats_of(p.gpu.c, -1);
  check_same_sizes(a, g);
  CHECK(a.n_compressed_tokens == g.n_compressed_tokens);
}

std::vector<uint8_t> export_of(packkv_cache_t* c, int32_t seq) {
  size_t n = 0;
  REQUIRE(packkv_x_cache_export_size(c, seq, &n) == PACKKV_OK);
  std::vector<uint8_t> buf(n);
  size_t written = 0;
  const packkv_status_t st = packkv_x_cache_export(c, seq, buf.data(), buf.size(), &written);
  INFO(packkv_last_error_message());
  REQUIRE(st == PACKKV_OK);
  REQUIRE(written == n);
  return buf;
}

int64_t reserved(packkv_cache_t* c) { return stats_of(c, -1).compressed_bytes_reserved; }

}  // namespace

TEST_SUITE("gpu") {
  TEST_CASE("fork: dst shares src's pages, both grow apart, identical to the CPU, shared blocks count once") {
    for (const Shape& s : variants()) {
      CAPTURE(s.sinks);
      std::mt19937 rng(31 + s.sinks);
      Pair p(s);
      p.append({0}, {1000}, rng);
      const int64_t before = reserved(p.gpu.c), blocks = stats_of(p.gpu.c, 0).n_blocks;
      REQUIRE(blocks > 0);
      fork_both(p, 0, 1);
      CHECK(reserved(p.gpu.c) == before + 8 * blocks);  // no page copied: dst's block table only
      p.check_all(rng);
      check_total_stats(p);
      p.append({0, 1}, {100, 37}, rng);
      for (int step = 0; step < 70; ++step) p.append({0, 1}, {1, 1}, rng);
      fork_both(p, 1, 2);  // a fork of a fork, with blocks of its own
      p.append({2, 1}, {64, 200}, rng);
      p.check_all(rng);
      check_total_stats(p);
      // failures change nothing
      CHECK(packkv_x_cache_fork(p.gpu.c, 0, 1) == PACKKV_ERR_INVALID_STATE);  // dst not empty
      CHECK(packkv_x_cache_fork(p.gpu.c, 3, 3) == PACKKV_ERR_INVALID_ARGUMENT);
      CHECK(packkv_x_cache_fork(p.gpu.c, 0, 99) == PACKKV_ERR_INVALID_ARGUMENT);
      p.check_all(rng);
      // the source goes: its forks keep the shared pages
      REQUIRE(packkv_cache_remove_seq(p.cpu.c, 0) == PACKKV_OK);
      REQUIRE(packkv_cache_remove_seq(p.gpu.c, 0) == PACKKV_OK);
      p.append({1, 2}, {65, 3}, rng);
      p.check_all(rng);
      check_total_stats(p);
      // a fork of an empty sequence is empty
      fork_both(p, 0, 3);
      CHECK(p.len(3) == 0);
      p.append({3}, {300}, rng);
      p.check_all(rng);
    }
  }

  TEST_CASE("truncate: in the window, at a block end, inside a block (back to the window), inside the sink tokens, to 0, then appends go on, identical to the CPU") {
    for (const Shape& s : variants()) {
      CAPTURE(s.sinks);
      std::mt19937 rng(41 + s.sinks);
      Pair p(s);
      p.append({0, 1}, {1000, 500}, rng);
      const int64_t N = s.block, S = s.sinks;
      const int64_t cuts[] = {p.len(0) - 5, S + 10 * N, S + 7 * N + 13, -1, 2, -1, 0, -1};
      for (int64_t n : cuts) {
        CAPTURE(n);
        if (n < 0) {  // appends after the previous truncation
          p.append({0, 1}, {200, 1}, rng);
          for (int step = 0; step < 66; ++step) p.append({0}, {1}, rng);
        } else {
          both(p, packkv_x_cache_truncate, 0, n);
          CHECK(p.len(0) == n);
        }
        p.check_all(rng);
      }
      // a fork truncated inside a shared page: the source's blocks stay as they are
      REQUIRE(packkv_cache_remove_seq(p.cpu.c, 1) == PACKKV_OK);
      REQUIRE(packkv_cache_remove_seq(p.gpu.c, 1) == PACKKV_OK);
      p.append({0}, {700}, rng);  // blocks 3 and 4 exist (and share pages after the fork)
      REQUIRE(stats_of(p.gpu.c, 0).n_blocks >= 5);
      fork_both(p, 0, 1);
      both(p, packkv_x_cache_truncate, 1, S + 3 * N + 30);
      CHECK(stats_of(p.gpu.c, 1).n_blocks == 3);
      p.append({1, 0}, {300, 130}, rng);
      p.check_all(rng);
      both(p, packkv_x_cache_truncate, 0, S + 2 * N);  // and the source too
      p.append({0, 1}, {129, 70}, rng);
      p.check_all(rng);
      check_total_stats(p);
      // failures change nothing
      const int64_t len = p.len(0);
      CHECK(packkv_x_cache_truncate(p.gpu.c, 0, len + 1) == PACKKV_ERR_INVALID_ARGUMENT);
      CHECK(packkv_x_cache_truncate(p.gpu.c, 0, -1) == PACKKV_ERR_INVALID_ARGUMENT);
      CHECK(packkv_x_cache_truncate(p.gpu.c, 77, 0) == PACKKV_ERR_INVALID_ARGUMENT);
      CHECK(p.len(0) == len);
      p.check_all(rng);
    }
  }

  TEST_CASE("export and import: the GPU writes the CPU's bytes, each imports the other's, bad input imports nothing") {
    for (const Shape& s : variants()) {
      CAPTURE(s.sinks);
      std::mt19937 rng(51 + s.sinks);
      Pair p(s);
      p.append({0}, {1000}, rng);
      for (int step = 0; step < 33; ++step) p.append({0}, {1}, rng);
      const std::vector<uint8_t> xc = export_of(p.cpu.c, 0), xg = export_of(p.gpu.c, 0);
      REQUIRE(xc.size() == xg.size());
      CHECK(std::memcmp(xc.data(), xg.data(), xc.size()) == 0);  // one format, the same bytes
      // each backend imports the other's export, then both grow the imported sequence
      REQUIRE(packkv_x_cache_import(p.cpu.c, 1, xg.data(), xg.size()) == PACKKV_OK);
      packkv_status_t st = packkv_x_cache_import(p.gpu.c, 1, xc.data(), xc.size());
      INFO(packkv_last_error_message());
      REQUIRE(st == PACKKV_OK);
      p.check_all(rng);
      p.append({1, 0}, {200, 65}, rng);
      p.check_all(rng);
      // a forked sequence exports as a whole
      fork_both(p, 1, 2);
      const std::vector<uint8_t> fc = export_of(p.cpu.c, 2), fg = export_of(p.gpu.c, 2);
      REQUIRE(fc.size() == fg.size());
      CHECK(std::memcmp(fc.data(), fg.data(), fc.size()) == 0);
      // bad input: nothing imported, nothing reserved
      const int64_t res0 = reserved(p.gpu.c);
      std::vector<uint8_t> bad = xg;
      bad[200] ^= 0x40;  // inside block 0: the checksum catches it
      CHECK(packkv_x_cache_import(p.gpu.c, 3, bad.data(), bad.size()) == PACKKV_ERR_INVALID_ARGUMENT);
      CHECK(packkv_x_cache_import(p.gpu.c, 3, xg.data(), xg.size() - 1) == PACKKV_ERR_INVALID_ARGUMENT);
      CHECK(packkv_x_cache_import(p.gpu.c, 3, xg.data(), 100) == PACKKV_ERR_INVALID_ARGUMENT);
      bad = xg;
      bad[0] = 'X';
      CHECK(packkv_x_cache_import(p.gpu.c, 3, bad.data(), bad.size()) == PACKKV_ERR_INVALID_ARGUMENT);
      CHECK(packkv_x_cache_import(p.gpu.c, 0, xg.data(), xg.size()) == PACKKV_ERR_INVALID_STATE);  // not empty
      Shape other = s;
      other.dim = s.dim == 64 ? 128 : 64;  // a params mismatch
      Cache oc(make_params(other, -1));
      std::vector<float> k((size_t)300 * other.heads * other.dim, 0.5f);
      const int32_t id = 0, n = 300;
      REQUIRE(packkv_cache_append(oc.c, 1, &id, &n, k.data(), k.data(), PACKKV_DTYPE_F32, nullptr) == PACKKV_OK);
      const std::vector<uint8_t> xo = export_of(oc.c, 0);
      CHECK(packkv_x_cache_import(p.gpu.c, 3, xo.data(), xo.size()) == PACKKV_ERR_INVALID_ARGUMENT);
      CHECK(std::string(packkv_last_error_message()).find("params mismatch") != std::string::npos);
      CHECK(p.len(3) == 0);
      CHECK(reserved(p.gpu.c) == res0);
      // export into a short buffer: CAPACITY_EXCEEDED, the buffer untouched
      std::vector<uint8_t> small(xg.size() - 1, 0xab);
      size_t written = 7;
      CHECK(packkv_x_cache_export(p.gpu.c, 0, small.data(), small.size(), &written) == PACKKV_ERR_CAPACITY_EXCEEDED);
      bool untouched = true;
      for (uint8_t b : small) untouched = untouched && b == 0xab;
      CHECK(untouched);
      p.check_all(rng);
    }
  }

  TEST_CASE("import into a device pool without room: PACKKV_X_ERR_BUDGET_EXCEEDED, nothing imported") {
    Shape s;
    s.seqs = 2;
    std::mt19937 rng(61);
    Pair big(s);
    big.append({0}, {6000}, rng);
    const std::vector<uint8_t> x = export_of(big.gpu.c, 0);
    int64_t page = 0;
    const packkv_cache_params_t prm = make_params(s, 0);
    REQUIRE(packkv_x_pool_page_bytes_for(&prm, &page) == PACKKV_OK);
    packkv_x_pool_params_t pp;
    REQUIRE(packkv_x_pool_params_init(&pp, sizeof pp) == PACKKV_OK);
    pp.device = 0;
    pp.page_bytes = page;
    pp.budget_bytes = page;  // one page: 6000 tokens need more
    packkv_x_pool_t* pool = nullptr;
    REQUIRE(packkv_x_pool_create(&pp, &pool) == PACKKV_OK);
    packkv_cache_t* c = nullptr;
    REQUIRE(packkv_x_cache_create_in_pool(&prm, pool, &c) == PACKKV_OK);
    const packkv_status_t st = packkv_x_cache_import(c, 0, x.data(), x.size());
    const int64_t need = packkv_x_last_bytes_needed();
    CHECK(st == PACKKV_X_ERR_BUDGET_EXCEEDED);
    CHECK(need > page);
    int64_t len = -1;
    REQUIRE(packkv_cache_seq_length(c, 0, &len) == PACKKV_OK);
    CHECK(len == 0);
    packkv_x_pool_stats_t ps;
    std::memset(&ps, 0, sizeof ps);
    ps.struct_size = sizeof ps;
    REQUIRE(packkv_x_pool_stats(pool, &ps) == PACKKV_OK);
    CHECK(ps.bytes_in_use == 0);
    packkv_cache_destroy(c);
    packkv_x_pool_destroy(pool);
  }

  TEST_CASE("import refuses what a CUDA cache cannot hold, importing nothing: a sliding window's export, a longer residual window") {
    Shape s;
    s.seqs = 2;
    std::mt19937 rng(71);
    Cache gpu(make_params(s, 0));
    const size_t row = (size_t)s.heads * s.dim;
    const int32_t id = 0, n = 1000;
    const std::vector<float> k = kv_data(n, row, rng, 2.0f), v = kv_data(n, row, rng, 0.5f);
    // a CPU cache with a sliding window: its export has expired tokens and freed blocks
    Cache win(make_params(s, -1));
    REQUIRE(packkv_x_cache_set_window(win.c, 300) == PACKKV_OK);
    REQUIRE(packkv_cache_append(win.c, 1, &id, &n, k.data(), v.data(), PACKKV_DTYPE_F32, nullptr) == PACKKV_OK);
    const std::vector<uint8_t> xw = export_of(win.c, 0);
    CHECK(packkv_x_cache_import(gpu.c, 0, xw.data(), xw.size()) == PACKKV_ERR_NOT_SUPPORTED);
    CHECK(std::string(packkv_last_error_message()).find("sliding window") != std::string::npos);
    // a CPU cache with a longer residual window than the CUDA cache's ring
    Shape longer = s;
    longer.residual = 512;
    Cache lr(make_params(longer, -1));
    const int32_t m = 600;  // one block flushed, 536 tokens stay in its window
    REQUIRE(packkv_cache_append(lr.c, 1, &id, &m, k.data(), v.data(), PACKKV_DTYPE_F32, nullptr) == PACKKV_OK);
    const std::vector<uint8_t> xl = export_of(lr.c, 0);
    CHECK(packkv_x_cache_import(gpu.c, 0, xl.data(), xl.size()) == PACKKV_ERR_INVALID_ARGUMENT);
    CHECK(std::string(packkv_last_error_message()).find("residual") != std::string::npos);
    int64_t len = -1;
    REQUIRE(packkv_cache_seq_length(gpu.c, 0, &len) == PACKKV_OK);
    CHECK(len == 0);
    CHECK(stats_of(gpu.c, -1).compressed_bytes_reserved == 0);
    // the same exports into a CPU cache of the first shape: the window one imports
    Cache cpu(make_params(s, -1));
    CHECK(packkv_x_cache_import(cpu.c, 0, xw.data(), xw.size()) == PACKKV_OK);
  }
}
