// The C entry points of packkv_experimental.h: pools and sequence operations. Same
// firewall and validation style as api.cpp.
#include <cstring>
#include <memory>
#include <string>

#include "api/guard.h"
#include "api/handles.h"
#define PACKKV_EXPERIMENTAL_API
#include "packkv/packkv_experimental.h"


namespace {

using packkv::require;

void require_cache_seq(const packkv_cache_t* cache, int32_t seq, const char* fn) {
  require(cache != nullptr, std::string(fn) + ": cache is NULL");
  const int max = cache->impl->config().max_seqs;
  require(seq >= 0 && seq < max, std::string(fn) + ": seq_id " + std::to_string(seq) +
                                     " is outside [0, max_seqs = " + std::to_string(max) + ")");
}

}  // namespace

extern "C" {

int64_t packkv_x_last_bytes_needed(void) { return packkv::last_bytes_needed(); }

packkv_status_t packkv_x_pool_params_init(packkv_x_pool_params_t* params, size_t struct_size) {
  PACKKV_API_BEGIN
  require(params != nullptr, "packkv_x_pool_params_init: params is NULL");
  if (struct_size < PACKKV_X_POOL_PARAMS_SIZE_V1)
    packkv::fail(PACKKV_ERR_VERSION_MISMATCH, "packkv_x_pool_params_init: struct_size " + std::to_string(struct_size) +
                                                  " is smaller than version 1 of packkv_x_pool_params_t (" +
                                                  std::to_string(PACKKV_X_POOL_PARAMS_SIZE_V1) + ")");
  require(struct_size <= UINT32_MAX, "packkv_x_pool_params_init: struct_size is too large");
  packkv_x_pool_params_t d;
  std::memset(&d, 0, sizeof d);
  d.struct_size = (uint32_t)struct_size;
  d.device = -1;
  d.page_bytes = PACKKV_X_POOL_DEFAULT_PAGE_BYTES;
  std::memset(params, 0, struct_size);
  std::memcpy(params, &d, struct_size < sizeof d ? struct_size : sizeof d);
  PACKKV_API_END("packkv_x_pool_params_init")
}

packkv_status_t packkv_x_pool_page_bytes_for(const packkv_cache_params_t* params, int64_t* page_bytes) {
  PACKKV_API_BEGIN
  require(page_bytes != nullptr, "packkv_x_pool_page_bytes_for: page_bytes is NULL");
  const packkv::Config c = packkv::Config::from_params(params, "packkv_x_pool_page_bytes_for");
  *page_bytes = (int64_t)packkv::page_bytes_for(c.shape, c.device);
  PACKKV_API_END("packkv_x_pool_page_bytes_for")
}

packkv_status_t packkv_x_pool_create(const packkv_x_pool_params_t* params, packkv_x_pool_t** out) {
  if (out != nullptr) *out = nullptr;
  PACKKV_API_BEGIN
  const char* fn = "packkv_x_pool_create";
  require(out != nullptr, std::string(fn) + ": out is NULL");
  require(params != nullptr, std::string(fn) + ": params is NULL");
  if (params->struct_size < PACKKV_X_POOL_PARAMS_SIZE_V1)
    packkv::fail(PACKKV_ERR_VERSION_MISMATCH, std::string(fn) + ": params->struct_size " +
                                                  std::to_string(params->struct_size) +
                                                  " is smaller than version 1; use packkv_x_pool_params_init");
  if (params->struct_size > sizeof *params) {
    const unsigned char* extra = reinterpret_cast<const unsigned char*>(params) + sizeof *params;
    for (size_t i = 0; i < params->struct_size - sizeof *params; ++i)
      if (extra[i] != 0)
        packkv::fail(PACKKV_ERR_NOT_SUPPORTED, std::string(fn) + ": params has non-zero bytes beyond the fields "
                                                                 "this library knows (a newer caller)");
  }
  require(params->device >= -1, std::string(fn) + ": device must be -1 or a device ordinal, got " +
                                    std::to_string(params->device));
  require(params->reserve == 0 || params->reserve == 1,
          std::string(fn) + ": reserve must be 0 or 1, got " + std::to_string(params->reserve));
  require(params->page_bytes > 0, std::string(fn) + ": page_bytes must be > 0, got " +
                                      std::to_string(params->page_bytes));
  std::unique_ptr<packkv_x_pool> pool(new packkv_x_pool);
  try {
    pool->pool = params->device >= 0
                     ? packkv::make_device_pool(params->device, (size_t)params->page_bytes, params->budget_bytes,
                                                params->reserve == 1)
                     : std::make_shared<packkv::PagePool>((size_t)params->page_bytes, params->budget_bytes,
                                                          params->reserve == 1);
    pool->device = params->device;
  } catch (const packkv::Error& e) {
    packkv::fail(e.code(), std::string(fn) + ": " + e.what());
  }
  *out = pool.release();
  PACKKV_API_END("packkv_x_pool_create")
}

void packkv_x_pool_destroy(packkv_x_pool_t* pool) {
  try {
    delete pool;
  } catch (...) {
  }
}

packkv_status_t packkv_x_cache_create_in_pool(const packkv_cache_params_t* params, packkv_x_pool_t* pool,
                                              packkv_cache_t** out) {
  if (out != nullptr) *out = nullptr;
  PACKKV_API_BEGIN
  const char* fn = "packkv_x_cache_create_in_pool";
  require(out != nullptr, std::string(fn) + ": out is NULL");
  require(pool != nullptr, std::string(fn) + ": pool is NULL");
  const packkv::Config config = packkv::Config::from_params(params, fn);
  try {
    *out = packkv::new_cache_handle(config, pool);
  } catch (const packkv::Error& e) {
    packkv::fail(e.code(), std::string(fn) + ": " + e.what());
  }
  PACKKV_API_END("packkv_x_cache_create_in_pool")
}

packkv_status_t packkv_x_pool_stats(const packkv_x_pool_t* pool, packkv_x_pool_stats_t* stats) {
  PACKKV_API_BEGIN
  require(pool != nullptr, "packkv_x_pool_stats: pool is NULL");
  require(stats != nullptr, "packkv_x_pool_stats: stats is NULL");
  if (stats->struct_size < PACKKV_X_POOL_STATS_SIZE_V1)
    packkv::fail(PACKKV_ERR_VERSION_MISMATCH, "packkv_x_pool_stats: stats->struct_size " +
                                                  std::to_string(stats->struct_size) + " is smaller than version 1 (" +
                                                  std::to_string(PACKKV_X_POOL_STATS_SIZE_V1) + ")");
  const packkv::PoolCounters k = pool->pool->counters();
  packkv_x_pool_stats_t full;
  std::memset(&full, 0, sizeof full);
  full.page_bytes = k.page_bytes;
  full.budget_bytes = k.budget_bytes;
  full.bytes_held = k.bytes_held;
  full.bytes_in_use = k.pages_in_use * k.page_bytes;
  full.free_bytes = k.budget_bytes > 0 ? k.budget_bytes - full.bytes_in_use : -1;
  full.n_caches = k.n_caches;
  const uint32_t size = stats->struct_size;
  full.struct_size = size;
  std::memcpy(stats, &full, size < sizeof full ? size : sizeof full);
  if (size > sizeof full) std::memset(reinterpret_cast<unsigned char*>(stats) + sizeof full, 0, size - sizeof full);
  PACKKV_API_END("packkv_x_pool_stats")
}

packkv_status_t packkv_x_pool_tokens_fit(const packkv_x_pool_t* pool, int64_t* tokens) {
  PACKKV_API_BEGIN
  require(pool != nullptr, "packkv_x_pool_tokens_fit: pool is NULL");
  require(tokens != nullptr, "packkv_x_pool_tokens_fit: tokens is NULL");
  *tokens = pool->pool->tokens_fit();
  PACKKV_API_END("packkv_x_pool_tokens_fit")
}

packkv_status_t packkv_x_cache_truncate(packkv_cache_t* cache, int32_t seq_id, int64_t n_tokens) {
  PACKKV_API_BEGIN
  const char* fn = "packkv_x_cache_truncate";
  require_cache_seq(cache, seq_id, fn);
  const int64_t len = cache->impl->seq_length(seq_id);
  const int64_t expired = cache->impl->expired(seq_id);
  require(n_tokens >= 0, std::string(fn) + ": n_tokens must be >= 0 (the number of tokens to keep), got " +
                            std::to_string(n_tokens));
  require(n_tokens <= len, std::string(fn) + ": n_tokens " + std::to_string(n_tokens) + " is more than sequence " +
                               std::to_string(seq_id) + " holds (" + std::to_string(len) +
                               " tokens); truncate only shortens");
  require(n_tokens >= expired || n_tokens == len,
          std::string(fn) + ": n_tokens " + std::to_string(n_tokens) + " is before the sliding window's start " +
              std::to_string(expired) + " (those tokens are gone)");
  if (n_tokens == len) return PACKKV_OK;
  cache->impl->truncate(seq_id, n_tokens);
  PACKKV_API_END("packkv_x_cache_truncate")
}

packkv_status_t packkv_x_cache_fork(packkv_cache_t* cache, int32_t src_seq, int32_t dst_seq) {
  PACKKV_API_BEGIN
  const char* fn = "packkv_x_cache_fork";
  require_cache_seq(cache, src_seq, fn);
  require_cache_seq(cache, dst_seq, fn);
  require(src_seq != dst_seq, std::string(fn) + ": src_seq and dst_seq are both " + std::to_string(src_seq));
  const int64_t dst_len = cache->impl->seq_length(dst_seq);
  if (dst_len != 0)
    packkv::fail(PACKKV_ERR_INVALID_STATE, std::string(fn) + ": dst_seq " + std::to_string(dst_seq) + " holds " +
                                               std::to_string(dst_len) +
                                               " tokens; fork needs an empty sequence (packkv_cache_remove_seq)");
  cache->impl->fork(src_seq, dst_seq);
  PACKKV_API_END("packkv_x_cache_fork")
}

packkv_status_t packkv_x_cache_set_window(packkv_cache_t* cache, int64_t window_tokens) {
  PACKKV_API_BEGIN
  const char* fn = "packkv_x_cache_set_window";
  require(cache != nullptr, std::string(fn) + ": cache is NULL");
  require(window_tokens >= 0, std::string(fn) + ": window_tokens must be >= 0 (0: no window), got " +
                                  std::to_string(window_tokens));
  const int n = cache->impl->config().max_seqs;
  for (int i = 0; i < n; ++i)
    if (cache->impl->seq_length(i) != 0)
      packkv::fail(PACKKV_ERR_INVALID_STATE, std::string(fn) + ": the cache holds tokens (sequence " +
                                                 std::to_string(i) + "); set the window on an empty cache");
  cache->impl->set_window(window_tokens);
  PACKKV_API_END("packkv_x_cache_set_window")
}

packkv_status_t packkv_x_cache_window_start(const packkv_cache_t* cache, int32_t seq_id, int64_t* first_token) {
  PACKKV_API_BEGIN
  const char* fn = "packkv_x_cache_window_start";
  require_cache_seq(cache, seq_id, fn);
  require(first_token != nullptr, std::string(fn) + ": first_token is NULL");
  *first_token = cache->impl->expired(seq_id);
  PACKKV_API_END("packkv_x_cache_window_start")
}

packkv_status_t packkv_x_cache_export_size(const packkv_cache_t* cache, int32_t seq_id, size_t* bytes) {
  PACKKV_API_BEGIN
  const char* fn = "packkv_x_cache_export_size";
  require_cache_seq(cache, seq_id, fn);
  require(bytes != nullptr, std::string(fn) + ": bytes is NULL");
  *bytes = cache->impl->export_size(seq_id);
  PACKKV_API_END("packkv_x_cache_export_size")
}

packkv_status_t packkv_x_cache_export(const packkv_cache_t* cache, int32_t seq_id, void* h_buf, size_t capacity,
                                      size_t* written) {
  PACKKV_API_BEGIN
  const char* fn = "packkv_x_cache_export";
  require_cache_seq(cache, seq_id, fn);
  require(written != nullptr, std::string(fn) + ": written is NULL");
  require(h_buf != nullptr, std::string(fn) + ": h_buf is NULL");
  const size_t need = cache->impl->export_size(seq_id);
  if (capacity < need)
    packkv::fail(PACKKV_ERR_CAPACITY_EXCEEDED, std::string(fn) + ": the export of sequence " +
                                                   std::to_string(seq_id) + " takes " + std::to_string(need) +
                                                   " bytes, capacity is " + std::to_string(capacity) +
                                                   " (packkv_x_cache_export_size); nothing was written");
  cache->impl->export_seq(seq_id, static_cast<uint8_t*>(h_buf), need);
  *written = need;
  PACKKV_API_END("packkv_x_cache_export")
}

packkv_status_t packkv_x_cache_import(packkv_cache_t* cache, int32_t seq_id, const void* h_buf, size_t size) {
  PACKKV_API_BEGIN
  const char* fn = "packkv_x_cache_import";
  require_cache_seq(cache, seq_id, fn);
  require(h_buf != nullptr || size == 0, std::string(fn) + ": h_buf is NULL");
  const int64_t len = cache->impl->seq_length(seq_id);
  if (len != 0)
    packkv::fail(PACKKV_ERR_INVALID_STATE, std::string(fn) + ": sequence " + std::to_string(seq_id) + " holds " +
                                               std::to_string(len) + " tokens; import needs an empty sequence");
  static const uint8_t empty[1] = {0};
  try {
    cache->impl->import_seq(seq_id, h_buf ? static_cast<const uint8_t*>(h_buf) : empty, size);
  } catch (const packkv::Error& e) {
    // The pool's budget message (pool/page_pool.h) does not know the call; the checks of
    // the export's contents (api/seq_export_io.cpp) already end with the suffix.
    const bool budget = e.code() == PACKKV_X_ERR_BUDGET_EXCEEDED;
    packkv::fail(e.code(), std::string(fn) + ": " + e.what() + (budget ? "; nothing was imported" : ""));
  }
  PACKKV_API_END("packkv_x_cache_import")
}

packkv_status_t packkv_x_cache_set_parallel(packkv_cache_t* cache, packkv_x_parallel_fn fn, void* user,
                                            int32_t n_tasks) {
  PACKKV_API_BEGIN
  const char* fn_name = "packkv_x_cache_set_parallel";
  require(cache != nullptr, std::string(fn_name) + ": cache is NULL");
  require(!fn || (n_tasks >= 1 && n_tasks <= 1024),
          std::string(fn_name) + ": n_tasks must be in [1, 1024], got " + std::to_string(n_tasks));
  cache->impl->set_parallel(fn, user, fn ? n_tasks : 0);
  PACKKV_API_END("packkv_x_cache_set_parallel")
}

}  // extern "C"
