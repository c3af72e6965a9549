#include "cpu/block_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <type_traits>

#include "codec/block_codec.h"
#include "cpu/isa.h"
#include "cpu/round_kernels.h"
#include "format/round_cursor.h"
#include "format/shape.h"

namespace packkv {

namespace {

constexpr int P = fmt::kPackTokens;

// Inputs whose largest magnitude exceeds this are rescaled by a power of two (exact) before
// the fp32 inner loops: a sum of up to 256 products with 8-bit offsets stays far inside the
// fp32 range (256 * 255 * 2^100 < 2^117), and at or below it nothing changes.
constexpr double kRescaleAbove = 0x1p100;

// 2^-ilogb(mx) if mx > kRescaleAbove, else 1.
inline double rescale_factor(double mx) {
  return mx > kRescaleAbove ? std::ldexp(1.0, -std::ilogb(mx)) : 1.0;
}

// True if some grid point (q + z) * s, 0 <= q <= 2^bits - 1, of the block's groups for this
// head lies beyond the fp32 range: fmt::dequantize clamps such values to +-FLT_MAX (values
// within s / 2 of FLT_MAX), which the folded arithmetic cannot do; such blocks (only with
// data near the fp32 limit) take the direct path below.
bool grid_beyond_fp32(const fmt::HeadView& v, int n, int bits) {
  const double kMax = 3.4028234663852886e38, qmax = (double)((1u << bits) - 1u);
  for (int slot = 0; slot < n; ++slot) {
    const fmt::Affine a = v.affine(slot);
    const double z = (double)a.zero, s = std::fabs((double)a.scale);
    if (std::fabs(z) * s > kMax || std::fabs(z + qmax) * s > kMax) return true;
  }
  return false;
}

// The block's K or V of one head as decompress reconstructs it (clamped), [n][d] in
// original token order, in scratch->f.
const float* decoded_head(const fmt::Shape& sh, const uint8_t* blob, int head, fmt::Kv kv, AttnScratch* scratch) {
  const size_t d = (size_t)sh.head_dim, row = (size_t)sh.n_kv_heads * d, n = (size_t)sh.block_tokens;
  scratch->f.resize(n * row + n * d);
  float* all = scratch->f.data();
  decode_block(sh, blob, kv == fmt::kK ? all : nullptr, kv == fmt::kK ? nullptr : all);
  float* h = all + n * row;
  for (size_t t = 0; t < n; ++t) std::memcpy(h + t * d, all + t * row + (size_t)head * d, sizeof(float) * d);
  return h;
}

}  // namespace

void prepare_score_query(const float* q_in, int n_q, int d, ScoreQuery* sq) {
  sq->q_in = q_in;
  sq->n_q = n_q;
  sq->q.resize((size_t)n_q * d);
  sq->sum_q.resize(n_q);
  sq->unscale.resize(n_q);
  for (int j = 0; j < n_q; ++j) {
    double s = 0, mx = 0;
    for (int ch = 0; ch < d; ++ch) {
      const double x = q_in[(size_t)j * d + ch];
      s += x;
      mx = std::max(mx, std::fabs(x));
    }
    sq->sum_q[j] = s;
    const double f = rescale_factor(mx);
    sq->unscale[j] = 1.0 / f;
    for (int ch = 0; ch < d; ++ch) sq->q[(size_t)j * d + ch] = (float)(q_in[(size_t)j * d + ch] * f);
  }
}

template <typename Out>
void block_scores(const fmt::Shape& sh, const uint8_t* blob, int head, const float* q_in, int n_q, Out* out,
                  size_t ld, AttnScratch* scratch, const double* bias) {
  ScoreQuery sq;
  prepare_score_query(q_in, n_q, sh.head_dim, &sq);
  block_scores(sh, blob, head, sq, out, ld, scratch, bias);
}

template <typename Out>
void block_scores(const fmt::Shape& sh, const uint8_t* blob, int head, const ScoreQuery& sq, Out* out, size_t ld,
                  AttnScratch* scratch, const double* bias) {
  const int n = sh.block_tokens, d = sh.head_dim, n_q = sq.n_q;
  const float* q_in = sq.q_in;
  const fmt::HeadView v = sh.head(blob, fmt::kK, head);
  if (grid_beyond_fp32(v, n, sh.bits_k)) {
    const float* k = decoded_head(sh, blob, head, fmt::kK, scratch);
    for (int j = 0; j < n_q; ++j)
      for (int t = 0; t < n; ++t) {
        double dot = 0;
        for (int ch = 0; ch < d; ++ch) dot += (double)q_in[(size_t)j * d + ch] * (double)k[(size_t)t * d + ch];
        out[(size_t)j * ld + t] = (Out)(dot + (bias ? bias[j] : 0.0));
      }
    return;
  }
  const RoundKernels& kern = round_kernels(cpu_isa());
  scratch->f.resize((size_t)n_q * P + (size_t)P * d);
  scratch->d.resize((size_t)n_q);
  float* acc = scratch->f.data();
  float* kern_scratch = acc + (size_t)n_q * P;
  double* min_term = scratch->d.data();
  const float* q = sq.q.data();  // q_j * 2^-e_j for the fp32 integer-domain products
  const double* sum_q = sq.sum_q.data();
  const double* q_unscale = sq.unscale.data();  // 2^e_j
  fmt::RoundCursor cur(v.tile, d, sh.bits_k);
  const uint8_t* tile_end = v.tile + v.tile_bytes;
  for (int r = 0; r < n / P; ++r) {  // the kernel moves the cursor to the next round
    kern.score_round(&cur, d, q, q_in, n_q, acc, min_term, tile_end, kern_scratch);
    for (int i = 0; i < P; ++i) {
      const int slot = r * P + i;
      const fmt::Affine a = v.affine(slot);
      const int t = v.original(slot);
      for (int j = 0; j < n_q; ++j) {
        const double u =
            (double)acc[(size_t)j * P + i] * q_unscale[j] + min_term[j] + (double)a.zero * sum_q[j];
        out[(size_t)j * ld + t] = (Out)(u * (double)a.scale + (bias ? bias[j] : 0.0));
      }
    }
  }
}

template void block_scores<float>(const fmt::Shape&, const uint8_t*, int, const float*, int, float*, size_t,
                                  AttnScratch*, const double*);
template void block_scores<double>(const fmt::Shape&, const uint8_t*, int, const float*, int, double*, size_t,
                                   AttnScratch*, const double*);
template void block_scores<float>(const fmt::Shape&, const uint8_t*, int, const ScoreQuery&, float*, size_t,
                                  AttnScratch*, const double*);
template void block_scores<double>(const fmt::Shape&, const uint8_t*, int, const ScoreQuery&, double*, size_t,
                                   AttnScratch*, const double*);

void block_apply(const fmt::Shape& sh, const uint8_t* blob, int head, const float* probs, int n_q,
                 size_t ld, double* out, AttnScratch* scratch) {
  const int n = sh.block_tokens, d = sh.head_dim;
  const fmt::HeadView v = sh.head(blob, fmt::kV, head);
  if (grid_beyond_fp32(v, n, sh.bits_v)) {
    const float* val = decoded_head(sh, blob, head, fmt::kV, scratch);
    for (int j = 0; j < n_q; ++j)
      for (int t = 0; t < n; ++t) {
        const double pt = probs[(size_t)j * ld + t];
        for (int ch = 0; ch < d; ++ch) out[(size_t)j * d + ch] += pt * (double)val[(size_t)t * d + ch];
      }
    return;
  }
  // w = p * s in stored order; per round sum of w (for the pack minimums); beta = sum w z.
  const int rounds = n / P;
  const RoundKernels& kern = round_kernels(cpu_isa());
  scratch->f.resize((size_t)n_q * n + (size_t)n_q * d + (size_t)P * d);
  scratch->d.resize((size_t)n_q * (1 + rounds));
  float* w = scratch->f.data();
  float* part = w + (size_t)n_q * n;  // [n_q][d] sum of w * offset
  float* offs = part + (size_t)n_q * d;  // the kernels' scratch (one round decoded)
  double* beta = scratch->d.data();
  double* wsum = beta + n_q;  // [n_q][rounds]
  std::fill(beta, beta + (size_t)n_q * (1 + rounds), 0.0);
  std::fill(part, part + (size_t)n_q * d, 0.0f);
  // w = p * s can exceed FLT_MAX, and so can sum w * offset while sum w * (offset + z) does
  // not: above kRescaleAbove the fp32 weights are w * 2^-e (exact), undone in double below.
  // max |p| * max |s| bounds max |p s|: when the bound is <= kRescaleAbove so is the maximum
  // (no rescaling, as the exact maximum would say); else the exact maximum decides.
  scratch->a.resize(n);
  scratch->t.resize(n);
  fmt::Affine* aff = scratch->a.data();
  int* orig = scratch->t.data();
  double s_max = 0;
  for (int slot = 0; slot < n; ++slot) {
    aff[slot] = v.affine(slot);
    orig[slot] = v.original(slot);
    s_max = std::max(s_max, std::fabs((double)aff[slot].scale));
  }
  uint32_t p_bits = 0;  // bits of max |p|: non-negative floats order like their bit patterns
  for (int j = 0; j < n_q; ++j)
    for (int t = 0; t < n; ++t) {
      uint32_t b;
      std::memcpy(&b, probs + (size_t)j * ld + t, 4);
      p_bits = std::max(p_bits, b & 0x7fffffffu);
    }
  float p_max;
  std::memcpy(&p_max, &p_bits, 4);
  double wmax = (double)p_max * s_max;
  if (!(wmax <= kRescaleAbove)) {
    wmax = 0;
    for (int slot = 0; slot < n; ++slot)
      for (int j = 0; j < n_q; ++j)
        wmax = std::max(wmax, std::fabs((double)probs[(size_t)j * ld + orig[slot]]) * std::fabs((double)aff[slot].scale));
  }
  const double wf = rescale_factor(wmax), w_unscale = 1.0 / wf;
  for (int slot = 0; slot < n; ++slot) {
    const fmt::Affine a = aff[slot];
    const int t = orig[slot];
    for (int j = 0; j < n_q; ++j) {
      const float ws = (float)((double)probs[(size_t)j * ld + t] * (double)a.scale * wf);
      w[(size_t)j * n + slot] = ws;
      const double w_true = (double)ws * w_unscale;
      beta[j] += w_true * (double)a.zero;
      wsum[(size_t)j * rounds + slot / P] += w_true;
    }
  }
  fmt::RoundCursor cur(v.tile, d, sh.bits_v);
  const uint8_t* tile_end = v.tile + v.tile_bytes;
  for (int r = 0; r < rounds; ++r)  // the kernel moves the cursor to the next round
    kern.apply_round(&cur, d, w + (size_t)r * P, (size_t)n, n_q, part, out, wsum + r, (size_t)rounds, tile_end, offs);
  for (int j = 0; j < n_q; ++j)
    for (int ch = 0; ch < d; ++ch) out[(size_t)j * d + ch] += (double)part[(size_t)j * d + ch] * w_unscale + beta[j];
}

}  // namespace packkv
