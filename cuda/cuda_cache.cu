// CudaCache: host side of the CUDA backend (see cuda_cache.h). Host only; the kernels
// live in encode.cu, attention.cu and decompress.cu.
#include "cuda_cache.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "cuda_check.h"
#include "error.h"
#include "tile_format.h"

#ifndef PACKKV_CUDA_ARCHS
#define PACKKV_CUDA_ARCHS "?"
#endif

namespace packkv {
namespace {

constexpr size_t kChunkMin = 256 * 1024;
constexpr size_t kChunkMax = 64ull * 1024 * 1024;
constexpr size_t kChunkSlack = 64;           // over-read slack at the end of each chunk
constexpr int kMaxBlocksPerFlushLaunch = 512;  // bounds the scratch size

size_t elem_size(packkv_dtype_t t) { return t == PACKKV_DTYPE_F32 ? 4 : 2; }
size_t al16(size_t x) { return (x + 15) & ~static_cast<size_t>(15); }

}  // namespace

using cu::check;

CudaCache::CudaCache(const Config& config) : CacheImpl(config) {
  const Config& c = this->config();
  if (c.repack == PACKKV_REPACK_GREEDY)
    fail(PACKKV_ERR_NOT_SUPPORTED,
         "packkv_cache_create: repack = PACKKV_REPACK_GREEDY is CPU-only; use MEDIAN or NONE "
         "on a CUDA cache (params.device >= 0)");
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    fail(PACKKV_ERR_NOT_SUPPORTED, "packkv_cache_create: params.device >= 0 but no CUDA device is visible");
  }
  if (c.device >= count)
    fail(PACKKV_ERR_INVALID_ARGUMENT, "packkv_cache_create: params.device = " + std::to_string(c.device) +
                                          " but only " + std::to_string(count) + " CUDA device(s) exist");
  cu::DeviceGuard guard(c.device);
  kc_.n_kv_heads = c.n_kv_heads;
  kc_.head_dim = c.head_dim;
  kc_.block_tokens = c.block_tokens;
  kc_.ring_tokens = c.residual_tokens + c.block_tokens;
  kc_.groups = c.groups();
  kc_.has_perm = c.has_perm() ? 1 : 0;
  kc_.median = c.repack == PACKKV_REPACK_MEDIAN ? 1 : 0;
  kc_.bits_k = c.bits_k;
  kc_.bits_v = c.bits_v;
  kc_.rel_k = c.rel_scale_k;
  kc_.rel_v = c.rel_scale_v;
  kc_.kv_dtype = c.kv_dtype;
  const int64_t max_blocks = (c.max_tokens_per_seq + c.block_tokens - 1) / c.block_tokens;
  if (max_blocks > (int64_t{1} << 30))
    fail(PACKKV_ERR_NOT_SUPPORTED, "packkv_cache_create: max_tokens_per_seq / block_tokens = " +
                                       std::to_string(max_blocks) + " blocks per sequence; the CUDA backend supports up to 2^30");
  kc_.max_blocks = static_cast<int>(max_blocks);
  kc_.max_tile = al16(fmt::max_tile_bytes(c.block_tokens, c.head_dim, std::max(c.bits_k, c.bits_v)));
  int sms = 0, optin = 0;
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, c.device), "cudaDeviceGetAttribute");
  check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, c.device),
        "cudaDeviceGetAttribute");
  int cc_major = 0, cc_minor = 0;
  check(cudaDeviceGetAttribute(&cc_major, cudaDevAttrComputeCapabilityMajor, c.device), "cudaDeviceGetAttribute");
  check(cudaDeviceGetAttribute(&cc_minor, cudaDevAttrComputeCapabilityMinor, c.device), "cudaDeviceGetAttribute");
  kc_.num_sms = sms;
  kc_.smem_optin = optin;
  kc_.cc = cc_major * 10 + cc_minor;
  if (cu::flush_smem_bytes(kc_) > static_cast<size_t>(optin))
    fail(PACKKV_ERR_NOT_SUPPORTED, "packkv_cache_create: block_tokens * head_dim too large for the GPU encoder");
  if (cu::attn_min_smem_bytes(kc_) > static_cast<size_t>(optin))
    fail(PACKKV_ERR_NOT_SUPPORTED, "packkv_cache_create: block_tokens * head_dim too large for the GPU attention");
  kv_elem_ = elem_size(c.kv_dtype);
  seqs_.resize(static_cast<size_t>(c.max_seqs));

  const size_t ms = static_cast<size_t>(c.max_seqs);
  const size_t bt = ms * kc_.max_blocks * 8, st = ms * 6 * 8, us = ms * 8, rt = ms * 16;
  check(cudaMalloc(&d_meta_, bt + st + us + 8 + rt), "cudaMalloc(block table)");
  uint8_t* m = static_cast<uint8_t*>(d_meta_);
  dp_.block_table = reinterpret_cast<unsigned long long*>(m);
  dp_.seq_stats = reinterpret_cast<long long*>(m + bt);
  d_used_ = reinterpret_cast<unsigned long long*>(m + bt + st);
  dp_.err_key = reinterpret_cast<unsigned long long*>(m + bt + st + us);
  dp_.ring_table = reinterpret_cast<unsigned long long*>(m + bt + st + us + 8);
  dp_.used = d_used_;
  try {
    check(cudaMemset(m, 0, bt + st + us + 8 + rt), "cudaMemset");
    check(cudaMemset(dp_.err_key, 0xff, 8), "cudaMemset");
    check(cudaMallocHost(&h_snap_, us), "cudaMallocHost");
    check(cudaEventCreateWithFlags(&snap_ev_, cudaEventDisableTiming), "cudaEventCreate");
    check(cudaEventCreateWithFlags(&done_ev_, cudaEventDisableTiming), "cudaEventCreate");
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  } catch (...) {
    if (h_snap_) cudaFreeHost(h_snap_);
    if (snap_ev_) cudaEventDestroy(snap_ev_);
    if (done_ev_) cudaEventDestroy(done_ev_);
    cudaFree(d_meta_);
    throw;
  }
}

CudaCache::~CudaCache() {
  // Never throws: waits for our work, then frees everything.
  int prev = 0;
  cudaGetDevice(&prev);
  cudaSetDevice(config().device);
  cudaEventSynchronize(done_ev_);  // our last enqueued work (cudaFree below also waits)
  for (Seq& s : seqs_) {
    for (Chunk& ch : s.chunks) cudaFree(ch.ptr);
    cudaFree(s.ring_k);
    cudaFree(s.ring_v);
  }
  cudaFree(scratch_);
  cudaFree(d_meta_);
  cudaFreeHost(h_snap_);
  cudaEventDestroy(snap_ev_);
  cudaEventDestroy(done_ev_);
  (void)cudaGetLastError();
  cudaSetDevice(prev);
}

int64_t CudaCache::seq_length(int seq) const {
  const Seq& s = seqs_[seq];
  return s.n_blocks * config().block_tokens + s.res_len;
}

size_t CudaCache::worst_blob_alloc() const {
  const Config& c = config();
  const fmt::BlockLayout l = fmt::block_layout(c.n_kv_heads, c.block_tokens, c.groups(), c.has_perm());
  return al16(l.tiles_at + static_cast<size_t>(c.n_kv_heads) *
                               (fmt::max_tile_bytes(c.block_tokens, c.head_dim, c.bits_k) +
                                fmt::max_tile_bytes(c.block_tokens, c.head_dim, c.bits_v)));
}

void CudaCache::record_done(cudaStream_t stream) const {
  check(cudaEventRecord(done_ev_, stream), "cudaEventRecord");
}

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

void CudaCache::append(int n_seqs, const int32_t* seq_ids, const int32_t* n_tokens,
                       const void* k_new, const void* v_new, packkv_dtype_t dtype,
                       packkv_stream_t stream_) {
  const Config& c = config();
  cu::DeviceGuard guard(c.device);
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_);
  poll_snapshot();
  const int N = c.block_tokens, R = c.residual_tokens;
  const size_t worst = worst_blob_alloc();
  const size_t ring_bytes = static_cast<size_t>(kc_.ring_tokens) * c.n_kv_heads * c.head_dim * kv_elem_;

  // Plan (no state change yet).
  std::vector<int> flush_blocks(n_seqs);
  std::vector<int64_t> in_row(n_seqs);
  int64_t row = 0;
  int total_blocks = 0;
  for (int i = 0; i < n_seqs; ++i) {
    const Seq& s = seqs_[seq_ids[i]];
    const int64_t total = static_cast<int64_t>(s.res_len) + n_tokens[i];
    int64_t F = 0;
    while (total - F >= static_cast<int64_t>(R) + N) F += N;
    flush_blocks[i] = static_cast<int>(F / N);
    if (s.n_blocks + flush_blocks[i] > kc_.max_blocks)
      fail(PACKKV_ERR_CAPACITY_EXCEEDED, "packkv_cache_append: sequence " + std::to_string(seq_ids[i]) +
                                             " would exceed max_tokens_per_seq");
    in_row[i] = row;
    row += n_tokens[i];
    total_blocks += flush_blocks[i];
  }
  // Allocations (stream-ordered; kept if a later step fails, so state stays consistent).
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
    const size_t need = static_cast<size_t>(flush_blocks[i]) * worst;
    if (need > 0 && (s.chunks.empty() || s.bound + need > s.cap)) {
      size_t bytes = s.chunks.empty() ? kChunkMin : std::min(kChunkMax, 2 * s.chunks.back().bytes);
      bytes = std::max(bytes, need + kChunkSlack);
      void* p = nullptr;
      check(cudaMallocAsync(&p, bytes, stream), "cudaMallocAsync(pool chunk)");
      check(cudaMemsetAsync(d_used_ + seq_ids[i], 0, sizeof(unsigned long long), stream), "cudaMemsetAsync");
      s.chunks.push_back(Chunk{static_cast<uint8_t*>(p), bytes});
      s.cap = bytes - kChunkSlack;
      s.bound = 0;
      s.pending_total = 0;
      s.snap_chunk = -1;
    }
  }
  const size_t per_block = cu::flush_scratch_bytes_per_block(kc_);
  const size_t need_scratch = static_cast<size_t>(std::min(total_blocks, kMaxBlocksPerFlushLaunch)) * per_block;
  if (need_scratch > scratch_bytes_) {
    if (scratch_) check(cudaFreeAsync(scratch_, stream), "cudaFreeAsync(scratch)");
    scratch_ = nullptr;
    scratch_bytes_ = 0;
    void* p = nullptr;
    check(cudaMallocAsync(&p, need_scratch, stream), "cudaMallocAsync(flush scratch)");
    scratch_ = static_cast<uint8_t*>(p);
    scratch_bytes_ = need_scratch;
  }

  // Flush batches.
  if (total_blocks > 0) {
    cu::FlushBatch fb;
    std::memset(&fb, 0, sizeof(fb));
    auto launch = [&]() {
      if (fb.total_blocks > 0)
        cu::launch_flush(kc_, fb, dp_, k_new, v_new, dtype, scratch_, stream);
      std::memset(&fb, 0, sizeof(fb));
    };
    for (int i = 0; i < n_seqs; ++i) {
      const Seq& s = seqs_[seq_ids[i]];
      int done = 0;
      while (done < flush_blocks[i]) {
        if (fb.n == cu::kMaxFlushSeqs || fb.total_blocks == kMaxBlocksPerFlushLaunch) launch();
        const int take = std::min(flush_blocks[i] - done, kMaxBlocksPerFlushLaunch - fb.total_blocks);
        cu::FlushSeq& d = fb.s[fb.n++];
        d.chunk = s.chunks.back().ptr;
        d.in_row = in_row[i];
        d.pos_base = s.n_blocks * N;
        d.win_base = static_cast<int64_t>(done) * N;
        d.seq = seq_ids[i];
        d.first_block = static_cast<int>(s.n_blocks) + done;
        d.n_flush = take;
        d.res_len = s.res_len;
        d.ring_start = s.ring_start;
        d.block_start = fb.total_blocks;
        fb.total_blocks += take;
        done += take;
      }
    }
    launch();
  }
  // Residual window update.
  {
    cu::ResidualBatch rb;
    std::memset(&rb, 0, sizeof(rb));
    auto launch = [&]() {
      cu::launch_residual_write(kc_, rb, dp_, k_new, v_new, dtype, stream);
      std::memset(&rb, 0, sizeof(rb));
    };
    for (int i = 0; i < n_seqs; ++i) {
      if (n_tokens[i] == 0) continue;
      if (rb.n == cu::kMaxResidualSeqs) launch();
      const Seq& s = seqs_[seq_ids[i]];
      cu::ResidualSeq& d = rb.s[rb.n++];
      d.in_row = in_row[i];
      d.pos_base = s.n_blocks * N;
      d.n_new = n_tokens[i];
      d.res_len = s.res_len;
      d.flushed = flush_blocks[i] * N;
      d.ring_start = s.ring_start;
      d.seq = seq_ids[i];
      rb.max_new = std::max(rb.max_new, n_tokens[i]);
    }
    launch();
  }
  // Commit the host state.
  for (int i = 0; i < n_seqs; ++i) {
    Seq& s = seqs_[seq_ids[i]];
    const int F = flush_blocks[i] * N;
    const int64_t total = static_cast<int64_t>(s.res_len) + n_tokens[i];
    s.n_blocks += flush_blocks[i];
    s.res_len = static_cast<int>(total - F);
    s.ring_start = (s.ring_start + F) % kc_.ring_tokens;
    s.bound += static_cast<size_t>(flush_blocks[i]) * worst;
    s.pending_total += static_cast<size_t>(flush_blocks[i]) * worst;
  }
  if (total_blocks > 0 && !snap_inflight_) {
    check(cudaMemcpyAsync(h_snap_, d_used_, seqs_.size() * sizeof(unsigned long long),
                          cudaMemcpyDeviceToHost, stream),
          "cudaMemcpyAsync(pool snapshot)");
    check(cudaEventRecord(snap_ev_, stream), "cudaEventRecord");
    snap_inflight_ = true;
    for (Seq& s : seqs_) {
      s.snap_pending = s.pending_total;
      s.snap_chunk = static_cast<int>(s.chunks.size()) - 1;
    }
  }
  record_done(stream);
}

void CudaCache::free_seq_storage(Seq& s) {
  for (Chunk& ch : s.chunks) check(cudaFree(ch.ptr), "cudaFree(pool chunk)");
  s.chunks.clear();
  s.cap = s.bound = s.pending_total = s.snap_pending = 0;
  s.snap_chunk = -1;
  s.n_blocks = 0;
  s.res_len = 0;
  s.ring_start = 0;
}

void CudaCache::remove_seq(int seq) {
  cu::DeviceGuard guard(config().device);
  check(cudaEventSynchronize(done_ev_), "cudaEventSynchronize");
  check(cudaMemset(dp_.seq_stats + static_cast<size_t>(seq) * 6, 0, 6 * sizeof(long long)), "cudaMemset");
  free_seq_storage(seqs_[seq]);
}

void CudaCache::reset() {
  cu::DeviceGuard guard(config().device);
  check(cudaEventSynchronize(done_ev_), "cudaEventSynchronize");
  check(cudaMemset(dp_.seq_stats, 0, seqs_.size() * 6 * sizeof(long long)), "cudaMemset");
  for (Seq& s : seqs_) free_seq_storage(s);
}

void CudaCache::stats(int seq, packkv_cache_stats_t* out) const {
  const Config& c = config();
  cu::DeviceGuard guard(c.device);
  check(cudaEventSynchronize(done_ev_), "cudaEventSynchronize");
  std::vector<long long> st(seqs_.size() * 6);
  check(cudaMemcpy(st.data(), dp_.seq_stats, st.size() * sizeof(long long), cudaMemcpyDeviceToHost),
        "cudaMemcpy(stats)");
  packkv_cache_stats_t r;
  std::memset(&r, 0, sizeof(r));
  r.struct_size = out->struct_size;
  const int64_t hd2 = static_cast<int64_t>(c.n_kv_heads) * c.head_dim * 2;
  for (size_t i = 0; i < seqs_.size(); ++i) {
    if (seq >= 0 && static_cast<size_t>(seq) != i) continue;
    const Seq& s = seqs_[i];
    const int64_t nc = s.n_blocks * c.block_tokens;
    r.n_tokens += nc + s.res_len;
    r.n_compressed_tokens += nc;
    r.n_residual_tokens += s.res_len;
    r.n_blocks += s.n_blocks;
    r.k_tile_bytes += st[i * 6 + 0];
    r.v_tile_bytes += st[i * 6 + 1];
    r.k_scale_bytes += st[i * 6 + 2];
    r.v_scale_bytes += st[i * 6 + 3];
    r.index_bytes += st[i * 6 + 4] + 8 * s.n_blocks;  // blob headers + block-table entries
    r.perm_bytes += st[i * 6 + 5];
    for (const Chunk& ch : s.chunks) r.compressed_bytes_reserved += static_cast<int64_t>(ch.bytes);
    r.compressed_bytes_reserved += 8 * s.n_blocks;
    r.residual_bytes += static_cast<int64_t>(s.res_len) * hd2 / 2 * 2 * static_cast<int64_t>(kv_elem_);
    r.fp16_bytes += (nc + s.res_len) * hd2 * 2;
  }
  r.compressed_bytes_used =
      r.k_tile_bytes + r.v_tile_bytes + r.k_scale_bytes + r.v_scale_bytes + r.index_bytes + r.perm_bytes;
  *out = r;
}

cu::AttnSeq CudaCache::attn_seq(int seq) const {
  const Seq& s = seqs_[seq];
  cu::AttnSeq a;
  a.seq = seq;
  a.n_blocks = static_cast<int>(s.n_blocks);
  a.res_len = s.res_len;
  a.ring_start = s.ring_start;
  return a;
}

void CudaCache::decompress(int seq, float* k_out, float* v_out, packkv_stream_t stream_) const {
  cu::DeviceGuard guard(config().device);
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_);
  cu::launch_decompress(kc_, dp_, attn_seq(seq), k_out, v_out, stream);
  record_done(stream);
}

void CudaCache::sync() const {
  cu::DeviceGuard guard(config().device);
  check(cudaEventSynchronize(done_ev_), "packkv_cache_sync: cudaEventSynchronize");
  check(cudaGetLastError(), "packkv_cache_sync");
  unsigned long long key = 0;
  check(cudaMemcpy(&key, dp_.err_key, sizeof(key), cudaMemcpyDeviceToHost), "packkv_cache_sync: cudaMemcpy");
  if (key != ~0ull) {
    check(cudaMemset(dp_.err_key, 0xff, sizeof(key)), "packkv_cache_sync: cudaMemset");
    const unsigned long long seq = key >> 40, pos = key & ((1ull << 40) - 1);
    fail(PACKKV_ERR_INVALID_ARGUMENT,
         "packkv_cache_append (reported by a synchronizing call): non-finite value (or overflow of "
         "kv_dtype) in K or V of sequence " + std::to_string(seq) + " token " + std::to_string(pos) +
         "; that sequence's contents are unspecified, remove it");
  }
}

size_t CudaCache::workspace_size(int n_seqs, int n_q_heads) const {
  return cu::attn_workspace_bytes(kc_, n_seqs, n_q_heads);
}

void CudaCache::run_attention(const AttnArgs& a, cu::AttnCall call) const {
  const int rows = cu::attn_grid_rows(kc_, a.n_q_heads);
  if (rows > 65535)
    fail(PACKKV_ERR_NOT_SUPPORTED,
         "attention: n_kv_heads * ceil(n_q_heads / n_kv_heads / 4) = " + std::to_string(rows) +
             " CTA rows, over CUDA's grid limit of 65535; shard the heads over several caches");
  cu::DeviceGuard guard(config().device);
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(a.stream);
  call.n_q_heads = a.n_q_heads;
  call.q = a.q;
  call.q_dtype = a.q_dtype;
  call.partial = static_cast<float*>(a.workspace);
  cu::AttnBatch b;
  std::memset(&b, 0, sizeof(b));
  for (int i = 0; i < a.n_seqs; ++i) {
    if (b.n == cu::kMaxAttnSeqs) {
      cu::launch_attention(kc_, b, dp_, call, stream);
      std::memset(&b, 0, sizeof(b));
    }
    if (b.n == 0) b.first = i;
    b.s[b.n++] = attn_seq(a.seq_ids[i]);
    b.max_blocks = std::max(b.max_blocks, b.s[b.n - 1].n_blocks);
  }
  cu::launch_attention(kc_, b, dp_, call, stream);
  record_done(stream);
}

void CudaCache::scores(const AttnArgs& a, float* scores, int64_t ld_scores) const {
  cu::AttnCall call{};
  call.mode = cu::kAttnScores;
  call.out = scores;
  call.ld = ld_scores;
  run_attention(a, call);
}

void CudaCache::apply(const AttnArgs& a, const float* probs, int64_t ld_probs, float* out) const {
  cu::AttnCall call{};
  call.mode = cu::kAttnApply;
  call.out = out;
  call.probs = probs;
  call.ld = ld_probs;
  run_attention(a, call);
}

void CudaCache::decode(const AttnArgs& a, float scale, float* out, float* lse) const {
  cu::AttnCall call{};
  call.mode = cu::kAttnDecode;
  call.out = out;
  call.lse = lse;
  call.scale = scale;
  run_attention(a, call);
}

std::vector<uint8_t> CudaCache::block_bytes(int seq, int64_t block) const {
  const Config& c = config();
  cu::DeviceGuard guard(c.device);
  check(cudaEventSynchronize(done_ev_), "cudaEventSynchronize");
  unsigned long long addr = 0;
  check(cudaMemcpy(&addr, dp_.block_table + static_cast<size_t>(seq) * kc_.max_blocks + block, 8,
                   cudaMemcpyDeviceToHost),
        "cudaMemcpy");
  const uint8_t* blob = reinterpret_cast<const uint8_t*>(addr);
  const fmt::BlockLayout l = fmt::block_layout(c.n_kv_heads, c.block_tokens, c.groups(), c.has_perm());
  std::vector<uint32_t> ends(2 * static_cast<size_t>(c.n_kv_heads));
  check(cudaMemcpy(ends.data(), blob, ends.size() * 4, cudaMemcpyDeviceToHost), "cudaMemcpy");
  std::vector<uint8_t> out(l.tiles_at + ends.back());
  check(cudaMemcpy(out.data(), blob, out.size(), cudaMemcpyDeviceToHost), "cudaMemcpy");
  return out;
}

// ---- backend entry points (cache_impl.h) ----

std::unique_ptr<CacheImpl> make_cuda_cache(const Config& config) {
  return std::unique_ptr<CacheImpl>(new CudaCache(config));
}

bool cuda_device_present() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return n > 0;
}

const char* cuda_build_info() {
  static const std::string info = [] {
    int rt = 0;
    cudaRuntimeGetVersion(&rt);
    return std::string("cuda runtime ") + std::to_string(rt / 1000) + "." + std::to_string((rt % 1000) / 10) +
           ", sm " + PACKKV_CUDA_ARCHS;
  }();
  return info.c_str();
}

}  // namespace packkv
