// Host side of the tensor-core kernel family (families.h): which calls it takes
// (tensorcore_selected, rule in tuning.h), shared-memory sizing and the launch of
// tensorcore_attn_kernel<V, DT> (family_tensorcore.cuh) for each variant and head_dim class.
#include <cuda_runtime.h>
#include <atomic>
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
  while (nw > 1 && tensorcore_launch_smem<V>(c, nw) > static_cast<size_t>(c.smem_optin)) nw /= 2;
  return nw;
}

// Raises kern's dynamic shared-memory limit to smem on the current device unless
// raised[device] (the caller's per-kernel record) says it was already raised that far: a
// cudaFuncSetAttribute per call costs host time on the critical path of short calls.
// Thread-safe (the attribute call is idempotent).
constexpr int kRaisedDevices = 64;
template <typename K>
void raise_smem_limit(K kern, size_t smem, std::atomic<size_t>* raised) {
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  const bool known = dev >= 0 && dev < kRaisedDevices;
  if (known && raised[dev].load(std::memory_order_relaxed) >= smem) return;
  check(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
        "cudaFuncSetAttribute(tensorcore_attn_kernel)");
  if (known) {
    size_t cur = raised[dev].load(std::memory_order_relaxed);
    while (cur < smem && !raised[dev].compare_exchange_weak(cur, smem, std::memory_order_relaxed)) {
    }
  }
}

template <typename V, int DT>
void launch_dt(const KernelConfig& c, const AttnBatch& b, const CacheDevicePtrs& d, const AttnCall& a,
               const AttnPlan& p, cudaStream_t stream) {
  const int nw = tensorcore_warps<V>(c);
  const size_t smem = tensorcore_launch_smem<V>(c, nw);
  const int n_gchunks = (p.gqa_group + kTensorcoreHeads - 1) / kTensorcoreHeads;
  auto kern = tensorcore_attn_kernel<V, DT>;
  static std::atomic<size_t> raised[kRaisedDevices];  // zero-initialized (static storage)
  if (smem > 48 * 1024) raise_smem_limit(kern, smem, raised);
  // Compressed splits, then the residual splits, in one launch.
  dim3 grid(p.n_splits + p.res_splits, c.shape.n_kv_heads * n_gchunks, b.n);
  kern<<<grid, nw * 32, smem, stream>>>(c, b, d, a, n_gchunks, p.gqa_group, p.bps, p.n_splits);
  check_launch("tensorcore_attn_kernel");
}

}  // namespace

bool tensorcore_selected(const KernelConfig& c, AttnVariant v, int gqa_group, int max_blocks) {
  if (c.cc < 80) return false;
  bool fits = true;
  with_variant(v, [&](auto var) {
    using V = decltype(var);
    fits = tensorcore_launch_smem<V>(c, 1) <= static_cast<size_t>(c.smem_optin);
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
  if (b.n == 0) return;
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
