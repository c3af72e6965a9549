// Page pools (packkv_experimental.h): placement without copies, memory held vs used, the
// budget (PACKKV_X_ERR_BUDGET_EXCEEDED changes nothing and says what was needed), the
// free-token estimate, reserve mode, sharing a pool between caches and threads, and the
// pool's own argument checks.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <thread>

#include "api/handles.h"
#include "common/rules.h"
#include "pool_helpers.h"

namespace {

const int H = 1, D = 32;
const size_t kRow = (size_t)H * D;

size_t worst_blob(const packkv_cache_params_t& p) {
  pkt::Cache c(p);
  return packkv::align16(packkv::internal_impl(c).config().shape.max_blob_bytes());
}

int64_t sum_blob_bytes(const packkv_cache_t* c, int n_seqs) {
  int64_t n = 0;
  for (int i = 0; i < n_seqs; ++i)
    for (const auto& b : pkt::blocks_of(c, i)) n += (int64_t)b.size();
  return n;
}

}  // namespace

TEST_CASE("pool: a cache in a shared pool holds the same blocks as one with a private pool") {
  auto k = pkt::kv_data(3000, H, D, 11), v = pkt::kv_data(3000, H, D, 12);
  const packkv_cache_params_t p = pkt::params(H, D, 2);
  pkt::Pool pool(pkt::pool_params(16384));
  pkt::PoolCache a(p, pool);
  pkt::Cache b(p);
  // mixed appends: a prefill, chunks, single tokens, to two sequences
  size_t at = 0;
  for (int n : {700, 1, 1, 64, 513, 1, 200}) {
    for (int s = 0; s < 2; ++s) {
      pkt::append1(a, s, k, v, at, n, kRow);
      pkt::append1(b, s, k, v, at, n, kRow);
    }
    at += n;
  }
  for (int s = 0; s < 2; ++s) {
    CHECK(pkt::blocks_of(a, s) == pkt::blocks_of(b, s));
    const pkt::Decompressed da = pkt::decompress(a, s, kRow), db = pkt::decompress(b, s, kRow);
    CHECK(std::memcmp(da.k.data(), db.k.data(), da.k.size() * 4) == 0);
    CHECK(std::memcmp(da.v.data(), db.v.data(), da.v.size() * 4) == 0);
  }
  // the same bytes but for the alignment padding between blobs (index bytes), which depends
  // on where page breaks fall
  const packkv_cache_stats_t sa = pkt::stats(a), sb = pkt::stats(b);
  CHECK(sa.compressed_bytes_used - sa.index_bytes == sb.compressed_bytes_used - sb.index_bytes);
  CHECK(sa.n_blocks == sb.n_blocks);
}

TEST_CASE("pool: pages held = used bytes + page-end waste + one open page per sequence") {
  auto k = pkt::kv_data(5000, H, D, 21), v = pkt::kv_data(5000, H, D, 22);
  const packkv_cache_params_t p = pkt::params(H, D, 3);
  const size_t worst = worst_blob(p);
  const int64_t page = 4 * 4096;
  REQUIRE(worst * 2 <= (size_t)page);
  pkt::Pool pool(pkt::pool_params(page));
  pkt::PoolCache c(p, pool);
  const int lens[3] = {5000, 1234, 100};  // the last never flushes: no page
  for (int s = 0; s < 3; ++s)
    for (int t = 0; t < lens[s]; t += (s == 0 ? 1 : 97)) pkt::append1(c, s, k, v, t, std::min(s == 0 ? 1 : 97, lens[s] - t), kRow);
  const packkv_x_pool_stats_t ps = pkt::pool_stats(pool);
  const int64_t blobs = sum_blob_bytes(c, 3);
  // independently: pages needed if blobs are packed 16-aligned in order, a new page when one does not fit
  int64_t pages = 0;
  for (int s = 0; s < 3; ++s) {
    size_t fill = 0;
    bool open = false;
    for (const auto& b : pkt::blocks_of(c, s)) {
      size_t at = (fill + 15) / 16 * 16;
      if (!open || at + b.size() > (size_t)page) {
        ++pages;
        at = 0;
        open = true;
      }
      fill = at + b.size();
    }
  }
  CHECK(ps.bytes_in_use == pages * page);
  CHECK(ps.bytes_held == pages * page);
  const int64_t seqs_with_blocks = 2;
  CHECK(ps.bytes_in_use <= blobs + (pages - seqs_with_blocks) * (int64_t)worst + seqs_with_blocks * page);
  const packkv_cache_stats_t st = pkt::stats(c);
  CHECK(st.compressed_bytes_reserved >= ps.bytes_in_use);
  CHECK(st.compressed_bytes_reserved <= ps.bytes_in_use + st.n_blocks * 16 * 2 + 3 * 16 * 4);  // + block tables
  // memory really goes back: removing every sequence unmaps every page
  for (int s = 0; s < 3; ++s) REQUIRE(packkv_cache_remove_seq(c, s) == PACKKV_OK);
  CHECK(pkt::pool_stats(pool).bytes_in_use == 0);
  CHECK(pkt::pool_stats(pool).bytes_held == 0);
}

TEST_CASE("pool: an append past the budget fails with its own status, appends nothing, says what it needed") {
  auto k = pkt::kv_data(4000, H, D, 31), v = pkt::kv_data(4000, H, D, 32);
  const packkv_cache_params_t p = pkt::params(H, D, 2);
  const int64_t page = 8192;
  REQUIRE(worst_blob(p) <= (size_t)page);
  pkt::Pool pool(pkt::pool_params(page, 3 * page + 100));  // 3 whole pages
  pkt::PoolCache c(p, pool);
  CHECK(pkt::pool_stats(pool).budget_bytes == 3 * page);
  // fill to the budget with single tokens on sequence 0
  size_t t = 0;
  packkv_status_t st = PACKKV_OK;
  for (; t < 4000; ++t) {
    const pkt::State before = pkt::state(c, 2, kRow, pool);
    st = pkt::try_append(c, 0, k, v, t, 1, kRow);
    if (st != PACKKV_OK) {
      CHECK(st == PACKKV_X_ERR_BUDGET_EXCEEDED);
      CHECK(packkv_x_last_bytes_needed() == page);
      const std::string msg = packkv_last_error_message();
      CHECK(msg.find("packkv_cache_append") != std::string::npos);
      CHECK(msg.find(std::to_string(page)) != std::string::npos);
      CHECK(pkt::state(c, 2, kRow, pool) == before);
      break;
    }
  }
  REQUIRE(st == PACKKV_X_ERR_BUDGET_EXCEEDED);
  CHECK(pkt::pool_stats(pool).free_bytes == 0);
  CHECK(std::string(packkv_status_string(PACKKV_X_ERR_BUDGET_EXCEEDED)) == "PACKKV_X_ERR_BUDGET_EXCEEDED");
  // a two-sequence append that needs a page for sequence 1 fails for both
  {
    const pkt::State before = pkt::state(c, 2, kRow, pool);
    int32_t ids[2] = {1, 0}, ns[2] = {300, 1};
    std::vector<float> kk(301 * kRow), vv(301 * kRow);
    std::memcpy(kk.data(), k.data(), kk.size() * 4);
    std::memcpy(vv.data(), v.data(), vv.size() * 4);
    CHECK(packkv_cache_append(c, 2, ids, ns, kk.data(), vv.data(), PACKKV_DTYPE_F32, nullptr) ==
          PACKKV_X_ERR_BUDGET_EXCEEDED);
    CHECK(packkv_x_last_bytes_needed() >= page);
    CHECK(pkt::state(c, 2, kRow, pool) == before);
  }
  // the record is cleared by the next call
  CHECK(pkt::seq_len(c, 0) == (int64_t)t);
  CHECK(packkv_x_last_bytes_needed() == 0);
  // appends that need no page still work at a full budget (residual tokens only)
  const packkv_cache_stats_t s0 = pkt::stats(c, 0);
  CHECK(s0.n_residual_tokens == 128 + 63);
  // freeing memory makes room again
  REQUIRE(packkv_x_cache_truncate(c, 0, 64) == PACKKV_OK);
  CHECK(pkt::try_append(c, 0, k, v, 64, 1, kRow) == PACKKV_OK);
}

namespace {

// Host pages from the heap that the "system" refuses after `limit` pages (an mmap failing
// for lack of memory, without exhausting the machine).
class RefusingMemory : public packkv::PageMemory {
 public:
  RefusingMemory(size_t page_bytes, int limit) : page_bytes_(page_bytes), limit_(limit) {}
  uint8_t* map(bool) override {
    if (mapped_ >= limit_) return nullptr;
    ++mapped_;
    return static_cast<uint8_t*>(::operator new(page_bytes_));
  }
  void unmap(uint8_t* page) noexcept override {
    --mapped_;
    ::operator delete(page);
  }
  int64_t bytes_held(int64_t pages_held) const override { return pages_held * (int64_t)page_bytes_; }

 private:
  size_t page_bytes_;
  int limit_, mapped_ = 0;
};

}  // namespace

TEST_CASE("pool: an append the system's memory refuses fails with OUT_OF_HOST_MEMORY, names the call, appends nothing") {
  auto k = pkt::kv_data(2000, H, D, 41), v = pkt::kv_data(2000, H, D, 42);
  const packkv_cache_params_t p = pkt::params(H, D, 2);
  const size_t page = 8192;
  REQUIRE(worst_blob(p) <= page);
  // the handle as packkv_x_pool_create makes it (api/handles.h), over pages refused after 2
  auto* pool = new packkv_x_pool{std::make_shared<packkv::PagePool>(page, 0, false,
                                                                    std::unique_ptr<packkv::PageMemory>(
                                                                        new RefusingMemory(page, 2))),
                                 -1};
  {
    pkt::PoolCache c(p, pool);
    packkv_status_t st = PACKKV_OK;
    size_t t = 0;
    for (; t < 2000 && st == PACKKV_OK; t += 16) {
      const pkt::State before = pkt::state(c, 2, kRow, pool);
      st = pkt::try_append(c, 0, k, v, t, 16, kRow);
      if (st != PACKKV_OK) {
        CHECK(st == PACKKV_ERR_OUT_OF_HOST_MEMORY);
        const std::string msg = packkv_last_error_message();
        CHECK(msg == "packkv_cache_append: the system refused a page of 8192 bytes (mmap); nothing was appended");
        CHECK(pkt::state(c, 2, kRow, pool) == before);
      }
    }
    REQUIRE(st == PACKKV_ERR_OUT_OF_HOST_MEMORY);
    CHECK(pkt::pool_stats(pool).bytes_held == 2 * (int64_t)page);
    // the cache still works: tokens that need no page go in, attention runs
    CHECK(pkt::try_append(c, 1, k, v, 0, 1, kRow) == PACKKV_OK);
  }
  packkv_x_pool_destroy(pool);
}

namespace {

// Blocks of b bytes that fit in one page as cpu/page_table.h places them (16-aligned).
double blocks_per_page(double b, double page) {
  const double step = std::ceil(b / 16.0) * 16.0;
  return b >= page ? 1.0 : std::floor((page - b) / step) + 1.0;
}

}  // namespace

TEST_CASE("pool: tokens that still fit, from the mean block so far packed into pages") {
  auto k = pkt::kv_data(2000, H, D, 41), v = pkt::kv_data(2000, H, D, 42);
  const packkv_cache_params_t p = pkt::params(H, D, 1);
  const int64_t page = 65536;
  int64_t fit = 0;
  {
    pkt::Pool nobudget(pkt::pool_params(page));
    REQUIRE(packkv_x_pool_tokens_fit(nobudget, &fit) == PACKKV_OK);
    CHECK(fit == -1);
  }
  pkt::Pool pool(pkt::pool_params(page, 10 * page));
  REQUIRE(packkv_x_pool_tokens_fit(pool, &fit) == PACKKV_OK);
  CHECK(fit == 0);  // no cache attached
  pkt::PoolCache a(p, pool), b(p, pool);
  const double worst = (double)worst_blob(p);
  REQUIRE(packkv_x_pool_tokens_fit(pool, &fit) == PACKKV_OK);
  CHECK(fit == (int64_t)std::floor(10.0 / (2.0 / (blocks_per_page(worst, page) * 64))));
  pkt::append1(a, 0, k, v, 0, 2000, kRow);
  pkt::append1(b, 0, k, v, 0, 1000, kRow);
  const double ba = std::ceil((double)sum_blob_bytes(a, 1) / (double)pkt::stats(a).n_blocks);
  const double bb = std::ceil((double)sum_blob_bytes(b, 1) / (double)pkt::stats(b).n_blocks);
  const packkv_x_pool_stats_t ps = pkt::pool_stats(pool);
  CHECK(ps.n_caches == 2);
  REQUIRE(packkv_x_pool_tokens_fit(pool, &fit) == PACKKV_OK);
  const double pages_per_token = 1.0 / (blocks_per_page(ba, page) * 64) + 1.0 / (blocks_per_page(bb, page) * 64);
  CHECK(fit == (int64_t)std::floor((double)(ps.free_bytes / page) / pages_per_token));
  CHECK(fit > 0);
}

TEST_CASE("pool: tokens_fit is close to the tokens that really fit, also with about one block per page") {
  // 8 heads x 128 at r_K 0.1 / r_V 0.2: blocks of ~40 KB, one per 64 KiB page (the bytes
  // per token alone overestimated by 29% here); 4 heads: several blocks per page
  for (int heads : {8, 4}) {
    CAPTURE(heads);
    packkv_cache_params_t p = pkt::params(heads, 128, 1);
    p.rel_scale_k = 0.1f;
    p.rel_scale_v = 0.2f;
    p.block_tokens = 64;
    p.residual_tokens = 128;
    p.sink_tokens = 0;
    const size_t row = (size_t)heads * 128;
    auto k = pkt::kv_data(4000, heads, 128, 43), v = pkt::kv_data(4000, heads, 128, 44);
    pkt::Pool pool(pkt::pool_params(65536, (heads == 8 ? 32 : 12) * 65536));
    pkt::PoolCache c(p, pool);
    pkt::append1(c, 0, k, v, 0, 512, row);
    int64_t fit = 0;
    REQUIRE(packkv_x_pool_tokens_fit(pool, &fit) == PACKKV_OK);
    int64_t added = 0;
    while (512 + added + 16 <= 4000 && pkt::try_append(c, 0, k, v, 512 + added, 16, row) == PACKKV_OK) added += 16;
    REQUIRE(512 + added + 16 <= 4000);  // the budget ended it
    MESSAGE("heads " << heads << ": estimate " << fit << ", appended " << added);
    CHECK(std::abs((double)fit - (double)added) <= 0.1 * (double)added);
  }
}

TEST_CASE("pool: reserve mode maps the budget once and keeps it") {
  auto k = pkt::kv_data(1000, H, D, 51), v = pkt::kv_data(1000, H, D, 52);
  const int64_t page = 8192;
  pkt::Pool pool(pkt::pool_params(page, 6 * page, 1));
  CHECK(pkt::pool_stats(pool).bytes_held == 6 * page);
  CHECK(pkt::pool_stats(pool).bytes_in_use == 0);
  {
    pkt::PoolCache c(pkt::params(H, D, 1), pool);
    pkt::append1(c, 0, k, v, 0, 1000, kRow);
    CHECK(pkt::pool_stats(pool).bytes_in_use > 0);
    CHECK(pkt::pool_stats(pool).bytes_held == 6 * page);
  }
  CHECK(pkt::pool_stats(pool).bytes_in_use == 0);
  CHECK(pkt::pool_stats(pool).bytes_held == 6 * page);
  CHECK(pkt::pool_stats(pool).n_caches == 0);
}

TEST_CASE("pool: caches outlive the pool handle, caches of one pool on two threads") {
  auto k = pkt::kv_data(3000, H, D, 61), v = pkt::kv_data(3000, H, D, 62);
  const packkv_cache_params_t p = pkt::params(H, D, 1);
  packkv_x_pool_t* pool = nullptr;
  const packkv_x_pool_params_t pp = pkt::pool_params(8192, 400 * 8192);
  REQUIRE(packkv_x_pool_create(&pp, &pool) == PACKKV_OK);
  packkv_cache_t *a = nullptr, *b = nullptr;
  REQUIRE(packkv_x_cache_create_in_pool(&p, pool, &a) == PACKKV_OK);
  REQUIRE(packkv_x_cache_create_in_pool(&p, pool, &b) == PACKKV_OK);
  packkv_x_pool_destroy(pool);  // the caches keep it alive
  std::thread ta([&] {
    for (size_t t = 0; t < 3000; t += 7) {
      int32_t id = 0, n = (int32_t)std::min<size_t>(7, 3000 - t);
      REQUIRE(packkv_cache_append(a, 1, &id, &n, k.data() + t * kRow, v.data() + t * kRow, PACKKV_DTYPE_F32, nullptr) ==
              PACKKV_OK);
    }
  });
  std::thread tb([&] {
    for (int round = 0; round < 3; ++round) {
      REQUIRE(packkv_cache_remove_seq(b, 0) == PACKKV_OK);
      for (size_t t = 0; t < 3000; t += 13) {
        int32_t id = 0, n = (int32_t)std::min<size_t>(13, 3000 - t);
        REQUIRE(packkv_cache_append(b, 1, &id, &n, k.data() + t * kRow, v.data() + t * kRow, PACKKV_DTYPE_F32,
                                    nullptr) == PACKKV_OK);
      }
    }
  });
  ta.join();
  tb.join();
  pkt::Cache ref(p);
  pkt::append1(ref, 0, k, v, 0, 3000, kRow);
  CHECK(pkt::blocks_of(a, 0) == pkt::blocks_of(ref, 0));
  CHECK(pkt::blocks_of(b, 0) == pkt::blocks_of(ref, 0));
  packkv_cache_destroy(a);
  packkv_cache_destroy(b);  // frees the pool (ASan: no leak, no use after free)
}

TEST_CASE("pool: bad pool arguments and refused caches") {
  packkv_x_pool_t* pool = reinterpret_cast<packkv_x_pool_t*>(1);
  auto expect = [&](packkv_x_pool_params_t pp, packkv_status_t code, const char* word) {
    pool = reinterpret_cast<packkv_x_pool_t*>(1);
    CHECK(packkv_x_pool_create(&pp, &pool) == code);
    CHECK(pool == nullptr);
    const std::string msg = packkv_last_error_message();
    CHECK(msg.find("packkv_x_pool_create") != std::string::npos);
    CHECK_MESSAGE(msg.find(word) != std::string::npos, msg);
  };
  expect(pkt::pool_params(4097), PACKKV_ERR_INVALID_ARGUMENT, "page_bytes");
  expect(pkt::pool_params(0), PACKKV_ERR_INVALID_ARGUMENT, "page_bytes");
  expect(pkt::pool_params(-4096), PACKKV_ERR_INVALID_ARGUMENT, "page_bytes");
  expect(pkt::pool_params((int64_t)1 << 32), PACKKV_ERR_INVALID_ARGUMENT, "page_bytes");
  expect(pkt::pool_params(8192, 4096), PACKKV_ERR_INVALID_ARGUMENT, "budget_bytes");
  expect(pkt::pool_params(8192, -1), PACKKV_ERR_INVALID_ARGUMENT, "budget_bytes");
  expect(pkt::pool_params(8192, 0, 1), PACKKV_ERR_INVALID_ARGUMENT, "reserve");
  expect(pkt::pool_params(8192, 8192, 2), PACKKV_ERR_INVALID_ARGUMENT, "reserve");
  packkv_x_pool_params_t dev = pkt::pool_params(8192);
  dev.device = 0;
  if (!packkv_has_cuda()) expect(dev, PACKKV_ERR_NOT_SUPPORTED, "device");  // device pools: the GPU suite
  packkv_x_pool_params_t old = pkt::pool_params(8192);
  old.struct_size = 16;
  expect(old, PACKKV_ERR_VERSION_MISMATCH, "struct_size");
  CHECK(packkv_x_pool_create(nullptr, &pool) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_x_pool_params_init(nullptr, sizeof(packkv_x_pool_params_t)) == PACKKV_ERR_INVALID_ARGUMENT);
  packkv_x_pool_params_t pp;
  CHECK(packkv_x_pool_params_init(&pp, 8) == PACKKV_ERR_VERSION_MISMATCH);
  packkv_x_pool_destroy(nullptr);

  // pages too small for the cache's largest block; device mismatch; NULL pool
  const packkv_cache_params_t p = pkt::params(8, 128, 1);
  int64_t need = 0;
  REQUIRE(packkv_x_pool_page_bytes_for(&p, &need) == PACKKV_OK);
  CHECK(need % 65536 == 0);
  pkt::Pool small(pkt::pool_params(16384));
  packkv_cache_t* c = reinterpret_cast<packkv_cache_t*>(1);
  CHECK(packkv_x_cache_create_in_pool(&p, small, &c) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(c == nullptr);
  CHECK(std::string(packkv_last_error_message()).find("packkv_x_pool_page_bytes_for") != std::string::npos);
  CHECK(pkt::pool_stats(small).n_caches == 0);
  CHECK(packkv_x_cache_create_in_pool(&p, nullptr, &c) == PACKKV_ERR_INVALID_ARGUMENT);
  packkv_cache_params_t gpu = p;
  gpu.device = 0;
  pkt::Pool big(pkt::pool_params(need));
  const packkv_status_t st = packkv_x_cache_create_in_pool(&gpu, big, &c);
  CHECK((st == PACKKV_ERR_NOT_SUPPORTED));
  CHECK(c == nullptr);
  packkv_x_pool_stats_t s;
  s.struct_size = 8;
  CHECK(packkv_x_pool_stats(big, &s) == PACKKV_ERR_VERSION_MISMATCH);
  CHECK(packkv_x_pool_stats(nullptr, &s) == PACKKV_ERR_INVALID_ARGUMENT);
  int64_t fit;
  CHECK(packkv_x_pool_tokens_fit(nullptr, &fit) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_x_pool_tokens_fit(big, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
}

TEST_CASE("pool: page_bytes_for on a device tiles the allocator's 2 MiB granules") {
  // Host: 16 largest-possible blobs rounded up to 64 KiB. Device: the smallest power of two
  // >= that (up to 2 MiB) or multiple of 2 MiB, so that cudaMalloc slabs hold whole pages.
  const int64_t granule = int64_t{2} << 20;
  for (int heads : {1, 3, 8, 32})
    for (int dim : {64, 128, 256}) {
      CAPTURE(heads);
      CAPTURE(dim);
      packkv_cache_params_t p, d;  // the library's defaults (its default codes)
      REQUIRE(packkv_cache_params_init(&p, sizeof p) == PACKKV_OK);
      REQUIRE(packkv_cache_params_init(&d, sizeof d) == PACKKV_OK);
      p.n_kv_heads = d.n_kv_heads = heads;
      p.head_dim = d.head_dim = dim;
      d.device = 0;
      int64_t host = 0, dev = 0;
      REQUIRE(packkv_x_pool_page_bytes_for(&p, &host) == PACKKV_OK);
      REQUIRE(packkv_x_pool_page_bytes_for(&d, &dev) == PACKKV_OK);
      CHECK(host % 65536 == 0);
      CHECK(dev >= host);
      if (dev <= granule) {
        CHECK((dev & (dev - 1)) == 0);  // a power of two: it divides 2 MiB
        CHECK(dev < 2 * host);          // the smallest one
      } else {
        CHECK(dev % granule == 0);
        CHECK(dev - host < granule);
      }
    }
  // the default shape (8 x 128, default codes): 1.3125 MiB on the host (packkv_experimental.h), 2 MiB on a device
  packkv_cache_params_t p;
  REQUIRE(packkv_cache_params_init(&p, sizeof p) == PACKKV_OK);
  p.n_kv_heads = 8;
  p.head_dim = 128;
  int64_t host = 0, dev = 0;
  REQUIRE(packkv_x_pool_page_bytes_for(&p, &host) == PACKKV_OK);
  p.device = 0;
  REQUIRE(packkv_x_pool_page_bytes_for(&p, &dev) == PACKKV_OK);
  CHECK(host == 1376256);
  CHECK(dev == granule);
}

TEST_CASE("pool: a shape whose pages would pass 2^31 bytes is refused by page_bytes_for and create alike") {
  // fresh8 F2: page_bytes_for returned 2349072384 and create then refused a page_bytes the
  // user never set. 1024 KV heads x 256, blocks of 256 tokens, 8-bit codes: one largest
  // block alone is 1024 * 256 * 256 * 2 (K and V) bytes = 128 MiB, 16 of them 2 GiB + fields.
  packkv_cache_params_t p = pkt::params(1024, 256, 1);
  p.block_tokens = 256;
  p.residual_tokens = 256;
  p.bits_k = p.bits_v = 8;
  int64_t page = -7;
  for (int device : {-1, 0}) {
    CAPTURE(device);
    p.device = device;
    CHECK(packkv_x_pool_page_bytes_for(&p, &page) == PACKKV_ERR_INVALID_ARGUMENT);
    CHECK(std::string(packkv_last_error_message()).find("passes the largest page (2^31 bytes)") != std::string::npos);
    CHECK(page == -7);
  }
  p.device = -1;
  packkv_cache_t* c = reinterpret_cast<packkv_cache_t*>(1);
  CHECK(packkv_cache_create(&p, &c) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(c == nullptr);
  CHECK(std::string(packkv_last_error_message()).find("passes the largest page (2^31 bytes)") != std::string::npos);
}

TEST_CASE("pool: parameter errors of page_bytes_for and create_in_pool name the function called") {
  // fresh6 item 1: both reported "packkv_cache_create: ..." (packkv.h: the message names
  // the function that was called).
  packkv_cache_params_t p = pkt::params(2, 64, 1);
  p.head_dim = 40;
  int64_t pb = -7;
  CHECK(packkv_x_pool_page_bytes_for(&p, &pb) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(std::string(packkv_last_error_message()) ==
        "packkv_x_pool_page_bytes_for: params.head_dim must be a multiple of 16 in [32, 256], got 40");
  CHECK(pb == -7);
  CHECK(packkv_x_pool_page_bytes_for(nullptr, &pb) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(std::string(packkv_last_error_message()) == "packkv_x_pool_page_bytes_for: params is NULL");
  pkt::Pool pool(pkt::pool_params(1 << 20));
  packkv_cache_t* c = reinterpret_cast<packkv_cache_t*>(1);
  CHECK(packkv_x_cache_create_in_pool(&p, pool, &c) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(c == nullptr);
  CHECK(std::string(packkv_last_error_message()) ==
        "packkv_x_cache_create_in_pool: params.head_dim must be a multiple of 16 in [32, 256], got 40");
  CHECK(packkv_x_cache_create_in_pool(nullptr, pool, &c) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(std::string(packkv_last_error_message()) == "packkv_x_cache_create_in_pool: params is NULL");
  p = pkt::params(2, 64, 1);
  p.struct_size = 16;
  CHECK(packkv_x_cache_create_in_pool(&p, pool, &c) == PACKKV_ERR_VERSION_MISMATCH);
  CHECK(std::string(packkv_last_error_message()).rfind("packkv_x_cache_create_in_pool: params.struct_size 16", 0) == 0);
  // packkv_cache_create keeps its own name, for the params and for the backend's refusal
  p = pkt::params(2, 64, 1);
  p.head_dim = 40;
  CHECK(packkv_cache_create(&p, &c) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(std::string(packkv_last_error_message()) ==
        "packkv_cache_create: params.head_dim must be a multiple of 16 in [32, 256], got 40");
  if (!packkv_has_cuda()) {
    p = pkt::params(2, 64, 1);
    p.device = 0;
    CHECK(packkv_cache_create(&p, &c) == PACKKV_ERR_NOT_SUPPORTED);
    // a build without CUDA says so; a CUDA build on a machine without a GPU (CI) says no device is visible
    const bool built_with_cuda = std::string(packkv_build_info()).find("; no cuda") == std::string::npos;
    CHECK(std::string(packkv_last_error_message()) ==
          (built_with_cuda ? std::string("packkv_cache_create: params.device >= 0 but no CUDA device is visible")
                           : std::string("packkv_cache_create: params.device >= 0 needs the CUDA backend, which "
                                         "this build does not contain (configure with PACKKV_ENABLE_CUDA=ON)")));
    packkv_cache_params_t q = pkt::params(2, 64, 1);
    q.device = 0;
    pkt::Pool dev_mismatch(pkt::pool_params(1 << 20));  // a host pool for a device cache
    CHECK(packkv_x_cache_create_in_pool(&q, dev_mismatch, &c) == PACKKV_ERR_NOT_SUPPORTED);
    CHECK(std::string(packkv_last_error_message()).rfind("packkv_x_cache_create_in_pool: the pool's pages are on", 0) == 0);
  }
}
