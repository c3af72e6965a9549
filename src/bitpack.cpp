#include "bitpack.h"

#include <algorithm>

#include "tile_format.h"

namespace packkv {

void encode_tile(const uint8_t* codes, size_t token_stride, int n_tokens, int head_dim, int bits,
                 std::vector<uint8_t>* out) {
  const int e = fmt::len_bits(bits);
  const size_t mb = fmt::mins_bytes(head_dim, bits), lb = fmt::lens_bytes(head_dim, bits);
  uint8_t mn[fmt::kMaxHeadDim], mx[fmt::kMaxHeadDim], len[fmt::kMaxHeadDim];
  uint8_t packs[fmt::kMaxHeadDim * fmt::kPackTokens];  // round transposed: [channel][token]
  uint32_t d[fmt::kPackTokens];
  for (int r = 0; r < n_tokens / fmt::kPackTokens; ++r) {
    const uint8_t* rc = codes + (size_t)r * fmt::kPackTokens * token_stride;
    // per-channel min and max over the 16 tokens (vectorizes across channels), then
    // the round transposed to [channel][token] for pack assembly
    std::copy(rc, rc + head_dim, mn);
    std::copy(rc, rc + head_dim, mx);
    for (int i = 1; i < fmt::kPackTokens; ++i) {
      const uint8_t* row = rc + (size_t)i * token_stride;
      for (int c = 0; c < head_dim; ++c) {
        mn[c] = row[c] < mn[c] ? row[c] : mn[c];
        mx[c] = row[c] > mx[c] ? row[c] : mx[c];
      }
    }
    for (int i = 0; i < fmt::kPackTokens; ++i) {
      const uint8_t* row = rc + (size_t)i * token_stride;
      for (int c = 0; c < head_dim; ++c) packs[c * fmt::kPackTokens + i] = row[c];
    }
    size_t payload = 0;
    for (int c = 0; c < head_dim; ++c) {
      len[c] = (uint8_t)fmt::encode_length((uint32_t)(mx[c] - mn[c]));
      payload += 2 * (size_t)len[c];
    }
    const size_t head = out->size();
    out->resize(head + mb + lb + payload, 0);
    uint8_t* p = out->data() + head;
    for (int c = 0; c < head_dim; ++c) {
      fmt::write_field(p, (size_t)c, bits, mn[c]);
      fmt::write_field(p + mb, (size_t)c, e, len[c]);
    }
    uint8_t* w = p + mb + lb;
    for (int c = 0; c < head_dim; ++c) {
      const int L = len[c];
      if (L == 0) continue;
      for (int i = 0; i < fmt::kPackTokens; ++i) d[i] = (uint32_t)(packs[c * fmt::kPackTokens + i] - mn[c]);
      fmt::write_pack(w, d, L);
      w += 2 * L;
    }
  }
}

size_t decode_tile(const uint8_t* tile, int n_tokens, int head_dim, int bits, uint8_t* codes,
                   size_t token_stride) {
  const int e = fmt::len_bits(bits);
  const size_t mb = fmt::mins_bytes(head_dim, bits), lb = fmt::lens_bytes(head_dim, bits);
  const uint8_t* p = tile;
  for (int r = 0; r < n_tokens / fmt::kPackTokens; ++r) {
    uint8_t* rc = codes + (size_t)r * fmt::kPackTokens * token_stride;
    const uint8_t* payload = p + mb + lb;
    for (int c = 0; c < head_dim; ++c) {
      const uint32_t m = fmt::read_field(p, (size_t)c, bits);
      const int L = (int)fmt::read_field(p + mb, (size_t)c, e);
      uint64_t lo, hi;
      fmt::read_pack_halves(payload, L, &lo, &hi);
      for (int i = 0; i < fmt::kPackTokens; ++i)
        rc[(size_t)i * token_stride + c] = (uint8_t)(m + fmt::pack_offset(lo, hi, L, i));
      payload += 2 * L;
    }
    p = payload;
  }
  return (size_t)(p - tile);
}

}  // namespace packkv
