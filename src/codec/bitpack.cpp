#include "codec/bitpack.h"

#include <algorithm>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "format/round_cursor.h"
#include "format/shape.h"

namespace packkv {

namespace {

#if defined(__SSE2__)
// Transposes 16 rows x 16 channels of codes (row i at src + i * stride) into
// dst[c * 16 + i] = src[i * stride + c] - mn[c]: the 16 offsets of each channel's pack.
// Four rounds of SSE2 unpacks (bytes, 16-bit, 32-bit, 64-bit units).
void transpose_offsets16(const uint8_t* src, size_t stride, const uint8_t* mn, uint8_t* dst) {
  __m128i a[16], b[16];
  for (int i = 0; i < 16; ++i) a[i] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i * stride));
  for (int k = 0; k < 8; ++k) {  // rows 2k, 2k+1 interleaved: b[2k] channels 0-7, b[2k+1] 8-15
    b[2 * k] = _mm_unpacklo_epi8(a[2 * k], a[2 * k + 1]);
    b[2 * k + 1] = _mm_unpackhi_epi8(a[2 * k], a[2 * k + 1]);
  }
  for (int m = 0; m < 4; ++m) {  // rows 4m..4m+3: a[4m + g] holds channels 4g..4g+3
    a[4 * m + 0] = _mm_unpacklo_epi16(b[4 * m], b[4 * m + 2]);
    a[4 * m + 1] = _mm_unpackhi_epi16(b[4 * m], b[4 * m + 2]);
    a[4 * m + 2] = _mm_unpacklo_epi16(b[4 * m + 1], b[4 * m + 3]);
    a[4 * m + 3] = _mm_unpackhi_epi16(b[4 * m + 1], b[4 * m + 3]);
  }
  for (int h = 0; h < 2; ++h)  // rows 8h..8h+7: b[8h + p] holds channels 2p, 2p+1
    for (int g = 0; g < 4; ++g) {
      b[8 * h + 2 * g] = _mm_unpacklo_epi32(a[8 * h + g], a[8 * h + 4 + g]);
      b[8 * h + 2 * g + 1] = _mm_unpackhi_epi32(a[8 * h + g], a[8 * h + 4 + g]);
    }
  for (int p = 0; p < 8; ++p) {  // all 16 rows of channels 2p and 2p+1
    const __m128i c0 = _mm_unpacklo_epi64(b[p], b[8 + p]);
    const __m128i c1 = _mm_unpackhi_epi64(b[p], b[8 + p]);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + (2 * p) * 16),
                     _mm_sub_epi8(c0, _mm_set1_epi8((char)mn[2 * p])));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + (2 * p + 1) * 16),
                     _mm_sub_epi8(c1, _mm_set1_epi8((char)mn[2 * p + 1])));
  }
}
#endif

// offs[c * 16 + i] = code of token i, channel c, minus the channel's minimum.
void round_offsets(const uint8_t* rc, size_t stride, int head_dim, const uint8_t* mn, uint8_t* offs) {
#if defined(__SSE2__)
  for (int c = 0; c < head_dim; c += 16) transpose_offsets16(rc + c, stride, mn + c, offs + c * 16);
#else
  for (int i = 0; i < fmt::kPackTokens; ++i)
    for (int c = 0; c < head_dim; ++c)
      offs[c * fmt::kPackTokens + i] = (uint8_t)(rc[(size_t)i * stride + c] - mn[c]);
#endif
}

// fmt::write_pack for this encoder: the same pack word, stored with two unaligned 8-byte
// little-endian writes (bytes beyond 2L are zeros that the next pack overwrites; the
// caller keeps 8 bytes of slack after the payload). Checked against fmt::write_pack by
// the tests.
// SSE2: the two words are built in three rounds of pairwise merges of equal shifts
// (bytes -> 16-bit -> 32-bit -> 64-bit lanes: (a << wL) | b), lane 0 = hi, lane 1 = lo.
inline void write_pack_fast(uint8_t* out, const uint8_t* d, int L) {
#if defined(__SSE2__)
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(d));
  const __m128i w16 = _mm_or_si128(_mm_sll_epi16(_mm_and_si128(v, _mm_set1_epi16(0xFF)), _mm_cvtsi32_si128(L)),
                                   _mm_srli_epi16(v, 8));
  const __m128i w32 = _mm_or_si128(_mm_sll_epi32(_mm_and_si128(w16, _mm_set1_epi32(0xFFFF)), _mm_cvtsi32_si128(2 * L)),
                                   _mm_srli_epi32(w16, 16));
  const __m128i w64 = _mm_or_si128(
      _mm_sll_epi64(_mm_and_si128(w32, _mm_set_epi32(0, -1, 0, -1)), _mm_cvtsi32_si128(4 * L)), _mm_srli_epi64(w32, 32));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm_unpackhi_epi64(w64, w64));  // lo
  _mm_storel_epi64(reinterpret_cast<__m128i*>(out + L), w64);                       // hi
#else
  uint64_t lo = 0, hi = 0;
  for (int i = 0; i < 8; ++i) {
    hi = (hi << L) | d[i];
    lo = (lo << L) | d[8 + i];
  }
  std::memcpy(out, &lo, 8);
  std::memcpy(out + L, &hi, 8);
#endif
}

// len[c] = fmt::encode_length(mx[c] - mn[c]) (the bits of the range) for c < head_dim;
// returns the sum of the lengths.
size_t encode_lengths(const uint8_t* mn, const uint8_t* mx, int head_dim, uint8_t* len) {
  size_t sum = 0;
  int c = 0;
#if defined(__SSE2__)
  // bits of r = 8 - #{k in 0..7 : r <= 2^k - 1}, 16 channels at a time
  __m128i total = _mm_setzero_si128();
  for (; c + 16 <= head_dim; c += 16) {
    const __m128i r = _mm_sub_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(mx + c)),
                                   _mm_loadu_si128(reinterpret_cast<const __m128i*>(mn + c)));
    __m128i l = _mm_set1_epi8(8);
    for (int k = 0; k < 8; ++k) {
      const __m128i t = _mm_set1_epi8((char)((1 << k) - 1));
      l = _mm_add_epi8(l, _mm_cmpeq_epi8(_mm_min_epu8(r, t), r));  // -1 where r <= 2^k - 1
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(len + c), l);
    total = _mm_add_epi64(total, _mm_sad_epu8(l, _mm_setzero_si128()));
  }
  sum = (size_t)_mm_cvtsi128_si32(total) + (size_t)_mm_cvtsi128_si32(_mm_unpackhi_epi64(total, total));
#endif
  for (; c < head_dim; ++c) {
    const uint32_t r = (uint32_t)(mx[c] - mn[c]);
    len[c] = (uint8_t)(r ? 32 - __builtin_clz(r) : 0);
    sum += len[c];
  }
  return sum;
}

}  // namespace

void encode_tile(const uint8_t* codes, size_t token_stride, int n_tokens, int head_dim, int bits,
                 std::vector<uint8_t>* out) {
  uint8_t mn[fmt::kMaxHeadDim], mx[fmt::kMaxHeadDim], len[fmt::kMaxHeadDim];
  uint8_t offs[fmt::kMaxHeadDim * fmt::kPackTokens];  // one round: [channel][token] offsets
  for (int r = 0; r < n_tokens / fmt::kPackTokens; ++r) {
    const uint8_t* rc = codes + (size_t)r * fmt::kPackTokens * token_stride;
    // per-channel min and max over the 16 tokens (vectorizes across channels)
    std::copy(rc, rc + head_dim, mn);
    std::copy(rc, rc + head_dim, mx);
    for (int i = 1; i < fmt::kPackTokens; ++i) {
      const uint8_t* row = rc + (size_t)i * token_stride;
      for (int c = 0; c < head_dim; ++c) {
        mn[c] = row[c] < mn[c] ? row[c] : mn[c];
        mx[c] = row[c] > mx[c] ? row[c] : mx[c];
      }
    }
    round_offsets(rc, token_stride, head_dim, mn, offs);
    const size_t payload = 2 * encode_lengths(mn, mx, head_dim, len);
    const size_t head = out->size();
    // The round's bytes, written through a cursor at its start (8 bytes of slack for
    // write_pack_fast, dropped below).
    const size_t round_bytes = fmt::round_header_bytes(head_dim, bits) + payload;
    out->resize(head + round_bytes + 8, 0);
    fmt::RoundWriter w(out->data() + head, head_dim, bits);
    w.set_round_fields(head_dim, mn, len);
    for (int c = 0; c < head_dim; ++c) {
      const int L = len[c];
      if (L == 0) continue;
      write_pack_fast(w.pack(), offs + c * fmt::kPackTokens, L);
      w.skip_pack(L);
    }
    out->resize(head + round_bytes);
  }
}

size_t decode_tile(const uint8_t* tile, int n_tokens, int head_dim, int bits, uint8_t* codes,
                   size_t token_stride) {
  fmt::RoundCursor cur(tile, head_dim, bits);
  for (int r = 0; r < n_tokens / fmt::kPackTokens; ++r, cur.next_round()) {
    uint8_t* rc = codes + (size_t)r * fmt::kPackTokens * token_stride;
    for (int c = 0; c < head_dim; ++c) {
      const fmt::Pack p = cur.next_pack(c);
      uint64_t lo, hi;
      fmt::read_pack_halves(p.bytes, p.length, &lo, &hi);
      for (int i = 0; i < fmt::kPackTokens; ++i)
        rc[(size_t)i * token_stride + c] = (uint8_t)(p.min + fmt::pack_offset(lo, hi, p.length, i));
    }
  }
  return cur.round_offset();
}

}  // namespace packkv
