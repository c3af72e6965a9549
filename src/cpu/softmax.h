// The softmax of the CPU decode: p_t = exp(scale * s_t - m) / sum, in float64, with its
// log-sum-exp. Host; pure.
#ifndef PACKKV_CPU_SOFTMAX_H
#define PACKKV_CPU_SOFTMAX_H

#include <stdint.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace packkv {

// Replaces row[0..len) (raw scores, len >= 1) by softmax(scale * row) and returns
// log(sum_t exp(scale * row_t)).
inline double softmax_in_place(float* row, int64_t len, float scale) {
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t t = 0; t < len; ++t) mx = std::max(mx, (double)scale * row[t]);
  double sum = 0.0;
  for (int64_t t = 0; t < len; ++t) sum += std::exp((double)scale * row[t] - mx);
  for (int64_t t = 0; t < len; ++t) row[t] = (float)(std::exp((double)scale * row[t] - mx) / sum);
  return mx + std::log(sum);
}

}  // namespace packkv

#endif  // PACKKV_CPU_SOFTMAX_H
