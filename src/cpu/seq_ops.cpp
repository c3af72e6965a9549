// CpuCache::truncate and CpuCache::fork: the sequence operations of engines
// (speculative-decoding rollback, parallel sampling, beam search, prefix reuse). Both
// prepare everything that can fail first, then commit without a possible failure.
#include <algorithm>
#include <cfloat>
#include <vector>

#include "codec/block_codec.h"
#include "common/dtype.h"
#include "cpu/cpu_cache.h"

namespace packkv {

namespace {

// Largest finite value of a kv_dtype.
float dtype_max(packkv_dtype_t d) {
  return d == PACKKV_DTYPE_F16 ? 65504.0f : d == PACKKV_DTYPE_BF16 ? 3.38953139e38f : FLT_MAX;
}

}  // namespace

// Tokens [n_tokens, length) go (n_tokens >= expired: api checks). Residual tokens are dropped by shrinking the window.
// A block that holds token n_tokens - 1 and later ones is decoded, its first
// n_tokens % N tokens (dequantized, rounded to kv_dtype, clamped to its finite range) become
// the residual window, and it and the later blocks are released.
void CpuCache::truncate(int seq, int64_t n_tokens) {
  const Config& c = config();
  CpuSeq& s = seqs_[seq];
  const int64_t n_block = c.shape.block_tokens;
  const int64_t compressed = s.n_blocks() * n_block;
  const size_t token_bytes = row_ * elem_;
  if (n_tokens >= compressed) {
    s.residual_len = n_tokens - compressed;
    s.res_k.resize((size_t)s.residual_len * token_bytes);  // shrinking: no throw
    s.res_v.resize((size_t)s.residual_len * token_bytes);
    return;
  }
  const int64_t keep_blocks = n_tokens / n_block;
  const int64_t cut = n_tokens % n_block;
  std::vector<uint8_t> rk, rv;
  if (cut > 0) {  // may throw: nothing changed yet
    const size_t vals = (size_t)n_block * row_;
    std::vector<float> fk(vals), fv(vals);
    decode_block(c.shape, s.blob(keep_blocks), fk.data(), fv.data());
    const float lim = dtype_max(c.kv_dtype);
    const size_t keep_vals = (size_t)cut * row_;
    rk.resize(keep_vals * elem_);
    rv.resize(keep_vals * elem_);
    for (size_t i = 0; i < keep_vals; ++i) {
      fk[i] = std::min(lim, std::max(-lim, fk[i]));
      fv[i] = std::min(lim, std::max(-lim, fv[i]));
    }
    from_float(fk.data(), keep_vals, c.kv_dtype, rk.data());
    from_float(fv.data(), keep_vals, c.kv_dtype, rv.data());
  }
  s.table.drop_from(keep_blocks, pool_.get());
  s.res_k.swap(rk);
  s.res_v.swap(rv);
  s.residual_len = cut;
}

void CpuCache::fork(int src, int dst) {
  const CpuSeq& from = seqs_[src];
  CpuSeq& to = seqs_[dst];
  std::vector<uint8_t> rk(from.res_k), rv(from.res_v);  // may throw: nothing changed yet
  to.table.reserve((size_t)(from.n_blocks() - from.table.first_live()));
  to.table.share_from(from.table);
  to.res_k.swap(rk);
  to.res_v.swap(rv);
  to.residual_len = from.residual_len;
  to.expired = from.expired;
  shared_ = true;
}

void CpuCache::set_window(int64_t window_tokens) { window_ = window_tokens; }

void CpuCache::expire(CpuSeq& s) noexcept {
  if (window_ <= 0) return;
  const int64_t len = s.n_blocks() * config().shape.block_tokens + s.residual_len;
  s.expired = std::max(s.expired, len - window_);
  s.table.drop_front(s.expired / config().shape.block_tokens, pool_.get());
}

}  // namespace packkv
