#include "codec/block_codec.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <numeric>

#include "codec/bitpack.h"
#include "codec/quantize.h"
#include "codec/repack.h"
#include "format/shape.h"

namespace packkv {

namespace {

// Writes zero points and scales of [scale_groups][n] affines in stored order, wide (int32,
// fp32) or compact (int16, scale16: the affines are exactly representable).
void put_affine(uint8_t* zero_at, uint8_t* scale_at, const fmt::Affine* a, const uint8_t* perm,
                int scale_groups, int n, bool wide) {
  for (int g = 0; g < scale_groups; ++g)
    for (int j = 0; j < n; ++j) {
      const fmt::Affine& x = a[(size_t)g * n + perm[j]];
      const size_t i = (size_t)g * n + j;
      if (wide) {
        std::memcpy(zero_at + 4 * i, &x.zero, 4);
        std::memcpy(scale_at + 4 * i, &x.scale, 4);
      } else {
        const int16_t z = (int16_t)x.zero;
        const uint16_t s = fmt::scale16_encode(x.scale);
        std::memcpy(zero_at + 2 * i, &z, 2);
        std::memcpy(scale_at + 2 * i, &s, 2);
      }
    }
}

}  // namespace

void encode_block(const Config& c, const float* k, const float* v, std::vector<uint8_t>* out) {
  const fmt::Shape& sh = c.shape;
  const int n = sh.block_tokens, h = sh.n_kv_heads, d = sh.head_dim, scale_groups = sh.scale_groups;
  const size_t row = (size_t)h * d;
  // scratch without zero-initialization: every byte is written before it is read
  std::unique_ptr<uint8_t[]> qk(new uint8_t[n * row]), qv(new uint8_t[n * row]);
  std::vector<fmt::Affine> ak((size_t)scale_groups * n), av((size_t)scale_groups * n);
  // Compact fields when every group of K and V has them, else wide (fallback block).
  const bool compact = sh.zs == fmt::ZsFormat::kCompact;
  bool wide = !compact;
  if (compact && !(quantize_tokens(k, n, h, d, scale_groups, c.rel_scale_k, sh.bits_k, true, qk.get(), ak.data()) &&
                   quantize_tokens(v, n, h, d, scale_groups, c.rel_scale_v, sh.bits_v, true, qv.get(), av.data())))
    wide = true;
  if (wide) {
    quantize_tokens(k, n, h, d, scale_groups, c.rel_scale_k, sh.bits_k, false, qk.get(), ak.data());
    quantize_tokens(v, n, h, d, scale_groups, c.rel_scale_v, sh.bits_v, false, qv.get(), av.data());
  }

  uint8_t perm[fmt::kMaxBlockTokens];
  if (c.repack == PACKKV_REPACK_MEDIAN && !wide) {
    // The median order is defined on the codes of the wide quantizer (group_affine)
    // whatever the encoding of the fields: the CUDA encoder computes the medians before
    // it knows whether a block falls back to wide fields (PACKKV.md section 4.2).
    std::unique_ptr<uint8_t[]> qw(new uint8_t[n * row]);
    std::vector<fmt::Affine> aw((size_t)scale_groups * n);
    quantize_tokens(v, n, h, d, scale_groups, c.rel_scale_v, sh.bits_v, false, qw.get(), aw.data());
    median_order(qw.get(), n, (int)row, perm);
  } else if (c.repack == PACKKV_REPACK_MEDIAN) {
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

  const fmt::BlockLayout& l = sh.layout;
  const size_t base = out->size();
  const size_t need = base + sh.max_blob_bytes() + 8;  // + encode_tile's slack
  if (out->capacity() < need) out->reserve(std::max(need, 2 * out->capacity()));  // geometric growth
  out->resize(base + l.tiles_at, 0);
  if (sh.has_perm) std::memcpy(out->data() + base + l.perm_at, perm, n);
  if (!compact || !wide) {
    for (int kv = 0; kv < 2; ++kv)
      put_affine(out->data() + base + sh.zero_at(kv, 0), out->data() + base + sh.scale_at(kv, 0),
                 (kv == fmt::kK ? ak : av).data(), perm, scale_groups, n, wide);
  } else {
    const uint16_t marker = fmt::kWideMarker;  // compact fields zero but this one
    std::memcpy(out->data() + base + l.k_scale_at, &marker, 2);
  }

  std::vector<uint32_t> ends(2 * h);
  for (int kv = 0; kv < 2; ++kv)
    for (int head = 0; head < h; ++head) {
      encode_tile((kv == fmt::kK ? sk.get() : sv.get()) + (size_t)head * d, row, n, d, sh.bits(kv), out);
      ends[sh.tile_index(kv, head)] = (uint32_t)(out->size() - base - l.tiles_at);
    }
  std::memcpy(out->data() + base, ends.data(), ends.size() * 4);
  if (compact && wide) {  // wide fallback: the int32 / fp32 fields after the tiles
    const size_t at = sh.wide_zs_at(out->data() + base), meta = (size_t)scale_groups * n * 4;
    out->resize(base + at + 4 * meta, 0);
    for (int kv = 0; kv < 2; ++kv)
      put_affine(out->data() + base + at + 2 * meta * kv, out->data() + base + at + 2 * meta * kv + meta,
                 (kv == fmt::kK ? ak : av).data(), perm, scale_groups, n, true);
  }
}

void decode_block(const fmt::Shape& sh, const uint8_t* blob, float* k, float* v) {
  const int n = sh.block_tokens, h = sh.n_kv_heads, d = sh.head_dim;
  const size_t row = (size_t)h * d;
  std::vector<uint8_t> codes(n * row);
  for (int kv = 0; kv < 2; ++kv) {
    float* dst = kv == fmt::kK ? k : v;
    if (!dst) continue;
    for (int head = 0; head < h; ++head)
      decode_tile(sh.head(blob, kv, head).tile, n, d, sh.bits(kv), codes.data() + (size_t)head * d, row);
    for (int head = 0; head < h; ++head) {
      const fmt::HeadView hv = sh.head(blob, kv, head);
      for (int j = 0; j < n; ++j) {
        const fmt::Affine a = hv.affine(j);
        float* out = dst + (size_t)hv.original(j) * row + (size_t)head * d;
        const uint8_t* q = codes.data() + j * row + (size_t)head * d;
        for (int i = 0; i < d; ++i) out[i] = fmt::dequantize(q[i], a);
      }
    }
  }
}

}  // namespace packkv
