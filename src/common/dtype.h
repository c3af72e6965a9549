// Host conversions between float and the 16-bit storage dtypes (IEEE fp16, bfloat16),
// round to nearest even, as the CUDA intrinsics __float2half_rn / __float2bfloat16_rn.
#ifndef PACKKV_DTYPE_H
#define PACKKV_DTYPE_H

#include <stddef.h>
#include <stdint.h>

#include "packkv/packkv.h"

namespace packkv {

float half_to_float(uint16_t h);
uint16_t float_to_half(float f);
float bf16_to_float(uint16_t b);
uint16_t float_to_bf16(float f);

// Element i of an array of dtype as float.
float load_as_float(const void* data, packkv_dtype_t dtype, size_t i);
// Converts n elements to float.
void to_float(const void* src, packkv_dtype_t dtype, size_t n, float* dst);
// Converts n floats to dtype (round to nearest even).
void from_float(const float* src, size_t n, packkv_dtype_t dtype, void* dst);
// As from_float after clamping each value to the dtype's finite range (+-65504 for fp16,
// +-3.38953139e38 for bf16, FLT_MAX for fp32): decoded values returned to a residual
// window (truncate, both backends). src is clamped in place.
void from_float_clamped(float* src, size_t n, packkv_dtype_t dtype, void* dst);

const char* dtype_name(packkv_dtype_t dtype);

// Bytes of one element of a dtype (common/rules.h: elem_bytes); throws Error for
// unknown dtypes.
size_t dtype_size(packkv_dtype_t dtype);

}  // namespace packkv

#endif  // PACKKV_DTYPE_H
