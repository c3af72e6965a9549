#include <algorithm>
#include <cfloat>
#include "common/dtype.h"

#include <cstring>
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#endif
#include <vector>

#include "common/error.h"
#include "common/rules.h"

namespace packkv {

namespace {
uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
}  // namespace

namespace {
float half_to_float_slow(uint16_t h);
// All 65536 fp16 values as float, built once (thread-safe static initialization).
const float* half_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (uint32_t i = 0; i < 65536; ++i) t[i] = half_to_float_slow((uint16_t)i);
    return t;
  }();
  return table.data();
}
}  // namespace

float half_to_float(uint16_t h) { return half_table()[h]; }

#if defined(__x86_64__) && defined(__GNUC__)
namespace {
// The F16C conversion instructions (every x86-64 CPU since 2012), chosen at run time so
// that the library still runs on the baseline x86-64 ISA. Exact, like the table.
bool has_f16c() {
  static const bool yes = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
    const bool osxsave = c & (1u << 27), avx = c & (1u << 28), f16c = c & (1u << 29);
    if (!(osxsave && avx && f16c)) return false;
    unsigned lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));  // AVX state enabled by the OS
    (void)hi;
    return (lo & 6u) == 6u;
  }();
  return yes;
}
__attribute__((target("avx,f16c"))) size_t halves_to_float_f16c(const uint16_t* s, size_t n, float* d) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
  return i;
}
}  // namespace
#endif

namespace {
float half_to_float_slow(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0x1f) return float_of(sign | 0x7f800000u | (man << 13));  // inf / nan
  if (exp == 0) {
    // zero or subnormal: man * 2^-24, exact in float
    float v = (float)man * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  return float_of(sign | ((exp + 112u) << 23) | (man << 13));
}
}  // namespace

uint16_t float_to_half(float f) {
  uint32_t u = bits_of(f);
  uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u : 0u));
  if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (a < 0x38800000u) {  // below the smallest normal half (2^-14): subnormal or zero
    // value / 2^-24 rounded to nearest even integer
    float v = float_of(a) * 16777216.0f;  // exact scaling by 2^24
    float r = __builtin_rintf(v);
    return (uint16_t)(sign | (uint16_t)r);
  }
  // normal: round mantissa from 23 to 10 bits, nearest even
  uint32_t rounded = a + 0xfffu + ((a >> 13) & 1u);
  uint32_t exp = (rounded >> 23) - 112u;
  return (uint16_t)(sign | (exp << 10) | ((rounded >> 13) & 0x3ffu));
}

float bf16_to_float(uint16_t b) { return float_of((uint32_t)b << 16); }

uint16_t float_to_bf16(float f) {
  uint32_t u = bits_of(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);  // quiet nan
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

float load_as_float(const void* data, packkv_dtype_t dtype, size_t i) {
  switch (dtype) {
    case PACKKV_DTYPE_F16: return half_to_float(static_cast<const uint16_t*>(data)[i]);
    case PACKKV_DTYPE_BF16: return bf16_to_float(static_cast<const uint16_t*>(data)[i]);
    default: return static_cast<const float*>(data)[i];
  }
}

void to_float(const void* src, packkv_dtype_t dtype, size_t n, float* dst) {
  switch (dtype) {
    case PACKKV_DTYPE_F16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      size_t i = 0;
#if defined(__x86_64__) && defined(__GNUC__)
      if (has_f16c()) i = halves_to_float_f16c(s, n, dst);
#endif
      const float* table = half_table();
      for (; i < n; ++i) dst[i] = table[s[i]];
      break;
    }
    case PACKKV_DTYPE_BF16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_float(s[i]);
      break;
    }
    default:
      if (n != 0) std::memcpy(dst, src, n * sizeof(float));  // src/dst may be NULL when n == 0
  }
}

void from_float(const float* src, size_t n, packkv_dtype_t dtype, void* dst) {
  switch (dtype) {
    case PACKKV_DTYPE_F16: {
      uint16_t* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = float_to_half(src[i]);
      break;
    }
    case PACKKV_DTYPE_BF16: {
      uint16_t* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = float_to_bf16(src[i]);
      break;
    }
    default:
      if (n != 0) std::memcpy(dst, src, n * sizeof(float));  // src/dst may be NULL when n == 0
  }
}

const char* dtype_name(packkv_dtype_t dtype) {
  switch (dtype) {
    case PACKKV_DTYPE_F16: return "f16";
    case PACKKV_DTYPE_BF16: return "bf16";
    case PACKKV_DTYPE_F32: return "f32";
    default: return "unknown";
  }
}

size_t dtype_size(packkv_dtype_t dtype) {
  const size_t n = elem_bytes(dtype);
  if (n == 0) fail(PACKKV_ERR_INVALID_ARGUMENT, "unknown dtype " + std::to_string(dtype));
  return n;
}

void from_float_clamped(float* src, size_t n, packkv_dtype_t dtype, void* dst) {
  const float lim = dtype == PACKKV_DTYPE_F16 ? 65504.0f : dtype == PACKKV_DTYPE_BF16 ? 3.38953139e38f : FLT_MAX;
  for (size_t i = 0; i < n; ++i) src[i] = std::min(lim, std::max(-lim, src[i]));
  from_float(src, n, dtype, dst);
}

}  // namespace packkv
