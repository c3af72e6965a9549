// Validated cache configuration: packkv_cache_params_t after checks and with derived
// values (code widths, scale groups) filled in. Shared by every backend.
#ifndef PACKKV_CONFIG_H
#define PACKKV_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "packkv/packkv.h"

namespace packkv {

struct Config {
  int device = -1;
  int n_kv_heads = 8;
  int head_dim = 128;
  int max_seqs = 1;
  packkv_dtype_t kv_dtype = PACKKV_DTYPE_F16;
  int64_t max_tokens_per_seq = 131072;
  float rel_scale_k = 0.1f;
  float rel_scale_v = 0.2f;
  int bits_k = 4;  // always derived or validated: 1..8
  int bits_v = 3;
  packkv_repack_t repack = PACKKV_REPACK_MEDIAN;
  packkv_scale_granularity_t granularity = PACKKV_SCALE_PER_TOKEN;
  int block_tokens = 64;
  int residual_tokens = 128;

  // Scale groups per token: 1 (per token across heads) or n_kv_heads.
  int groups() const { return granularity == PACKKV_SCALE_PER_TOKEN ? 1 : n_kv_heads; }
  bool has_perm() const { return repack != PACKKV_REPACK_NONE; }
  // Values per token in K (or V): n_kv_heads * head_dim.
  int64_t token_values() const { return (int64_t)n_kv_heads * head_dim; }

  // Validates params (struct_size rules included) and derives bits; throws Error.
  static Config from_params(const packkv_cache_params_t* params);
  // Writes this configuration back as params (first params->struct_size bytes).
  void to_params(packkv_cache_params_t* params) const;
};

// Bits implied by a relative scale (see packkv_bits_for_rel_scale); throws Error.
int bits_for_rel_scale(float rel_scale);

// Bytes of one element of a dtype; throws Error for unknown dtypes.
size_t dtype_size(packkv_dtype_t dtype);

}  // namespace packkv

#endif  // PACKKV_CONFIG_H
