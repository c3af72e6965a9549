// The attention dispatcher (attention.h): plans a launch (split_plan.h), picks the kernel
// family (families.h: tensorcore for the compressed splits where tensorcore_selected
// says so, and for the residual splits when its grid is small; cudacore for the rest),
// enqueues its splits and the merge of the splits (decode, apply). Host only.
#include "attention/attention.h"

#include "attention/families.h"
#include "attention/split_merge.cuh"
#include "attention/split_plan.h"
#include "attention/tuning.h"

namespace packkv {
namespace cu {

size_t attn_workspace_bytes(const KernelConfig& c, int n_seqs, int n_q_heads) {
  return static_cast<size_t>(n_seqs) * n_q_heads * kSplitsTotal * (c.shape.head_dim + 2) * sizeof(float);
}

int attn_grid_rows(const KernelConfig& c, int n_q_heads) {
  const int gqa_group = n_q_heads / c.shape.n_kv_heads;
  const int G = heads_per_cta(gqa_group);
  return c.shape.n_kv_heads * ((gqa_group + G - 1) / G);
}

size_t attn_min_smem_bytes(const KernelConfig& c) { return cudacore_min_smem_bytes(c); }

void launch_attention(const KernelConfig& c, const AttnBatch& b, const CacheDevicePtrs& d,
                      const AttnCall& a, cudaStream_t stream) {
  if (b.n == 0) return;
  const int G = heads_per_cta(a.n_q_heads / c.shape.n_kv_heads);
  AttnPlan p = plan_splits(c, b, a.n_q_heads, cudacore_warps(c, G, a.variant));
  // The tensorcore family takes the compressed splits where the rule picks it, and the
  // residual splits too when its grid is small; otherwise the cudacore kernel runs the
  // residual splits alone.
  bool done = false;
  if (tensorcore_selected(c, a.variant, p.gqa_group, b.max_blocks)) {
    done = tensorcore_launch(c, b, d, a, p, stream);
    p.first_split = p.n_splits;
  }
  if (!done) cudacore_launch(c, b, d, a, p, stream);
  if (a.variant == AttnVariant::kScores) return;
  launch_merge(a.variant == AttnVariant::kDecode, c.shape.head_dim, a.n_q_heads, b.first, b.n, p.n_splits + p.res_splits,
               a.partial, a.out, a.lse, stream);
}

}  // namespace cu
}  // namespace packkv
