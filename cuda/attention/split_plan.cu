// Split heuristics of an attention launch (split_plan.h). Host only.
#include "attention/split_plan.h"

#include "attention/tuning.h"

namespace packkv {
namespace cu {

int heads_per_cta(int gqa_group) {
  int G = 1;
  while (G < gqa_group && G < kMaxG) G *= 2;
  return G;
}

AttnPlan plan_splits(const KernelConfig& c, const AttnBatch& b, int n_q_heads, int nw) {
  AttnPlan p;
  p.gqa_group = n_q_heads / c.shape.n_kv_heads;
  p.G = heads_per_cta(p.gqa_group);
  p.n_gchunks = (p.gqa_group + p.G - 1) / p.G;
  p.nw = nw;
  const int ctas_per_split = b.n * c.shape.n_kv_heads * p.n_gchunks;
  // Several waves of the resident CTAs, so that the last wave is a small part of the call.
  const int target = kSplitCtasPerSm * (c.num_sms > 0 ? c.num_sms : kDefaultSms);
  int splits = (target + ctas_per_split - 1) / ctas_per_split;
  splits = splits < 1 ? 1 : (splits > kMaxSplits ? kMaxSplits : splits);
  int bps = (b.max_blocks + splits - 1) / splits;
  if (bps < nw) bps = nw;
  int n_splits = b.max_blocks == 0 ? 0 : (b.max_blocks + bps - 1) / bps;
  while (n_splits > kMaxSplits) { ++bps; n_splits = (b.max_blocks + bps - 1) / bps; }
  p.bps = bps;
  p.n_splits = n_splits;
  // Residual window: one 16-token chunk per warp where possible (a CTA that walks several
  // chunks waits one memory latency each, the critical path of short contexts).
  int max_res = 0;
  for (int i = 0; i < b.n; ++i) {  // sink tokens and residual window: the dense tokens
    const int dense = b.s[i].sink_len + b.s[i].residual_len;
    max_res = dense > max_res ? dense : max_res;
  }
  int res_splits = ((max_res + 15) / 16 + nw - 1) / nw;
  p.res_splits = res_splits < 1 ? 1 : (res_splits > kMaxResSplits ? kMaxResSplits : res_splits);
  p.first_split = 0;
  return p;
}

}  // namespace cu
}  // namespace packkv
