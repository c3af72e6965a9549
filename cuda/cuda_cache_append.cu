// CudaCache::append and its steps (see cuda_cache.h): plan (checks, no state change),
// allocate (rings, pool chunks, flush scratch), enqueue the flush batches and the
// residual-window update, commit the host state, snapshot the pool use. Host only.
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

void CudaCache::poll_snapshot() {
  if (!snap_inflight_) return;
  cudaError_t e = cudaEventQuery(snap_ev_);
  if (e == cudaErrorNotReady) return;
  check(e, "cudaEventQuery");
  snap_inflight_ = false;
  for (size_t i = 0; i < seqs_.size(); ++i) {
    Seq& s = seqs_[i];
    if (s.chunks.empty() || s.snap_chunk != static_cast<int>(s.chunks.size()) - 1) continue;
    const size_t exact = static_cast<size_t>(h_snap_[i]) + (s.pending_total - s.snap_pending);
    s.bound = std::min(s.bound, exact);
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
  const Config& c = config();
  const size_t worst = worst_blob_alloc();
  const size_t ring_bytes = static_cast<size_t>(kc_.ring_tokens + kc_.sink_tokens) * c.shape.token_values() * kv_elem_;
  for (int i = 0; i < n_seqs; ++i) {
    Seq& s = seqs_[seq_ids[i]];
    if (n_tokens[i] > 0 && !s.ring_k) {
      void* rk = nullptr;
      void* rv = nullptr;
      check(cudaMallocAsync(&rk, ring_bytes, stream), "cudaMallocAsync(residual ring)");
      cudaError_t e = cudaMallocAsync(&rv, ring_bytes, stream);
      if (e != cudaSuccess) { cudaFreeAsync(rk, stream); check(e, "cudaMallocAsync(residual ring)"); }
      s.ring_k = rk;
      s.ring_v = rv;
      cu::launch_set_ring(dp_, seq_ids[i], rk, rv, stream);
    }
    const size_t need = static_cast<size_t>(p.flush_blocks[i]) * worst;
    if (need > 0 && (s.chunks.empty() || s.bound + need > s.cap)) {
      size_t bytes = s.chunks.empty() ? kChunkMin : std::min(kChunkMax, 2 * s.chunks.back().bytes);
      bytes = std::max(bytes, need + kChunkSlack);
      void* ptr = nullptr;
      check(cudaMallocAsync(&ptr, bytes, stream), "cudaMallocAsync(pool chunk)");
      check(cudaMemsetAsync(d_used_ + seq_ids[i], 0, sizeof(unsigned long long), stream), "cudaMemsetAsync");
      s.chunks.push_back(Chunk{static_cast<uint8_t*>(ptr), bytes});
      s.cap = bytes - kChunkSlack;
      s.bound = 0;
      s.pending_total = 0;
      s.snap_chunk = -1;
    }
  }
  const size_t per_block = cu::flush_scratch_bytes_per_block(kc_);
  const size_t need_scratch = static_cast<size_t>(std::min(p.total_blocks, kMaxBlocksPerFlushLaunch)) * per_block;
  if (need_scratch > scratch_bytes_) {
    if (scratch_) check(cudaFreeAsync(scratch_, stream), "cudaFreeAsync(scratch)");
    scratch_ = nullptr;
    scratch_bytes_ = 0;
    void* ptr = nullptr;
    check(cudaMallocAsync(&ptr, need_scratch, stream), "cudaMallocAsync(flush scratch)");
    scratch_ = static_cast<uint8_t*>(ptr);
    scratch_bytes_ = need_scratch;
  }
}

void CudaCache::enqueue_flushes(const AppendPlan& p, int n_seqs, const int32_t* seq_ids, const void* k_new,
                                const void* v_new, packkv_dtype_t dtype, cudaStream_t stream) const {
  if (p.total_blocks == 0) return;
  const int N = config().shape.block_tokens;
  cu::FlushBatch fb;
  std::memset(&fb, 0, sizeof(fb));
  auto launch = [&]() {
    if (fb.total_blocks > 0) cu::launch_flush(kc_, fb, dp_, k_new, v_new, dtype, scratch_, stream);
    std::memset(&fb, 0, sizeof(fb));
  };
  for (int i = 0; i < n_seqs; ++i) {
    const Seq& s = seqs_[seq_ids[i]];
    int done = 0;
    while (done < p.flush_blocks[i]) {
      if (fb.n == cu::kMaxFlushSeqs || fb.total_blocks == kMaxBlocksPerFlushLaunch) launch();
      const int take = std::min(p.flush_blocks[i] - done, kMaxBlocksPerFlushLaunch - fb.total_blocks);
      cu::FlushSeq& d = fb.s[fb.n++];
      d.chunk = s.chunks.back().ptr;
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
  const size_t worst = worst_blob_alloc();
  for (int i = 0; i < n_seqs; ++i) {
    Seq& s = seqs_[seq_ids[i]];
    const int F = p.flush_blocks[i] * N;
    const int64_t total = static_cast<int64_t>(s.residual_len) + n_tokens[i] - p.to_sink[i];
    s.sink_len += p.to_sink[i];
    s.n_blocks += p.flush_blocks[i];
    s.residual_len = static_cast<int>(total - F);
    s.ring_start = (s.ring_start + F) % kc_.ring_tokens;
    s.bound += static_cast<size_t>(p.flush_blocks[i]) * worst;
    s.pending_total += static_cast<size_t>(p.flush_blocks[i]) * worst;
  }
}

void CudaCache::snapshot_pool_use(cudaStream_t stream) {
  if (snap_inflight_) return;
  check(cudaMemcpyAsync(h_snap_, d_used_, seqs_.size() * sizeof(unsigned long long), cudaMemcpyDeviceToHost,
                        stream),
        "cudaMemcpyAsync(pool snapshot)");
  check(cudaEventRecord(snap_ev_, stream), "cudaEventRecord");
  snap_inflight_ = true;
  for (Seq& s : seqs_) {
    s.snap_pending = s.pending_total;
    s.snap_chunk = static_cast<int>(s.chunks.size()) - 1;
  }
}

void CudaCache::append(int n_seqs, const int32_t* seq_ids, const int32_t* n_tokens, const void* k_new,
                       const void* v_new, packkv_dtype_t dtype, packkv_stream_t stream_) {
  cu::DeviceGuard guard(config().device);
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_);
  poll_snapshot();
  // 1. Plan: which blocks each sequence flushes (throws before any state change).
  const AppendPlan p = plan_append(n_seqs, seq_ids, n_tokens);
  // 2. Allocate (stream-ordered; kept if a later step fails, so the state stays consistent).
  allocate_for_append(p, n_seqs, seq_ids, n_tokens, stream);
  // 3. Enqueue the flush batches, then the residual-window update.
  enqueue_flushes(p, n_seqs, seq_ids, k_new, v_new, dtype, stream);
  enqueue_residual_writes(p, n_seqs, seq_ids, n_tokens, k_new, v_new, dtype, stream);
  // 4. Commit the host state.
  commit_append(p, n_seqs, seq_ids, n_tokens);
  // 5. Refresh the host's bound of the pool use (read back asynchronously).
  if (p.total_blocks > 0) snapshot_pool_use(stream);
  record_done(stream);
}

}  // namespace packkv
