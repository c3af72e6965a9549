// What the CPU kernels' SIMD paths share (cpu/round_kernels.cpp, cpu/token_kernels.cpp,
// cpu/softmax.cpp): PACKKV_X86_SIMD where x86 intrinsics with per-function target
// attributes are available, and those attributes. No file is compiled with wider flags:
// each SIMD function carries its instruction set (PACKKV_AVX2, PACKKV_AVX512) and runs
// only when cpu_isa() (cpu/isa.h) says the CPU has it, so nothing shared can pick up
// instructions the CPU lacks.
#ifndef PACKKV_CPU_SIMD_H
#define PACKKV_CPU_SIMD_H

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PACKKV_X86_SIMD 1
#include <immintrin.h>

#define PACKKV_AVX2 __attribute__((target("avx2,fma")))
#define PACKKV_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))
#define PACKKV_ALWAYS_INLINE inline __attribute__((always_inline))

#if defined(__GNUC__) && !defined(__clang__)
// GCC 12's AVX-512 intrinsics headers trip -Wmaybe-uninitialized and -Wuninitialized on
// their own _mm512_undefined_* placeholders (a known false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#endif

#endif  // PACKKV_CPU_SIMD_H
