// The C entry points of packkv.h: argument validation that does not depend on the
// backend, behind the exception firewall of api/guard.h (PACKKV_API_BEGIN / END). The
// entry points of packkv_experimental.h: api_experimental.cpp.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>
#include <unordered_set>

#define PACKKV_EXPERIMENTAL_API
#include "packkv/packkv_experimental.h"
#include "api/cache_impl.h"
#include "api/config.h"
#include "common/error.h"
#include "api/guard.h"
#include "api/handles.h"
#include "api/internal_access.h"
#define PACKKV_EXPERIMENTAL_API
#include "packkv/packkv_experimental.h"

namespace packkv {
const CacheImpl& internal_impl(const packkv_cache_t* cache) { return *cache->impl; }
}  // namespace packkv

namespace {

using packkv::require;

void require_cache(const packkv_cache_t* cache, const char* fn) {
  require(cache != nullptr, std::string(fn) + ": cache is NULL");
}

void require_seq(const packkv_cache_t* cache, int32_t seq, const char* fn) {
  const int max = cache->impl->config().max_seqs;
  require(seq >= 0 && seq < max, std::string(fn) + ": seq_id " + std::to_string(seq) +
                                     " is outside [0, max_seqs = " + std::to_string(max) + ")");
}

// n_seqs in [1, max_seqs]: checked before h_seq_ids is read, so that a count larger
// than the caller's array is reported as such instead of reading past the array.
void require_n_seqs(const packkv_cache_t* cache, int32_t n_seqs, const char* fn) {
  const int max = cache->impl->config().max_seqs;
  require(n_seqs >= 1 && n_seqs <= max, std::string(fn) + ": n_seqs must be in [1, max_seqs = " +
                                            std::to_string(max) + "], got " + std::to_string(n_seqs));
}

// Checks a host list of distinct sequence ids.
void require_seq_list(const packkv_cache_t* cache, int32_t n_seqs, const int32_t* ids, const char* fn) {
  require_n_seqs(cache, n_seqs, fn);
  require(ids != nullptr, std::string(fn) + ": h_seq_ids is NULL");
  std::unordered_set<int32_t> seen;
  for (int32_t i = 0; i < n_seqs; ++i) {
    require_seq(cache, ids[i], fn);
    require(seen.insert(ids[i]).second,
            std::string(fn) + ": seq_id " + std::to_string(ids[i]) + " appears twice in h_seq_ids");
  }
}

// The last element n_seqs * n_q_heads * ld - 1 of a [n_seqs][n_q_heads][ld] float array
// must be addressable (no wrap-around of the row offsets).
void require_stride_fits(int64_t ld, const packkv::AttnArgs& a, const char* what) {
  const int64_t rows = (int64_t)a.n_seqs * a.n_q_heads;
  require(ld <= (INT64_MAX / 8) / rows,
          std::string(what) + " " + std::to_string(ld) + " is too large: " + std::to_string(rows) +
              " rows of it overflow the address range");
}

bool valid_dtype(packkv_dtype_t d) { return d >= PACKKV_DTYPE_F16 && d <= PACKKV_DTYPE_F32; }

// Most query heads per sequence of one attention call (packkv.h, "Common arguments of the
// attention calls"; n_q_heads * q_len for packkv_attn_decode_multi). Far above any model's
// head count, and it refuses a wrong n_q_heads before a backend sizes buffers by it.
constexpr int32_t kMaxQueryHeads = 1 << 20;

// n_q_heads: a positive multiple of n_kv_heads, at most kMaxQueryHeads.
void require_q_heads(const packkv_cache_t* cache, int32_t n_q_heads, const char* fn) {
  const int hkv = cache->impl->config().shape.n_kv_heads;
  require(n_q_heads >= 1 && n_q_heads <= kMaxQueryHeads && n_q_heads % hkv == 0,
          std::string(fn) + ": n_q_heads must be a positive multiple of n_kv_heads = " + std::to_string(hkv) +
              " and at most 2^20, got " + std::to_string(n_q_heads));
}

// Validates the arguments shared by the attention calls and returns the longest
// requested sequence.
int64_t check_attn(const packkv_cache_t* cache, const packkv::AttnArgs& a, bool needs_q, const char* fn) {
  require_cache(cache, fn);
  require_seq_list(cache, a.n_seqs, a.seq_ids, fn);
  require_q_heads(cache, a.n_q_heads, fn);
  if (needs_q) {
    require(a.q != nullptr, std::string(fn) + ": q is NULL");
    require(valid_dtype(a.q_dtype), std::string(fn) + ": unknown q_dtype " + std::to_string(a.q_dtype));
  }
  const size_t need = cache->impl->workspace_size(a.n_seqs, a.n_q_heads);
  if (need > 0 && (a.workspace == nullptr || a.workspace_bytes < need))
    packkv::fail(PACKKV_ERR_WORKSPACE_TOO_SMALL,
                 std::string(fn) + ": workspace of " + std::to_string(a.workspace_bytes) +
                     " bytes given, " + std::to_string(need) + " needed (packkv_attn_workspace_size)");
  int64_t longest = 0;
  for (int32_t i = 0; i < a.n_seqs; ++i)
    longest = std::max(longest, cache->impl->seq_length(a.seq_ids[i]));
  return longest;
}

}  // namespace

extern "C" {

uint32_t packkv_version_number(void) { return PACKKV_VERSION_NUMBER; }

const char* packkv_version_string(void) {
#define PACKKV_STR2(x) #x
#define PACKKV_STR(x) PACKKV_STR2(x)
  return PACKKV_STR(PACKKV_VERSION_MAJOR) "." PACKKV_STR(PACKKV_VERSION_MINOR) "." PACKKV_STR(
      PACKKV_VERSION_PATCH);
}

const char* packkv_build_info(void) {
  return "libpackkv " PACKKV_STR(PACKKV_VERSION_MAJOR) "." PACKKV_STR(PACKKV_VERSION_MINOR) "." PACKKV_STR(
      PACKKV_VERSION_PATCH) "; compiler " PACKKV_BUILD_INFO_CXX "; " PACKKV_BUILD_INFO_CUDA;
}

int32_t packkv_has_cuda(void) {
  try {
    return packkv::cuda_device_present() ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

const char* packkv_status_string(packkv_status_t status) {
  switch (status) {
    case PACKKV_OK: return "PACKKV_OK";
    case PACKKV_ERR_INVALID_ARGUMENT: return "PACKKV_ERR_INVALID_ARGUMENT";
    case PACKKV_ERR_INVALID_STATE: return "PACKKV_ERR_INVALID_STATE";
    case PACKKV_ERR_CAPACITY_EXCEEDED: return "PACKKV_ERR_CAPACITY_EXCEEDED";
    case PACKKV_ERR_WORKSPACE_TOO_SMALL: return "PACKKV_ERR_WORKSPACE_TOO_SMALL";
    case PACKKV_ERR_OUT_OF_HOST_MEMORY: return "PACKKV_ERR_OUT_OF_HOST_MEMORY";
    case PACKKV_ERR_OUT_OF_DEVICE_MEMORY: return "PACKKV_ERR_OUT_OF_DEVICE_MEMORY";
    case PACKKV_ERR_CUDA: return "PACKKV_ERR_CUDA";
    case PACKKV_ERR_NOT_SUPPORTED: return "PACKKV_ERR_NOT_SUPPORTED";
    case PACKKV_ERR_VERSION_MISMATCH: return "PACKKV_ERR_VERSION_MISMATCH";
    case PACKKV_ERR_INTERNAL: return "PACKKV_ERR_INTERNAL";
    case PACKKV_X_ERR_BUDGET_EXCEEDED: return "PACKKV_X_ERR_BUDGET_EXCEEDED";
    default: return "unknown status";
  }
}

const char* packkv_last_error_message(void) { return packkv::last_error().c_str(); }

size_t packkv_copy_last_error(char* buf, size_t cap) {
  const std::string& g_last_error = packkv::last_error();
  const size_t n = g_last_error.size();
  if (buf != nullptr && cap > 0) {
    const size_t m = n < cap - 1 ? n : cap - 1;
    std::memcpy(buf, g_last_error.data(), m);
    buf[m] = '\0';
  }
  return n;
}

packkv_status_t packkv_cache_params_init(packkv_cache_params_t* params, size_t struct_size) {
  PACKKV_API_BEGIN
  require(params != nullptr, "packkv_cache_params_init: params is NULL");
  if (struct_size < PACKKV_CACHE_PARAMS_SIZE_V1)
    packkv::fail(PACKKV_ERR_VERSION_MISMATCH,
                 "packkv_cache_params_init: struct_size " + std::to_string(struct_size) +
                     " is smaller than version 1 of packkv_cache_params_t (" +
                     std::to_string(PACKKV_CACHE_PARAMS_SIZE_V1) + ")");
  if (struct_size > PACKKV_CACHE_PARAMS_SIZE_MAX)
    packkv::fail(PACKKV_ERR_VERSION_MISMATCH,
                 "packkv_cache_params_init: struct_size " + std::to_string(struct_size) +
                     " is larger than PACKKV_CACHE_PARAMS_SIZE_MAX (" +
                     std::to_string(PACKKV_CACHE_PARAMS_SIZE_MAX) + ")");
  packkv::Config defaults;
  defaults.shape.bits_k = 0;  // "derive" in params form
  defaults.shape.bits_v = 0;
  params->struct_size = (uint32_t)struct_size;
  defaults.to_params(params);
  PACKKV_API_END("packkv_cache_params_init")
}

packkv_status_t packkv_bits_for_rel_scale(float rel_scale, int32_t* bits) {
  PACKKV_API_BEGIN
  require(bits != nullptr, "packkv_bits_for_rel_scale: bits is NULL");
  try {
    *bits = packkv::bits_for_rel_scale(rel_scale);
  } catch (const packkv::Error& e) {
    packkv::fail(e.code(), std::string("packkv_bits_for_rel_scale: ") + e.what());
  }
  PACKKV_API_END("packkv_bits_for_rel_scale")
}

packkv_status_t packkv_cache_create(const packkv_cache_params_t* params, packkv_cache_t** out) {
  if (out != nullptr) *out = nullptr;
  PACKKV_API_BEGIN
  const char* fn = "packkv_cache_create";
  require(out != nullptr, std::string(fn) + ": out is NULL");
  const packkv::Config config = packkv::Config::from_params(params, fn);
  try {
    *out = packkv::new_cache_handle(config, nullptr);
  } catch (const packkv::Error& e) {
    packkv::fail(e.code(), std::string(fn) + ": " + e.what());
  }
  PACKKV_API_END("packkv_cache_create")
}

void packkv_cache_destroy(packkv_cache_t* cache) {
  try {
    delete cache;
  } catch (...) {
    // destructors do not throw; nothing can be reported from here
  }
}

packkv_status_t packkv_cache_get_params(const packkv_cache_t* cache, packkv_cache_params_t* params) {
  PACKKV_API_BEGIN
  require_cache(cache, "packkv_cache_get_params");
  require(params != nullptr, "packkv_cache_get_params: params is NULL");
  if (params->struct_size < PACKKV_CACHE_PARAMS_SIZE_V1)
    packkv::fail(PACKKV_ERR_VERSION_MISMATCH,
                 "packkv_cache_get_params: params->struct_size " + std::to_string(params->struct_size) +
                     " is smaller than version 1 of the struct; set it (packkv_cache_params_init)");
  if (params->struct_size > PACKKV_CACHE_PARAMS_SIZE_MAX)
    packkv::fail(PACKKV_ERR_VERSION_MISMATCH,
                 "packkv_cache_get_params: params->struct_size " + std::to_string(params->struct_size) +
                     " is larger than PACKKV_CACHE_PARAMS_SIZE_MAX (" +
                     std::to_string(PACKKV_CACHE_PARAMS_SIZE_MAX) + ")");
  cache->impl->config().to_params(params);
  PACKKV_API_END("packkv_cache_get_params")
}

packkv_status_t packkv_cache_device(const packkv_cache_t* cache, int32_t* device) {
  PACKKV_API_BEGIN
  require_cache(cache, "packkv_cache_device");
  require(device != nullptr, "packkv_cache_device: device is NULL");
  *device = cache->impl->config().device;
  PACKKV_API_END("packkv_cache_device")
}

packkv_status_t packkv_cache_append(packkv_cache_t* cache, int32_t n_seqs, const int32_t* h_seq_ids,
                                    const int32_t* h_n_tokens, const void* k_new, const void* v_new,
                                    packkv_dtype_t dtype, packkv_stream_t stream) {
  PACKKV_API_BEGIN
  const char* fn = "packkv_cache_append";
  require_cache(cache, fn);
  require_seq_list(cache, n_seqs, h_seq_ids, fn);
  require(h_n_tokens != nullptr, "packkv_cache_append: h_n_tokens is NULL");
  require(valid_dtype(dtype), "packkv_cache_append: unknown dtype " + std::to_string(dtype));
  const packkv::Config& c = cache->impl->config();
  int64_t total = 0;
  for (int32_t i = 0; i < n_seqs; ++i) {
    require(h_n_tokens[i] >= 0, "packkv_cache_append: h_n_tokens[" + std::to_string(i) +
                                    "] is negative (" + std::to_string(h_n_tokens[i]) + ")");
    total += h_n_tokens[i];
  }
  if (total == 0) return PACKKV_OK;
  require(k_new != nullptr, "packkv_cache_append: k_new is NULL");
  require(v_new != nullptr, "packkv_cache_append: v_new is NULL");
  for (int32_t i = 0; i < n_seqs; ++i) {
    const int64_t len = cache->impl->seq_length(h_seq_ids[i]);
    if (len + h_n_tokens[i] > c.max_tokens_per_seq)
      packkv::fail(PACKKV_ERR_CAPACITY_EXCEEDED,
                   "packkv_cache_append: sequence " + std::to_string(h_seq_ids[i]) + " holds " +
                       std::to_string(len) + " tokens; " + std::to_string(h_n_tokens[i]) +
                       " more exceed max_tokens_per_seq = " + std::to_string(c.max_tokens_per_seq) +
                       "; nothing was appended");
  }
  try {
    cache->impl->append(n_seqs, h_seq_ids, h_n_tokens, k_new, v_new, dtype, stream);
  } catch (const packkv::Error& e) {
    // the pool's refusals (budget, the system's memory) come from below the API: name the
    // function and say what the failed call left (fresh7 item 8)
    if (e.code() != PACKKV_X_ERR_BUDGET_EXCEEDED && e.code() != PACKKV_ERR_OUT_OF_HOST_MEMORY &&
        e.code() != PACKKV_ERR_OUT_OF_DEVICE_MEMORY)
      throw;
    packkv::fail(e.code(), std::string("packkv_cache_append: ") + e.what() + "; nothing was appended");
  }
  PACKKV_API_END("packkv_cache_append")
}

packkv_status_t packkv_cache_remove_seq(packkv_cache_t* cache, int32_t seq_id) {
  PACKKV_API_BEGIN
  require_cache(cache, "packkv_cache_remove_seq");
  require_seq(cache, seq_id, "packkv_cache_remove_seq");
  cache->impl->remove_seq(seq_id);
  PACKKV_API_END("packkv_cache_remove_seq")
}

packkv_status_t packkv_cache_reset(packkv_cache_t* cache) {
  PACKKV_API_BEGIN
  require_cache(cache, "packkv_cache_reset");
  cache->impl->reset();
  PACKKV_API_END("packkv_cache_reset")
}

packkv_status_t packkv_cache_seq_length(const packkv_cache_t* cache, int32_t seq_id, int64_t* n_tokens) {
  PACKKV_API_BEGIN
  require_cache(cache, "packkv_cache_seq_length");
  require_seq(cache, seq_id, "packkv_cache_seq_length");
  require(n_tokens != nullptr, "packkv_cache_seq_length: n_tokens is NULL");
  *n_tokens = cache->impl->seq_length(seq_id);
  PACKKV_API_END("packkv_cache_seq_length")
}

packkv_status_t packkv_cache_stats(const packkv_cache_t* cache, int32_t seq_id, packkv_cache_stats_t* stats) {
  PACKKV_API_BEGIN
  require_cache(cache, "packkv_cache_stats");
  if (seq_id != -1) {
    const int max = cache->impl->config().max_seqs;
    require(seq_id >= 0 && seq_id < max, "packkv_cache_stats: seq_id " + std::to_string(seq_id) +
                                             " is neither -1 (whole cache) nor in [0, max_seqs = " +
                                             std::to_string(max) + ")");
  }
  require(stats != nullptr, "packkv_cache_stats: stats is NULL");
  if (stats->struct_size < PACKKV_CACHE_STATS_SIZE_V1)
    packkv::fail(PACKKV_ERR_VERSION_MISMATCH,
                 "packkv_cache_stats: stats->struct_size " + std::to_string(stats->struct_size) +
                     " is smaller than version 1 (" + std::to_string(PACKKV_CACHE_STATS_SIZE_V1) + ")");
  if (stats->struct_size > PACKKV_CACHE_STATS_SIZE_MAX)
    packkv::fail(PACKKV_ERR_VERSION_MISMATCH,
                 "packkv_cache_stats: stats->struct_size " + std::to_string(stats->struct_size) +
                     " is larger than PACKKV_CACHE_STATS_SIZE_MAX (" +
                     std::to_string(PACKKV_CACHE_STATS_SIZE_MAX) + ")");
  packkv_cache_stats_t full;
  cache->impl->stats(seq_id, &full);
  const uint32_t size = stats->struct_size;
  full.struct_size = size;
  const size_t n = size < sizeof full ? size : sizeof full;
  std::memcpy(stats, &full, n);
  if (size > sizeof full) std::memset(reinterpret_cast<unsigned char*>(stats) + sizeof full, 0, size - sizeof full);
  PACKKV_API_END("packkv_cache_stats")
}

packkv_status_t packkv_cache_decompress(const packkv_cache_t* cache, int32_t seq_id, float* k_out,
                                        float* v_out, int64_t capacity_tokens, packkv_stream_t stream) {
  PACKKV_API_BEGIN
  require_cache(cache, "packkv_cache_decompress");
  require_seq(cache, seq_id, "packkv_cache_decompress");
  require(capacity_tokens >= 0, "packkv_cache_decompress: capacity_tokens is negative (" +
                                    std::to_string(capacity_tokens) + ")");
  const int64_t len = cache->impl->seq_length(seq_id);
  if (len == 0 || (k_out == nullptr && v_out == nullptr)) return PACKKV_OK;
  if (len > capacity_tokens)
    packkv::fail(PACKKV_ERR_CAPACITY_EXCEEDED,
                 "packkv_cache_decompress: sequence " + std::to_string(seq_id) + " holds " +
                     std::to_string(len) + " tokens but capacity_tokens is " + std::to_string(capacity_tokens));
  cache->impl->decompress(seq_id, k_out, v_out, stream);
  PACKKV_API_END("packkv_cache_decompress")
}

packkv_status_t packkv_cache_sync(const packkv_cache_t* cache) {
  PACKKV_API_BEGIN
  require_cache(cache, "packkv_cache_sync");
  cache->impl->sync();
  PACKKV_API_END("packkv_cache_sync")
}

packkv_status_t packkv_attn_workspace_size(const packkv_cache_t* cache, int32_t n_seqs, int32_t n_q_heads,
                                           size_t* bytes) {
  PACKKV_API_BEGIN
  const char* fn = "packkv_attn_workspace_size";
  require_cache(cache, fn);
  require(bytes != nullptr, "packkv_attn_workspace_size: bytes is NULL");
  require_n_seqs(cache, n_seqs, fn);
  require_q_heads(cache, n_q_heads, fn);
  *bytes = cache->impl->workspace_size(n_seqs, n_q_heads);
  PACKKV_API_END("packkv_attn_workspace_size")
}

packkv_status_t packkv_attn_scores(const packkv_cache_t* cache, int32_t n_seqs, const int32_t* h_seq_ids,
                                   int32_t n_q_heads, const void* q, packkv_dtype_t q_dtype, float* scores,
                                   int64_t ld_scores, void* workspace, size_t workspace_bytes,
                                   packkv_stream_t stream) {
  PACKKV_API_BEGIN
  const char* fn = "packkv_attn_scores";
  packkv::AttnArgs a{n_seqs, h_seq_ids, n_q_heads, q, q_dtype, workspace, workspace_bytes, stream};
  const int64_t longest = check_attn(cache, a, true, fn);
  // every requested sequence empty: nothing is written, ld_scores 0 and NULL scores allowed
  require(scores != nullptr || longest == 0, "packkv_attn_scores: scores is NULL");
  require(ld_scores >= longest && ld_scores >= 0,
          "packkv_attn_scores: ld_scores " + std::to_string(ld_scores) +
              " is smaller than the longest requested sequence (" + std::to_string(longest) + " tokens)");
  require_stride_fits(ld_scores, a, "packkv_attn_scores: ld_scores");
  cache->impl->scores(a, scores, ld_scores);
  PACKKV_API_END("packkv_attn_scores")
}

packkv_status_t packkv_attn_apply(const packkv_cache_t* cache, int32_t n_seqs, const int32_t* h_seq_ids,
                                  int32_t n_q_heads, const float* probs, int64_t ld_probs, float* out,
                                  void* workspace, size_t workspace_bytes, packkv_stream_t stream) {
  PACKKV_API_BEGIN
  const char* fn = "packkv_attn_apply";
  packkv::AttnArgs a{n_seqs, h_seq_ids, n_q_heads, nullptr, PACKKV_DTYPE_F32, workspace, workspace_bytes, stream};
  const int64_t longest = check_attn(cache, a, false, fn);
  // every requested sequence empty: nothing is read, ld_probs 0 and NULL probs allowed
  require(probs != nullptr || longest == 0, "packkv_attn_apply: probs is NULL");
  require(out != nullptr, "packkv_attn_apply: out is NULL");
  require(ld_probs >= longest && ld_probs >= 0,
          "packkv_attn_apply: ld_probs " + std::to_string(ld_probs) +
              " is smaller than the longest requested sequence (" + std::to_string(longest) + " tokens)");
  require_stride_fits(ld_probs, a, "packkv_attn_apply: ld_probs");
  cache->impl->apply(a, probs, ld_probs, out);
  PACKKV_API_END("packkv_attn_apply")
}

packkv_status_t packkv_attn_decode(const packkv_cache_t* cache, int32_t n_seqs, const int32_t* h_seq_ids,
                                   int32_t n_q_heads, const void* q, packkv_dtype_t q_dtype, float scale,
                                   float* out, float* lse, void* workspace, size_t workspace_bytes,
                                   packkv_stream_t stream) {
  PACKKV_API_BEGIN
  const char* fn = "packkv_attn_decode";
  packkv::AttnArgs a{n_seqs, h_seq_ids, n_q_heads, q, q_dtype, workspace, workspace_bytes, stream};
  check_attn(cache, a, true, fn);
  require(std::isfinite(scale) && scale > 0.0f,
          "packkv_attn_decode: scale must be finite and > 0, got " + std::to_string(scale));
  require(out != nullptr, "packkv_attn_decode: out is NULL");
  cache->impl->decode(a, scale, out, lse);
  PACKKV_API_END("packkv_attn_decode")
}

// Several queries per sequence = decode with n_q_heads * q_len query heads: query (j, t)
// is query head j * q_len + t, whose kv head (j * q_len + t) / (group * q_len) is
// j / group, the kv head of j. So both backends and every kernel family serve it as is.
packkv_status_t packkv_attn_decode_multi(const packkv_cache_t* cache, int32_t n_seqs, const int32_t* h_seq_ids,
                                         int32_t n_q_heads, int32_t q_len, const void* q, packkv_dtype_t q_dtype,
                                         float scale, float* out, float* lse, void* workspace,
                                         size_t workspace_bytes, packkv_stream_t stream) {
  PACKKV_API_BEGIN
  const char* fn = "packkv_attn_decode_multi";
  require_cache(cache, fn);
  require_q_heads(cache, n_q_heads, fn);
  require(q_len >= 1 && static_cast<int64_t>(n_q_heads) * q_len <= kMaxQueryHeads,
          std::string(fn) + ": q_len must be >= 1 with n_q_heads * q_len <= 2^20, got q_len " +
              std::to_string(q_len) + " (n_q_heads " + std::to_string(n_q_heads) + ")");
  const int32_t heads = n_q_heads * q_len;
  packkv::AttnArgs a{n_seqs, h_seq_ids, heads, q, q_dtype, workspace, workspace_bytes, stream};
  check_attn(cache, a, true, fn);
  require(std::isfinite(scale) && scale > 0.0f,
          std::string(fn) + ": scale must be finite and > 0, got " + std::to_string(scale));
  require(out != nullptr, std::string(fn) + ": out is NULL");
  cache->impl->decode(a, scale, out, lse);
  PACKKV_API_END("packkv_attn_decode_multi")
}

}  // extern "C"
