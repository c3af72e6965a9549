// Reconstruction of one sequence's K and V as fp32 in original token order
// (packkv_cache_decompress): x^ = (q + z) * s for compressed blocks (tile_format.h
// dequantize, the same expression as the CPU decoder, so results are bit-identical),
// then the residual window converted to fp32. Not performance-critical: one CTA per
// (block, tile), rounds walked in order with a serial per-round offset scan.
#include <cuda_runtime.h>

#include "cuda_check.h"
#include "device_util.cuh"
#include "kernels.h"
#include "format/round_tile.h"
#include "format/shape.h"

namespace packkv {
namespace cu {
namespace {

constexpr int kMaxHeadDimForDecompress = fmt::kMaxHeadDim;

// Device. Grid (n_blocks, 2H), kMaxHeadDim threads (one per channel). Decodes tile
// blockIdx.y of block blockIdx.x into k_out/v_out float [T][H][D] at original positions.
__global__ void decompress_blocks_kernel(KernelConfig c, CacheDevicePtrs d, AttnSeq s,
                                         float* k_out, float* v_out) {
  __shared__ uint32_t off[kMaxHeadDimForDecompress + 1];
  const int blk = blockIdx.x, tile = blockIdx.y;
  const int H = c.n_kv_heads, D = c.head_dim, N = c.block_tokens;
  const bool is_v = tile >= H;
  float* out = is_v ? v_out : k_out;
  if (!out) return;
  const int h = is_v ? tile - H : tile;
  const uint8_t* blob =
      reinterpret_cast<const uint8_t*>(d.block_table[static_cast<size_t>(s.seq) * c.max_blocks + blk]);
  const fmt::Shape SH = fmt::make_shape(H, D, N, c.groups, c.bits_k, c.bits_v, c.has_perm != 0);
  const fmt::BlockLayout& BL = SH.layout;
  size_t toff, tsz;
  SH.tile_extent(blob, is_v ? fmt::kV : fmt::kK, h, &toff, &tsz);
  const int bits = is_v ? c.bits_v : c.bits_k;
  const int e = fmt::len_bits(bits);
  const int grp = c.groups == 1 ? 0 : h;
  const int32_t* z = reinterpret_cast<const int32_t*>(blob + (is_v ? BL.v_zero_at : BL.k_zero_at)) + grp * N;
  const float* sc = reinterpret_cast<const float*>(blob + (is_v ? BL.v_scale_at : BL.k_scale_at)) + grp * N;
  const uint8_t* rp = blob + toff;
  const size_t MB = fmt::mins_bytes(D, bits), LB = fmt::lens_bytes(D, bits);
  const int ch = threadIdx.x;
  for (int r = 0; r < N / 16; ++r) {
    int L = 0;
    uint32_t mn = 0;
    if (ch < D) {
      mn = fmt::read_field(rp, ch, bits);
      L = static_cast<int>(fmt::read_field(rp + MB, ch, e));
      off[ch] = 2u * L;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      uint32_t run = 0;
      for (int i = 0; i < D; ++i) { uint32_t v = off[i]; off[i] = run; run += v; }
      off[D] = run;
    }
    __syncthreads();
    const uint8_t* pay = rp + MB + LB;
    if (ch < D) {
      uint64_t lo = 0, hi = 0;
      fmt::read_pack_halves(pay + off[ch], L, &lo, &hi);
      for (int i = 0; i < 16; ++i) {
        const int slot = 16 * r + i;
        const int t = c.has_perm ? blob[BL.perm_at + slot] : slot;
        fmt::Affine a;
        a.zero = z[slot];
        a.scale = sc[slot];
        const uint32_t q = mn + fmt::pack_offset(lo, hi, L, i);
        out[(static_cast<size_t>(blk) * N + t) * H * D + static_cast<size_t>(h) * D + ch] =
            fmt::dequantize(q, a);
      }
    }
    rp = pay + off[D];
    __syncthreads();
  }
}

// Device. Grid res_len, 256 threads: residual token i -> row n_blocks*N + i (fp32).
__global__ void decompress_residual_kernel(KernelConfig c, CacheDevicePtrs d, AttnSeq s, float* k_out,
                                           float* v_out) {
  const void* ring_k = reinterpret_cast<const void*>(d.ring_table[2 * s.seq]);
  const void* ring_v = reinterpret_cast<const void*>(d.ring_table[2 * s.seq + 1]);
  const size_t row = static_cast<size_t>(c.n_kv_heads) * c.head_dim;
  const int i = blockIdx.x;
  const size_t dst = (static_cast<size_t>(s.n_blocks) * c.block_tokens + i) * row;
  const size_t src = static_cast<size_t>((s.ring_start + i) % c.ring_tokens) * row;
  for (size_t j = threadIdx.x; j < row; j += blockDim.x) {
    if (k_out) k_out[dst + j] = load_elem(ring_k, src + j, c.kv_dtype);
    if (v_out) v_out[dst + j] = load_elem(ring_v, src + j, c.kv_dtype);
  }
}

}  // namespace

void launch_decompress(const KernelConfig& c, const CacheDevicePtrs& d, const AttnSeq& s,
                       float* k_out, float* v_out, cudaStream_t stream) {
  if (s.n_blocks > 0) {
    dim3 g(s.n_blocks, 2 * c.n_kv_heads);
    decompress_blocks_kernel<<<g, kMaxHeadDimForDecompress, 0, stream>>>(c, d, s, k_out, v_out);
    check_launch("decompress_blocks_kernel");
  }
  if (s.res_len > 0) {
    decompress_residual_kernel<<<s.res_len, 256, 0, stream>>>(c, d, s, k_out, v_out);
    check_launch("decompress_residual_kernel");
  }
}

}  // namespace cu
}  // namespace packkv
