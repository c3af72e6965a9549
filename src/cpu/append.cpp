// CpuCache::append: plan every sequence's part (convert and check the new tokens, encode
// the blocks the flush policy releases -- or take them from their jobs when they were
// encoded ahead (cpu_cache.h); the others: all blocks of the call in parallel,
// cpu/parallel.h -- place them in pages), reserve every buffer, take
// the new pages from the pool (the budget check), then commit without a possible
// failure, so that a failed append leaves the cache and the pool as they were; then queue
// the blocks that became complete for encoding ahead.
#include <algorithm>
#include <memory>
#include <vector>

#include "codec/block_codec.h"
#include "common/dtype.h"
#include "common/rules.h"
#include "cpu/cpu_cache.h"
#include "cpu/encode_ahead.h"
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
  std::shared_ptr<AheadJob> one;  // or, for one block encoded ahead, its job (blob: its blob)
  std::vector<size_t> sizes;   // their sizes
  Placement place;             // where they go (cpu/page_table.h)
  size_t first_page = 0;       // index of its first new page among all taken pages
  int64_t to_sink = 0;         // new tokens that become sink tokens (the first ones; k / v
                               // point past them once they are counted)
  int64_t flushed = 0;         // blocks
  std::vector<float> k_mean;   // K centering: the mean computed from this append's block 0
};

// One block to encode: block `block` of the window of plans[plan]; `ahead`: its job when
// it was encoded ahead (done: its blob is the block's), else null.
struct EncodeJob {
  int plan;
  int64_t block;
  const AheadJob* ahead;
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
    // blocks encoded ahead: the first flushed blocks of the window may have jobs
    const auto ahead = p.flushed > 0 ? ahead_.find(ids[i]) : ahead_.end();
    for (int64_t b = 0; b < p.flushed; ++b) {
      const AheadJob* aj = ahead != ahead_.end() && b < (int64_t)ahead->second.size() ? ahead->second[b].get() : nullptr;
      if (aj && settle_ahead(*ahead->second[b], true) != AheadJob::kDone) aj = nullptr;
      jobs.push_back(EncodeJob{i, b, aj});
    }
    if (p.flushed > 0 && c.k_transform == PACKKV_K_TRANSFORM_CENTER && s.k_mean.empty()) {
      const AheadJob* aj0 = jobs[jobs.size() - (size_t)p.flushed].ahead;
      p.k_mean = aj0 ? aj0->mean : block0_k_mean(s, p.k);  // the same values
    }
  }
  // 1b. Encode every flushed block of every sequence that was not encoded ahead, in
  // parallel (cpu/parallel.h): each job writes its own blob.
  std::vector<size_t> todo;
  for (size_t x = 0; x < jobs.size(); ++x)
    if (!jobs[x].ahead) todo.push_back(x);
  std::vector<std::vector<uint8_t>> encoded(jobs.size());
  parallel_for(par_, (int64_t)todo.size(), (int64_t)todo.size() * block_tokens * (int64_t)row_ / 32, [&](int64_t y) {
    const size_t x = todo[(size_t)y];
    const EncodeJob& jb = jobs[x];
    const Plan& p = plans[(size_t)jb.plan];
    const CpuSeq& s = seqs_[ids[jb.plan]];
    encode_window_block(s, p.k, p.v, jb.block, s.k_mean.empty() ? p.k_mean.data() : s.k_mean.data(), &encoded[x]);
  });
  // 1c. Each sequence's blobs one after the other (each 16-aligned), placed in pages.
  size_t job = 0;
  for (int i = 0; i < n_seqs; ++i) {
    Plan& p = plans[i];
    if (p.flushed == 1 && jobs[job].ahead) {  // no copy: commit copies from the job's blob
      p.one = ahead_.at(ids[i]).front();
      p.sizes.push_back(p.one->blob.size());
      ++job;
    }
    for (int64_t b = p.one ? 1 : 0; b < p.flushed; ++b, ++job) {
      const std::vector<uint8_t>& blob = jobs[job].ahead ? jobs[job].ahead->blob : encoded[job];
      p.blobs.resize(align16(p.blobs.size()), 0);
      p.blobs.insert(p.blobs.end(), blob.begin(), blob.end());
      p.sizes.push_back(blob.size());
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
      if (s.res.needs_growth(res_after)) drop_ahead(ids[i]);  // the ring's tokens move (jobs read them)
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
      s.table.commit(p.place, p.one ? p.one->blob.data() : p.blobs.data(), p.sizes, pages.data() + p.first_page,
                     pool_.get());
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
    const auto ahead = p.flushed > 0 ? ahead_.find(ids[i]) : ahead_.end();
    if (ahead != ahead_.end()) {  // the jobs of the flushed blocks are used up (settled in 1)
      std::vector<std::shared_ptr<AheadJob>>& list = ahead->second;
      list.erase(list.begin(), list.begin() + (ptrdiff_t)std::min<size_t>((size_t)p.flushed, list.size()));
      if (list.empty()) ahead_.erase(ahead);
    }
  }
  pool_->note_compressed(this, blob_bytes, blob_tokens);
  for (int i = 0; i < n_seqs; ++i) schedule_ahead(ids[i]);
}

void CpuCache::schedule_ahead(int seq) noexcept {
  if (!ahead_on_) return;
  const Config& c = config();
  const CpuSeq& s = seqs_[seq];
  const int n = c.shape.block_tokens;
  const int64_t complete = s.res.len() / n;  // the window starts at a block's first token
  if (complete == 0) return;
  const bool centre = c.k_transform == PACKKV_K_TRANSFORM_CENTER;
  try {
    std::vector<std::shared_ptr<AheadJob>>& list = ahead_[seq];
    for (int64_t b = (int64_t)list.size(); b < complete; ++b) {
      // K centring, no mean yet: block 0 computes it; later blocks wait for its flush
      if (centre && s.k_mean.empty() && b > 0) break;
      std::shared_ptr<AheadJob> job = std::make_shared<AheadJob>();
      const uint8_t* k = s.res.token(0, b * n);
      const uint8_t* v = s.res.token(1, b * n);
      std::vector<float> mean = centre ? s.k_mean : std::vector<float>();
      const bool own_mean = centre && s.k_mean.empty();
      // where the blob will go if the open page has room: after the blobs of window
      // blocks 0 .. b-1, so within (b + 1) worst-case blobs of the open page's fill
      uint8_t* pre = nullptr;
      size_t pre_n = 0;
      if (const Page* open = s.table.open_page()) {
        const size_t from = align16(s.table.open_fill());
        const size_t to = std::min(pool_->page_bytes(), from + (size_t)(b + 1) * align16(c.shape.max_blob_bytes()));
        if (from < to) {
          pre = open->data + from;
          pre_n = to - from;
        }
      }
      job->work = [this, k, v, mean, own_mean, pre, pre_n](AheadJob& j) {
        const size_t vals = (size_t)config().shape.block_tokens * row_;
        std::unique_ptr<float[]> fk(new float[vals]), fv(new float[vals]);
        to_float(k, config().kv_dtype, vals, fk.get());
        to_float(v, config().kv_dtype, vals, fv.get());
        if (own_mean) j.mean = k_mean_of(fk.get());
        encode_floats(fk.get(), fv.get(), own_mean ? j.mean.data() : mean.data(), &j.blob);
        prefault(pre, pre_n);  // no byte changes: harmless wherever the blob finally goes
      };
      list.reserve(list.size() + 1);
      submit_ahead(job);
      list.push_back(std::move(job));  // room reserved: no throw
    }
    if (list.empty()) ahead_.erase(seq);
  } catch (...) {  // what is not queued is encoded at its flush
    const auto it = ahead_.find(seq);
    if (it != ahead_.end() && it->second.empty()) ahead_.erase(it);
  }
}

void CpuCache::drop_ahead(int seq) noexcept {
  const auto it = ahead_.find(seq);
  if (it == ahead_.end()) return;
  for (const std::shared_ptr<AheadJob>& j : it->second) settle_ahead(*j, false);
  ahead_.erase(it);
}

void CpuCache::drop_all_ahead() noexcept {
  for (auto& kv : ahead_)
    for (const std::shared_ptr<AheadJob>& j : kv.second) settle_ahead(*j, false);
  ahead_.clear();
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
  std::vector<float> fk((size_t)n * row_);
  window_block_floats(s, nk, nullptr, 0, fk.data(), nullptr);
  return k_mean_of(fk.data());
}

std::vector<float> CpuCache::k_mean_of(const float* fk) const {
  const int n = config().shape.block_tokens;
  std::vector<float> mu(row_);
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
  encode_floats(fk.get(), fv.get(), k_mean, blob);
}

void CpuCache::encode_floats(float* fk, const float* fv, const float* k_mean, std::vector<uint8_t>* blob) const {
  const Config& c = config();
  if (c.k_transform == PACKKV_K_TRANSFORM_CENTER)  // k - mu in fp32
    for (int t = 0; t < c.shape.block_tokens; ++t)
      for (size_t i = 0; i < row_; ++i) fk[(size_t)t * row_ + i] -= k_mean[i];
  encode_block(c, fk, fv, blob);
}

}  // namespace packkv
