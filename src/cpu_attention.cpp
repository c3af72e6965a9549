#include "cpu_attention.h"

#include <cstring>
#include <numeric>
#include <vector>

#include "tile_format.h"

namespace packkv {

namespace {

struct BlockView {
  const uint8_t* tile;
  const uint8_t* zero;   // int32[N] of the head's group, stored order
  const uint8_t* scale;  // float[N]
  uint8_t perm[fmt::kMaxBlockTokens];
};

BlockView view(const Config& c, const uint8_t* blob, int head, bool is_k) {
  const int n = c.block_tokens, h = c.n_kv_heads;
  const fmt::BlockLayout l = fmt::block_layout(h, n, c.groups(), c.has_perm());
  BlockView v;
  size_t off, size;
  fmt::tile_extent(blob, l, (is_k ? 0 : h) + head, &off, &size);
  v.tile = blob + off;
  const size_t g = c.groups() == 1 ? 0 : (size_t)head;
  v.zero = blob + (is_k ? l.k_zero_at : l.v_zero_at) + 4 * g * n;
  v.scale = blob + (is_k ? l.k_scale_at : l.v_scale_at) + 4 * g * n;
  if (c.has_perm())
    std::memcpy(v.perm, blob + l.perm_at, n);
  else
    std::iota(v.perm, v.perm + n, 0);
  return v;
}

inline fmt::Affine affine_at(const BlockView& v, int slot) {
  fmt::Affine a;
  std::memcpy(&a.zero, v.zero + 4 * (size_t)slot, 4);
  std::memcpy(&a.scale, v.scale + 4 * (size_t)slot, 4);
  return a;
}

}  // namespace

void block_scores(const Config& c, const uint8_t* blob, int head, const float* q, int n_q,
                  float* out, size_t ld) {
  const int n = c.block_tokens, d = c.head_dim, bits = c.bits_k, e = fmt::len_bits(bits);
  const size_t mb = fmt::mins_bytes(d, bits), lb = fmt::lens_bytes(d, bits);
  const BlockView v = view(c, blob, head, true);
  std::vector<double> sum_q(n_q, 0.0);
  for (int j = 0; j < n_q; ++j)
    for (int ch = 0; ch < d; ++ch) sum_q[j] += q[(size_t)j * d + ch];
  std::vector<float> acc((size_t)n_q * fmt::kPackTokens);
  std::vector<double> min_term(n_q);
  const uint8_t* p = v.tile;
  for (int r = 0; r < n / fmt::kPackTokens; ++r) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    std::fill(min_term.begin(), min_term.end(), 0.0);
    const uint8_t* payload = p + mb + lb;
    for (int ch = 0; ch < d; ++ch) {
      const float mn = (float)fmt::read_field(p, (size_t)ch, bits);
      const int L = (int)fmt::read_field(p + mb, (size_t)ch, e);
      for (int j = 0; j < n_q; ++j) min_term[j] += (double)(q[(size_t)j * d + ch] * mn);
      if (L == 0) continue;
      uint64_t lo, hi;
      fmt::read_pack_halves(payload, L, &lo, &hi);
      payload += 2 * L;
      float off[fmt::kPackTokens];
      for (int i = 0; i < fmt::kPackTokens; ++i) off[i] = (float)fmt::pack_offset(lo, hi, L, i);
      for (int j = 0; j < n_q; ++j) {
        const float qc = q[(size_t)j * d + ch];
        float* a = &acc[(size_t)j * fmt::kPackTokens];
        for (int i = 0; i < fmt::kPackTokens; ++i) a[i] += qc * off[i];
      }
    }
    for (int i = 0; i < fmt::kPackTokens; ++i) {
      const int slot = r * fmt::kPackTokens + i;
      const fmt::Affine a = affine_at(v, slot);
      for (int j = 0; j < n_q; ++j) {
        double u = (double)acc[(size_t)j * fmt::kPackTokens + i] + min_term[j] + (double)a.zero * sum_q[j];
        out[(size_t)j * ld + v.perm[slot]] = (float)(u * (double)a.scale);
      }
    }
    p = payload;
  }
}

void block_apply(const Config& c, const uint8_t* blob, int head, const float* probs, int n_q,
                 size_t ld, double* out) {
  const int n = c.block_tokens, d = c.head_dim, bits = c.bits_v, e = fmt::len_bits(bits);
  const size_t mb = fmt::mins_bytes(d, bits), lb = fmt::lens_bytes(d, bits);
  const BlockView v = view(c, blob, head, false);
  // w = p * s in stored order; beta = sum w * z.
  std::vector<float> w((size_t)n_q * n);
  std::vector<double> beta(n_q, 0.0);
  for (int slot = 0; slot < n; ++slot) {
    const fmt::Affine a = affine_at(v, slot);
    for (int j = 0; j < n_q; ++j) {
      const double ws = (double)probs[(size_t)j * ld + v.perm[slot]] * (double)a.scale;
      w[(size_t)j * n + slot] = (float)ws;
      beta[j] += ws * (double)a.zero;
    }
  }
  std::vector<float> part((size_t)n_q * d, 0.0f);
  const uint8_t* p = v.tile;
  for (int r = 0; r < n / fmt::kPackTokens; ++r) {
    const uint8_t* payload = p + mb + lb;
    for (int ch = 0; ch < d; ++ch) {
      const float mn = (float)fmt::read_field(p, (size_t)ch, bits);
      const int L = (int)fmt::read_field(p + mb, (size_t)ch, e);
      uint64_t lo = 0, hi = 0;
      if (L) fmt::read_pack_halves(payload, L, &lo, &hi);
      payload += 2 * L;
      float val[fmt::kPackTokens];
      for (int i = 0; i < fmt::kPackTokens; ++i) val[i] = mn + (float)fmt::pack_offset(lo, hi, L, i);
      for (int j = 0; j < n_q; ++j) {
        const float* wr = &w[(size_t)j * n + (size_t)r * fmt::kPackTokens];
        float s = 0.0f;
        for (int i = 0; i < fmt::kPackTokens; ++i) s += wr[i] * val[i];
        part[(size_t)j * d + ch] += s;
      }
    }
    p = payload;
  }
  for (int j = 0; j < n_q; ++j)
    for (int ch = 0; ch < d; ++ch) out[(size_t)j * d + ch] += (double)part[(size_t)j * d + ch] + beta[j];
}

}  // namespace packkv
