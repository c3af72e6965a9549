// Flush stage 3 (encode_common.cuh): blob allocation and commit.
#include <cuda_runtime.h>

#include "cuda_check.h"
#include "encode/encode_common.cuh"
#include "format/shape.h"

namespace packkv {
namespace cu {
namespace {

// Device. Grid total_blocks, 1024 threads. Writes the blob of block fb at the address
// flush_place_kernel recorded in the block table: tile_end, perm, zero points and scales
// (stored token order; for a compact cache the int16 / 16-bit fields, or a wide fallback
// block's marker and wide fields after the tiles, as codec/block_codec.cpp) and the
// staged tiles, and adds to the per-sequence stats.
constexpr int kCommitThreads = 1024;  // the blob copy is latency-bound: many loads in flight
__global__ void __launch_bounds__(kCommitThreads) flush_commit_kernel(
    KernelConfig c, FlushBatch b, CacheDevicePtrs d, uint8_t* scratch) {
  __shared__ uint8_t* blob_s;
  __shared__ uint32_t ends[2 * 256];  // tile_end, H <= 256 handled in the first loop
  const int fb = blockIdx.x;
  const FlushSeq& s = b.s[find_desc(b, fb)];
  const int blk = fb - s.block_start;
  const ScratchLayout SL = scratch_layout(c);
  const uint8_t* sc = scratch + static_cast<size_t>(fb) * SL.total;
  const int H = c.shape.n_kv_heads, N = c.shape.block_tokens, G = c.shape.scale_groups;
  const fmt::BlockLayout& BL = c.shape.layout;
  const uint32_t* sizes = reinterpret_cast<const uint32_t*>(sc + SL.sizes);
  const bool small = 2 * H <= 512;
  const bool compact = c.shape.zs == fmt::ZsFormat::kCompact;
  const bool wide = block_zs_wide(c, SL, sc);  // for a compact cache: wide fallback block
  const size_t meta = static_cast<size_t>(G) * N * 4;  // one wide [G][N] array
  __shared__ size_t wide_at_s;  // wide fallback: where its wide fields start
  if (threadIdx.x == 0) {
    uint32_t run = 0, ktiles = 0;
    for (int t = 0; t < 2 * H; ++t) {
      run += sizes[t];
      if (small) ends[t] = run;
      if (t == H - 1) ktiles = run;
    }
    const size_t wide_at = (BL.tiles_at + run + 3) & ~static_cast<size_t>(3);
    wide_at_s = wide_at;
    blob_s = reinterpret_cast<uint8_t*>(d.block_table[static_cast<size_t>(s.seq) * c.max_blocks + s.first_block + blk]);
    // The blob's byte split (fmt::BlobSizes, as Shape::sizes reads it back), added to the
    // sequence's counters.
    fmt::BlobSizes* st = d.seq_stats + s.seq;
    auto add = [](long long* field, unsigned long long v) {
      atomicAdd(reinterpret_cast<unsigned long long*>(field), v);
    };
    const unsigned long long perm_b = c.shape.has_perm ? static_cast<unsigned long long>(N) : 0ull;
    add(&st->k_tiles, ktiles);
    add(&st->v_tiles, run - ktiles);
    const unsigned long long fb_meta = compact && wide ? 2 * meta : 0ull;  // wide fields after the tiles
    add(&st->k_scale, BL.v_zero_at - BL.k_zero_at + fb_meta);
    add(&st->v_scale, BL.tiles_at - BL.v_zero_at + fb_meta);
    add(&st->header, BL.k_zero_at - perm_b + (compact && wide ? wide_at - (BL.tiles_at + run) : 0ull));
    add(&st->perm, perm_b);
  }
  __syncthreads();
  uint8_t* blob = blob_s;
  uint32_t* hdr = reinterpret_cast<uint32_t*>(blob);
  if (small) {
    for (int t = threadIdx.x; t < 2 * H; t += blockDim.x) hdr[t] = ends[t];
  } else if (threadIdx.x == 0) {
    uint32_t run = 0;
    for (int t = 0; t < 2 * H; ++t) { run += sizes[t]; hdr[t] = run; }
  }
  // perm and padding up to the zero points.
  for (size_t i = BL.perm_at + threadIdx.x; i < BL.k_zero_at; i += blockDim.x)
    blob[i] = (c.shape.has_perm && i < BL.perm_at + N) ? sc[SL.perm + (i - BL.perm_at)] : 0;
  // Zero points and scales in stored token order: wide fields (a wide cache, or after
  // the tiles of a wide fallback block), compact ones, or the fallback's marker.
  const uint8_t* perm = sc + SL.perm;
  uint8_t* wide_fields = compact ? blob + wide_at_s : blob + BL.k_zero_at;
  for (int i = threadIdx.x; i < G * N; i += blockDim.x) {
    const int g = i / N, j = i - g * N;
    const int t = c.shape.has_perm ? perm[j] : j;
    const int src = g * N + t;
    if (wide) {
      reinterpret_cast<int32_t*>(wide_fields)[i] = reinterpret_cast<const int32_t*>(sc + SL.kz)[src];
      reinterpret_cast<float*>(wide_fields + meta)[i] = reinterpret_cast<const float*>(sc + SL.ks)[src];
      reinterpret_cast<int32_t*>(wide_fields + 2 * meta)[i] = reinterpret_cast<const int32_t*>(sc + SL.vz)[src];
      reinterpret_cast<float*>(wide_fields + 3 * meta)[i] = reinterpret_cast<const float*>(sc + SL.vs)[src];
    }
    if (compact) {
      int16_t kz = 0, vz = 0;
      uint16_t ks = 0, vs = 0;
      if (!wide) {
        kz = static_cast<int16_t>(reinterpret_cast<const int32_t*>(sc + SL.kzc)[src]);
        ks = fmt::scale16_encode(reinterpret_cast<const float*>(sc + SL.ksc)[src]);
        vz = static_cast<int16_t>(reinterpret_cast<const int32_t*>(sc + SL.vzc)[src]);
        vs = fmt::scale16_encode(reinterpret_cast<const float*>(sc + SL.vsc)[src]);
      } else if (i == 0) {
        ks = fmt::kWideMarker;
      }
      reinterpret_cast<int16_t*>(blob + BL.k_zero_at)[i] = kz;
      reinterpret_cast<uint16_t*>(blob + BL.k_scale_at)[i] = ks;
      reinterpret_cast<int16_t*>(blob + BL.v_zero_at)[i] = vz;
      reinterpret_cast<uint16_t*>(blob + BL.v_scale_at)[i] = vs;
    }
  }
  // Tiles: all threads copy 2-byte units (tile sizes and offsets are even); the
  // owning tile of a unit is found by binary search over the tile ends.
  uint32_t total_tiles = 0;
  if (small) {
    total_tiles = ends[2 * H - 1];
    const int nt = 2 * H;
    constexpr int U = 8;  // units in flight per thread
    const uint32_t units = total_tiles / 2;
    for (uint32_t u0 = threadIdx.x; u0 < units; u0 += U * blockDim.x) {
      uint16_t v[U];
      uint32_t at[U];
#pragma unroll
      for (int k = 0; k < U; ++k) {
        const uint32_t u = u0 + k * blockDim.x;
        at[k] = 0xffffffffu;
        v[k] = 0;
        if (u < units) {
          const uint32_t byte = 2 * u;
          int lo = 0, hi = nt - 1;
          while (lo < hi) {
            const int mid = (lo + hi) >> 1;
            if (ends[mid] > byte) hi = mid; else lo = mid + 1;
          }
          const uint32_t begin = lo == 0 ? 0u : ends[lo - 1];
          v[k] = *reinterpret_cast<const uint16_t*>(sc + SL.tiles + SL.tile_stride * lo + (byte - begin));
          at[k] = byte;
        }
      }
#pragma unroll
      for (int k = 0; k < U; ++k)
        if (at[k] != 0xffffffffu) *reinterpret_cast<uint16_t*>(blob + BL.tiles_at + at[k]) = v[k];
    }
  } else {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int nwarps = blockDim.x >> 5;
    for (int t = 0; t < 2 * H; ++t) {
      const uint32_t sz = sizes[t];
      if (t % nwarps == warp) {
        const uint8_t* src = sc + SL.tiles + SL.tile_stride * t;
        uint8_t* dst = blob + BL.tiles_at + total_tiles;
        for (uint32_t i = lane; i < sz; i += 32) dst[i] = src[i];
      }
      total_tiles += sz;
    }
  }
  const size_t begin = total_tiles;
  // Zero the padding before a wide fallback's fields, and the alignment tail so that
  // over-reads see defined bytes.
  const size_t tiles_end = BL.tiles_at + begin;
  const size_t total = compact && wide ? wide_at_s + 4 * meta : tiles_end;
  for (size_t i = tiles_end + threadIdx.x; i < (compact && wide ? wide_at_s : tiles_end); i += blockDim.x) blob[i] = 0;
  for (size_t i = total + threadIdx.x; i < align16(total); i += blockDim.x) blob[i] = 0;
}

}  // namespace

void launch_flush_commit(const KernelConfig& c, const FlushBatch& b, const CacheDevicePtrs& d, uint8_t* scratch,
                         cudaStream_t stream) {
  flush_commit_kernel<<<b.total_blocks, kCommitThreads, 0, stream>>>(c, b, d, scratch);
  check_launch("flush_commit_kernel");
}

}  // namespace cu
}  // namespace packkv
