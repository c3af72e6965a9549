// The end of a tensor-core decode or apply CTA (family_tensorcore.cuh, tensorcore_window.cuh):
// each warp has written, in its warp part of the TensorcoreSmem layout, its [8][D] fp32
// accumulators in true units (sum_t w_t v_t relative to its own max) and, in the hw part,
// its per-head (m, l, ., .); this merges the warps and writes the CTA's partial
// [m, l, o[D]] per query head (split_merge.cuh's layout, read by the merge kernel).
// Device only.
#ifndef PACKKV_CUDA_ATTENTION_TENSORCORE_MERGE_CUH
#define PACKKV_CUDA_ATTENTION_TENSORCORE_MERGE_CUH

#include <math.h>
#include <stdint.h>

#include "attention/attention.h"
#include "attention/tensorcore_layout.cuh"
#include "attention/tuning.h"

namespace packkv {
namespace cu {

// Partials of query heads qh0 .. qh0 + n_valid - 1 of sequence row `row`, split `split`.
// Decode: o = sum_w acc_w e^(m_w - M) / L (a convex combination of the warps' outputs),
// m = M (+ m_shift[g] * a.scale where m_shift is not null: K centring's q . mu), l = L;
// apply: o = sum_w acc_w. Whole CTA; the caller synchronized after the warps' writes.
template <typename V>
__device__ __forceinline__ void tc_write_partials(const AttnCall& a, const uint8_t* smem, const TensorcoreSmem& L,
                                                  int D, int row, int qh0, int n_valid, int split, int nw,
                                                  const float* m_shift) {
  const float* hw0 = reinterpret_cast<const float*>(smem + L.hw);
  const int rsz = D + 2;
  for (int i = threadIdx.x; i < n_valid * rsz; i += blockDim.x) {
    const int g = i / rsz, k = i - g * rsz;
    float* dst = a.partial + ((static_cast<size_t>(row) * a.n_q_heads + qh0 + g) * kSplitsTotal + split) * rsz;
    float v = 0.f;
    if (V::kSoftmax) {
      float M = -INFINITY;
      for (int w = 0; w < nw; ++w) M = fmaxf(M, hw0[(w * kTensorcoreHeads + g) * 4]);
      // Partial row [m, l, o]: o is the split's normalized output (sum_t e^(x_t - m) v_t) / l,
      // as the merge kernel reads it (split_merge.cuh); a convex combination of the warps'.
      float Lt = 0.f;
      for (int w = 0; w < nw; ++w) {
        const float mw = hw0[(w * kTensorcoreHeads + g) * 4];
        if (mw != -INFINITY) Lt += hw0[(w * kTensorcoreHeads + g) * 4 + 1] * __expf(mw - M);
      }
      if (k == 0) {
        v = m_shift && M != -INFINITY ? M + m_shift[g] * a.scale : M;  // m is scaled
      } else if (k == 1) {
        v = Lt;
      } else if (Lt > 0.f) {
        for (int w = 0; w < nw; ++w) {
          const float mw = hw0[(w * kTensorcoreHeads + g) * 4];
          if (mw == -INFINITY) continue;
          const float xv = reinterpret_cast<const float*>(smem + L.warp0 + static_cast<size_t>(w) * L.stride)[g * D + k - 2];
          v += xv * (__expf(mw - M) / Lt);
        }
      }
    } else if (k >= 2) {
      for (int w = 0; w < nw; ++w)
        v += reinterpret_cast<const float*>(smem + L.warp0 + static_cast<size_t>(w) * L.stride)[g * D + k - 2];
    }
    dst[k] = v;
  }
}

}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_ATTENTION_TENSORCORE_MERGE_CUH
