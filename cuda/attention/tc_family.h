// Tensor-core attention family (issue 14): host entry points. The family computes the
// compressed blocks of an attention call (scores, apply, decode) with mma.sync; the
// residual window and the split merge stay with attention.cu (see launch_attention).
#ifndef PACKKV_CUDA_ATTENTION_TC_FAMILY_H
#define PACKKV_CUDA_ATTENTION_TC_FAMILY_H

#include <cuda_runtime.h>

#include "kernels.h"

namespace packkv {
namespace cu {

// Whether the tensor-core family computes the compressed blocks of a call of `mode`
// with GQA group `group` on this cache, whose longest sequence has max_blocks blocks. The environment variable PACKKV_CUDA_ATTN_FAMILY
// (read on every call; "cuda-core" or "tensor-core") overrides the default for
// benchmarks and tests; the tensor-core family is taken only where it can run (sm_80+,
// its shared memory fits). Host; thread-safe.
bool tc_family_selected(const KernelConfig& c, int mode, int group, int max_blocks);

// Enqueues the tensor-core kernel over the compressed splits [0, n_splits) of a batch
// (bps blocks per split): decode/apply write partials [m, l, acc[D]] at split indices
// 0 .. n_splits-1 of a.partial (the layout of attention.cu's merge), scores write
// a.out. Asynchronous; throws Error(PACKKV_ERR_CUDA) if the launch fails.
void launch_tc_attention(const KernelConfig& c, const AttnBatch& b, const CacheDevicePtrs& d, const AttnCall& a,
                         int group, int bps, int n_splits, cudaStream_t stream);

}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_ATTENTION_TC_FAMILY_H
