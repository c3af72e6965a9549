// The attention kernel families behind one dispatcher (dispatch.cu). A family is a set of
// kernels that compute the splits of an attention call from the same plan (split_plan.h)
// into the same outputs (scores, or partials for merge_kernel.cu); it may differ in how
// it decodes tiles and multiplies (CUDA cores, tensor cores) and in its shared-memory
// layout. The cudacore family implements the three host functions below (sizing and
// launch; every call can use it), the tensorcore family its selection rule and launch;
// dispatch.cu picks per launch. Families today:
//   cudacore    family_cudacore.cuh / .cu: every code decoded and multiplied in fp32 on the
//               CUDA cores; all variants, G = 1, 2, 4.
//   tensorcore  family_tensorcore.cuh / .cu, tensorcore_tile.cuh: each round decoded once
//               into an fp16 tile, K.q and p.V with mma.sync m16n8k16 (query heads on N, 8 per CTA);
//               the residual splits in the same launch (tensorcore_residual.cuh), or on
//               the cudacore kernel when its CTAs have fewer warps than the plan
//               (AttnPlan::first_split); sm_80+.
// Host only.
#ifndef PACKKV_CUDA_ATTENTION_FAMILIES_H
#define PACKKV_CUDA_ATTENTION_FAMILIES_H

#include <cuda_runtime.h>
#include <stddef.h>

#include "attention/attention.h"
#include "attention/split_plan.h"
#include "kernels.h"

namespace packkv {
namespace cu {

// Warps per CTA of the cudacore family for G query heads per CTA and variant v: the most
// (4, 2 or 1) whose shared memory fits c.smem_optin.
int cudacore_warps(const KernelConfig& c, int G, AttnVariant v);
// Dynamic shared memory of the cudacore family's largest launch with one warp per CTA.
size_t cudacore_min_smem_bytes(const KernelConfig& c);
// Enqueues the cudacore kernel of a.variant and p.G over the splits of plan p.
void cudacore_launch(const KernelConfig& c, const AttnBatch& b, const CacheDevicePtrs& d, const AttnCall& a,
                     const AttnPlan& p, cudaStream_t stream);

// Whether the tensorcore family takes the compressed splits of a call of variant v with
// GQA group gqa_group on this cache, whose longest sequence has max_blocks blocks (the
// measurements behind the rule: tuning.h, kTensorcoreMinGroup). The environment variable
// PACKKV_CUDA_ATTN_FAMILY ("cuda-core" or "tensor-core", read on every call) overrides
// the rule for benchmarks and tests; the family is taken only where it can run (sm_80+,
// its shared memory fits).
bool tensorcore_selected(const KernelConfig& c, AttnVariant v, int gqa_group, int max_blocks);
// Enqueues the tensorcore kernel over the compressed splits [0, p.n_splits) of plan p
// and, where its CTAs have at least p.nw warps or the ring is fp16 (decode at head_dim
// 64/128/256 in sm_90 code: family_tensorcore.cuh tensorcore_fuses; tuning.h,
// kTensorcoreFuseResidual), the
// residual splits [p.n_splits, p.n_splits + p.res_splits) too (its own query heads per
// CTA: 8; warps per CTA chosen per call): decode/apply partials at those split indices,
// scores to a.out. Returns whether it took the residual splits (if not, the caller runs
// them on the cudacore kernel, AttnPlan::first_split).
bool tensorcore_launch(const KernelConfig& c, const AttnBatch& b, const CacheDevicePtrs& d, const AttnCall& a,
                       const AttnPlan& p, cudaStream_t stream);

}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_ATTENTION_FAMILIES_H
