// CpuCache attention: scores, apply and decode over a sequence's sink tokens, its
// compressed blocks (cpu/block_attention.h, integer-domain) and its residual window
// (sink tokens and window: float64 dot products). gqa_group = n_q_heads / n_kv_heads query
// heads read each KV head.
#include <algorithm>
#include <limits>
#include <vector>

#include "common/dtype.h"
#include "cpu/block_attention.h"
#include "cpu/cpu_cache.h"
#include "cpu/softmax.h"

namespace packkv {

namespace {

// `values` values of dense tokens (kv_dtype bytes, [n][H][D]: sink tokens or a residual
// window) as float.
std::vector<float> dense_as_float(const uint8_t* dense, packkv_dtype_t kv_dtype, size_t values) {
  std::vector<float> f(values);
  to_float(dense, kv_dtype, values, f.data());
  return f;
}

}  // namespace

void CpuCache::scores(const AttnArgs& a, float* scores, int64_t ld) const {
  const fmt::Shape& sh = config().shape;
  const int gqa_group = a.n_q_heads / sh.n_kv_heads;
  std::vector<float> q((size_t)a.n_q_heads * sh.head_dim);
  for (int i = 0; i < a.n_seqs; ++i) {
    load_q(a, i, q.data());
    float* out = scores + (size_t)i * a.n_q_heads * ld;
    seq_scores(seqs_[a.seq_ids[i]], q.data(), gqa_group, out, (size_t)ld);
  }
}

void CpuCache::apply(const AttnArgs& a, const float* probs, int64_t ld, float* out) const {
  const fmt::Shape& sh = config().shape;
  const int gqa_group = a.n_q_heads / sh.n_kv_heads;
  std::vector<double> acc((size_t)a.n_q_heads * sh.head_dim);
  for (int i = 0; i < a.n_seqs; ++i) {
    seq_apply(seqs_[a.seq_ids[i]], probs + (size_t)i * a.n_q_heads * ld, (size_t)ld, gqa_group, acc.data());
    float* o = out + (size_t)i * a.n_q_heads * sh.head_dim;
    for (size_t x = 0; x < acc.size(); ++x) o[x] = (float)acc[x];
  }
}

void CpuCache::decode(const AttnArgs& a, float scale, float* out, float* lse) const {
  const fmt::Shape& sh = config().shape;
  const int gqa_group = a.n_q_heads / sh.n_kv_heads;
  const size_t out_vals = (size_t)a.n_q_heads * sh.head_dim;
  std::vector<float> q(out_vals);
  std::vector<double> acc(out_vals);
  for (int i = 0; i < a.n_seqs; ++i) {
    const CpuSeq& s = seqs_[a.seq_ids[i]];
    const int64_t len = seq_length(a.seq_ids[i]);
    float* o = out + (size_t)i * out_vals;
    if (len == 0) {
      std::fill(o, o + out_vals, 0.0f);
      if (lse)
        for (int j = 0; j < a.n_q_heads; ++j)
          lse[(size_t)i * a.n_q_heads + j] = -std::numeric_limits<float>::infinity();
      continue;
    }
    load_q(a, i, q.data());
    // Scores in double: q . k may exceed FLT_MAX while softmax(scale * q . K) V is finite.
    std::vector<double> sc((size_t)a.n_q_heads * len);
    std::vector<float> p((size_t)a.n_q_heads * len);
    seq_scores(s, q.data(), gqa_group, sc.data(), (size_t)len);
    for (int j = 0; j < a.n_q_heads; ++j) {
      const double l = softmax_row(&sc[(size_t)j * len], len, scale, &p[(size_t)j * len]);
      if (lse) lse[(size_t)i * a.n_q_heads + j] = (float)l;
    }
    seq_apply(s, p.data(), (size_t)len, gqa_group, acc.data());
    for (size_t x = 0; x < acc.size(); ++x) o[x] = (float)acc[x];
  }
}

void CpuCache::load_q(const AttnArgs& a, int i, float* q) const {
  const size_t n = (size_t)a.n_q_heads * config().shape.head_dim;
  const size_t first = (size_t)i * n;
  for (size_t x = 0; x < n; ++x) q[x] = load_as_float(a.q, a.q_dtype, first + x);
}

// Scores of all query heads over one sequence: out[j * ld + t] (sink tokens, blocks,
// residual window, in token order; Out: float or double, see block_scores).
template <typename Out>
void CpuCache::seq_scores(const CpuSeq& s, const float* q, int gqa_group, Out* out, size_t ld) const {
  const fmt::Shape& sh = config().shape;
  const int d = sh.head_dim;
  AttnScratch scratch;
  dense_scores(s.sink_k.data(), s.sink_len, 0, q, gqa_group, out, ld);
  std::vector<double> bias(gqa_group);  // K centering: q . mu (float64)
  for (int hk = 0; hk < sh.n_kv_heads; ++hk) {
    const float* qh = q + (size_t)hk * gqa_group * d;
    Out* oh = out + (size_t)hk * gqa_group * ld + s.sink_len;
    const bool centred = !s.k_mean.empty();
    for (int j = 0; j < gqa_group && centred; ++j) {
      double dot = 0.0;
      for (int x = 0; x < d; ++x) dot += (double)qh[(size_t)j * d + x] * (double)s.k_mean[(size_t)hk * d + x];
      bias[j] = dot;
    }
    for (int64_t b = s.table.first_live(); b < s.n_blocks(); ++b)
      block_scores(sh, s.blob(b), hk, qh, gqa_group, oh + b * sh.block_tokens, ld, &scratch,
                   centred ? bias.data() : nullptr);
  }
  dense_scores(s.res_k.data(), s.residual_len, s.sink_len + s.n_blocks() * sh.block_tokens, q, gqa_group, out, ld);
  // sliding window: expired tokens (sink tokens included, freed blocks, the expired part
  // of a block -- block_scores wrote it in original order, undoing the stored permutation --
  // and of the window) score -inf
  for (int j = 0; j < sh.n_kv_heads * gqa_group; ++j)
    std::fill(out + (size_t)j * ld, out + (size_t)j * ld + s.expired, -std::numeric_limits<float>::infinity());
}

// acc[j][c] = sum_t probs[j * ld + t] V[t][kv_head(j)][c] over one sequence.
void CpuCache::seq_apply(const CpuSeq& s, const float* probs, size_t ld, int gqa_group, double* acc) const {
  const fmt::Shape& sh = config().shape;
  const int d = sh.head_dim;
  std::fill(acc, acc + (size_t)sh.n_kv_heads * gqa_group * d, 0.0);
  AttnScratch scratch;
  std::vector<float> masked;
  // sink tokens out of the sliding window weigh 0 (as the window's expired tokens below)
  const int64_t sink_skip = std::min(s.sink_len, s.expired);
  dense_apply(s.sink_v.data() + (size_t)sink_skip * row_ * elem_, s.sink_len - sink_skip, sink_skip, probs, ld,
              gqa_group, acc);
  for (int hk = 0; hk < sh.n_kv_heads; ++hk) {
    const float* ph = probs + (size_t)hk * gqa_group * ld + s.sink_len;
    double* ah = acc + (size_t)hk * gqa_group * d;
    const int64_t n = sh.block_tokens;
    for (int64_t b = s.table.first_live(); b < s.n_blocks(); ++b) {
      if (s.sink_len + b * n < s.expired) {  // partly expired block: its expired tokens weigh 0
        const int64_t first = s.expired - s.sink_len - b * n;
        masked.assign((size_t)gqa_group * n, 0.0f);
        for (int j = 0; j < gqa_group; ++j)
          for (int64_t t = first; t < n; ++t) masked[(size_t)j * n + t] = ph[(size_t)j * ld + b * n + t];
        block_apply(sh, s.blob(b), hk, masked.data(), gqa_group, (size_t)n, ah, &scratch);
      } else {
        block_apply(sh, s.blob(b), hk, ph + b * n, gqa_group, ld, ah, &scratch);
      }
    }
  }
  // the window's expired tokens weigh 0
  const int64_t base = s.sink_len + s.n_blocks() * sh.block_tokens;
  const int64_t skip = std::min(s.residual_len, std::max<int64_t>(0, s.expired - base));
  dense_apply(s.res_v.data() + (size_t)skip * row_ * elem_, s.residual_len - skip, base + skip, probs, ld,
              gqa_group, acc);
}

template <typename Out>
void CpuCache::dense_scores(const uint8_t* k, int64_t n, int64_t base, const float* q, int gqa_group, Out* out,
                            size_t ld) const {
  const Config& c = config();
  const int d = c.shape.head_dim;
  const std::vector<float> kf = dense_as_float(k, c.kv_dtype, (size_t)n * row_);
  for (int hk = 0; hk < c.shape.n_kv_heads; ++hk)
    for (int64_t t = 0; t < n; ++t) {
      const float* kr = kf.data() + (size_t)t * row_ + (size_t)hk * d;
      for (int j = 0; j < gqa_group; ++j) {
        const int jq = hk * gqa_group + j;
        const float* qj = q + (size_t)jq * d;
        double dot = 0.0;
        for (int x = 0; x < d; ++x) dot += (double)qj[x] * (double)kr[x];
        out[(size_t)jq * ld + base + t] = (Out)dot;
      }
    }
}

void CpuCache::dense_apply(const uint8_t* v, int64_t n, int64_t base, const float* probs, size_t ld, int gqa_group,
                           double* acc) const {
  const Config& c = config();
  const int d = c.shape.head_dim;
  const std::vector<float> vf = dense_as_float(v, c.kv_dtype, (size_t)n * row_);
  for (int hk = 0; hk < c.shape.n_kv_heads; ++hk)
    for (int64_t t = 0; t < n; ++t) {
      const float* vr = vf.data() + (size_t)t * row_ + (size_t)hk * d;
      for (int j = 0; j < gqa_group; ++j) {
        const int jq = hk * gqa_group + j;
        const double p = probs[(size_t)jq * ld + base + t];
        double* a = acc + (size_t)jq * d;
        for (int x = 0; x < d; ++x) a[x] += p * vr[x];
      }
    }
}

}  // namespace packkv
