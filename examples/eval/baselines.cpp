#include "baselines.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "numeric.h"

namespace packkv_eval {

ByteCount& ByteCount::operator+=(const ByteCount& o) {
  fp16 += o.fp16;
  payload += o.payload;
  metadata += o.metadata;
  residual += o.residual;
  compressed_fp16 += o.compressed_fp16;
  return *this;
}

int64_t flushed_tokens(int64_t n, int group, int residual) {
  if (n <= residual) return 0;
  return (int64_t)group * ((n - residual) / group);
}

void fp8_fake_quant(const double* x, int n_tokens, int n_heads, int head_dim, std::vector<double>& xhat,
                    std::vector<float>& scales) {
  const size_t row = (size_t)n_heads * head_dim;
  xhat.assign((size_t)n_tokens * row, 0.0);
  scales.assign((size_t)n_heads, 1.0f);
  for (int h = 0; h < n_heads; ++h) {
    double amax = 0.0;
    for (int t = 0; t < n_tokens; ++t)
      for (int c = 0; c < head_dim; ++c) amax = std::max(amax, std::fabs(x[t * row + (size_t)h * head_dim + c]));
    const float s = amax > 0.0 ? (float)(amax / kFp8E4M3Max) : 1.0f;  // stored as fp32
    scales[h] = s;
    for (int t = 0; t < n_tokens; ++t)
      for (int c = 0; c < head_dim; ++c) {
        const size_t i = t * row + (size_t)h * head_dim + c;
        xhat[i] = fp8_e4m3_to_double(double_to_fp8_e4m3(x[i] / (double)s)) * (double)s;
      }
  }
}

ByteCount fp8_bytes(int64_t n_tokens, int n_heads, int head_dim) {
  ByteCount b;
  const int64_t values = n_tokens * n_heads * head_dim;
  b.fp16 = 2 * values;
  b.payload = values;
  b.metadata = 4 * (int64_t)n_heads;
  b.residual = 0;
  b.compressed_fp16 = 2 * values;
  return b;
}

void kivi_quant_group(const double* x, int n, int64_t stride, int bits, double* out) {
  if (bits < 1 || bits > 16) throw std::invalid_argument("kivi_quant_group: bits must be in [1, 16]");
  double mn = x[0], mx = x[0];
  for (int i = 1; i < n; ++i) {
    mn = std::min(mn, x[i * stride]);
    mx = std::max(mx, x[i * stride]);
  }
  const double qmax = (double)((1u << bits) - 1u);
  const double zero = round_to_half(mn);                // stored fp16 zero point
  const double scale = round_to_half((mx - mn) / qmax); // stored fp16 scale
  for (int i = 0; i < n; ++i) {
    double q = 0.0;
    if (scale > 0.0) q = std::min(qmax, std::max(0.0, std::nearbyint((x[i * stride] - zero) / scale)));
    out[i * stride] = zero + q * scale;
  }
}

void kivi_fake_quant_k(const double* k, int n_tokens, int n_heads, int head_dim, int bits,
                       int64_t n_quantized, std::vector<double>& khat) {
  const int64_t row = (int64_t)n_heads * head_dim;
  khat.assign(k, k + (size_t)n_tokens * row);
  if (n_quantized % kKiviGroup != 0 || n_quantized > n_tokens)
    throw std::invalid_argument("kivi_fake_quant_k: n_quantized must be a multiple of 32 and <= n_tokens");
  for (int64_t t0 = 0; t0 < n_quantized; t0 += kKiviGroup)
    for (int64_t c = 0; c < row; ++c)
      kivi_quant_group(k + t0 * row + c, kKiviGroup, row, bits, khat.data() + t0 * row + c);
}

void kivi_fake_quant_v(const double* v, int n_tokens, int n_heads, int head_dim, int bits,
                       int64_t n_quantized, std::vector<double>& vhat) {
  const int64_t row = (int64_t)n_heads * head_dim;
  vhat.assign(v, v + (size_t)n_tokens * row);
  for (int64_t t = 0; t < n_quantized; ++t)
    for (int h = 0; h < n_heads; ++h)
      for (int c0 = 0; c0 < head_dim; c0 += kKiviGroup) {
        const int n = std::min(kKiviGroup, head_dim - c0);
        const int64_t off = t * row + (int64_t)h * head_dim + c0;
        kivi_quant_group(v + off, n, 1, bits, vhat.data() + off);
      }
}

ByteCount kivi_bytes(int64_t n_tokens, int n_heads, int head_dim, int bits, bool is_k) {
  ByteCount b;
  const int64_t row = (int64_t)n_heads * head_dim;
  const int64_t nq = flushed_tokens(n_tokens, kKiviGroup, kKiviResidual);
  const int64_t groups_per_head_token = (head_dim + kKiviGroup - 1) / kKiviGroup;
  const int64_t groups = is_k ? (nq / kKiviGroup) * row : nq * n_heads * groups_per_head_token;
  b.fp16 = 2 * n_tokens * row;
  b.payload = (nq * row * bits + 7) / 8;
  b.metadata = 4 * groups;
  b.residual = 2 * (n_tokens - nq) * row;
  b.compressed_fp16 = 2 * nq * row;
  return b;
}

}  // namespace packkv_eval
