// Flush stage 1 (encode_common.cuh): per-token statistics of the blocks of a flush batch.
#include <cuda_runtime.h>

#include "cuda_check.h"
#include "encode/encode_common.cuh"
#include "format/shape.h"

namespace packkv {
namespace cu {
namespace {

// One CTA per token: every thread loads a few values, so a decode-time flush is a couple
// of memory round trips, not a per-lane loop.
__device__ inline void block_minmax(float& mn, float& mx, float* red /*[2][32]*/) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    mn = fminf(mn, __shfl_xor_sync(0xffffffffu, mn, o));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  }
  if (lane == 0) { red[warp] = mn; red[32 + warp] = mx; }
  __syncthreads();
  mn = red[0];
  mx = red[32];
  for (int w = 1; w < nw; ++w) { mn = fminf(mn, red[w]); mx = fmaxf(mx, red[32 + w]); }
  __syncthreads();
}

// Device. Grid (N, total_blocks), 256 threads. For token t of flushed block fb: min/max of
// K and V per scale group (values rounded to kv_dtype; K centring: K - mu), affine (z, s) via
// fmt::group_affine (PACKKV.md 3.1) and, for a compact cache, fmt::group_affine_compact,
// the lower median of its V codes over all heads and dims (median repacking, PACKKV.md
// 4.2, same definition as src/repack.cpp; the codes of the wide affine, as the CPU
// encoder's median), and the
// non-finite check of input tokens (reported through err_key). Writes scratch only.
__global__ void __launch_bounds__(kThreads) flush_stats_kernel(
    KernelConfig c, FlushBatch b, CacheDevicePtrs d, const void* k_new, const void* v_new,
    int in_dtype, uint8_t* scratch) {
  __shared__ uint32_t hist[256];
  __shared__ float red[64];
  __shared__ int bad_s;
  const int fb = blockIdx.y;
  const FlushSeq& s = b.s[find_desc(b, fb)];
  const int blk = fb - s.block_start;
  const int t = blockIdx.x;
  const ScratchLayout L = scratch_layout(c);
  uint8_t* sc = scratch + static_cast<size_t>(fb) * L.total;
  const RowRef r = source_row(c, d, s, blk, t, k_new, v_new, in_dtype);
  const int hd = c.shape.n_kv_heads * c.shape.head_dim;
  const int gsize = hd / c.shape.scale_groups;
  const float* mu = seq_k_mean(c, d, s.seq);  // K centring, else null
  if (threadIdx.x == 0) bad_s = 0;
  for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
  __syncthreads();
  bool bad = false, no_compact = false;
  for (int g = 0; g < c.shape.scale_groups; ++g) {
    float kmn = INFINITY, kmx = -INFINITY, vmn = INFINITY, vmx = -INFINITY;
#pragma unroll 4
    for (int i = g * gsize + threadIdx.x; i < (g + 1) * gsize; i += blockDim.x) {
      float kx = row_value(r, r.k, i, c.kv_dtype);
      const float vx = row_value(r, r.v, i, c.kv_dtype);
      bad |= !isfinite(kx) || !isfinite(vx);
      if (mu) kx -= mu[i];
      kmn = fminf(kmn, kx); kmx = fmaxf(kmx, kx);
      vmn = fminf(vmn, vx); vmx = fmaxf(vmx, vx);
    }
    block_minmax(kmn, kmx, red);
    block_minmax(vmn, vmx, red);
    // fminf/fmaxf may pick either signed zero of an all-zero group: group_affine stores +0.0
    // for such groups, so the bytes match the CPU encoder's whatever the reduction picked.
    const fmt::Affine ka = fmt::group_affine(kmn, kmx, c.rel_k);
    const fmt::Affine va = fmt::group_affine(vmn, vmx, c.rel_v);
    if (threadIdx.x == 0) {
      const int at = g * c.shape.block_tokens + t;
      reinterpret_cast<int32_t*>(sc + L.kz)[at] = ka.zero;
      reinterpret_cast<float*>(sc + L.ks)[at] = ka.scale;
      reinterpret_cast<int32_t*>(sc + L.vz)[at] = va.zero;
      reinterpret_cast<float*>(sc + L.vs)[at] = va.scale;
    }
    if (c.shape.zs == fmt::ZsFormat::kCompact) {  // the compact fields, if the group has them
      fmt::Affine kc = ka, vc = va;
      const bool ok = fmt::group_affine_compact(kmn, kmx, c.rel_k, &kc) && fmt::group_affine_compact(vmn, vmx, c.rel_v, &vc);
      no_compact |= !ok;
      if (threadIdx.x == 0) {
        const int at = g * c.shape.block_tokens + t;
        reinterpret_cast<int32_t*>(sc + L.kzc)[at] = kc.zero;
        reinterpret_cast<float*>(sc + L.ksc)[at] = kc.scale;
        reinterpret_cast<int32_t*>(sc + L.vzc)[at] = vc.zero;
        reinterpret_cast<float*>(sc + L.vsc)[at] = vc.scale;
      }
    }
    if (c.median) {  // histogram of the token's V codes (all groups)
      const uint32_t qmax = (1u << c.shape.bits_v) - 1u;
      // Warp-aggregated: one shared atomic per distinct code per warp (V codes take few
      // values, so plain per-lane atomics serialize on a handful of addresses).
      const int i_end = (g + 1) * gsize;
      for (int i0 = g * gsize; i0 < i_end; i0 += blockDim.x) {
        const int i = i0 + static_cast<int>(threadIdx.x);
        const unsigned active = __ballot_sync(0xffffffffu, i < i_end);
        if (i < i_end) {
          const uint32_t q = fmt::quantize(row_value(r, r.v, i, c.kv_dtype), va, qmax);
          const unsigned same = __match_any_sync(active, q);
          if ((threadIdx.x & 31) == static_cast<unsigned>(__ffs(same) - 1)) atomicAdd(&hist[q], __popc(same));
        }
      }
    }
  }
  if (bad) atomicOr(&bad_s, 1);
  __syncthreads();
  if (threadIdx.x == 0) {
    sc[L.no_compact + t] = no_compact ? 1 : 0;  // uniform: every thread saw the same min/max
    if (bad_s && r.from_input) report_nonfinite(d.err_key, s.seq, r.pos);
    if (c.median) {
      // Lower median of the token's V codes over all heads and dims: sorted[(n-1)/2].
      const uint32_t k = static_cast<uint32_t>(hd - 1) / 2;
      uint32_t cum = 0, med = 0;
      for (int v = 0; v < (1 << c.shape.bits_v); ++v) {
        cum += hist[v];
        if (cum > k) { med = static_cast<uint32_t>(v); break; }
      }
      reinterpret_cast<uint32_t*>(sc + L.med)[t] = med;
    }
  }
}

}  // namespace

void launch_flush_stats(const KernelConfig& c, const FlushBatch& b, const CacheDevicePtrs& d, const void* k_new,
                        const void* v_new, int in_dtype, uint8_t* scratch, cudaStream_t stream) {
  dim3 grid(c.shape.block_tokens, b.total_blocks);
  flush_stats_kernel<<<grid, kThreads, 0, stream>>>(c, b, d, k_new, v_new, in_dtype, scratch);
  check_launch("flush_stats_kernel");
}

}  // namespace cu
}  // namespace packkv
