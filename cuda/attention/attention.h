// Interface between the CUDA cache (cuda_cache.cu) and the attention kernels
// (cuda/attention/): the batch and call descriptors, passed BY VALUE as kernel
// parameters, and the host functions that size and enqueue a call. Every launch is
// asynchronous, allocates nothing, and throws Error(PACKKV_ERR_CUDA) if the launch itself
// fails. Host code; the descriptors are plain data.
#ifndef PACKKV_CUDA_ATTENTION_ATTENTION_H
#define PACKKV_CUDA_ATTENTION_ATTENTION_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

namespace packkv {
namespace cu {

constexpr int kMaxAttnSeqs = 160;  // sequences per launch (kernel parameters under 4 KB: 20-byte AttnSeq)
struct AttnBatch {
  int n;            // sequences in this launch
  int first;        // index of the first one in the caller's arrays (q/out rows)
  int max_blocks;   // max n_blocks over the batch
  AttnSeq s[kMaxAttnSeqs];
};

// Which attention a call computes (variants.cuh gives each its kernel type).
enum class AttnVariant : int { kDecode = 0, kScores = 1, kApply = 2 };

struct AttnCall {
  AttnVariant variant;
  int n_q_heads;
  const void* q;         // [n_seqs][n_q_heads][D] (decode, scores)
  int q_dtype;
  float scale;           // decode
  float* out;            // decode/apply: [n_seqs][n_q_heads][D]; scores: [..][ld]
  float* lse;            // decode, optional
  int64_t ld;            // scores / probs row stride
  const float* probs;    // apply: [n_seqs][n_q_heads][ld]
  float* partial;        // workspace
};

static_assert(sizeof(KernelConfig) + sizeof(AttnBatch) + sizeof(CacheDevicePtrs) + sizeof(AttnCall) + 64 < 4096,
              "attention kernel parameters over 4 KB (see kMaxFlushSeqs)");

// Workspace bytes of an attention call on n_seqs sequences with n_q_heads query heads.
size_t attn_workspace_bytes(const KernelConfig& c, int n_seqs, int n_q_heads);
// CTA rows (grid y) of an attention launch: n_kv_heads * GQA-group chunks. CUDA allows
// at most 65535.
int attn_grid_rows(const KernelConfig& c, int n_q_heads);
// Dynamic shared memory the largest attention launch of this config needs with one warp
// per CTA (4 query heads per CTA, decode): every launch fits when this does; checked at
// create.
size_t attn_min_smem_bytes(const KernelConfig& c);
// Enqueues one attention call over a batch (at most kMaxAttnSeqs sequences): the kernel
// family's splits, then the merge kernel (decode, apply).
void launch_attention(const KernelConfig& c, const AttnBatch& b, const CacheDevicePtrs& d,
                      const AttnCall& a, cudaStream_t stream);

}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_ATTENTION_ATTENTION_H
