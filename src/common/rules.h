// Rules that the CPU backend (src/cpu/) and the CUDA backend (cuda/) both follow, written
// once for both (PACKKV_HD: host and device compile this header): the flush policy, the
// alignment of blobs, the bytes of an element, and the cache statistics by name. The
// lowest layer: includes nothing of the library but hd.h and the public header.
// Pure functions; thread-safe.
#ifndef PACKKV_COMMON_RULES_H
#define PACKKV_COMMON_RULES_H

#include <stddef.h>
#include <stdint.h>

#include "common/hd.h"
#include "packkv/packkv.h"

namespace packkv {

// ---- alignment ----

// Every blob starts at a multiple of kBlobAlign bytes in a backend's store (CPU: the
// sequence's byte vector; CUDA: the pool chunk), so that the kernels' 16-byte loads of a
// tile start aligned and the uint32 tile_end header can be read in place.
constexpr size_t kBlobAlign = 16;

// x rounded up to a multiple of 16 (kBlobAlign).
PACKKV_HD size_t align16(size_t x) { return (x + 15) & ~(size_t)15; }

// ---- element size ----

// Bytes of one element of dtype (packkv_dtype_t as int, so that kernels can pass it
// along): 2 for F16 and BF16, 4 for F32, 0 for anything else (a host caller that must
// reject unknown dtypes uses dtype_size() of common/dtype.h, which throws).
PACKKV_HD size_t elem_bytes(int dtype) {
  return dtype == PACKKV_DTYPE_F32 ? 4 : (dtype == PACKKV_DTYPE_F16 || dtype == PACKKV_DTYPE_BF16) ? 2 : 0;
}

// ---- flush policy (PACKKV.md section 2.3; test vector T7) ----

// Blocks released from a residual window of `window` tokens (the residual tokens before
// an append plus the new ones): the oldest block_tokens tokens are compressed while at
// least residual_tokens + block_tokens tokens remain, i.e.
//     0                                           if window < residual + block
//     floor((window - residual) / block)          otherwise.
// residual_tokens >= 0, block_tokens >= 1, window >= 0.
PACKKV_HD int64_t blocks_to_flush(int64_t window, int residual_tokens, int block_tokens) {
  if (window < (int64_t)residual_tokens + block_tokens) return 0;
  return (window - residual_tokens) / block_tokens;
}

// ---- statistics (packkv_cache_stats_t) ----

// Byte split of one blob (the fields sum to its size; fmt::Shape::sizes computes it from
// a blob). Six 8-byte counters in this order, so that a device array of BlobSizes (one
// per sequence) can be summed field by field with atomics.
struct BlobSizes {
  long long k_tiles;
  long long v_tiles;
  long long k_scale;  // K zero points and scales (a compact wide fallback block: both encodings)
  long long v_scale;
  long long header;   // tile_end array and alignment padding
  long long perm;
  PACKKV_HD long long total() const { return k_tiles + v_tiles + k_scale + v_scale + header + perm; }
};
static_assert(sizeof(BlobSizes) == 6 * 8, "BlobSizes is six 8-byte counters");

// Adds one blob's byte split (BlobSizes: what the blob holds) to the stats. The
// blob's header (tile_end array and padding) counts as index bytes; a backend adds its
// own index bytes (block table entries, store padding) itself. Host.
inline void stats_add_blob(packkv_cache_stats_t* s, const BlobSizes& b) {
  s->k_tile_bytes += b.k_tiles;
  s->v_tile_bytes += b.v_tiles;
  s->k_scale_bytes += b.k_scale;
  s->v_scale_bytes += b.v_scale;
  s->index_bytes += b.header;
  s->perm_bytes += b.perm;
}

// Fills the derived fields once the per-sequence counters are summed: n_tokens,
// compressed_bytes_used, and fp16_bytes (K and V of every token as fp16; token_values =
// n_kv_heads * head_dim). Host.
inline void stats_finish(packkv_cache_stats_t* s, int64_t token_values) {
  s->n_tokens = s->n_compressed_tokens + s->n_residual_tokens;
  s->compressed_bytes_used =
      s->k_tile_bytes + s->v_tile_bytes + s->k_scale_bytes + s->v_scale_bytes + s->index_bytes + s->perm_bytes;
  s->fp16_bytes = s->n_tokens * token_values * 2 * 2;
}

}  // namespace packkv

#endif  // PACKKV_COMMON_RULES_H
