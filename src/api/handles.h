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

// The page size of a private pool, and the recommended page of a shared pool, for a cache
// of this shape on `device` (-1: host): room for PACKKV_X_BLOCKS_PER_PAGE worst-case blobs,
// rounded up to 64 KiB on the host; on a device further up to a power of two (<= 2 MiB) or
// a multiple of 2 MiB, so that pages tile cudaMalloc's granules.
size_t page_bytes_for(const fmt::Shape& shape, int device);

// A new cache handle: in `pool` when given (its device must be the cache's: host pages
// for a CPU cache, that device's for a CUDA cache; else NOT_SUPPORTED), else with a
// private pool of page_bytes_for(config.shape) bytes per page and no budget. Throws.
packkv_cache* new_cache_handle(const Config& config, const packkv_x_pool* pool);

}  // namespace packkv

#endif  // PACKKV_API_HANDLES_H
