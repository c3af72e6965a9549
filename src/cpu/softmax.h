// The softmax of the CPU decode: p_t = exp(scale * s_t - m) / sum, in float64, with its
// log-sum-exp, in the instruction set of cpu_isa() (cpu/isa.h): the portable path calls
// std::exp; the AVX2 and AVX-512 paths evaluate exp four / eight tokens at a time
// (cpu/softmax.cpp: relative error below 1e-13, far below the fp32 rounding of the
// probabilities). Host; pure apart from the writes below.
#ifndef PACKKV_CPU_SOFTMAX_H
#define PACKKV_CPU_SOFTMAX_H

#include <stdint.h>

namespace packkv {

// probs[0..len) = softmax(scale * scores[0..len)) (raw scores, len >= 1, scale > 0);
// returns log(sum_t exp(scale * scores_t)). Scores are double: q . k may exceed FLT_MAX
// while the softmax and its weighted sum of V are finite (issue 18 item 3). A token of
// score -inf (out of the sliding window) gets probability 0; when every score is -inf,
// every probability is 0 and the result is -inf. scores is overwritten with
// exp(scale * scores_t - max) (each exponential is computed once).
double softmax_row(double* scores, int64_t len, float scale, float* probs);

}  // namespace packkv

#endif  // PACKKV_CPU_SOFTMAX_H
