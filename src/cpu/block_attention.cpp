#include "cpu/block_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <type_traits>

#include "codec/block_codec.h"
#include "cpu/isa.h"
#include "cpu/round_kernels.h"
#include "cpu/simd.h"
#include "cpu/token_kernels.h"
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

// One head's fields of a block by stored slot (in scratch): scales, zero points, original
// token indices (null when the block is not permuted).
struct Fields {
  const float* scale;
  const int32_t* zero;
  const int32_t* orig;
  bool beyond;  // some grid point (q + z) * s, 0 <= q <= 2^bits - 1, lies beyond the fp32 range
};

// beyond: fmt::dequantize clamps such values to +-FLT_MAX (values within s / 2 of FLT_MAX),
// which the folded arithmetic cannot do; such blocks (only with data near the fp32 limit)
// take the direct path below. max |s| * (max |z| + qmax) bounds every grid point, so the
// slots are checked one by one only when that bound exceeds the fp32 range.
// The fields' loop, compiled for the baseline and (field_loop_avx2) with the AVX2 target,
// where the compiler vectorises it: scales, zero points, original indices, and the
// largest |scale| (as bits: non-negative floats order like their bit patterns) and the
// zero points' range.
struct FieldRange {
  uint32_t s_bits = 0;
  int32_t z_min = 0, z_max = 0;
};

template <bool kWide>
inline __attribute__((always_inline)) FieldRange field_loop(const fmt::HeadView& v, int n, float* s, int32_t* z,
                                                           int32_t* o) {
  using Zero = typename std::conditional<kWide, int32_t, int16_t>::type;
  using Scale = typename std::conditional<kWide, uint32_t, uint16_t>::type;
  Zero zf[fmt::kMaxBlockTokens];  // the fields copied out whole: loops over arrays vectorise
  Scale sf[fmt::kMaxBlockTokens];
  std::memcpy(zf, v.zero, sizeof(Zero) * (size_t)n);
  std::memcpy(sf, v.scale, sizeof(Scale) * (size_t)n);
  FieldRange r;
  for (int i = 0; i < n; ++i) {
    const int32_t zi = zf[i];
    const uint32_t sb = kWide ? (uint32_t)sf[i] : (uint32_t)sf[i] << 15;  // format/affine.h: scale16_decode
    z[i] = zi;
    std::memcpy(s + i, &sb, 4);
    r.s_bits = std::max(r.s_bits, sb & 0x7fffffffu);
    r.z_min = std::min(r.z_min, zi);
    r.z_max = std::max(r.z_max, zi);
  }
  if (o)
    for (int i = 0; i < n; ++i) o[i] = v.perm[i];
  return r;
}

FieldRange field_loop_portable(const fmt::HeadView& v, int n, float* s, int32_t* z, int32_t* o) {
  return v.wide ? field_loop<true>(v, n, s, z, o) : field_loop<false>(v, n, s, z, o);
}

#if defined(PACKKV_X86_SIMD)
PACKKV_AVX2 FieldRange field_loop_avx2(const fmt::HeadView& v, int n, float* s, int32_t* z, int32_t* o) {
  return v.wide ? field_loop<true>(v, n, s, z, o) : field_loop<false>(v, n, s, z, o);
}
#endif

Fields read_fields(const fmt::HeadView& v, int n, int bits, AttnScratch* scratch) {
  float* s = scratch->scale.get((size_t)n);
  int32_t* z = scratch->zero.get((size_t)n);
  int32_t* o = v.perm ? scratch->orig.get((size_t)n) : nullptr;
#if defined(PACKKV_X86_SIMD)
  const FieldRange r = cpu_isa() != CpuIsa::kPortable ? field_loop_avx2(v, n, s, z, o) : field_loop_portable(v, n, s, z, o);
#else
  const FieldRange r = field_loop_portable(v, n, s, z, o);
#endif
  float s_max;
  std::memcpy(&s_max, &r.s_bits, 4);
  const double kMax = 3.4028234663852886e38, qmax = (double)((1u << bits) - 1u);
  bool beyond = false;
  if ((double)s_max * (std::max(-(double)r.z_min, (double)r.z_max) + qmax) > kMax)
    for (int i = 0; i < n && !beyond; ++i) {
      const double zi = (double)z[i], si = std::fabs((double)s[i]);
      beyond = std::fabs(zi) * si > kMax || std::fabs(zi + qmax) * si > kMax;
    }
  return Fields{s, z, o, beyond};
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
  const Fields f = read_fields(v, n, sh.bits_k, scratch);
  if (f.beyond) {
    const float* k = decoded_head(sh, blob, head, fmt::kK, scratch);
    for (int j = 0; j < n_q; ++j)
      for (int t = 0; t < n; ++t) {
        double dot = 0;
        for (int ch = 0; ch < d; ++ch) dot += (double)q_in[(size_t)j * d + ch] * (double)k[(size_t)t * d + ch];
        out[(size_t)j * ld + t] = (Out)(dot + (bias ? bias[j] : 0.0));
      }
    return;
  }
  const CpuIsa isa = cpu_isa();
  const RoundKernels& kern = round_kernels(isa);
  const TokenKernels& tk = token_kernels(isa);
  float* acc = scratch->kern.get((size_t)n_q * P + (size_t)P * d);
  float* kern_scratch = acc + (size_t)n_q * P;
  double* min_term = scratch->d.get((size_t)n_q * (2 + P));
  double* no_bias = min_term + n_q;
  double* folded = no_bias + n_q;  // [n_q][16] a round's scores, stored order
  std::fill(no_bias, no_bias + n_q, 0.0);
  const float* q = sq.q.data();  // q_j * 2^-e_j for the fp32 integer-domain products
  fmt::RoundCursor cur(v.tile, d, sh.bits_k);
  const uint8_t* tile_end = v.tile + v.tile_bytes;
  for (int r = 0; r < n / P; ++r) {  // the kernel moves the cursor to the next round
    kern.score_round(&cur, d, q, q_in, n_q, acc, min_term, tile_end, kern_scratch);
    tk.fold_round(acc, n_q, sq.unscale.data(), min_term, sq.sum_q.data(), bias ? bias : no_bias, f.zero + r * P,
                  f.scale + r * P, folded);
    for (int j = 0; j < n_q; ++j) {  // to original token order
      Out* oj = out + (size_t)j * ld;
      const double* fj = folded + (size_t)j * P;
      if (f.orig) {
        const int32_t* o = f.orig + r * P;
        for (int i = 0; i < P; ++i) oj[o[i]] = (Out)fj[i];
      } else {
        for (int i = 0; i < P; ++i) oj[r * P + i] = (Out)fj[i];
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

namespace {

// The apply weights when some fp32 weight p * s reaches kRescaleAbove (or overflows): the
// exact max |p s| decides, and above kRescaleAbove the weights are w * 2^-e (exact), undone
// in double by the returned factor. Same outputs as TokenKernels::weights otherwise.
double rescaled_weights(const float* probs, size_t ld, int n_q, int n, const Fields& f, float* w, double* wsum,
                        double* beta) {
  const int rounds = n / P;
  double wmax = 0;
  for (int slot = 0; slot < n; ++slot)
    for (int j = 0; j < n_q; ++j) {
      const int t = f.orig ? f.orig[slot] : slot;
      wmax = std::max(wmax, std::fabs((double)probs[(size_t)j * ld + t]) * std::fabs((double)f.scale[slot]));
    }
  const double wf = rescale_factor(wmax), w_unscale = 1.0 / wf;
  std::fill(beta, beta + (size_t)n_q * (1 + rounds), 0.0);  // wsum follows beta
  for (int slot = 0; slot < n; ++slot) {
    const int t = f.orig ? f.orig[slot] : slot;
    for (int j = 0; j < n_q; ++j) {
      const float ws = (float)((double)probs[(size_t)j * ld + t] * (double)f.scale[slot] * wf);
      w[(size_t)j * n + slot] = ws;
      const double w_true = (double)ws * w_unscale;
      beta[j] += w_true * (double)f.zero[slot];
      wsum[(size_t)j * rounds + slot / P] += w_true;
    }
  }
  return w_unscale;
}

}  // namespace

void block_apply(const fmt::Shape& sh, const uint8_t* blob, int head, const float* probs, int n_q,
                 size_t ld, double* out, AttnScratch* scratch) {
  const int n = sh.block_tokens, d = sh.head_dim;
  const fmt::HeadView v = sh.head(blob, fmt::kV, head);
  const Fields f = read_fields(v, n, sh.bits_v, scratch);
  if (f.beyond) {
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
  const CpuIsa isa = cpu_isa();
  const RoundKernels& kern = round_kernels(isa);
  const TokenKernels& tk = token_kernels(isa);
  float* w = scratch->w.get((size_t)n_q * n);
  float* part = scratch->kern.get((size_t)n_q * d + (size_t)P * d);  // [n_q][d] sum of w * offset
  float* offs = part + (size_t)n_q * d;  // the kernels' scratch (one round decoded)
  double* beta = scratch->d.get((size_t)n_q * (1 + rounds));
  double* wsum = beta + n_q;  // [n_q][rounds]
  std::fill(part, part + (size_t)n_q * d, 0.0f);
  // w = p * s can exceed FLT_MAX, and so can sum w * offset while sum w * (offset + z) does
  // not: then the weights are rescaled (rescaled_weights).
  double w_unscale = 1.0;
  if (!tk.weights(probs, ld, n_q, n, f.orig, f.scale, f.zero, w, wsum, beta))
    w_unscale = rescaled_weights(probs, ld, n_q, n, f, w, wsum, beta);
  fmt::RoundCursor cur(v.tile, d, sh.bits_v);
  const uint8_t* tile_end = v.tile + v.tile_bytes;
  for (int r = 0; r < rounds; ++r)  // the kernel moves the cursor to the next round
    kern.apply_round(&cur, d, w + (size_t)r * P, (size_t)n, n_q, part, out, wsum + r, (size_t)rounds, tile_end, offs);
  tk.add_part(part, n_q, d, w_unscale, beta, out);
}

}  // namespace packkv
