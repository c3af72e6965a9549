// CpuCache::truncate, fork and the sliding window: the sequence operations of engines
// (speculative-decoding rollback, parallel sampling, beam search, prefix reuse, sliding
// layers). Truncate and fork prepare everything that can fail first, then commit without
// a possible failure.
#include <algorithm>
#include <utility>
#include <vector>

#include "codec/block_codec.h"
#include "common/dtype.h"
#include "cpu/cpu_cache.h"

namespace packkv {

// Tokens [n_tokens, length) go (n_tokens >= expired: api checks). The sequence is, in
// order, sink tokens, blocks, residual window:
//  - n_tokens at or after the blocks' end: the residual window shrinks;
//  - n_tokens inside the sink tokens: the sink tokens shrink to n_tokens, every block and
//    the residual window go;
//  - otherwise the block holding token n_tokens - 1 and later ones is decoded (plus the K
//    mean with K centring), its first tokens up to n_tokens (dequantized, rounded to
//    kv_dtype, clamped to its finite range) become the residual window, and it and the
//    later blocks are released.
// K centring: the K mean belongs to block 0; when block 0 goes, so does the mean (the
// next block 0 computes it again, as in a fresh sequence fed the same tokens).
void CpuCache::truncate(int seq, int64_t n_tokens) {
  const Config& c = config();
  drop_ahead(seq);  // its jobs read tokens that may go (cpu_cache.h: encode ahead)
  CpuSeq& s = seqs_[seq];
  const int64_t n_block = c.shape.block_tokens;
  const int64_t blocks_end = s.sink_len + s.n_blocks() * n_block;
  const size_t token_bytes = row_ * elem_;
  if (n_tokens >= blocks_end) {
    s.res.shrink(n_tokens - blocks_end);
    return;
  }
  if (n_tokens < s.sink_len) {
    s.table.drop_from(0, pool_.get());
    s.res.shrink(0);
    s.sink_len = n_tokens;
    s.sink_k.resize((size_t)n_tokens * token_bytes);  // shrinking: no throw
    s.sink_v.resize((size_t)n_tokens * token_bytes);
    s.k_mean.clear();
    return;
  }
  const int64_t keep_blocks = (n_tokens - s.sink_len) / n_block;
  const int64_t cut = (n_tokens - s.sink_len) % n_block;
  std::vector<uint8_t> rk, rv;
  CpuSeq fresh;  // the new residual window (its buffers may be allocated: may throw)
  if (cut > 0) {  // may throw: nothing changed yet
    const size_t vals = (size_t)n_block * row_;
    std::vector<float> fk(vals), fv(vals);
    decode_block(c.shape, s.blob(keep_blocks), fk.data(), fv.data());
    const size_t keep_vals = (size_t)cut * row_;
    rk.resize(keep_vals * elem_);
    rv.resize(keep_vals * elem_);
    if (!s.k_mean.empty())
      for (size_t i = 0; i < keep_vals; ++i) fk[i] += s.k_mean[i % row_];  // as decompress: (k - mu)^ + mu
    from_float_clamped(fk.data(), keep_vals, c.kv_dtype, rk.data());
    from_float_clamped(fv.data(), keep_vals, c.kv_dtype, rv.data());
    reserve_res(fresh, cut);
    fresh.res.push(rk.data(), rv.data(), cut);
  }
  s.table.drop_from(keep_blocks, pool_.get());
  s.res = std::move(fresh.res);
  if (keep_blocks == 0) s.k_mean.clear();
}

// dst (empty) gets src's sink tokens, K mean and residual window as copies and its blocks
// as shared references.
void CpuCache::fork(int src, int dst) {
  drop_ahead(dst);  // empty: none expected; settled for certain
  const CpuSeq& from = seqs_[src];
  CpuSeq& to = seqs_[dst];
  // may throw: nothing changed yet
  ResidualRing res(from.res);
  std::vector<uint8_t> sk(from.sink_k), sv(from.sink_v);
  std::vector<float> mean(from.k_mean);
  to.table.reserve((size_t)(from.n_blocks() - from.table.first_live()));
  to.table.share_from(from.table);
  to.res = std::move(res);
  to.sink_k.swap(sk);
  to.sink_v.swap(sv);
  to.sink_len = from.sink_len;
  to.k_mean.swap(mean);
  to.expired = from.expired;
  shared_ = true;
}

// Pending encodes read only residual windows, which the sliding window does not change; they
// are settled anyway, as for every call that changes sequences (cpu_cache.h: encode ahead).
void CpuCache::set_window(int64_t window_tokens) {
  drop_all_ahead();
  window_ = window_tokens;
}

// Sink tokens expire like any other token (the model's sliding window excludes them too):
// they stay stored (sink_tokens tokens per sequence) but are no longer attended.
void CpuCache::expire(CpuSeq& s) noexcept {
  if (window_ <= 0) return;
  const int64_t len = s.sink_len + s.n_blocks() * config().shape.block_tokens + s.res.len();
  s.expired = std::max(s.expired, len - window_);
  if (s.expired > s.sink_len) s.table.drop_front((s.expired - s.sink_len) / config().shape.block_tokens, pool_.get());
}

}  // namespace packkv
