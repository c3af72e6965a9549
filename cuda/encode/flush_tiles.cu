// Flush stage 2 (encode_common.cuh): one tile per CTA, staged in scratch.
#include <cuda_runtime.h>

#include "cuda_check.h"
#include "encode/encode_common.cuh"
#include "format/shape.h"

namespace packkv {
namespace cu {
namespace {

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
  const int n = c.shape.block_tokens;
  for (int t = threadIdx.x; t < n; t += blockDim.x) {
    if (!c.shape.has_perm) { perm[t] = t; continue; }
    const uint32_t m = med[t];
    int rank = 0;
    for (int j = 0; j < n; ++j) {
      const uint32_t mj = med[j];
      rank += (mj > m) || (mj == m && j < t);
    }
    perm[rank] = t;
  }
}

// One tile per CTA.
// Device. Grid (2H, total_blocks), 256 threads, dynamic smem flush_smem_bytes(). Tile
// blockIdx.x (K heads, then V heads) of block fb: stable descending median order (perm),
// codes (fmt::quantize), pack minimums and encode lengths, offsets (block scan), and the
// tile bytes (format/round_tile.h layout) staged in scratch with its size. PACKKV.md 4.2, 5.
__global__ void __launch_bounds__(kThreads) flush_tiles_kernel(
    KernelConfig c, FlushBatch b, CacheDevicePtrs d, const void* k_new, const void* v_new, int in_dtype,
    uint8_t* scratch) {
  extern __shared__ __align__(16) uint8_t smem[];
  const int N = c.shape.block_tokens, D = c.shape.head_dim, H = c.shape.n_kv_heads;
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
  const int bits = is_v ? c.shape.bits_v : c.shape.bits_k;
  const int e = fmt::len_bits(bits);
  const uint32_t qmax = (1u << bits) - 1u;
  const int grp = c.shape.scale_group(h);
  const float* mu = is_v ? nullptr : seq_k_mean(c, d, s.seq);  // K centring: quantize K - mu
  // quantize with the affines the blob will store: wide, or compact (rounded scales)
  const bool wide = block_zs_wide(c, SL, sc);
  const size_t z_at = wide ? (is_v ? SL.vz : SL.kz) : (is_v ? SL.vzc : SL.kzc);
  const size_t s_at = wide ? (is_v ? SL.vs : SL.ks) : (is_v ? SL.vsc : SL.ksc);
  const int32_t* zs = reinterpret_cast<const int32_t*>(sc + z_at) + grp * N;
  const float* ss = reinterpret_cast<const float*>(sc + s_at) + grp * N;

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
    const size_t esz = elem_bytes(r.dtype);
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
    const float mu_ch = mu ? mu[static_cast<size_t>(h) * D + ch0] : 0.f;
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
            if (mu) x[u] -= mu_ch;
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

}  // namespace

size_t flush_smem_bytes(const KernelConfig& c) {
  const size_t P = static_cast<size_t>(c.shape.block_tokens / 16) * c.shape.head_dim;
  return 4 * static_cast<size_t>(c.shape.block_tokens) + 4 * P + 128 + 2 * P +
         static_cast<size_t>(c.shape.block_tokens) * c.shape.head_dim;
}

void launch_flush_tiles(const KernelConfig& c, const FlushBatch& b, const CacheDevicePtrs& d, const void* k_new,
                        const void* v_new, int in_dtype, uint8_t* scratch, cudaStream_t stream) {
  const size_t smem = flush_smem_bytes(c);
  if (smem > 48 * 1024)  // per device and function: set it every time (a cheap host call)
    check(cudaFuncSetAttribute(flush_tiles_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(smem)),
          "cudaFuncSetAttribute(flush_tiles_kernel)");
  dim3 grid(2 * c.shape.n_kv_heads, b.total_blocks);
  flush_tiles_kernel<<<grid, kThreads, smem, stream>>>(c, b, d, k_new, v_new, in_dtype, scratch);
  check_launch("flush_tiles_kernel");
}

}  // namespace cu
}  // namespace packkv
