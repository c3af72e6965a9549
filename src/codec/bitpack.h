// Bit-packing of one tile: block_tokens tokens x head_dim channels of one KV head, in
// rounds of 16 tokens; per pack a minimum (b bits), an encode length (e bits) and 2L
// payload bytes (PACKKV.md section 5; layout in format/round_tile.h, walked with format/round_cursor.h).
#ifndef PACKKV_BITPACK_H
#define PACKKV_BITPACK_H

#include <stddef.h>
#include <stdint.h>

#include <vector>

namespace packkv {

// Appends the tile of codes[t * token_stride + c] (t < n_tokens, stored order; c <
// head_dim; each < 2^bits) to *out. n_tokens is a multiple of 16.
void encode_tile(const uint8_t* codes, size_t token_stride, int n_tokens, int head_dim, int bits,
                 std::vector<uint8_t>* out);

// Decodes a tile into codes[t * token_stride + c]; returns the tile's size in bytes.
size_t decode_tile(const uint8_t* tile, int n_tokens, int head_dim, int bits, uint8_t* codes,
                   size_t token_stride);

}  // namespace packkv

#endif  // PACKKV_BITPACK_H
