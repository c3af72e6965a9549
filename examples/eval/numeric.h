// Number formats used by the evaluation: IEEE fp16 (the dump's storage type and the
// KIVI scale/zero type) and OCP fp8 e4m3 ("e4m3fn": bias 7, no infinities, largest
// finite 448, NaN = S.1111.111). All conversions round to nearest, ties to even.
#ifndef PACKKV_EVAL_NUMERIC_H
#define PACKKV_EVAL_NUMERIC_H

#include <stdint.h>

namespace packkv_eval {

/** Exact value of an IEEE binary16 bit pattern (subnormals, inf and NaN included). */
double half_to_double(uint16_t h);

/** Rounds x to the nearest binary16 value (ties to even) and returns its bit
 *  pattern; values beyond the largest finite half (65504) become +-inf. */
uint16_t double_to_half(double x);

/** x rounded to the nearest binary16 value, returned as a double. */
double round_to_half(double x);

/** Largest finite e4m3 value. */
constexpr double kFp8E4M3Max = 448.0;

/** Encodes x as fp8 e4m3 with round-to-nearest-even and saturation: |x| > 448
 *  becomes +-448 (the "satfinite" conversion inference engines use); NaN becomes
 *  0x7F. Subnormals (multiples of 2^-9 below 2^-6) are produced. */
uint8_t double_to_fp8_e4m3(double x);

/** Exact value of an e4m3 code (0x7F / 0xFF are NaN). */
double fp8_e4m3_to_double(uint8_t code);

}  // namespace packkv_eval

#endif  // PACKKV_EVAL_NUMERIC_H
