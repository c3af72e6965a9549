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

// Elements [i, i + 2) of an array of dtype as floats. Device; i even and the array
// 8-byte aligned (one 4- or 8-byte load).
__device__ __forceinline__ float2 load_elem2(const void* p, size_t i, int dtype) {
  if (dtype == PACKKV_DTYPE_F16) return __half22float2(static_cast<const __half2*>(p)[i >> 1]);
  if (dtype == PACKKV_DTYPE_BF16) return __bfloat1622float2(static_cast<const __nv_bfloat162*>(p)[i >> 1]);
  return static_cast<const float2*>(p)[i >> 1];
}

// Elements [i, i + 8) of an array of dtype as floats. Device; i a multiple of 8 and the
// array 16-byte aligned (one 16-byte load, two for F32).
__device__ __forceinline__ void load_elem8(const void* p, size_t i, int dtype, float (&x)[8]) {
  if (dtype == PACKKV_DTYPE_F32) {
    const float4* v = static_cast<const float4*>(p) + (i >> 2);
    const float4 a = v[0], b = v[1];
    x[0] = a.x; x[1] = a.y; x[2] = a.z; x[3] = a.w;
    x[4] = b.x; x[5] = b.y; x[6] = b.z; x[7] = b.w;
    return;
  }
  const uint4 u = static_cast<const uint4*>(p)[i >> 3];
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    float2 f;
    if (dtype == PACKKV_DTYPE_F16) {
      f = __half22float2(*reinterpret_cast<const __half2*>(&w[k]));
    } else {
      f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w[k]));
    }
    x[2 * k] = f.x;
    x[2 * k + 1] = f.y;
  }
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

// Sum over the warp of a float64 (all 32 lanes).
__device__ __forceinline__ double warp_sum_f64(double x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
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

// uint32 code (< 2^23) as float with one LOP3 + one FADD instead of a slow I2F.
__device__ __forceinline__ float code_to_float(uint32_t c) {
  return __uint_as_float(c | 0x4B000000u) - 8388608.0f;
}

}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_DEVICE_UTIL_CUH
