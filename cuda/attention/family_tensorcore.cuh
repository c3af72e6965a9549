// Tensor-core attention family (issue 14): the compressed blocks of scores (K.q), apply
// (p.V) and decode (online softmax over both) with mma.sync.m16n8k16, fp16 operands and
// fp32 accumulation, every code decoded once per CTA for up to 8 query heads.
//
// Per CTA (split, KV head and group chunk of <= 8 query heads, sequence), nw <= 4 warps;
// a warp owns whole blocks (as in the CUDA-core family) and for each of its blocks:
//  1. stages the K and V tiles, zero points and scales with cp.async;
//  2. K, per round of 16 tokens: decodes the round once into an fp16 x tile in shared
//     memory (tensorcore_tile.cuh: x' = pack minimum + code, exact fp16 integers), then
//     scores[16 tokens x 8 heads] = sum over 16-channel steps of mma(A = x tile
//     (ldmatrix.trans), B = q): "swap AB", query heads on N. q enters as fp16 hi + lo
//     (two mma) after scaling each head by a power of two 2^e_q (split_exp), so the
//     products carry 22 bits of q; score = s_t (acc 2^-e_q + z_t sum(q)).
//  3. weights (decode: online softmax per head; apply: the caller's probabilities):
//     w = p s_t, kept as fp32 sums (l, sum w z_t) and, for the mma, as fp16 hi + lo of
//     w 2^E where E = min over the blocks so far of split_exp(max |w|): the running V
//     accumulators are rescaled by alpha 2^(E_new - E_old) (<= 1) per block.
//  4. V, per round: decodes the round into the x tile, then for every 16 channels
//     acc[16 channels x 8 heads] += mma(A = x tile, B = w hi) + mma(A, w lo).
// The warps of a CTA are merged in shared memory and the CTA writes one partial [m, l,
// acc[D]] per (sequence, query head, split) in split_merge.cuh's layout
// (tensorcore_merge.cuh): the merge kernel is shared with the CUDA-core family. The
// residual window (sink tokens and ring: the last splits of a decode launch) runs on mma
// too for fp16 rings (tensorcore_window.cuh), else on the CUDA-core family's
// residual_window (tensorcore_residual.cuh). Its online softmax and warp merge are its
// own: its accumulators are mma fragments scaled by 2^-E (3. above). Exactness: the x tile is
// exact; q and w carry 22 bits (relative 2.4e-7); fp32 accumulation.
// This header: the kernel; tensorcore_layout.cuh: its shared-memory layout;
// family_tensorcore.cu: the host side (families.h).
#ifndef PACKKV_CUDA_ATTENTION_FAMILY_TENSORCORE_CUH
#define PACKKV_CUDA_ATTENTION_FAMILY_TENSORCORE_CUH

#include <cuda_fp16.h>
#include <cuda_pipeline_primitives.h>
#include <math.h>
#include <stdint.h>

#include "attention/attention.h"
#include "attention/tensorcore_layout.cuh"
#include "attention/tensorcore_residual.cuh"
#include "attention/tensorcore_merge.cuh"
#include "attention/tensorcore_tile.cuh"
#include "attention/tensorcore_window.cuh"
#include "attention/tile_walk.cuh"
#include "attention/tuning.h"
#include "attention/variants.cuh"
#include "attention/zs_stage.cuh"
#include "common/rules.h"
#include "device_util.cuh"
#include "format/round_tile.h"
#include "kernels.h"

namespace packkv {
namespace cu {

// The kernel. Grid (n_splits + res_splits, H_kv * n_gchunks, b.n), nw * 32 threads, dynamic
// shared memory tensorcore_launch_smem<V>(c, nw). Splits [0, n_splits): the compressed blocks
// (bps per split); splits n_splits ..: the residual window (tensorcore_window.cuh for fp16
// rings, tensorcore_residual.cuh otherwise; only where
// compiled for PTX 9.0+). DT: the head_dim D when it is 32, 64, 128 or 256 (channel loops
// unrolled, q fragments in registers up to 128), 0 for any other D (multiple of 16, <= 256).
// Inputs and outputs as cudacore_attn_kernel's (family_cudacore.cuh). Reads only; thread-safe.
template <typename V, int DT>
__global__ void __launch_bounds__(kTensorcoreMaxWarps * 32, tensorcore_min_ctas(V::kSoftmax, DT))
    tensorcore_attn_kernel(KernelConfig c, AttnBatch b, CacheDevicePtrs d, AttnCall a, int n_gchunks, int group, int bps,
                           int n_splits) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  constexpr int MT = DT ? DT / 16 : 16;                    // V accumulator tiles (>= D/16)
  constexpr int NF = DT ? DT / 32 : 0;                     // channels per lane (0: varies)
  constexpr int QR = DT != 0 && DT <= 128 ? DT / 16 : 0;   // q fragments held in registers
  extern __shared__ __align__(16) uint8_t smem[];
  const int nw = blockDim.x >> 5;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int gid = lane >> 2, tig = lane & 3;
  // The CTA's split, row (KV head and head chunk) and sequence: blockIdx, except that with
  // residual splits in the launch the linear CTA index takes the residual CTAs first (CTAs
  // are dispatched about in linear order: the residual CTAs, a longer latency chain each,
  // start first and the compressed ones fill in behind them instead of trailing).
  // Compiled for sm_90 only (PTX 9.0+): at sm_80 the residual path made ptxas spill in
  // the hot loop of the generic head_dim kernel, and no sm_80 GPU measured it; the host
  // fuses only kernels whose PTX is 9.0+ (family_tensorcore.cu). Head_dim classes:
  // tensorcore_fuses<V>(DT).
#if __CUDA_ARCH__ >= 900
  constexpr bool kFuse = tensorcore_fuses<V>(DT);
#else
  constexpr bool kFuse = false;
#endif
  int split = blockIdx.x, cy = blockIdx.y, cz = blockIdx.z;
  if (kFuse && static_cast<int>(gridDim.x) > n_splits) {
    const int res_splits = static_cast<int>(gridDim.x) - n_splits;
    const int lin = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const int n_res = res_splits * gridDim.y * gridDim.z;
    int yz;
    if (lin < n_res) {
      split = n_splits + lin % res_splits;
      yz = lin / res_splits;
    } else {
      split = (lin - n_res) % n_splits;
      yz = (lin - n_res) / n_splits;
    }
    cy = yz % gridDim.y;
    cz = yz / gridDim.y;
  }
  const AttnSeq& s = b.s[cz];
  const int row = b.first + cz;
  const int kvh = cy / n_gchunks;
  const int chunk = cy - kvh * n_gchunks;
  const int qh0 = kvh * group + chunk * kTensorcoreHeads;
  const int n_valid = min(kTensorcoreHeads, group - chunk * kTensorcoreHeads);
  const int D = c.shape.head_dim, N = c.shape.block_tokens, R = N / 16, KS = D / 16;
  if (kFuse && split >= n_splits) {  // a residual split (whole CTA)
    const int res_splits = static_cast<int>(gridDim.x) - n_splits;
    if constexpr (kFuse) {
      if (c.kv_dtype == PACKKV_DTYPE_F16) {
        tc_window_mma<V, DT>(c, d, s, a, smem, row, kvh, qh0, n_valid, split, n_splits, res_splits);
      } else {
        tc_residual_split<V>(c, d, s, a, smem, row, kvh, qh0, n_valid, split, n_splits, res_splits);
      }
    }
    return;
  }
  const TensorcoreSmem L = tensorcore_smem<V>(c, nw);
  uint8_t* wb = smem + L.warp0 + static_cast<size_t>(warp) * L.stride;
  float* qi = reinterpret_cast<float*>(smem + L.qi);  // [0, 8): sum q; [8, 16): 2^-e_q; [16, 24): q . mu
  // K centring: blocks hold K - mu; their scores get q . mu (qi[16 + head]): added to each
  // score (scores), or to the split's m (decode: a constant shift of all its scores).
  const bool centred = c.k_center != 0;
  float* hw = reinterpret_cast<float*>(smem + L.hw) + static_cast<size_t>(warp) * kTensorcoreHeads * 4;
  // [8][SN]: scores, then weights (hi, lo); rows SN = N + kTcScPad words apart (tuning.h).
  float* sc = reinterpret_cast<float*>(wb + L.sc);
  const int SN = N + kTcScPad;
  float* fac = reinterpret_cast<float*>(wb + L.fac); // [8]: V accumulator rescale of the block
  uint8_t* x = wb + L.x;
  const uint32_t x_s = static_cast<uint32_t>(__cvta_generic_to_shared(x));

  // Softmax lanes: lph = 32 / gp lanes per head (gp = n_valid rounded up to a power of 2).
  int lg = 5;
  while ((1 << (5 - lg)) < n_valid) --lg;
  const int lph = 1 << lg, hs = lane >> lg, sub = lane & (lph - 1);
  const bool hvalid = hs < n_valid;

  if (V::kUsesK) {
    float* qS = reinterpret_cast<float*>(smem + L.warp0);  // [8][D] fp32, before the block loop
    for (int i = threadIdx.x; i < kTensorcoreHeads * D; i += blockDim.x) {
      const int g = i / D, ch = i - g * D;
      qS[i] = g < n_valid ? load_elem(a.q, (static_cast<size_t>(row) * a.n_q_heads + qh0 + g) * D + ch, a.q_dtype)
                          : 0.f;
    }
    __syncthreads();
    for (int g = warp; g < kTensorcoreHeads; g += nw) {
      float mx = 0.f, sm = 0.f;
      for (int ch = lane; ch < D; ch += 32) {
        const float v = qS[g * D + ch];
        mx = fmaxf(mx, fabsf(v));
        sm += v;
      }
      mx = warp_max(mx);
      sm = warp_sum(sm);
      if (centred && s.n_blocks > 0) {
        const float* mu = d.k_mean + (static_cast<size_t>(s.seq) * c.shape.n_kv_heads + kvh) * D;
        double m = 0.0;
        for (int ch = lane; ch < D; ch += 32) m += static_cast<double>(qS[g * D + ch]) * static_cast<double>(mu[ch]);
        m = warp_sum_f64(m);
        if (lane == 0) qi[2 * kTensorcoreHeads + g] = static_cast<float>(m);
      }
      if (lane == 0) {
        qi[g] = sm;
        qi[kTensorcoreHeads + g] = static_cast<float>(tensorcore::split_exp(mx));  // e_q, made 2^-e_q below
      }
    }
    __syncthreads();
    uint4* qf = reinterpret_cast<uint4*>(smem + L.qf);
    for (int i = threadIdx.x; i < KS * 32; i += blockDim.x) {
      const int ks = i >> 5, ln = i & 31, g = ln >> 2, t = ln & 3;
      const float sc2 = tensorcore::pow2i(static_cast<int>(qi[kTensorcoreHeads + g]));
      const float* q = qS + g * D + 16 * ks + 2 * t;
      uint4 f;
      tensorcore::split2(q[0] * sc2, q[1] * sc2, &f.x, &f.z);
      tensorcore::split2(q[8] * sc2, q[9] * sc2, &f.y, &f.w);
      qf[i] = f;
    }
    __syncthreads();
    if (threadIdx.x < kTensorcoreHeads) qi[kTensorcoreHeads + threadIdx.x] = tensorcore::pow2i(-static_cast<int>(qi[kTensorcoreHeads + threadIdx.x]));
    __syncthreads();
  }
  // Weight rows of heads no softmax lane owns stay zero; their rescale factor is 1.
  if (V::kUsesV) {
    for (int i = lane; i < kTensorcoreHeads * SN; i += 32) sc[i] = 0.f;
    if (lane < kTensorcoreHeads) fac[lane] = 1.f;
  }
  if (lane < kTensorcoreHeads) {
    hw[lane * 4 + 0] = -INFINITY;
    hw[lane * 4 + 1] = 0.f;
    hw[lane * 4 + 2] = 0.f;
    hw[lane * 4 + 3] = 110.f;
  }
  __syncwarp();

  float acc[MT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[mt][i] = 0.f;
  float m_run = -INFINITY, l_run = 0.f, bz_run = 0.f;  // this lane's softmax head hs
  int e_run = 110;

  const int blk_begin = split * bps;
  const int blk_end = min(s.n_blocks, blk_begin + bps);
  const fmt::Shape& SH = c.shape;
  const int grp = SH.scale_group(kvh);
  const tensorcore::RoundCtx rk = tensorcore::round_ctx(D, c.shape.bits_k, fmt::len_bits(c.shape.bits_k));
  const tensorcore::RoundCtx rv = tensorcore::round_ctx(D, c.shape.bits_v, fmt::len_bits(c.shape.bits_v));
  const unsigned long long* table = d.block_table + static_cast<size_t>(s.seq) * c.max_blocks;
  const uint32_t* KT = reinterpret_cast<const uint32_t*>(wb + L.kbuf);
  const uint32_t* VT = reinterpret_cast<const uint32_t*>(wb + L.vbuf);
  unsigned long long next_ptr = blk_begin + warp < blk_end ? table[blk_begin + warp] : 0ull;
  for (int blk = blk_begin + warp; blk < blk_end; blk += nw) {
    const uint8_t* blob = reinterpret_cast<const uint8_t*>(next_ptr);
    if (blk + nw < blk_end) next_ptr = table[blk + nw];
    size_t koff, ksz, voff, vsz;
    SH.tile_extent(blob, fmt::kK, kvh, &koff, &ksz);
    SH.tile_extent(blob, fmt::kV, kvh, &voff, &vsz);
    // Zero points and scales in the block's encoding (zs_stage.cuh: compact, wide or a
    // compact cache's wide fallback block), read as such where they are used.
    const ZsHeader zh = zs_header(blob, SH);
    const ZsSrc zsrc1 = zs_locate(blob, SH, zh, V::kUsesK ? fmt::kK : fmt::kV, grp);
    const ZsSrc zsrc2 = V::kSoftmax ? zs_locate(blob, SH, zh, fmt::kV, grp) : zsrc1;
    const uint32_t kt = V::kUsesK ? stage(wb + L.kbuf, blob + koff, ksz) : 0u;
    const uint32_t vt = V::kUsesV ? stage(wb + L.vbuf, blob + voff, vsz) : 0u;
    const ZsView zs1 = zs_stage(wb + L.zb, wb + L.sb, zsrc1, N);  // K (V in apply)
    const uint8_t* perm = nullptr;
    if (V::kPositions && SH.has_perm) perm = wb + L.pb + stage(wb + L.pb, blob + SH.layout.perm_at, N);
    ZsView zv = zs1;  // V
    if (V::kSoftmax) zv = zs_stage(wb + L.vzb, wb + L.vsb, zsrc2, N);
    __pipeline_commit();
    auto orig = [&](int slot) -> int64_t { return s.sink_len + static_cast<int64_t>(blk) * N + (perm ? perm[slot] : slot); };
    __pipeline_wait_prior(0);
    __syncwarp();

    if (V::kUsesK) {
      const uint4* qf = reinterpret_cast<const uint4*>(smem + L.qf);
      const int h0 = 2 * tig;
      const float qs0 = qi[h0], qs1 = qi[h0 + 1], qv0 = qi[kTensorcoreHeads + h0], qv1 = qi[kTensorcoreHeads + h0 + 1];
      // ldmatrix.trans rows of lane: matrix mi = lane / 8 is channels (mi / 2) * 8 + lane % 8
      // of a 16-channel step, chunk mi % 2. Step ks adds 4 lines (512 bytes) and flips
      // bit 2 of the swizzle for odd ks (x_chunk).
      const uint32_t ks_off = tensorcore::x_chunk(((lane >> 4) << 3) + (lane & 7), (lane >> 3) & 1);
      uint32_t qr[QR ? QR : 1][4];
#pragma unroll
      for (int ks = 0; ks < QR; ++ks) {
        const uint4 qb = qf[ks * 32 + lane];
        qr[ks][0] = qb.x;
        qr[ks][1] = qb.y;
        qr[ks][2] = qb.z;
        qr[ks][3] = qb.w;
      }
      uint32_t rbit = kt * 8;
      for (int r = 0; r < R; ++r) {
        rbit = tensorcore::decode_round<NF>(KT, rbit, rk, x);
        __syncwarp();
        // Two accumulators (q hi, q lo): two dependent mma chains of D/16 steps each.
        float f[4] = {0.f, 0.f, 0.f, 0.f}, fl[4] = {0.f, 0.f, 0.f, 0.f};
        if constexpr (QR > 0) {
#pragma unroll
          for (int ks = 0; ks < QR; ++ks) {
            uint32_t af[4];
            tensorcore::ldsm_x4_t(x_s + ((ks_off ^ ((ks & 1u) << 6)) + 512u * ks), af);
            tensorcore::mma16816(f, af, qr[ks][0], qr[ks][1]);
            tensorcore::mma16816(fl, af, qr[ks][2], qr[ks][3]);
          }
        } else {
#pragma unroll 4
          for (int ks = 0; ks < KS; ++ks) {
            uint32_t af[4];
            tensorcore::ldsm_x4_t(x_s + ((ks_off ^ ((ks & 1u) << 6)) + 512u * ks), af);
            const uint4 qb = qf[ks * 32 + lane];
            tensorcore::mma16816(f, af, qb.x, qb.y);
            tensorcore::mma16816(fl, af, qb.z, qb.w);
          }
        }
#pragma unroll
        for (int i = 0; i < 4; ++i) f[i] += fl[i];
        // Rows gid and gid + 8 of the tile: tokens pos_token(gid), pos_token(gid) + 4.
        const int slot0 = 16 * r + tensorcore::pos_token(gid);
        const float s_t[2] = {zs1.s(slot0), zs1.s(slot0 + 4)};
        const float z_t[2] = {static_cast<float>(zs1.z(slot0)), static_cast<float>(zs1.z(slot0 + 4))};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int slot = slot0 + 4 * (i >> 1);
          const int h = h0 + (i & 1);
          float score = s_t[i >> 1] * (f[i] * ((i & 1) ? qv1 : qv0) + z_t[i >> 1] * ((i & 1) ? qs1 : qs0));
          store_score<V>(a, row, qh0, n_valid, centred, qi + 2 * kTensorcoreHeads, sc, SN, h, slot, orig, score);
        }
        __syncwarp();
      }
    }
    if (V::kUsesV) {
      // Weights of this lane's head hs over its tokens sub, sub + lph, ..., in batches of
      // 8 per lane whose loads (probabilities: global memory) are issued together.
      float* row_w = sc + hs * SN;
      float m_new = m_run, alpha = 1.f;
      if (V::kSoftmax) {
        float mx = -INFINITY;
#pragma unroll 4
        for (int t = sub; t < N; t += lph) mx = fmaxf(mx, row_w[t]);
        for (int o = lph >> 1; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        m_new = fmaxf(m_run, mx * a.scale);
        alpha = m_new == -INFINITY ? 1.f : __expf(m_run - m_new);
      }
      float psum = 0.f, wz = 0.f, wmax = 0.f;
      for (int t0 = sub; t0 < N; t0 += 8 * lph) {
        float p[8];
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          const int t = t0 + k * lph;
          p[k] = 0.f;
          if (hvalid && t < N) {
            if (V::kSoftmax) {
              const float xs = row_w[t] * a.scale;
              p[k] = xs == -INFINITY ? 0.f : __expf(xs - m_new);
            } else {
              p[k] = a.probs[(static_cast<size_t>(row) * a.n_q_heads + qh0 + hs) * a.ld + orig(t)];
            }
          }
        }
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          const int t = t0 + k * lph;
          if (t < N) {
            const float w = p[k] * zv.s(t);
            psum += p[k];
            wz = fmaf(w, static_cast<float>(zv.z(t)), wz);
            wmax = fmaxf(wmax, fabsf(w));
            row_w[t] = w;
          }
        }
      }
      for (int o = lph >> 1; o > 0; o >>= 1) {
        psum += __shfl_xor_sync(0xffffffffu, psum, o);
        wz += __shfl_xor_sync(0xffffffffu, wz, o);
        wmax = fmaxf(wmax, __shfl_xor_sync(0xffffffffu, wmax, o));
      }
      const int e_blk = tensorcore::split_exp(wmax);
      const int e_new = e_blk < e_run ? e_blk : e_run;
      const int de = e_new - e_run;  // <= 0
      const float f = de < -126 ? 0.f : alpha * tensorcore::pow2i(de);
      l_run = l_run * alpha + psum;
      bz_run = bz_run * alpha + wz;
      m_run = m_new;
      e_run = e_new;
      const float sw = tensorcore::pow2i(e_new);
#pragma unroll 4
      for (int t = sub; t < N; t += lph) {  // in place: (hi, lo) fp16 of w 2^E
        uint32_t hi, lo;
        tensorcore::split2(row_w[t] * sw, 0.f, &hi, &lo);
        reinterpret_cast<uint32_t*>(row_w)[t] = (hi & 0xffffu) | (lo << 16);
      }
      if (sub == 0) fac[hs] = f;
      __syncwarp();
      const float f0 = fac[2 * tig], f1 = fac[2 * tig + 1];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        acc[mt][0] *= f0;
        acc[mt][1] *= f1;
        acc[mt][2] *= f0;
        acc[mt][3] *= f1;
      }
      // ldmatrix rows of lane: matrix mi = lane / 8 is channels (mi % 2) * 8 + lane % 8 of
      // a 16-channel tile, chunk mi / 2 (tile mt: + 512 mt bytes, swizzle bit 2 flipped
      // for odd mt).
      const uint32_t mt_off = tensorcore::x_chunk(((lane >> 3) & 1) * 8 + (lane & 7), lane >> 4);
      uint32_t rbit = vt * 8;
      const uint32_t* wrow = reinterpret_cast<const uint32_t*>(sc) + gid * SN;
      for (int r = 0; r < R; ++r) {
        rbit = tensorcore::decode_round<NF>(VT, rbit, rv, x);
        // B: positions 2 tig, 2 tig + 1 = tokens tig, tig + 8; 2 tig + 8, + 9 = tig + 4, tig + 12.
        const uint32_t u0 = wrow[16 * r + tig], u1 = wrow[16 * r + tig + 8];
        const uint32_t u2 = wrow[16 * r + tig + 4], u3 = wrow[16 * r + tig + 12];
        const uint32_t bh0 = __byte_perm(u0, u1, 0x5410), bl0 = __byte_perm(u0, u1, 0x7632);
        const uint32_t bh1 = __byte_perm(u2, u3, 0x5410), bl1 = __byte_perm(u2, u3, 0x7632);
        __syncwarp();
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          if (mt < KS) {
            uint32_t af[4];
            tensorcore::ldsm_x4(x_s + (mt_off ^ ((mt & 1u) << 6)) + 512u * mt, af);
            tensorcore::mma16816(acc[mt], af, bh0, bh1);
            tensorcore::mma16816(acc[mt], af, bl0, bl1);
          }
        }
        __syncwarp();
      }
    }
  }
  if (!V::kUsesV) return;

  // Merge the warps: each writes its per-head (m, l, sum w z, E) and its accumulators in
  // true units, acc 2^-E + sum w z, as [8][D] fp32 into its own warp part.
  if (sub == 0) {
    hw[hs * 4 + 0] = m_run;
    hw[hs * 4 + 1] = l_run;
    hw[hs * 4 + 2] = bz_run;
    hw[hs * 4 + 3] = static_cast<float>(e_run);
  }
  __syncwarp();
  {
    float* aw = reinterpret_cast<float*>(wb);
    const int h0 = 2 * tig, h1 = h0 + 1;
    const float s0 = tensorcore::pow2i(-static_cast<int>(hw[h0 * 4 + 3])), s1 = tensorcore::pow2i(-static_cast<int>(hw[h1 * 4 + 3]));
    const float z0 = hw[h0 * 4 + 2], z1 = hw[h1 * 4 + 2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      if (mt < KS) {
        const int ch = 16 * mt + gid;
        aw[h0 * D + ch] = fmaf(acc[mt][0], s0, z0);
        aw[h1 * D + ch] = fmaf(acc[mt][1], s1, z1);
        aw[h0 * D + ch + 8] = fmaf(acc[mt][2], s0, z0);
        aw[h1 * D + ch + 8] = fmaf(acc[mt][3], s1, z1);
      }
    }
  }
  __syncthreads();
  tc_write_partials<V>(a, smem, L, D, row, qh0, n_valid, split, nw, centred ? qi + 2 * kTensorcoreHeads : nullptr);
#endif
}

}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_ATTENTION_FAMILY_TENSORCORE_CUH
