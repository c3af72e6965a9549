// GPU encoder: append-time flush of residual-window blocks into compressed blobs that
// are byte-identical to the CPU encoder (block_codec.cpp encode_block), and the
// residual-window update. PACKKV.md sections 2.3 (flush), 3 (quantization), 4.2
// (median repacking), 5 (bit-packing, generalized by tile_format.h).
//
// A flush batch runs three kernels on the caller's stream, no host synchronization:
//   1. flush_stats_kernel   (N/8 x blocks CTAs, warp per token): per-token min/max per
//      scale group, affine (z, s), non-finite check, and the lower median of the
//      token's V codes (median repacking).
//   2. flush_tiles_kernel   (2H x blocks CTAs): stable descending sort of the medians
//      (the permutation), quantization of one tile into shared memory, encode
//      lengths, offsets (block scan) and the tile bytes, staged in scratch.
//   3. flush_commit_kernel  (blocks CTAs): allocates the blob from the sequence's pool
//      chunk (device atomic; the host guarantees capacity), writes header, perm,
//      zero points and scales, copies the tiles, records the blob in the block table.
#include <cuda_runtime.h>

#include "cuda_check.h"
#include "device_util.cuh"
#include "kernels.h"
#include "format/shape.h"

namespace packkv {
namespace cu {
namespace {

constexpr int kThreads = 256;

__host__ __device__ inline size_t align16(size_t x) { return (x + 15) & ~static_cast<size_t>(15); }

// Byte layout of the per-block scratch area.
struct ScratchLayout {
  size_t kz, ks, vz, vs, med, perm, sizes, tiles, tile_stride, total;
};
__host__ __device__ inline ScratchLayout scratch_layout(const KernelConfig& c) {
  ScratchLayout l;
  const size_t gn = static_cast<size_t>(c.groups) * c.block_tokens * 4;
  size_t at = 0;
  l.kz = at; at += gn;
  l.ks = at; at += gn;
  l.vz = at; at += gn;
  l.vs = at; at += gn;
  l.med = at; at += static_cast<size_t>(c.block_tokens) * 4;
  l.perm = at; at = align16(at + c.block_tokens);
  l.sizes = at; at = align16(at + static_cast<size_t>(2 * c.n_kv_heads) * 4);
  l.tiles = at;
  l.tile_stride = align16(c.max_tile + 16);
  at += l.tile_stride * 2 * c.n_kv_heads;
  l.total = align16(at);
  return l;
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
  const int64_t idx = s.win_base + static_cast<int64_t>(b) * c.block_tokens + t;
  const size_t row_elems = static_cast<size_t>(c.n_kv_heads) * c.head_dim;
  r.pos = s.pos_base + idx;
  if (idx < s.res_len) {
    const int slot = static_cast<int>((s.ring_start + idx) % c.ring_tokens);
    r.k = reinterpret_cast<const void*>(d.ring_table[2 * s.seq]);
    r.v = reinterpret_cast<const void*>(d.ring_table[2 * s.seq + 1]);
    r.off = static_cast<size_t>(slot) * row_elems;
    r.dtype = c.kv_dtype;
    r.from_input = false;
  } else {
    r.k = k_new;
    r.v = v_new;
    r.off = static_cast<size_t>(s.in_row + (idx - s.res_len)) * row_elems;
    r.dtype = in_dtype;
    r.from_input = true;
  }
  return r;
}

__device__ inline float row_value(const RowRef& r, const void* base, size_t i, int kv_dtype) {
  float x = load_elem(base, r.off + i, r.dtype);
  return r.from_input ? round_to(x, kv_dtype) : x;
}

__device__ inline void report_nonfinite(unsigned long long* err_key, int seq, int64_t pos) {
  unsigned long long key = (static_cast<unsigned long long>(seq) << 40) |
                           static_cast<unsigned long long>(pos);
  atomicMin(err_key, key);
}

// ---- 1. per-token statistics (one CTA per token: every thread loads a few values, so
// a decode-time flush is a couple of memory round trips, not a per-lane loop) ----
__device__ inline void block_minmax(float& mn, float& mx, float* red /*[2][32]*/) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    mn = fminf(mn, __shfl_xor_sync(0xffffffffu, mn, o));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  }
  if (lane == 0) { red[warp] = mn; red[32 + warp] = mx; }
  __syncthreads();
  mn = red[0];
  mx = red[32];
  for (int w = 1; w < nw; ++w) { mn = fminf(mn, red[w]); mx = fmaxf(mx, red[32 + w]); }
  __syncthreads();
}

// Device. Grid (N, total_blocks), 256 threads. For token t of flushed block fb: min/max of
// K and V per scale group (values rounded to kv_dtype), affine (z, s) via
// fmt::group_affine (PACKKV.md 3.1), the lower median of its V codes over all heads and
// dims (median repacking, PACKKV.md 4.2, same definition as src/repack.cpp), and the
// non-finite check of input tokens (reported through err_key). Writes scratch only.
__global__ void __launch_bounds__(kThreads) flush_stats_kernel(
    KernelConfig c, FlushBatch b, CacheDevicePtrs d, const void* k_new, const void* v_new,
    int in_dtype, uint8_t* scratch) {
  __shared__ uint32_t hist[256];
  __shared__ float red[64];
  __shared__ int bad_s;
  const int fb = blockIdx.y;
  const FlushSeq& s = b.s[find_desc(b, fb)];
  const int blk = fb - s.block_start;
  const int t = blockIdx.x;
  const ScratchLayout L = scratch_layout(c);
  uint8_t* sc = scratch + static_cast<size_t>(fb) * L.total;
  const RowRef r = source_row(c, d, s, blk, t, k_new, v_new, in_dtype);
  const int hd = c.n_kv_heads * c.head_dim;
  const int gsize = hd / c.groups;
  if (threadIdx.x == 0) bad_s = 0;
  for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
  __syncthreads();
  bool bad = false;
  for (int g = 0; g < c.groups; ++g) {
    float kmn = INFINITY, kmx = -INFINITY, vmn = INFINITY, vmx = -INFINITY;
#pragma unroll 4
    for (int i = g * gsize + threadIdx.x; i < (g + 1) * gsize; i += blockDim.x) {
      const float kx = row_value(r, r.k, i, c.kv_dtype);
      const float vx = row_value(r, r.v, i, c.kv_dtype);
      bad |= !isfinite(kx) || !isfinite(vx);
      kmn = fminf(kmn, kx); kmx = fmaxf(kmx, kx);
      vmn = fminf(vmn, vx); vmx = fmaxf(vmx, vx);
    }
    block_minmax(kmn, kmx, red);
    block_minmax(vmn, vmx, red);
    // fminf/fmaxf may pick either signed zero of an all-zero group: group_affine stores +0.0
    // for such groups, so the bytes match the CPU encoder's whatever the reduction picked.
    const fmt::Affine ka = fmt::group_affine(kmn, kmx, c.rel_k);
    const fmt::Affine va = fmt::group_affine(vmn, vmx, c.rel_v);
    if (threadIdx.x == 0) {
      const int at = g * c.block_tokens + t;
      reinterpret_cast<int32_t*>(sc + L.kz)[at] = ka.zero;
      reinterpret_cast<float*>(sc + L.ks)[at] = ka.scale;
      reinterpret_cast<int32_t*>(sc + L.vz)[at] = va.zero;
      reinterpret_cast<float*>(sc + L.vs)[at] = va.scale;
    }
    if (c.median) {  // histogram of the token's V codes (all groups)
      const uint32_t qmax = (1u << c.bits_v) - 1u;
      // Warp-aggregated: one shared atomic per distinct code per warp (V codes take few
      // values, so plain per-lane atomics serialize on a handful of addresses).
      const int i_end = (g + 1) * gsize;
      for (int i0 = g * gsize; i0 < i_end; i0 += blockDim.x) {
        const int i = i0 + static_cast<int>(threadIdx.x);
        const unsigned active = __ballot_sync(0xffffffffu, i < i_end);
        if (i < i_end) {
          const uint32_t q = fmt::quantize(row_value(r, r.v, i, c.kv_dtype), va, qmax);
          const unsigned same = __match_any_sync(active, q);
          if ((threadIdx.x & 31) == static_cast<unsigned>(__ffs(same) - 1)) atomicAdd(&hist[q], __popc(same));
        }
      }
    }
  }
  if (bad) atomicOr(&bad_s, 1);
  __syncthreads();
  if (threadIdx.x == 0) {
    if (bad_s && r.from_input) report_nonfinite(d.err_key, s.seq, r.pos);
    if (c.median) {
      // Lower median of the token's V codes over all heads and dims: sorted[(n-1)/2].
      const uint32_t k = static_cast<uint32_t>(hd - 1) / 2;
      uint32_t cum = 0, med = 0;
      for (int v = 0; v < (1 << c.bits_v); ++v) {
        cum += hist[v];
        if (cum > k) { med = static_cast<uint32_t>(v); break; }
      }
      reinterpret_cast<uint32_t*>(sc + L.med)[t] = med;
    }
  }
}

// Block-wide exclusive scan of vals[0..n) in place (shared memory), returns the total.
// All threads of the block must call it.
__device__ uint32_t block_exclusive_scan(uint32_t* vals, int n, uint32_t* tmp /*[32]*/) {
  const int per = (n + blockDim.x - 1) / blockDim.x;
  const int begin = threadIdx.x * per;
  const int end = min(n, begin + per);
  uint32_t sum = 0;
  for (int i = begin; i < end; ++i) sum += vals[i];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  uint32_t incl = warp_incl_scan(sum);
  if (lane == 31) tmp[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    const int nw = blockDim.x >> 5;
    uint32_t w = lane < nw ? tmp[lane] : 0;
    uint32_t wi = warp_incl_scan(w);
    if (lane < nw) tmp[lane] = wi - w;
    if (lane == nw - 1) tmp[31] = wi;
  }
  __syncthreads();
  uint32_t run = tmp[warp] + incl - sum;
  for (int i = begin; i < end; ++i) {
    uint32_t v = vals[i];
    vals[i] = run;
    run += v;
  }
  uint32_t total = tmp[31];
  __syncthreads();
  return total;
}

// Stable descending order of the medians: perm[rank] = token (ties keep token order).
__device__ void compute_perm(const KernelConfig& c, const uint32_t* med, int* perm) {
  const int n = c.block_tokens;
  for (int t = threadIdx.x; t < n; t += blockDim.x) {
    if (!c.has_perm) { perm[t] = t; continue; }
    const uint32_t m = med[t];
    int rank = 0;
    for (int j = 0; j < n; ++j) {
      const uint32_t mj = med[j];
      rank += (mj > m) || (mj == m && j < t);
    }
    perm[rank] = t;
  }
}

// ---- 2. one tile per CTA ----
// Device. Grid (2H, total_blocks), 256 threads, dynamic smem flush_smem_bytes(). Tile
// blockIdx.x (K heads, then V heads) of block fb: stable descending median order (perm),
// codes (fmt::quantize), pack minimums and encode lengths, offsets (block scan), and the
// tile bytes (tile_format.h layout) staged in scratch with its size. PACKKV.md 4.2, 5.
__global__ void __launch_bounds__(kThreads) flush_tiles_kernel(
    KernelConfig c, FlushBatch b, CacheDevicePtrs d, const void* k_new, const void* v_new, int in_dtype,
    uint8_t* scratch) {
  extern __shared__ __align__(16) uint8_t smem[];
  const int N = c.block_tokens, D = c.head_dim, H = c.n_kv_heads;
  const int P = (N / 16) * D;  // packs per tile
  int* perm = reinterpret_cast<int*>(smem);                       // [N]
  uint32_t* pre = reinterpret_cast<uint32_t*>(smem + 4 * N);      // [P]
  uint32_t* tmp = pre + P;                                        // [32]
  uint8_t* Lp = reinterpret_cast<uint8_t*>(tmp + 32);             // [P]
  uint8_t* mnp = Lp + P;                                          // [P]
  uint8_t* codes = mnp + P;                                       // [N][D]

  const int tile = blockIdx.x;
  const int fb = blockIdx.y;
  const FlushSeq& s = b.s[find_desc(b, fb)];
  const int blk = fb - s.block_start;
  const ScratchLayout SL = scratch_layout(c);
  uint8_t* sc = scratch + static_cast<size_t>(fb) * SL.total;
  const bool is_v = tile >= H;
  const int h = is_v ? tile - H : tile;
  const int bits = is_v ? c.bits_v : c.bits_k;
  const int e = fmt::len_bits(bits);
  const uint32_t qmax = (1u << bits) - 1u;
  const int grp = c.groups == 1 ? 0 : h;
  const int32_t* zs = reinterpret_cast<const int32_t*>(sc + (is_v ? SL.vz : SL.kz)) + grp * N;
  const float* ss = reinterpret_cast<const float*>(sc + (is_v ? SL.vs : SL.ks)) + grp * N;

  compute_perm(c, reinterpret_cast<const uint32_t*>(sc + SL.med), perm);
  __syncthreads();
  if (tile == 0)
    for (int j = threadIdx.x; j < N; j += blockDim.x) sc[SL.perm + j] = static_cast<uint8_t>(perm[j]);

  // Per stored slot: the element pointer of this head's row and the token's affine
  // (computed once per slot, not per value).
  __shared__ const void* row_ptr[fmt::kMaxBlockTokens];
  __shared__ int row_dtype[fmt::kMaxBlockTokens];
  __shared__ float row_scale[fmt::kMaxBlockTokens];
  __shared__ int32_t row_zero[fmt::kMaxBlockTokens];
  for (int j = threadIdx.x; j < N; j += blockDim.x) {
    const int t = perm[j];
    const RowRef r = source_row(c, d, s, blk, t, k_new, v_new, in_dtype);
    const size_t esz = r.dtype == PACKKV_DTYPE_F32 ? 4 : 2;
    row_ptr[j] = static_cast<const uint8_t*>(is_v ? r.v : r.k) + (r.off + static_cast<size_t>(h) * D) * esz;
    row_dtype[j] = r.from_input ? r.dtype : -1 - r.dtype;  // negative: already kv_dtype
    row_scale[j] = ss[t];
    row_zero[j] = zs[t];
  }
  __syncthreads();
  // Quantize the tile into shared memory, stored token order. Threads walk (slot,
  // channel) with a 2-D stride so that no index division is needed per value.
  {
    const int rows_per_pass = blockDim.x / D > 0 ? blockDim.x / D : 1;
    const int ch0 = threadIdx.x % D, j0 = threadIdx.x / D;
    if (j0 < rows_per_pass) {
      constexpr int U = 8;  // rows in flight per thread
      for (int jb = j0; jb < N; jb += U * rows_per_pass) {
        float x[U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const int j = jb + u * rows_per_pass;
          x[u] = 0.f;
          if (j < N) {
            const int dt = row_dtype[j];
            x[u] = dt >= 0 ? round_to(load_elem(row_ptr[j], ch0, dt), c.kv_dtype)
                           : load_elem(row_ptr[j], ch0, -1 - dt);
          }
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const int j = jb + u * rows_per_pass;
          if (j < N) {
            fmt::Affine a;
            a.zero = row_zero[j];
            a.scale = row_scale[j];
            codes[j * D + ch0] = static_cast<uint8_t>(fmt::quantize(x[u], a, qmax));
          }
        }
      }
    }
  }
  __syncthreads();
  // Pack minimums and encode lengths.
  for (int p = threadIdx.x; p < P; p += blockDim.x) {
    const int r = p / D, ch = p - r * D;
    uint32_t mn = 255, mx = 0;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      uint32_t q = codes[(16 * r + i) * D + ch];
      mn = min(mn, q);
      mx = max(mx, q);
    }
    const int L = fmt::encode_length(mx - mn);
    Lp[p] = static_cast<uint8_t>(L);
    mnp[p] = static_cast<uint8_t>(mn);
    pre[p] = 2u * static_cast<uint32_t>(L);
  }
  __syncthreads();
  const uint32_t payload = block_exclusive_scan(pre, P, tmp);
  const int MB = static_cast<int>(fmt::mins_bytes(D, bits));
  const int LB = static_cast<int>(fmt::lens_bytes(D, bits));
  const int rounds = N / 16;
  if (threadIdx.x == 0)
    reinterpret_cast<uint32_t*>(sc + SL.sizes)[tile] =
        static_cast<uint32_t>(rounds * (MB + LB)) + payload;
  uint8_t* out = sc + SL.tiles + SL.tile_stride * tile;
  // MINS and LENS bytes, composed by gathering the fields each byte holds.
  const int meta = MB + LB;
  for (int i = threadIdx.x; i < rounds * meta; i += blockDim.x) {
    const int r = i / meta;
    int k = i - r * meta;
    const uint8_t* src;
    int w;
    if (k < MB) { src = mnp + r * D; w = bits; } else { src = Lp + r * D; w = e; k -= MB; }
    uint32_t byte = 0;
    const int bit0 = 8 * k;
    for (int f = bit0 / w; f * w < bit0 + 8 && f < D; ++f) {
      const int sh = f * w - bit0;
      const uint32_t v = src[f];
      byte |= sh >= 0 ? (v << sh) : (v >> (-sh));
    }
    const size_t at = static_cast<size_t>(r) * meta + (r < rounds ? pre[r * D] : 0) +
                      static_cast<size_t>(i - r * meta);
    out[at] = static_cast<uint8_t>(byte);
  }
  // Payload: the pack of (round r, channel ch) sits after round r's metadata.
  for (int p = threadIdx.x; p < P; p += blockDim.x) {
    const int L = Lp[p];
    if (L == 0) continue;
    const int r = p / D, ch = p - r * D;
    const uint32_t mn = mnp[p];
    uint32_t dv[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) dv[i] = codes[(16 * r + i) * D + ch] - mn;
    fmt::write_pack(out + static_cast<size_t>(r + 1) * meta + pre[p], dv, L);
  }
}

// ---- 3. commit ----
// ---- 3. commit ----
// Device. Grid total_blocks, 1024 threads. Allocates the blob of block fb from its
// sequence's pool chunk (atomicAdd on used[seq]; the host guarantees the worst case fits),
// writes tile_end, perm, zero points and scales (stored token order) and the staged
// tiles, records the address in the block table and adds to the per-sequence stats.
constexpr int kCommitThreads = 1024;  // the blob copy is latency-bound: many loads in flight
__global__ void __launch_bounds__(kCommitThreads) flush_commit_kernel(
    KernelConfig c, FlushBatch b, CacheDevicePtrs d, uint8_t* scratch) {
  __shared__ uint8_t* blob_s;
  __shared__ uint32_t ends[2 * 256];  // tile_end, H <= 256 handled in the first loop
  const int fb = blockIdx.x;
  const FlushSeq& s = b.s[find_desc(b, fb)];
  const int blk = fb - s.block_start;
  const ScratchLayout SL = scratch_layout(c);
  const uint8_t* sc = scratch + static_cast<size_t>(fb) * SL.total;
  const int H = c.n_kv_heads, N = c.block_tokens, G = c.groups;
  const fmt::BlockLayout BL = fmt::block_layout(H, N, G, c.has_perm != 0);
  const uint32_t* sizes = reinterpret_cast<const uint32_t*>(sc + SL.sizes);
  const bool small = 2 * H <= 512;
  if (threadIdx.x == 0) {
    uint32_t run = 0, ktiles = 0;
    for (int t = 0; t < 2 * H; ++t) {
      run += sizes[t];
      if (small) ends[t] = run;
      if (t == H - 1) ktiles = run;
    }
    const size_t total = BL.tiles_at + run;
    const unsigned long long alloc = align16(total);
    const unsigned long long off = atomicAdd(d.used + s.seq, alloc);
    uint8_t* blob = s.chunk + off;
    blob_s = blob;
    d.block_table[static_cast<size_t>(s.seq) * c.max_blocks + s.first_block + blk] =
        reinterpret_cast<unsigned long long>(blob);
    long long* st = d.seq_stats + static_cast<size_t>(s.seq) * 6;
    atomicAdd(reinterpret_cast<unsigned long long*>(st + 0), static_cast<unsigned long long>(ktiles));
    atomicAdd(reinterpret_cast<unsigned long long*>(st + 1), static_cast<unsigned long long>(run - ktiles));
    const unsigned long long meta = static_cast<unsigned long long>(2) * G * N * 4;
    atomicAdd(reinterpret_cast<unsigned long long*>(st + 2), meta);
    atomicAdd(reinterpret_cast<unsigned long long*>(st + 3), meta);
    const unsigned long long perm_b = c.has_perm ? static_cast<unsigned long long>(N) : 0ull;
    atomicAdd(reinterpret_cast<unsigned long long*>(st + 4),
              static_cast<unsigned long long>(BL.k_zero_at) - perm_b);
    atomicAdd(reinterpret_cast<unsigned long long*>(st + 5), perm_b);
  }
  __syncthreads();
  uint8_t* blob = blob_s;
  uint32_t* hdr = reinterpret_cast<uint32_t*>(blob);
  if (small) {
    for (int t = threadIdx.x; t < 2 * H; t += blockDim.x) hdr[t] = ends[t];
  } else if (threadIdx.x == 0) {
    uint32_t run = 0;
    for (int t = 0; t < 2 * H; ++t) { run += sizes[t]; hdr[t] = run; }
  }
  // perm and padding up to the zero points.
  for (size_t i = BL.perm_at + threadIdx.x; i < BL.k_zero_at; i += blockDim.x)
    blob[i] = (c.has_perm && i < BL.perm_at + N) ? sc[SL.perm + (i - BL.perm_at)] : 0;
  // Zero points and scales in stored token order.
  const uint8_t* perm = sc + SL.perm;
  for (int i = threadIdx.x; i < G * N; i += blockDim.x) {
    const int g = i / N, j = i - g * N;
    const int t = c.has_perm ? perm[j] : j;
    const int src = g * N + t;
    reinterpret_cast<int32_t*>(blob + BL.k_zero_at)[i] = reinterpret_cast<const int32_t*>(sc + SL.kz)[src];
    reinterpret_cast<float*>(blob + BL.k_scale_at)[i] = reinterpret_cast<const float*>(sc + SL.ks)[src];
    reinterpret_cast<int32_t*>(blob + BL.v_zero_at)[i] = reinterpret_cast<const int32_t*>(sc + SL.vz)[src];
    reinterpret_cast<float*>(blob + BL.v_scale_at)[i] = reinterpret_cast<const float*>(sc + SL.vs)[src];
  }
  // Tiles: all threads copy 2-byte units (tile sizes and offsets are even); the
  // owning tile of a unit is found by binary search over the tile ends.
  uint32_t total_tiles = 0;
  if (small) {
    total_tiles = ends[2 * H - 1];
    const int nt = 2 * H;
    constexpr int U = 8;  // units in flight per thread
    const uint32_t units = total_tiles / 2;
    for (uint32_t u0 = threadIdx.x; u0 < units; u0 += U * blockDim.x) {
      uint16_t v[U];
      uint32_t at[U];
#pragma unroll
      for (int k = 0; k < U; ++k) {
        const uint32_t u = u0 + k * blockDim.x;
        at[k] = 0xffffffffu;
        v[k] = 0;
        if (u < units) {
          const uint32_t byte = 2 * u;
          int lo = 0, hi = nt - 1;
          while (lo < hi) {
            const int mid = (lo + hi) >> 1;
            if (ends[mid] > byte) hi = mid; else lo = mid + 1;
          }
          const uint32_t begin = lo == 0 ? 0u : ends[lo - 1];
          v[k] = *reinterpret_cast<const uint16_t*>(sc + SL.tiles + SL.tile_stride * lo + (byte - begin));
          at[k] = byte;
        }
      }
#pragma unroll
      for (int k = 0; k < U; ++k)
        if (at[k] != 0xffffffffu) *reinterpret_cast<uint16_t*>(blob + BL.tiles_at + at[k]) = v[k];
    }
  } else {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int nwarps = blockDim.x >> 5;
    for (int t = 0; t < 2 * H; ++t) {
      const uint32_t sz = sizes[t];
      if (t % nwarps == warp) {
        const uint8_t* src = sc + SL.tiles + SL.tile_stride * t;
        uint8_t* dst = blob + BL.tiles_at + total_tiles;
        for (uint32_t i = lane; i < sz; i += 32) dst[i] = src[i];
      }
      total_tiles += sz;
    }
  }
  const size_t begin = total_tiles;
  // Zero the alignment tail so that over-reads see defined bytes.
  const size_t total = BL.tiles_at + begin;
  for (size_t i = total + threadIdx.x; i < align16(total); i += blockDim.x) blob[i] = 0;
}

// ---- residual window update ----
// Device. Grid (ceil(max_new / 8), n), 256 threads (a warp per token). Writes the new
// tokens that stay in the window into the sequence's ring (converted to kv_dtype) and
// reports non-finite values (or kv_dtype overflow) of those tokens through err_key.
__global__ void __launch_bounds__(kThreads) residual_write_kernel(
    KernelConfig c, ResidualBatch b, CacheDevicePtrs d, const void* k_new, const void* v_new,
    int in_dtype) {
  const ResidualSeq& s = b.s[blockIdx.y];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int i = blockIdx.x * (kThreads / 32) + warp;
  if (i >= s.n_new) return;
  const int64_t idx = static_cast<int64_t>(s.res_len) + i;
  if (idx < s.flushed) return;  // encoded straight from the input (and checked there)
  const size_t row = static_cast<size_t>(c.n_kv_heads) * c.head_dim;
  const size_t src = static_cast<size_t>(s.in_row + i) * row;
  const int slot = static_cast<int>((s.ring_start + idx) % c.ring_tokens);
  const size_t dst = static_cast<size_t>(slot) * row;
  void* ring_k = reinterpret_cast<void*>(d.ring_table[2 * s.seq]);
  void* ring_v = reinterpret_cast<void*>(d.ring_table[2 * s.seq + 1]);
  bool bad = false;
  for (size_t j = lane; j < row; j += 32) {
    float kx = round_to(load_elem(k_new, src + j, in_dtype), c.kv_dtype);
    float vx = round_to(load_elem(v_new, src + j, in_dtype), c.kv_dtype);
    bad |= !isfinite(kx) || !isfinite(vx);
    store_elem(ring_k, dst + j, c.kv_dtype, kx);
    store_elem(ring_v, dst + j, c.kv_dtype, vx);
  }
  bad = __any_sync(0xffffffffu, bad);
  if (bad && lane == 0) report_nonfinite(d.err_key, s.seq, s.pos_base + idx);
}

// Device, one thread: table[2*seq .. 2*seq+1] = (k, v).
__global__ void set_ring_kernel(unsigned long long* table, int seq, unsigned long long k,
                                unsigned long long v) {
  table[2 * seq] = k;
  table[2 * seq + 1] = v;
}

}  // namespace

void launch_set_ring(const CacheDevicePtrs& d, int seq, void* ring_k, void* ring_v, cudaStream_t stream) {
  set_ring_kernel<<<1, 1, 0, stream>>>(d.ring_table, seq, reinterpret_cast<unsigned long long>(ring_k),
                                       reinterpret_cast<unsigned long long>(ring_v));
  check_launch("set_ring_kernel");
}

size_t flush_scratch_bytes_per_block(const KernelConfig& c) { return scratch_layout(c).total; }

size_t flush_smem_bytes(const KernelConfig& c) {
  const size_t P = static_cast<size_t>(c.block_tokens / 16) * c.head_dim;
  return 4 * static_cast<size_t>(c.block_tokens) + 4 * P + 128 + 2 * P +
         static_cast<size_t>(c.block_tokens) * c.head_dim;
}

void launch_flush(const KernelConfig& c, const FlushBatch& b, const CacheDevicePtrs& d,
                  const void* k_new, const void* v_new, int in_dtype, uint8_t* scratch,
                  cudaStream_t stream) {
  if (b.total_blocks == 0) return;
  dim3 g1(c.block_tokens, b.total_blocks);
  flush_stats_kernel<<<g1, kThreads, 0, stream>>>(c, b, d, k_new, v_new, in_dtype, scratch);
  check_launch("flush_stats_kernel");
  const size_t smem = flush_smem_bytes(c);
  if (smem > 48 * 1024)  // per device and function: set it every time (a cheap host call)
    check(cudaFuncSetAttribute(flush_tiles_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(smem)),
          "cudaFuncSetAttribute(flush_tiles_kernel)");
  dim3 g2(2 * c.n_kv_heads, b.total_blocks);
  flush_tiles_kernel<<<g2, kThreads, smem, stream>>>(c, b, d, k_new, v_new, in_dtype, scratch);
  check_launch("flush_tiles_kernel");
  flush_commit_kernel<<<b.total_blocks, kCommitThreads, 0, stream>>>(c, b, d, scratch);
  check_launch("flush_commit_kernel");
}

void launch_residual_write(const KernelConfig& c, const ResidualBatch& b,
                           const CacheDevicePtrs& d, const void* k_new, const void* v_new,
                           int in_dtype, cudaStream_t stream) {
  if (b.n == 0 || b.max_new == 0) return;
  dim3 g((b.max_new + kThreads / 32 - 1) / (kThreads / 32), b.n);
  residual_write_kernel<<<g, kThreads, 0, stream>>>(c, b, d, k_new, v_new, in_dtype);
  check_launch("residual_write_kernel");
}

}  // namespace cu
}  // namespace packkv
