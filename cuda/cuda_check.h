// Host-side helpers of the CUDA backend: CUDA error checking that raises packkv::Error,
// and a scoped device guard (API-CONVENTIONS.md R4, R8). Host only.
#ifndef PACKKV_CUDA_CHECK_H
#define PACKKV_CUDA_CHECK_H

#include <cuda_runtime.h>

#include <string>

#include "common/error.h"

namespace packkv {
namespace cu {

// Throws Error(PACKKV_ERR_CUDA, "<what>: <cudaGetErrorName> (<description>)") when err is
// not cudaSuccess; cudaErrorMemoryAllocation becomes PACKKV_ERR_OUT_OF_DEVICE_MEMORY.
// Clears the sticky "last error" for non-sticky errors. Thread-safe.
inline void check(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  (void)cudaGetLastError();
  std::string msg = std::string(what) + ": " + cudaGetErrorName(err) + " (" +
                    cudaGetErrorString(err) + ")";
  fail(err == cudaErrorMemoryAllocation ? PACKKV_ERR_OUT_OF_DEVICE_MEMORY : PACKKV_ERR_CUDA, msg);
}

// Checks the launch of the kernel just enqueued (configuration errors only; faults
// inside the kernel surface at the next synchronizing call).
inline void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

// Sets the current device for the lifetime of the guard and restores the caller's
// device on exit (R8: never rely on the caller's current device). Host only.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&prev_), "cudaGetDevice");
    if (prev_ != device) check(cudaSetDevice(device), "cudaSetDevice");
    changed_ = prev_ != device;
  }
  ~DeviceGuard() {
    if (changed_) (void)cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
  bool changed_ = false;
};

}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_CHECK_H
