// Device helpers shared by the CUDA kernels: dtype loads/rounding, warp scans and
// reductions, the exact code-to-float conversion. Device only (CUDA translation
// units). Thread-safety: pure functions.
#ifndef PACKKV_CUDA_DEVICE_UTIL_CUH
#define PACKKV_CUDA_DEVICE_UTIL_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "packkv/packkv.h"

namespace packkv {
namespace cu {

// Element i of an array of dtype (F16/BF16/F32) as float. Device.
__device__ __forceinline__ float load_elem(const void* p, size_t i, int dtype) {
  if (dtype == PACKKV_DTYPE_F16) return __half2float(static_cast<const __half*>(p)[i]);
  if (dtype == PACKKV_DTYPE_BF16)
    return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  return static_cast<const float*>(p)[i];
}

// x rounded to dtype (round to nearest even), returned as float; overflow gives +-inf.
__device__ __forceinline__ float round_to(float x, int dtype) {
  if (dtype == PACKKV_DTYPE_F16) return __half2float(__float2half_rn(x));
  if (dtype == PACKKV_DTYPE_BF16) return __bfloat162float(__float2bfloat16_rn(x));
  return x;
}

// Stores x (already representable in dtype) as element i of an array of dtype.
__device__ __forceinline__ void store_elem(void* p, size_t i, int dtype, float x) {
  if (dtype == PACKKV_DTYPE_F16) {
    static_cast<__half*>(p)[i] = __float2half_rn(x);
  } else if (dtype == PACKKV_DTYPE_BF16) {
    static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(x);
  } else {
    static_cast<float*>(p)[i] = x;
  }
}

// Inclusive warp prefix sum (all 32 lanes participate).
__device__ __forceinline__ uint32_t warp_incl_scan(uint32_t v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    uint32_t t = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += t;
  }
  return v;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Transposed warp reduction of V values per lane (V a power of two): afterwards lane
// holds in x[0 .. max(1, V/32)) the warp-wide sums of value indices
// base + k, with base returned. Costs V - 1 + (5 - log2 V) shuffles for V <= 32 (31 for
// V = 32) instead of 5V.
template <int V>
__device__ __forceinline__ int warp_reduce_transposed(float (&x)[V]) {
  const int lane = threadIdx.x & 31;
  int base = 0;
  int n = V;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    if (n > 1) {
      const bool up = (lane & o) != 0;
#pragma unroll
      for (int i = 0; i < V / 2; ++i) {
        if (i < n / 2) {
          float send = up ? x[i] : x[i + n / 2];
          float keep = up ? x[i + n / 2] : x[i];
          x[i] = keep + __shfl_xor_sync(0xffffffffu, send, o);
        }
      }
      if (up) base += n / 2;
      n /= 2;
    } else {
      x[0] += __shfl_xor_sync(0xffffffffu, x[0], o);
    }
  }
  return base;
}

// uint32 code (< 2^23) as float with one LOP3 + one FADD instead of a slow I2F.
__device__ __forceinline__ float code_to_float(uint32_t c) {
  return __uint_as_float(c | 0x4B000000u) - 8388608.0f;
}

}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_DEVICE_UTIL_CUH
