#include "api/config.h"

#include <cmath>
#include <cstddef>
#include <cstring>
#include <string>

#include "common/error.h"
#include "format/shape.h"
#define PACKKV_EXPERIMENTAL_API
#include "packkv/packkv_experimental.h"

namespace packkv {

static_assert((int)fmt::FormatId::kRoundMajor == PACKKV_FORMAT_ROUND_MAJOR,
              "packkv_experimental.h names the formats of format/shape.h");
static_assert((int)fmt::ZsFormat::kCompact == PACKKV_ZS_COMPACT && (int)fmt::ZsFormat::kWide == PACKKV_ZS_WIDE,
              "packkv.h names the zero point and scale encodings of format/shape.h");
static_assert(sizeof(packkv_cache_params_t) == PACKKV_CACHE_PARAMS_SIZE_V3, "params version 3");

int bits_for_rel_scale(float r, fmt::ZsFormat zs) {
  require(std::isfinite(r) && r > 0.0f && r <= 1.0f,
          "rel_scale must be finite and in (0, 1], got " + std::to_string(r));
  // Largest code: q <= range / s + 1 where range / s = 1/r up to the rounding of s
  // (PACKKV.md section 3.1); 1e-6 covers that rounding with margin. A compact scale is
  // s rounded down to 8 fraction bits, s16 > s (1 - 2^-8): range / s16 < (1/r) / (1 - 2^-8).
  const double stored = zs == fmt::ZsFormat::kCompact ? 1.0 / (1.0 - 1.0 / 256.0) : 1.0;
  double max_q = std::floor((1.0 / (double)r) * stored * (1.0 + 1e-6) + 1.0);
  int bits = 1;
  while (bits < 31 && (double)((1u << bits) - 1u) < max_q) ++bits;
  require(bits <= fmt::kMaxBits, "rel_scale " + std::to_string(r) +
                                     " needs more than 8 bits per code (smallest allowed r is 1/254)");
  return bits;
}

namespace {

void check_range(const char* fn, bool ok, const char* field, const std::string& rule, long long value) {
  if (!ok)
    fail(PACKKV_ERR_INVALID_ARGUMENT, std::string(fn) + ": params." + field + " must be " + rule + ", got " +
                                          std::to_string(value));
}

}  // namespace

Config Config::from_params(const packkv_cache_params_t* p, const char* fn) {
  const std::string f(fn);
  require(p != nullptr, f + ": params is NULL");
  if (p->struct_size < PACKKV_CACHE_PARAMS_SIZE_V1)
    fail(PACKKV_ERR_VERSION_MISMATCH,
         f + ": params.struct_size " + std::to_string(p->struct_size) +
             " is smaller than version 1 of the struct (" +
             std::to_string(PACKKV_CACHE_PARAMS_SIZE_V1) + "); call packkv_cache_params_init");
  // The bound on how far past the known fields the zero check below reads.
  if (p->struct_size > PACKKV_CACHE_PARAMS_SIZE_MAX)
    fail(PACKKV_ERR_VERSION_MISMATCH,
         f + ": params.struct_size " + std::to_string(p->struct_size) +
             " is larger than PACKKV_CACHE_PARAMS_SIZE_MAX (" +
             std::to_string(PACKKV_CACHE_PARAMS_SIZE_MAX) + ")");
  if (p->struct_size > sizeof(packkv_cache_params_t)) {
    const unsigned char* tail = reinterpret_cast<const unsigned char*>(p) + sizeof(packkv_cache_params_t);
    for (size_t i = 0; i < p->struct_size - sizeof(packkv_cache_params_t); ++i)
      if (tail[i] != 0)
        fail(PACKKV_ERR_NOT_SUPPORTED,
             f + ": params sets fields unknown to this libpackkv version (byte " + std::to_string(sizeof(packkv_cache_params_t) + i) + " is non-zero)");
  }
  Config c;
  c.device = p->device;
  c.max_seqs = p->max_seqs;
  c.kv_dtype = p->kv_dtype;
  c.max_tokens_per_seq = p->max_tokens_per_seq;
  c.rel_scale_k = p->rel_scale_k;
  c.rel_scale_v = p->rel_scale_v;
  c.repack = p->repack;
  c.granularity = p->scale_granularity;
  c.residual_tokens = p->residual_tokens;
  // Version 2 fields, read only when the caller's struct has them (else defaults).
  fmt::ZsFormat zs = fmt::ZsFormat::kCompact;
  if (p->struct_size >= offsetof(packkv_cache_params_t, sink_tokens) + sizeof p->sink_tokens)
    c.sink_tokens = p->sink_tokens;
  if (p->struct_size >= offsetof(packkv_cache_params_t, zs_format) + sizeof p->zs_format) {
    check_range(fn, p->zs_format == PACKKV_ZS_COMPACT || p->zs_format == PACKKV_ZS_WIDE, "zs_format",
                "PACKKV_ZS_COMPACT or PACKKV_ZS_WIDE", p->zs_format);
    zs = (fmt::ZsFormat)p->zs_format;
  }
  if (p->struct_size >= offsetof(packkv_cache_params_t, k_transform) + sizeof p->k_transform) {
    check_range(fn, p->k_transform == PACKKV_K_TRANSFORM_NONE || p->k_transform == PACKKV_K_TRANSFORM_CENTER,
                "k_transform", "PACKKV_K_TRANSFORM_NONE or _CENTER", p->k_transform);
    c.k_transform = p->k_transform;
  }
  // Version 3.
  if (p->struct_size >= offsetof(packkv_cache_params_t, n_threads) + sizeof p->n_threads) {
    check_range(fn, p->n_threads >= 0 && p->n_threads <= 1024, "n_threads", "in [0, 1024] (0: default)", p->n_threads);
    c.n_threads = p->n_threads;
  }

  check_range(fn, c.device >= -1, "device", ">= -1", c.device);
  check_range(fn, p->n_kv_heads >= 1 && p->n_kv_heads <= fmt::kMaxKvHeads, "n_kv_heads", "in [1, 4096]",
              p->n_kv_heads);
  check_range(fn, p->head_dim >= fmt::kMinHeadDim && p->head_dim <= fmt::kMaxHeadDim && p->head_dim % 16 == 0,
              "head_dim", "a multiple of 16 in [32, 256]", p->head_dim);
  check_range(fn, c.max_seqs >= 1 && c.max_seqs <= (1 << 20), "max_seqs", "in [1, 2^20]", c.max_seqs);
  check_range(fn, c.kv_dtype >= PACKKV_DTYPE_F16 && c.kv_dtype <= PACKKV_DTYPE_F32, "kv_dtype",
              "PACKKV_DTYPE_F16, _BF16 or _F32", c.kv_dtype);
  check_range(fn, c.max_tokens_per_seq >= 1 && c.max_tokens_per_seq <= (1ll << 40), "max_tokens_per_seq",
              "in [1, 2^40]", (long long)c.max_tokens_per_seq);
  check_range(fn, c.repack >= PACKKV_REPACK_NONE && c.repack <= PACKKV_REPACK_GREEDY, "repack",
              "PACKKV_REPACK_NONE, _MEDIAN or _GREEDY", c.repack);
  check_range(fn, c.granularity == PACKKV_SCALE_PER_TOKEN || c.granularity == PACKKV_SCALE_PER_TOKEN_HEAD,
              "scale_granularity", "PACKKV_SCALE_PER_TOKEN or _PER_TOKEN_HEAD", c.granularity);
  check_range(fn, p->block_tokens >= 16 && p->block_tokens <= fmt::kMaxBlockTokens && p->block_tokens % 16 == 0,
              "block_tokens", "a multiple of 16 in [16, 256]", p->block_tokens);
  check_range(fn, c.residual_tokens >= 0 && c.residual_tokens <= (1 << 20), "residual_tokens",
              "in [0, 2^20]", c.residual_tokens);
  if (c.k_transform == PACKKV_K_TRANSFORM_CENTER && c.kv_dtype != PACKKV_DTYPE_F16)
    fail(PACKKV_ERR_NOT_SUPPORTED, f + ": params.k_transform = PACKKV_K_TRANSFORM_CENTER needs "
                                   "kv_dtype = PACKKV_DTYPE_F16 (k - mu must stay finite in fp32)");
  check_range(fn, c.sink_tokens >= 0 && c.sink_tokens <= (1 << 16), "sink_tokens", "in [0, 2^16]", c.sink_tokens);
  check_range(fn, p->bits_k >= 0 && p->bits_k <= fmt::kMaxBits, "bits_k", "0 (derive) or 1..8", p->bits_k);
  check_range(fn, p->bits_v >= 0 && p->bits_v <= fmt::kMaxBits, "bits_v", "0 (derive) or 1..8", p->bits_v);
  int bits[2];
  for (int kv = 0; kv < 2; ++kv) {
    float r = kv == 0 ? c.rel_scale_k : c.rel_scale_v;
    int given = kv == 0 ? p->bits_k : p->bits_v;
    const char* name = kv == 0 ? "rel_scale_k" : "rel_scale_v";
    if (!(std::isfinite(r) && r >= 1.0f / 254.0f && r <= 1.0f))
      fail(PACKKV_ERR_INVALID_ARGUMENT, f + ": params." + name +
                                            " must be in [1/254, 1], got " + std::to_string(r));
    bits[kv] = given != 0 ? given : bits_for_rel_scale(r, zs);
  }
  const int scale_groups = c.granularity == PACKKV_SCALE_PER_TOKEN ? 1 : p->n_kv_heads;
  c.shape = fmt::make_shape(p->n_kv_heads, p->head_dim, p->block_tokens, scale_groups, bits[0], bits[1],
                            c.repack != PACKKV_REPACK_NONE, fmt::FormatId::kRoundMajor, zs);
  return c;
}

void Config::to_params(packkv_cache_params_t* p) const {
  packkv_cache_params_t full;
  std::memset(&full, 0, sizeof full);
  full.struct_size = p->struct_size;
  full.device = device;
  full.n_kv_heads = shape.n_kv_heads;
  full.head_dim = shape.head_dim;
  full.max_seqs = max_seqs;
  full.kv_dtype = kv_dtype;
  full.max_tokens_per_seq = max_tokens_per_seq;
  full.rel_scale_k = rel_scale_k;
  full.rel_scale_v = rel_scale_v;
  full.bits_k = shape.bits_k;
  full.bits_v = shape.bits_v;
  full.repack = repack;
  full.scale_granularity = granularity;
  full.block_tokens = shape.block_tokens;
  full.residual_tokens = residual_tokens;
  full.sink_tokens = sink_tokens;
  full.zs_format = (packkv_zs_format_t)shape.zs;
  full.k_transform = k_transform;
  full.n_threads = n_threads;
  size_t n = p->struct_size < sizeof full ? p->struct_size : sizeof full;
  std::memcpy(p, &full, n);
  if (p->struct_size > sizeof full)
    std::memset(reinterpret_cast<unsigned char*>(p) + sizeof full, 0, p->struct_size - sizeof full);
}

}  // namespace packkv
