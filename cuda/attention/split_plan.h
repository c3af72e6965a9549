// Split heuristics of an attention launch (host): how many query heads a CTA serves, and
// how a batch's compressed blocks and residual windows are cut into splits (grid x).
// Shared by every kernel family; the family only says how many warps fit per CTA.
// Knob values: tuning.h. Pure functions; thread-safe.
#ifndef PACKKV_CUDA_ATTENTION_SPLIT_PLAN_H
#define PACKKV_CUDA_ATTENTION_SPLIT_PLAN_H

#include "attention/attention.h"
#include "kernels.h"

namespace packkv {
namespace cu {

struct AttnPlan {
  int gqa_group;       // query heads per KV head (GQA gqa_group)
  int G;           // query heads per CTA: 1, 2 or 4
  int n_gchunks;   // CTAs per KV head: ceil(gqa_group / G)
  int nw;          // warps per CTA
  int bps;         // compressed blocks per split
  int n_splits;    // compressed-token splits (grid x 0 .. n_splits - 1)
  int res_splits;  // residual-window splits (grid x n_splits .. n_splits + res_splits - 1)
  int first_split; // the first split a family launch computes (grid x = n_splits + res_splits -
                   // first_split): 0, or n_splits when another family took the compressed splits
};

// Query heads per CTA for a GQA group: the power of two >= gqa_group, at most kMaxG.
int heads_per_cta(int gqa_group);
// The plan of one launch over batch b with n_q_heads query heads, G = heads_per_cta and
// nw warps per CTA (chosen by the family for that G). Splits: about kSplitCtasPerSm CTAs
// per SM in all, at most kMaxSplits, at least nw blocks each; residual window: one
// 16-token chunk per warp where possible, at most kMaxResSplits.
AttnPlan plan_splits(const KernelConfig& c, const AttnBatch& b, int n_q_heads, int nw);

}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_ATTENTION_SPLIT_PLAN_H
