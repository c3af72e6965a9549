// The shape of a compressed block and where everything sits in its blob, for host (C++)
// and device (CUDA) code alike. One fmt::Shape is made per cache (make_shape) and
// embedded by the CPU configuration (api/config.h: Config::shape) and by the kernels'
// configuration; its block layout is computed once, there. "Where is head h's tile,
// zero points, scales" has one answer: Shape::head().
//
// Block blob layout of FormatId::kRoundMajor (one per compressed block, contiguous, no
// padding; H KV heads, N block tokens, G scale groups = 1 or H):
//     uint32  tile_end[2H]       inclusive prefix sums of the tile sizes, in tile order
//                                (K heads 0..H-1, then V heads 0..H-1), relative to tiles_at
//     uint8   perm[N]            only when repacking is on: stored slot j holds the
//                                block's original token perm[j]
//     (zero padding to a multiple of 4 bytes)
//     k_zero[G][N]               zero points of K, stored token order
//     k_scale[G][N]              scales of K
//     v_zero[G][N]
//     v_scale[G][N]
//     tiles_at: K tile of head 0 .. H-1, then V tile of head 0 .. H-1 (format/round_tile.h)
//     [wide fallback only, see below: zero padding to a multiple of 4 bytes, then
//      int32 k_zero[G][N], float k_scale[G][N], int32 v_zero[G][N], float v_scale[G][N]]
// The zero point and scale fields come in two encodings (Shape::zs, ZsFormat):
//   kWide     int32 zero points, fp32 scales (4 + 4 bytes per token and group).
//   kCompact  int16 zero points, 16-bit scales (2 + 2 bytes): a scale field holds bits
//             30..15 of the fp32 scale (its exponent and 8 leading fraction bits; scales
//             are >= 0), i.e. the fp32 scale rounded down, and the codes are quantized
//             with that stored scale (format/affine.h: group_affine_compact). A block
//             holding a scale group that cannot be stored so without breaking the error
//             bound is written *wide fallback*: its compact fields are all zero except
//             the first K scale field, 0xFFFF (an exponent of 255, never a scale), and
//             its zero points and scales follow the tiles in the kWide encoding.
// All multi-byte fields are little-endian (the only byte order we build for).
//
// A second format (another tile layout) is one more FormatId, one more tile header
// beside round_tile.h with its own cursor, and one more case in make_shape /
// Shape::max_tile_bytes; Shape, HeadView and the blob header stay as they are.
#ifndef PACKKV_FORMAT_SHAPE_H
#define PACKKV_FORMAT_SHAPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/hd.h"
#include "common/rules.h"
#include "format/affine.h"
#include "format/round_tile.h"

namespace packkv {
namespace fmt {

// A 4-byte field at p (4-byte aligned: every field of a blob is, and blobs start 16-byte
// aligned). Device: one aligned load; host: memcpy (no aliasing questions).
template <typename T>
PACKKV_HD T load4(const uint8_t* p) {
  static_assert(sizeof(T) == 4, "4-byte fields only");
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const T*>(p);
#else
  T v;
  memcpy(&v, p, 4);
  return v;
#endif
}

// tile_end[t] of a blob (the inclusive prefix sum of the tile sizes up to tile t).
PACKKV_HD uint32_t tile_end(const uint8_t* blob, int t) {
#if defined(__CUDA_ARCH__)
  return reinterpret_cast<const uint32_t*>(blob)[t];
#else
  uint32_t v;
  memcpy(&v, blob + 4 * (size_t)t, 4);
  return v;
#endif
}

// A 2-byte field at p (2-byte aligned). Device: one aligned load; host: memcpy.
template <typename T>
PACKKV_HD T load2(const uint8_t* p) {
  static_assert(sizeof(T) == 2, "2-byte fields only");
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const T*>(p);
#else
  T v;
  memcpy(&v, p, 2);
  return v;
#endif
}

// Encoding of the zero points and scales (values = PACKKV_ZS_* of packkv.h).
enum class ZsFormat : int {
  kCompact = 0,  // int16 zero points, 16-bit scales (bits 30..15 of the fp32 scale)
  kWide = 1,     // int32 zero points, fp32 scales
};
// The first K scale field of a kCompact block written wide fallback.
constexpr uint16_t kWideMarker = 0xFFFF;

// Bytes of one zero point field (and of one scale field).
PACKKV_HD int zs_field_bytes(ZsFormat zs) { return zs == ZsFormat::kWide ? 4 : 2; }

// Format identifier: which tile layout the blobs of a cache use.
enum class FormatId : int {
  kRoundMajor = 1,  // round_tile.h: rounds of 16 tokens, per-channel packs (PACKKV.md section 5)
};

constexpr int kMaxBlockTokens = 256;  // perm entries are one byte
constexpr int kMinHeadDim = 32;
constexpr int kMaxHeadDim = 256;
constexpr int kMaxKvHeads = 4096;

// K or V: selects the tile half, the zero points and scales, and the code width.
enum Kv : int { kK = 0, kV = 1 };

// Byte offsets of the fixed part of a blob (see the layout above).
struct BlockLayout {
  size_t perm_at;      // perm[N] (valid when has_perm)
  size_t k_zero_at;    // [G][N] zero points (int32 or int16, ZsFormat)
  size_t k_scale_at;   // [G][N] scales (float or 16-bit)
  size_t v_zero_at;
  size_t v_scale_at;
  size_t tiles_at;     // first tile
};

// The fixed part's offsets for H heads, N tokens, G scale groups. Prefer Shape::layout.
PACKKV_HD BlockLayout block_layout(int n_kv_heads, int block_tokens, int scale_groups, bool has_perm,
                                   ZsFormat zs = ZsFormat::kWide) {
  BlockLayout l;
  size_t at = (size_t)2 * n_kv_heads * sizeof(uint32_t);
  l.perm_at = at;
  if (has_perm) at += (size_t)block_tokens;
  at = (at + 3) & ~(size_t)3;
  const size_t meta = (size_t)scale_groups * block_tokens * zs_field_bytes(zs);
  l.k_zero_at = at;
  l.k_scale_at = at + meta;
  l.v_zero_at = at + 2 * meta;
  l.v_scale_at = at + 3 * meta;
  l.tiles_at = at + 4 * meta;
  return l;
}

// Byte split of one blob: the stats counters by name (common/rules.h), filled by
// Shape::sizes below.
using packkv::BlobSizes;

// Zero point (scale) of entry i of a zero point (scale) array of encoding `wide` (true:
// int32 / fp32; false: int16 / 16-bit scale). THE readers of the fields (host decoders,
// decompression and the attention kernels, which read staged copies through them).
PACKKV_HD int32_t load_zero(const uint8_t* zero, bool wide, size_t i) {
  return wide ? load4<int32_t>(zero + 4 * i) : (int32_t)load2<int16_t>(zero + 2 * i);
}
PACKKV_HD float load_scale(const uint8_t* scale, bool wide, size_t i) {
  return wide ? load4<float>(scale + 4 * i) : scale16_decode(load2<uint16_t>(scale + 2 * i));
}
// Both of entry i.
PACKKV_HD Affine load_affine(const uint8_t* zero, const uint8_t* scale, bool wide, size_t i) {
  Affine a;
  a.zero = load_zero(zero, wide, i);
  a.scale = load_scale(scale, wide, i);
  return a;
}

// One head's part of a blob, for K or for V: its tile, and the zero points and scales
// of its scale group, in stored token order.
struct HeadView {
  const uint8_t* tile;
  size_t tile_bytes;
  const uint8_t* zero;   // [N] int32 (wide) or int16
  const uint8_t* scale;  // [N] float (wide) or 16-bit scale16
  const uint8_t* perm;   // uint8[N], or null when the block is not permuted
  bool wide;             // the fields are int32 / fp32 (kWide, or a wide fallback block)

  // Original token (0..N-1 inside the block) of stored slot `slot`.
  PACKKV_HD int original(int slot) const { return perm ? perm[slot] : slot; }
  // Zero point and scale of stored slot `slot`.
  PACKKV_HD Affine affine(int slot) const { return load_affine(zero, scale, wide, (size_t)slot); }
};

// Shape of the blocks of one cache. Plain data, passed by value to kernels.
struct Shape {
  FormatId format;
  int n_kv_heads;    // H
  int head_dim;      // D, multiple of 16 in [32, 256]
  int block_tokens;  // N, multiple of 16 in [16, 256]
  int scale_groups;  // G: zero points and scales per token, 1 (across heads) or H (per head)
  int bits_k;        // code widths, 1..8
  int bits_v;
  bool has_perm;     // blocks are repacked: a perm is stored
  ZsFormat zs;       // encoding of the zero points and scales
  BlockLayout layout;  // computed by make_shape from the fields above

  PACKKV_HD int bits(int kv) const { return kv == kK ? bits_k : bits_v; }
  PACKKV_HD int rounds() const { return block_tokens / kPackTokens; }
  // Values of one token in K (or V): H * D.
  PACKKV_HD int64_t token_values() const { return (int64_t)n_kv_heads * head_dim; }
  // Index of a tile in the tile_end header: K heads, then V heads.
  PACKKV_HD int tile_index(int kv, int head) const { return kv * n_kv_heads + head; }
  // Scale group of a head.
  PACKKV_HD int scale_group(int head) const { return scale_groups == 1 ? 0 : head; }
  // Byte offsets in a blob of the zero points / scales of scale group `group`, in the
  // header (encoding zs; for a wide fallback block see wide_zs_at).
  PACKKV_HD size_t zero_at(int kv, int group) const {
    return (kv == kK ? layout.k_zero_at : layout.v_zero_at) + (size_t)zs_field_bytes(zs) * group * block_tokens;
  }
  PACKKV_HD size_t scale_at(int kv, int group) const {
    return (kv == kK ? layout.k_scale_at : layout.v_scale_at) + (size_t)zs_field_bytes(zs) * group * block_tokens;
  }
  // Whether a blob's zero points and scales are int32 / fp32: always for kWide; for
  // kCompact when the blob is a wide fallback block (marker in its first K scale).
  PACKKV_HD bool zs_wide(const uint8_t* blob) const {
    return zs == ZsFormat::kWide || load2<uint16_t>(blob + layout.k_scale_at) == kWideMarker;
  }
  // Whether a kCompact blob is a wide fallback block, from its first K scale field (the
  // 2 bytes at layout.k_scale_at).
  PACKKV_HD bool zs_fallback(uint16_t first_k_scale) const {
    return zs == ZsFormat::kCompact && first_k_scale == kWideMarker;
  }
  // Offset of the wide fields of a kCompact wide fallback block (after its tiles):
  // int32 k_zero[G][N], float k_scale[G][N], int32 v_zero[G][N], float v_scale[G][N].
  // tiles_end: the blob's last tile_end entry (tile_end(blob, 2H - 1)).
  PACKKV_HD size_t wide_zs_at(uint32_t tiles_end) const { return (layout.tiles_at + tiles_end + 3) & ~(size_t)3; }
  PACKKV_HD size_t wide_zs_at(const uint8_t* blob) const { return wide_zs_at(tile_end(blob, 2 * n_kv_heads - 1)); }
  // Byte offsets of the [N] zero points and scales of scale group `group` (K or V) of a
  // blob that is (`fallback`) or is not a wide fallback block, whose wide fields (if so)
  // start at wide_at; *wide: whether they are 4-byte fields.
  PACKKV_HD void zs_offsets(int kv, int group, bool fallback, size_t wide_at, size_t* zero, size_t* scale,
                            bool* wide) const {
    if (fallback) {
      const size_t meta = (size_t)scale_groups * block_tokens * 4;
      *zero = wide_at + 2 * meta * kv + (size_t)4 * group * block_tokens;
      *scale = *zero + meta;
      *wide = true;
    } else {
      *zero = zero_at(kv, group);
      *scale = scale_at(kv, group);
      *wide = zs == ZsFormat::kWide;
    }
  }
  // Zero points and scales of a blob in whatever encoding it uses: pointers to the
  // [N] fields of scale group `group`, and whether they are wide.
  PACKKV_HD void zs_fields(const uint8_t* blob, int kv, int group, const uint8_t** zero, const uint8_t** scale,
                           bool* wide) const {
    const bool fallback = zs == ZsFormat::kCompact && zs_wide(blob);
    size_t z = 0, s = 0;
    zs_offsets(kv, group, fallback, fallback ? wide_zs_at(blob) : 0, &z, &s, wide);
    *zero = blob + z;
    *scale = blob + s;
  }
  // Byte offset (from the blob start) and size of a tile, from the blob's tile_end header.
  PACKKV_HD void tile_extent(const uint8_t* blob, int kv, int head, size_t* offset, size_t* size) const {
    const int t = tile_index(kv, head);
    const uint32_t begin = t == 0 ? 0u : tile_end(blob, t - 1);
    const uint32_t end = tile_end(blob, t);
    *offset = layout.tiles_at + begin;
    *size = end - begin;
  }
  // Everything of head `head` (K or V) in a blob.
  PACKKV_HD HeadView head(const uint8_t* blob, int kv, int head_index) const {
    HeadView v;
    size_t off = 0, size = 0;
    tile_extent(blob, kv, head_index, &off, &size);
    v.tile = blob + off;
    v.tile_bytes = size;
    zs_fields(blob, kv, scale_group(head_index), &v.zero, &v.scale, &v.wide);
    v.perm = has_perm ? blob + layout.perm_at : nullptr;
    return v;
  }
  // Largest possible tile of K or V, and largest possible blob.
  PACKKV_HD size_t max_tile_bytes(int kv) const {
    return fmt::max_tile_bytes(block_tokens, head_dim, bits(kv));  // kRoundMajor: the only format yet
  }
  // Bytes of the wide fallback part of a kCompact block (fields only, before padding).
  PACKKV_HD size_t wide_zs_bytes() const { return (size_t)16 * scale_groups * block_tokens; }
  PACKKV_HD size_t max_blob_bytes() const {
    return layout.tiles_at + (size_t)n_kv_heads * (max_tile_bytes(kK) + max_tile_bytes(kV)) +
           (zs == ZsFormat::kCompact ? 3 + wide_zs_bytes() : 0);
  }
  // Byte split of a blob of this shape (reads its tile_end header).
  PACKKV_HD BlobSizes sizes(const uint8_t* blob) const {
    const uint32_t k_end = tile_end(blob, n_kv_heads - 1);
    const uint32_t v_end = tile_end(blob, 2 * n_kv_heads - 1);
    BlobSizes s;
    s.perm = has_perm ? block_tokens : 0;
    s.header = (long long)layout.k_zero_at - s.perm;
    s.k_scale = (long long)(layout.v_zero_at - layout.k_zero_at);
    s.v_scale = (long long)(layout.tiles_at - layout.v_zero_at);
    s.k_tiles = k_end;
    s.v_tiles = (long long)v_end - k_end;
    if (zs == ZsFormat::kCompact && zs_wide(blob)) {  // wide fallback fields after the tiles
      const size_t at = wide_zs_at(blob), half = wide_zs_bytes() / 2;
      s.header += (long long)(at - (layout.tiles_at + v_end));
      s.k_scale += (long long)half;
      s.v_scale += (long long)half;
    }
    return s;
  }
};

// Whether the fields describe a representable format: H in [1, 4096], D a multiple of 16
// in [32, 256], N a multiple of 16 in [16, 256], G = 1 or H, bits in 1..8, a known format.
PACKKV_HD bool shape_valid(FormatId format, int n_kv_heads, int head_dim, int block_tokens, int scale_groups,
                           int bits_k, int bits_v) {
  return format == FormatId::kRoundMajor && n_kv_heads >= 1 && n_kv_heads <= kMaxKvHeads &&
         head_dim >= kMinHeadDim && head_dim <= kMaxHeadDim && head_dim % 16 == 0 && block_tokens >= 16 &&
         block_tokens <= kMaxBlockTokens && block_tokens % kPackTokens == 0 &&
         (scale_groups == 1 || scale_groups == n_kv_heads) && bits_k >= 1 && bits_k <= kMaxBits && bits_v >= 1 &&
         bits_v <= kMaxBits;
}
PACKKV_HD bool shape_valid(const Shape& s) {
  return shape_valid(s.format, s.n_kv_heads, s.head_dim, s.block_tokens, s.scale_groups, s.bits_k, s.bits_v) &&
         (s.zs == ZsFormat::kCompact || s.zs == ZsFormat::kWide);
}

// A shape with its block layout. The caller has checked the fields (shape_valid).
PACKKV_HD Shape make_shape(int n_kv_heads, int head_dim, int block_tokens, int scale_groups, int bits_k,
                           int bits_v, bool has_perm, FormatId format = FormatId::kRoundMajor,
                           ZsFormat zs = ZsFormat::kWide) {
  Shape s;
  s.format = format;
  s.n_kv_heads = n_kv_heads;
  s.head_dim = head_dim;
  s.block_tokens = block_tokens;
  s.scale_groups = scale_groups;
  s.bits_k = bits_k;
  s.bits_v = bits_v;
  s.has_perm = has_perm;
  s.zs = zs;
  s.layout = block_layout(n_kv_heads, block_tokens, scale_groups, has_perm, zs);
  return s;
}

}  // namespace fmt
}  // namespace packkv

#endif  // PACKKV_FORMAT_SHAPE_H
