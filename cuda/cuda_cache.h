// The CUDA backend of packkv_cache_t (DESIGN.md "Data flow"; PACKKV.md sections 2.3-6).
//
// Storage per sequence:
//   residual ring   [C = residual_tokens + block_tokens][H][D] in kv_dtype, K and V,
//                   followed by [sink_tokens][H][D] for the sink tokens (the first
//                   tokens of the sequence, never compressed); K and V in one
//                   cudaMalloc at the sequence's first append, kept for its id;
//   pages           compressed block blobs (format/shape.h layout) in fixed-size pages
//                   of the cache's device pool (pool/page_pool.h, cuda/device_pages.cu;
//                   shared by caches or private). A sequence has a page list (host:
//                   Seq::pages, one pool reference per entry; device: a row of
//                   CacheDevicePtrs::pages); its blobs are placed next-fit in block order
//                   by the flush (pool/placement.h place_next: only the device knows the
//                   blob sizes)
//                   and never move. The host keeps an upper bound of the device's
//                   placement state (the exact state read back asynchronously, plus the
//                   worst case of the flushes enqueued since) and appends pages to the
//                   list before a flush whose worst case needs them: no host
//                   synchronization on append. Pages the bound no longer needs (the blobs
//                   were smaller than the worst case) go back to the pool when the
//                   read-back arrives (or at a synchronizing call: stats, fork, truncate).
//                   So reserved = used + the partly filled last page + per closed page
//                   the tail where the next blob did not fit (< that blob, as on the CPU)
//                   + the 64-byte over-read slack (kPageSlack) + until the read-back,
//                   pages taken for the worst case. Forked sequences share pages (one
//                   reference per list entry); only the sequence that opened a page
//                   writes into it (a fork's first blob opens a new page), and never over
//                   a blob another sequence holds (truncate rewinds a page only when no
//                   other sequence shares it);
//   block table     one 8-byte blob address per block (max_tokens_per_seq/block_tokens
//                   entries per sequence, allocated at create), and the page list rows
//                   (as many entries + 1, 8 bytes each);
//   K means         K centring only: [max_seqs][H][D] fp32, a sequence's mean of K over
//                   its block 0 (written by the flush of that block; kernels.h k_mean).
// Every call sets and restores the device; every enqueuing call takes a stream.
// append and the attention calls allocate nothing and never synchronize the host,
// except that append allocates a sequence's rings at its first tokens (cudaMalloc, which
// synchronizes the device: once per sequence id, kept for the id's later sequences) and
// the flush scratch (kept: 4 blocks, cudaMalloc at the first flush; a prefill of more
// blocks: cudaMallocAsync, freed in stream order at the end of its append), takes pool
// pages (a new slab from cudaMalloc, which synchronizes the device, when the pool has no
// free page; never with a reserving pool); and an append whose worst case passes the
// pool's budget first waits for the cache's work to learn the exact placement (then fails
// with PACKKV_X_ERR_BUDGET_EXCEEDED if that still does not fit).
// Attention calls neither allocate nor synchronize, so they should be capturable in a CUDA
// graph; capture has not been tested. Known limitations: greedy repacking is CPU-only
// (create fails with NOT_SUPPORTED); remove_seq and reset synchronize with the cache's
// work before they give pages back. Errors found inside kernels (non-finite K/V) are
// reported by sync(), naming sequence and token. Thread-safety: as CacheImpl (no internal
// lock: calls on one cache must not overlap); the pool locks itself.
#ifndef PACKKV_CUDA_CACHE_H
#define PACKKV_CUDA_CACHE_H

#include <cuda_runtime.h>

#include <memory>
#include <vector>

#include "api/cache_impl.h"
#include "pool/page_pool.h"
#include "attention/attention.h"
#include "kernels.h"

namespace packkv {

class CudaCache final : public CacheImpl {
 public:
  // Allocates the block table, statistics and events on config.device. pool: a device
  // pool on config.device (null: a private one, page_bytes_for(shape), no budget).
  // Throws Error: NOT_SUPPORTED (greedy repacking, no device, shapes beyond shared
  // memory), INVALID_ARGUMENT (bad device ordinal, pages smaller than the largest blob +
  // kPageSlack), OUT_OF_DEVICE_MEMORY, CUDA.
  CudaCache(const Config& config, std::shared_ptr<PagePool> pool);
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

  // Sequence operations (cuda_cache_seq_ops.cu). Each synchronizes with the cache's work
  // (truncate within the residual window does not); they take no stream.
  void truncate(int seq, int64_t n_tokens) override;
  void fork(int src, int dst) override;
  size_t export_size(int seq) const override;
  void export_seq(int seq, uint8_t* out, size_t size) const override;
  void import_seq(int seq, const uint8_t* in, size_t size) override;

  // Compressed blocks of a sequence (host state, no synchronization).
  int64_t n_blocks(int seq) const override { return seqs_[seq].n_blocks; }
  // Host copy of blob `block` of sequence `seq` (exact size, no alignment tail).
  // Synchronizes with the cache's work.
  std::vector<uint8_t> block_bytes(int seq, int64_t block) const override;

 private:
  struct Seq {
    int64_t n_blocks = 0;
    int sink_len = 0;  // sink tokens held (the first tokens; blocks and window follow)
    int residual_len = 0;
    int ring_start = 0;
    void* ring_k = nullptr;
    void* ring_v = nullptr;
    std::vector<Page*> pages;          // page list (one pool reference each); device row: dp_.pages
    cu::PlaceState bound{-1, 0};       // upper bound of the device's placement state
    bool snap_valid = false;           // the in-flight snapshot describes this sequence
    int64_t snap_blocks = 0;           // n_blocks when the in-flight snapshot was enqueued
  };
  // ---- append, in its steps (cuda_cache_append.cu) ----
  static constexpr size_t kPageSlack = 64;  // bytes at the end of each page no blob takes (over-reads)
  static constexpr int kMaxBlocksPerFlushLaunch = 512;     // bounds a prefill's scratch
  static constexpr int kKeptScratchBlocks = 4;             // scratch kept between appends (blocks, ~90 KB each for 8 x 128)
  struct AppendPlan {
    std::vector<int> flush_blocks;  // [n_seqs] blocks each sequence flushes
    std::vector<int64_t> in_row;    // [n_seqs] row of k_new/v_new of its first new token
    std::vector<int> to_sink;       // [n_seqs] its first new tokens that become sink tokens
    int total_blocks = 0;
  };
  // Checks capacity and computes the flushes; no state change. Throws CAPACITY_EXCEEDED.
  AppendPlan plan_append(int n_seqs, const int32_t* seq_ids, const int32_t* n_tokens) const;
  // Pool pages that the worst case of the flushes needs (all or nothing: throws
  // BUDGET_EXCEEDED / OUT_OF_DEVICE_MEMORY with the pool unchanged), then rings of new
  // sequences.
  void allocate_for_append(const AppendPlan& p, int n_seqs, const int32_t* seq_ids, const int32_t* n_tokens,
                           cudaStream_t stream);
  // Flush scratch for total_blocks blocks: the kept one (kKeptScratchBlocks blocks,
  // cudaMalloc'd at the first flush) or, for more blocks (a prefill), a transient one
  // (cudaMallocAsync, returned in *transient: the caller frees it in stream order after the
  // flush kernels, so that a prefill leaves no scratch behind). Null for no blocks.
  uint8_t* flush_scratch(int total_blocks, cudaStream_t stream, void** transient);
  void enqueue_flushes(const AppendPlan& p, int n_seqs, const int32_t* seq_ids, const void* k_new,
                       const void* v_new, packkv_dtype_t dtype, uint8_t* scratch, cudaStream_t stream) const;
  void enqueue_residual_writes(const AppendPlan& p, int n_seqs, const int32_t* seq_ids, const int32_t* n_tokens,
                               const void* k_new, const void* v_new, packkv_dtype_t dtype,
                               cudaStream_t stream) const;
  // Host state after the append (blocks, residual window, placement bounds).
  void commit_append(const AppendPlan& p, int n_seqs, const int32_t* seq_ids, const int32_t* n_tokens);
  // Enqueues an asynchronous read-back of the placement states, unless one is in flight.
  void snapshot_placement(cudaStream_t stream);
  // Takes in a finished read-back: tighter bounds, pages no bound needs back to the pool.
  void poll_snapshot();
  // Waits for the cache's work and sets every bound to the exact state (synchronizes).
  void sync_bounds();
  // Gives back the pages of s beyond its bound's page (no enqueued work uses them).
  void trim_pages(Seq& s);
  // The worst case of n more blobs placed from `from`.
  cu::PlaceState worst_after(cu::PlaceState from, int64_t n) const;
  size_t worst_blob_alloc() const;

  // One attention call of `variant` (out, ld, probs, scale, lse as in cu::AttnCall).
  void run_attention(const AttnArgs& a, cu::AttnVariant variant, float* out, int64_t ld, const float* probs,
                     float scale, float* lse) const;
  cu::AttnSeq attn_seq(int seq) const;
  // ---- helpers of the sequence operations (synchronous; cuda_cache_seq_ops.cu) ----
  size_t ring_bytes() const;  // one residual ring (K or V) with its sink rows
  void alloc_rings(Seq& s);   // s's K and V rings in one cudaMalloc (s.ring_k owns it); no table update
  void ensure_ring(int seq);  // allocates the sequence's rings if it has none, and its ring-table row (synchronous)
  std::vector<unsigned long long> block_addrs(int seq) const;  // its block-table row
  fmt::BlobSizes blob_sizes_at(unsigned long long addr) const;  // a blob's byte split (reads its header)
  void write_place(int seq, const cu::PlaceState& st);
  void free_seq_storage(Seq& s);
  void record_done(cudaStream_t stream) const;

  std::shared_ptr<PagePool> pool_;
  cu::KernelConfig kc_{};
  cu::CacheDevicePtrs dp_{};
  void* d_meta_ = nullptr;                 // one allocation for the device arrays of dp_
  cu::PlaceState* h_snap_ = nullptr;       // pinned [max_seqs] placement states, then the committed bytes
  int64_t noted_bytes_ = 0;                // committed bytes reported to the pool (tokens_fit)
  int64_t noted_blocks_ = 0;
  int64_t flushed_blocks_ = 0;             // blocks flushed over the cache's life
  int64_t snap_flushed_ = 0;               // flushed_blocks_ when the snapshot was enqueued
  bool snap_inflight_ = false;
  cudaEvent_t snap_ev_ = nullptr;
  cudaEvent_t done_ev_ = nullptr;
  uint8_t* scratch_ = nullptr;  // kKeptScratchBlocks blocks of flush scratch, or null before the first flush
  size_t kv_elem_ = 2;
  bool shared_ = false;  // some fork happened: blocks may be shared (stats count them once)
  std::vector<Seq> seqs_;
};

}  // namespace packkv

#endif  // PACKKV_CUDA_CACHE_H
