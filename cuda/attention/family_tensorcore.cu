// Host side of the tensor-core kernel family (families.h): which calls it takes
// (tensorcore_selected, rule in tuning.h), shared-memory sizing and the launch of
// tensorcore_attn_kernel<V, DT> (family_tensorcore.cuh) for each variant and head_dim class.
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attention/families.h"
#include "attention/family_tensorcore.cuh"
#include "cuda_check.h"

namespace packkv {
namespace cu {
namespace {

template <typename V>
int tensorcore_warps(const KernelConfig& c) {
  int nw = kTensorcoreMaxWarps;
  while (nw > 1 && tensorcore_smem<V>(c, nw).total > static_cast<size_t>(c.smem_optin)) nw /= 2;
  return nw;
}

template <typename V, int DT>
void launch_dt(const KernelConfig& c, const AttnBatch& b, const CacheDevicePtrs& d, const AttnCall& a,
               const AttnPlan& p, cudaStream_t stream) {
  const int nw = tensorcore_warps<V>(c);
  const size_t smem = tensorcore_smem<V>(c, nw).total;
  const int n_gchunks = (p.gqa_group + kTensorcoreHeads - 1) / kTensorcoreHeads;
  auto kern = tensorcore_attn_kernel<V, DT>;
  if (smem > 48 * 1024)
    check(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
          "cudaFuncSetAttribute(tensorcore_attn_kernel)");
  dim3 grid(p.n_splits, c.shape.n_kv_heads * n_gchunks, b.n);
  kern<<<grid, nw * 32, smem, stream>>>(c, b, d, a, n_gchunks, p.gqa_group, p.bps);
  check_launch("tensorcore_attn_kernel");
}

}  // namespace

bool tensorcore_selected(const KernelConfig& c, AttnVariant v, int gqa_group, int max_blocks) {
  if (c.cc < 80) return false;
  bool fits = true;
  with_variant(v, [&](auto var) {
    using V = decltype(var);
    fits = tensorcore_smem<V>(c, 1).total <= static_cast<size_t>(c.smem_optin);
  });
  if (!fits) return false;
  const char* env = getenv("PACKKV_CUDA_ATTN_FAMILY");
  if (env && strcmp(env, "cuda-core") == 0) return false;
  if (env && strcmp(env, "tensor-core") == 0) return true;
  // The rule and its measurements: tuning.h (kTensorcoreMinGroup).
  return gqa_group >= kTensorcoreMinGroup ||
         (gqa_group >= kTensorcoreMinGroupLong &&
          static_cast<int64_t>(max_blocks) * c.shape.block_tokens >= kTensorcoreLongTokens);
}

void tensorcore_launch(const KernelConfig& c, const AttnBatch& b, const CacheDevicePtrs& d, const AttnCall& a,
                       const AttnPlan& p, cudaStream_t stream) {
  if (b.n == 0 || p.n_splits == 0) return;
  with_variant(a.variant, [&](auto var) {
    using V = decltype(var);
    switch (c.shape.head_dim) {
      case 32: launch_dt<V, 32>(c, b, d, a, p, stream); break;
      case 64: launch_dt<V, 64>(c, b, d, a, p, stream); break;
      case 128: launch_dt<V, 128>(c, b, d, a, p, stream); break;
      case 256: launch_dt<V, 256>(c, b, d, a, p, stream); break;
      default: launch_dt<V, 0>(c, b, d, a, p, stream); break;
    }
  });
}

}  // namespace cu
}  // namespace packkv
