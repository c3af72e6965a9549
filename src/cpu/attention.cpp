// CpuCache attention: scores, apply and decode over a sequence's sink tokens, its
// compressed blocks (cpu/block_attention.h, integer-domain) and its residual window
// (sink tokens and window: float64 dot products). gqa_group = n_q_heads / n_kv_heads query
// heads read each KV head.
//
// Parallel work (cpu/parallel.h): a call's work items are (sequence, KV head, span), a
// span being a range of the sequence's token positions (seq_spans below: its boundaries
// depend on the sequence alone, never on the thread count). Each item writes its own
// outputs: scores straight into the caller's rows, apply and decode a partial result
// (weighted sum of V; decode also its log-sum-exp) that is merged per (sequence, KV head)
// in span order afterwards (decode: the flash-decoding merge, exact up to rounding).
// A sequence of one span (up to kMinSpanTokens tokens after its sink tokens) gives the
// result of the unsplit computation bit for bit.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/dtype.h"
#include "cpu/block_attention.h"
#include "cpu/cpu_cache.h"
#include "cpu/parallel.h"
#include "cpu/softmax.h"

namespace packkv {

namespace {

constexpr int64_t kMinSpanTokens = 512;  // tokens of a span at least (then rounded up to whole blocks)
constexpr int64_t kMaxSpans = 16;        // spans of a long sequence at most

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// The spans of a sequence of `len` tokens: span k covers positions [start(k), start(k + 1))
// with start(0) = 0 and start(k) = sink_len + k * tokens for k >= 1 (whole blocks: a span
// never splits a block; the sink tokens belong to span 0, residual tokens to the span
// that covers their positions).
struct Spans {
  int64_t sink = 0, tokens = 1, len = 0;
  int64_t count = 0;
  int64_t begin(int64_t k) const { return k == 0 ? 0 : sink + k * tokens; }
  int64_t end(int64_t k) const { return std::min(len, sink + (k + 1) * tokens); }
};

Spans seq_spans(int64_t len, int64_t sink_len, int64_t block_tokens) {
  Spans sp;
  sp.sink = sink_len;
  sp.len = len;
  if (len == 0) return sp;
  const int64_t rest = len - sink_len;
  int64_t t = std::max(kMinSpanTokens, (rest + kMaxSpans - 1) / kMaxSpans);
  sp.tokens = (t + block_tokens - 1) / block_tokens * block_tokens;
  sp.count = rest <= 0 ? 1 : (rest + sp.tokens - 1) / sp.tokens;
  return sp;
}

// One work item: KV head hk of span k of the call's i-th sequence.
struct Item {
  int i, hk;
  int64_t k, begin, end;
};

// Items in (sequence, KV head, span) order, and where each (sequence, KV head) starts.
struct Plan {
  std::vector<Item> items;
  std::vector<int64_t> first;  // [n_seqs * n_kv_heads + 1]
  int64_t work = 0;            // token-query-head products
};

Plan make_plan(const CpuCache& c, const AttnArgs& a) {
  const fmt::Shape& sh = c.config().shape;
  Plan p;
  p.first.reserve((size_t)a.n_seqs * sh.n_kv_heads + 1);
  for (int i = 0; i < a.n_seqs; ++i) {
    const int64_t len = c.seq_length(a.seq_ids[i]);
    const Spans sp = seq_spans(len, c.sink_len(a.seq_ids[i]), sh.block_tokens);
    p.work += len * a.n_q_heads;
    for (int hk = 0; hk < sh.n_kv_heads; ++hk) {
      p.first.push_back((int64_t)p.items.size());
      for (int64_t k = 0; k < sp.count; ++k) p.items.push_back(Item{i, hk, k, sp.begin(k), sp.end(k)});
    }
  }
  p.first.push_back((int64_t)p.items.size());
  return p;
}

}  // namespace
void CpuCache::scores(const AttnArgs& a, float* scores, int64_t ld) const {
  const fmt::Shape& sh = config().shape;
  const int g = a.n_q_heads / sh.n_kv_heads, d = sh.head_dim;
  const std::vector<float> q = load_q(a);
  const Plan p = make_plan(*this, a);
  parallel_for(par_, (int64_t)p.items.size(), p.work, [&](int64_t x) {
    const Item& it = p.items[(size_t)x];
    const size_t row0 = (size_t)it.i * a.n_q_heads + (size_t)it.hk * g;
    AttnScratch scratch;
    span_scores(seqs_[a.seq_ids[it.i]], it.begin, it.end, it.hk, q.data() + row0 * d, g,
                scores + row0 * (size_t)ld + it.begin, (size_t)ld, &scratch);
  });
}

void CpuCache::apply(const AttnArgs& a, const float* probs, int64_t ld, float* out) const {
  const fmt::Shape& sh = config().shape;
  const int g = a.n_q_heads / sh.n_kv_heads, d = sh.head_dim;
  const size_t head_vals = (size_t)g * d;
  const Plan p = make_plan(*this, a);
  std::vector<double> part(p.items.size() * head_vals, 0.0);  // each item's weighted sum of V
  parallel_for(par_, (int64_t)p.items.size(), p.work, [&](int64_t x) {
    const Item& it = p.items[(size_t)x];
    const size_t row0 = (size_t)it.i * a.n_q_heads + (size_t)it.hk * g;
    AttnScratch scratch;
    span_apply(seqs_[a.seq_ids[it.i]], it.begin, it.end, it.hk, probs + row0 * (size_t)ld + it.begin, (size_t)ld, g,
               part.data() + (size_t)x * head_vals, &scratch);
  });
  // sum of the spans in span order, per (sequence, KV head); no span: zeros
  for (int i = 0; i < a.n_seqs; ++i)
    for (int hk = 0; hk < sh.n_kv_heads; ++hk) {
      const size_t u = (size_t)i * sh.n_kv_heads + hk;
      float* o = out + ((size_t)i * a.n_q_heads + (size_t)hk * g) * d;
      for (size_t v = 0; v < head_vals; ++v) {
        double sum = 0.0;
        for (int64_t x = p.first[u]; x < p.first[u + 1]; ++x) sum += part[(size_t)x * head_vals + v];
        o[v] = (float)sum;
      }
    }
}

void CpuCache::decode(const AttnArgs& a, float scale, float* out, float* lse) const {
  const fmt::Shape& sh = config().shape;
  const int g = a.n_q_heads / sh.n_kv_heads, d = sh.head_dim;
  const size_t head_vals = (size_t)g * d;
  const std::vector<float> q = load_q(a);
  const Plan p = make_plan(*this, a);
  // per item: softmax(scale * scores) V over its span, and the span's log-sum-exp
  std::vector<double> part(p.items.size() * head_vals, 0.0), part_lse(p.items.size() * g, kNegInf);
  parallel_for(par_, (int64_t)p.items.size(), p.work, [&](int64_t x) {
    const Item& it = p.items[(size_t)x];
    const CpuSeq& s = seqs_[a.seq_ids[it.i]];
    const size_t row0 = (size_t)it.i * a.n_q_heads + (size_t)it.hk * g;
    const int64_t n = it.end - it.begin;
    AttnScratch scratch;
    // Scores in double: q . k may exceed FLT_MAX while softmax(scale * q . K) V is finite.
    // Every score and probability is written before it is read (span_scores covers the span).
    Buffer<double> sc_buf;
    Buffer<float> pr_buf;
    double* sc = sc_buf.get((size_t)g * n);
    float* pr = pr_buf.get((size_t)g * n);
    span_scores(s, it.begin, it.end, it.hk, q.data() + row0 * d, g, sc, (size_t)n, &scratch);
    // a span wholly out of the sliding window: probabilities 0, lse -inf (weight 0 in the merge)
    for (int j = 0; j < g; ++j) part_lse[(size_t)x * g + j] = softmax_row(sc + (size_t)j * n, n, scale, pr + (size_t)j * n);
    span_apply(s, it.begin, it.end, it.hk, pr, (size_t)n, g, part.data() + (size_t)x * head_vals, &scratch);
  });
  // Merge per (sequence, query head): out = sum_k e^(lse_k - LSE) out_k, LSE = log sum_k e^lse_k.
  for (int i = 0; i < a.n_seqs; ++i)
    for (int hk = 0; hk < sh.n_kv_heads; ++hk) {
      const size_t u = (size_t)i * sh.n_kv_heads + hk;
      const int64_t x0 = p.first[u], x1 = p.first[u + 1];
      for (int j = 0; j < g; ++j) {
        const size_t row = (size_t)i * a.n_q_heads + (size_t)hk * g + j;
        float* o = out + row * d;
        if (x1 - x0 == 1) {  // one span: its result as is (zeros and -inf if wholly out of the window)
          for (int c = 0; c < d; ++c) o[c] = (float)part[(size_t)x0 * head_vals + (size_t)j * d + c];
          if (lse) lse[row] = (float)part_lse[(size_t)x0 * g + j];
          continue;
        }
        double m = kNegInf;
        for (int64_t x = x0; x < x1; ++x) m = std::max(m, part_lse[(size_t)x * g + j]);
        if (m == kNegInf) {  // empty sequence, or no token in the sliding window: as empty
          std::fill(o, o + d, 0.0f);
          if (lse) lse[row] = -std::numeric_limits<float>::infinity();
          continue;
        }
        double w_sum = 0.0;
        for (int64_t x = x0; x < x1; ++x) w_sum += std::exp(part_lse[(size_t)x * g + j] - m);
        std::vector<double> acc(d, 0.0);
        for (int64_t x = x0; x < x1; ++x) {
          const double l = part_lse[(size_t)x * g + j];
          if (l == kNegInf) continue;
          const double w = std::exp(l - m) / w_sum;
          const double* px = &part[(size_t)x * head_vals + (size_t)j * d];
          for (int c = 0; c < d; ++c) acc[c] += w * px[c];
        }
        for (int c = 0; c < d; ++c) o[c] = (float)acc[c];
        if (lse) lse[row] = (float)(m + std::log(w_sum));
      }
    }
  // A query head with a NaN or infinite value gives NaN (packkv.h: non-finite inputs give
  // non-finite outputs): its NaN scores are passed over by the softmax's maximum, which
  // would otherwise read the row as empty (zeros, lse -inf) and hide the bad input.
  const size_t rows = (size_t)a.n_seqs * a.n_q_heads;
  for (size_t row = 0; row < rows; ++row) {
    const float* qr = q.data() + row * d;
    if (std::all_of(qr, qr + d, [](float v) { return std::isfinite(v); })) continue;
    std::fill(out + row * d, out + (row + 1) * d, std::numeric_limits<float>::quiet_NaN());
    if (lse) lse[row] = std::numeric_limits<float>::quiet_NaN();
  }
}

std::vector<float> CpuCache::load_q(const AttnArgs& a) const {
  const size_t n = (size_t)a.n_seqs * a.n_q_heads * config().shape.head_dim;
  std::vector<float> q(n);
  to_float(a.q, a.q_dtype, n, q.data());
  return q;
}

// Scores of the g query heads q ([g][d]) that read KV head hk, over positions [begin, end)
// of one sequence (sink tokens, blocks, residual window): out[j * ld + (t - begin)]. Out:
// float or double, see block_scores. Tokens out of the sliding window score -inf.
template <typename Out>
void CpuCache::span_scores(const CpuSeq& s, int64_t begin, int64_t end, int hk, const float* q, int g, Out* out,
                           size_t ld, AttnScratch* scratch) const {
  const fmt::Shape& sh = config().shape;
  const int d = sh.head_dim;
  const int64_t n = sh.block_tokens, sink = s.sink_len, res0 = sink + s.n_blocks() * n;
  if (begin < sink) dense_scores(s.sink_k.data(), begin, std::min(end, sink) - begin, hk, q, g, out, ld);
  const int64_t b0 = (std::max(begin, sink) - sink) / n, b1 = (std::min(end, res0) - sink + n - 1) / n;
  if (b0 < b1) {
    std::vector<double> bias;  // K centering: q . mu (float64)
    if (!s.k_mean.empty()) {
      bias.resize(g);
      for (int j = 0; j < g; ++j) {
        double dot = 0.0;
        for (int x = 0; x < d; ++x) dot += (double)q[(size_t)j * d + x] * (double)s.k_mean[(size_t)hk * d + x];
        bias[j] = dot;
      }
    }
    ScoreQuery sq;  // prepared once for the span's blocks
    prepare_score_query(q, g, d, &sq);
    for (int64_t b = std::max(b0, s.table.first_live()); b < b1; ++b)
      block_scores(sh, s.blob(b), hk, sq, out + (sink + b * n - begin), ld, scratch,
                   bias.empty() ? nullptr : bias.data());
  }
  if (end > res0) {
    const int64_t from = std::max(begin, res0);
    s.res.runs(from - res0, end - from, [&](int64_t t, int64_t m) {  // split where the ring wraps
      dense_scores(s.res.token(0, t), 0, m, hk, q, g, out + (res0 + t - begin), ld);
    });
  }
  // sliding window: expired tokens (sink tokens included, freed blocks, the expired part of
  // a block -- block_scores wrote it in original order, undoing the stored permutation --
  // and of the window) score -inf
  const int64_t gone = std::min(end, s.expired) - begin;
  for (int j = 0; j < g && gone > 0; ++j)
    std::fill(out + (size_t)j * ld, out + (size_t)j * ld + gone, -std::numeric_limits<Out>::infinity());
}

// acc[j][c] += sum_t probs[j * ld + (t - begin)] V[t][hk][c] over positions [begin, end) of
// one sequence; tokens out of the sliding window (sink tokens included) weigh 0.
void CpuCache::span_apply(const CpuSeq& s, int64_t begin, int64_t end, int hk, const float* probs, size_t ld, int g,
                          double* acc, AttnScratch* scratch) const {
  const fmt::Shape& sh = config().shape;
  const int64_t n = sh.block_tokens, sink = s.sink_len, res0 = sink + s.n_blocks() * n;
  const int64_t sink_from = std::max(begin, s.expired);  // sink tokens out of the sliding window weigh 0
  if (sink_from < std::min(end, sink))
    dense_apply(s.sink_v.data(), sink_from, std::min(end, sink) - sink_from, hk, probs + (sink_from - begin), ld, g,
                acc);
  const int64_t b0 = (std::max(begin, sink) - sink) / n, b1 = (std::min(end, res0) - sink + n - 1) / n;
  std::vector<float> masked;
  for (int64_t b = std::max(b0, s.table.first_live()); b < b1; ++b) {
    const int64_t pos = sink + b * n;
    const float* pb = probs + (pos - begin);
    if (pos < s.expired) {  // partly expired block: its expired tokens weigh 0
      const int64_t first = s.expired - pos;
      masked.assign((size_t)g * n, 0.0f);
      for (int j = 0; j < g; ++j)
        for (int64_t t = first; t < n; ++t) masked[(size_t)j * n + t] = pb[(size_t)j * ld + t];
      block_apply(sh, s.blob(b), hk, masked.data(), g, (size_t)n, acc, scratch);
    } else {
      block_apply(sh, s.blob(b), hk, pb, g, ld, acc, scratch);
    }
  }
  const int64_t from = std::max({begin, res0, s.expired});
  if (end > from)
    s.res.runs(from - res0, end - from, [&](int64_t t, int64_t m) {  // split where the ring wraps
      dense_apply(s.res.token(1, t), 0, m, hk, probs + (res0 + t - begin), ld, g, acc);
    });
}

// Scores of KV head hk of n dense tokens in kv_dtype ([..][H][D]: sink tokens or the
// residual window), rows first .. first+n-1, float64 products: out[j * ld + t].
template <typename Out>
void CpuCache::dense_scores(const uint8_t* k, int64_t first, int64_t n, int hk, const float* q, int g, Out* out,
                            size_t ld) const {
  const Config& c = config();
  const int d = c.shape.head_dim;
  std::vector<float> kr(d);
  for (int64_t t = 0; t < n; ++t) {
    to_float(k + ((size_t)(first + t) * row_ + (size_t)hk * d) * elem_, c.kv_dtype, (size_t)d, kr.data());
    for (int j = 0; j < g; ++j) {
      const float* qj = q + (size_t)j * d;
      double dot = 0.0;
      for (int x = 0; x < d; ++x) dot += (double)qj[x] * (double)kr[x];
      out[(size_t)j * ld + t] = (Out)dot;
    }
  }
}

// acc[j][c] += sum_t probs[j * ld + t] V[first + t][hk][c] over n dense tokens.
void CpuCache::dense_apply(const uint8_t* v, int64_t first, int64_t n, int hk, const float* probs, size_t ld, int g,
                           double* acc) const {
  const Config& c = config();
  const int d = c.shape.head_dim;
  std::vector<float> vr(d);
  for (int64_t t = 0; t < n; ++t) {
    to_float(v + ((size_t)(first + t) * row_ + (size_t)hk * d) * elem_, c.kv_dtype, (size_t)d, vr.data());
    for (int j = 0; j < g; ++j) {
      const double p = probs[(size_t)j * ld + t];
      double* aj = acc + (size_t)j * d;
      for (int x = 0; x < d; ++x) aj[x] += p * vr[x];
    }
  }
}

}  // namespace packkv
