#include "quantize.h"

#include <algorithm>

namespace packkv {

void quantize_tokens(const float* x, int n_tokens, int n_heads, int head_dim, int groups,
                     float rel_scale, int bits, uint8_t* codes, fmt::Affine* affine) {
  const int row = n_heads * head_dim;
  const int group_len = row / groups;  // values per scale group
  const uint32_t qmax = (1u << bits) - 1u;
  for (int t = 0; t < n_tokens; ++t) {
    for (int g = 0; g < groups; ++g) {
      const float* xs = x + (size_t)t * row + (size_t)g * group_len;
      uint8_t* qs = codes + (size_t)t * row + (size_t)g * group_len;
      float lo = xs[0], hi = xs[0];
      for (int i = 1; i < group_len; ++i) {
        lo = std::min(lo, xs[i]);
        hi = std::max(hi, xs[i]);
      }
      fmt::Affine a = fmt::group_affine(lo, hi, rel_scale);
      affine[(size_t)g * n_tokens + t] = a;
      for (int i = 0; i < group_len; ++i) qs[i] = (uint8_t)fmt::quantize(xs[i], a, qmax);
    }
  }
}

}  // namespace packkv
