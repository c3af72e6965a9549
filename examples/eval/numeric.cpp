#include "numeric.h"

#include <cmath>
#include <cstring>
#include <limits>

namespace packkv_eval {

double half_to_double(uint16_t h) {
  const int sign = (h >> 15) & 1;
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  double v;
  if (exp == 0)
    v = std::ldexp((double)mant, -24);  // subnormal: mant * 2^-24
  else if (exp == 31)
    v = mant ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else
    v = std::ldexp(1024.0 + mant, exp - 25);  // (1 + mant/1024) * 2^(exp-15)
  return sign ? -v : v;
}

uint16_t double_to_half(double x) {
  uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  double a = std::fabs(x);
  if (std::isnan(x)) return 0x7e00;
  if (a < std::ldexp(1.0, -14)) {
    // Subnormal range (and zero): a multiple of 2^-24; rounding can carry into the
    // smallest normal (code 0x400), which the integer encoding handles naturally.
    double m = std::nearbyint(std::ldexp(a, 24));
    return (uint16_t)(sign | (uint16_t)m);
  }
  int e;
  double f = std::frexp(a, &e);  // a = f * 2^e, f in [0.5, 1)
  int u = e - 1;                 // a = (2f) * 2^u, 2f in [1, 2)
  double mant = std::nearbyint((2.0 * f - 1.0) * 1024.0);
  if (mant >= 1024.0) {
    mant = 0.0;
    ++u;
  }
  if (u > 15) return (uint16_t)(sign | 0x7c00);  // overflow -> inf
  return (uint16_t)(sign | (uint16_t)((u + 15) << 10) | (uint16_t)mant);
}

double round_to_half(double x) { return half_to_double(double_to_half(x)); }

uint8_t double_to_fp8_e4m3(double x) {
  if (std::isnan(x)) return 0x7f;
  uint8_t sign = std::signbit(x) ? 0x80 : 0;
  double a = std::fabs(x);
  if (a >= kFp8E4M3Max) return (uint8_t)(sign | 0x7e);  // saturate
  if (a < std::ldexp(1.0, -6)) {
    // Subnormal: m * 2^-9, m in 0..7; m == 8 is the smallest normal, code 0x08.
    double m = std::nearbyint(std::ldexp(a, 9));
    return (uint8_t)(sign | (uint8_t)m);
  }
  int e;
  double f = std::frexp(a, &e);
  int u = e - 1;  // unbiased exponent, -6..8
  double mant = std::nearbyint((2.0 * f - 1.0) * 8.0);
  if (mant >= 8.0) {
    mant = 0.0;
    ++u;
  }
  int code = ((u + 7) << 3) | (int)mant;
  if (code > 0x7e) code = 0x7e;  // cannot happen below 448, kept as a guard
  return (uint8_t)(sign | code);
}

double fp8_e4m3_to_double(uint8_t code) {
  const int sign = code >> 7;
  const int exp = (code >> 3) & 0xf;
  const int mant = code & 7;
  double v;
  if (exp == 15 && mant == 7)
    v = std::numeric_limits<double>::quiet_NaN();
  else if (exp == 0)
    v = std::ldexp((double)mant, -9);
  else
    v = std::ldexp(8.0 + mant, exp - 10);  // (1 + mant/8) * 2^(exp-7)
  return sign ? -v : v;
}

}  // namespace packkv_eval
