#include "quantize.h"

#include <algorithm>
#include <cmath>

namespace packkv {

void quantize_tokens(const float* x, int n_tokens, int n_heads, int head_dim, int groups,
                     float rel_scale, int bits, uint8_t* codes, fmt::Affine* affine) {
  const int row = n_heads * head_dim;
  const int group_len = row / groups;  // values per scale group
  const uint32_t qmax = (1u << bits) - 1u;
  const float qmax_f = (float)qmax;
  const float kRound = 12582912.0f;  // 1.5 * 2^23: (y + kRound) - kRound = rint(y) for |y| <= 2^22
  for (int t = 0; t < n_tokens; ++t) {
    for (int g = 0; g < groups; ++g) {
      const float* xs = x + (size_t)t * row + (size_t)g * group_len;
      uint8_t* qs = codes + (size_t)t * row + (size_t)g * group_len;
      float lo = xs[0], hi = xs[0];
      for (int i = 1; i < group_len; ++i) {  // written as selects so that it vectorizes
        lo = xs[i] < lo ? xs[i] : lo;
        hi = xs[i] > hi ? xs[i] : hi;
      }
      const fmt::Affine a = fmt::group_affine(lo, hi, rel_scale);
      affine[(size_t)g * n_tokens + t] = a;
      const float amax = std::max(std::fabs(lo), std::fabs(hi));
      if (a.scale != 0.0f && amax / std::fabs(a.scale) < 4194304.0f) {
        // Fast path, same results as fmt::quantize: x / s is IEEE division, rounding
        // half to even by the 1.5 * 2^23 trick (vectorizes without SSE4.1), and every
        // intermediate is an integer below 2^23, hence exact.
        const float s = a.scale, z = (float)a.zero;
        for (int i = 0; i < group_len; ++i) {
          float y = ((xs[i] / s + kRound) - kRound) - z;
          y = y < 0.0f ? 0.0f : y;
          y = y > qmax_f ? qmax_f : y;
          qs[i] = (uint8_t)(int)y;
        }
      } else {
        for (int i = 0; i < group_len; ++i) qs[i] = (uint8_t)fmt::quantize(xs[i], a, qmax);
      }
    }
  }
}

}  // namespace packkv
