// The dense tokens (sink tokens and residual window, residual_window.cuh's order) of a
// tensor-core decode launch on mma.sync m16n8k16, for fp16 rings: a ring row is already
// an fp16 operand, so a warp loads 16 tokens straight from global memory into fragments
// (no shared-memory staging, no decode) and, per 16-token chunk:
//  - scores: C[16 x 8 tokens] = A (q: rows 0-7 = fp16 hi of the 8 query heads, rows 8-15
//    = their lo, as in the compressed path: q scaled by the softmax scale and a power of
//    two 2^e per head, split_exp) x B (K^T: 16 channels x 8 tokens), two n-tiles of 8
//    tokens; score = (row h + row h + 8) 2^-e. The reduction runs over channels, so each
//    lane's k-step channels are permuted (the same permutation in A and B) to make its
//    B fragments two 16-byte loads per 64 channels and token;
//  - online softmax of the chunk per head in registers (4 lanes per head);
//  - p.V: acc[16 channels x 8 heads] += A (V^T: channels x 16 tokens, from 16-byte loads
//    of 8 channels of the lane's 4 tokens and one byte permute per pair) x B (weights
//    w = p 2^E as fp16 hi + lo: the scores' C fragments are exactly B's layout, as in
//    FlashAttention-2), with the compressed path's running exponent E per head.
// The CTA's partials go through tc_write_partials (tensorcore_merge.cuh), as the
// compressed splits'. fp32 / bf16 rings keep residual_window (tensorcore_residual.cuh).
// Exactness: ring values enter the mma exactly; q and w carry 22 bits; fp32 accumulation.
// Device only.
#ifndef PACKKV_CUDA_ATTENTION_TENSORCORE_WINDOW_CUH
#define PACKKV_CUDA_ATTENTION_TENSORCORE_WINDOW_CUH

#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>

#include "attention/attention.h"
#include "attention/tensorcore_layout.cuh"
#include "attention/tensorcore_merge.cuh"
#include "attention/tensorcore_tile.cuh"
#include "device_util.cuh"
#include "kernels.h"

namespace packkv {
namespace cu {

// 16 bytes of global memory (read-only during the kernel) as one ld.global.nc: volatile,
// so that the compiler keeps a chunk's K and V loads ahead of its mma (both issued
// before the first result is needed: one memory latency per chunk, not two).
__device__ __forceinline__ uint4 ldg_nc16(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
  return r;
}

// Dense token j (0 .. sink_len + residual_len - 1) of sequence s: its ring row.
__device__ __forceinline__ int window_slot(const KernelConfig& c, const AttnSeq& s, int j) {
  if (j < s.sink_len) return c.ring_tokens + j;
  int r = s.ring_start + j - s.sink_len;  // ring_start < ring_tokens, residual_len <= ring_tokens
  return r >= c.ring_tokens ? r - c.ring_tokens : r;
}

// Residual split `split` (>= n_splits; res_splits in all) of a decode CTA with query heads
// qh0 .. qh0 + n_valid - 1 (n_valid <= 8) of KV head kvh, sequence s at row `row`, for an
// fp16 ring (c.kv_dtype F16) and head_dim D (64, 128 or 256). Warp w takes the 16-token
// chunks (split - n_splits) nw + w, stepping by nw res_splits (residual_window's). Whole
// CTA (barriers); smem: the launch's dynamic shared memory, TensorcoreSmem layout.
template <typename V, int D>
__device__ __forceinline__ void tc_window_mma(const KernelConfig& c, const CacheDevicePtrs& d, const AttnSeq& s,
                                              const AttnCall& a, uint8_t* smem, int row, int kvh, int qh0,
                                              int n_valid, int split, int n_splits, int res_splits) {
  static_assert(D % 64 == 0 && D <= 256, "tc_window_mma: head_dim 64, 128 or 256");
  constexpr int NSEG = D / 64, KS = D / 16, MT = D / 16;
  const int nw = blockDim.x >> 5;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int gid = lane >> 2, tig = lane & 3;
  const TensorcoreSmem L = tensorcore_smem<V>(c, nw);
  float* qi = reinterpret_cast<float*>(smem + L.qi);  // [0, 8): e_q, then 2^-e_q
  uint4* qf = reinterpret_cast<uint4*>(smem + L.qf);  // [KS][32 lanes] A fragments {hi, lo, hi, lo}
  {
    // q (decode: times the softmax scale, as load_queries) as fp32 [8][D] in the warp parts.
    float* qS = reinterpret_cast<float*>(smem + L.warp0);
    for (int i = threadIdx.x; i < kTensorcoreHeads * D; i += blockDim.x) {
      const int g = i / D, ch = i - g * D;
      qS[i] = g < n_valid ? load_elem(a.q, (static_cast<size_t>(row) * a.n_q_heads + qh0 + g) * D + ch, a.q_dtype) *
                                (V::kSoftmax ? a.scale : 1.f)
                          : 0.f;
    }
    __syncthreads();
    for (int g = warp; g < kTensorcoreHeads; g += nw) {
      float mx = 0.f;
      for (int ch = lane; ch < D; ch += 32) mx = fmaxf(mx, fabsf(qS[g * D + ch]));
      mx = warp_max(mx);
      if (lane == 0) qi[g] = static_cast<float>(tensorcore::split_exp(mx));
    }
    __syncthreads();
    // Fragment of lane (h, t) at k-step ks = 4 seg + j: A rows h (hi) and h + 8 (lo) of
    // head h, k columns 2t, 2t + 1 = channels 64 seg + 16 t + 4 j + {0, 1}, columns 2t + 8,
    // 2t + 9 = channels 64 seg + 16 t + 4 j + {2, 3}.
    for (int i = threadIdx.x; i < KS * 32; i += blockDim.x) {
      const int ks = i >> 5, ln = i & 31, h = ln >> 2, t = ln & 3;
      const float sc2 = tensorcore::pow2i(static_cast<int>(qi[h]));
      const float* q = qS + h * D + 64 * (ks >> 2) + 16 * t + 4 * (ks & 3);
      uint4 f;
      tensorcore::split2(q[0] * sc2, q[1] * sc2, &f.x, &f.y);
      tensorcore::split2(q[2] * sc2, q[3] * sc2, &f.z, &f.w);
      qf[i] = f;
    }
    __syncthreads();
    if (threadIdx.x < kTensorcoreHeads) qi[threadIdx.x] = tensorcore::pow2i(-static_cast<int>(qi[threadIdx.x]));
    __syncthreads();
  }
  const float qinv = qi[gid];  // 2^-e_q of this lane's softmax head gid
  const size_t row_elems = static_cast<size_t>(c.shape.n_kv_heads) * D;
  const __half* ring_k = reinterpret_cast<const __half*>(d.ring_table[2 * s.seq]) + static_cast<size_t>(kvh) * D;
  const __half* ring_v = reinterpret_cast<const __half*>(d.ring_table[2 * s.seq + 1]) + static_cast<size_t>(kvh) * D;
  const int n_dense = s.sink_len + s.residual_len;

  float acc[MT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[mt][i] = 0.f;
  float m_run = -INFINITY, l_run = 0.f;  // head gid
  int e_run = 110;
  // A chunk's K and V rows, loaded one chunk ahead (before the loop, then at the end of
  // the previous iteration): ptxas would otherwise sink the V loads below the K.q mma
  // (two memory latencies per chunk instead of one).
  // K: tokens gid (n-tile 0) and gid + 8 (n-tile 1), channels 64 seg + 16 tig + [0, 16).
  // V: tokens 2 tig, 2 tig + 1, 2 tig + 8, 2 tig + 9, channels 64 seg + 8 gid + [0, 8).
  uint4 kr[2][NSEG][2], vr[NSEG][4];
  auto load_chunk = [&](int c0) {
    // Tokens past the window read the chunk's first row (valid) and are masked.
    auto slot = [&](int i) { return window_slot(c, s, c0 + i < n_dense ? c0 + i : c0); };
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
      const uint4* p = reinterpret_cast<const uint4*>(ring_k + static_cast<size_t>(slot(8 * nt + gid)) * row_elems + 16 * tig);
#pragma unroll
      for (int sg = 0; sg < NSEG; ++sg) {
        kr[nt][sg][0] = ldg_nc16(p + 8 * sg);
        kr[nt][sg][1] = ldg_nc16(p + 8 * sg + 1);
      }
    }
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int i = 2 * tig + (k & 1) + 8 * (k >> 1);
      const uint4* p = reinterpret_cast<const uint4*>(ring_v + static_cast<size_t>(slot(i)) * row_elems + 8 * gid);
#pragma unroll
      for (int sg = 0; sg < NSEG; ++sg) vr[sg][k] = ldg_nc16(p + 8 * sg);
    }
  };
  const int step = 16 * nw * res_splits;
  int c0 = 16 * ((split - n_splits) * nw + warp);
  if (c0 < n_dense) load_chunk(c0);
  for (; c0 < n_dense; c0 += step) {
    // Scores: n-tile nt holds tokens 8 nt + 2 tig, + 1 of head gid (rows gid: hi, gid + 8: lo).
    float sc[2][4];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) sc[nt][i] = 0.f;
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        const uint4 qa = qf[ks * 32 + lane];
        const uint32_t af[4] = {qa.x, qa.y, qa.z, qa.w};
        const uint4 kv = kr[nt][ks >> 2][(ks >> 1) & 1];
        const uint32_t b0 = (ks & 1) ? kv.z : kv.x, b1 = (ks & 1) ? kv.w : kv.y;
        tensorcore::mma16816(sc[nt], af, b0, b1);
      }
    }
    float x[4];  // scaled scores of tokens 2 tig, 2 tig + 1, 2 tig + 8, 2 tig + 9 (head gid)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int tok = 2 * tig + (i & 1) + 8 * (i >> 1);
      const float v = (sc[i >> 1][i & 1] + sc[i >> 1][2 + (i & 1)]) * qinv;
      x[i] = c0 + tok < n_dense ? v : -INFINITY;
    }
    float mx = fmaxf(fmaxf(x[0], x[1]), fmaxf(x[2], x[3]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(m_run, mx);
    const float alpha = m_new == -INFINITY ? 1.f : __expf(m_run - m_new);
    float p[4], psum = 0.f, pmax = 0.f;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      p[i] = x[i] == -INFINITY ? 0.f : __expf(x[i] - m_new);
      psum += p[i];
      pmax = fmaxf(pmax, p[i]);
    }
    psum += __shfl_xor_sync(0xffffffffu, psum, 1);
    psum += __shfl_xor_sync(0xffffffffu, psum, 2);
    pmax = fmaxf(pmax, __shfl_xor_sync(0xffffffffu, pmax, 1));
    pmax = fmaxf(pmax, __shfl_xor_sync(0xffffffffu, pmax, 2));
    const int e_blk = tensorcore::split_exp(pmax);
    const int e_new = e_blk < e_run ? e_blk : e_run;
    const int de = e_new - e_run;  // <= 0
    const float f = de < -126 ? 0.f : alpha * tensorcore::pow2i(de);
    l_run = l_run * alpha + psum;
    m_run = m_new;
    e_run = e_new;
    const float sw = tensorcore::pow2i(e_new);
    uint32_t bh0, bl0, bh1, bl1;  // B: tokens (2 tig, 2 tig + 1), (2 tig + 8, 2 tig + 9) of head gid
    tensorcore::split2(p[0] * sw, p[1] * sw, &bh0, &bl0);
    tensorcore::split2(p[2] * sw, p[3] * sw, &bh1, &bl1);
    // The accumulators of this lane are heads 2 tig, 2 tig + 1 (softmax lanes 8 tig, 8 tig + 4).
    const float f0 = __shfl_sync(0xffffffffu, f, 8 * tig), f1 = __shfl_sync(0xffffffffu, f, 8 * tig + 4);
#pragma unroll
    for (int sg = 0; sg < NSEG; ++sg) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        // m-tile 4 seg + j: rows gid, gid + 8 = channels 64 seg + 8 gid + 2 j, + 1.
        const uint32_t u0 = (&vr[sg][0].x)[j], u1 = (&vr[sg][1].x)[j];
        const uint32_t u2 = (&vr[sg][2].x)[j], u3 = (&vr[sg][3].x)[j];
        const uint32_t af[4] = {__byte_perm(u0, u1, 0x5410), __byte_perm(u0, u1, 0x7632), __byte_perm(u2, u3, 0x5410),
                                __byte_perm(u2, u3, 0x7632)};
        float* ac = acc[4 * sg + j];
        ac[0] *= f0;
        ac[1] *= f1;
        ac[2] *= f0;
        ac[3] *= f1;
        tensorcore::mma16816(acc[4 * sg + j], af, bh0, bh1);
        tensorcore::mma16816(acc[4 * sg + j], af, bl0, bl1);
      }
    }
    if (c0 + step < n_dense) load_chunk(c0 + step);
  }
  // The warp's per-head (m, l, 0, E) and its accumulators in true units (acc 2^-E) as
  // [8][D] fp32 in its warp part, then the CTA merge.
  float* hw = reinterpret_cast<float*>(smem + L.hw) + static_cast<size_t>(warp) * kTensorcoreHeads * 4;
  if (tig == 0) {
    hw[gid * 4 + 0] = m_run;
    hw[gid * 4 + 1] = l_run;
    hw[gid * 4 + 2] = 0.f;
    hw[gid * 4 + 3] = static_cast<float>(e_run);
  }
  __syncwarp();
  {
    float* aw = reinterpret_cast<float*>(smem + L.warp0 + static_cast<size_t>(warp) * L.stride);
    const int h0 = 2 * tig, h1 = h0 + 1;
    const float s0 = tensorcore::pow2i(-static_cast<int>(hw[h0 * 4 + 3]));
    const float s1 = tensorcore::pow2i(-static_cast<int>(hw[h1 * 4 + 3]));
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const int ch = 64 * (mt >> 2) + 8 * gid + 2 * (mt & 3);
      *reinterpret_cast<float2*>(aw + h0 * D + ch) = make_float2(acc[mt][0] * s0, acc[mt][2] * s0);
      *reinterpret_cast<float2*>(aw + h1 * D + ch) = make_float2(acc[mt][1] * s1, acc[mt][3] * s1);
    }
  }
  __syncthreads();
  tc_write_partials<V>(a, smem, L, D, row, qh0, n_valid, split, nw, nullptr);
}

}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_ATTENTION_TENSORCORE_WINDOW_CUH
