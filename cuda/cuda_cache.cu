// CudaCache: host side of the CUDA backend (see cuda_cache.h), except append
// (cuda_cache_append.cu). Host only; the kernels live in encode/, attention/ and
// decompress.cu.
#include "cuda_cache.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <string>

#include "api/handles.h"
#include "attention/attention.h"
#include "cuda_check.h"
#include "common/error.h"
#include "common/rules.h"
#include "format/shape.h"


namespace packkv {
namespace {


}  // namespace

using cu::check;

CudaCache::CudaCache(const Config& config, std::shared_ptr<PagePool> pool) : CacheImpl(config), pool_(std::move(pool)) {
  const Config& c = this->config();
  if (c.repack == PACKKV_REPACK_GREEDY)
    fail(PACKKV_ERR_NOT_SUPPORTED,
         "repack = PACKKV_REPACK_GREEDY is CPU-only; use MEDIAN or NONE "
         "on a CUDA cache (params.device >= 0)");
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    fail(PACKKV_ERR_NOT_SUPPORTED, "params.device >= 0 but no CUDA device is visible");
  }
  if (c.device >= count)
    fail(PACKKV_ERR_INVALID_ARGUMENT, "params.device = " + std::to_string(c.device) +
                                          " but only " + std::to_string(count) + " CUDA device(s) exist");
  cu::DeviceGuard guard(c.device);
  kc_.shape = c.shape;
  kc_.ring_tokens = c.residual_tokens + c.shape.block_tokens;
  kc_.sink_tokens = c.sink_tokens;
  kc_.k_center = c.k_transform == PACKKV_K_TRANSFORM_CENTER ? 1 : 0;
  kc_.median = c.repack == PACKKV_REPACK_MEDIAN ? 1 : 0;
  kc_.rel_k = c.rel_scale_k;
  kc_.rel_v = c.rel_scale_v;
  kc_.kv_dtype = c.kv_dtype;
  const int64_t max_blocks = (c.max_tokens_per_seq + c.shape.block_tokens - 1) / c.shape.block_tokens;
  if (max_blocks > (int64_t{1} << 30))
    fail(PACKKV_ERR_NOT_SUPPORTED, "max_tokens_per_seq / block_tokens = " +
                                       std::to_string(max_blocks) + " blocks per sequence; the CUDA backend supports up to 2^30");
  kc_.max_blocks = static_cast<int>(max_blocks);
  kc_.max_tile = align16(std::max(c.shape.max_tile_bytes(fmt::kK), c.shape.max_tile_bytes(fmt::kV)));
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
    fail(PACKKV_ERR_NOT_SUPPORTED, "block_tokens * head_dim too large for the GPU encoder");
  if (cu::attn_min_smem_bytes(kc_) > static_cast<size_t>(optin))
    fail(PACKKV_ERR_NOT_SUPPORTED, "block_tokens * head_dim too large for the GPU attention");
  kv_elem_ = elem_bytes(c.kv_dtype);
  if (!pool_) pool_ = make_device_pool(c.device, page_bytes_for(c.shape, c.device), 0, false);
  if (pool_->device() != c.device)
    fail(PACKKV_ERR_NOT_SUPPORTED, "the pool's pages are not on device " + std::to_string(c.device));
  const size_t worst = worst_blob_alloc();
  if (worst + kPageSlack > pool_->page_bytes())
    fail(PACKKV_ERR_INVALID_ARGUMENT, "the pool's pages (" + std::to_string(pool_->page_bytes()) +
                                          " bytes) are smaller than the largest block of this cache plus " +
                                          std::to_string(kPageSlack) + " bytes (" + std::to_string(worst + kPageSlack) +
                                          " bytes: packkv_x_pool_page_bytes_for)");
  seqs_.resize(static_cast<size_t>(c.max_seqs));

  const size_t ms = static_cast<size_t>(c.max_seqs);
  dp_.max_pages = kc_.max_blocks + 1;
  dp_.page_cap = static_cast<unsigned>(pool_->page_bytes() - kPageSlack);
  const size_t bt = ms * kc_.max_blocks * 8, st = ms * sizeof(fmt::BlobSizes), ps = ms * sizeof(cu::PlaceState),
               rt = ms * 16, pl = ms * static_cast<size_t>(dp_.max_pages) * 8;
  const size_t km = kc_.k_center ? ms * static_cast<size_t>(c.shape.token_values()) * 4 : 0;  // K means
  // [block table][stats][place states][committed][err key][ring table][page lists][K means]
  const size_t at_ps = bt + st, at_cm = at_ps + ps, at_ek = at_cm + 8, at_rt = at_ek + 8, at_pl = at_rt + rt,
               at_km = at_pl + pl;
  check(cudaMalloc(&d_meta_, at_km + km), "cudaMalloc(block table)");
  uint8_t* m = static_cast<uint8_t*>(d_meta_);
  dp_.block_table = reinterpret_cast<unsigned long long*>(m);
  dp_.seq_stats = reinterpret_cast<fmt::BlobSizes*>(m + bt);
  dp_.place = reinterpret_cast<cu::PlaceState*>(m + at_ps);
  dp_.committed = reinterpret_cast<unsigned long long*>(m + at_cm);
  dp_.err_key = reinterpret_cast<unsigned long long*>(m + at_ek);
  dp_.ring_table = reinterpret_cast<unsigned long long*>(m + at_rt);
  dp_.pages = reinterpret_cast<unsigned long long*>(m + at_pl);
  dp_.k_mean = kc_.k_center ? reinterpret_cast<float*>(m + at_km) : nullptr;
  try {
    check(cudaMemset(m, 0, at_km), "cudaMemset");
    std::vector<cu::PlaceState> init(ms, cu::PlaceState{-1, 0});
    check(cudaMemcpy(dp_.place, init.data(), ps, cudaMemcpyHostToDevice), "cudaMemcpy");
    check(cudaMemset(dp_.err_key, 0xff, 8), "cudaMemset");
    check(cudaMallocHost(&h_snap_, ps + 8), "cudaMallocHost");
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
  pool_->attach(this, worst, c.shape.block_tokens);
}

CudaCache::~CudaCache() {
  // Never throws: waits for our work, then frees everything.
  int prev = 0;
  cudaGetDevice(&prev);
  cudaSetDevice(config().device);
  cudaEventSynchronize(done_ev_);  // our last enqueued work (cudaFree below also waits)
  for (Seq& s : seqs_) {
    for (Page* p : s.pages) pool_->release(p);
    cudaFree(s.ring_k);  // both rings (ensure_ring)
  }
  pool_->detach(this);
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
  return s.sink_len + s.n_blocks * config().shape.block_tokens + s.residual_len;
}

void CudaCache::record_done(cudaStream_t stream) const {
  check(cudaEventRecord(done_ev_, stream), "cudaEventRecord");
}

void CudaCache::free_seq_storage(Seq& s) {
  // (callers have waited for the cache's work: no kernel reads these pages any more)
  for (Page* p : s.pages) pool_->release(p);
  s.pages.clear();
  s.bound = cu::PlaceState{-1, 0};
  s.snap_valid = false;
  s.n_blocks = 0;
  s.sink_len = 0;
  s.residual_len = 0;
  s.ring_start = 0;
}

void CudaCache::remove_seq(int seq) {
  cu::DeviceGuard guard(config().device);
  check(cudaEventSynchronize(done_ev_), "cudaEventSynchronize");
  check(cudaMemset(dp_.seq_stats + seq, 0, sizeof(fmt::BlobSizes)), "cudaMemset");
  const cu::PlaceState none{-1, 0};
  check(cudaMemcpy(dp_.place + seq, &none, sizeof none, cudaMemcpyHostToDevice), "cudaMemcpy");
  check(cudaStreamSynchronize(nullptr), "cudaStreamSynchronize");  // the copies have landed
  free_seq_storage(seqs_[seq]);
}

void CudaCache::reset() {
  cu::DeviceGuard guard(config().device);
  check(cudaEventSynchronize(done_ev_), "cudaEventSynchronize");
  check(cudaMemset(dp_.seq_stats, 0, seqs_.size() * sizeof(fmt::BlobSizes)), "cudaMemset");
  std::vector<cu::PlaceState> none(seqs_.size(), cu::PlaceState{-1, 0});
  check(cudaMemcpy(dp_.place, none.data(), none.size() * sizeof(cu::PlaceState), cudaMemcpyHostToDevice),
        "cudaMemcpy");
  check(cudaStreamSynchronize(nullptr), "cudaStreamSynchronize");  // the copies have landed
  for (Seq& s : seqs_) free_seq_storage(s);
}

void CudaCache::stats(int seq, packkv_cache_stats_t* out) const {
  const Config& c = config();
  cu::DeviceGuard guard(c.device);
  // Waits for the cache's work and takes in the exact placement, so that the reserved
  // bytes exclude pages taken for a worst case that did not happen (a const call on a
  // cache is not concurrent with other calls on it, cache_impl.h).
  const_cast<CudaCache*>(this)->sync_bounds();
  std::vector<fmt::BlobSizes> st(seqs_.size());
  check(cudaMemcpy(st.data(), dp_.seq_stats, st.size() * sizeof(fmt::BlobSizes), cudaMemcpyDeviceToHost),
        "cudaMemcpy(stats)");
  packkv_cache_stats_t r;
  std::memset(&r, 0, sizeof(r));
  r.struct_size = out->struct_size;
  // A page shared by forked sequences counts in each one's stats and once in the
  // whole-cache stats (seq == -1).
  std::set<const Page*> pages_seen;
  for (size_t i = 0; i < seqs_.size(); ++i) {
    if (seq >= 0 && static_cast<size_t>(seq) != i) continue;
    const Seq& s = seqs_[i];
    const int64_t nc = s.n_blocks * c.shape.block_tokens;
    r.n_compressed_tokens += nc;
    r.n_residual_tokens += s.sink_len + s.residual_len;  // sink tokens: uncompressed, counted with the window
    r.n_blocks += s.n_blocks;
    stats_add_blob(&r, st[i]);     // blob bytes (headers count as index bytes)
    r.index_bytes += 8 * s.n_blocks;  // block-table entries
    if (kc_.k_center && s.n_blocks > 0) r.k_scale_bytes += c.shape.token_values() * 4;  // K mean: K metadata
    for (const Page* p : s.pages)
      if (pages_seen.insert(p).second) r.compressed_bytes_reserved += static_cast<int64_t>(pool_->page_bytes());
    r.compressed_bytes_reserved += 8 * s.n_blocks;
    r.residual_bytes += static_cast<int64_t>(s.sink_len + s.residual_len) * c.shape.token_values() * 2 *
                        static_cast<int64_t>(kv_elem_);
  }
  if (seq < 0 && shared_) {  // a block shared by forked sequences counts once here
    std::set<unsigned long long> blocks_seen;
    for (size_t i = 0; i < seqs_.size(); ++i)
      for (unsigned long long a : block_addrs(static_cast<int>(i))) {
        if (blocks_seen.insert(a).second) continue;
        const fmt::BlobSizes z = blob_sizes_at(a);
        const fmt::BlobSizes minus{-z.k_tiles, -z.v_tiles, -z.k_scale, -z.v_scale, -z.header, -z.perm};
        stats_add_blob(&r, minus);
        r.n_blocks -= 1;
        r.n_compressed_tokens -= c.shape.block_tokens;
        r.index_bytes -= 8;
      }
  }
  stats_finish(&r, c.shape.token_values());
  *out = r;
}

cu::AttnSeq CudaCache::attn_seq(int seq) const {
  const Seq& s = seqs_[seq];
  cu::AttnSeq a;
  a.seq = seq;
  a.n_blocks = static_cast<int>(s.n_blocks);
  a.residual_len = s.residual_len;
  a.ring_start = s.ring_start;
  a.sink_len = s.sink_len;
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
    const unsigned long long seq = key >> cu::kErrKeyPosBits, pos = key & ((1ull << cu::kErrKeyPosBits) - 1);
    fail(PACKKV_ERR_INVALID_ARGUMENT,
         "packkv_cache_append (reported by a synchronizing call): non-finite value (or overflow of "
         "kv_dtype) in K or V of sequence " + std::to_string(seq) + " token " + std::to_string(pos) +
         "; that sequence's contents are unspecified, remove it");
  }
}

size_t CudaCache::workspace_size(int n_seqs, int n_q_heads) const {
  return cu::attn_workspace_bytes(kc_, n_seqs, n_q_heads);
}

void CudaCache::run_attention(const AttnArgs& a, cu::AttnVariant variant, float* out, int64_t ld,
                              const float* probs, float scale, float* lse) const {
  const int rows = cu::attn_grid_rows(kc_, a.n_q_heads);
  if (rows > 65535)
    fail(PACKKV_ERR_NOT_SUPPORTED,
         "attention: n_kv_heads * ceil(n_q_heads / n_kv_heads / 4) = " + std::to_string(rows) +
             " CTA rows, over CUDA's grid limit of 65535; shard the heads over several caches");
  cu::DeviceGuard guard(config().device);
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(a.stream);
  const cu::AttnCall call{variant, a.n_q_heads, a.q, a.q_dtype, scale, out, lse, ld, probs,
                         static_cast<float*>(a.workspace)};
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
  run_attention(a, cu::AttnVariant::kScores, scores, ld_scores, nullptr, 0.f, nullptr);
}

void CudaCache::apply(const AttnArgs& a, const float* probs, int64_t ld_probs, float* out) const {
  run_attention(a, cu::AttnVariant::kApply, out, ld_probs, probs, 0.f, nullptr);
}

void CudaCache::decode(const AttnArgs& a, float scale, float* out, float* lse) const {
  run_attention(a, cu::AttnVariant::kDecode, out, 0, nullptr, scale, lse);
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
  std::vector<uint32_t> ends(2 * static_cast<size_t>(c.shape.n_kv_heads));
  check(cudaMemcpy(ends.data(), blob, ends.size() * 4, cudaMemcpyDeviceToHost), "cudaMemcpy");
  // Header and tiles first; a compact cache's wide fallback block has its wide fields
  // after the tiles: its size is then known from those bytes (Shape::sizes, as the CPU).
  std::vector<uint8_t> out(c.shape.layout.tiles_at + ends.back());
  check(cudaMemcpy(out.data(), blob, out.size(), cudaMemcpyDeviceToHost), "cudaMemcpy");
  const size_t total = static_cast<size_t>(c.shape.sizes(out.data()).total());
  if (total > out.size()) {
    const size_t have = out.size();
    out.resize(total);
    check(cudaMemcpy(out.data() + have, blob + have, total - have, cudaMemcpyDeviceToHost), "cudaMemcpy");
  }
  return out;
}

// ---- backend entry points (cache_impl.h) ----

std::unique_ptr<CacheImpl> make_cuda_cache(const Config& config, std::shared_ptr<PagePool> pool) {
  return std::unique_ptr<CacheImpl>(new CudaCache(config, std::move(pool)));
}

bool cuda_device_present() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return n > 0;
}

}  // namespace packkv
