// Weights of the V pass: the online softmax of the decode variant (flash-decoding's
// running max and sum, PACKKV.md section 6.3), or the caller's probabilities (apply);
// then w = p * s per token and the per-round sums that fold the zero points in. Device
// only.
#ifndef PACKKV_CUDA_ATTENTION_ONLINE_SOFTMAX_CUH
#define PACKKV_CUDA_ATTENTION_ONLINE_SOFTMAX_CUH

#include <math.h>
#include <stdint.h>

#include "attention/attention.h"
#include "attention/cta_layout.cuh"
#include "device_util.cuh"

namespace packkv {
namespace cu {

// Per query head of a warp: the running max m of the scaled scores and the running sum l
// of exp(score - m) (decode; apply leaves them at -inf and 0).
template <int G>
struct SoftmaxState {
  float m[G], l[G];
  __device__ __forceinline__ SoftmaxState() {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      m[g] = -INFINITY;
      l[g] = 0.f;
    }
  }

  // Weights of n slots (of N per block; head_dim D) of this warp: from the scores in t.sc
  // (decode: p = exp(x*scale - m), rescaling l and the warp's accumulators when m grows) or
  // from a.probs (apply). Writes w = p * vs[slot] over the scores in t.sc, and per round r:
  // Wr = sum w, WZr = sum w * vz. vs/vz null: residual tokens (s = 1, z = 0). orig(slot):
  // original token position. Whole warp.
  template <typename V, typename Orig>
  __device__ __forceinline__ void weights(const Cta<G>& t, const AttnCall& a, int D, int N, int n, const float* vs,
                                          const int32_t* vz, Orig&& orig) {
    constexpr int kAccRows = acc_rows(G);
    const int lane = t.lane;
    float* sc = t.sc;
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float m_new = m[g], alpha = 1.f;
      if (V::kSoftmax) {
        float mx = -INFINITY;
        for (int i = lane; i < n; i += 32) mx = fmaxf(mx, sc[g * N + i] * a.scale);
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
            const float x = sc[g * N + i] * a.scale;
            p = x == -INFINITY ? 0.f : __expf(x - m_new);
          } else {
            p = (g < t.n_valid) ? a.probs[(static_cast<size_t>(t.row) * a.n_q_heads + t.qh0 + g) * a.ld + orig(i)] : 0.f;
          }
          psum += p;
          w = vs ? p * vs[i] : p;
          wz = vz ? w * static_cast<float>(vz[i]) : 0.f;
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
