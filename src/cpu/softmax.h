// The softmax of the CPU decode: p_t = exp(scale * s_t - m) / sum, in float64, with its
// log-sum-exp. Host; pure.
#ifndef PACKKV_CPU_SOFTMAX_H
#define PACKKV_CPU_SOFTMAX_H

#include <stdint.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace packkv {

// probs[0..len) = softmax(scale * scores[0..len)) (raw scores, len >= 1); returns
// log(sum_t exp(scale * scores_t)). Scores are double: q . k may exceed FLT_MAX while the
// softmax and its weighted sum of V are finite (issue 18 item 3). scores is overwritten
// with exp(scale * scores_t - max) (each exponential is computed once).
inline double softmax_row(double* scores, int64_t len, float scale, float* probs) {
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t t = 0; t < len; ++t) mx = std::max(mx, (double)scale * scores[t]);
  double sum = 0.0;
  for (int64_t t = 0; t < len; ++t) sum += (scores[t] = std::exp((double)scale * scores[t] - mx));
  for (int64_t t = 0; t < len; ++t) probs[t] = (float)(scores[t] / sum);
  return mx + std::log(sum);
}

}  // namespace packkv

#endif  // PACKKV_CPU_SOFTMAX_H
