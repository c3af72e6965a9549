// The merge of an attention call's splits (split_merge.cuh launch_merge). Shared by
// every kernel family: it reads only the partials of the workspace.
#include <cuda_runtime.h>
#include <math.h>

#include "attention/split_merge.cuh"
#include "attention/tuning.h"
#include "cuda_check.h"
#include "device_util.cuh"

namespace packkv {
namespace cu {
namespace {

// Merges the splits of every (sequence, query head) of a batch (see launch_merge).
// Device; grid b.n * n_q_heads, blockDim.x a multiple of 32. Softmax: warp 0 reads every
// split's (m, l) at once and leaves the rescale factors in shared memory, so the call is
// two memory round trips.
__global__ void merge_kernel(bool softmax, int D, int n_q_heads, int first, int n_splits_used,
                             const float* partial, float* out, float* lse) {
  const int rq = blockIdx.x;  // row-local (seq in batch) * n_q_heads + head
  const size_t octet = static_cast<size_t>(first) * n_q_heads + rq;
  const int row_len = D + 2;  // floats of one partial
  const float* p = partial + octet * kSplitsTotal * row_len;
  if (softmax) {
    __shared__ float fac[kSplitsTotal];  // exp(m_s - M), 0 for empty splits
    __shared__ float ML[2];
    if (threadIdx.x < 32) {
      constexpr int kPer = (kSplitsTotal + 31) / 32;
      float m[kPer], l[kPer], M = -INFINITY;
#pragma unroll
      for (int k = 0; k < kPer; ++k) {
        const int sp = threadIdx.x + 32 * k;
        m[k] = sp < n_splits_used ? p[sp * row_len] : -INFINITY;
        l[k] = sp < n_splits_used ? p[sp * row_len + 1] : 0.f;
        M = fmaxf(M, m[k]);
      }
      M = warp_max(M);
      float L = 0.f;
#pragma unroll
      for (int k = 0; k < kPer; ++k) {
        const int sp = threadIdx.x + 32 * k;
        const float f = m[k] == -INFINITY ? 0.f : __expf(m[k] - M);
        if (sp < n_splits_used) fac[sp] = f;
        L += l[k] * f;
      }
      L = warp_sum(L);
      if (threadIdx.x == 0) {
        ML[0] = M;
        ML[1] = L;
      }
    }
    __syncthreads();
    const float M = ML[0], L = ML[1];
    for (int ch = threadIdx.x; ch < D; ch += blockDim.x) {
      float v = 0.f;
      if (L > 0.f) {
        for (int sp = 0; sp < n_splits_used; ++sp)
          if (fac[sp] != 0.f) v += p[sp * row_len + 2 + ch] * fac[sp];
        v /= L;
      }
      out[octet * D + ch] = v;
    }
    if (threadIdx.x == 0 && lse) lse[octet] = L > 0.f ? M + logf(L) : -INFINITY;
  } else {
    for (int ch = threadIdx.x; ch < D; ch += blockDim.x) {
      float v = 0.f;
      for (int sp = 0; sp < n_splits_used; ++sp) v += p[sp * row_len + 2 + ch];
      out[octet * D + ch] = v;
    }
  }
}


}  // namespace

void launch_merge(bool softmax, int D, int n_q_heads, int first, int b_n, int n_splits_used,
                  const float* partial, float* out, float* lse, cudaStream_t stream) {
  merge_kernel<<<b_n * n_q_heads, 128, 0, stream>>>(softmax, D, n_q_heads, first, n_splits_used, partial, out, lse);
  check_launch("merge_kernel");
}

}  // namespace cu
}  // namespace packkv
