// The residual splits of a tensor-core launch (family_tensorcore.cuh): the CTAs whose
// split is >= n_splits run the residual window (residual_window.cuh, shared with the
// CUDA-core family) in the same launch as the compressed splits, on a compact layout of
// the launch's dynamic shared memory, and write their partials (split_merge.cuh
// write_partial) for the merge kernel. One launch instead of two: the residual CTAs fill
// the compressed splits' last wave, and a call pays one kernel launch less (issue 14,
// short contexts). fp16 rings take the mma path instead (tensorcore_window.cuh); this one
// serves fp32 and bf16 rings. Host (sizes) and device.
#ifndef PACKKV_CUDA_ATTENTION_TENSORCORE_RESIDUAL_CUH
#define PACKKV_CUDA_ATTENTION_TENSORCORE_RESIDUAL_CUH

#include <stddef.h>
#include <stdint.h>

#include "attention/attention.h"
#include "attention/cta_layout.cuh"
#include "attention/online_softmax.cuh"
#include "attention/residual_window.cuh"
#include "attention/split_merge.cuh"
#include "common/rules.h"
#include "device_util.cuh"
#include "kernels.h"

namespace packkv {
namespace cu {

// Byte offsets of a residual CTA's layout: the CTA part (queries, the warps' accumulator
// rows and softmax states) and nw warp parts (scores/weights [G][N], per-round sums, the
// ring slots of a 16-token chunk): what residual_window and write_partial touch, without
// the staging buffers of attn_smem.
struct TcResidualSmem {
  size_t q, acc, ml, warp0;    // CTA part
  size_t sc, wr, wzr, slots;   // warp part
  size_t stride, total;
};
template <int G, typename V>
__host__ __device__ inline TcResidualSmem tc_residual_smem(const KernelConfig& c, int nw) {
  TcResidualSmem s;
  const size_t D = static_cast<size_t>(c.shape.head_dim), N = static_cast<size_t>(c.shape.block_tokens);
  size_t at = 0;
  s.q = at;    at += align16(G * D * 4);
  s.acc = at;  at += !V::kUsesV ? 0 : align16(static_cast<size_t>(nw) * acc_rows(G) * acc_row_words(G, static_cast<int>(D)) * 4);
  s.ml = at;   at += align16(static_cast<size_t>(nw) * (G * 2 + 1) * 4);
  s.warp0 = at;
  size_t w = 0;
  s.sc = w;    w += align16(G * N * 4);
  s.wr = w;    w += align16(G * 16 * 4);
  s.wzr = w;   w += align16(G * 16 * 4);
  s.slots = w; w += align16(16 * 4);
  s.stride = align16(w);
  s.total = at + static_cast<size_t>(nw) * s.stride;
  return s;
}

// Residual split `split` (>= n_splits; res_splits in all) for query heads qh0 .. qh0 +
// n_valid - 1 (n_valid <= G) of KV head kvh of sequence s at row `row`. Whole CTA
// (barriers); smem: the launch's dynamic shared memory (>= tc_residual_smem<G, V>(c,
// nw).total).
template <int G, typename V>
__device__ __forceinline__ void tc_residual_heads(const KernelConfig& c, const CacheDevicePtrs& d, const AttnSeq& s,
                                                  const AttnCall& a, uint8_t* smem, int row, int kvh, int qh0,
                                                  int n_valid, int split, int n_splits, int res_splits) {
  const int nw = blockDim.x >> 5;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int D = c.shape.head_dim;
  const TcResidualSmem L = tc_residual_smem<G, V>(c, nw);
  const int arw = acc_row_words(G, D);
  float* qS = reinterpret_cast<float*>(smem + L.q);
  float* acc = reinterpret_cast<float*>(smem + L.acc) + static_cast<size_t>(warp) * acc_rows(G) * arw;
  float* ml = reinterpret_cast<float*>(smem + L.ml);
  uint8_t* wb = smem + L.warp0 + static_cast<size_t>(warp) * L.stride;
  // qsum and the round prefix sums are not used by the residual window.
  const Cta<G> t{warp, lane, nw, row, kvh, qh0, n_valid, split, qS, nullptr, acc, arw, ml, wb,
                 reinterpret_cast<float*>(wb + L.sc), reinterpret_cast<float*>(wb + L.wr),
                 reinterpret_cast<float*>(wb + L.wzr), reinterpret_cast<int*>(wb + L.slots), nullptr};
  if (V::kUsesK) {
    load_queries<G, V>(qS, a, row, qh0, n_valid, D);  // as the CUDA-core kernel (decode: scaled)
  }
  if (V::kUsesV)
    for (int i = lane; i < acc_rows(G) * arw; i += 32) acc[i] = 0.f;
  __syncthreads();
  SoftmaxState<G> sm;
  residual_window<G, V>(c, d, s, a, t, sm, n_splits, res_splits);
  if (V::kUsesV) write_partial<G, V>(a, D, t, sm, reinterpret_cast<const float*>(smem + L.acc));
}

// The residual split of a tensor-core CTA (n_valid <= 8 query heads from qh0): kTcResHeads
// heads at a time (one register footprint for every launch; a CTA with more heads reads
// the window once per group of kTcResHeads, a small part of a call).
constexpr int kTcResHeads = 4;
template <typename V>
__device__ __forceinline__ void tc_residual_split(const KernelConfig& c, const CacheDevicePtrs& d, const AttnSeq& s,
                                                  const AttnCall& a, uint8_t* smem, int row, int kvh, int qh0,
                                                  int n_valid, int split, int n_splits, int res_splits) {
  for (int h = 0; h < n_valid; h += kTcResHeads) {
    if (h > 0) __syncthreads();  // the previous heads' partials are written (write_partial read smem)
    tc_residual_heads<kTcResHeads, V>(c, d, s, a, smem, row, kvh, qh0 + h, min(kTcResHeads, n_valid - h), split,
                                      n_splits, res_splits);
  }
}

}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_ATTENTION_TENSORCORE_RESIDUAL_CUH
