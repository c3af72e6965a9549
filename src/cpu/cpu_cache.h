// The CPU backend: per-sequence residual windows in kv_dtype, a growing store of
// compressed block blobs, the flush policy (common/rules.h), and attention over both.
// One class, its steps in separate files:
//     cpu_cache.cpp    storage: creation, lengths, removal, stats, decompress, blob access
//     append.cpp       append: plan (convert, check, encode the flushed blocks), commit
//     input_check.cpp  conversion of new tokens to kv_dtype and the finiteness check
//     attention.cpp    scores / apply / decode over the blocks and the residual window,
//                      in parallel work items (cpu/parallel.h)
//     softmax.cpp      the float64 softmax of decode (vectorised exp on AVX2 / AVX-512)
// Every method either completes or throws Error leaving the cache unchanged (the
// CacheImpl contract, api/cache_impl.h). No lock: the caller serializes mutating calls
// (packkv.h, "Thread safety"); read-only calls may overlap.
//
// Encode ahead (cpu/encode_ahead.h; on when the cache may use more than one thread:
// params.n_threads != 1 and more than one CPU available, and no caller's task runner set by
// packkv_x_cache_set_parallel): after an append, every block that is complete in a
// sequence's residual window but not yet flushed is queued for encoding on the process's
// runner thread (append.cpp: schedule_ahead). The runner reads only that block's tokens in
// the residual ring and writes only its job. The append that flushes the block claims the
// result (settle_ahead: waits if it is running, encodes inline if it never started or
// failed); every other call that changes a sequence -- truncate, fork (its destination),
// import, remove_seq, reset, set_window, set_parallel, the destructor, and an append that
// grows a ring -- first settles and drops that sequence's jobs (all of them for the
// cache-wide calls), so no job ever reads tokens that change. Read-only calls never touch
// the jobs, and read the ring as the runner does (both only read). Pages are taken only
// at the flush, as without it: which append fails a budget, and every byte of every block,
// are the same whether a job ran, ran partly or never started.
#ifndef PACKKV_CPU_CPU_CACHE_H
#define PACKKV_CPU_CPU_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include <memory>
#include <unordered_map>
#include <vector>

#include "api/cache_impl.h"
#include "cpu/block_attention.h"
#include "cpu/encode_ahead.h"
#include "cpu/page_table.h"
#include "cpu/parallel.h"
#include "cpu/residual_ring.h"
#include "pool/page_pool.h"

namespace packkv {

// One sequence of the CPU cache: its tokens are, in order, sink_len sink tokens, the
// n_blocks() compressed blocks, and res.len() residual tokens (sink tokens fill first:
// blocks and the residual window start once sink_len == sink_tokens). Its compressed
// blocks live in pages of the cache's pool (pool/page_pool.h) through its block table
// (cpu/page_table.h).
struct CpuSeq {
  std::vector<uint8_t> sink_k, sink_v;  // sink tokens, [sink_len][H][D] in kv_dtype
  int64_t sink_len = 0;                 // sink tokens held (<= Config::sink_tokens)
  PageTable table;                     // where each compressed block's blob is
  ResidualRing res;                    // residual window, K and V in kv_dtype (cpu/residual_ring.h)
  int64_t expired = 0;                 // leading tokens out of the sliding window (excluded
                                       // from attention; whole blocks of them are freed)
  std::vector<float> k_mean;           // K_TRANSFORM_CENTER: [H][D] mean of K over block 0
                                       // (empty until block 0 is compressed)

  int64_t n_blocks() const { return table.n_blocks(); }
  const uint8_t* blob(int64_t b) const { return table.blob(b); }
};

class CpuCache final : public CacheImpl {
 public:
  // pool: where the compressed blocks go (shared with other caches, or private).
  CpuCache(const Config& c, std::shared_ptr<PagePool> pool);
  ~CpuCache() override;

  // cpu_cache.cpp: storage
  int64_t n_blocks(int seq) const override;
  std::vector<uint8_t> block_bytes(int seq, int64_t block) const override;
  int64_t seq_length(int seq) const override;
  void stats(int seq, packkv_cache_stats_t* out) const override;
  void decompress(int seq, float* k_out, float* v_out, packkv_stream_t stream) const override;
  void remove_seq(int seq) override;
  void reset() override;
  void sync() const override {}
  // seq_ops.cpp
  void truncate(int seq, int64_t n_tokens) override;
  void fork(int src, int dst) override;
  void set_window(int64_t window_tokens) override;
  int64_t expired(int seq) const override { return seqs_[seq].expired; }
  // seq_io.cpp
  size_t export_size(int seq) const override;
  void export_seq(int seq, uint8_t* out, size_t size) const override;
  void import_seq(int seq, const uint8_t* in, size_t size) override;
  // append.cpp
  void append(int n_seqs, const int32_t* seq_ids, const int32_t* n_tokens, const void* k_new,
              const void* v_new, packkv_dtype_t dtype, packkv_stream_t stream) override;
  // attention.cpp
  void scores(const AttnArgs& a, float* scores, int64_t ld_scores) const override;
  void apply(const AttnArgs& a, const float* probs, int64_t ld_probs, float* out) const override;
  void decode(const AttnArgs& a, float scale, float* out, float* lse) const override;
  size_t workspace_size(int, int) const override { return 0; }  // scratch is allocated per call
  void set_parallel(packkv_x_parallel_fn fn, void* user, int n_tasks) override;
  int64_t sink_len(int seq) const { return seqs_[seq].sink_len; }

 private:
  // append.cpp. The window of an append: the residual tokens of s, then the new tokens
  // nk / nv in kv_dtype. Block b of it as float (fk, fv: N * row values; either may be
  // null); the K mean of its block 0 (K centering, a sequence without blocks); block b
  // encoded as one blob into *blob (k_mean: the sequence's K mean with K centering, else
  // unused). Const and independent of each other: the blocks of an append are encoded in
  // parallel.
  void window_block_floats(const CpuSeq& s, const uint8_t* nk, const uint8_t* nv, int64_t b, float* fk,
                           float* fv) const;
  std::vector<float> block0_k_mean(const CpuSeq& s, const uint8_t* nk) const;
  // Room in s's residual window for `tokens` tokens (may throw; s unchanged either way).
  void reserve_res(CpuSeq& s, int64_t tokens) const;
  void encode_window_block(const CpuSeq& s, const uint8_t* nk, const uint8_t* nv, int64_t b, const float* k_mean,
                           std::vector<uint8_t>* blob) const;
  // The two steps of both: the K mean of one block's K (fk: block_tokens * row values),
  // and the block's floats (fk centred in place with K centring) encoded into *blob.
  std::vector<float> k_mean_of(const float* fk) const;
  void encode_floats(float* fk, const float* fv, const float* k_mean, std::vector<uint8_t>* blob) const;
  // Encode ahead (see the top of this file): queue the complete, unflushed blocks of
  // seq's window that have no job yet (no throw: what cannot be queued is encoded at its
  // flush); settle and drop seq's jobs / every sequence's jobs (no throw).
  void schedule_ahead(int seq) noexcept;
  void drop_ahead(int seq) noexcept;
  void drop_all_ahead() noexcept;
  // input_check.cpp: n values of dtype as kv_dtype (src itself when dtype is kv_dtype,
  // else *conv), rejecting values that are not finite in kv_dtype (NaN, inf, or
  // overflow by the conversion) with an error naming sequence, token, head and channel.
  const uint8_t* convert_checked(const uint8_t* src, packkv_dtype_t dtype, size_t n, std::vector<uint8_t>* conv,
                                 int seq, const char* what) const;
  // attention.cpp (the spans and work items: there)
  std::vector<float> load_q(const AttnArgs& a) const;  // every query as float
  template <typename Out>  // float (scores) or double (decode)
  void span_scores(const CpuSeq& s, int64_t begin, int64_t end, int hk, const float* q, int g, Out* out, size_t ld,
                   AttnScratch* scratch) const;
  void span_apply(const CpuSeq& s, int64_t begin, int64_t end, int hk, const float* probs, size_t ld, int g,
                  double* acc, AttnScratch* scratch) const;
  // Scores / weighted V of KV head hk of n dense tokens in kv_dtype ([..][H][D], the sink
  // tokens or the residual window), rows first .. first+n-1, float64 products.
  template <typename Out>  // float or double, as span_scores
  void dense_scores(const uint8_t* k, int64_t first, int64_t n, int hk, const float* q, int g, Out* out,
                    size_t ld) const;
  void dense_apply(const uint8_t* v, int64_t first, int64_t n, int hk, const float* probs, size_t ld, int g,
                   double* acc) const;

  Parallel par_;  // where parallel work runs (cpu/parallel.h)
  std::shared_ptr<PagePool> pool_;
  bool shared_ = false;
  int64_t window_ = 0;  // sliding window in tokens; 0: none
  // seq_ops.cpp: marks the tokens of s before length - window_ expired and frees the
  // blocks wholly expired. No throw.
  void expire(CpuSeq& s) noexcept;  // set by the first fork: blocks may be shared between sequences
  std::vector<CpuSeq> seqs_;
  bool ahead_on_ = false;  // encode ahead (see the top of this file)
  // the jobs of a sequence's window blocks 0, 1, ..., in order (absent: none)
  std::unordered_map<int, std::vector<std::shared_ptr<AheadJob>>> ahead_;
  size_t row_ = 0;   // values per token (n_kv_heads * head_dim)
  size_t elem_ = 0;  // bytes per kv_dtype element
};

}  // namespace packkv

#endif  // PACKKV_CPU_CPU_CACHE_H
