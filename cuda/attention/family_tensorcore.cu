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
#include "attention/tuning.h"
#include "cuda_check.h"

namespace packkv {
namespace cu {
namespace {

// Per kernel instantiation and device, what the host learned once: how far its dynamic
// shared-memory limit was raised, and its resident CTAs per SM for each warp count (1,
// 2, 4) keyed by the shared memory asked (a cudaFuncSetAttribute or occupancy query per
// call costs host time on the critical path of short calls). Thread-safe: the attribute
// call is idempotent and the records are atomics (zero-initialized as statics).
constexpr int kKnownDevices = 64;
struct KernelRecord {
  std::atomic<size_t> raised[kKnownDevices];
  std::atomic<unsigned long long> resident[kKnownDevices][3];  // (smem << 8) | CTAs per SM
  std::atomic<int> ptx[kKnownDevices];                         // PTX version + 1 (0: not asked yet)
};

// The PTX version (major * 10 + minor) of the code kern runs on the current device.
template <typename K>
int ptx_version(K kern, int dev, KernelRecord& rec) {
  const bool known = dev >= 0 && dev < kKnownDevices;
  if (known) {
    const int v = rec.ptx[dev].load(std::memory_order_relaxed);
    if (v != 0) return v - 1;
  }
  cudaFuncAttributes fa;
  check(cudaFuncGetAttributes(&fa, kern), "cudaFuncGetAttributes(tensorcore_attn_kernel)");
  if (known) rec.ptx[dev].store(fa.ptxVersion + 1, std::memory_order_relaxed);
  return fa.ptxVersion;
}

template <typename K>
void raise_smem_limit(K kern, size_t smem, int dev, KernelRecord& rec) {
  const bool known = dev >= 0 && dev < kKnownDevices;
  if (known && rec.raised[dev].load(std::memory_order_relaxed) >= smem) return;
  check(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
        "cudaFuncSetAttribute(tensorcore_attn_kernel)");
  if (known) {
    size_t cur = rec.raised[dev].load(std::memory_order_relaxed);
    while (cur < smem && !rec.raised[dev].compare_exchange_weak(cur, smem, std::memory_order_relaxed)) {
    }
  }
}

// Resident CTAs per SM of kern with nw warps and smem bytes (limit already raised).
template <typename K>
int resident_ctas(K kern, int nw, size_t smem, int dev, KernelRecord& rec) {
  const int slot = nw >= 4 ? 2 : nw - 1;
  const bool known = dev >= 0 && dev < kKnownDevices;
  const unsigned long long key = static_cast<unsigned long long>(smem) << 8;
  if (known) {
    const unsigned long long v = rec.resident[dev][slot].load(std::memory_order_relaxed);
    if (v != 0 && (v & ~255ull) == key) return static_cast<int>(v & 255ull);
  }
  int n = 0;
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kern, nw * 32, smem),
        "cudaOccupancyMaxActiveBlocksPerMultiprocessor(tensorcore_attn_kernel)");
  n = n < 0 ? 0 : (n > 255 ? 255 : n);
  if (known) rec.resident[dev][slot].store(key | static_cast<unsigned long long>(n), std::memory_order_relaxed);
  return n;
}

template <typename V, int DT>
bool launch_dt(const KernelConfig& c, const AttnBatch& b, const CacheDevicePtrs& d, const AttnCall& a,
               const AttnPlan& p, cudaStream_t stream) {
  auto kern = tensorcore_attn_kernel<V, DT>;
  static KernelRecord rec;
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  // Warps per CTA: of 4, 2 and 1 (whose shared memory fits), the count with the most
  // warps at work, min(warps of the grid, resident warps of the device); ties: more warps
  // per CTA. At head_dim 256 a 4-warp CTA needs so much shared memory that one fits per
  // SM (4 warps), 2-warp CTAs fit 3 (6 warps): large grids take 2 warps, small ones
  // (batch 1: fewer CTAs than SMs) keep 4.
  const int n_gchunks = (p.gqa_group + kTensorcoreHeads - 1) / kTensorcoreHeads;
  const int rows = c.shape.n_kv_heads * n_gchunks;
  const long long grid_ctas = static_cast<long long>(p.n_splits) * rows * b.n;
  const long long sms = c.num_sms > 0 ? c.num_sms : kDefaultSms;
  int nw = 0;
  long long best = -1;
  for (int w = kTensorcoreMaxWarps; w >= 1; w /= 2) {
    const size_t sm = tensorcore_launch_smem<V>(c, w);
    if (sm > static_cast<size_t>(c.smem_optin)) continue;
    if (sm > 48 * 1024) raise_smem_limit(kern, sm, dev, rec);
    const long long resident = w * sms * resident_ctas(kern, w, sm, dev, rec);
    const long long at_work = w * grid_ctas < resident ? w * grid_ctas : resident;
    if (at_work > best) {
      nw = w;
      best = at_work;
    }
  }
  const size_t smem = tensorcore_launch_smem<V>(c, nw);
  // The residual splits join this launch when its code has the residual path (PTX 9.0+,
  // decode at head_dim 64/128/256: tensorcore_fuses) and either the ring is fp16 (the mma
  // window, tensorcore_window.cuh: a 16-token chunk per warp costs about one memory latency,
  // so fewer warps per CTA than the plan's only add chunks per warp) or its CTAs have at
  // least the plan's warps (tuning.h, kTensorcoreFuseResidual: residual_window's warps are
  // long); otherwise they are left to the CUDA-core kernel.
  const bool fuse = tensorcore_fuses<V>(DT) && (nw >= p.nw || c.kv_dtype == PACKKV_DTYPE_F16) &&
                    ptx_version(kern, dev, rec) >= 90;
  const int grid_x = fuse ? p.n_splits + p.res_splits : p.n_splits;
  if (grid_x > 0) {
    dim3 grid(grid_x, rows, b.n);
    kern<<<grid, nw * 32, smem, stream>>>(c, b, d, a, n_gchunks, p.gqa_group, p.bps, p.n_splits);
    check_launch("tensorcore_attn_kernel");
  }
  return fuse;
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
  // The rule and its measurements: tuning.h (kTensorcoreMinGroup). Decode whose launch
  // runs the dense window on mma (fp16 ring, sm_90 code, head_dim 64/128/256:
  // tensorcore_fuses, tensorcore_window.cuh) from kTensorcoreMinGroupWindow at any length.
  const int D = c.shape.head_dim;
  const bool window_mma = v == AttnVariant::kDecode && c.kv_dtype == PACKKV_DTYPE_F16 && c.cc >= 90 &&
                          tensorcore_fuses<DecodeVariant>(D == 64 || D == 128 || D == 256 ? D : 0);
  return gqa_group >= kTensorcoreMinGroup || (window_mma && gqa_group >= kTensorcoreMinGroupWindow) ||
         (gqa_group >= kTensorcoreMinGroupLong &&
          static_cast<int64_t>(max_blocks) * c.shape.block_tokens >= kTensorcoreLongTokens);
}

bool tensorcore_launch(const KernelConfig& c, const AttnBatch& b, const CacheDevicePtrs& d, const AttnCall& a,
                       const AttnPlan& p, cudaStream_t stream) {
  if (b.n == 0) return true;
  bool fused = false;
  with_variant(a.variant, [&](auto var) {
    using V = decltype(var);
    switch (c.shape.head_dim) {
      case 32: fused = launch_dt<V, 32>(c, b, d, a, p, stream); break;
      case 64: fused = launch_dt<V, 64>(c, b, d, a, p, stream); break;
      case 128: fused = launch_dt<V, 128>(c, b, d, a, p, stream); break;
      case 256: fused = launch_dt<V, 256>(c, b, d, a, p, stream); break;
      default: fused = launch_dt<V, 0>(c, b, d, a, p, stream); break;
    }
  });
  return fused;
}

}  // namespace cu
}  // namespace packkv
