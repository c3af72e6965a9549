// PACKKV_HD: marks a function that host (C++) and device (CUDA) code both compile from
// the same source. The format module (src/format/), the quantizer arithmetic and the
// shared rules (src/common/rules.h) are written with it, so that nvcc builds the kernels'
// copy from the very header the CPU backend uses (no device twin to keep in step).
#ifndef PACKKV_COMMON_HD_H
#define PACKKV_COMMON_HD_H

#if defined(__CUDACC__)
#define PACKKV_HD __host__ __device__ __forceinline__
#else
#define PACKKV_HD inline
#endif

#endif  // PACKKV_COMMON_HD_H
