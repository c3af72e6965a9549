// SIMD unpacking of the bit fields of a round (format/round_tile.h) for the round kernels
// (cpu/round_kernels.cpp): a pack's 16 offsets, and a round's MINS and LENS fields. x86
// with AVX2 (and AVX-512) functions carrying their target attributes (cpu/simd.h); the
// callers run them only where cpu_isa() allows.
#ifndef PACKKV_CPU_SIMD_UNPACK_H
#define PACKKV_CPU_SIMD_UNPACK_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cpu/simd.h"
#include "format/round_cursor.h"

#if defined(PACKKV_X86_SIMD)

namespace packkv {
namespace simd {

// ---------------------------------------------------------------------------
// SIMD unpacking. Field i (0..15) of a pack of encode length L: token i < 8 is field 7 - i
// of the word in bytes [L, 2L), token i >= 8 field 15 - i of the word in bytes [0, L);
// field k of a word starts at bit s = k * L, so it lies in bytes s / 8 and s / 8 + 1 (L <= 8,
// s % 8 <= 7: at most 15 bits), at bit s % 8 of their 16-bit little-endian value.
// ctrl[L]: per token, the byte-shuffle control that puts those two bytes in its 32-bit
// lane (0x80: zero; a second byte past the word is not needed); shift[L]: s % 8;
// mask[L]: 2^L - 1.
// ---------------------------------------------------------------------------

struct UnpackTables {
  alignas(64) uint8_t ctrl[9][64];
  alignas(64) uint32_t shift[9][16];
  alignas(64) uint32_t mask[9][16];
  UnpackTables() {
    for (int L = 0; L <= 8; ++L)
      for (int i = 0; i < 16; ++i) {
        const int base = i < 8 ? L : 0, k = i < 8 ? 7 - i : 15 - i, s = k * L;
        const int b = s / 8;
        ctrl[L][4 * i] = (uint8_t)(L == 0 ? 0x80 : base + b);
        ctrl[L][4 * i + 1] = (uint8_t)(L != 0 && b + 1 < L ? base + b + 1 : 0x80);
        ctrl[L][4 * i + 2] = 0x80;
        ctrl[L][4 * i + 3] = 0x80;
        shift[L][i] = (uint32_t)(s % 8);
        mask[L][i] = (1u << L) - 1u;
      }
  }
};

inline const UnpackTables& tables() {
  static const UnpackTables t;
  return t;
}

// The 2L payload bytes of a pack in the low bytes of a register (the others: anything
// but never read past tile_end: the last packs of a tile are copied first).
inline __m128i load_pack(const uint8_t* p, int L, const uint8_t* tile_end) {
  if (p + 16 <= tile_end) return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  alignas(16) uint8_t buf[16] = {0};
  memcpy(buf, p, (size_t)(2 * L));
  return _mm_load_si128(reinterpret_cast<const __m128i*>(buf));
}

// The same broadcast to every 128-bit lane of a ymm (zmm) register; the common case (not
// near tile_end) is one broadcast load, which needs no shuffle unit.
PACKKV_AVX2 PACKKV_ALWAYS_INLINE __m256i load_pack_x2(const uint8_t* p, int L, const uint8_t* tile_end) {
  if (p + 16 <= tile_end) return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_broadcastsi128_si256(load_pack(p, L, tile_end));
}
PACKKV_AVX512 PACKKV_ALWAYS_INLINE __m512i load_pack_x4(const uint8_t* p, int L, const uint8_t* tile_end) {
  if (p + 16 <= tile_end) return _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm512_broadcast_i32x4(load_pack(p, L, tile_end));
}

// Tokens 8h .. 8h+7 of the pack whose bytes are broadcast in b.
PACKKV_AVX2 PACKKV_ALWAYS_INLINE __m256 unpack_half_avx2(__m256i b, int L, int h, const UnpackTables& t) {
  const __m256i x = _mm256_shuffle_epi8(b, _mm256_load_si256(reinterpret_cast<const __m256i*>(t.ctrl[L] + 32 * h)));
  const __m256i s = _mm256_load_si256(reinterpret_cast<const __m256i*>(t.shift[L] + 8 * h));
  return _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(x, s), _mm256_load_si256(reinterpret_cast<const __m256i*>(t.mask[L]))));
}

PACKKV_AVX2 PACKKV_ALWAYS_INLINE void unpack_avx2(const uint8_t* p, int L, const uint8_t* end, const UnpackTables& t,
                                                  __m256* lo, __m256* hi) {
  const __m256i b = load_pack_x2(p, L, end);
  *lo = unpack_half_avx2(b, L, 0, t);
  *hi = unpack_half_avx2(b, L, 1, t);
}

PACKKV_AVX512 PACKKV_ALWAYS_INLINE __m512 unpack_avx512(const uint8_t* p, int L, const uint8_t* end,
                                                        const UnpackTables& t) {
  const __m512i b = load_pack_x4(p, L, end);
  const __m512i x = _mm512_shuffle_epi8(b, _mm512_load_si512(t.ctrl[L]));
  const __m512i v = _mm512_and_si512(_mm512_srlv_epi32(x, _mm512_load_si512(t.shift[L])), _mm512_load_si512(t.mask[L]));
  return _mm512_cvtepi32_ps(v);
}

// ---------------------------------------------------------------------------
// A round's MINS (width bits) and LENS (width len_bits) fields, 16 at a time: 16 fields
// of width W are 2W bytes; field k lies at bit s = k * W, i.e. in bytes s / 8 and s / 8 + 1
// of the group (the second only when s % 8 + W > 8). fctrl[W]: the byte shuffle that puts
// those two bytes in 16-bit lane k (both 128-bit halves: fields 0..7, 8..15); fmul[W]:
// 2^(8 - s % 8), so that (x * fmul) >> 8 holds the field in its low W bits.
// ---------------------------------------------------------------------------

struct FieldTables {
  alignas(32) uint8_t fctrl[9][32];
  alignas(32) uint16_t fmul[9][16];
  alignas(32) uint16_t fmask[9][16];
  FieldTables() {
    for (int w = 1; w <= 8; ++w)
      for (int k = 0; k < 16; ++k) {
        const int s = k * w, b = s / 8, lane = 2 * (k % 8) + 16 * (k / 8);
        fctrl[w][lane] = (uint8_t)b;
        fctrl[w][lane + 1] = (uint8_t)(s % 8 + w > 8 ? b + 1 : 0x80);
        fmul[w][k] = (uint16_t)(1u << (8 - s % 8));
        fmask[w][k] = (uint16_t)((1u << w) - 1u);
      }
  }
};

inline const FieldTables& field_tables() {
  static const FieldTables t;
  return t;
}

// out[0 .. n) = fields 0 .. n-1 (n a multiple of 16) of width w of the bitstream at p;
// nothing at or after end is read.
PACKKV_AVX2 PACKKV_ALWAYS_INLINE void read_fields_avx2(const uint8_t* p, int n, int w, const uint8_t* end,
                                                       uint8_t* out) {
  const FieldTables& t = field_tables();
  const __m256i ctrl = _mm256_load_si256(reinterpret_cast<const __m256i*>(t.fctrl[w]));
  const __m256i mul = _mm256_load_si256(reinterpret_cast<const __m256i*>(t.fmul[w]));
  const __m256i mask = _mm256_load_si256(reinterpret_cast<const __m256i*>(t.fmask[w]));
  for (int k = 0; k < n; k += 16, p += 2 * w) {
    const __m256i b = load_pack_x2(p, w, end);  // 2w bytes
    const __m256i x = _mm256_and_si256(_mm256_srli_epi16(_mm256_mullo_epi16(_mm256_shuffle_epi8(b, ctrl), mul), 8), mask);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + k),
                     _mm_packus_epi16(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1)));
  }
}

// The bulk walk of fmt::RoundCursor::read_round_fields, for head_dim d.
PACKKV_AVX2 PACKKV_ALWAYS_INLINE void read_round_fields_avx2(const fmt::RoundCursor& cur, int d, const uint8_t* end,
                                                             uint8_t* mins, uint8_t* lens) {
  read_fields_avx2(cur.mins(), d, cur.bits(), end, mins);
  read_fields_avx2(cur.lens(), d, cur.len_bits(), end, lens);
}

}  // namespace simd
}  // namespace packkv

#endif  // PACKKV_X86_SIMD

#endif  // PACKKV_CPU_SIMD_UNPACK_H
