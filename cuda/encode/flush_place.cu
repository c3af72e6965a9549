// Flush stage 3 (encode_common.cuh): placement of the new blobs in their sequences' pages,
// and the page-list writes of the host (launch_set_pages).
#include <cuda_runtime.h>

#include "cuda_check.h"
#include "encode/encode_common.cuh"
#include "format/shape.h"

namespace packkv {
namespace cu {
namespace {

// Device. Grid b.n, one warp per descriptor (a sequence appears in at most one
// descriptor of a batch). For each block of the descriptor in block order: its blob
// size (header and tiles, and for a compact cache's wide fallback block the padding to 4
// and the wide fields after the tiles, as flush_commit_kernel writes it), its place in
// the sequence's pages (place_next from the sequence's state), and its address in the
// block table. Updates the state and the committed-bytes counter.
__global__ void flush_place_kernel(KernelConfig c, FlushBatch b, CacheDevicePtrs d, const uint8_t* scratch) {
  const FlushSeq& s = b.s[blockIdx.x];
  const int lane = threadIdx.x;
  const ScratchLayout SL = scratch_layout(c);
  const int H = c.shape.n_kv_heads, N = c.shape.block_tokens, G = c.shape.scale_groups;
  const fmt::BlockLayout& BL = c.shape.layout;
  const bool compact = c.shape.zs == fmt::ZsFormat::kCompact;
  const size_t meta = static_cast<size_t>(G) * N * 4;
  PlaceState st = d.place[s.seq];
  unsigned long long placed = 0;
  const unsigned long long* pages = d.pages + static_cast<size_t>(s.seq) * d.max_pages;
  for (int blk = 0; blk < s.n_flush; ++blk) {
    const uint8_t* sc = scratch + static_cast<size_t>(s.block_start + blk) * SL.total;
    const uint32_t* sizes = reinterpret_cast<const uint32_t*>(sc + SL.sizes);
    unsigned long long run = 0;
    for (int t = lane; t < 2 * H; t += 32) run += sizes[t];
    int any = 0;
    if (compact)
      for (int t = lane; t < N; t += 32) any |= sc[SL.no_compact + t];
    for (int o = 16; o > 0; o >>= 1) run += __shfl_xor_sync(0xffffffffu, run, o);
    const bool wide = compact && __any_sync(0xffffffffu, any);
    const size_t total = wide ? ((BL.tiles_at + run + 3) & ~static_cast<size_t>(3)) + 4 * meta : BL.tiles_at + run;
    if (lane == 0) {
      const size_t at = place_next(&st, total, d.page_cap);
      d.block_table[static_cast<size_t>(s.seq) * c.max_blocks + s.first_block + blk] = pages[st.page] + at;
      placed += align16(total);
    }
  }
  if (lane == 0) {
    d.place[s.seq] = st;
    atomicAdd(d.committed, placed);
  }
}

// Device, one thread per entry.
__global__ void set_pages_kernel(CacheDevicePtrs d, PageEntries e) {
  const int i = threadIdx.x;
  if (i < e.n) d.pages[static_cast<size_t>(e.seq[i]) * d.max_pages + e.index[i]] = e.addr[i];
}

}  // namespace

void launch_flush_place(const KernelConfig& c, const FlushBatch& b, const CacheDevicePtrs& d, const uint8_t* scratch,
                        cudaStream_t stream) {
  flush_place_kernel<<<b.n, 32, 0, stream>>>(c, b, d, scratch);
  check_launch("flush_place_kernel");
}

void launch_set_pages(const CacheDevicePtrs& d, const PageEntries& e, cudaStream_t stream) {
  if (e.n == 0) return;
  set_pages_kernel<<<1, kMaxPageEntries, 0, stream>>>(d, e);
  check_launch("set_pages_kernel");
}

}  // namespace cu
}  // namespace packkv
