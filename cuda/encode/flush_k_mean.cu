// Flush stage 0 (encode_common.cuh), K centring only (PACKKV_K_TRANSFORM_CENTER): the
// mean mu of K over a sequence's block 0, computed when that block is flushed, as the
// CPU backend does (cpu/append.cpp encode_flushed): per (KV head, channel), the float64
// sum of the block's K values (rounded to kv_dtype) in token order, divided by N, rounded
// to fp32. The later stages quantize K - mu (fp32) of every block of the sequence.
#include <cuda_runtime.h>

#include "cuda_check.h"
#include "encode/encode_common.cuh"

namespace packkv {
namespace cu {
namespace {

// Device. Grid b.n (descriptors), 256 threads. A descriptor whose first block is block 0
// of its sequence writes d.k_mean[seq][0 .. H*D); the others return. Thread i sums
// channel i (stride 256) over the N tokens, in token order.
__global__ void __launch_bounds__(kThreads) flush_k_mean_kernel(KernelConfig c, FlushBatch b, CacheDevicePtrs d,
                                                                const void* k_new, int in_dtype) {
  const FlushSeq& s = b.s[blockIdx.x];
  if (s.first_block != 0 || s.n_flush == 0) return;
  float* mu = d.k_mean + static_cast<size_t>(s.seq) * c.shape.n_kv_heads * c.shape.head_dim;
  const int hd = c.shape.n_kv_heads * c.shape.head_dim, N = c.shape.block_tokens;
  for (int i = threadIdx.x; i < hd; i += blockDim.x) {
    double sum = 0.0;
    for (int t = 0; t < N; ++t) {
      const RowRef r = source_row(c, d, s, 0, t, k_new, k_new, in_dtype);
      sum += static_cast<double>(row_value(r, r.k, static_cast<size_t>(i), c.kv_dtype));
    }
    mu[i] = static_cast<float>(sum / N);
  }
}

}  // namespace

void launch_flush_k_mean(const KernelConfig& c, const FlushBatch& b, const CacheDevicePtrs& d, const void* k_new,
                         int in_dtype, cudaStream_t stream) {
  if (!c.k_center || b.n == 0) return;
  flush_k_mean_kernel<<<b.n, kThreads, 0, stream>>>(c, b, d, k_new, in_dtype);
  check_launch("flush_k_mean_kernel");
}

}  // namespace cu
}  // namespace packkv
