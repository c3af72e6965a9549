// The inner loops of CPU block attention (cpu/block_attention.cpp): one round (16 tokens) of
// one tile, walked in channel order with the round cursor (format/round_cursor.h), in three
// instruction sets chosen at run time (cpu/isa.h): portable (baseline x86-64 + SSE2, or any
// CPU), AVX2 + FMA, AVX-512. Each pack's 16 offsets are unpacked (SIMD: one byte shuffle
// and one variable shift for all 16 fields) and multiplied in fp32; pack minimums are
// returned to the caller, which folds them in float64 the same way for every path.
#ifndef PACKKV_CPU_ROUND_KERNELS_H
#define PACKKV_CPU_ROUND_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "cpu/isa.h"
#include "format/round_cursor.h"

namespace packkv {

struct RoundKernels {
  // Scores: acc[j][i] = sum_ch q[j * d + ch] * offset_ch[i] (fp32, channels in order) for
  // the n_q query heads and the round's 16 tokens (stored order), and
  // min_term[j] = sum_ch q_in[j * d + ch] * min_ch (float64; the products are exact). q is
  // q_in scaled by a power of two (cpu/block_attention.cpp). Moves the cursor to the
  // next round. tile_end: end of the tile (no byte at or after it
  // is read). scratch: 16 * d floats.
  void (*score_round)(fmt::RoundCursor* cur, int d, const float* q, const float* q_in, int n_q, float* acc,
                      double* min_term, const uint8_t* tile_end, float* scratch);
  // Apply: part[j][ch] += sum_i w[j * w_ld + i] * offset_ch[i] (fp32) over the round's 16
  // tokens i, and out[j][ch] += min_ch * wsum[j * wsum_ld] (float64). scratch: 16 * d floats.
  void (*apply_round)(fmt::RoundCursor* cur, int d, const float* w, size_t w_ld, int n_q, float* part, double* out,
                      const double* wsum, size_t wsum_ld, const uint8_t* tile_end, float* scratch);
};

// The kernels of an instruction set (one this CPU supports: cpu_isa()).
const RoundKernels& round_kernels(CpuIsa isa);

}  // namespace packkv

#endif  // PACKKV_CPU_ROUND_KERNELS_H
