#include "block_codec.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <numeric>

#include "bitpack.h"
#include "quantize.h"
#include "repack.h"
#include "tile_format.h"

namespace packkv {

namespace {

// Writes zero points and scales of [groups][n] affines in stored order.
void put_affine(uint8_t* zero_at, uint8_t* scale_at, const fmt::Affine* a, const uint8_t* perm,
                int groups, int n) {
  for (int g = 0; g < groups; ++g)
    for (int j = 0; j < n; ++j) {
      const fmt::Affine& x = a[(size_t)g * n + perm[j]];
      std::memcpy(zero_at + 4 * ((size_t)g * n + j), &x.zero, 4);
      std::memcpy(scale_at + 4 * ((size_t)g * n + j), &x.scale, 4);
    }
}

}  // namespace

void encode_block(const Config& c, const float* k, const float* v, std::vector<uint8_t>* out) {
  const int n = c.block_tokens, h = c.n_kv_heads, d = c.head_dim, groups = c.groups();
  const size_t row = (size_t)h * d;
  // scratch without zero-initialization: every byte is written before it is read
  std::unique_ptr<uint8_t[]> qk(new uint8_t[n * row]), qv(new uint8_t[n * row]);
  std::vector<fmt::Affine> ak((size_t)groups * n), av((size_t)groups * n);
  quantize_tokens(k, n, h, d, groups, c.rel_scale_k, c.bits_k, qk.get(), ak.data());
  quantize_tokens(v, n, h, d, groups, c.rel_scale_v, c.bits_v, qv.get(), av.data());

  uint8_t perm[fmt::kMaxBlockTokens];
  if (c.repack == PACKKV_REPACK_MEDIAN) {
    median_order(qv.get(), n, (int)row, perm);
  } else if (c.repack == PACKKV_REPACK_GREEDY) {
    std::vector<uint8_t> rows(n * 2 * row);
    for (int t = 0; t < n; ++t) {
      std::memcpy(&rows[t * 2 * row], qk.get() + t * row, row);
      std::memcpy(&rows[t * 2 * row + row], qv.get() + t * row, row);
    }
    greedy_order(rows.data(), n, (int)(2 * row), fmt::kPackTokens, perm);
  } else {
    std::iota(perm, perm + n, 0);
  }

  // Codes in stored order.
  std::unique_ptr<uint8_t[]> sk(new uint8_t[n * row]), sv(new uint8_t[n * row]);
  for (int j = 0; j < n; ++j) {
    std::memcpy(sk.get() + j * row, qk.get() + perm[j] * row, row);
    std::memcpy(sv.get() + j * row, qv.get() + perm[j] * row, row);
  }

  const fmt::BlockLayout l = fmt::block_layout(h, n, groups, c.has_perm());
  const size_t base = out->size();
  const size_t need = base + l.tiles_at + 2 * h * fmt::max_tile_bytes(n, d, std::max(c.bits_k, c.bits_v));
  if (out->capacity() < need) out->reserve(std::max(need, 2 * out->capacity()));  // geometric growth
  out->resize(base + l.tiles_at, 0);
  if (c.has_perm()) std::memcpy(out->data() + base + l.perm_at, perm, n);
  put_affine(out->data() + base + l.k_zero_at, out->data() + base + l.k_scale_at, ak.data(), perm, groups, n);
  put_affine(out->data() + base + l.v_zero_at, out->data() + base + l.v_scale_at, av.data(), perm, groups, n);

  std::vector<uint32_t> ends(2 * h);
  for (int t = 0; t < 2 * h; ++t) {
    const bool is_k = t < h;
    const int head = is_k ? t : t - h;
    encode_tile((is_k ? sk.get() : sv.get()) + (size_t)head * d, row, n, d,
                is_k ? c.bits_k : c.bits_v, out);
    ends[t] = (uint32_t)(out->size() - base - l.tiles_at);
  }
  std::memcpy(out->data() + base, ends.data(), ends.size() * 4);
}

void decode_block(const Config& c, const uint8_t* blob, float* k, float* v) {
  const int n = c.block_tokens, h = c.n_kv_heads, d = c.head_dim, groups = c.groups();
  const size_t row = (size_t)h * d;
  const fmt::BlockLayout l = fmt::block_layout(h, n, groups, c.has_perm());
  uint8_t perm[fmt::kMaxBlockTokens];
  if (c.has_perm())
    std::memcpy(perm, blob + l.perm_at, n);
  else
    std::iota(perm, perm + n, 0);
  std::vector<uint8_t> codes(n * row);
  for (int kv = 0; kv < 2; ++kv) {
    float* dst = kv == 0 ? k : v;
    if (!dst) continue;
    const size_t zero_at = kv == 0 ? l.k_zero_at : l.v_zero_at;
    const size_t scale_at = kv == 0 ? l.k_scale_at : l.v_scale_at;
    for (int head = 0; head < h; ++head) {
      size_t off, size;
      fmt::tile_extent(blob, l, kv * h + head, &off, &size);
      decode_tile(blob + off, n, d, kv == 0 ? c.bits_k : c.bits_v, codes.data() + (size_t)head * d, row);
    }
    for (int j = 0; j < n; ++j) {
      float* out_row = dst + (size_t)perm[j] * row;
      for (int head = 0; head < h; ++head) {
        const int g = groups == 1 ? 0 : head;
        fmt::Affine a;
        std::memcpy(&a.zero, blob + zero_at + 4 * ((size_t)g * n + j), 4);
        std::memcpy(&a.scale, blob + scale_at + 4 * ((size_t)g * n + j), 4);
        for (int i = 0; i < d; ++i)
          out_row[(size_t)head * d + i] = fmt::dequantize(codes[j * row + (size_t)head * d + i], a);
      }
    }
  }
}

BlobSizes blob_sizes(const Config& c, const uint8_t* blob) {
  const int n = c.block_tokens, h = c.n_kv_heads, groups = c.groups();
  const fmt::BlockLayout l = fmt::block_layout(h, n, groups, c.has_perm());
  BlobSizes s;
  s.perm = c.has_perm() ? n : 0;
  s.header = (int64_t)l.k_zero_at - s.perm;
  s.k_scale = (int64_t)(l.v_zero_at - l.k_zero_at);
  s.v_scale = (int64_t)(l.tiles_at - l.v_zero_at);
  const uint32_t* ends = reinterpret_cast<const uint32_t*>(blob);
  s.k_tiles = ends[h - 1];
  s.v_tiles = ends[2 * h - 1] - ends[h - 1];
  return s;
}

}  // namespace packkv
