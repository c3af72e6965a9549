// Validation of block blobs that did not come from this library's encoder.
//
// Contract. The decoders of the blob format (decode_block, Shape::sizes, decode_tile,
// block_scores, block_apply and the CUDA kernels) trust their input: they are only
// ever given blobs that the library's own encoders wrote into a cache, and they do no
// bounds checks of their own (a check per pack would cost decode speed). Bytes from
// anywhere else (a future import/deserialize API, a file, a fuzzer) must first pass
// validate_blob(); a blob it accepts can be given to every decoder without any read
// outside [blob, blob + size) and decodes to finite values only.
//
// The validator walks tiles with the same round cursor as the decoders
// (format/round_cursor.h: where MINS, LENS and each pack sit), but checks every length
// and offset against the tile size before it reads, and decodes codes with the
// round_tile.h primitives and dequantizes with format/affine.h; it does not share the
// decoders' fast paths, so a bug in those cannot hide a validator bug.
#ifndef PACKKV_BLOB_CHECK_H
#define PACKKV_BLOB_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include <string>

#include "format/shape.h"

namespace packkv {

// Outcome of validate_blob.
struct BlobCheck {
  bool ok = false;
  std::string error;  // first problem found, naming the field and offset; empty when ok
};

// Checks that the `size` bytes at `blob` are exactly one well-formed block blob of
// shape `shape` (layout in format/shape.h and format/round_tile.h):
//   - the shape itself describes a representable format (head_dim, block_tokens, bits, heads);
//   - blob is 4-byte aligned (the decoders read the uint32 tile_end header in place);
//   - size covers the fixed part (tile_end header, perm, zero points, scales) and
//     equals tiles_at + tile_end[2H-1] (a compact wide fallback block: that rounded up
//     to 4, plus its wide fields, with zero padding and its compact fields zero but the
//     marker); tile_end is non-decreasing;
//   - the alignment padding after perm is zero; perm is a permutation of 0..N-1;
//   - every scale is finite and every code the tiles hold dequantizes, (q + z) * s,
//     to a finite value;
//   - every tile is exactly consumed by its N/16 rounds: MINS and LENS fit, every
//     encode length L <= b, every pack's 2L payload bytes fit inside the tile, and
//     every decoded code min + offset fits in b bits.
// Never reads outside [blob, blob + size). O(size) time; allocates two small arrays
// of per-token code extremes and the error message.
BlobCheck validate_blob(const fmt::Shape& shape, const uint8_t* blob, size_t size);

}  // namespace packkv

#endif  // PACKKV_BLOB_CHECK_H
