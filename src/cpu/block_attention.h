// CPU attention on one compressed block: the packed integers are decoded pack by pack
// and multiplied in the integer domain; zero point and scale are folded in afterwards
// (PACKKV.md section 6.3): score = s * (q . k_int + z * sum(q)), and
// out += sum_t p_t s_t k_int_t + sum_t p_t s_t z_t. Accumulation is fp32 inside a
// round of 16 tokens and fp64 across rounds and blocks (apply: fp32 across the rounds of a
// block). The folded terms are combined in fp64, so that an fp32 overflow of one of them
// (s * k_int beyond FLT_MAX while s * (k_int + z) is not) cannot reach the result.
#ifndef PACKKV_CPU_BLOCK_ATTENTION_H
#define PACKKV_CPU_BLOCK_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

#include <memory>
#include <vector>

#include "format/affine.h"
#include "format/shape.h"

namespace packkv {

// A buffer that grows and never value-initializes (T trivial): scratch space whose every
// element is written before it is read.
template <typename T>
class Buffer {
 public:
  T* get(size_t n) {
    if (n > cap_) {
      p_.reset(new T[n]);
      cap_ = n;
    }
    return p_.get();
  }

 private:
  std::unique_ptr<T[]> p_;
  size_t cap_ = 0;
};

// Reusable buffers of the block kernels (one per thread / call; no allocation per block).
struct AttnScratch {
  std::vector<float> f;  // the direct path's decoded head
  Buffer<float> w, kern;  // apply weights and fp32 partial sums / score accumulators; the round kernels' scratch
  Buffer<double> d;
  Buffer<float> scale;    // a block's fields by stored slot: scales,
  Buffer<int32_t> zero;   // zero points,
  Buffer<int32_t> orig;   // original token indices
};

// The n_q query heads q_in ([n_q][head_dim] float) prepared for block_scores: per head its
// sum and a power-of-two scaling for the fp32 products (computed once for all the blocks
// a query reads).
struct ScoreQuery {
  const float* q_in = nullptr;
  int n_q = 0;
  std::vector<float> q;               // q_j * 2^-e_j, [n_q][head_dim]
  std::vector<double> sum_q, unscale;  // sum_c q_j[c]; 2^e_j
};
void prepare_score_query(const float* q_in, int n_q, int head_dim, ScoreQuery* sq);

// Scores of the n_q query heads q ([n_q][head_dim] float) that read KV head `head`,
// for the block_tokens tokens of one blob: out[j * ld + t] = q_j . K^_t + bias[j] with t
// the token's original index inside the block (bias: [n_q] double, or null for none;
// K centering passes q_j . mu). Out is float (the scores call: a score beyond the fp32
// range is +-inf) or double (decode, whose softmax is finite for any finite score).
// Queries above 2^100 in magnitude are scaled by a power of two for the fp32 products
// (exact), so no intermediate overflows.
template <typename Out>
void block_scores(const fmt::Shape& shape, const uint8_t* blob, int head, const float* q, int n_q,
                  Out* out, size_t ld, AttnScratch* scratch, const double* bias = nullptr);
// The same with the query prepared by prepare_score_query.
template <typename Out>
void block_scores(const fmt::Shape& shape, const uint8_t* blob, int head, const ScoreQuery& q, Out* out, size_t ld,
                  AttnScratch* scratch, const double* bias = nullptr);

// Adds sum_t probs[j * ld + t] * V^_t[head] to out[j][0..head_dim) (double) for the
// n_q query heads, t the original index inside the block. Weights p * s above 2^100 in
// magnitude are scaled by a power of two for the fp32 products (exact), so that neither
// p * s * offset nor its sum overflows when the result itself is finite.
void block_apply(const fmt::Shape& shape, const uint8_t* blob, int head, const float* probs, int n_q,
                 size_t ld, double* out, AttnScratch* scratch);

}  // namespace packkv

#endif  // PACKKV_CPU_BLOCK_ATTENTION_H
