// The per-token arithmetic of CPU block attention around the round kernels
// (cpu/block_attention.cpp, cpu/round_kernels.h): the fold of a round's integer-domain
// scores with the tokens' zero points and scales, the apply weights p * s and their sums,
// and the addition of a block's fp32 weighted sum into the float64 output. Portable, AVX2 +
// FMA and AVX-512 versions chosen at run time like the round kernels (cpu/isa.h); the
// versions differ only in the rounding of float64 sums and FMA (tests compare them).
#ifndef PACKKV_CPU_TOKEN_KERNELS_H
#define PACKKV_CPU_TOKEN_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "cpu/isa.h"

namespace packkv {

struct TokenKernels {
  // Scores of one round's 16 tokens (stored order i) for n_q query heads, float64:
  // out[j * 16 + i] = ((double)acc[j * 16 + i] * unscale[j] + min_term[j] + zero[i] * sum_q[j])
  //                   * scale[i] + bias[j]
  // (acc, min_term: score_round's outputs; zero, scale: the 16 tokens' fields).
  void (*fold_round)(const float* acc, int n_q, const double* unscale, const double* min_term, const double* sum_q,
                     const double* bias, const int32_t* zero, const float* scale, double* out);
  // Apply weights of one head of a block of n stored slots (n a multiple of 16), n_q
  // query heads: w[j * n + slot] = fl32(probs[j * ld + orig[slot]] * scale[slot]) (the
  // fp32 product, i.e. the exact product rounded once; orig null: the identity),
  // wsum[j * (n / 16) + r] = sum of w over the slots of round r, beta[j] = sum over
  // slots of w * zero[slot] (both float64). Returns false, with w / wsum / beta
  // unspecified, when some |w| is >= 2^100, infinite or NaN (the caller then rescales).
  bool (*weights)(const float* probs, size_t ld, int n_q, int n, const int32_t* orig, const float* scale,
                  const int32_t* zero, float* w, double* wsum, double* beta);
  // out[j * d + ch] += (double)part[j * d + ch] * unscale + beta[j] for j < n_q, ch < d
  // (d a multiple of 16).
  void (*add_part)(const float* part, int n_q, int d, double unscale, const double* beta, double* out);
};

// The kernels of an instruction set (one this CPU supports: cpu_isa()).
const TokenKernels& token_kernels(CpuIsa isa);

}  // namespace packkv

#endif  // PACKKV_CPU_TOKEN_KERNELS_H
