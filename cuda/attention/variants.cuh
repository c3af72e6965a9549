// The three attention variants as types (the kernel families are templates over them):
//   Scores  s_t * (q . k_int_t + z_t * sum(q))      (packkv_attn_scores)
//   Apply   sum_t p_t s_t (v_int_t + z_t)            (packkv_attn_apply)
//   Decode  online softmax over both                 (packkv_attn_decode)
// A variant says what a kernel reads and writes through static constexpr flags, so that
// every branch on it is resolved at compile time; tuning.h holds its register targets.
// dispatch.cu maps the call's AttnVariant (attention.h) to one of these types. Also
// where a score goes (scores_index, store_score), the same in both kernel families.
// Host and device; no state.
#ifndef PACKKV_CUDA_ATTENTION_VARIANTS_CUH
#define PACKKV_CUDA_ATTENTION_VARIANTS_CUH

#include <stddef.h>

#include "attention/attention.h"
#include "attention/tuning.h"

namespace packkv {
namespace cu {

struct ScoresVariant {
  static constexpr AttnVariant kId = AttnVariant::kScores;
  static constexpr bool kUsesK = true;       // decodes K tiles against the queries
  static constexpr bool kUsesV = false;      // decodes V tiles into accumulators; writes split partials
  static constexpr bool kSoftmax = false;    // weights from an online softmax of the scores
  static constexpr bool kPositions = true;   // reads or writes rows at original token positions
  __host__ __device__ static constexpr int min_ctas(int G) { return G == 1 ? kMinCtasScoresG1 : G == 4 ? kMinCtasG4ScoresApply : 0; }
};

struct ApplyVariant {
  static constexpr AttnVariant kId = AttnVariant::kApply;
  static constexpr bool kUsesK = false;
  static constexpr bool kUsesV = true;
  static constexpr bool kSoftmax = false;    // weights are the caller's probabilities
  static constexpr bool kPositions = true;
  __host__ __device__ static constexpr int min_ctas(int G) {
    return G == 1 ? kMinCtasApplyG1 : G == 4 ? kMinCtasG4ScoresApply : 0;
  }
};

struct DecodeVariant {
  static constexpr AttnVariant kId = AttnVariant::kDecode;
  static constexpr bool kUsesK = true;
  static constexpr bool kUsesV = true;
  static constexpr bool kSoftmax = true;
  static constexpr bool kPositions = false;  // scores stay in shared memory, in stored order
  // 1-2 query heads: 4 CTAs (128 registers). The two copies of the block loop
  // (family_cudacore.cuh: fast path, rare path) took ptxas to 168 registers at G 2 without
  // the target (nvcc 13.0 sm_90); G 1 takes 128 either way.
  __host__ __device__ static constexpr int min_ctas(int G) { return G <= 2 ? 4 : 0; }
};

// Index in AttnCall::out (scores variant: [rows][n_q_heads][ld]) of the score of query
// head qh0 + g of sequence row `row` at original token position pos. (Written as the
// kernels wrote it inline: as a row pointer plus pos, ptxas gave the CUDA-core scores
// kernels other code, nvcc 13.0 sm_90: G 1 72 -> 64 registers and +23 instructions.)
__device__ __forceinline__ size_t scores_index(const AttnCall& a, int row, int qh0, int g, int64_t pos) {
  return (static_cast<size_t>(row) * a.n_q_heads + qh0 + g) * a.ld + pos;
}

// Where the score of a compressed block's slot goes, in both kernel families: the scores
// variant writes it, plus q . mu of the head (qmu[g]) where K is centred, to the output
// row of query head qh0 + g at original position orig(slot), for the heads that exist
// (g < n_valid); apply and decode keep it in the warp's score buffer sc[g * N + slot]
// (stored order) for the weights.
template <typename V, typename Orig>
__device__ __forceinline__ void store_score(const AttnCall& a, int row, int qh0, int n_valid, bool centred,
                                            const float* qmu, float* sc, int N, int g, int slot, Orig&& orig,
                                            float score) {
  if (!V::kUsesV) {
    if (g < n_valid) a.out[scores_index(a, row, qh0, g, orig(slot))] = centred ? score + qmu[g] : score;
  } else {
    sc[g * N + slot] = score;
  }
}

// Calls fn(Variant{}) with the type of variant v.
template <typename Fn>
void with_variant(AttnVariant v, Fn&& fn) {
  switch (v) {
    case AttnVariant::kScores: fn(ScoresVariant{}); break;
    case AttnVariant::kApply: fn(ApplyVariant{}); break;
    default: fn(DecodeVariant{}); break;
  }
}

}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_ATTENTION_VARIANTS_CUH
