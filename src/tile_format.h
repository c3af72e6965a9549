// The compressed format of libpackkv, defined once for host (C++) and device (CUDA) code.
//
// Vocabulary (DESIGN.md): a *block* is block_tokens (N, a multiple of 16) consecutive
// tokens of one sequence that are compressed together; a *tile* is the compressed
// bytes of one block of one KV head, for K or for V; a *pack* is 16 consecutive
// (stored-order) tokens of one channel; a *round* is the 16 tokens of all packs that
// share those tokens.
//
// Quantization (PACKKV.md section 3.1, default "/scale, -min_int" variant): for one
// scale group G (a token across all KV heads, or a token of one KV head),
//     s = float((double(max G) - double(min G)) * double(r))
//     z = rint(min G / s)                    (int32, may be negative)
//     q = clamp(rint(x / s) - z, 0, 2^b - 1) (round half to even)
//     x^ = float(q + z) * s
// so |x - x^| <= s/2 <= r * range / 2 (up to the fp32 rounding of s and of (q + z) * s)
// whenever b >= bits_for_rel_scale(r).
// Constant groups are exact: s = x, z = 1, q = 0 (s = z = 0 when x = 0). A group whose
// range is so small against its magnitude that |min/s| >= 2^30 (only possible for
// fp32 data) gets s = max|x| / 2^29 instead, an error of at most max|x| * 2^-30; when
// r * range underflows to zero, s is the smallest subnormal (exact for such data).
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
// Block blob layout (one per compressed block, contiguous, no padding):
//     uint32  tile_end[2H]       inclusive prefix sums of the tile sizes, in tile order
//                                (K heads 0..H-1, then V heads 0..H-1), relative to tiles_at
//     uint8   perm[N]            only when repacking is on: stored slot j holds the
//                                block's original token perm[j]
//     (zero padding to a multiple of 4 bytes)
//     int32   k_zero[G][N]       zero points of K, stored token order (G = 1 or H groups)
//     float   k_scale[G][N]      scales of K
//     int32   v_zero[G][N]
//     float   v_scale[G][N]
//     tiles_at: K tile of head 0 .. H-1, then V tile of head 0 .. H-1
// All multi-byte fields are little-endian (the only byte order we build for).
#ifndef PACKKV_TILE_FORMAT_H
#define PACKKV_TILE_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define PACKKV_HD __host__ __device__ __forceinline__
#else
#define PACKKV_HD inline
#endif

namespace packkv {
namespace fmt {

constexpr int kPackTokens = 16;       // tokens per pack (PACKKV.md section 5.1)
constexpr int kMaxBits = 8;           // widest code
constexpr int kMaxBlockTokens = 256;  // perm entries are one byte
constexpr int kMinHeadDim = 32;
constexpr int kMaxHeadDim = 256;

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

// ---- quantization (PACKKV.md section 3.1, generalized as section 8.3 asks) ----

struct Affine {
  float scale;
  int32_t zero;
};

PACKKV_HD float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

PACKKV_HD float rint_f(float x) {
#if defined(__CUDA_ARCH__)
  return rintf(x);
#else
  return __builtin_rintf(x);
#endif
}

// Zero point and scale of a group with minimum xmin and maximum xmax (both finite).
PACKKV_HD Affine group_affine(float xmin, float xmax, float rel_scale) {
  Affine a;
  if (!(xmax > xmin)) {  // constant group: exact
    // All-zero groups store +0.0 whatever the signs of their zeros, so that encoders
    // whose min/max reductions pick different signed zeros write the same bytes.
    a.scale = xmin == 0.0f ? 0.0f : xmin;
    a.zero = xmin == 0.0f ? 0 : 1;
    return a;
  }
  float s = (float)(((double)xmax - (double)xmin) * (double)rel_scale);
  // r * range below the smallest subnormal: every subnormal is a multiple of it, so
  // such groups are then quantized exactly (their range / s is still < 1/r).
  if (!(s > 0.0f)) s = 1.40129846e-45f;
  float amax = xmax > -xmin ? xmax : -xmin;
  if (!(div_rn(amax, s) < 1073741824.0f)) s = div_rn(amax, 536870912.0f);  // 2^30, 2^29
  a.scale = s;
  a.zero = (int32_t)rint_f(div_rn(xmin, s));
  return a;
}

PACKKV_HD uint32_t quantize(float x, Affine a, uint32_t qmax) {
  if (a.scale == 0.0f) return 0;  // the all-zero group (constant groups give x / s = 1 = z)
  int64_t q = (int64_t)rint_f(div_rn(x, a.scale)) - (int64_t)a.zero;
  if (q < 0) q = 0;
  if (q > (int64_t)qmax) q = (int64_t)qmax;
  return (uint32_t)q;
}

// x^ = (q + z) * s, computed exactly in double (equal to the fp32 product whenever
// |q + z| < 2^24) and clamped to the finite fp32 range: a value near FLT_MAX whose
// grid point lies beyond it reconstructs as +-FLT_MAX, which is closer to it.
PACKKV_HD float dequantize(uint32_t q, Affine a) {
  double v = (double)((int64_t)q + (int64_t)a.zero) * (double)a.scale;
  const double kMax = 3.4028234663852886e38;  // FLT_MAX
  v = v > kMax ? kMax : (v < -kMax ? -kMax : v);
  return (float)v;
}

// ---- block blob layout ----

struct BlockLayout {
  size_t perm_at;      // byte offset of perm[N] (valid when has_perm)
  size_t k_zero_at;    // int32[G][N]
  size_t k_scale_at;   // float[G][N]
  size_t v_zero_at;
  size_t v_scale_at;
  size_t tiles_at;     // first tile
};

PACKKV_HD BlockLayout block_layout(int n_kv_heads, int block_tokens, int groups, bool has_perm) {
  BlockLayout l;
  size_t at = (size_t)2 * n_kv_heads * sizeof(uint32_t);
  l.perm_at = at;
  if (has_perm) at += (size_t)block_tokens;
  at = (at + 3) & ~(size_t)3;
  size_t meta = (size_t)groups * block_tokens * 4;
  l.k_zero_at = at;
  l.k_scale_at = at + meta;
  l.v_zero_at = at + 2 * meta;
  l.v_scale_at = at + 3 * meta;
  l.tiles_at = at + 4 * meta;
  return l;
}

// Tile index t in 0..2H-1: K head t (t < H) or V head t-H. Returns its byte offset and size
// inside the blob, from the blob's tile_end header.
PACKKV_HD void tile_extent(const uint8_t* blob, const BlockLayout& l, int t, size_t* offset,
                           size_t* size) {
  const uint32_t* ends = (const uint32_t*)blob;
  uint32_t begin = t == 0 ? 0u : ends[t - 1];
  *offset = l.tiles_at + begin;
  *size = ends[t] - begin;
}

}  // namespace fmt
}  // namespace packkv

#endif  // PACKKV_TILE_FORMAT_H
