// CpuCache::append: plan every sequence's part (convert and check the new tokens, encode
// the blocks the flush policy releases -- all blocks of the call in parallel, cpu/parallel.h --
// place them in pages), reserve every buffer, take
// the new pages from the pool (the budget check), then commit without a possible
// failure, so that a failed append leaves the cache and the pool as they were.
#include <algorithm>
#include <memory>
#include <vector>

#include "codec/block_codec.h"
#include "common/dtype.h"
#include "common/rules.h"
#include "cpu/cpu_cache.h"
#include "cpu/page_table.h"
#include "cpu/parallel.h"

namespace packkv {

namespace {

// Makes room for `size` elements with geometric growth (an exact reserve per flush would
// copy the whole store every 64 decode steps).
template <typename T>
void grow(std::vector<T>* v, size_t size) {
  if (v->capacity() < size) v->reserve(std::max(size, 2 * v->capacity()));
}

// One sequence's part of an append, computed before anything changes.
struct Plan {
  const uint8_t* k = nullptr;  // new tokens in kv_dtype: the caller's memory when its
  const uint8_t* v = nullptr;  // dtype is kv_dtype, else kconv / vconv
  std::vector<uint8_t> kconv, vconv;
  std::vector<uint8_t> blobs;  // newly compressed blocks, each starting 16-aligned
  std::vector<size_t> sizes;   // their sizes
  Placement place;             // where they go (cpu/page_table.h)
  size_t first_page = 0;       // index of its first new page among all taken pages
  int64_t to_sink = 0;         // new tokens that become sink tokens (the first ones; k / v
                               // point past them once they are counted)
  int64_t flushed = 0;         // blocks
  std::vector<float> k_mean;   // K centering: the mean computed from this append's block 0
};

// One block to encode: block `block` of the window of plans[plan].
struct EncodeJob {
  int plan;
  int64_t block;
};

}  // namespace

void CpuCache::append(int n_seqs, const int32_t* ids, const int32_t* counts, const void* k_new, const void* v_new,
                      packkv_dtype_t dtype, packkv_stream_t) {
  const Config& c = config();
  const int block_tokens = c.shape.block_tokens;
  const size_t in_elem = dtype_size(dtype);
  const size_t token_bytes = row_ * elem_;
  std::vector<Plan> plans(n_seqs);
  std::vector<EncodeJob> jobs;  // the blocks to encode
  size_t new_pages = 0;
  // 1. Plan (may throw, changes nothing): convert and check the new tokens, encode the
  // blocks that will be flushed.
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
    const CpuSeq& s = seqs_[ids[i]];
    p.to_sink = std::min<int64_t>(n, c.sink_tokens - s.sink_len);
    const size_t skip = (size_t)p.to_sink * token_bytes;  // the window's new tokens follow
    p.flushed = blocks_to_flush(s.res.len() + n - p.to_sink, c.residual_tokens, block_tokens);
    p.k += skip;  // from here on: the window's new tokens
    p.v += skip;
    if (p.flushed > 0 && c.k_transform == PACKKV_K_TRANSFORM_CENTER && s.k_mean.empty())
      p.k_mean = block0_k_mean(s, p.k);
    for (int64_t b = 0; b < p.flushed; ++b) jobs.push_back(EncodeJob{i, b});
  }
  // 1b. Encode every flushed block of every sequence, in parallel (cpu/parallel.h): each
  // job writes its own blob.
  std::vector<std::vector<uint8_t>> encoded(jobs.size());
  parallel_for(par_, (int64_t)jobs.size(), (int64_t)jobs.size() * block_tokens * (int64_t)row_ / 32, [&](int64_t x) {
    const EncodeJob& jb = jobs[(size_t)x];
    const Plan& p = plans[(size_t)jb.plan];
    const CpuSeq& s = seqs_[ids[jb.plan]];
    encode_window_block(s, p.k, p.v, jb.block, s.k_mean.empty() ? p.k_mean.data() : s.k_mean.data(),
                        &encoded[(size_t)x]);
  });
  // 1c. Each sequence's blobs one after the other (each 16-aligned), placed in pages.
  size_t job = 0;
  for (int i = 0; i < n_seqs; ++i) {
    Plan& p = plans[i];
    for (int64_t b = 0; b < p.flushed; ++b, ++job) {
      p.blobs.resize(align16(p.blobs.size()), 0);
      p.blobs.insert(p.blobs.end(), encoded[job].begin(), encoded[job].end());
      p.sizes.push_back(encoded[job].size());
      std::vector<uint8_t>().swap(encoded[job]);
    }
    if (p.flushed > 0) {
      p.place = seqs_[ids[i]].table.plan(p.sizes, pool_->page_bytes());
      p.first_page = new_pages;
      new_pages += p.place.new_pages;
    }
  }
  // 2. Pages (PACKKV_X_ERR_BUDGET_EXCEEDED or out of memory; all or nothing), then
  // 3. every buffer the commit needs (may throw: the pages go back). Neither changes
  // what the cache holds.
  std::vector<Page*> pages;
  pool_->acquire(new_pages, &pages);
  try {
    for (int i = 0; i < n_seqs; ++i) {
      CpuSeq& s = seqs_[ids[i]];
      const Plan& p = plans[i];
      const int64_t res_after = s.res.len() + counts[i] - p.to_sink - p.flushed * block_tokens;
      s.table.reserve(p.sizes.size());
      grow(&s.sink_k, (size_t)(s.sink_len + p.to_sink) * token_bytes);
      grow(&s.sink_v, (size_t)(s.sink_len + p.to_sink) * token_bytes);
      if (!p.k_mean.empty()) s.k_mean.reserve(p.k_mean.size());
      reserve_res(s, res_after);
    }
  } catch (...) {
    for (Page* pg : pages) pool_->release(pg);
    throw;
  }
  // 4. Commit (no throw: capacity is reserved). The first to_sink new tokens become sink
  // tokens; the window then loses its first `drop` tokens (compressed now, whole blocks):
  // first the old residual tokens, then new ones; the remaining new tokens join it.
  int64_t blob_bytes = 0, blob_tokens = 0;
  for (int i = 0; i < n_seqs; ++i) {
    CpuSeq& s = seqs_[ids[i]];
    Plan& p = plans[i];
    const size_t sink_bytes = (size_t)p.to_sink * token_bytes;
    const uint8_t* pk = p.k - sink_bytes;  // the new tokens (p.k: the window's part of them)
    const uint8_t* pv = p.v - sink_bytes;
    s.sink_k.insert(s.sink_k.end(), pk, pk + sink_bytes);
    s.sink_v.insert(s.sink_v.end(), pv, pv + sink_bytes);
    s.sink_len += p.to_sink;
    if (!p.k_mean.empty()) s.k_mean.assign(p.k_mean.begin(), p.k_mean.end());  // capacity reserved
    if (p.flushed > 0) {
      s.table.commit(p.place, p.blobs.data(), p.sizes, pages.data() + p.first_page, pool_.get());
      for (size_t z : p.sizes) blob_bytes += (int64_t)z;
      blob_tokens += p.flushed * block_tokens;
    }
    const int64_t drop = p.flushed * block_tokens;
    const int64_t skip_new = p.to_sink + std::max<int64_t>(0, drop - s.res.len());  // new tokens not kept
    if (drop >= s.res.len())
      s.res.shrink(0);
    else
      s.res.pop_blocks(p.flushed);
    if (counts[i] > skip_new)
      s.res.push(pk + (size_t)skip_new * token_bytes, pv + (size_t)skip_new * token_bytes, counts[i] - skip_new);
    expire(s);
  }
  pool_->note_compressed(this, blob_bytes, blob_tokens);
}

void CpuCache::reserve_res(CpuSeq& s, int64_t tokens) const {
  const int n = config().shape.block_tokens;
  s.res.reserve(tokens, row_ * elem_, n, (config().residual_tokens + 2 * (int64_t)n - 1) / n);
}

// Tokens [b * N, (b + 1) * N) of the window (residual tokens of s, then the new tokens nk /
// nv in kv_dtype) as float, K into fk and V into fv (either may be null).
void CpuCache::window_block_floats(const CpuSeq& s, const uint8_t* nk, const uint8_t* nv, int64_t b, float* fk,
                                   float* fv) const {
  const Config& c = config();
  const size_t block_vals = (size_t)c.shape.block_tokens * row_;
  const size_t res_vals = (size_t)s.res.len() * row_;
  for (int kv = 0; kv < 2; ++kv) {
    const uint8_t* nw = kv == 0 ? nk : nv;
    float* f = kv == 0 ? fk : fv;
    if (!f) continue;
    const size_t first = (size_t)b * block_vals;
    const size_t from_res = first < res_vals ? std::min(block_vals, res_vals - first) : 0;
    // a block of the window is contiguous in its ring (cpu/residual_ring.h)
    if (from_res) to_float(s.res.token(kv, b * c.shape.block_tokens), c.kv_dtype, from_res, f);
    if (from_res < block_vals)
      to_float(nw + (first + from_res - res_vals) * elem_, c.kv_dtype, block_vals - from_res, f + from_res);
  }
}

// K centering: mu = fp32(float64 mean over the tokens) of the sequence's block 0, the first
// block of this window (s has no block yet).
std::vector<float> CpuCache::block0_k_mean(const CpuSeq& s, const uint8_t* nk) const {
  const int n = config().shape.block_tokens;
  std::vector<float> fk((size_t)n * row_), mu(row_);
  window_block_floats(s, nk, nullptr, 0, fk.data(), nullptr);
  std::vector<double> sum(row_, 0.0);
  for (int t = 0; t < n; ++t)
    for (size_t i = 0; i < row_; ++i) sum[i] += (double)fk[(size_t)t * row_ + i];
  for (size_t i = 0; i < row_; ++i) mu[i] = (float)(sum[i] / n);
  return mu;
}

void CpuCache::encode_window_block(const CpuSeq& s, const uint8_t* nk, const uint8_t* nv, int64_t b,
                                   const float* k_mean, std::vector<uint8_t>* blob) const {
  const Config& c = config();
  const size_t block_vals = (size_t)c.shape.block_tokens * row_;
  // not zero-initialized: window_block_floats writes every value (a 2 x 256 KiB memset per
  // block of 8 x 128 otherwise)
  std::unique_ptr<float[]> fk(new float[block_vals]), fv(new float[block_vals]);
  window_block_floats(s, nk, nv, b, fk.get(), fv.get());
  if (c.k_transform == PACKKV_K_TRANSFORM_CENTER)  // k - mu in fp32
    for (int t = 0; t < c.shape.block_tokens; ++t)
      for (size_t i = 0; i < row_; ++i) fk[(size_t)t * row_ + i] -= k_mean[i];
  encode_block(c, fk.get(), fv.get(), blob);
}

}  // namespace packkv
