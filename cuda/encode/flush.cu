// GPU encoder: append-time flush of residual-window blocks into compressed blobs that
// are byte-identical to the CPU encoder (block_codec.cpp encode_block). PACKKV.md
// sections 2.3 (flush), 3 (quantization), 4.2 (median repacking), 5 (bit-packing,
// generalized by src/format/round_tile.h).
//
// A flush batch runs three kernels on the caller's stream, no host synchronization
// (four with K centring: first flush_k_mean_kernel, flush_k_mean.cu, the mean of K over
// block 0 of the sequences whose block 0 is in the batch; stages 1 and 2 read K - mu):
//   1. flush_stats_kernel   (flush_stats.cu; N x blocks CTAs, one CTA per token):
//      per-token min/max per scale group, affine (z, s), non-finite check, and the lower
//      median of the token's V codes (median repacking).
//   2. flush_tiles_kernel   (flush_tiles.cu; 2H x blocks CTAs): stable descending sort
//      of the medians (the permutation), quantization of one tile into shared memory,
//      encode lengths, offsets (block scan) and the tile bytes, staged in scratch.
//   3. flush_place_kernel   (flush_place.cu; one warp per descriptor): places the blobs
//      of each sequence, in block order, in its pages (kernels.h place_next; the host
//      guarantees the pages exist) and records their addresses in the block table.
//   4. flush_commit_kernel  (flush_commit.cu; blocks CTAs): writes header, perm, zero
//      points and scales and copies the tiles to the blob's address.
// The residual-window update is residual_ring.cu.
#include <cuda_runtime.h>

#include "encode/encode_common.cuh"

namespace packkv {
namespace cu {

size_t flush_scratch_bytes_per_block(const KernelConfig& c) { return scratch_layout(c).total; }

void launch_flush(const KernelConfig& c, const FlushBatch& b, const CacheDevicePtrs& d,
                  const void* k_new, const void* v_new, int in_dtype, uint8_t* scratch,
                  cudaStream_t stream) {
  if (b.total_blocks == 0) return;
  launch_flush_k_mean(c, b, d, k_new, in_dtype, stream);
  launch_flush_stats(c, b, d, k_new, v_new, in_dtype, scratch, stream);
  launch_flush_tiles(c, b, d, k_new, v_new, in_dtype, scratch, stream);
  launch_flush_place(c, b, d, scratch, stream);
  launch_flush_commit(c, b, d, scratch, stream);
}

}  // namespace cu
}  // namespace packkv
