// The dense tokens of one (sequence, KV head): its sink tokens (positions 0 ..
// sink_len - 1) and its residual window (after the blocks), read from the ring buffers in
// kv_dtype (kernels.h AttnSeq), scored against the queries (scores, decode) and added to
// the accumulators with their weights (apply, decode), in the last splits of an attention
// launch (splits n_splits .. gridDim.x - 1; dense token j = sink token j for j < sink_len,
// else residual token j - sink_len; warp w of residual split r takes the 16-token chunks
// r*nw + w, stepping by nw * res_splits). Shared by the kernel families that use the
// accumulator layout of cta_layout.cuh. Device only.
#ifndef PACKKV_CUDA_ATTENTION_RESIDUAL_WINDOW_CUH
#define PACKKV_CUDA_ATTENTION_RESIDUAL_WINDOW_CUH

#include <math.h>
#include <stdint.h>

#include "attention/attention.h"
#include "attention/cta_layout.cuh"
#include "attention/online_softmax.cuh"
#include "attention/variants.cuh"  // scores_index
#include "device_util.cuh"
#include "kernels.h"

namespace packkv {
namespace cu {

// sum_c q[c] * k[o + c] over n channels of a ring row, in double (the rare retry of an fp32
// partial dot product that left the fp32 range).
__device__ __forceinline__ float half_dot_wide(const float* q, const void* ring, size_t o, int n, int dtype) {
  double x = 0.0;
  for (int ch = 0; ch < n; ++ch) x += static_cast<double>(q[ch]) * static_cast<double>(load_elem(ring, o + ch, dtype));
  return static_cast<float>(x);
}

// Residual split of CTA t (t.split >= n_splits; res_splits residual splits in all) for
// variant V; sm: the warps' softmax state (decode). Scores go to a.out at original positions (scores) or to t.sc.
template <int G, typename V>
__device__ __forceinline__ void residual_window(const KernelConfig& c, const CacheDevicePtrs& d, const AttnSeq& s,
                                                const AttnCall& a, const Cta<G>& t, SoftmaxState<G>& sm,
                                                int n_splits, int res_splits) {
  const int D = c.shape.head_dim, N = c.shape.block_tokens, H = c.shape.n_kv_heads;
  const int lane = t.lane;
  int* ring_slot = t.round_start;  // free in a residual split
  float* acc = t.acc;
  float* sc = t.sc;
  // Dense tokens of the ring, 16 per warp iteration. A lane issues its
  // loads in batches (K: 4 vectors of 8 elements, V: 8 tokens) before the FMAs that use
  // them, so an iteration costs a few memory latencies (at head_dim 128: 2 for K, 4 for
  // V), not one per element: the residual splits are the critical path of short contexts.
  const size_t row_elems = static_cast<size_t>(H) * D;
  const size_t head_off = static_cast<size_t>(t.kvh) * D;
  const void* ring_k = reinterpret_cast<const void*>(d.ring_table[2 * s.seq]);
  const void* ring_v = reinterpret_cast<const void*>(d.ring_table[2 * s.seq + 1]);
  const int64_t block_tokens = static_cast<int64_t>(s.n_blocks) * N;  // between the sinks and the window
  const int n_dense = s.sink_len + s.residual_len;
  // V accumulators at 2^-kResidualExp for rings that can hold values near FLT_MAX
  // (online_softmax.cuh); this split holds no compressed block.
  sm.e = c.kv_dtype == PACKKV_DTYPE_F16 ? 0 : kResidualExp;
  for (int c0 = 16 * ((t.split - n_splits) * t.nw + t.warp); c0 < n_dense; c0 += 16 * t.nw * res_splits) {
    const int n = min(16, n_dense - c0);
    // Ring rows of the n tokens: sink rows after the ring's slots, then ring slots.
    if (lane < n) {
      const int j = c0 + lane;
      ring_slot[lane] = j < s.sink_len ? c.ring_tokens + j : (s.ring_start + j - s.sink_len) % c.ring_tokens;
    }
    __syncwarp();
    auto orig = [&](int i) -> int64_t {
      const int j = c0 + i;
      return j < s.sink_len ? static_cast<int64_t>(j) : block_tokens + j;
    };
    if (V::kUsesK) {
      // Lane = token i (lane & 15) x half hh (lane >> 4) of the channels: q . k_i over
      // channels [hh D/2, (hh+1) D/2) from 8-element loads, halves summed by a shuffle.
      const int i = lane & 15, hh = lane >> 4, hd = D >> 1;
      float part[G];
#pragma unroll
      for (int g = 0; g < G; ++g) part[g] = 0.f;
      if (i < n) {
        const size_t o = static_cast<size_t>(ring_slot[i]) * row_elems + head_off + static_cast<size_t>(hh * hd);
        const float* qh = t.qS + hh * hd;
#pragma unroll 4
        for (int c8 = 0; c8 < hd; c8 += 8) {
          float x[8];
          load_elem8(ring_k, o + c8, c.kv_dtype, x);
#pragma unroll
          for (int k = 0; k < 8; ++k)
#pragma unroll
            for (int g = 0; g < G; ++g) part[g] = fmaf(qh[g * D + c8 + k], x[k], part[g]);
        }
      }
      // A partial dot product beyond FLT_MAX (K near the fp32 limit) while the score itself
      // may be finite: this lane redoes its half in double (rare; no cost otherwise).
      bool big = false;
#pragma unroll
      for (int g = 0; g < G; ++g) big |= !isfinite(part[g]);
      if (big && i < n) {
        const size_t o = static_cast<size_t>(ring_slot[i]) * row_elems + head_off + static_cast<size_t>(hh * hd);
        const float* qh = t.qS + hh * hd;
        for (int g = 0; g < G; ++g) part[g] = half_dot_wide(qh + g * D, ring_k, o, hd, c.kv_dtype);
      }
#pragma unroll
      for (int g = 0; g < G; ++g) part[g] += __shfl_xor_sync(0xffffffffu, part[g], 16);
      if (hh == 0) {
#pragma unroll
        for (int g = 0; g < G; ++g) {
          if (!V::kUsesV) {
            if (i < n && g < t.n_valid) a.out[scores_index(a, t.row, t.qh0, g, orig(i))] = part[g];
          } else {
            sc[g * N + i] = i < n ? part[g] : -INFINITY;
          }
        }
      }
      __syncwarp();
    }
    if (V::kUsesV) {
      sm.template weights<V>(t, a, D, N, n, nullptr, orig);
      // Lane = channel pair (2 cp, 2 cp + 1): 8 tokens' values are loaded first (one 4-
      // or 8-byte load each; 8, not 16, to keep the kernel's register count), then added
      // for all G heads.
      for (int cp = lane; cp < (D >> 1); cp += 32) {
        const int ch = 2 * cp;
#pragma unroll 1
        for (int i0 = 0; i0 < n; i0 += 8) {
          float2 v[8];
#pragma unroll
          for (int k = 0; k < 8; ++k)
            v[k] = i0 + k < n ? load_elem2(ring_v, static_cast<size_t>(ring_slot[i0 + k]) * row_elems + head_off + ch, c.kv_dtype)
                              : make_float2(0.f, 0.f);
#pragma unroll
          for (int g = 0; g < G; ++g) {
            float x0 = acc[acc_word(g, ch, D)], x1 = acc[acc_word(g, ch + 1, D)];
#pragma unroll
            for (int k = 0; k < 8; ++k) {
              if (i0 + k < n) {
                const float w = sc[g * N + i0 + k];
                x0 = fmaf(w, v[k].x, x0);
                x1 = fmaf(w, v[k].y, x1);
              }
            }
            acc[acc_word(g, ch, D)] = x0;
            acc[acc_word(g, ch + 1, D)] = x1;
          }
        }
      }
    }
    __syncwarp();
  }
}

}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_ATTENTION_RESIDUAL_WINDOW_CUH
