// Compression of one block (block_tokens tokens of one sequence, all KV heads, K and
// V) into a block blob, and back. The blob layout is defined in format/shape.h and
// format/round_tile.h.
// Steps: per-token quantization (quantize.cpp), repacking (repack.cpp), bit-packing
// (bitpack.cpp). This is the CPU encoder; the CUDA encoder must produce the same bytes.
// Byte accounting of a blob: fmt::Shape::sizes.
#ifndef PACKKV_BLOCK_CODEC_H
#define PACKKV_BLOCK_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include <vector>

#include "api/config.h"
#include "format/shape.h"

namespace packkv {

// Encodes one block. k, v: float [block_tokens][n_kv_heads][head_dim], original token
// order, finite values (already rounded to kv_dtype). Appends the blob to *out.
void encode_block(const Config& c, const float* k, const float* v, std::vector<uint8_t>* out);

// Decodes a blob into float [block_tokens][n_kv_heads][head_dim] in original token
// order (x^ = (q + z) * s). Either output may be null.
void decode_block(const fmt::Shape& shape, const uint8_t* blob, float* k, float* v);

}  // namespace packkv

#endif  // PACKKV_BLOCK_CODEC_H
