// The residual ring of each sequence (DESIGN.md "Data flow"): the last tokens of a
// sequence, uncompressed in kv_dtype, in a ring of C = residual_tokens + block_tokens
// slots per sequence (window index i sits in slot (ring_start + i) % C), followed by
// sink_tokens rows for its sink tokens (sink token j in row C + j). Append writes the new
// tokens that stay in the window or become sink tokens (launch_residual_write); the
// ring's addresses live in a device table (launch_set_ring). The flush reads the ring
// (encode_common.cuh source_row), attention and decompression read it too.
#include <cuda_runtime.h>

#include "cuda_check.h"
#include "encode/encode_common.cuh"

namespace packkv {
namespace cu {
namespace {

// Device. Grid (ceil(max_new / 8), n), 256 threads (a warp per token). Writes the new
// tokens that stay in the window (or become sink tokens) into the sequence's ring
// (converted to kv_dtype) and reports non-finite values (or kv_dtype overflow) of those
// tokens through err_key.
__global__ void __launch_bounds__(kThreads) residual_write_kernel(
    KernelConfig c, ResidualBatch b, CacheDevicePtrs d, const void* k_new, const void* v_new,
    int in_dtype) {
  const ResidualSeq& s = b.s[blockIdx.y];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int i = blockIdx.x * (kThreads / 32) + warp;
  if (i >= s.n_new) return;
  const int64_t idx = static_cast<int64_t>(s.residual_len) + i;
  if (idx < s.flushed) return;  // encoded straight from the input (and checked there)
  const size_t row = static_cast<size_t>(c.shape.n_kv_heads) * c.shape.head_dim;
  const size_t src = static_cast<size_t>(s.in_row + i) * row;
  const int slot = s.sink ? c.ring_tokens + static_cast<int>(idx) : static_cast<int>((s.ring_start + idx) % c.ring_tokens);
  const size_t dst = static_cast<size_t>(slot) * row;
  void* ring_k = reinterpret_cast<void*>(d.ring_table[2 * s.seq]);
  void* ring_v = reinterpret_cast<void*>(d.ring_table[2 * s.seq + 1]);
  bool bad = false;
  for (size_t j = lane; j < row; j += 32) {
    float kx = round_to(load_elem(k_new, src + j, in_dtype), c.kv_dtype);
    float vx = round_to(load_elem(v_new, src + j, in_dtype), c.kv_dtype);
    bad |= !isfinite(kx) || !isfinite(vx);
    store_elem(ring_k, dst + j, c.kv_dtype, kx);
    store_elem(ring_v, dst + j, c.kv_dtype, vx);
  }
  bad = __any_sync(0xffffffffu, bad);
  if (bad && lane == 0) report_nonfinite(d.err_key, s.seq, s.pos_base + idx);
}

// Device, one thread: table[2*seq .. 2*seq+1] = (k, v).
__global__ void set_ring_kernel(unsigned long long* table, int seq, unsigned long long k,
                                unsigned long long v) {
  table[2 * seq] = k;
  table[2 * seq + 1] = v;
}

}  // namespace

void launch_set_ring(const CacheDevicePtrs& d, int seq, void* ring_k, void* ring_v, cudaStream_t stream) {
  set_ring_kernel<<<1, 1, 0, stream>>>(d.ring_table, seq, reinterpret_cast<unsigned long long>(ring_k),
                                       reinterpret_cast<unsigned long long>(ring_v));
  check_launch("set_ring_kernel");
}

void launch_residual_write(const KernelConfig& c, const ResidualBatch& b,
                           const CacheDevicePtrs& d, const void* k_new, const void* v_new,
                           int in_dtype, cudaStream_t stream) {
  if (b.n == 0 || b.max_new == 0) return;
  dim3 g((b.max_new + kThreads / 32 - 1) / (kThreads / 32), b.n);
  residual_write_kernel<<<g, kThreads, 0, stream>>>(c, b, d, k_new, v_new, in_dtype);
  check_launch("residual_write_kernel");
}

}  // namespace cu
}  // namespace packkv
