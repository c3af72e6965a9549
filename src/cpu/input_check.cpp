// CpuCache::convert_checked: new tokens converted to kv_dtype and checked for values
// that are not finite there (the append's only data-dependent failure).
#include <cmath>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/error.h"
#include "cpu/cpu_cache.h"

namespace packkv {

namespace {

// Index of the first word whose exponent bits (mask) are all ones, or n. A branch-free
// pass first (vectorizes), the search only when one exists.
template <typename W>
size_t first_all_ones(const W* w, size_t n, W mask) {
  uint32_t any = 0;
  for (size_t i = 0; i < n; ++i) any |= (uint32_t)((w[i] & mask) == mask);
  if (!any) return n;
  for (size_t i = 0; i < n; ++i)
    if ((w[i] & mask) == mask) return i;
  return n;
}

// Index of the first NaN or infinity among n values of dtype, or n.
size_t first_non_finite(const uint8_t* data, packkv_dtype_t dtype, size_t n) {
  if (dtype == PACKKV_DTYPE_F32) return first_all_ones(reinterpret_cast<const uint32_t*>(data), n, 0x7f800000u);
  return first_all_ones(reinterpret_cast<const uint16_t*>(data), n,
                        (uint16_t)(dtype == PACKKV_DTYPE_F16 ? 0x7c00u : 0x7f80u));
}

}  // namespace

const uint8_t* CpuCache::convert_checked(const uint8_t* src, packkv_dtype_t dtype, size_t n,
                                         std::vector<uint8_t>* conv, int seq, const char* what) const {
  const Config& c = config();
  const uint8_t* out = src;
  if (dtype != c.kv_dtype) {
    std::vector<float> tmp(n);
    to_float(src, dtype, n, tmp.data());
    conv->resize(n * elem_);
    from_float(tmp.data(), n, c.kv_dtype, conv->data());
    out = conv->data();
  }
  const size_t bad = first_non_finite(out, c.kv_dtype, n);
  if (bad == n) return out;
  const float x = load_as_float(src, dtype, bad);
  const size_t token = bad / row_, ch = bad % row_;
  const int d = c.shape.head_dim;
  fail(PACKKV_ERR_INVALID_ARGUMENT,
       std::string("packkv_cache_append: ") + what + " of sequence " + std::to_string(seq) + ", new token " +
           std::to_string(token) + ", head " + std::to_string(ch / d) + ", channel " + std::to_string(ch % d) +
           " is " +
           (std::isfinite(x) ? "out of the range of kv_dtype " + std::string(dtype_name(c.kv_dtype))
                             : std::string(std::isnan(x) ? "NaN" : "infinite")) +
           "; nothing was appended");
}

}  // namespace packkv
