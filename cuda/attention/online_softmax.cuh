// Weights of the V pass: the online softmax of the decode variant (flash-decoding's
// running max and sum, PACKKV.md section 6.3), or the caller's probabilities (apply);
// then w = p * s per token and the per-round sums that fold the zero points in. Device
// only.
//
// Finite for every finite cache (issue 18 item 3; split_merge.cuh and clamped_block.cuh have the rest): a warp's
// V accumulators hold sum_t w_t v_t * 2^-e, e = SoftmaxState::e (an exact power of two,
// 0 unless the data need it). A compressed block whose grid magnitude |s| (|z| + 255)
// exceeds 2^100 (fit_block: a per-block vote on the staged metadata, never per code)
// raises e to its exponent and has its staged scales multiplied by 2^-e; the residual
// window (dense values up to FLT_MAX, no metadata) always runs at e = kResidualExp for
// fp32/bf16 rings, which bounds sum_t p_t v_t by FLT_MAX for p_t <= 1 and at most
// 2^kResidualExp tokens. Decode scores in t.sc are already multiplied by the softmax scale
// (the kernel scales q), so a raw score beyond FLT_MAX with a finite scaled one works.
#ifndef PACKKV_CUDA_ATTENTION_ONLINE_SOFTMAX_CUH
#define PACKKV_CUDA_ATTENTION_ONLINE_SOFTMAX_CUH

#include <math.h>
#include <stdint.h>

#include "attention/attention.h"
#include "attention/cta_layout.cuh"
#include "attention/zs_stage.cuh"
#include "device_util.cuh"

namespace packkv {
namespace cu {

// x * 2^k for |k| <= 252, exactly (two multiplications by normal powers of two of the
// same direction; no ldexpf call).
__device__ __forceinline__ float pow2_scale(float x, int k) {
  const int h = k / 2;
  return x * __int_as_float((127 + h) << 23) * __int_as_float((127 + k - h) << 23);
}

// Grid magnitude above which a block's weights are rescaled (fit_block): sums of up to
// 2^31 tokens of weights below 2^100 times codes and zero points stay far inside fp32.
constexpr float kFitAbove = 0x1p100f;
// Accumulator exponent of the residual splits of an fp32 / bf16 ring: 2^-16 weights keep
// sum_t p_t v_t finite for p_t <= 1 over up to 65536 ring tokens (ring_tokens is far
// smaller); fp16 rings (|v| <= 65504) run at 0.
constexpr int kResidualExp = 16;

// Per query head of a warp: the running max m of the scaled scores and the running sum l
// of exp(score - m) (decode; apply leaves them at -inf and 0); per warp: the exponent e
// of its V accumulators (they hold the sums times 2^-e).
template <int G>
struct SoftmaxState {
  float m[G], l[G];
  int e;
  __device__ __forceinline__ SoftmaxState() : e(0) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      m[g] = -INFINITY;
      l[g] = 0.f;
    }
  }

  // Before weights() of a compressed block near the fp32 limit (the V vote of the
  // kernel said yes) or of any block once e > 0: the staged V scales vs[0..N) and zero points vz of
  // this warp's block, widened (zs_stage.cuh zs_widen; codes up to qmax). Raises e to the
  // exponent of the largest grid magnitude |s| (|z| + 255) above kFitAbove (rescaling the
  // accumulator rows of t exactly) and multiplies vs by 2^-e in place. Returns true if a
  // grid point (z or z + qmax) * s lies beyond FLT_MAX: the block then needs clamped
  // values (clamped_block.cuh). Whole warp.
  __device__ __forceinline__ bool fit_block(const Cta<G>& t, float* vs, const int32_t* vz, int N, int qmax) {
    int e_blk = 0;  // >= log2 |s| (|z| + 255) where that exceeds kFitAbove (exponents added: the product may be inf)
    for (int i = t.lane; i < N; i += 32) {
      const float s = fabsf(vs[i]), zq = fabsf(static_cast<float>(vz[i])) + 255.f;
      if (s * zq > kFitAbove) e_blk = max(e_blk, ilogbf(s) + ilogbf(zq) + 2);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) e_blk = max(e_blk, __shfl_xor_sync(0xffffffffu, e_blk, o));
    if (e_blk > e) {
      constexpr int kAccRows = acc_rows(G);
      for (int i = t.lane; i < kAccRows * t.arw; i += 32) t.acc[i] = pow2_scale(t.acc[i], e - e_blk);
      e = e_blk;
    }
    // Grid beyond FLT_MAX, in the scaled units: |z s'| or |(z + qmax) s'| > FLT_MAX 2^-e.
    const double lim = static_cast<double>(pow2_scale(3.4028234663852886e38f, -e));
    bool beyond = false;
    for (int i = t.lane; i < N; i += 32) {
      vs[i] = pow2_scale(vs[i], -e);
      const double s = fabs(static_cast<double>(vs[i])), z = static_cast<double>(vz[i]);
      beyond |= fabs(z) * s > lim || fabs(z + qmax) * s > lim;
    }
    __syncwarp();
    return __any_sync(0xffffffffu, beyond);
  }

  // Weights of n slots (of N per block; head_dim D) of this warp: from the scaled scores
  // x in t.sc (decode: p = exp(x - m), rescaling l and the warp's accumulators when m
  // grows) or from a.probs (apply). Writes w = p * s(slot) over the scores in t.sc, and
  // per round r: Wr = sum w, WZr = sum w * z(slot), with the block's staged V fields zv.
  // zv null: residual tokens (s = 2^-e, z = 0). orig(slot): original token position.
  // Whole warp.
  template <typename V, typename Orig>
  __device__ __forceinline__ void weights(const Cta<G>& t, const AttnCall& a, int D, int N, int n, const ZsView* zv,
                                          Orig&& orig) {
    constexpr int kAccRows = acc_rows(G);
    const int lane = t.lane;
    float* sc = t.sc;
    const float res_unit = __int_as_float((127 - e) << 23);  // 2^-e (0 <= e <= kResidualExp here)
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float m_new = m[g], alpha = 1.f;
      if (V::kSoftmax) {
        float mx = -INFINITY;
        for (int i = lane; i < n; i += 32) mx = fmaxf(mx, sc[g * N + i]);
        mx = warp_max(mx);
        m_new = fmaxf(m[g], mx);
        alpha = m_new == -INFINITY ? 1.f : __expf(m[g] - m_new);
      }
      float psum = 0.f;
      for (int t0 = 0; t0 < n; t0 += 32) {
        const int i = t0 + lane;
        float w = 0.f, wz = 0.f;
        if (i < n) {
          float p;
          if (V::kSoftmax) {
            const float x = sc[g * N + i];
            p = x == -INFINITY ? 0.f : __expf(x - m_new);
          } else {
            p = (g < t.n_valid) ? a.probs[(static_cast<size_t>(t.row) * a.n_q_heads + t.qh0 + g) * a.ld + orig(i)] : 0.f;
          }
          psum += p;
          w = zv ? p * zv->s(i) : p * res_unit;
          wz = zv ? w * static_cast<float>(zv->z(i)) : 0.f;
          sc[g * N + i] = w;
        }
#pragma unroll
        for (int o = 8; o > 0; o >>= 1) {
          w += __shfl_xor_sync(0xffffffffu, w, o);
          wz += __shfl_xor_sync(0xffffffffu, wz, o);
        }
        const int r = (t0 >> 4) + (lane >> 4);
        if ((lane & 15) == 0 && 16 * r < n) {
          t.Wr[g * 16 + r] = w;
          t.WZr[g * 16 + r] = wz;
        }
      }
      if (V::kSoftmax) {
        psum = warp_sum(psum);
        l[g] = l[g] * alpha + psum;
        m[g] = m_new;
        if (alpha != 1.f)
          for (int i = lane; i < kAccRows * D; i += 32) t.acc[(i / D) * t.arw + g * D + i % D] *= alpha;
      }
    }
    __syncwarp();
  }
};

}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_ATTENTION_ONLINE_SOFTMAX_CUH
