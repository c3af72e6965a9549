// The attention kernel families behind one dispatcher (dispatch.cu). A family is a set of
// kernels that compute the splits of an attention call from the same plan (split_plan.h)
// into the same outputs (scores, or partials for merge_kernel.cu); it may differ in how
// it decodes tiles and multiplies (CUDA cores, tensor cores) and in its shared-memory
// layout. Each family implements the three host functions below; dispatch.cu picks one
// per launch. Families today:
//   cudacore  family_cudacore.cuh / .cu: every code decoded and multiplied in fp32 on the
//             CUDA cores; all variants, G = 1, 2, 4.
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

}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_ATTENTION_FAMILIES_H
