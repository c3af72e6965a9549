// CudaCache::append and its steps (see cuda_cache.h): plan (checks, no state change),
// allocate (pool pages for the worst case, rings, flush scratch), enqueue the flush batches
// and the residual-window update, commit the host state, snapshot the placement. Host only.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "cuda_cache.h"
#include "cuda_check.h"
#include "common/error.h"
#include "common/rules.h"
#include "format/shape.h"

namespace packkv {

using cu::check;

size_t CudaCache::worst_blob_alloc() const { return align16(config().shape.max_blob_bytes()); }

cu::PlaceState CudaCache::worst_after(cu::PlaceState from, int64_t n) const {
  return packkv::worst_after(from, n, worst_blob_alloc(), dp_.page_cap);
}

void CudaCache::trim_pages(Seq& s) {
  const size_t keep = static_cast<size_t>(s.bound.page + 1);
  while (s.pages.size() > keep) {
    pool_->release(s.pages.back());
    s.pages.pop_back();
  }
}

void CudaCache::poll_snapshot() {
  if (!snap_inflight_) return;
  cudaError_t e = cudaEventQuery(snap_ev_);
  if (e == cudaErrorNotReady) return;
  check(e, "cudaEventQuery");
  snap_inflight_ = false;
  for (size_t i = 0; i < seqs_.size(); ++i) {
    Seq& s = seqs_[i];
    if (!s.snap_valid) continue;
    s.snap_valid = false;
    const cu::PlaceState refined = worst_after(h_snap_[i], s.n_blocks - s.snap_blocks);
    if (place_le(refined, s.bound)) s.bound = refined;
    trim_pages(s);
  }
  unsigned long long committed = 0;
  std::memcpy(&committed, h_snap_ + seqs_.size(), 8);
  const int64_t c = static_cast<int64_t>(committed);
  pool_->note_compressed(this, c - noted_bytes_, (snap_flushed_ - noted_blocks_) * config().shape.block_tokens);
  noted_bytes_ = c;
  noted_blocks_ = snap_flushed_;
}

void CudaCache::sync_bounds() {
  check(cudaEventSynchronize(done_ev_), "cudaEventSynchronize");
  std::vector<cu::PlaceState> exact(seqs_.size());
  check(cudaMemcpy(exact.data(), dp_.place, exact.size() * sizeof(cu::PlaceState), cudaMemcpyDeviceToHost),
        "cudaMemcpy(placement states)");
  poll_snapshot();  // done: takes its counters in
  for (size_t i = 0; i < seqs_.size(); ++i) {
    seqs_[i].bound = exact[i];
    seqs_[i].snap_valid = false;
    trim_pages(seqs_[i]);
  }
}

CudaCache::AppendPlan CudaCache::plan_append(int n_seqs, const int32_t* seq_ids, const int32_t* n_tokens) const {
  const Config& c = config();
  AppendPlan p;
  p.flush_blocks.resize(n_seqs);
  p.in_row.resize(n_seqs);
  p.to_sink.resize(n_seqs);
  int64_t row = 0;
  for (int i = 0; i < n_seqs; ++i) {
    const Seq& s = seqs_[seq_ids[i]];
    // The first new tokens fill the sink tokens; the window and the flush policy see the rest.
    p.to_sink[i] = std::min(n_tokens[i], c.sink_tokens - s.sink_len);
    const int64_t window = static_cast<int64_t>(s.residual_len) + n_tokens[i] - p.to_sink[i];
    p.flush_blocks[i] = static_cast<int>(blocks_to_flush(window, c.residual_tokens, c.shape.block_tokens));
    if (s.n_blocks + p.flush_blocks[i] > kc_.max_blocks)
      fail(PACKKV_ERR_CAPACITY_EXCEEDED, "packkv_cache_append: sequence " + std::to_string(seq_ids[i]) +
                                             " would exceed max_tokens_per_seq");
    p.in_row[i] = row;
    row += n_tokens[i];
    p.total_blocks += p.flush_blocks[i];
  }
  return p;
}

void CudaCache::allocate_for_append(const AppendPlan& p, int n_seqs, const int32_t* seq_ids, const int32_t* n_tokens,
                                    cudaStream_t stream) {
  // 1. Pages for the worst case of each sequence's flushes, all or nothing.
  auto pages_needed = [&](std::vector<size_t>* need) {
    size_t total = 0;
    for (int i = 0; i < n_seqs; ++i) {
      const Seq& s = seqs_[seq_ids[i]];
      const cu::PlaceState w = worst_after(s.bound, p.flush_blocks[i]);
      (*need)[i] = w.page + 1 > static_cast<int>(s.pages.size()) ? w.page + 1 - s.pages.size() : 0;
      if (w.page >= dp_.max_pages)
        fail(PACKKV_ERR_CAPACITY_EXCEEDED, "packkv_cache_append: sequence " + std::to_string(seq_ids[i]) +
                                               " would need more pages than its page list holds");
      total += (*need)[i];
    }
    return total;
  };
  std::vector<size_t> need(n_seqs);
  size_t total = pages_needed(&need);
  std::vector<Page*> fresh;
  if (total > 0) {
    try {
      pool_->acquire(total, &fresh);
    } catch (const Error& e) {
      if (e.code() != PACKKV_X_ERR_BUDGET_EXCEEDED) throw;
      sync_bounds();  // the worst case did not fit: learn the exact placement, try again
      total = pages_needed(&need);
      last_bytes_needed() = 0;
      pool_->acquire(total, &fresh);
    }
  }
  try {
    for (int i = 0; i < n_seqs; ++i) seqs_[seq_ids[i]].pages.reserve(seqs_[seq_ids[i]].pages.size() + need[i]);
  } catch (...) {
    for (Page* pg : fresh) pool_->release(pg);
    throw;
  }
  // The new pages join the lists (no throw) and the device rows (stream-ordered). A
  // launch failure here is a CUDA error (sticky): the pages stay in the host lists, which
  // the cache frees like any other.
  cu::PageEntries pe;
  pe.n = 0;
  size_t next = 0;
  for (int i = 0; i < n_seqs; ++i) {
    Seq& s = seqs_[seq_ids[i]];
    for (size_t j = 0; j < need[i]; ++j) {
      Page* pg = fresh[next++];
      pe.seq[pe.n] = seq_ids[i];
      pe.index[pe.n] = static_cast<int>(s.pages.size());
      pe.addr[pe.n] = reinterpret_cast<unsigned long long>(pg->data);
      ++pe.n;
      s.pages.push_back(pg);
      if (pe.n == cu::kMaxPageEntries) {
        cu::launch_set_pages(dp_, pe, stream);
        pe.n = 0;
      }
    }
  }
  cu::launch_set_pages(dp_, pe, stream);
  // 2. Rings of new sequences (cudaMalloc, which synchronizes the device: once per
  // sequence id, the rings are kept for the id's later sequences).
  for (int i = 0; i < n_seqs; ++i) {
    Seq& s = seqs_[seq_ids[i]];
    if (n_tokens[i] > 0 && !s.ring_k) {
      alloc_rings(s);
      cu::launch_set_ring(dp_, seq_ids[i], s.ring_k, s.ring_v, stream);  // the device's ring table, in stream order
    }
  }
}

uint8_t* CudaCache::flush_scratch(int total_blocks, cudaStream_t stream, void** transient) {
  *transient = nullptr;
  if (total_blocks == 0) return nullptr;
  const size_t per_block = cu::flush_scratch_bytes_per_block(kc_);
  const int blocks = std::min(total_blocks, kMaxBlocksPerFlushLaunch);
  if (blocks > kKeptScratchBlocks) {  // a prefill: scratch for this append only
    check(cudaMallocAsync(transient, static_cast<size_t>(blocks) * per_block, stream),
          "cudaMallocAsync(flush scratch)");
    return static_cast<uint8_t*>(*transient);
  }
  if (!scratch_) {  // decode steps and chunks: kept (cudaMalloc: once per cache)
    void* ptr = nullptr;
    check(cudaMalloc(&ptr, static_cast<size_t>(kKeptScratchBlocks) * per_block), "cudaMalloc(flush scratch)");
    scratch_ = static_cast<uint8_t*>(ptr);
  }
  return scratch_;
}

void CudaCache::enqueue_flushes(const AppendPlan& p, int n_seqs, const int32_t* seq_ids, const void* k_new,
                                const void* v_new, packkv_dtype_t dtype, uint8_t* scratch,
                                cudaStream_t stream) const {
  if (p.total_blocks == 0) return;
  const int N = config().shape.block_tokens;
  cu::FlushBatch fb;
  std::memset(&fb, 0, sizeof(fb));
  auto launch = [&]() {
    if (fb.total_blocks > 0) cu::launch_flush(kc_, fb, dp_, k_new, v_new, dtype, scratch, stream);
    std::memset(&fb, 0, sizeof(fb));
  };
  for (int i = 0; i < n_seqs; ++i) {
    const Seq& s = seqs_[seq_ids[i]];
    int done = 0;
    while (done < p.flush_blocks[i]) {
      if (fb.n == cu::kMaxFlushSeqs || fb.total_blocks == kMaxBlocksPerFlushLaunch) launch();
      const int take = std::min(p.flush_blocks[i] - done, kMaxBlocksPerFlushLaunch - fb.total_blocks);
      cu::FlushSeq& d = fb.s[fb.n++];
      d.in_row = p.in_row[i] + p.to_sink[i];  // window tokens follow the new sink tokens
      d.pos_base = s.sink_len + p.to_sink[i] + s.n_blocks * N;
      d.win_base = static_cast<int64_t>(done) * N;
      d.seq = seq_ids[i];
      d.first_block = static_cast<int>(s.n_blocks) + done;
      d.n_flush = take;
      d.residual_len = s.residual_len;
      d.ring_start = s.ring_start;
      d.block_start = fb.total_blocks;
      fb.total_blocks += take;
      done += take;
    }
  }
  launch();
}

void CudaCache::enqueue_residual_writes(const AppendPlan& p, int n_seqs, const int32_t* seq_ids,
                                        const int32_t* n_tokens, const void* k_new, const void* v_new,
                                        packkv_dtype_t dtype, cudaStream_t stream) const {
  const int N = config().shape.block_tokens;
  cu::ResidualBatch rb;
  std::memset(&rb, 0, sizeof(rb));
  auto launch = [&]() {
    cu::launch_residual_write(kc_, rb, dp_, k_new, v_new, dtype, stream);
    std::memset(&rb, 0, sizeof(rb));
  };
  for (int i = 0; i < n_seqs; ++i) {
    const Seq& s = seqs_[seq_ids[i]];
    const int to_sink = p.to_sink[i], n_window = n_tokens[i] - to_sink;
    if (to_sink > 0) {  // the new sink tokens: rows ring_tokens + sink_len ..
      if (rb.n == cu::kMaxResidualSeqs) launch();
      cu::ResidualSeq& d = rb.s[rb.n++];
      d.in_row = p.in_row[i];
      d.pos_base = 0;
      d.n_new = to_sink;
      d.residual_len = s.sink_len;
      d.flushed = 0;
      d.ring_start = 0;
      d.seq = seq_ids[i];
      d.sink = 1;
      rb.max_new = std::max(rb.max_new, to_sink);
    }
    if (n_window == 0) continue;
    if (rb.n == cu::kMaxResidualSeqs) launch();
    cu::ResidualSeq& d = rb.s[rb.n++];
    d.in_row = p.in_row[i] + to_sink;
    d.pos_base = s.sink_len + to_sink + s.n_blocks * N;
    d.n_new = n_window;
    d.residual_len = s.residual_len;
    d.flushed = p.flush_blocks[i] * N;
    d.ring_start = s.ring_start;
    d.seq = seq_ids[i];
    d.sink = 0;
    rb.max_new = std::max(rb.max_new, n_window);
  }
  launch();
}

void CudaCache::commit_append(const AppendPlan& p, int n_seqs, const int32_t* seq_ids, const int32_t* n_tokens) {
  const int N = config().shape.block_tokens;
  for (int i = 0; i < n_seqs; ++i) {
    Seq& s = seqs_[seq_ids[i]];
    const int F = p.flush_blocks[i] * N;
    const int64_t total = static_cast<int64_t>(s.residual_len) + n_tokens[i] - p.to_sink[i];
    s.sink_len += p.to_sink[i];
    s.n_blocks += p.flush_blocks[i];
    s.residual_len = static_cast<int>(total - F);
    s.ring_start = (s.ring_start + F) % kc_.ring_tokens;
    s.bound = worst_after(s.bound, p.flush_blocks[i]);
  }
  flushed_blocks_ += p.total_blocks;
}

void CudaCache::snapshot_placement(cudaStream_t stream) {
  if (snap_inflight_) return;
  // the placement states and the committed-bytes counter follow each other in d_meta_
  check(cudaMemcpyAsync(h_snap_, dp_.place, seqs_.size() * sizeof(cu::PlaceState) + 8, cudaMemcpyDeviceToHost,
                        stream),
        "cudaMemcpyAsync(placement snapshot)");
  check(cudaEventRecord(snap_ev_, stream), "cudaEventRecord");
  snap_inflight_ = true;
  snap_flushed_ = flushed_blocks_;
  for (Seq& s : seqs_) {
    s.snap_valid = true;
    s.snap_blocks = s.n_blocks;
  }
}

void CudaCache::append(int n_seqs, const int32_t* seq_ids, const int32_t* n_tokens, const void* k_new,
                       const void* v_new, packkv_dtype_t dtype, packkv_stream_t stream_) {
  cu::DeviceGuard guard(config().device);
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_);
  poll_snapshot();
  // 1. Plan: which blocks each sequence flushes (throws before any state change).
  const AppendPlan p = plan_append(n_seqs, seq_ids, n_tokens);
  // 2. Allocate: pool pages (all or nothing: BUDGET_EXCEEDED changes nothing), rings
  // (kept if a later step fails; unused pages go back at the next read-back), scratch.
  allocate_for_append(p, n_seqs, seq_ids, n_tokens, stream);
  void* transient = nullptr;
  uint8_t* scratch = flush_scratch(p.total_blocks, stream, &transient);
  struct FreeAfter {  // a prefill's scratch, freed in stream order after its kernels
    void* ptr;
    cudaStream_t stream;
    ~FreeAfter() {
      if (ptr) cudaFreeAsync(ptr, stream);
    }
  } free_after{transient, stream};
  // 3. Enqueue the flush batches, then the residual-window update.
  enqueue_flushes(p, n_seqs, seq_ids, k_new, v_new, dtype, scratch, stream);
  enqueue_residual_writes(p, n_seqs, seq_ids, n_tokens, k_new, v_new, dtype, stream);
  // 4. Commit the host state.
  commit_append(p, n_seqs, seq_ids, n_tokens);
  // 5. Refresh the host's bound of the placement (read back asynchronously).
  if (p.total_blocks > 0) snapshot_placement(stream);
  record_done(stream);
}

}  // namespace packkv
