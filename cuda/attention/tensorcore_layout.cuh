// Shared-memory layout of the tensor-core attention family (family_tensorcore.cuh): one
// CTA's parts and the dynamic shared memory of a launch, plus which kernels run the
// residual splits. Host and device (the host sizes the launch with the same functions).
#ifndef PACKKV_CUDA_ATTENTION_TENSORCORE_LAYOUT_CUH
#define PACKKV_CUDA_ATTENTION_TENSORCORE_LAYOUT_CUH

#include <stddef.h>

#include "attention/attention.h"
#include "attention/cta_layout.cuh"
#include "attention/tensorcore_residual.cuh"
#include "attention/tuning.h"
#include "common/rules.h"
#include "kernels.h"

namespace packkv {
namespace cu {

constexpr int kTensorcoreHeads = 8;  // query heads per CTA: the mma's N

// Shared memory of one CTA: a CTA part (q fragments and per-head values) and nw warp
// parts. q is staged as fp32 in the warp parts before the block loop, and the warps'
// accumulators [8][D] fp32 are merged there after it (a warp part is >= 32 D bytes).
struct TensorcoreSmem {
  size_t qf, qi, hw, warp0;                             // CTA part
  size_t kbuf, vbuf, zb, sb, vzb, vsb, pb, x, sc, fac;  // warp part: staging buffers (layout_staging), x, sc, fac
  size_t stride, total;
};
template <typename V>
__host__ __device__ inline TensorcoreSmem tensorcore_smem(const KernelConfig& c, int nw) {
  TensorcoreSmem s;
  const size_t D = static_cast<size_t>(c.shape.head_dim), N = static_cast<size_t>(c.shape.block_tokens);
  size_t at = 0;
  s.qf = at;  at += !V::kUsesK ? 0 : D * 32;  // [D/16][32 lanes] uint4 {hi b0, hi b1, lo b0, lo b1}
  s.qi = at;  at += align16(3 * kTensorcoreHeads * 4);            // sum(q) [8], 2^-e_q [8], q . mu [8]
  s.hw = at;  at += align16(static_cast<size_t>(nw) * kTensorcoreHeads * 4 * 4);  // per warp, head: m, l, sum w z, E
  s.warp0 = at;
  size_t w = layout_staging<V>(s, c, N, V::kPositions);
  s.x = w;    w += D * 32;
  s.sc = w;   if (V::kUsesV) w += align16(kTensorcoreHeads * (N + kTcScPad) * 4);  // scores, then weights
  s.fac = w;  w += align16(kTensorcoreHeads * 4);
  if (w < kTensorcoreHeads * D * 4) w = kTensorcoreHeads * D * 4;
  s.stride = align16(w);
  s.total = at + static_cast<size_t>(nw) * s.stride;
  return s;
}

// Dynamic shared memory of a launch with nw warps per CTA: the larger of the compressed
// splits' layout and the residual splits' (tensorcore_residual.cuh).
template <typename V>
__host__ __device__ inline size_t tensorcore_launch_smem(const KernelConfig& c, int nw) {
  const size_t t = tensorcore_smem<V>(c, nw).total, r = tc_residual_smem<kTcResHeads, V>(c, nw).total;
  return t > r ? t : r;
}

// Whether the kernel of variant V and head_dim class DT runs residual splits (with
// kTensorcoreFuseResidual): decode at head_dim 64, 128 and 256 (the measured case). Not
// the generic class (0) nor 32, nor scores and apply: with the residual path ptxas
// spilled or took more registers there (sm_90, nvcc 13.0: decode 196 bytes at DT 0,
// scores 48 bytes at DT 32, scores at DT 64 96 registers instead of 80), unmeasured.
template <typename V>
__host__ __device__ constexpr bool tensorcore_fuses(int DT) {
  return kTensorcoreFuseResidual && V::kSoftmax && DT >= 64;
}

}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_ATTENTION_TENSORCORE_LAYOUT_CUH
