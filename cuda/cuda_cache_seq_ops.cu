// CudaCache::fork, truncate, export and import (the sequence operations of engines; the
// CPU versions: cpu/seq_ops.cpp, cpu/seq_io.cpp). Each waits for the cache's work, reads
// and prepares everything that can fail first, then changes the state. Host only.
//
// fork: dst gets src's blocks as shared pages (its page list holds a reference to each of
//   src's pages; src's blobs never move, and dst writes its own blobs into new pages:
//   its placement starts with its last page closed) and copies of src's residual
//   window, sink tokens and K mean.
// truncate: as the CPU (cpu/seq_ops.cpp): the window shrinks, or the sink tokens, or the
//   blocks from the one holding token n_tokens - 1 go; that block's first tokens come
//   back into the residual window from its stored values (decompressed on the device,
//   clamped and rounded to kv_dtype on the host as the CPU does). Pages after the last
//   kept block's page go back to the pool; that page is written on from the end of the
//   last kept blob when no other sequence shares it, else it is closed.
// export / import: the format of format/seq_export.h through api/seq_export_io.h (import
//   validates everything before it changes anything; the blobs are placed as the device
//   would, kernels.h place_next). A CUDA cache has no sliding window: an export with
//   expired tokens is refused (NOT_SUPPORTED), as is a residual window longer than the
//   ring (residual_tokens + block_tokens of this cache).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "api/seq_export_io.h"
#include "common/dtype.h"
#include "common/error.h"
#include "common/rules.h"
#include "cuda_cache.h"
#include "cuda_check.h"
#include "format/seq_export.h"

namespace packkv {

using cu::check;

namespace {

// Host <-> device copies of plain bytes (synchronous).
void d2h(void* dst, const void* src, size_t n, const char* what) {
  if (n) check(cudaMemcpy(dst, src, n, cudaMemcpyDeviceToHost), what);
}
void h2d(void* dst, const void* src, size_t n, const char* what) {
  if (n) check(cudaMemcpy(dst, src, n, cudaMemcpyHostToDevice), what);
}
void d2d(void* dst, const void* src, size_t n, const char* what) {
  if (n) check(cudaMemcpy(dst, src, n, cudaMemcpyDeviceToDevice), what);
}
// cudaMemcpy from pageable host memory and device-to-device copies may return before the
// data lands: wait for them before the host state says they are there (later work may
// run on the caller's non-blocking streams).
void finish_copies(const char* what) { check(cudaStreamSynchronize(nullptr), what); }

}  // namespace

size_t CudaCache::ring_bytes() const {
  return static_cast<size_t>(kc_.ring_tokens + kc_.sink_tokens) * config().shape.token_values() * kv_elem_;
}

void CudaCache::alloc_rings(Seq& s) {
  // K and V rings in one cudaMalloc, not from the stream-ordered pool, which holds device
  // memory in chunks larger than one sequence uses (bench/RESULTS.md, "Paged device pool":
  // one sequence's free-memory drop 3.2x its used bytes; not yet re-measured with this
  // change: bench/alloc_granularity.cu measures what each allocator takes); s.ring_k owns it.
  void* both_rings = nullptr;
  check(cudaMalloc(&both_rings, 2 * ring_bytes()), "cudaMalloc(residual ring)");
  s.ring_k = both_rings;
  s.ring_v = static_cast<uint8_t*>(both_rings) + ring_bytes();
}

void CudaCache::ensure_ring(int seq) {
  Seq& s = seqs_[seq];
  if (s.ring_k) return;
  alloc_rings(s);
  const unsigned long long both[2] = {reinterpret_cast<unsigned long long>(s.ring_k),
                                      reinterpret_cast<unsigned long long>(s.ring_v)};
  try {
    h2d(dp_.ring_table + 2 * static_cast<size_t>(seq), both, sizeof both, "cudaMemcpy(ring table)");
  } catch (...) {
    cudaFree(s.ring_k);
    s.ring_k = s.ring_v = nullptr;
    throw;
  }
}

std::vector<unsigned long long> CudaCache::block_addrs(int seq) const {
  std::vector<unsigned long long> a(static_cast<size_t>(seqs_[seq].n_blocks));
  d2h(a.data(), dp_.block_table + static_cast<size_t>(seq) * kc_.max_blocks, a.size() * 8, "cudaMemcpy(block table)");
  return a;
}

fmt::BlobSizes CudaCache::blob_sizes_at(unsigned long long addr) const {
  // Shape::sizes reads the header only (tile ends, the compact fallback marker)
  std::vector<uint8_t> head(config().shape.layout.tiles_at);
  d2h(head.data(), reinterpret_cast<const void*>(addr), head.size(), "cudaMemcpy(blob header)");
  return config().shape.sizes(head.data());
}

void CudaCache::write_place(int seq, const cu::PlaceState& st) {
  h2d(dp_.place + seq, &st, sizeof st, "cudaMemcpy(placement state)");
}

// ---- fork ----

void CudaCache::fork(int src, int dst) {
  const Config& c = config();
  cu::DeviceGuard guard(c.device);
  sync_bounds();  // src's exact placement; none of the cache's work in flight
  Seq& from = seqs_[src];
  Seq& to = seqs_[dst];
  // may throw: dst is empty and stays so until the commit below
  to.pages.reserve(from.pages.size());
  ensure_ring(dst);
  const size_t mb = static_cast<size_t>(kc_.max_blocks), mp = static_cast<size_t>(dp_.max_pages);
  d2d(dp_.block_table + dst * mb, dp_.block_table + src * mb, static_cast<size_t>(from.n_blocks) * 8,
      "cudaMemcpy(block table)");
  d2d(dp_.pages + dst * mp, dp_.pages + src * mp, from.pages.size() * 8, "cudaMemcpy(page list)");
  d2d(dp_.seq_stats + dst, dp_.seq_stats + src, sizeof(fmt::BlobSizes), "cudaMemcpy(stats)");
  if (kc_.k_center) {
    const size_t row = static_cast<size_t>(c.shape.token_values());
    d2d(dp_.k_mean + dst * row, dp_.k_mean + src * row, row * 4, "cudaMemcpy(K mean)");
  }
  if (from.ring_k) {
    d2d(to.ring_k, from.ring_k, ring_bytes(), "cudaMemcpy(residual ring)");
    d2d(to.ring_v, from.ring_v, ring_bytes(), "cudaMemcpy(residual ring)");
  }
  const int n_pages = static_cast<int>(from.pages.size());
  const cu::PlaceState closed{n_pages - 1, n_pages > 0 ? dp_.page_cap : 0u};  // dst writes into new pages
  write_place(dst, closed);
  finish_copies("packkv_x_cache_fork");
  // commit (no throw)
  for (Page* p : from.pages) {
    PagePool::retain(p);
    to.pages.push_back(p);
  }
  to.n_blocks = from.n_blocks;
  to.sink_len = from.sink_len;
  to.residual_len = from.residual_len;
  to.ring_start = from.ring_start;
  to.bound = closed;
  to.snap_valid = false;
  shared_ = true;
}

// ---- truncate ----

void CudaCache::truncate(int seq, int64_t n_tokens) {
  const Config& c = config();
  cu::DeviceGuard guard(c.device);
  Seq& s = seqs_[seq];
  const int64_t N = c.shape.block_tokens;
  const int64_t blocks_end = s.sink_len + s.n_blocks * N;
  if (n_tokens >= blocks_end) {  // the window shrinks (its first tokens stay where they are)
    s.residual_len = static_cast<int>(n_tokens - blocks_end);
    return;
  }
  sync_bounds();
  const size_t row = static_cast<size_t>(c.shape.token_values());
  const int64_t keep_blocks = n_tokens < s.sink_len ? 0 : (n_tokens - s.sink_len) / N;
  const int64_t cut = n_tokens < s.sink_len ? 0 : (n_tokens - s.sink_len) % N;
  // 1. may throw, nothing changed yet: the cut block's first tokens, the blocks' sizes
  std::vector<uint8_t> rk, rv;
  if (cut > 0) {
    const int64_t t_end = s.sink_len + (keep_blocks + 1) * N;  // decompress up to the cut block
    float* dk = nullptr;
    float* dv = nullptr;
    check(cudaMalloc(&dk, static_cast<size_t>(t_end) * row * 4), "cudaMalloc(truncate)");
    std::vector<float> fk(static_cast<size_t>(cut) * row), fv(fk.size());
    try {
      check(cudaMalloc(&dv, static_cast<size_t>(t_end) * row * 4), "cudaMalloc(truncate)");
      cu::AttnSeq a = attn_seq(seq);
      a.n_blocks = static_cast<int>(keep_blocks + 1);
      a.residual_len = 0;
      cu::launch_decompress(kc_, dp_, a, dk, dv, nullptr);
      check(cudaDeviceSynchronize(), "truncate: decompress");
      const size_t at = static_cast<size_t>(s.sink_len + keep_blocks * N) * row;
      d2h(fk.data(), dk + at, fk.size() * 4, "cudaMemcpy(truncate)");
      d2h(fv.data(), dv + at, fv.size() * 4, "cudaMemcpy(truncate)");
    } catch (...) {
      cudaFree(dk);
      cudaFree(dv);
      throw;
    }
    cudaFree(dk);
    cudaFree(dv);
    rk.resize(fk.size() * kv_elem_);
    rv.resize(fv.size() * kv_elem_);
    from_float_clamped(fk.data(), fk.size(), c.kv_dtype, rk.data());  // as the CPU (cpu/seq_ops.cpp)
    from_float_clamped(fv.data(), fv.size(), c.kv_dtype, rv.data());
  }
  const std::vector<unsigned long long> addrs = block_addrs(seq);
  fmt::BlobSizes st;
  d2h(&st, dp_.seq_stats + seq, sizeof st, "cudaMemcpy(stats)");
  for (int64_t b = keep_blocks; b < s.n_blocks; ++b) {
    const fmt::BlobSizes z = blob_sizes_at(addrs[static_cast<size_t>(b)]);
    st.k_tiles -= z.k_tiles;
    st.v_tiles -= z.v_tiles;
    st.k_scale -= z.k_scale;
    st.v_scale -= z.v_scale;
    st.header -= z.header;
    st.perm -= z.perm;
  }
  // the page of the last kept blob, and where the next one may go
  int keep_pages = 0;
  cu::PlaceState place{-1, 0};
  if (keep_blocks > 0) {
    const unsigned long long last = addrs[static_cast<size_t>(keep_blocks - 1)];
    const size_t P = pool_->page_bytes();
    int j = static_cast<int>(s.pages.size()) - 1;
    while (j >= 0 && !(last >= reinterpret_cast<unsigned long long>(s.pages[j]->data) &&
                       last < reinterpret_cast<unsigned long long>(s.pages[j]->data) + P))
      --j;
    if (j < 0) fail(PACKKV_ERR_CUDA, "packkv_x_cache_truncate: a block is in none of the sequence's pages");
    keep_pages = j + 1;
    const bool mine = s.pages[j]->refs.load(std::memory_order_acquire) == 1;
    const size_t end = (last - reinterpret_cast<unsigned long long>(s.pages[j]->data)) +
                       static_cast<size_t>(blob_sizes_at(last).total());
    place = cu::PlaceState{j, mine ? static_cast<unsigned>(end) : dp_.page_cap};
  }
  // 2. the device state (plain copies), then the host state (no throw)
  if (cut > 0) {
    h2d(s.ring_k, rk.data(), rk.size(), "cudaMemcpy(residual ring)");
    h2d(s.ring_v, rv.data(), rv.size(), "cudaMemcpy(residual ring)");
  }
  h2d(dp_.seq_stats + seq, &st, sizeof st, "cudaMemcpy(stats)");
  write_place(seq, place);
  finish_copies("packkv_x_cache_truncate");
  while (static_cast<int>(s.pages.size()) > keep_pages) {
    pool_->release(s.pages.back());
    s.pages.pop_back();
  }
  s.n_blocks = keep_blocks;
  s.bound = place;
  s.snap_valid = false;
  if (n_tokens < s.sink_len) {
    s.sink_len = static_cast<int>(n_tokens);
    s.residual_len = 0;
  } else {
    s.residual_len = static_cast<int>(cut);
  }
  s.ring_start = 0;
}

// ---- export / import ----

size_t CudaCache::export_size(int seq) const {
  cu::DeviceGuard guard(config().device);
  check(cudaEventSynchronize(done_ev_), "cudaEventSynchronize");
  const Seq& s = seqs_[seq];
  size_t n = fmt::kSeqHeaderBytes;
  for (unsigned long long a : block_addrs(seq)) n += fmt::seq_block_record(static_cast<size_t>(blob_sizes_at(a).total()));
  const size_t token = static_cast<size_t>(config().shape.token_values()) * kv_elem_;
  n += 2 * static_cast<size_t>(s.residual_len + s.sink_len) * token;
  if (kc_.k_center && s.n_blocks > 0) n += static_cast<size_t>(config().shape.token_values()) * 4;
  return n;
}

void CudaCache::export_seq(int seq, uint8_t* out, size_t size) const {
  const Config& c = config();
  cu::DeviceGuard guard(c.device);
  check(cudaEventSynchronize(done_ev_), "cudaEventSynchronize");
  const Seq& s = seqs_[seq];
  const size_t row = static_cast<size_t>(c.shape.token_values()), token = row * kv_elem_;
  // read everything first (the caller's buffer is written only once all of it is here)
  const std::vector<unsigned long long> addrs = block_addrs(seq);
  std::vector<std::vector<uint8_t>> blobs(addrs.size());
  for (size_t b = 0; b < addrs.size(); ++b) {
    blobs[b].resize(static_cast<size_t>(blob_sizes_at(addrs[b]).total()));
    d2h(blobs[b].data(), reinterpret_cast<const void*>(addrs[b]), blobs[b].size(), "cudaMemcpy(blob)");
  }
  std::vector<uint8_t> ring_k(s.ring_k ? ring_bytes() : 0), ring_v(ring_k.size());
  if (s.ring_k) {
    d2h(ring_k.data(), s.ring_k, ring_k.size(), "cudaMemcpy(residual ring)");
    d2h(ring_v.data(), s.ring_v, ring_v.size(), "cudaMemcpy(residual ring)");
  }
  std::vector<float> mean(kc_.k_center && s.n_blocks > 0 ? row : 0);
  d2h(mean.data(), dp_.k_mean + static_cast<size_t>(seq) * row, mean.size() * 4, "cudaMemcpy(K mean)");
  SeqCounts n;
  n.n_tokens = seq_length(seq);
  n.n_blocks = s.n_blocks;
  n.residual_len = s.residual_len;
  n.sink_len = s.sink_len;
  write_seq_header(c, n, out, size);
  uint8_t* p = out + fmt::kSeqHeaderBytes;
  for (const std::vector<uint8_t>& b : blobs) p = write_block_record(p, b.data(), static_cast<uint32_t>(b.size()));
  for (const std::vector<uint8_t>* ring : {&ring_k, &ring_v}) {  // residual tokens in order (ring slots)
    for (int i = 0; i < s.residual_len; ++i) {
      std::memcpy(p, ring->data() + static_cast<size_t>((s.ring_start + i) % kc_.ring_tokens) * token, token);
      p += token;
    }
  }
  for (const std::vector<uint8_t>* ring : {&ring_k, &ring_v}) {  // sink rows follow the ring's slots
    if (s.sink_len > 0) std::memcpy(p, ring->data() + static_cast<size_t>(kc_.ring_tokens) * token, s.sink_len * token);
    p += static_cast<size_t>(s.sink_len) * token;
  }
  write_k_mean(p, mean.data(), mean.size());
  seal_seq_export(out, size);
}

void CudaCache::import_seq(int seq, const uint8_t* in, size_t size) {
  const Config& c = config();
  cu::DeviceGuard guard(c.device);
  SeqImage img = read_seq_export(c, in, size);
  if (img.counts.first_block > 0 || img.counts.window_start > 0)
    fail(PACKKV_ERR_NOT_SUPPORTED, "the export has tokens out of a sliding window (window_start " +
                                       std::to_string(img.counts.window_start) +
                                       "); CUDA caches have no sliding window; nothing was imported");
  if (img.counts.residual_len > kc_.ring_tokens - 1)
    fail(PACKKV_ERR_INVALID_ARGUMENT, "the export's residual window holds " + std::to_string(img.counts.residual_len) +
                                          " tokens, more than this cache's residual_tokens + block_tokens - 1 = " +
                                          std::to_string(kc_.ring_tokens - 1) + "; nothing was imported");
  check(cudaEventSynchronize(done_ev_), "cudaEventSynchronize");
  Seq& s = seqs_[seq];
  // placement, as the device would place these blobs into fresh pages
  std::vector<int> page_of(img.sizes.size());
  std::vector<size_t> at(img.sizes.size()), off(img.sizes.size());
  cu::PlaceState place{-1, 0};
  fmt::BlobSizes st{0, 0, 0, 0, 0, 0};
  int64_t bytes = 0;
  for (size_t b = 0, o = 0; b < img.sizes.size(); ++b) {
    at[b] = cu::place_next(&place, img.sizes[b], dp_.page_cap);
    page_of[b] = place.page;
    off[b] = o;
    const fmt::BlobSizes z = c.shape.sizes(img.blobs.data() + o);
    st.k_tiles += z.k_tiles;
    st.v_tiles += z.v_tiles;
    st.k_scale += z.k_scale;
    st.v_scale += z.v_scale;
    st.header += z.header;
    st.perm += z.perm;
    bytes += static_cast<int64_t>(img.sizes[b]);
    o = align16(o + img.sizes[b]);
  }
  std::vector<Page*> pages;
  pool_->acquire(static_cast<size_t>(place.page + 1), &pages);  // BUDGET_EXCEEDED: nothing changed
  try {
    ensure_ring(seq);
    const size_t row = static_cast<size_t>(c.shape.token_values()), token = row * kv_elem_;
    std::vector<unsigned long long> table(img.sizes.size()), list(pages.size());
    std::vector<uint8_t> blob;
    for (size_t b = 0; b < img.sizes.size(); ++b) {
      table[b] = reinterpret_cast<unsigned long long>(pages[static_cast<size_t>(page_of[b])]->data) + at[b];
      blob.assign(img.blobs.begin() + static_cast<std::ptrdiff_t>(off[b]),
                  img.blobs.begin() + static_cast<std::ptrdiff_t>(off[b] + img.sizes[b]));
      blob.resize(align16(blob.size()), 0);  // the zero tail the flush writes too
      h2d(reinterpret_cast<void*>(table[b]), blob.data(), blob.size(), "cudaMemcpy(blob)");
    }
    for (size_t j = 0; j < pages.size(); ++j) list[j] = reinterpret_cast<unsigned long long>(pages[j]->data);
    h2d(dp_.block_table + static_cast<size_t>(seq) * kc_.max_blocks, table.data(), table.size() * 8,
        "cudaMemcpy(block table)");
    h2d(dp_.pages + static_cast<size_t>(seq) * dp_.max_pages, list.data(), list.size() * 8, "cudaMemcpy(page list)");
    h2d(dp_.seq_stats + seq, &st, sizeof st, "cudaMemcpy(stats)");
    h2d(s.ring_k, img.res_k.data(), img.res_k.size(), "cudaMemcpy(residual ring)");
    h2d(s.ring_v, img.res_v.data(), img.res_v.size(), "cudaMemcpy(residual ring)");
    h2d(static_cast<uint8_t*>(s.ring_k) + static_cast<size_t>(kc_.ring_tokens) * token, img.sink_k.data(),
        img.sink_k.size(), "cudaMemcpy(sink tokens)");
    h2d(static_cast<uint8_t*>(s.ring_v) + static_cast<size_t>(kc_.ring_tokens) * token, img.sink_v.data(),
        img.sink_v.size(), "cudaMemcpy(sink tokens)");
    if (!img.k_mean.empty())
      h2d(dp_.k_mean + static_cast<size_t>(seq) * row, img.k_mean.data(), row * 4, "cudaMemcpy(K mean)");
    write_place(seq, place);
    finish_copies("packkv_x_cache_import");
  } catch (...) {
    for (Page* pg : pages) pool_->release(pg);
    throw;
  }
  // commit (no throw)
  for (Page* pg : s.pages) pool_->release(pg);  // (an empty sequence holds none)
  s.pages.swap(pages);
  s.n_blocks = img.counts.n_blocks;
  s.sink_len = static_cast<int>(img.counts.sink_len);
  s.residual_len = static_cast<int>(img.counts.residual_len);
  s.ring_start = 0;
  s.bound = place;
  s.snap_valid = false;
  pool_->note_compressed(this, bytes, img.counts.n_blocks * c.shape.block_tokens);
}

}  // namespace packkv
