// The objects behind the opaque handles of the C API: packkv_cache_t (a backend) and
// packkv_x_pool_t (a shared page pool, packkv_experimental.h).
#ifndef PACKKV_API_HANDLES_H
#define PACKKV_API_HANDLES_H

#include <memory>

#include "api/cache_impl.h"
#include "api/config.h"
#include "pool/page_pool.h"

struct packkv_cache {
  std::unique_ptr<packkv::CacheImpl> impl;
};

// The pool handle holds one reference; every cache made in it holds another, so the
// pool lives until its handle is destroyed and its last cache is gone.
struct packkv_x_pool {
  std::shared_ptr<packkv::PagePool> pool;
  int device = -1;
};

namespace packkv {

// The page size of a private pool, and the smallest page a shared pool needs, for a
// cache of this shape: room for kBlobsPerPage worst-case blobs (pool/page_size.h).
size_t page_bytes_for(const fmt::Shape& shape);

// A new cache handle: in `pool` when given (its device must be the cache's: host pages
// for a CPU cache, that device's for a CUDA cache; else NOT_SUPPORTED), else with a
// private pool of page_bytes_for(config.shape) bytes per page and no budget. Throws.
packkv_cache* new_cache_handle(const Config& config, const packkv_x_pool* pool);

}  // namespace packkv

#endif  // PACKKV_API_HANDLES_H
