// Validated cache configuration: packkv_cache_params_t after checks, with the format's
// shape (heads, head_dim, block tokens, code widths, scale groups, perm flag, block
// layout) derived once into `shape`. Shared by every backend.
#ifndef PACKKV_CONFIG_H
#define PACKKV_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "format/shape.h"
#include "packkv/packkv.h"

namespace packkv {

struct Config {
  int device = -1;
  int max_seqs = 1;
  packkv_dtype_t kv_dtype = PACKKV_DTYPE_F16;
  int64_t max_tokens_per_seq = 131072;
  // Defaults: packkv.h, packkv_cache_params_t (chosen in bench/RESULTS.md, "End-to-end KL
  // divergence (issue 15)").
  float rel_scale_k = 0.035f;
  float rel_scale_v = 0.07f;
  packkv_repack_t repack = PACKKV_REPACK_MEDIAN;
  packkv_scale_granularity_t granularity = PACKKV_SCALE_PER_TOKEN;
  int residual_tokens = 64;
  int sink_tokens = 4;  // first tokens of a sequence kept uncompressed (never in a block)
  packkv_k_transform_t k_transform = PACKKV_K_TRANSFORM_NONE;
  int n_threads = 0;  // CPU: threads per call, calling thread included; 0: cpu/parallel.h default_threads()
  // n_kv_heads, head_dim, block_tokens, bits_k / bits_v (always derived or validated:
  // 1..8), scale groups (from granularity), has_perm (from repack) and the block layout.
  // A caller that builds a Config by hand sets it with fmt::make_shape.
  fmt::Shape shape = fmt::make_shape(8, 128, 64, 1, 4, 3, true, fmt::FormatId::kRoundMajor, fmt::ZsFormat::kCompact);

  // Validates params (struct_size rules included) and derives bits; throws Error whose
  // message starts with fn, the C entry point that was called.
  static Config from_params(const packkv_cache_params_t* params, const char* fn);
  // Writes this configuration back as params (first params->struct_size bytes).
  void to_params(packkv_cache_params_t* params) const;
};

// Bits implied by a relative scale for zero points and scales of encoding zs (see
// packkv_bits_for_rel_scale, which gives the kCompact value); throws Error.
int bits_for_rel_scale(float rel_scale, fmt::ZsFormat zs = fmt::ZsFormat::kCompact);

}  // namespace packkv

#endif  // PACKKV_CONFIG_H
