// Merging partial results (flash-decoding, PACKKV.md section 6.3): first the warps of a
// CTA (write_partial, end of every split of decode and apply), then the splits of a
// (sequence, query head) (merge_kernel.cu). A partial is [m, l, acc[D]]: the max of the
// scaled scores, the sum of exp(score - m) and the unnormalized output (decode), or acc
// only (apply, m = l = 0). Shared by the kernel families. Device only.
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
// a.partial[row][qh][split][D + 2]. Whole CTA (one __syncthreads).
template <int G, typename V>
__device__ __forceinline__ void write_partial(const AttnCall& a, int D, const Cta<G>& t, const SoftmaxState<G>& sm,
                                              const float* acc0) {
  constexpr int kAccRows = acc_rows(G);
  if (t.lane == 0) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      t.ml[(t.warp * G + g) * 2] = sm.m[g];
      t.ml[(t.warp * G + g) * 2 + 1] = sm.l[g];
    }
  }
  __syncthreads();
  const float* ml = t.ml;
  const int nw = t.nw, arw = t.arw;
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
    if (V::kSoftmax) {
      float M = -INFINITY;
      for (int w = 0; w < nw; ++w) M = fmaxf(M, ml[(w * G + g) * 2]);
      if (k == 0) {
        v = M;
      } else {
        for (int w = 0; w < nw; ++w) {
          const float mw = ml[(w * G + g) * 2];
          if (mw == -INFINITY) continue;
          const float x = k == 1 ? ml[(w * G + g) * 2 + 1] : acc_sum(w, g, k - 2);
          v += x * __expf(mw - M);
        }
      }
    } else if (k >= 2) {
      for (int w = 0; w < nw; ++w) v += acc_sum(w, g, k - 2);
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
