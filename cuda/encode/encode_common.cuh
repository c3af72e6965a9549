// Definitions shared by the GPU encoder's kernels (encode/): the per-block scratch
// layout of a flush, the lookup of a flushed block's descriptor and source rows, the
// non-finite report, and the launchers of the three flush stages (flush.cu runs them in
// order). Host (layout sizes) and device.
#ifndef PACKKV_CUDA_ENCODE_ENCODE_COMMON_CUH
#define PACKKV_CUDA_ENCODE_ENCODE_COMMON_CUH

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "common/rules.h"
#include "device_util.cuh"
#include "kernels.h"

namespace packkv {
namespace cu {

constexpr int kThreads = 256;  // threads per CTA of the stats, tiles and residual kernels

// Byte layout of the per-block scratch area. kz..vs: the wide affines (fmt::group_affine)
// per [group][token]; kzc..vsc: the compact ones (fmt::group_affine_compact; only for a
// ZsFormat::kCompact cache); no_compact[token]: 1 when a group of the token has none,
// which makes the block a wide fallback block (format/shape.h).
struct ScratchLayout {
  size_t kz, ks, vz, vs, kzc, ksc, vzc, vsc, no_compact, med, perm, sizes, tiles, tile_stride, total;
};
__host__ __device__ inline ScratchLayout scratch_layout(const KernelConfig& c) {
  ScratchLayout l;
  const size_t gn = static_cast<size_t>(c.shape.scale_groups) * c.shape.block_tokens * 4;
  size_t at = 0;
  l.kz = at; at += gn;
  l.ks = at; at += gn;
  l.vz = at; at += gn;
  l.vs = at; at += gn;
  const size_t gnc = c.shape.zs == fmt::ZsFormat::kCompact ? gn : 0;
  l.kzc = at; at += gnc;
  l.ksc = at; at += gnc;
  l.vzc = at; at += gnc;
  l.vsc = at; at += gnc;
  l.no_compact = at; at = align16(at + c.shape.block_tokens);
  l.med = at; at += static_cast<size_t>(c.shape.block_tokens) * 4;
  l.perm = at; at = align16(at + c.shape.block_tokens);
  l.sizes = at; at = align16(at + static_cast<size_t>(2 * c.shape.n_kv_heads) * 4);
  l.tiles = at;
  l.tile_stride = align16(c.max_tile + 16);
  at += l.tile_stride * 2 * c.shape.n_kv_heads;
  l.total = align16(at);
  return l;
}

// Whether flushed block `sc` (its scratch) is stored with wide zero points and scales:
// always for a kWide cache; for a kCompact one when a token of it has no compact fields.
// Every thread of the CTA calls it (it reads N flags; a block barrier inside).
__device__ inline bool block_zs_wide(const KernelConfig& c, const ScratchLayout& L, const uint8_t* sc) {
  if (c.shape.zs == fmt::ZsFormat::kWide) return true;
  int any = 0;
  for (int t = threadIdx.x; t < c.shape.block_tokens; t += blockDim.x) any |= sc[L.no_compact + t];
  return __syncthreads_or(any) != 0;
}

// Finds the descriptor that owns flattened block fb (descriptors are sorted by
// block_start). Returns its index.
__device__ inline int find_desc(const FlushBatch& b, int fb) {
  int lo = 0, hi = b.n - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) >> 1;
    if (b.s[mid].block_start <= fb) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// Source row (H*D values) of token t of block b of descriptor s, and its dtype.
struct RowRef {
  const void* k;
  const void* v;
  size_t off;       // element offset of the row
  int dtype;
  bool from_input;  // true: needs conversion to kv_dtype and the finite check
  int64_t pos;      // absolute token position in the sequence
};
__device__ inline RowRef source_row(const KernelConfig& c, const CacheDevicePtrs& d, const FlushSeq& s,
                                    int b, int t, const void* k_new, const void* v_new, int in_dtype) {
  RowRef r;
  const int64_t idx = s.win_base + static_cast<int64_t>(b) * c.shape.block_tokens + t;
  const size_t row_elems = static_cast<size_t>(c.shape.n_kv_heads) * c.shape.head_dim;
  r.pos = s.pos_base + idx;
  if (idx < s.residual_len) {
    const int slot = static_cast<int>((s.ring_start + idx) % c.ring_tokens);
    r.k = reinterpret_cast<const void*>(d.ring_table[2 * s.seq]);
    r.v = reinterpret_cast<const void*>(d.ring_table[2 * s.seq + 1]);
    r.off = static_cast<size_t>(slot) * row_elems;
    r.dtype = c.kv_dtype;
    r.from_input = false;
  } else {
    r.k = k_new;
    r.v = v_new;
    r.off = static_cast<size_t>(s.in_row + (idx - s.residual_len)) * row_elems;
    r.dtype = in_dtype;
    r.from_input = true;
  }
  return r;
}

__device__ inline float row_value(const RowRef& r, const void* base, size_t i, int kv_dtype) {
  float x = load_elem(base, r.off + i, r.dtype);
  return r.from_input ? round_to(x, kv_dtype) : x;
}

// K centring: the mean of sequence `seq` ([H * D], CacheDevicePtrs::k_mean), or null when
// the cache does not centre K.
__device__ inline const float* seq_k_mean(const KernelConfig& c, const CacheDevicePtrs& d, int seq) {
  return c.k_center ? d.k_mean + static_cast<size_t>(seq) * c.shape.n_kv_heads * c.shape.head_dim : nullptr;
}

// Reports a non-finite value (or kv_dtype overflow) in token pos of sequence seq; sync()
// names the smallest reported (sequence, position).
__device__ inline void report_nonfinite(unsigned long long* err_key, int seq, int64_t pos) {
  atomicMin(err_key, error_key(seq, pos));
}

// The stages of a flush (flush.cu launch_flush runs them in this order on one stream):
// the K mean of sequences whose block 0 is in the batch (K centring only), statistics,
// tiles, place, commit. Each throws Error(PACKKV_ERR_CUDA) if its launch fails.
void launch_flush_k_mean(const KernelConfig& c, const FlushBatch& b, const CacheDevicePtrs& d, const void* k_new,
                         int in_dtype, cudaStream_t stream);
void launch_flush_stats(const KernelConfig& c, const FlushBatch& b, const CacheDevicePtrs& d, const void* k_new,
                        const void* v_new, int in_dtype, uint8_t* scratch, cudaStream_t stream);
void launch_flush_tiles(const KernelConfig& c, const FlushBatch& b, const CacheDevicePtrs& d, const void* k_new,
                        const void* v_new, int in_dtype, uint8_t* scratch, cudaStream_t stream);
void launch_flush_place(const KernelConfig& c, const FlushBatch& b, const CacheDevicePtrs& d, const uint8_t* scratch,
                        cudaStream_t stream);
void launch_flush_commit(const KernelConfig& c, const FlushBatch& b, const CacheDevicePtrs& d, uint8_t* scratch,
                         cudaStream_t stream);

}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_ENCODE_ENCODE_COMMON_CUH
