// The tile of format FormatId::kRoundMajor (format/shape.h): its byte layout and the
// primitives that read and write it, for host (C++) and device (CUDA) code alike.
// Decoders walk a tile with the round cursor (format/round_cursor.h), not by hand.
//
// Vocabulary (DESIGN.md): a *block* is block_tokens (N, a multiple of 16) consecutive
// tokens of one sequence that are compressed together; a *tile* is the compressed
// bytes of one block of one KV head, for K or for V; a *pack* is 16 consecutive
// (stored-order) tokens of one channel; a *round* is the 16 tokens of all packs that
// share those tokens.
//
// Tile layout (our generalization of PACKKV.md section 5 to any head_dim D multiple of
// 16 and any code width b in 1..8; e = len_bits(b) bits per encode length):
//     for each round r = 0 .. N/16-1:
//        MINS     D fields of b bits, LSB-first bitstream, field index = channel  (D*b/8 bytes)
//        LENS     D fields of e bits, LSB-first bitstream, field index = channel  (D*e/8 bytes)
//        PAYLOAD  for channel c = 0 .. D-1: the pack of channel c, 2*L_c bytes
// A pack of 16 values x_0..x_15 (stored token order) with minimum mn and encode
// length L = ceil(log2(max - mn + 1)) is the word W = sum_i (x_i - mn) << ((15-i)*L),
// stored as its low 2L bytes, least significant byte first (PACKKV.md section 5.1;
// test vector T1). For L <= 8 it splits into two 8-token halves of L bytes each:
// bytes [0, L) hold tokens 8..15 (token 15 in the lowest bits), bytes [L, 2L) tokens 0..7.
// Tiles carry no header: a decoder walks the rounds, and the size of a round follows
// from its LENS.
//
// The codes themselves (how a value becomes a b-bit code) are the quantizer's business:
// format/affine.h. The block blob around the tiles: format/shape.h.
#ifndef PACKKV_FORMAT_ROUND_TILE_H
#define PACKKV_FORMAT_ROUND_TILE_H

#include <stddef.h>
#include <stdint.h>

#include "common/hd.h"

namespace packkv {
namespace fmt {

constexpr int kPackTokens = 16;  // tokens per pack and per round (PACKKV.md section 5.1)
constexpr int kMaxBits = 8;      // widest code

// e = ceil(log2(b + 1)): bits of one encode length field (PACKKV.md section 5.2).
PACKKV_HD int len_bits(int b) {
  int e = 0;
  while ((1 << e) < b + 1) ++e;
  return e;
}

// L = ceil(log2(range + 1)): bits per value of a pack whose max - min is range (T2).
PACKKV_HD int encode_length(uint32_t range) {
  int l = 0;
  while (l < 32 && (range >> l) != 0u) ++l;
  return l;
}

PACKKV_HD size_t mins_bytes(int head_dim, int bits) { return (size_t)head_dim * bits / 8; }
PACKKV_HD size_t lens_bytes(int head_dim, int bits) {
  return (size_t)head_dim * len_bits(bits) / 8;
}
// MINS + LENS: the bytes of every round before its payload.
PACKKV_HD size_t round_header_bytes(int head_dim, int bits) {
  return mins_bytes(head_dim, bits) + lens_bytes(head_dim, bits);
}
// Largest possible tile (all encode lengths = b).
PACKKV_HD size_t max_tile_bytes(int block_tokens, int head_dim, int bits) {
  return (size_t)(block_tokens / kPackTokens) *
         (mins_bytes(head_dim, bits) + lens_bytes(head_dim, bits) + (size_t)head_dim * 2 * bits);
}

// Reads field k of width w (1..8) from an LSB-first bitstream; touches only the bytes
// that hold the field.
PACKKV_HD uint32_t read_field(const uint8_t* p, size_t k, int w) {
  size_t bit = k * (size_t)w;
  size_t byte = bit >> 3;
  int sh = (int)(bit & 7);
  uint32_t v = (uint32_t)p[byte] >> sh;
  if (sh + w > 8) v |= (uint32_t)p[byte + 1] << (8 - sh);
  return v & ((1u << w) - 1u);
}

// Reads fields 0 .. n-1 (n a multiple of 8) of width W (1..8) of an LSB-first bitstream
// into out: the bulk form of read_field for a whole MINS or LENS section (8 fields are
// exactly W bytes). Touches only the n * W / 8 bytes of the fields.
template <int W>
PACKKV_HD void read_fields_w(const uint8_t* p, int n, uint8_t* out) {
  constexpr uint64_t mask = (1u << W) - 1u;
  for (int k = 0; k < n; k += 8, p += W) {
    uint64_t u = 0;
    for (int b = 0; b < W; ++b) u |= (uint64_t)p[b] << (8 * b);
    for (int i = 0; i < 8; ++i) out[k + i] = (uint8_t)((u >> (i * W)) & mask);
  }
}
PACKKV_HD void read_fields(const uint8_t* p, int n, int w, uint8_t* out) {
  switch (w) {
    case 1: read_fields_w<1>(p, n, out); break;
    case 2: read_fields_w<2>(p, n, out); break;
    case 3: read_fields_w<3>(p, n, out); break;
    case 4: read_fields_w<4>(p, n, out); break;
    case 5: read_fields_w<5>(p, n, out); break;
    case 6: read_fields_w<6>(p, n, out); break;
    case 7: read_fields_w<7>(p, n, out); break;
    default: read_fields_w<8>(p, n, out); break;
  }
}

// The inverse of read_fields_w: writes the n fields in[0..n) (n a multiple of 8; each
// masked to W bits) as n * W / 8 bytes of an LSB-first bitstream, the same bytes as n
// write_field calls on zeroed bytes.
template <int W>
PACKKV_HD void write_fields_w(uint8_t* p, int n, const uint8_t* in) {
  constexpr uint64_t mask = (1u << W) - 1u;
  for (int k = 0; k < n; k += 8, p += W) {
    uint64_t u = 0;
    for (int i = 0; i < 8; ++i) u |= ((uint64_t)in[k + i] & mask) << (i * W);
    for (int b = 0; b < W; ++b) p[b] = (uint8_t)(u >> (8 * b));
  }
}
PACKKV_HD void write_fields(uint8_t* p, int n, int w, const uint8_t* in) {
  switch (w) {
    case 1: write_fields_w<1>(p, n, in); break;
    case 2: write_fields_w<2>(p, n, in); break;
    case 3: write_fields_w<3>(p, n, in); break;
    case 4: write_fields_w<4>(p, n, in); break;
    case 5: write_fields_w<5>(p, n, in); break;
    case 6: write_fields_w<6>(p, n, in); break;
    case 7: write_fields_w<7>(p, n, in); break;
    default: write_fields_w<8>(p, n, in); break;
  }
}

// ORs field k of width w into an LSB-first bitstream (the bytes must start zeroed).
PACKKV_HD void write_field(uint8_t* p, size_t k, int w, uint32_t value) {
  size_t bit = k * (size_t)w;
  size_t byte = bit >> 3;
  int sh = (int)(bit & 7);
  value &= (1u << w) - 1u;
  p[byte] = (uint8_t)(p[byte] | (uint8_t)(value << sh));
  if (sh + w > 8) p[byte + 1] = (uint8_t)(p[byte + 1] | (uint8_t)(value >> (8 - sh)));
}

// Writes the 2L payload bytes of one pack of offsets d[0..15] (each < 2^L; any unsigned
// integer element type).
template <typename T>
PACKKV_HD void write_pack(uint8_t* out, const T* d, int L) {
  if (L == 0) return;
  uint64_t lo = 0, hi = 0;
  for (int i = 0; i < 8; ++i) {
    hi = (hi << L) | (uint64_t)d[i];
    lo = (lo << L) | (uint64_t)d[8 + i];
  }
  for (int i = 0; i < L; ++i) {
    out[i] = (uint8_t)(lo >> (8 * i));
    out[L + i] = (uint8_t)(hi >> (8 * i));
  }
}

// Reads the two 8-token halves of one pack: tokens 8..15 in *lo, 0..7 in *hi.
PACKKV_HD void read_pack_halves(const uint8_t* in, int L, uint64_t* lo, uint64_t* hi) {
  uint64_t a = 0, b = 0;
  for (int i = 0; i < L; ++i) {
    a |= (uint64_t)in[i] << (8 * i);
    b |= (uint64_t)in[L + i] << (8 * i);
  }
  *lo = a;
  *hi = b;
}

// Offset (value - pack minimum) of token i (0..15) of a pack read by read_pack_halves.
PACKKV_HD uint32_t pack_offset(uint64_t lo, uint64_t hi, int L, int i) {
  if (L == 0) return 0;
  uint64_t mask = (L >= 64) ? ~0ull : ((1ull << L) - 1ull);
  return i < 8 ? (uint32_t)((hi >> ((7 - i) * L)) & mask)
               : (uint32_t)((lo >> ((15 - i) * L)) & mask);
}

}  // namespace fmt
}  // namespace packkv

#endif  // PACKKV_FORMAT_ROUND_TILE_H
