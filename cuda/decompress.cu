// Reconstruction of one sequence's K and V as fp32 in original token order
// (packkv_cache_decompress): x^ = (q + z) * s for compressed blocks (format/affine.h
// dequantize, the same expression as the CPU decoder, so results are bit-identical),
// and the sink tokens and the residual window converted to fp32. Not performance-critical: one CTA per
// (block, tile), rounds walked in order with a serial per-round offset scan.
#include <cuda_runtime.h>

#include "cuda_check.h"
#include "device_util.cuh"
#include "kernels.h"
#include "format/affine.h"
#include "format/round_cursor.h"
#include "format/shape.h"

namespace packkv {
namespace cu {
namespace {

constexpr int kMaxHeadDimForDecompress = fmt::kMaxHeadDim;

// Device. Grid (n_blocks, 2H), kMaxHeadDim threads (one per channel). Decodes tile
// blockIdx.y (K heads, then V heads) of block blockIdx.x into k_out/v_out float [T][H][D]
// at original positions, walking its rounds with the round cursor (format/round_cursor.h):
// each thread reads its channel's minimum and encode length, one thread prefix-sums the
// pack sizes, each thread decodes its pack.
__global__ void decompress_blocks_kernel(KernelConfig c, CacheDevicePtrs d, AttnSeq s,
                                         float* k_out, float* v_out) {
  __shared__ uint32_t off[kMaxHeadDimForDecompress + 1];
  const fmt::Shape& SH = c.shape;
  const int blk = blockIdx.x, tile = blockIdx.y;
  const int H = SH.n_kv_heads, D = SH.head_dim, N = SH.block_tokens;
  const int kv = tile >= H ? fmt::kV : fmt::kK;
  float* out = kv == fmt::kV ? v_out : k_out;
  if (!out) return;
  const int h = tile - kv * H;
  const uint8_t* blob =
      reinterpret_cast<const uint8_t*>(d.block_table[static_cast<size_t>(s.seq) * c.max_blocks + blk]);
  const fmt::HeadView hv = SH.head(blob, kv, h);
  // K centring: blocks hold K - mu; k^ = (K - mu)^ + mu in fp32, as the CPU backend
  const float* mu = kv == fmt::kK && c.k_center
                        ? d.k_mean + static_cast<size_t>(s.seq) * H * D + static_cast<size_t>(h) * D
                        : nullptr;
  fmt::RoundCursor cur(hv.tile, D, SH.bits(kv));
  const int ch = threadIdx.x;
  for (int r = 0; r < SH.rounds(); ++r) {
    int L = 0;
    uint32_t mn = 0;
    if (ch < D) {
      mn = cur.channel_min(ch);
      L = cur.channel_length(ch);
      off[ch] = 2u * L;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      uint32_t run = 0;
      for (int i = 0; i < D; ++i) { uint32_t v = off[i]; off[i] = run; run += v; }
      off[D] = run;
    }
    __syncthreads();
    if (ch < D) {
      const float add = mu ? mu[ch] : 0.f;
      uint64_t lo = 0, hi = 0;
      fmt::read_pack_halves(cur.payload() + off[ch], L, &lo, &hi);
      for (int i = 0; i < fmt::kPackTokens; ++i) {
        const int slot = fmt::kPackTokens * r + i;
        const uint32_t q = mn + fmt::pack_offset(lo, hi, L, i);
        out[(static_cast<size_t>(s.sink_len) + static_cast<size_t>(blk) * N + hv.original(slot)) * H * D +
            static_cast<size_t>(h) * D + ch] =
            mu ? fmt::dequantize(q, hv.affine(slot)) + add : fmt::dequantize(q, hv.affine(slot));
      }
    }
    cur.next_round_after(off[D]);
    __syncthreads();
  }
}

// Device. Grid sink_len + residual_len, 256 threads: dense token i -> fp32 row i (sink
// token i, ring row ring_tokens + i) or row n_blocks*N + i (residual token i - sink_len).
__global__ void decompress_residual_kernel(KernelConfig c, CacheDevicePtrs d, AttnSeq s, float* k_out,
                                           float* v_out) {
  const void* ring_k = reinterpret_cast<const void*>(d.ring_table[2 * s.seq]);
  const void* ring_v = reinterpret_cast<const void*>(d.ring_table[2 * s.seq + 1]);
  const size_t row = static_cast<size_t>(c.shape.n_kv_heads) * c.shape.head_dim;
  const int i = blockIdx.x;
  const bool sink = i < s.sink_len;
  const size_t dst = (sink ? static_cast<size_t>(i) : static_cast<size_t>(s.n_blocks) * c.shape.block_tokens + i) * row;
  const size_t src =
      static_cast<size_t>(sink ? c.ring_tokens + i : (s.ring_start + i - s.sink_len) % c.ring_tokens) * row;
  for (size_t j = threadIdx.x; j < row; j += blockDim.x) {
    if (k_out) k_out[dst + j] = load_elem(ring_k, src + j, c.kv_dtype);
    if (v_out) v_out[dst + j] = load_elem(ring_v, src + j, c.kv_dtype);
  }
}

}  // namespace

void launch_decompress(const KernelConfig& c, const CacheDevicePtrs& d, const AttnSeq& s,
                       float* k_out, float* v_out, cudaStream_t stream) {
  if (s.n_blocks > 0) {
    dim3 g(s.n_blocks, 2 * c.shape.n_kv_heads);
    decompress_blocks_kernel<<<g, kMaxHeadDimForDecompress, 0, stream>>>(c, d, s, k_out, v_out);
    check_launch("decompress_blocks_kernel");
  }
  if (s.sink_len + s.residual_len > 0) {
    decompress_residual_kernel<<<s.sink_len + s.residual_len, 256, 0, stream>>>(c, d, s, k_out, v_out);
    check_launch("decompress_residual_kernel");
  }
}

}  // namespace cu
}  // namespace packkv
