// Reconstruction of one sequence's K and V as fp32 in original token order
// (packkv_cache_decompress): x^ = (q + z) * s for compressed blocks (format/affine.h
// dequantize, the same expression as the CPU decoder, so results are bit-identical),
// then the sink tokens and the residual window converted to fp32 (K centring: mu added
// back to the blocks' K). Not performance-critical: one warp per (block, tile), which
// stages the tile and decodes it with the device tile walk of the attention kernels
// (attention/tile_walk.cuh), so every kernel reads tiles one way.
#include <cuda_pipeline_primitives.h>
#include <cuda_runtime.h>

#include "attention/tile_walk.cuh"
#include "common/rules.h"
#include "cuda_check.h"
#include "device_util.cuh"
#include "kernels.h"
#include "format/affine.h"
#include "format/shape.h"

namespace packkv {
namespace cu {
namespace {

// Shared memory of decompress_blocks_kernel: the round table, then the staged tile (a
// copy starts up to 15 bytes before the tile and bits_at reads a word past its end).
constexpr size_t kDecompressTables = ((kMaxRounds + 1 + 8 * kMaxRounds) * sizeof(int) + 15) & ~static_cast<size_t>(15);
size_t decompress_smem(const KernelConfig& c) { return kDecompressTables + align16(c.max_tile + 48); }

// Device. Grid (n_blocks, 2H), one warp, dynamic smem decompress_smem(c). Decodes tile
// blockIdx.y (K heads, then V heads) of block blockIdx.x into k_out/v_out float [T][H][D]
// at original positions: stages it, walks its rounds (walk_tile), then octet i of the
// warp decodes rounds i, i + 4, ... (lane_pos, for_channels, for_codes), as in attention.
__global__ void decompress_blocks_kernel(KernelConfig c, CacheDevicePtrs d, AttnSeq s, float* k_out, float* v_out) {
  extern __shared__ __align__(16) uint8_t smem[];
  int* round_start = reinterpret_cast<int*>(smem);
  int* pre = round_start + kMaxRounds + 1;
  uint8_t* buf = smem + kDecompressTables;
  const fmt::Shape& SH = c.shape;
  const int blk = blockIdx.x, tile_index = blockIdx.y;
  const int H = SH.n_kv_heads, D = SH.head_dim, N = SH.block_tokens;
  const int kv = tile_index >= H ? fmt::kV : fmt::kK;
  float* out = kv == fmt::kV ? v_out : k_out;
  if (!out) return;
  const int h = tile_index - kv * H;
  const uint8_t* blob =
      reinterpret_cast<const uint8_t*>(d.block_table[static_cast<size_t>(s.seq) * c.max_blocks + blk]);
  const fmt::HeadView hv = SH.head(blob, kv, h);
  // K centring: blocks hold K - mu; k^ = (K - mu)^ + mu in fp32, as the CPU backend
  const float* mu = kv == fmt::kK && c.k_center
                        ? d.k_mean + static_cast<size_t>(s.seq) * H * D + static_cast<size_t>(h) * D
                        : nullptr;
  const int bits = SH.bits(kv), e = fmt::len_bits(bits), R = SH.rounds();
  const uint32_t tile = stage(buf, hv.tile, hv.tile_bytes);
  __pipeline_commit();
  __pipeline_wait_prior(0);
  __syncwarp();
  const uint32_t* T = reinterpret_cast<const uint32_t*>(buf);
  walk_tile(T, tile, D, bits, e, R, round_start, pre);
  const int lane = threadIdx.x & 31, octet = lane >> 3, octet_lane = lane & 7;
  for (int r = octet; r < R; r += kRoundBatch) {
    const LanePos p = lane_pos(tile, round_start, pre, r, octet_lane, D, bits, e);
    for_channels(T, p, D, bits, e, [&](int j, uint32_t mn, uint32_t L, uint32_t pbit) {
      const int ch = octet_lane * (D >> 3) + j;
      for_codes<false>(T, pbit, L, [&](int i, float code) {
        const int slot = fmt::kPackTokens * r + i;
        const uint32_t q = mn + static_cast<uint32_t>(code);
        const float x = fmt::dequantize(q, hv.affine(slot));
        out[(static_cast<size_t>(s.sink_len) + static_cast<size_t>(blk) * N + hv.original(slot)) * H * D +
            static_cast<size_t>(h) * D + ch] = mu ? x + mu[ch] : x;
      });
    });
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
    const size_t smem = decompress_smem(c);
    if (smem > 48 * 1024)
      check(cudaFuncSetAttribute(decompress_blocks_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 static_cast<int>(smem)),
            "cudaFuncSetAttribute(decompress_blocks_kernel)");
    decompress_blocks_kernel<<<g, 32, smem, stream>>>(c, d, s, k_out, v_out);
    check_launch("decompress_blocks_kernel");
  }
  if (s.sink_len + s.residual_len > 0) {
    decompress_residual_kernel<<<s.sink_len + s.residual_len, 256, 0, stream>>>(c, d, s, k_out, v_out);
    check_launch("decompress_residual_kernel");
  }
}

}  // namespace cu
}  // namespace packkv
