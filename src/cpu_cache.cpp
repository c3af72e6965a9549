// The CPU backend: per-sequence residual windows in kv_dtype, a growing store of
// compressed block blobs, the flush policy, and attention over both.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "block_codec.h"
#include "cache_impl.h"
#include "cpu_attention.h"
#include "dtype.h"
#include "error.h"
#include "tile_format.h"

namespace packkv {

namespace {

constexpr size_t kBlobAlign = 16;  // every blob starts 16-byte aligned in the store

struct Seq {
  std::vector<uint8_t> store;          // blobs, each 16-byte aligned
  std::vector<uint64_t> block_offset;  // start of each blob in store
  std::vector<uint8_t> res_k, res_v;   // residual window, [n_res][H][D] in kv_dtype
  int64_t n_res = 0;

  int64_t n_blocks() const { return (int64_t)block_offset.size(); }
};

// Number of blocks the flush policy releases from a window of `window` tokens
// (PACKKV.md section 2.3; T7): flush while window >= residual + block.
int64_t blocks_to_flush(int64_t window, const Config& c) {
  if (window < (int64_t)c.residual_tokens + c.block_tokens) return 0;
  return (window - c.residual_tokens) / c.block_tokens;
}

// Makes room for `size` elements with geometric growth (an exact reserve per flush would
// copy the whole store every 64 decode steps).
template <typename T>
void grow(std::vector<T>* v, size_t size) {
  if (v->capacity() < size) v->reserve(std::max(size, 2 * v->capacity()));
}

// A 16-byte aligned view of the store (std::vector storage is at least 16-aligned
// through operator new on the platforms we build for).
const uint8_t* blob_at(const Seq& s, int64_t b) { return s.store.data() + s.block_offset[b]; }

class CpuCache final : public CacheImpl {
 public:
  explicit CpuCache(const Config& c) : CacheImpl(c), seqs_(c.max_seqs) {
    row_ = (size_t)c.n_kv_heads * c.head_dim;
    elem_ = dtype_size(c.kv_dtype);
  }

  int64_t seq_length(int seq) const override {
    const Seq& s = seqs_[seq];
    return s.n_blocks() * config().block_tokens + s.n_res;
  }

  void append(int n_seqs, const int32_t* ids, const int32_t* counts, const void* k_new,
              const void* v_new, packkv_dtype_t dtype, packkv_stream_t) override {
    const Config& c = config();
    const size_t in_elem = dtype_size(dtype);
    const size_t token_bytes = row_ * elem_;
    struct Plan {
      const uint8_t* k = nullptr;   // new tokens in kv_dtype: the caller's memory when its
      const uint8_t* v = nullptr;   // dtype is kv_dtype, else kconv / vconv
      std::vector<uint8_t> kconv, vconv;
      std::vector<uint8_t> blobs;   // newly compressed blocks, aligned relative to store end
      std::vector<uint64_t> offsets;
      int64_t flushed = 0;          // blocks
    };
    std::vector<Plan> plans(n_seqs);
    // Phase 1 (may throw, changes nothing): convert and check the new tokens, encode
    // the blocks that will be flushed, reserve every buffer the commit needs.
    size_t at = 0;
    for (int i = 0; i < n_seqs; ++i) {
      Plan& p = plans[i];
      const int64_t n = counts[i];
      const size_t vals = (size_t)n * row_;
      for (int kv = 0; kv < 2; ++kv) {
        const uint8_t* src = static_cast<const uint8_t*>(kv == 0 ? k_new : v_new) + at * in_elem;
        (kv == 0 ? p.k : p.v) =
            convert_checked(src, dtype, vals, kv == 0 ? &p.kconv : &p.vconv, ids[i], kv == 0 ? "k_new" : "v_new");
      }
      at += vals;
      const Seq& s = seqs_[ids[i]];
      p.flushed = blocks_to_flush(s.n_res + n, c);
      if (p.flushed > 0) encode_flushed(s, p.k, p.v, p.flushed, s.store.size(), &p.blobs, &p.offsets);
    }
    for (int i = 0; i < n_seqs; ++i) {
      Seq& s = seqs_[ids[i]];
      const Plan& p = plans[i];
      const size_t res_after = (size_t)(s.n_res + counts[i] - p.flushed * c.block_tokens) * token_bytes;
      grow(&s.store, s.store.size() + p.blobs.size());
      grow(&s.block_offset, s.block_offset.size() + p.offsets.size());
      grow(&s.res_k, res_after);
      grow(&s.res_v, res_after);
    }
    // Phase 2 (no throw: capacity is reserved). The window loses its first `drop` tokens
    // (compressed now): first from the old residual tokens, then from the new ones.
    for (int i = 0; i < n_seqs; ++i) {
      Seq& s = seqs_[ids[i]];
      Plan& p = plans[i];
      s.store.insert(s.store.end(), p.blobs.begin(), p.blobs.end());
      s.block_offset.insert(s.block_offset.end(), p.offsets.begin(), p.offsets.end());
      const int64_t drop = p.flushed * c.block_tokens;
      const int64_t from_old = std::min(drop, s.n_res);
      const size_t skip_new = (size_t)(drop - from_old) * token_bytes;
      const size_t new_bytes = (size_t)counts[i] * token_bytes;
      for (int kv = 0; kv < 2; ++kv) {
        std::vector<uint8_t>& res = kv == 0 ? s.res_k : s.res_v;
        const uint8_t* src = kv == 0 ? p.k : p.v;
        res.erase(res.begin(), res.begin() + (ptrdiff_t)((size_t)from_old * token_bytes));
        if (new_bytes > skip_new) res.insert(res.end(), src + skip_new, src + new_bytes);
      }
      s.n_res += counts[i] - drop;
    }
  }

  void remove_seq(int seq) override { seqs_[seq] = Seq(); }

  void reset() override {
    for (Seq& s : seqs_) s = Seq();
  }

  void stats(int seq, packkv_cache_stats_t* out) const override {
    std::memset(out, 0, sizeof *out);
    out->struct_size = sizeof *out;
    const Config& c = config();
    for (int i = 0; i < c.max_seqs; ++i) {
      if (seq >= 0 && i != seq) continue;
      const Seq& s = seqs_[i];
      out->n_blocks += s.n_blocks();
      out->n_compressed_tokens += s.n_blocks() * c.block_tokens;
      out->n_residual_tokens += s.n_res;
      size_t prev_end = 0;
      for (int64_t b = 0; b < s.n_blocks(); ++b) {
        const BlobSizes z = blob_sizes(c, blob_at(s, b));
        // alignment padding before the blob belongs to the index
        out->index_bytes += z.header + (int64_t)(s.block_offset[b] - prev_end) + (int64_t)sizeof(uint64_t);
        out->perm_bytes += z.perm;
        out->k_scale_bytes += z.k_scale;
        out->v_scale_bytes += z.v_scale;
        out->k_tile_bytes += z.k_tiles;
        out->v_tile_bytes += z.v_tiles;
        prev_end = s.block_offset[b] + (size_t)z.total();
      }
      out->compressed_bytes_reserved +=
          (int64_t)(s.store.capacity() + s.block_offset.capacity() * sizeof(uint64_t));
      out->residual_bytes += (int64_t)(s.res_k.size() + s.res_v.size());
    }
    out->n_tokens = out->n_compressed_tokens + out->n_residual_tokens;
    out->compressed_bytes_used = out->k_tile_bytes + out->v_tile_bytes + out->k_scale_bytes +
                                 out->v_scale_bytes + out->index_bytes + out->perm_bytes;
    out->fp16_bytes = out->n_tokens * (int64_t)row_ * 2 * 2;
  }

  void decompress(int seq, float* k_out, float* v_out, packkv_stream_t) const override {
    const Config& c = config();
    const Seq& s = seqs_[seq];
    const size_t block_vals = (size_t)c.block_tokens * row_;
    for (int64_t b = 0; b < s.n_blocks(); ++b)
      decode_block(c, blob_at(s, b), k_out ? k_out + b * block_vals : nullptr,
                   v_out ? v_out + b * block_vals : nullptr);
    const size_t done = (size_t)s.n_blocks() * block_vals;
    if (k_out) to_float(s.res_k.data(), c.kv_dtype, (size_t)s.n_res * row_, k_out + done);
    if (v_out) to_float(s.res_v.data(), c.kv_dtype, (size_t)s.n_res * row_, v_out + done);
  }

  void sync() const override {}

  int64_t n_blocks(int seq) const override { return seqs_[seq].n_blocks(); }

  std::vector<uint8_t> block_bytes(int seq, int64_t block) const override {
    const Seq& s = seqs_[seq];
    const uint8_t* b = blob_at(s, block);
    return std::vector<uint8_t>(b, b + blob_sizes(config(), b).total());
  }

  size_t workspace_size(int, int) const override { return 0; }

  void scores(const AttnArgs& a, float* scores, int64_t ld) const override {
    const Config& c = config();
    const int group = a.n_q_heads / c.n_kv_heads;
    std::vector<float> q((size_t)a.n_q_heads * c.head_dim);
    for (int i = 0; i < a.n_seqs; ++i) {
      load_q(a, i, q.data());
      float* out = scores + (size_t)i * a.n_q_heads * ld;
      seq_scores(seqs_[a.seq_ids[i]], q.data(), group, out, (size_t)ld);
    }
  }

  void apply(const AttnArgs& a, const float* probs, int64_t ld, float* out) const override {
    const Config& c = config();
    const int group = a.n_q_heads / c.n_kv_heads;
    std::vector<double> acc((size_t)a.n_q_heads * c.head_dim);
    for (int i = 0; i < a.n_seqs; ++i) {
      seq_apply(seqs_[a.seq_ids[i]], probs + (size_t)i * a.n_q_heads * ld, (size_t)ld, group, acc.data());
      float* o = out + (size_t)i * a.n_q_heads * c.head_dim;
      for (size_t x = 0; x < acc.size(); ++x) o[x] = (float)acc[x];
    }
  }

  void decode(const AttnArgs& a, float scale, float* out, float* lse) const override {
    const Config& c = config();
    const int group = a.n_q_heads / c.n_kv_heads;
    std::vector<float> q((size_t)a.n_q_heads * c.head_dim);
    std::vector<double> acc((size_t)a.n_q_heads * c.head_dim);
    for (int i = 0; i < a.n_seqs; ++i) {
      const Seq& s = seqs_[a.seq_ids[i]];
      const int64_t len = seq_length(a.seq_ids[i]);
      float* o = out + (size_t)i * a.n_q_heads * c.head_dim;
      if (len == 0) {
        std::fill(o, o + (size_t)a.n_q_heads * c.head_dim, 0.0f);
        if (lse)
          for (int j = 0; j < a.n_q_heads; ++j)
            lse[(size_t)i * a.n_q_heads + j] = -std::numeric_limits<float>::infinity();
        continue;
      }
      load_q(a, i, q.data());
      // Scores in double: q . k may exceed FLT_MAX while softmax(scale * q . K) V is finite.
      std::vector<double> sc((size_t)a.n_q_heads * len);
      std::vector<float> p((size_t)a.n_q_heads * len);
      seq_scores(s, q.data(), group, sc.data(), (size_t)len);
      for (int j = 0; j < a.n_q_heads; ++j) {
        const double* srow = &sc[(size_t)j * len];
        float* row = &p[(size_t)j * len];
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t t = 0; t < len; ++t) mx = std::max(mx, (double)scale * srow[t]);
        double sum = 0.0;
        for (int64_t t = 0; t < len; ++t) sum += std::exp((double)scale * srow[t] - mx);
        for (int64_t t = 0; t < len; ++t) row[t] = (float)(std::exp((double)scale * srow[t] - mx) / sum);
        if (lse) lse[(size_t)i * a.n_q_heads + j] = (float)(mx + std::log(sum));
      }
      seq_apply(s, p.data(), (size_t)len, group, acc.data());
      for (size_t x = 0; x < acc.size(); ++x) o[x] = (float)acc[x];
    }
  }

 private:
  // Converts n values of dtype to kv_dtype, rejecting values that are not finite in
  // kv_dtype (NaN, inf, or overflow by the conversion).
  // Returns the values in kv_dtype: src itself when dtype is kv_dtype, else *conv.
  const uint8_t* convert_checked(const uint8_t* src, packkv_dtype_t dtype, size_t n, std::vector<uint8_t>* conv,
                                 int seq, const char* what) const {
    const Config& c = config();
    const uint8_t* out = src;
    if (dtype != c.kv_dtype) {
      std::vector<float> tmp(n);
      to_float(src, dtype, n, tmp.data());
      conv->resize(n * elem_);
      from_float(tmp.data(), n, c.kv_dtype, conv->data());
      out = conv->data();
    }
    const size_t bad = first_non_finite(out, c.kv_dtype, n);
    if (bad == n) return out;
    const float x = load_as_float(src, dtype, bad);
    const size_t token = bad / row_, ch = bad % row_;
    fail(PACKKV_ERR_INVALID_ARGUMENT,
         std::string("packkv_cache_append: ") + what + " of sequence " + std::to_string(seq) + ", new token " +
             std::to_string(token) + ", head " + std::to_string(ch / c.head_dim) + ", channel " +
             std::to_string(ch % c.head_dim) + " is " +
             (std::isfinite(x) ? "out of the range of kv_dtype " + std::string(dtype_name(c.kv_dtype))
                               : std::string(std::isnan(x) ? "NaN" : "infinite")) +
             "; nothing was appended");
  }

  // Index of the first NaN or infinity among n values of dtype, or n.
  static size_t first_non_finite(const uint8_t* data, packkv_dtype_t dtype, size_t n) {
    if (dtype == PACKKV_DTYPE_F32) return first_all_ones(reinterpret_cast<const uint32_t*>(data), n, 0x7f800000u);
    return first_all_ones(reinterpret_cast<const uint16_t*>(data), n,
                          (uint16_t)(dtype == PACKKV_DTYPE_F16 ? 0x7c00u : 0x7f80u));
  }

  // Index of the first word whose exponent bits (mask) are all ones, or n. A branch-free
  // pass first (vectorizes), the search only when one exists.
  template <typename W>
  static size_t first_all_ones(const W* w, size_t n, W mask) {
    uint32_t any = 0;
    for (size_t i = 0; i < n; ++i) any |= (uint32_t)((w[i] & mask) == mask);
    if (!any) return n;
    for (size_t i = 0; i < n; ++i)
      if ((w[i] & mask) == mask) return i;
    return n;
  }

  // Encodes the first n_blocks blocks of the window (residual tokens of s, then the
  // new tokens nk/nv) as blobs placed after `store_end` bytes.
  void encode_flushed(const Seq& s, const uint8_t* nk, const uint8_t* nv, int64_t n_blocks, size_t store_end,
                      std::vector<uint8_t>* blobs, std::vector<uint64_t>* offsets) const {
    const Config& c = config();
    const size_t block_vals = (size_t)c.block_tokens * row_;
    const size_t res_vals = (size_t)s.n_res * row_;
    std::vector<float> fk(block_vals), fv(block_vals);
    for (int64_t b = 0; b < n_blocks; ++b) {
      for (int kv = 0; kv < 2; ++kv) {
        const std::vector<uint8_t>& res = kv == 0 ? s.res_k : s.res_v;
        const uint8_t* nw = kv == 0 ? nk : nv;
        float* f = kv == 0 ? fk.data() : fv.data();
        // tokens [b * N, (b + 1) * N) of the window: residual tokens, then new ones
        const size_t first = (size_t)b * block_vals;
        const size_t from_res = first < res_vals ? std::min(block_vals, res_vals - first) : 0;
        if (from_res) to_float(res.data() + first * elem_, c.kv_dtype, from_res, f);
        if (from_res < block_vals)
          to_float(nw + (first + from_res - res_vals) * elem_, c.kv_dtype, block_vals - from_res, f + from_res);
      }
      size_t pos = store_end + blobs->size();
      size_t pad = (kBlobAlign - pos % kBlobAlign) % kBlobAlign;
      blobs->resize(blobs->size() + pad, 0);
      offsets->push_back(store_end + blobs->size());
      encode_block(c, fk.data(), fv.data(), blobs);
    }
  }

  void load_q(const AttnArgs& a, int i, float* q) const {
    const size_t n = (size_t)a.n_q_heads * config().head_dim;
    const size_t first = (size_t)i * n;
    for (size_t x = 0; x < n; ++x) q[x] = load_as_float(a.q, a.q_dtype, first + x);
  }

  // Scores of all query heads over one sequence: out[j * ld + t] (Out: float or double,
  // see block_scores).
  template <typename Out>
  void seq_scores(const Seq& s, const float* q, int group, Out* out, size_t ld) const {
    const Config& c = config();
    const int d = c.head_dim;
    AttnScratch scratch;
    std::vector<float> res((size_t)s.n_res * row_);
    to_float(s.res_k.data(), c.kv_dtype, res.size(), res.data());
    for (int hk = 0; hk < c.n_kv_heads; ++hk) {
      const float* qh = q + (size_t)hk * group * d;
      Out* oh = out + (size_t)hk * group * ld;
      for (int64_t b = 0; b < s.n_blocks(); ++b)
        block_scores(c, blob_at(s, b), hk, qh, group, oh + b * c.block_tokens, ld, &scratch);
      const int64_t base = s.n_blocks() * c.block_tokens;
      for (int64_t t = 0; t < s.n_res; ++t) {
        const float* kr = res.data() + (size_t)t * row_ + (size_t)hk * d;
        for (int j = 0; j < group; ++j) {
          const float* qj = qh + (size_t)j * d;
          double dot = 0.0;
          for (int x = 0; x < d; ++x) dot += (double)qj[x] * (double)kr[x];
          oh[(size_t)j * ld + base + t] = (Out)dot;
        }
      }
    }
  }

  // acc[j][c] = sum_t probs[j * ld + t] V[t][kv_head(j)][c] over one sequence.
  void seq_apply(const Seq& s, const float* probs, size_t ld, int group, double* acc) const {
    const Config& c = config();
    const int d = c.head_dim;
    std::fill(acc, acc + (size_t)c.n_kv_heads * group * d, 0.0);
    AttnScratch scratch;
    std::vector<float> res((size_t)s.n_res * row_);
    to_float(s.res_v.data(), c.kv_dtype, res.size(), res.data());
    for (int hk = 0; hk < c.n_kv_heads; ++hk) {
      const float* ph = probs + (size_t)hk * group * ld;
      double* ah = acc + (size_t)hk * group * d;
      for (int64_t b = 0; b < s.n_blocks(); ++b)
        block_apply(c, blob_at(s, b), hk, ph + b * c.block_tokens, group, ld, ah, &scratch);
      const int64_t base = s.n_blocks() * c.block_tokens;
      for (int64_t t = 0; t < s.n_res; ++t) {
        const float* vr = res.data() + (size_t)t * row_ + (size_t)hk * d;
        for (int j = 0; j < group; ++j) {
          const double p = ph[(size_t)j * ld + base + t];
          for (int x = 0; x < d; ++x) ah[(size_t)j * d + x] += p * vr[x];
        }
      }
    }
  }

  std::vector<Seq> seqs_;
  size_t row_ = 0;   // values per token (n_kv_heads * head_dim)
  size_t elem_ = 0;  // bytes per kv_dtype element
};

}  // namespace

std::unique_ptr<CacheImpl> make_cpu_cache(const Config& config) {
  return std::unique_ptr<CacheImpl>(new CpuCache(config));
}

}  // namespace packkv
