// The objects behind the handles (api/handles.h): making a cache handle with its pool.
#include <memory>
#include <string>

#include "api/handles.h"
#include "common/error.h"
#include "common/rules.h"
#define PACKKV_EXPERIMENTAL_API
#include "packkv/packkv_experimental.h"

namespace packkv {

size_t page_bytes_for(const fmt::Shape& shape, int device) {
  const size_t block = align16(shape.max_blob_bytes());
  const size_t unit = (size_t)64 << 10;
  const size_t host = (PACKKV_X_BLOCKS_PER_PAGE * block + unit - 1) / unit * unit;
  const size_t largest = (size_t)1 << 31;  // pool pages (pool/page_pool.cpp)
  if (host > largest)  // (a device page, host rounded up to 2 MiB multiples, is then <= 2^31 too)
    fail(PACKKV_ERR_INVALID_ARGUMENT,
         "the shape's largest block (" + std::to_string(block) + " bytes) x " +
             std::to_string(PACKKV_X_BLOCKS_PER_PAGE) + " passes the largest page (2^31 bytes): fewer KV heads, a "
             "smaller head_dim or fewer block_tokens");
  if (device < 0) return host;
  // Device pages tile cudaMalloc's 2 MiB granules exactly (cuda/device_pages.cu): a power
  // of two up to 2 MiB, else a multiple of 2 MiB (the slab waste of bench/RESULTS.md "Paged
  // device pool": up to 2 pages per 4 MiB slab of 1.3 MiB pages).
  const size_t granule = (size_t)2 << 20;
  if (host > granule) return (host + granule - 1) / granule * granule;
  size_t p = unit;
  while (p < host) p *= 2;
  return p;
}

packkv_cache* new_cache_handle(const Config& config, const packkv_x_pool* pool) {
  std::unique_ptr<packkv_cache> cache(new packkv_cache);
  if (pool != nullptr && pool->device != config.device)
    fail(PACKKV_ERR_NOT_SUPPORTED, "the pool's pages are on " +
                                       (pool->device < 0 ? std::string("the host (device -1)")
                                                         : "device " + std::to_string(pool->device)) +
                                       " but params->device is " + std::to_string(config.device));
  if (config.device >= 0) {
    // (without a pool the CUDA cache makes its private one after checking the device)
    cache->impl = make_cuda_cache(config, pool ? pool->pool : nullptr);
  } else {
    std::shared_ptr<PagePool> p =
        pool ? pool->pool : std::make_shared<PagePool>(page_bytes_for(config.shape, -1), 0, false);
    cache->impl = make_cpu_cache(config, std::move(p));
  }
  return cache.release();
}

}  // namespace packkv
