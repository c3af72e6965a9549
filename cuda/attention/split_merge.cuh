// Merging partial results (flash-decoding, PACKKV.md section 6.3): first the warps of a
// CTA (write_partial, end of every split of decode and apply), then the splits of a
// (sequence, query head) (merge_kernel.cu). A partial is [m, l, o[D]]: the max of the
// scaled scores, the sum of exp(score - m) and the split's normalized output
// o = sum_t exp(score_t - m) v_t / l (decode), or o = sum_t p_t v_t only (apply, m = l =
// 0). Decode stores o rather than l * o: l * o may exceed FLT_MAX where o cannot (issue
// 18 item 3), and the merge weighs the o's by exp(m - M) l / L <= 1. Shared by the kernel
// families. Device only.
#ifndef PACKKV_CUDA_ATTENTION_SPLIT_MERGE_CUH
#define PACKKV_CUDA_ATTENTION_SPLIT_MERGE_CUH

#include <math.h>

#include "attention/attention.h"
#include "attention/cta_layout.cuh"
#include "attention/online_softmax.cuh"

namespace packkv {
namespace cu {

// Merges the warps of CTA t (their softmax states sm and accumulator rows, acc0: the
// first warp's) and writes
// this split's partial for each of its n_valid query heads to
// a.partial[row][qh][split][D + 2]. m_shift (decode, or null): per query head, a constant
// that every score of the split lacks (K centring's q . mu), added to m. Whole CTA (one
// __syncthreads).
template <int G, typename V>
__device__ __forceinline__ void write_partial(const AttnCall& a, int D, const Cta<G>& t, const SoftmaxState<G>& sm,
                                              const float* acc0, const float* m_shift = nullptr) {
  constexpr int kAccRows = acc_rows(G);
  const int nw = t.nw, arw = t.arw;
  int* warp_e = reinterpret_cast<int*>(t.ml + nw * G * 2);  // each warp's accumulator exponent
  if (t.lane == 0) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      t.ml[(t.warp * G + g) * 2] = sm.m[g];
      t.ml[(t.warp * G + g) * 2 + 1] = sm.l[g];
    }
    warp_e[t.warp] = sm.e;
  }
  __syncthreads();
  const float* ml = t.ml;
  auto acc_sum = [&](int w, int g, int ch) {  // warp w's sum of its octet rows
    float x = 0.f;
#pragma unroll
    for (int q = 0; q < kAccRows; ++q) x += acc0[(static_cast<size_t>(w) * kAccRows + q) * arw + acc_word(g, ch, D)];
    return x;
  };
  const int row_len = D + 2;
  for (int i = threadIdx.x; i < t.n_valid * row_len; i += blockDim.x) {
    const int g = i / row_len, k = i - g * row_len;
    float* dst = a.partial + ((static_cast<size_t>(t.row) * a.n_q_heads + t.qh0 + g) * kSplitsTotal + t.split) * row_len;
    float v = 0.f;
    // A warp's accumulators hold its sums times 2^-e (online_softmax.cuh): scaled back
    // with pow2_scale after they are weighed, so that no term exceeds the result's magnitude.
    if (V::kSoftmax) {
      float M = -INFINITY, Ls = 0.f;
      for (int w = 0; w < nw; ++w) M = fmaxf(M, ml[(w * G + g) * 2]);
      for (int w = 0; w < nw; ++w) {
        const float mw = ml[(w * G + g) * 2];
        if (mw != -INFINITY) Ls += ml[(w * G + g) * 2 + 1] * __expf(mw - M);
      }
      if (k == 0) {
        v = m_shift && M != -INFINITY ? M + m_shift[g] : M;
      } else if (k == 1) {
        v = Ls;
      } else if (Ls > 0.f) {
        for (int w = 0; w < nw; ++w) {
          const float mw = ml[(w * G + g) * 2];
          if (mw == -INFINITY) continue;
          v += pow2_scale(acc_sum(w, g, k - 2) * (__expf(mw - M) / Ls), warp_e[w]);
        }
      }
    } else if (k >= 2) {
      for (int w = 0; w < nw; ++w) v += pow2_scale(acc_sum(w, g, k - 2), warp_e[w]);
    }
    dst[k] = v;
  }
}

// Host: enqueues the merge of n_splits_used partials of every (sequence, query head) of a
// batch of b_n sequences starting at row `first`: decode (softmax): exact flash-decoding
// merge into out [..][D] fp32 and lse (optional; -inf for empty sequences, whose output
// is 0); apply: the sum of the partial outputs. Throws Error(PACKKV_ERR_CUDA) if the
// launch fails.
void launch_merge(bool softmax, int D, int n_q_heads, int first, int b_n, int n_splits_used,
                  const float* partial, float* out, float* lse, cudaStream_t stream);

}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_ATTENTION_SPLIT_MERGE_CUH
