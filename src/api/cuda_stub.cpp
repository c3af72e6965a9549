// The CUDA backend entry points of a build without CUDA: creating a cache on a GPU
// fails with PACKKV_ERR_NOT_SUPPORTED and no device is reported.
#include "api/cache_impl.h"
#include "common/error.h"

#include <string>

namespace packkv {

std::unique_ptr<CacheImpl> make_cuda_cache(const Config&, std::shared_ptr<PagePool>) {
  fail(PACKKV_ERR_NOT_SUPPORTED,
       "params.device >= 0 needs the CUDA backend, which this build "
       "does not contain (configure with PACKKV_ENABLE_CUDA=ON)");
}

bool cuda_device_present() { return false; }

std::shared_ptr<PagePool> make_device_pool(int device, size_t, int64_t, bool) {
  fail(PACKKV_ERR_NOT_SUPPORTED, "device = " + std::to_string(device) +
                                     " needs the CUDA backend, which this build does not contain "
                                     "(configure with PACKKV_ENABLE_CUDA=ON)");
}

}  // namespace packkv
