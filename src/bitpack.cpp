#include "bitpack.h"

#include <algorithm>

#include "tile_format.h"

namespace packkv {

void encode_tile(const uint8_t* codes, size_t token_stride, int n_tokens, int head_dim, int bits,
                 std::vector<uint8_t>* out) {
  const int e = fmt::len_bits(bits);
  const size_t mb = fmt::mins_bytes(head_dim, bits), lb = fmt::lens_bytes(head_dim, bits);
  uint32_t d[fmt::kPackTokens];
  for (int r = 0; r < n_tokens / fmt::kPackTokens; ++r) {
    const uint8_t* rc = codes + (size_t)r * fmt::kPackTokens * token_stride;
    size_t head = out->size();
    out->resize(head + mb + lb, 0);  // MINS and LENS, zeroed for write_field
    for (int c = 0; c < head_dim; ++c) {
      uint32_t mn = 255, mx = 0;
      for (int i = 0; i < fmt::kPackTokens; ++i) {
        uint32_t v = rc[(size_t)i * token_stride + c];
        mn = std::min(mn, v);
        mx = std::max(mx, v);
      }
      int L = fmt::encode_length(mx - mn);
      fmt::write_field(out->data() + head, (size_t)c, bits, mn);
      fmt::write_field(out->data() + head + mb, (size_t)c, e, (uint32_t)L);
      for (int i = 0; i < fmt::kPackTokens; ++i) d[i] = rc[(size_t)i * token_stride + c] - mn;
      size_t at = out->size();
      out->resize(at + 2 * (size_t)L);
      fmt::write_pack(out->data() + at, d, L);
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
      uint32_t mn = fmt::read_field(p, (size_t)c, bits);
      int L = (int)fmt::read_field(p + mb, (size_t)c, e);
      uint64_t lo, hi;
      fmt::read_pack_halves(payload, L, &lo, &hi);
      for (int i = 0; i < fmt::kPackTokens; ++i)
        rc[(size_t)i * token_stride + c] = (uint8_t)(mn + fmt::pack_offset(lo, hi, L, i));
      payload += 2 * L;
    }
    p = payload;
  }
  return (size_t)(p - tile);
}

}  // namespace packkv
