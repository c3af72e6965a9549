// Compression of one block (block_tokens tokens of one sequence, all KV heads, K and
// V) into a block blob, and back. The blob layout is defined in tile_format.h.
// Steps: per-token quantization (quantize.cpp), repacking (repack.cpp), bit-packing
// (bitpack.cpp). This is the CPU encoder; the CUDA encoder must produce the same bytes.
#ifndef PACKKV_BLOCK_CODEC_H
#define PACKKV_BLOCK_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include <vector>

#include "config.h"

namespace packkv {

// Encodes one block. k, v: float [block_tokens][n_kv_heads][head_dim], original token
// order, finite values (already rounded to kv_dtype). Appends the blob to *out.
void encode_block(const Config& c, const float* k, const float* v, std::vector<uint8_t>* out);

// Decodes a blob into float [block_tokens][n_kv_heads][head_dim] in original token
// order (x^ = (q + z) * s). Either output may be null.
void decode_block(const Config& c, const uint8_t* blob, float* k, float* v);

// Byte accounting of one blob (all fields sum to its size).
struct BlobSizes {
  int64_t header = 0;   // tile_end array and alignment padding
  int64_t perm = 0;
  int64_t k_scale = 0;  // K zero points and scales
  int64_t v_scale = 0;
  int64_t k_tiles = 0;
  int64_t v_tiles = 0;
  int64_t total() const { return header + perm + k_scale + v_scale + k_tiles + v_tiles; }
};
BlobSizes blob_sizes(const Config& c, const uint8_t* blob);

}  // namespace packkv

#endif  // PACKKV_BLOCK_CODEC_H
