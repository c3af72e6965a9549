// The CUDA backend of packkv_cache_t (DESIGN.md "Data flow"; PACKKV.md sections 2.3-6).
//
// Storage per sequence:
//   residual ring   [C = residual_tokens + block_tokens][H][D] in kv_dtype, K and V,
//                   followed by [sink_tokens][H][D] for the sink tokens (the first
//                   tokens of the sequence, never compressed), allocated
//                   (stream-ordered) at the sequence's first append;
//   pool chunks     compressed block blobs (format/shape.h layout), bump-allocated on
//                   the device; chunks grow geometrically, so device memory follows
//                   the compressed size. The host keeps an upper bound of each
//                   chunk's use (exact use, read back asynchronously, plus the worst
//                   case of flushes enqueued since) and opens a new chunk only when a
//                   flush might not fit: no host synchronization on append;
//   block table     one 8-byte blob address per block (max_tokens_per_seq/block_tokens
//                   entries per sequence, allocated at create);
//   K means         K centring only: [max_seqs][H][D] fp32, a sequence's mean of K over
//                   its block 0 (written by the flush of that block; kernels.h k_mean).
// Every call sets and restores the device; every enqueuing call takes a stream.
// append and the attention calls allocate nothing and never synchronize the host,
// except that append allocates (stream-ordered, cudaMallocAsync) a sequence's ring at its
// first tokens, a new pool chunk when the current one might overflow (geometric growth,
// so rarely), and a larger flush scratch for a larger prefill than seen before.
// Attention calls neither allocate nor synchronize, so they should be capturable in a CUDA
// graph; capture has not been tested. Known limitations: greedy repacking is CPU-only
// (create fails with NOT_SUPPORTED); remove_seq and reset synchronize with the cache's
// work and free chunks with cudaFree. Errors found inside kernels (non-finite K/V) are
// reported by sync(), naming sequence and token. Thread-safety: as CacheImpl (no internal
// lock: calls on one cache must not overlap).
#ifndef PACKKV_CUDA_CACHE_H
#define PACKKV_CUDA_CACHE_H

#include <cuda_runtime.h>

#include <vector>

#include "api/cache_impl.h"
#include "attention/attention.h"
#include "kernels.h"

namespace packkv {

class CudaCache final : public CacheImpl {
 public:
  // Allocates the block table, statistics and events on config.device. Throws Error:
  // NOT_SUPPORTED (greedy repacking, no device, shapes beyond shared memory),
  // INVALID_ARGUMENT (bad device ordinal), OUT_OF_DEVICE_MEMORY, CUDA.
  explicit CudaCache(const Config& config);
  ~CudaCache() override;

  int64_t seq_length(int seq) const override;
  void append(int n_seqs, const int32_t* seq_ids, const int32_t* n_tokens, const void* k_new,
              const void* v_new, packkv_dtype_t dtype, packkv_stream_t stream) override;
  void remove_seq(int seq) override;
  void reset() override;
  void stats(int seq, packkv_cache_stats_t* out) const override;
  void decompress(int seq, float* k_out, float* v_out, packkv_stream_t stream) const override;
  void sync() const override;
  size_t workspace_size(int n_seqs, int n_q_heads) const override;
  void scores(const AttnArgs& a, float* scores, int64_t ld_scores) const override;
  void apply(const AttnArgs& a, const float* probs, int64_t ld_probs, float* out) const override;
  void decode(const AttnArgs& a, float scale, float* out, float* lse) const override;

  // Compressed blocks of a sequence (host state, no synchronization).
  int64_t n_blocks(int seq) const override { return seqs_[seq].n_blocks; }
  // Host copy of blob `block` of sequence `seq` (exact size, no alignment tail).
  // Synchronizes with the cache's work.
  std::vector<uint8_t> block_bytes(int seq, int64_t block) const override;

 private:
  struct Chunk {
    uint8_t* ptr;
    size_t bytes;
  };
  struct Seq {
    int64_t n_blocks = 0;
    int sink_len = 0;  // sink tokens held (the first tokens; blocks and window follow)
    int residual_len = 0;
    int ring_start = 0;
    void* ring_k = nullptr;
    void* ring_v = nullptr;
    std::vector<Chunk> chunks;  // the last one receives new blobs
    size_t cap = 0;             // usable bytes of the current chunk
    size_t bound = 0;           // upper bound of the bytes used in the current chunk
    size_t pending_total = 0;   // worst-case bytes enqueued into the current chunk
    size_t snap_pending = 0;    // pending_total when the in-flight snapshot was enqueued
    int snap_chunk = -1;        // chunk index the snapshot refers to
  };

  // ---- append, in its steps (cuda_cache_append.cu) ----
  static constexpr size_t kChunkMin = 256 * 1024;         // first pool chunk of a sequence
  static constexpr size_t kChunkMax = 64ull * 1024 * 1024;  // chunk growth stops doubling here
  static constexpr size_t kChunkSlack = 64;                // over-read slack at the end of each chunk
  static constexpr int kMaxBlocksPerFlushLaunch = 512;     // bounds the scratch size
  struct AppendPlan {
    std::vector<int> flush_blocks;  // [n_seqs] blocks each sequence flushes
    std::vector<int64_t> in_row;    // [n_seqs] row of k_new/v_new of its first new token
    std::vector<int> to_sink;       // [n_seqs] its first new tokens that become sink tokens
    int total_blocks = 0;
  };
  // Checks capacity and computes the flushes; no state change. Throws CAPACITY_EXCEEDED.
  AppendPlan plan_append(int n_seqs, const int32_t* seq_ids, const int32_t* n_tokens) const;
  // Rings of new sequences, pool chunks that might overflow, a larger flush scratch.
  void allocate_for_append(const AppendPlan& p, int n_seqs, const int32_t* seq_ids, const int32_t* n_tokens,
                           cudaStream_t stream);
  void enqueue_flushes(const AppendPlan& p, int n_seqs, const int32_t* seq_ids, const void* k_new,
                       const void* v_new, packkv_dtype_t dtype, cudaStream_t stream) const;
  void enqueue_residual_writes(const AppendPlan& p, int n_seqs, const int32_t* seq_ids, const int32_t* n_tokens,
                               const void* k_new, const void* v_new, packkv_dtype_t dtype,
                               cudaStream_t stream) const;
  // Host state after the append (blocks, residual window, pool bounds).
  void commit_append(const AppendPlan& p, int n_seqs, const int32_t* seq_ids, const int32_t* n_tokens);
  // Enqueues an asynchronous read-back of the pool use, unless one is in flight.
  void snapshot_pool_use(cudaStream_t stream);
  void poll_snapshot();
  size_t worst_blob_alloc() const;

  // One attention call of `variant` (out, ld, probs, scale, lse as in cu::AttnCall).
  void run_attention(const AttnArgs& a, cu::AttnVariant variant, float* out, int64_t ld, const float* probs,
                     float scale, float* lse) const;
  cu::AttnSeq attn_seq(int seq) const;
  void free_seq_storage(Seq& s);
  void record_done(cudaStream_t stream) const;

  cu::KernelConfig kc_{};
  cu::CacheDevicePtrs dp_{};
  unsigned long long* d_used_ = nullptr;   // [max_seqs] bytes used per current chunk
  void* d_meta_ = nullptr;                 // one allocation for the arrays above
  unsigned long long* h_snap_ = nullptr;   // pinned [max_seqs]
  bool snap_inflight_ = false;
  cudaEvent_t snap_ev_ = nullptr;
  cudaEvent_t done_ev_ = nullptr;
  uint8_t* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
  size_t kv_elem_ = 2;
  std::vector<Seq> seqs_;
};

}  // namespace packkv

#endif  // PACKKV_CUDA_CACHE_H
