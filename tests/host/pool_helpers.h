// Helpers of the pool and sequence-operation tests: pools, snapshots of a cache (and of
// its pool) for "a failed call changes nothing", blobs through the internal access.
#ifndef PACKKV_TESTS_POOL_HELPERS_H
#define PACKKV_TESTS_POOL_HELPERS_H

#define PACKKV_EXPERIMENTAL_API
#include "packkv/packkv_experimental.h"

#include <cstring>
#include <vector>

#include "api/cache_impl.h"
#include "api/internal_access.h"
#include "helpers.h"

namespace pkt {

inline packkv_x_pool_params_t pool_params(int64_t page_bytes, int64_t budget_bytes = 0, int reserve = 0) {
  packkv_x_pool_params_t p;
  REQUIRE(packkv_x_pool_params_init(&p, sizeof p) == PACKKV_OK);
  p.page_bytes = page_bytes;
  p.budget_bytes = budget_bytes;
  p.reserve = reserve;
  return p;
}

struct Pool {
  packkv_x_pool_t* p = nullptr;
  explicit Pool(const packkv_x_pool_params_t& params) {
    const packkv_status_t st = packkv_x_pool_create(&params, &p);
    INFO(packkv_last_error_message());
    REQUIRE(st == PACKKV_OK);
  }
  ~Pool() { packkv_x_pool_destroy(p); }
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  operator packkv_x_pool_t*() const { return p; }
};

struct PoolCache {
  packkv_cache_t* c = nullptr;
  PoolCache(const packkv_cache_params_t& params, packkv_x_pool_t* pool) {
    const packkv_status_t st = packkv_x_cache_create_in_pool(&params, pool, &c);
    INFO(packkv_last_error_message());
    REQUIRE(st == PACKKV_OK);
  }
  ~PoolCache() { packkv_cache_destroy(c); }
  PoolCache(const PoolCache&) = delete;
  PoolCache& operator=(const PoolCache&) = delete;
  operator packkv_cache_t*() const { return c; }
};

inline packkv_x_pool_stats_t pool_stats(const packkv_x_pool_t* p) {
  packkv_x_pool_stats_t s;
  std::memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  REQUIRE(packkv_x_pool_stats(p, &s) == PACKKV_OK);
  return s;
}

inline std::vector<std::vector<uint8_t>> blocks_of(const packkv_cache_t* c, int seq) {
  const packkv::CacheImpl& impl = packkv::internal_impl(c);
  std::vector<std::vector<uint8_t>> out;
  for (int64_t b = 0; b < impl.n_blocks(seq); ++b) out.push_back(impl.block_bytes(seq, b));
  return out;
}

// Everything observable of a cache (all its sequences) and optionally its pool.
struct State {
  packkv_cache_stats_t all;
  std::vector<packkv_cache_stats_t> per_seq;
  std::vector<Decompressed> data;
  std::vector<std::vector<std::vector<uint8_t>>> blocks;
  packkv_x_pool_stats_t pool;
  bool operator==(const State& o) const {
    if (std::memcmp(&all, &o.all, sizeof all) != 0 || std::memcmp(&pool, &o.pool, sizeof pool) != 0) return false;
    if (blocks != o.blocks || per_seq.size() != o.per_seq.size()) return false;
    for (size_t i = 0; i < per_seq.size(); ++i) {
      if (std::memcmp(&per_seq[i], &o.per_seq[i], sizeof per_seq[i]) != 0) return false;
      if (data[i].k.size() != o.data[i].k.size() || data[i].v.size() != o.data[i].v.size()) return false;
      if (!data[i].k.empty() && std::memcmp(data[i].k.data(), o.data[i].k.data(), data[i].k.size() * 4) != 0) return false;
      if (!data[i].v.empty() && std::memcmp(data[i].v.data(), o.data[i].v.data(), data[i].v.size() * 4) != 0) return false;
    }
    return true;
  }
};

inline State state(const packkv_cache_t* c, int n_seqs, size_t row, const packkv_x_pool_t* pool = nullptr) {
  State s;
  s.all = stats(c);
  for (int i = 0; i < n_seqs; ++i) {
    s.per_seq.push_back(stats(c, i));
    s.data.push_back(decompress(c, i, row));
    s.blocks.push_back(blocks_of(c, i));
  }
  std::memset(&s.pool, 0, sizeof s.pool);
  if (pool) s.pool = pool_stats(pool);
  return s;
}

inline packkv_status_t try_append(packkv_cache_t* c, int seq, const std::vector<float>& k, const std::vector<float>& v,
                                  size_t first_token, int n_tokens, size_t row) {
  int32_t id = seq, n = n_tokens;
  return packkv_cache_append(c, 1, &id, &n, k.data() + first_token * row, v.data() + first_token * row,
                             PACKKV_DTYPE_F32, nullptr);
}

}  // namespace pkt

#endif  // PACKKV_TESTS_POOL_HELPERS_H
