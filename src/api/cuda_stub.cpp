// The CUDA backend entry points of a build without CUDA: creating a cache on a GPU
// fails with PACKKV_ERR_NOT_SUPPORTED and no device is reported.
#include "api/cache_impl.h"
#include "common/error.h"

namespace packkv {

std::unique_ptr<CacheImpl> make_cuda_cache(const Config&) {
  fail(PACKKV_ERR_NOT_SUPPORTED,
       "packkv_cache_create: params.device >= 0 needs the CUDA backend, which this build "
       "does not contain (configure with PACKKV_ENABLE_CUDA=ON)");
}

bool cuda_device_present() { return false; }

}  // namespace packkv
