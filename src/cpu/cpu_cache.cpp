// CpuCache storage: creation, sequence lengths, removal, statistics, decompression and
// blob access (the class and its other steps: cpu_cache.h).
#include "cpu/cpu_cache.h"

#include <cstring>

#include "codec/block_codec.h"
#include "common/dtype.h"
#include "common/rules.h"

namespace packkv {

CpuCache::CpuCache(const Config& c) : CacheImpl(c), seqs_(c.max_seqs) {
  row_ = (size_t)c.shape.token_values();
  elem_ = dtype_size(c.kv_dtype);
}

int64_t CpuCache::seq_length(int seq) const {
  const CpuSeq& s = seqs_[seq];
  return s.sink_len + s.n_blocks() * config().shape.block_tokens + s.residual_len;
}

void CpuCache::remove_seq(int seq) { seqs_[seq] = CpuSeq(); }

void CpuCache::reset() {
  for (CpuSeq& s : seqs_) s = CpuSeq();
}

void CpuCache::stats(int seq, packkv_cache_stats_t* out) const {
  std::memset(out, 0, sizeof *out);
  out->struct_size = sizeof *out;
  const Config& c = config();
  for (int i = 0; i < c.max_seqs; ++i) {
    if (seq >= 0 && i != seq) continue;
    const CpuSeq& s = seqs_[i];
    out->n_blocks += s.n_blocks();
    out->n_compressed_tokens += s.n_blocks() * c.shape.block_tokens;
    // sink tokens are uncompressed tokens in kv_dtype: counted with the residual window
    out->n_residual_tokens += s.sink_len + s.residual_len;
    size_t prev_end = 0;
    for (int64_t b = 0; b < s.n_blocks(); ++b) {
      const fmt::BlobSizes z = c.shape.sizes(s.blob(b));
      stats_add_blob(out, z);
      // the store's alignment padding before the blob and the offset entry are index bytes
      out->index_bytes += (int64_t)(s.block_offset[b] - prev_end) + (int64_t)sizeof(uint64_t);
      prev_end = s.block_offset[b] + (size_t)z.total();
    }
    out->compressed_bytes_reserved +=
        (int64_t)(s.store.capacity() + s.block_offset.capacity() * sizeof(uint64_t));
    out->k_scale_bytes += (int64_t)(s.k_mean.size() * sizeof(float));  // K centering mean: K metadata
    out->residual_bytes += (int64_t)(s.sink_k.size() + s.sink_v.size() + s.res_k.size() + s.res_v.size());
  }
  stats_finish(out, (int64_t)row_);
}

void CpuCache::decompress(int seq, float* k_out, float* v_out, packkv_stream_t) const {
  const Config& c = config();
  const CpuSeq& s = seqs_[seq];
  const size_t block_vals = (size_t)c.shape.block_tokens * row_;
  const size_t sink_vals = (size_t)s.sink_len * row_;
  if (k_out) to_float(s.sink_k.data(), c.kv_dtype, sink_vals, k_out);
  if (v_out) to_float(s.sink_v.data(), c.kv_dtype, sink_vals, v_out);
  for (int64_t b = 0; b < s.n_blocks(); ++b) {
    float* kb = k_out ? k_out + sink_vals + b * block_vals : nullptr;
    decode_block(c.shape, s.blob(b), kb, v_out ? v_out + sink_vals + b * block_vals : nullptr);
    if (kb && !s.k_mean.empty())  // K centering: k^ = (k - mu)^ + mu
      for (size_t i = 0; i < block_vals; ++i) kb[i] += s.k_mean[i % row_];
  }
  const size_t done = sink_vals + (size_t)s.n_blocks() * block_vals;
  if (k_out) to_float(s.res_k.data(), c.kv_dtype, (size_t)s.residual_len * row_, k_out + done);
  if (v_out) to_float(s.res_v.data(), c.kv_dtype, (size_t)s.residual_len * row_, v_out + done);
}

int64_t CpuCache::n_blocks(int seq) const { return seqs_[seq].n_blocks(); }

std::vector<uint8_t> CpuCache::block_bytes(int seq, int64_t block) const {
  const uint8_t* b = seqs_[seq].blob(block);
  return std::vector<uint8_t>(b, b + config().shape.sizes(b).total());
}

std::unique_ptr<CacheImpl> make_cpu_cache(const Config& config) {
  return std::unique_ptr<CacheImpl>(new CpuCache(config));
}

}  // namespace packkv
