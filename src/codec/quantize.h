// Per-token error-bounded quantization of one block (PACKKV.md section 3; arithmetic
// defined in format/affine.h so that the CUDA encoder rounds identically).
#ifndef PACKKV_QUANTIZE_H
#define PACKKV_QUANTIZE_H

#include <stdint.h>

#include "format/affine.h"

namespace packkv {

// x: float [n_tokens][n_heads][head_dim], finite. scale_groups = 1 (one zero point and scale
// per token across all heads) or n_heads (per token and head).
// codes: uint8 [n_tokens][n_heads][head_dim], each in [0, 2^bits - 1].
// affine: [scale_groups][n_tokens].
// compact: zero points and scales by fmt::group_affine_compact (else fmt::group_affine).
// Returns false, with codes and affine partly written, when compact is set and a group
// has no compact zero point and scale (the caller then encodes the block wide).
bool quantize_tokens(const float* x, int n_tokens, int n_heads, int head_dim, int scale_groups,
                     float rel_scale, int bits, bool compact, uint8_t* codes, fmt::Affine* affine);

}  // namespace packkv

#endif  // PACKKV_QUANTIZE_H
