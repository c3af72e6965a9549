// The attention dispatcher (attention.h): plans a launch (split_plan.h), picks the kernel
// family (families.h: tensorcore where tensorcore_selected says so, cudacore otherwise),
// enqueues its one launch over every split (compressed and residual) and the merge of the
// splits (decode, apply). Host only.
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
  const AttnPlan p = plan_splits(c, b, a.n_q_heads, cudacore_warps(c, G, a.variant));
  // One family launch computes every split (compressed and residual), then the merge.
  if (tensorcore_selected(c, a.variant, p.gqa_group, b.max_blocks)) tensorcore_launch(c, b, d, a, p, stream);
  else cudacore_launch(c, b, d, a, p, stream);
  if (a.variant == AttnVariant::kScores) return;
  launch_merge(a.variant == AttnVariant::kDecode, c.shape.head_dim, a.n_q_heads, b.first, b.n, p.n_splits + p.res_splits,
               a.partial, a.out, a.lse, stream);
}

}  // namespace cu
}  // namespace packkv
