// CpuCache storage: creation, sequence lengths, removal, statistics, decompression and
// blob access (the class and its other steps: cpu_cache.h).
#include "cpu/cpu_cache.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <string>
#include <utility>

#include "codec/block_codec.h"
#include "common/dtype.h"
#include "common/error.h"
#include "common/rules.h"

namespace packkv {

CpuCache::CpuCache(const Config& c, std::shared_ptr<PagePool> pool)
    : CacheImpl(c), pool_(std::move(pool)), seqs_(c.max_seqs) {
  par_.n_threads = c.n_threads > 0 ? c.n_threads : default_threads();
  ahead_on_ = ahead_enabled(par_.n_threads, false);
  row_ = (size_t)c.shape.token_values();
  elem_ = dtype_size(c.kv_dtype);
  const size_t worst = align16(c.shape.max_blob_bytes());
  if (worst > pool_->page_bytes())
    fail(PACKKV_ERR_INVALID_ARGUMENT, "the pool's pages (" + std::to_string(pool_->page_bytes()) +
                                          " bytes) are smaller than the largest block of this cache (" +
                                          std::to_string(worst) + " bytes: packkv_x_pool_page_bytes_for)");
  // before the first block, tokens_fit takes the largest block
  pool_->attach(this, worst, c.shape.block_tokens);
}

CpuCache::~CpuCache() {
  drop_all_ahead();  // no job may read the windows once they are freed
  for (CpuSeq& s : seqs_) s.table.clear(pool_.get());
  pool_->detach(this);
}

int64_t CpuCache::seq_length(int seq) const {
  const CpuSeq& s = seqs_[seq];
  return s.sink_len + s.n_blocks() * config().shape.block_tokens + s.res.len();
}

void CpuCache::remove_seq(int seq) {
  drop_ahead(seq);
  seqs_[seq].table.clear(pool_.get());
  seqs_[seq] = CpuSeq();
}

void CpuCache::reset() {
  drop_all_ahead();
  for (int i = 0; i < (int)seqs_.size(); ++i) remove_seq(i);
}

// A block shared by forked sequences counts in the stats of each sequence that holds it,
// and once in the whole-cache stats (seq == -1); pages likewise for the reserved bytes.
void CpuCache::stats(int seq, packkv_cache_stats_t* out) const {
  std::memset(out, 0, sizeof *out);
  out->struct_size = sizeof *out;
  const Config& c = config();
  std::set<std::pair<const Page*, uint32_t>> blocks_seen;
  std::set<const Page*> pages_seen;
  for (int i = 0; i < c.max_seqs; ++i) {
    if (seq >= 0 && i != seq) continue;
    const CpuSeq& s = seqs_[i];
    const PageTable& t = s.table;
    // sink tokens are uncompressed tokens in kv_dtype: counted with the residual window
    out->n_residual_tokens += s.sink_len + s.res.len();
    out->residual_bytes += (int64_t)(s.sink_k.size() + s.sink_v.size() + s.res.used_bytes());
    out->k_scale_bytes += (int64_t)(s.k_mean.size() * sizeof(float));  // K centering mean: K metadata
    out->compressed_bytes_reserved += (int64_t)t.table_capacity_bytes();
    // Without forks no page or block is shared: a sequence's pages are its open page
    // and the pages where its block table changes page (sets only after a fork).
    int64_t own_pages = t.open_page() ? 1 : 0;
    if (shared_ && t.open_page()) pages_seen.insert(t.open_page());
    for (int64_t b = t.first_live(); b < t.n_blocks(); ++b) {
      const BlockRef& r = t.block(b);
      if (shared_) {
        pages_seen.insert(r.page);
        if (!blocks_seen.insert({r.page, r.offset}).second) continue;
      } else if (r.page != t.open_page() && (b == t.first_live() || t.block(b - 1).page != r.page)) {
        ++own_pages;
      }
      out->n_blocks += 1;
      out->n_compressed_tokens += c.shape.block_tokens;
      stats_add_blob(out, c.shape.sizes(t.blob(b)));
      // the alignment padding before the blob in its page and the table entry are index bytes
      const bool follows = b > t.first_live() && t.block(b - 1).page == r.page;
      const size_t prev_end = follows ? t.block(b - 1).offset + (size_t)t.block(b - 1).bytes : r.offset;
      out->index_bytes += (int64_t)(r.offset - std::min(prev_end, (size_t)r.offset)) + (int64_t)sizeof(BlockRef);
    }
    if (!shared_) out->compressed_bytes_reserved += own_pages * (int64_t)pool_->page_bytes();
  }
  if (shared_) out->compressed_bytes_reserved += (int64_t)(pages_seen.size() * pool_->page_bytes());
  stats_finish(out, (int64_t)row_);
}

// Tokens out of the sliding window (s.expired) are written as NaN: their blocks may be
// freed.
void CpuCache::decompress(int seq, float* k_out, float* v_out, packkv_stream_t) const {
  const Config& c = config();
  const CpuSeq& s = seqs_[seq];
  const size_t block_vals = (size_t)c.shape.block_tokens * row_;
  const size_t sink_vals = (size_t)s.sink_len * row_;
  if (k_out) to_float(s.sink_k.data(), c.kv_dtype, sink_vals, k_out);
  if (v_out) to_float(s.sink_v.data(), c.kv_dtype, sink_vals, v_out);
  for (int64_t b = 0; b < s.n_blocks(); ++b) {
    float* k = k_out ? k_out + sink_vals + b * block_vals : nullptr;
    float* v = v_out ? v_out + sink_vals + b * block_vals : nullptr;
    if (s.blob(b)) {
      decode_block(c.shape, s.blob(b), k, v);
      if (k && !s.k_mean.empty())  // K centering: k^ = (k - mu)^ + mu
        for (size_t i = 0; i < block_vals; ++i) k[i] += s.k_mean[i % row_];
    } else {
      if (k) std::fill(k, k + block_vals, NAN);
      if (v) std::fill(v, v + block_vals, NAN);
    }
  }
  const size_t done = sink_vals + (size_t)s.n_blocks() * block_vals;
  s.res.runs(0, s.res.len(), [&](int64_t t, int64_t m) {
    if (k_out) to_float(s.res.token(0, t), c.kv_dtype, (size_t)m * row_, k_out + done + (size_t)t * row_);
    if (v_out) to_float(s.res.token(1, t), c.kv_dtype, (size_t)m * row_, v_out + done + (size_t)t * row_);
  });
  const size_t gone = (size_t)s.expired * row_;
  if (k_out) std::fill(k_out, k_out + gone, NAN);
  if (v_out) std::fill(v_out, v_out + gone, NAN);
}

void CpuCache::set_parallel(packkv_x_parallel_fn fn, void* user, int n_tasks) {
  par_.caller_fn = fn;
  par_.caller_user = fn ? user : nullptr;
  par_.n_threads = fn ? n_tasks : (config().n_threads > 0 ? config().n_threads : default_threads());
  // encode ahead runs on the library's runner thread: not while the caller provides the threads
  drop_all_ahead();
  ahead_on_ = ahead_enabled(par_.n_threads, fn != nullptr);
}

int64_t CpuCache::n_blocks(int seq) const { return seqs_[seq].n_blocks(); }

std::vector<uint8_t> CpuCache::block_bytes(int seq, int64_t block) const {
  const uint8_t* b = seqs_[seq].blob(block);
  if (!b) return {};  // freed by the sliding window
  return std::vector<uint8_t>(b, b + config().shape.sizes(b).total());
}

std::unique_ptr<CacheImpl> make_cpu_cache(const Config& config, std::shared_ptr<PagePool> pool) {
  return std::unique_ptr<CacheImpl>(new CpuCache(config, std::move(pool)));
}

}  // namespace packkv
