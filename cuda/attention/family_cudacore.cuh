// The CUDA-core kernel family: fused attention on the compressed tiles with every code
// decoded and multiplied on the CUDA cores, in fp32 (PACKKV.md sections 6.1-6.3, 8.3).
// One kernel template over (G query heads per CTA, variant V) computes, per (sequence,
// KV head, token split), the scores, or the split's partial of apply or decode, decoding
// the packs in registers (zero point and scale folded in, no dequantization pass) once
// per GQA group (up to 4 query heads share each decoded tile). The last splits of the
// grid handle the residual window (residual_window.cuh) in the same launch; the merge
// kernel (merge_kernel.cu) combines the splits. Included by family_cudacore.cu only.
//
// Work split (chosen so that almost every instruction decodes a code): a warp owns whole
// blocks, stages a block's tiles, zero points and scales into its part of shared memory
// (cta_layout.cuh; on a compact cache with one scale group the four z/s fields in one copy;
// decode with one query head on sm_90: by one lane's bulk copies, tuning.h kBulkStaging),
// walks each tile once (tile_walk.cuh walk_tile), then decodes it 4 rounds at a time, one
// per octet of 8 lanes (cudacore_rounds.cuh).
//
// Blocks near the fp32 limit (issue 18 item 3) take rare paths (clamped_block.cuh,
// SoftmaxState::fit_block). Normal data pay one vote on the V fields before the weights and
// one vote on the K scores after the rounds. Decode with 1-2 query heads keeps the rare
// code out of its hot loop: a fast block loop stops at a block whose vote says yes, that
// block runs again with every path, then the fast loop goes on (sixth session, H100: the
// rare code inlined between the hot parts cost 13% at the same instruction count).
#ifndef PACKKV_CUDA_ATTENTION_FAMILY_CUDACORE_CUH
#define PACKKV_CUDA_ATTENTION_FAMILY_CUDACORE_CUH

#include <cuda_pipeline_primitives.h>
#include <math.h>

#include <type_traits>

#include "attention/attention.h"
#include "attention/clamped_block.cuh"
#include "attention/cta_layout.cuh"
#include "attention/cudacore_rounds.cuh"
#include "attention/online_softmax.cuh"
#include "attention/residual_window.cuh"
#include "attention/split_merge.cuh"
#include "attention/tile_walk.cuh"
#include "attention/zs_stage.cuh"
#include "attention/tuning.h"
#include "attention/variants.cuh"
#include "device_util.cuh"
#include "kernels.h"
#include "format/shape.h"

namespace packkv {
namespace cu {

// Whether a V scale of the block's compact fields (16-bit, zs_stage.cuh: the fp32
// scale's bits 30..15, N of them at `scale`, 4-byte aligned) exceeds 2^84: below it
// |s| (|z| + 255) <= 2^84 (2^15 + 255) < 2^100 (kFitAbove) for every int16 zero point, so
// SoftmaxState::fit_block has nothing to do. 2^84 is the field 0xD300. Whole warp.
__device__ __forceinline__ bool compact_scales_above_2p84(const uint8_t* scale, int N, int lane) {
  const uint32_t* w = reinterpret_cast<const uint32_t*>(scale);
  uint32_t big = 0;
#pragma unroll 1
  for (int i = lane; i < N / 2; i += 32) big |= __vcmpgtu2(w[i], 0xD300D300u);
  return __any_sync(0xffffffffu, big != 0);
}

// Whether a V grid magnitude |s| (|z| + 255) of the block's wide fields (int32 zero points,
// fp32 scales, N each) exceeds 2^100 (kFitAbove), on a view known
// to be wide, in a loop that is not unrolled (it sits in the fast path). Whole warp.
__device__ __forceinline__ bool wide_grid_above_2p100(const ZsView& v, int N, int lane) {
  const float* s = reinterpret_cast<const float*>(v.scale);
  const int32_t* z = reinterpret_cast<const int32_t*>(v.zero);
  float big = 0.f;
#pragma unroll 1
  for (int i = lane; i < N; i += 32) big = fmaxf(big, fabsf(s[i]) * (fabsf(static_cast<float>(z[i])) + 255.f));
  return __any_sync(0xffffffffu, big > kFitAbove);
}

// Bulk staging (sm_90, TMA), the counterpart of tile_walk.cuh stage(): bulk_bytes is the
// size of the 16-byte chunks that hold [src, src + n); stage_bulk has the leader lane copy
// them into dst (16-byte aligned) with one cp.async.bulk completing on the warp's mbarrier
// `bar` (a shared address: the warp part's AttnSmem::bar, cta_layout.cuh) and returns, in
// every lane, the offset in dst of src[0]. Per block: bulk_arm with the bytes of all its
// copies, the copies, bulk_wait on the barrier's current phase parity.
__device__ __forceinline__ uint32_t bulk_bytes(const uint8_t* src, size_t n) {
  const uintptr_t a0 = reinterpret_cast<uintptr_t>(src) & ~static_cast<uintptr_t>(15);
  const uintptr_t a1 = (reinterpret_cast<uintptr_t>(src) + n + 15) & ~static_cast<uintptr_t>(15);
  return static_cast<uint32_t>(a1 - a0);
}
__device__ __forceinline__ uint32_t stage_bulk(uint8_t* dst, const uint8_t* src, uint32_t bytes, uint32_t bar,
                                               bool leader) {
  const uintptr_t a0 = reinterpret_cast<uintptr_t>(src) & ~static_cast<uintptr_t>(15);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (leader)
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                     static_cast<uint32_t>(__cvta_generic_to_shared(dst))),
                 "l"(a0), "r"(bytes), "r"(bar)
                 : "memory");
#endif
  return static_cast<uint32_t>(reinterpret_cast<uintptr_t>(src) - a0);
}
__device__ __forceinline__ void bulk_init(uint32_t bar, bool leader) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (leader) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(bar) : "memory");
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncwarp();
#endif
}
// Lane 0: orders the warp's earlier generic accesses to the buffers before the bulk
// copies (fence.proxy.async) and arms the barrier for tx bytes.
__device__ __forceinline__ void bulk_arm(uint32_t bar, uint32_t tx, bool leader) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (leader) {
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(tx) : "memory");
  }
#endif
}
__device__ __forceinline__ void bulk_wait(uint32_t bar, uint32_t phase) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "{\n\t.reg .pred P1;\n"
      "K2_WAIT:\n\t"
      "mbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1;\n\t"
      "@P1 bra K2_DONE;\n\t"
      "bra K2_WAIT;\n"
      "K2_DONE:\n\t}\n" ::"r"(bar),
      "r"(phase)
      : "memory");
#endif
}

// Device. Grid (n_splits + res_splits - split0, H_kv * n_gchunks, b.n), nw*32 threads, dynamic
// smem attn_smem<V>(c, G, nw).total. CTA (split = split0 + blockIdx.x, KV head and GQA-group chunk, sequence)
// covers compressed blocks [split*bps, (split+1)*bps) of the sequence (splits n_splits ..
// gridDim.x - 1: its residual window) for G query heads (heads qh0 .. qh0+n_valid-1).
// Inputs: a.q [n_seqs][n_q_heads][D] in a.q_dtype (scores, decode), a.probs fp32
// [..][ld] (apply). Outputs: scores fp32 [..][ld] at original token positions (scores),
// or one partial per (sequence, head, split) in a.partial (split_merge.cuh). Reads only;
// thread-safe across calls. Register targets: V::min_ctas (tuning.h).
template <int G, typename V>
__global__ void __launch_bounds__(kMaxWarps * 32, V::min_ctas(G))
    cudacore_attn_kernel(KernelConfig c, AttnBatch b, CacheDevicePtrs d, AttnCall a, int n_gchunks, int gqa_group,
                         int bps, int n_splits, int split0) {
  extern __shared__ __align__(16) uint8_t smem[];
  const int nw = blockDim.x >> 5;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int octet = lane >> 3, octet_lane = lane & 7;
  const AttnSeq& s = b.s[blockIdx.z];
  const int row = b.first + blockIdx.z;
  const int kvh = blockIdx.y / n_gchunks;
  const int chunk = blockIdx.y - kvh * n_gchunks;
  const int qh0 = kvh * gqa_group + chunk * G;
  const int n_valid = min(G, gqa_group - chunk * G);
  const int D = c.shape.head_dim, N = c.shape.block_tokens, R = N / 16;
  const int split = split0 + static_cast<int>(blockIdx.x);  // split0 > 0: residual splits only

  const AttnSmem L = attn_smem<V>(c, G, nw);
  // This warp's V accumulator rows (acc_rows(G); the residual window uses row 0).
  const int arw = acc_row_words(G, D);
  constexpr int kAccRows = acc_rows(G), kVRows = v_rows(G);
  float* qS = reinterpret_cast<float*>(smem + L.q);
  float* qsum = reinterpret_cast<float*>(smem + L.qsum);
  // K centring: blocks hold K - mu; their scores get q . mu (qmu: per query head, times the
  // softmax scale for decode). Scores: added to each block score; decode: to the split's
  // running max m at write_partial (a constant shift of every score of a block split).
  float* qmu = qsum + G;
  const bool centred = c.k_center != 0;
  float* acc = reinterpret_cast<float*>(smem + L.acc) + static_cast<size_t>(warp) * kAccRows * arw;
  float* ml = reinterpret_cast<float*>(smem + L.ml);
  uint8_t* wb = smem + L.warp0 + static_cast<size_t>(warp) * L.stride;
  uint8_t* kbuf = wb + L.kbuf;
  uint8_t* vbuf = wb + L.vbuf;
  float* sc = reinterpret_cast<float*>(wb + L.sc);   // [G][N] scores, then weights
  float* Wr = reinterpret_cast<float*>(wb + L.wr);   // [G][16] per-round sum w
  float* WZr = reinterpret_cast<float*>(wb + L.wzr); // [G][16] per-round sum w*z
  int* round_start = reinterpret_cast<int*>(wb + L.round_start);
  int* pre = reinterpret_cast<int*>(wb + L.pre);
  // The CTA view for the shared pieces, built from the locals above (filling the struct
  // field by field first cost 2-3% more instructions in apply and decode, nvcc 13.0 sm_90).
  const Cta<G> t{warp, lane, nw, row, kvh, qh0, n_valid, split, qS, qsum, acc, arw, ml, wb, sc, Wr, WZr, round_start, pre};

  // This warp's first block address, loaded before the queries so that the two loads
  // overlap (short contexts: a warp often has one block).
  unsigned long long first_ptr = 0ull;
  if (split < n_splits) {
    const int first = split * bps + warp;
    if (first < min(s.n_blocks, split * bps + bps))
      first_ptr = d.block_table[static_cast<size_t>(s.seq) * c.max_blocks + first];
  }
  if (V::kUsesK) {
    load_queries<G, V>(qS, a, row, qh0, n_valid, D);  // decode: scaled, so t.sc holds scaled scores
    __syncthreads();
    if (warp == 0) {
      for (int g = 0; g < G; ++g) {
        float x = 0.f;
        for (int ch = lane; ch < D; ch += 32) x += qS[g * D + ch];
        x = warp_sum(x);
        if (lane == 0) qsum[g] = x;
        if (centred && s.n_blocks > 0) {  // K centring: blocks hold K - mu, their scores get q . mu
          const float* mu = d.k_mean + (static_cast<size_t>(s.seq) * c.shape.n_kv_heads + kvh) * D;
          double m = 0.0;
          for (int ch = lane; ch < D; ch += 32) m += static_cast<double>(qS[g * D + ch]) * static_cast<double>(mu[ch]);
          m = warp_sum_f64(m);
          if (lane == 0) qmu[g] = static_cast<float>(m);
        }
      }
    }
  }
  if (V::kUsesV)
    for (int i = lane; i < kAccRows * arw; i += 32) acc[i] = 0.f;
  __syncthreads();

  SoftmaxState<G> sm;

  if (split < n_splits) {
    const int blk_begin = split * bps;
    const int blk_end = min(s.n_blocks, blk_begin + bps);
    const fmt::Shape& SH = c.shape;
    const int grp = SH.scale_group(kvh);
    const int ek = fmt::len_bits(c.shape.bits_k), ev = fmt::len_bits(c.shape.bits_v);
    const unsigned long long* table = d.block_table + static_cast<size_t>(s.seq) * c.max_blocks;
    const uint32_t* KT = reinterpret_cast<const uint32_t*>(kbuf);
    const uint32_t* VT = reinterpret_cast<const uint32_t*>(vbuf);
    // Where the zero points and scales of this head's scale group sit in every block that
    // is not a wide fallback block (fields 1: K, or V in apply; fields 2: V in decode).
    constexpr int kKv1 = V::kUsesK ? fmt::kK : fmt::kV;
    const bool compact = SH.zs == fmt::ZsFormat::kCompact;
    const uint32_t z1_at = static_cast<uint32_t>(SH.zero_at(kKv1, grp));
    // Decode on a compact cache with one scale group: K zero points, K scales, V zero
    // points, V scales are 2N bytes each, one after another from k_zero_at (shape.h),
    // staged with one copy (joint staging).
    const bool joint = V::kUsesK && V::kUsesV && compact && SH.scale_groups == 1;
    // sm_90 decode with one query head (tuning.h kBulkStaging): the tiles and the joint fields
    // staged by one lane's bulk copies on this warp's mbarrier.
    constexpr bool kBulk = kBulkStaging && G == 1
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
        && V::kUsesK && V::kUsesV
#else
        && false
#endif
        ;
    const uint32_t bar = static_cast<uint32_t>(__cvta_generic_to_shared(wb + L.bar));
    uint32_t phase = 0;
    if (kBulk) bulk_init(bar, lane == 0);
    // One block of the split (blob: its address). RARE false: the fast path, which
    // returns false at the first sign that the block needs a rare path (before anything
    // outside the warp's staging buffers and scores changed); RARE true: every path (the
    // same block again). The fast path is a loop of its own below, with the rare path's
    // code after it: inlined between the hot parts, that code made decode with one query
    // head 13% slower at the same instruction count (RESULTS.md, sixth session).
    constexpr bool kTwoPaths = kDecodeTwoPaths && V::kSoftmax && G <= 2;
    auto block = [&](auto rare_tag, int blk, const uint8_t* blob) -> bool {
      constexpr bool RARE = decltype(rare_tag)::value;
      size_t koff, ksz, voff, vsz;
      SH.tile_extent(blob, fmt::kK, kvh, &koff, &ksz);
      SH.tile_extent(blob, fmt::kV, kvh, &voff, &vsz);
      const bool fallback = compact && fmt::load2<uint16_t>(blob + SH.layout.k_scale_at) == fmt::kWideMarker;
      if (kTwoPaths && !RARE && fallback) return false;  // a wide fallback block: the rare path
      // Stage this block: K tile, V tile, their zero points and scales (zs_stage.cuh: in
      // the block's encoding, read as such), the perm.
      uint32_t kt = 0, vt = 0;
      bool own_buffers = !joint || fallback;
      ZsView zs1, zv;  // K (V in apply), V
      if (kBulk) {
        const uint32_t kb = bulk_bytes(blob + koff, ksz), vb = bulk_bytes(blob + voff, vsz);
        const uint32_t fb = own_buffers ? 0u : bulk_bytes(blob + z1_at, 8 * static_cast<size_t>(N));
        bulk_arm(bar, kb + vb + fb, lane == 0);
        kt = stage_bulk(kbuf, blob + koff, kb, bar, lane == 0);
        vt = stage_bulk(vbuf, blob + voff, vb, bar, lane == 0);
        if (!own_buffers) {
          uint8_t* f = wb + L.zb;
          f += stage_bulk(f, blob + z1_at, fb, bar, lane == 0);
          zs1 = ZsView{f, f + 2 * N, false};
          zv = ZsView{f + 4 * N, f + 6 * N, false};
        }
      } else {
        kt = V::kUsesK ? stage(kbuf, blob + koff, ksz) : 0u;
        vt = V::kUsesV ? stage(vbuf, blob + voff, vsz) : 0u;
      }
      // Each field into its own buffer (zs_stage), where the rare paths widen it.
      auto stage_fields = [&]() {
        ZsSrc src1{blob + z1_at, blob + SH.scale_at(kKv1, grp), !compact};
        ZsSrc src2{blob + SH.zero_at(fmt::kV, grp), blob + SH.scale_at(fmt::kV, grp), !compact};
        if ((!kTwoPaths || RARE) && fallback) {  // wide fields after the tiles (zs_stage.cuh locates them)
          const ZsHeader zh = zs_header(blob, SH);
          src1 = zs_locate(blob, SH, zh, kKv1, grp);
          src2 = zs_locate(blob, SH, zh, fmt::kV, grp);
        }
        zs1 = zs_stage(wb + L.zb, wb + L.sb, src1, N);
        zv = zs1;
        if (V::kUsesK && V::kUsesV) zv = zs_stage(wb + L.vzb, wb + L.vsb, src2, N);
      };
      if (own_buffers) {
        stage_fields();
      } else if (!kBulk) {
        uint8_t* f = wb + L.zb;
        f += stage(f, blob + z1_at, 8 * static_cast<size_t>(N));
        zs1 = ZsView{f, f + 2 * N, false};
        zv = ZsView{f + 4 * N, f + 6 * N, false};
      }
      // The rare paths: each field in its own buffer first (staged again).
      auto own_fields = [&]() {
        if (own_buffers) return;
        __syncwarp();
        stage_fields();
        __pipeline_commit();
        __pipeline_wait_prior(0);
        __syncwarp();
        own_buffers = true;
      };
      const uint8_t* perm = blob + SH.layout.perm_at;
      if (V::kPositions && c.shape.has_perm) perm = wb + L.pb + stage(wb + L.pb, perm, N);
      __pipeline_commit();
      auto orig = [&](int slot) -> int64_t {
        return s.sink_len + static_cast<int64_t>(blk) * N + (c.shape.has_perm ? perm[slot] : slot);
      };
      __pipeline_wait_prior(0);
      if (kBulk) {
        bulk_wait(bar, phase);
        phase ^= 1u;
      }
      __syncwarp();

      // Blocks near the fp32 limit (issue 18 item 3, clamped_block.cuh) take the rare
      // paths, which work on widened copies of the fields (zs_widen). V: one vote per
      // block on the staged V fields before the weights (for compact fields on the
      // scale exponents alone: a V scale at most 2^84 keeps |s| (|z| + 255) <= 2^100
      // for every int16 z), or every block once the warp's accumulators are rescaled.
      // K: the scores are computed as on normal data and checked where they are made;
      // one vote after the block's rounds redoes the block in double (clamped values).
      bool vrare = false;
      if (V::kUsesV)
        vrare = sm.e != 0 || (zv.wide ? wide_grid_above_2p100(zv, N, lane)
                                      : compact_scales_above_2p84(zv.scale, N, lane));
      if (!RARE && vrare) return false;
      if (V::kUsesK) {
        walk_tile(KT, kt, D, c.shape.bits_k, ek, R, round_start, pre);
        bool krare = false;
        for (int r0 = 0; r0 < R; r0 += kRoundBatch) {
          const int r = r0 + octet;
          if (r < R) {
            float part[16 * G];
#pragma unroll
            for (int i = 0; i < 16 * G; ++i) part[i] = 0.f;
            const LanePos p = lane_pos(kt, round_start, pre, r, octet_lane, D, c.shape.bits_k, ek);
            if (c.shape.bits_k <= 4) k_round<G, true>(KT, p, D, c.shape.bits_k, ek, octet_lane * (D >> 3), qS, part);
            else k_round<G, false>(KT, p, D, c.shape.bits_k, ek, octet_lane * (D >> 3), qS, part);
            const int base = octet_reduce<16 * G>(part);
#pragma unroll
            for (int i = 0; i < 2 * G; ++i) {
              const int v = base + i, k = v / G, g = v - k * G;
              const int slot = 16 * r + k;
              const float s_slot = zs1.s(slot);
              const float score = s_slot * (part[i] + static_cast<float>(zs1.z(slot)) * qsum[g]);
              // Not finite (fp32 fold overflow), or a scale from which a grid point may
              // lie beyond FLT_MAX (such a grid needs |s| > 2^97): rare path.
              krare |= !(fabsf(score) <= 3.4028234663852886e38f) || fabsf(s_slot) > 0x1p96f;
              store_score<V>(a, row, qh0, n_valid, centred, qmu, sc, N, g, slot, orig, score);
            }
          }
        }
        __syncwarp();
        if (__any_sync(0xffffffffu, krare)) {  // the block's scores again, in double
          if (!RARE) return false;
          if constexpr (RARE) {
            own_fields();
            zs_widen(zs1, wb + L.zb, wb + L.sb, N);
            k_block_clamped<G>(KT, kt, D, N, c.shape.bits_k, qS, zs1.scales(), zs1.zeros(), round_start, pre, sc);
            if (!V::kUsesV)
              for (int i = lane; i < n_valid * N; i += 32) {
                const int g = i / N, slot = i - g * N;
                a.out[scores_index(a, row, qh0, g, orig(slot))] = centred ? sc[i] + qmu[g] : sc[i];
              }
            __syncwarp();
          }
        }
      }
      if (V::kUsesV) {
        bool vclamp = false;
        if constexpr (RARE) {
          if (vrare) {
            own_fields();
            zs_widen(zv, wb + (V::kUsesK ? L.vzb : L.zb), wb + (V::kUsesK ? L.vsb : L.sb), N);
            vclamp = sm.fit_block(t, zv.scales(), zv.zeros(), N, (1 << c.shape.bits_v) - 1);
          }
        }
        sm.template weights<V>(t, a, D, N, N, &zv, orig);
        if constexpr (RARE) {
          if (vclamp) {  // a V grid point beyond FLT_MAX (zv widened above)
            v_block_clamped<G>(VT, vt, D, N, c.shape.bits_v, zv.scales(), zv.zeros(), sm.e, sc, acc, round_start, pre);
            return true;
          }
        }
        walk_tile(VT, vt, D, c.shape.bits_v, ev, R, round_start, pre);
        for (int r0 = 0; r0 < R; r0 += kRoundBatch) {
          const int r = r0 + octet;
          const bool on = r < R;
          if (kVRows && !on) continue;
          // Without per-octet rows every octet runs (the shuffles of v_round need all 32
          // lanes): an octet without a round decodes round r0 with zero weights.
          float wk[G][16], wr[G], wz[G];
#pragma unroll
          for (int g = 0; g < G; ++g) {
#pragma unroll
            for (int i = 0; i < 16; ++i) wk[g][i] = on ? sc[g * N + 16 * r + i] : 0.f;
            wr[g] = on ? Wr[g * 16 + r] : 0.f;
            wz[g] = on ? WZr[g * 16 + r] : 0.f;
          }
          const LanePos p = lane_pos(vt, round_start, pre, on ? r : r0, octet_lane, D, c.shape.bits_v, ev);
          float* row_acc = acc + static_cast<size_t>(kVRows ? octet : 0) * arw;
          const bool lead = kVRows || octet == 0;
          if (c.shape.bits_v <= 4) v_round<G, true>(VT, p, D, c.shape.bits_v, ev, octet_lane, wk, wr, wz, lead, row_acc);
          else v_round<G, false>(VT, p, D, c.shape.bits_v, ev, octet_lane, wk, wr, wz, lead, row_acc);
        }
        __syncwarp();
      }
      return true;
    };
    // The blocks of this warp: the fast path over as many blocks as it takes, the block it
    // stopped at again with every path, then on with the fast path.
    // Scores, apply and decode with 4 query heads keep one path (the rare code inline): two
    // copies of the block took their register counts up (apply G 1: 164 bytes of spills at
    // its 64-register target; decode G 4: 250 registers; nvcc 13.0 sm_90).
    int blk = blk_begin + warp;
    unsigned long long cur = first_ptr;
    if (!kTwoPaths) {
      for (; blk < blk_end; blk += nw) {
        const unsigned long long nxt = blk + nw < blk_end ? table[blk + nw] : 0ull;  // prefetch
        block(std::true_type{}, blk, reinterpret_cast<const uint8_t*>(cur));
        cur = nxt;
      }
    }
    while (kTwoPaths && blk < blk_end) {
      for (; blk < blk_end; blk += nw) {
        const unsigned long long nxt = blk + nw < blk_end ? table[blk + nw] : 0ull;  // prefetch
        if (!block(std::false_type{}, blk, reinterpret_cast<const uint8_t*>(cur))) break;
        cur = nxt;
      }
      if (blk >= blk_end) break;
      const unsigned long long nxt = blk + nw < blk_end ? table[blk + nw] : 0ull;
      block(std::true_type{}, blk, reinterpret_cast<const uint8_t*>(cur));
      cur = nxt;
      blk += nw;
    }
  } else {
    residual_window<G, V>(c, d, s, a, t, sm, n_splits, split0 + static_cast<int>(gridDim.x) - n_splits);
  }
  if (!V::kUsesV) return;
  write_partial<G, V>(a, D, t, sm, reinterpret_cast<const float*>(smem + L.acc), centred && split < n_splits ? qmu : nullptr);
}

}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_ATTENTION_FAMILY_CUDACORE_CUH
