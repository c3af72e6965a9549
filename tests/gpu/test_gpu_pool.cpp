// GPU suite, issue 16: CUDA caches in device pools (pages from a shared pool with a
// budget). Each case compares with the CPU backend (gpu_pair.h: identical blocks and
// decompression, attention within 1e-5) and checks that a failing call changes nothing.
#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gpu_pair.h"

namespace {

using namespace gpu_test;

packkv_x_pool_t* device_pool(int64_t page_bytes, int64_t budget, int reserve) {
  packkv_x_pool_params_t pp;
  REQUIRE(packkv_x_pool_params_init(&pp, sizeof pp) == PACKKV_OK);
  pp.device = 0;
  pp.page_bytes = page_bytes;
  pp.budget_bytes = budget;
  pp.reserve = reserve;
  packkv_x_pool_t* pool = nullptr;
  const packkv_status_t st = packkv_x_pool_create(&pp, &pool);
  INFO(packkv_last_error_message());
  REQUIRE(st == PACKKV_OK);
  return pool;
}

packkv_cache_t* create(const Shape& s, int device) {
  const packkv_cache_params_t prm = make_params(s, device);
  packkv_cache_t* c = nullptr;
  const packkv_status_t st = packkv_cache_create(&prm, &c);
  INFO(packkv_last_error_message());
  REQUIRE(st == PACKKV_OK);
  return c;
}

packkv_cache_t* in_pool(const Shape& s, int device, packkv_x_pool_t* pool) {
  const packkv_cache_params_t prm = make_params(s, device);
  packkv_cache_t* c = nullptr;
  const packkv_status_t st = packkv_x_cache_create_in_pool(&prm, pool, &c);
  INFO(packkv_last_error_message());
  REQUIRE(st == PACKKV_OK);
  return c;
}

// Largest blob of a cache with shape s, 16-aligned (format/shape.h).
size_t worst_blob(const Shape& s) {
  Cache c(make_params(s, -1));
  return packkv::align16(packkv::internal_impl(c.c).config().shape.max_blob_bytes());
}

// The smallest page (a multiple of 4096) holding `blobs` largest blobs and the 64-byte
// over-read slack of a CUDA page: small pages, so that sequences change page often.
int64_t small_page(const Shape& s, int blobs) {
  return (int64_t)((blobs * worst_blob(s) + 64 + 4095) / 4096 * 4096);
}

packkv_x_pool_stats_t pool_stats(packkv_x_pool_t* pool) {
  packkv_x_pool_stats_t ps;
  std::memset(&ps, 0, sizeof ps);
  ps.struct_size = sizeof ps;
  REQUIRE(packkv_x_pool_stats(pool, &ps) == PACKKV_OK);
  return ps;
}

// Reserved bytes of sequence q of a CUDA cache against what its blobs take: its pages
// hold the 16-aligned blobs, one partly filled page, and per closed page a tail where the
// next blob did not fit (< one largest blob) plus the 64-byte slack.
void check_reserved(packkv_cache_t* gpu, int q, int64_t page, size_t worst) {
  const packkv::CacheImpl& gi = packkv::internal_impl(gpu);
  int64_t blobs = 0;
  for (int64_t b = 0; b < gi.n_blocks(q); ++b) blobs += (int64_t)packkv::align16(gi.block_bytes(q, b).size());
  const packkv_cache_stats_t g = stats_of(gpu, q);
  const int64_t pages_bytes = g.compressed_bytes_reserved - 8 * g.n_blocks;  // minus the block table
  REQUIRE(pages_bytes % page == 0);
  const int64_t pages = pages_bytes / page;
  CAPTURE(q);
  CAPTURE(pages);
  CAPTURE(blobs);
  CHECK(pages_bytes >= blobs);
  if (gi.n_blocks(q) == 0) CHECK(pages == 0);
  if (pages > 0) CHECK(pages_bytes <= blobs + page + (pages - 1) * (int64_t)(worst + 64));
}

// Appends n tokens (f32, K spread 2, V spread 0.5) to sequence `seq` of a CUDA cache only;
// returns the status.
packkv_status_t gpu_append(packkv_cache_t* c, const Shape& s, int32_t seq, int32_t n, std::mt19937& rng,
                           std::vector<float>* k_out = nullptr, std::vector<float>* v_out = nullptr) {
  const size_t row = (size_t)s.heads * s.dim;
  std::vector<float> k = kv_data(n, row, rng, 2.0f), v = kv_data(n, row, rng, 0.5f);
  DBuf dk(k.size() * 4), dv(v.size() * 4);
  to_dev(dk, k);
  to_dev(dv, v);
  const packkv_status_t st = packkv_cache_append(c, 1, &seq, &n, dk.p, dv.p, PACKKV_DTYPE_F32, nullptr);
  if (k_out) *k_out = k;
  if (v_out) *v_out = v;
  return st;
}

}  // namespace

TEST_SUITE("gpu") {
  TEST_CASE("device pool: two caches (layers) share one pool of small pages: identical to the CPU and reserved = used + one page per sequence + page tails") {
    Shape s;
    s.seqs = 3;
    const size_t worst = worst_blob(s);
    const int64_t page = small_page(s, 3);
    packkv_x_pool_t* pool = device_pool(page, 0, 0);
    std::mt19937 rng(161);
    {
      Pair l0(s, create(s, -1), in_pool(s, 0, pool)), l1(s, create(s, -1), in_pool(s, 0, pool));
      CHECK(pool_stats(pool).n_caches == 2);
      for (Pair* p : {&l0, &l1}) {
        p->append({0, 1, 2}, {1000, 37, 700}, rng);  // prefills: several pages at once
        p->check_all(rng);
      }
      for (int step = 0; step < 200; ++step)  // single tokens: a flush every 64, pages change
        for (Pair* p : {&l0, &l1}) p->append({0, 1, 2}, {1, 1, 1}, rng);
      for (Pair* p : {&l1, &l0}) p->append({2, 0}, {513, 129}, rng);  // chunks
      for (Pair* p : {&l0, &l1}) {
        p->check_all(rng);
        for (int q = 0; q < s.seqs; ++q) check_reserved(p->gpu.c, q, page, worst);
      }
      // pool accounting: every page in use belongs to one sequence of one cache
      int64_t pages = 0;
      for (Pair* p : {&l0, &l1}) {
        const packkv_cache_stats_t g = stats_of(p->gpu.c, -1);
        pages += (g.compressed_bytes_reserved - 8 * g.n_blocks) / page;
      }
      const packkv_x_pool_stats_t ps = pool_stats(pool);
      CHECK(ps.bytes_in_use == pages * page);
      CHECK(ps.bytes_held >= ps.bytes_in_use);
      CHECK(ps.budget_bytes == 0);
      CHECK(ps.free_bytes == -1);
      // remove_seq gives the pages back; the id is reusable
      REQUIRE(packkv_cache_remove_seq(l0.cpu.c, 0) == PACKKV_OK);
      REQUIRE(packkv_cache_remove_seq(l0.gpu.c, 0) == PACKKV_OK);
      CHECK(pool_stats(pool).bytes_in_use < ps.bytes_in_use);
      l0.append({0}, {300}, rng);
      l0.check_all(rng);
    }
    const packkv_x_pool_stats_t ps = pool_stats(pool);
    CHECK(ps.n_caches == 0);
    CHECK(ps.bytes_in_use == 0);
    packkv_x_pool_destroy(pool);
  }

  TEST_CASE("a private pool (packkv_cache_create): reserved within one page per sequence of the blobs, 1 and 64 sequences") {
    for (int seqs : {1, 64}) {
      CAPTURE(seqs);
      Shape s;
      s.seqs = seqs;
      s.heads = 4;
      s.dim = 128;
      std::mt19937 rng(7 + seqs);
      Pair p(s);
      std::vector<int32_t> ids, counts;
      for (int q = 0; q < seqs; ++q) {
        ids.push_back(q);
        counts.push_back(seqs == 1 ? 5000 : 100 + 37 * q);
      }
      p.append(ids, counts, rng);
      for (int step = 0; step < 70; ++step) p.append(ids, std::vector<int32_t>(ids.size(), 1), rng);
      p.check_bytes_and_stats();
      p.check_decompress();
      int64_t page = 0;
      const packkv_cache_params_t prm = make_params(s, 0);
      REQUIRE(packkv_x_pool_page_bytes_for(&prm, &page) == PACKKV_OK);
      for (int q = 0; q < seqs; ++q) check_reserved(p.gpu.c, q, page, worst_blob(s));
    }
  }

  TEST_CASE("a budget: the append that does not fit fails with PACKKV_X_ERR_BUDGET_EXCEEDED, appends nothing, says what it needed, free bytes and tokens_fit, remove gives back") {
    for (int reserve : {0, 1}) {
      CAPTURE(reserve);
      Shape s;
      s.seqs = 2;
      const int64_t page = small_page(s, 2);
      const int64_t budget = 4 * page + 100;  // 4 whole pages
      packkv_x_pool_t* pool = device_pool(page, budget, reserve);
      packkv_x_pool_stats_t ps = pool_stats(pool);
      CHECK(ps.budget_bytes == 4 * page);
      CHECK(ps.free_bytes == 4 * page);
      CHECK(ps.bytes_held == (reserve ? (4 * page + (2 << 20) - 1) / (2 << 20) * (2 << 20) : 0));
      int64_t fit0 = -1;
      REQUIRE(packkv_x_pool_tokens_fit(pool, &fit0) == PACKKV_OK);
      CHECK(fit0 == 0);  // no cache attached yet
      std::mt19937 rng(5);
      {
        Pair p(s, create(s, -1), in_pool(s, 0, pool));
        REQUIRE(packkv_x_pool_tokens_fit(pool, &fit0) == PACKKV_OK);
        CHECK(fit0 > 0);  // at the cache's largest block until it has blocks
        // grow sequence 0 by 64-token chunks until the pool refuses
        int refused = 0;
        for (int i = 0; i < 200 && !refused; ++i) {
          std::vector<float> k, v;
          const int64_t len0 = p.len(0);
          const packkv_cache_stats_t before = stats_of(p.gpu.c, -1);
          const packkv_status_t st = gpu_append(p.gpu.c, s, 0, 64, rng, &k, &v);
          if (st == PACKKV_X_ERR_BUDGET_EXCEEDED) {
            refused = 1;
            const int64_t need = packkv_x_last_bytes_needed();
            CHECK(std::string(packkv_last_error_message()).find("budget") != std::string::npos);
            CHECK(need > 0);
            CHECK(need % page == 0);
            CHECK(p.len(0) == len0);  // nothing appended
            const packkv_cache_stats_t after = stats_of(p.gpu.c, -1);
            CHECK(after.n_tokens == before.n_tokens);
            CHECK(after.n_blocks == before.n_blocks);
            CHECK(after.compressed_bytes_used == before.compressed_bytes_used);
            break;
          }
          INFO(packkv_last_error_message());
          REQUIRE(st == PACKKV_OK);
          REQUIRE(packkv_cache_sync(p.gpu.c) == PACKKV_OK);
          // the same tokens into the CPU reference
          const int32_t id = 0, n = 64;
          REQUIRE(packkv_cache_append(p.cpu.c, 1, &id, &n, k.data(), v.data(), PACKKV_DTYPE_F32, nullptr) ==
                  PACKKV_OK);
          int64_t fit = -1;
          REQUIRE(packkv_x_pool_tokens_fit(pool, &fit) == PACKKV_OK);
          CHECK(fit >= 0);
          ps = pool_stats(pool);
          CHECK(ps.free_bytes == ps.budget_bytes - ps.bytes_in_use);
          CHECK(ps.bytes_in_use <= ps.budget_bytes);
        }
        REQUIRE(refused == 1);
        p.check_all(rng);  // the refused append left both caches equal
        // the other sequence cannot flush either, but tokens that stay in the window fit
        const int32_t id1 = 1, n1 = 100;
        std::vector<float> k((size_t)n1 * s.heads * s.dim, 0.25f);
        DBuf dk(k.size() * 4);
        to_dev(dk, k);
        REQUIRE(packkv_cache_append(p.gpu.c, 1, &id1, &n1, dk.p, dk.p, PACKKV_DTYPE_F32, nullptr) == PACKKV_OK);
        REQUIRE(packkv_cache_append(p.cpu.c, 1, &id1, &n1, k.data(), k.data(), PACKKV_DTYPE_F32, nullptr) ==
                PACKKV_OK);
        REQUIRE(packkv_cache_sync(p.gpu.c) == PACKKV_OK);
        p.check_all(rng);
        // removing sequence 0 frees its pages: the budget is free again
        REQUIRE(packkv_cache_remove_seq(p.gpu.c, 0) == PACKKV_OK);
        REQUIRE(packkv_cache_remove_seq(p.cpu.c, 0) == PACKKV_OK);
        ps = pool_stats(pool);
        CHECK(ps.bytes_in_use == 0);
        CHECK(ps.free_bytes == ps.budget_bytes);
        p.append({0}, {200}, rng);
        p.check_all(rng);
      }
      packkv_x_pool_destroy(pool);
    }
  }

  TEST_CASE("pool misuse is refused and creates nothing: CPU cache in a device pool, CUDA cache in a host pool, pages too small, bad device") {
    Shape s;
    packkv_x_pool_t* dpool = device_pool(1 << 20, 0, 0);
    packkv_cache_t* c = nullptr;
    packkv_cache_params_t prm = make_params(s, -1);
    CHECK(packkv_x_cache_create_in_pool(&prm, dpool, &c) == PACKKV_ERR_NOT_SUPPORTED);
    CHECK(c == nullptr);
    packkv_x_pool_params_t pp;
    REQUIRE(packkv_x_pool_params_init(&pp, sizeof pp) == PACKKV_OK);
    packkv_x_pool_t* hpool = nullptr;
    REQUIRE(packkv_x_pool_create(&pp, &hpool) == PACKKV_OK);
    prm = make_params(s, 0);
    CHECK(packkv_x_cache_create_in_pool(&prm, hpool, &c) == PACKKV_ERR_NOT_SUPPORTED);
    CHECK(c == nullptr);
    packkv_x_pool_destroy(hpool);
    packkv_x_pool_destroy(dpool);
    // pages smaller than the largest blob (4096 bytes), or holding it but not the 64-byte slack
    packkv_x_pool_t* tiny = device_pool(4096, 0, 0);
    CHECK(packkv_x_cache_create_in_pool(&prm, tiny, &c) == PACKKV_ERR_INVALID_ARGUMENT);
    CHECK(c == nullptr);
    CHECK(std::string(packkv_last_error_message()).find("packkv_x_pool_page_bytes_for") != std::string::npos);
    packkv_x_pool_destroy(tiny);
    const int64_t tight = (int64_t)((worst_blob(s) + 4095) / 4096 * 4096);
    if ((size_t)tight < worst_blob(s) + 64) {
      packkv_x_pool_t* small = device_pool(tight, 0, 0);
      CHECK(packkv_x_cache_create_in_pool(&prm, small, &c) == PACKKV_ERR_INVALID_ARGUMENT);
      CHECK(c == nullptr);
      packkv_x_pool_destroy(small);
    }
    int n = 0;
    CUDA_OK(cudaGetDeviceCount(&n));
    pp.device = n;  // one past the last device
    packkv_x_pool_t* none = nullptr;
    CHECK(packkv_x_pool_create(&pp, &none) == PACKKV_ERR_INVALID_ARGUMENT);
    CHECK(none == nullptr);
    pp.device = 0;
    pp.reserve = 1;  // reserve without a budget
    CHECK(packkv_x_pool_create(&pp, &none) == PACKKV_ERR_INVALID_ARGUMENT);
    CHECK(none == nullptr);
  }
}
