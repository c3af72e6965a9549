// Host side of the CUDA-core kernel family (families.h): shared-memory sizing and the
// launch of cudacore_attn_kernel<G, V> (family_cudacore.cuh) for each G and variant.
#include <cuda_runtime.h>

#include "attention/families.h"
#include "attention/family_cudacore.cuh"
#include "cuda_check.h"


namespace packkv {
namespace cu {
namespace {

template <int G, typename V>
void launch_one(const KernelConfig& c, const AttnBatch& b, const CacheDevicePtrs& d, const AttnCall& a,
                const AttnPlan& p, cudaStream_t stream) {
  const size_t smem = attn_smem<V>(c, G, p.nw).total;
  auto kern = cudacore_attn_kernel<G, V>;
  if (smem > 48 * 1024)
    check(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
          "cudaFuncSetAttribute(cudacore_attn_kernel)");
  dim3 grid(p.n_splits + p.res_splits - p.first_split, c.shape.n_kv_heads * p.n_gchunks, b.n);
  kern<<<grid, p.nw * 32, smem, stream>>>(c, b, d, a, p.n_gchunks, p.gqa_group, p.bps, p.n_splits, p.first_split);
  check_launch("cudacore_attn_kernel");
}

}  // namespace

int cudacore_warps(const KernelConfig& c, int G, AttnVariant v) {
  int nw = kMaxWarps;
  with_variant(v, [&](auto var) {
    using V = decltype(var);
    while (nw > 1 && attn_smem<V>(c, G, nw).total > static_cast<size_t>(c.smem_optin)) nw /= 2;
  });
  return nw;
}

size_t cudacore_min_smem_bytes(const KernelConfig& c) { return attn_smem<DecodeVariant>(c, kMaxG, 1).total; }

void cudacore_launch(const KernelConfig& c, const AttnBatch& b, const CacheDevicePtrs& d, const AttnCall& a,
                     const AttnPlan& p, cudaStream_t stream) {
  with_variant(a.variant, [&](auto var) {
    using V = decltype(var);
    switch (p.G) {
      case 1: launch_one<1, V>(c, b, d, a, p, stream); break;
      case 2: launch_one<2, V>(c, b, d, a, p, stream); break;
      default: launch_one<4, V>(c, b, d, a, p, stream); break;
    }
  });
}

}  // namespace cu
}  // namespace packkv
