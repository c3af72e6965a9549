// C shims of the Go binding: one per fallible libpackkv function. Each calls the function
// and, when it fails, copies the thread-local last-error message into err (cap bytes) within
// the same cgo call (goroutines may change OS thread between cgo calls). Data arguments come
// as a Go pointer (host slices; NULL if unused) and a uintptr_t device address; streams as
// uintptr_t. The shims keep no pointer after they return.
#ifndef PACKKV_GO_SHIMS_H
#define PACKKV_GO_SHIMS_H
#include <stddef.h>
#include <stdint.h>
#include <packkv/packkv.h>
#define PACKKV_EXPERIMENTAL_API
#include <packkv/packkv_experimental.h>

packkv_status_t pkgo_params_init(packkv_cache_params_t* p, size_t size, char* err, size_t cap);
packkv_status_t pkgo_bits_for_rel_scale(float r, int32_t* bits, char* err, size_t cap);
packkv_status_t pkgo_create(const packkv_cache_params_t* p, packkv_cache_t** out, char* err, size_t cap);
packkv_status_t pkgo_get_params(const packkv_cache_t* c, packkv_cache_params_t* p, char* err, size_t cap);
packkv_status_t pkgo_device(const packkv_cache_t* c, int32_t* d, char* err, size_t cap);
packkv_status_t pkgo_append(packkv_cache_t* c, int32_t n_seqs, const int32_t* ids,
                                   const int32_t* n_tokens, const void* hk, uintptr_t dk,
                                   const void* hv, uintptr_t dv, packkv_dtype_t dtype,
                                   uintptr_t stream, int64_t* needed, char* err, size_t cap);
packkv_status_t pkgo_remove_seq(packkv_cache_t* c, int32_t id, char* err, size_t cap);
packkv_status_t pkgo_reset(packkv_cache_t* c, char* err, size_t cap);
packkv_status_t pkgo_seq_length(const packkv_cache_t* c, int32_t id, int64_t* n, char* err, size_t cap);
packkv_status_t pkgo_stats(const packkv_cache_t* c, int32_t id, packkv_cache_stats_t* s, char* err, size_t cap);
packkv_status_t pkgo_decompress(const packkv_cache_t* c, int32_t id, float* hk, uintptr_t dk,
                                       float* hv, uintptr_t dv, int64_t capacity,
                                       uintptr_t stream, char* err, size_t cap);
packkv_status_t pkgo_sync(const packkv_cache_t* c, char* err, size_t cap);
packkv_status_t pkgo_workspace_size(const packkv_cache_t* c, int32_t n_seqs, int32_t n_q_heads,
                                           size_t* bytes, char* err, size_t cap);
packkv_status_t pkgo_scores(const packkv_cache_t* c, int32_t n_seqs, const int32_t* ids,
                                   int32_t n_q_heads, const void* hq, uintptr_t dq,
                                   packkv_dtype_t q_dtype, float* hs, uintptr_t ds, int64_t ld,
                                   void* hws, uintptr_t dws, size_t ws_bytes, uintptr_t stream,
                                   char* err, size_t cap);
packkv_status_t pkgo_apply(const packkv_cache_t* c, int32_t n_seqs, const int32_t* ids,
                                  int32_t n_q_heads, const float* hp, uintptr_t dp, int64_t ld,
                                  float* ho, uintptr_t dout, void* hws, uintptr_t dws,
                                  size_t ws_bytes, uintptr_t stream, char* err, size_t cap);
packkv_status_t pkgo_decode(const packkv_cache_t* c, int32_t n_seqs, const int32_t* ids,
                                   int32_t n_q_heads, const void* hq, uintptr_t dq,
                                   packkv_dtype_t q_dtype, float scale, float* ho, uintptr_t dout,
                                   float* hl, uintptr_t dl, void* hws, uintptr_t dws,
                                   size_t ws_bytes, uintptr_t stream, char* err, size_t cap);

// Experimental API (packkv_experimental.h).
packkv_status_t pkgo_x_pool_params_init(packkv_x_pool_params_t* p, size_t size, char* err, size_t cap);
packkv_status_t pkgo_x_pool_create(const packkv_x_pool_params_t* p, packkv_x_pool_t** out, char* err, size_t cap);
packkv_status_t pkgo_x_pool_stats(const packkv_x_pool_t* pool, packkv_x_pool_stats_t* s, char* err, size_t cap);
packkv_status_t pkgo_x_pool_tokens_fit(const packkv_x_pool_t* pool, int64_t* n, char* err, size_t cap);
packkv_status_t pkgo_x_pool_page_bytes_for(const packkv_cache_params_t* p, int64_t* n, char* err, size_t cap);
packkv_status_t pkgo_x_create_in_pool(const packkv_cache_params_t* p, packkv_x_pool_t* pool, packkv_cache_t** out,
                                      char* err, size_t cap);
packkv_status_t pkgo_x_truncate(packkv_cache_t* c, int32_t id, int64_t n, char* err, size_t cap);
packkv_status_t pkgo_x_fork(packkv_cache_t* c, int32_t src, int32_t dst, char* err, size_t cap);
packkv_status_t pkgo_x_export_size(const packkv_cache_t* c, int32_t id, size_t* n, char* err, size_t cap);
packkv_status_t pkgo_x_export(const packkv_cache_t* c, int32_t id, void* buf, size_t capacity, size_t* written,
                              char* err, size_t cap);
packkv_status_t pkgo_x_import(packkv_cache_t* c, int32_t id, const void* buf, size_t size, int64_t* needed,
                              char* err, size_t cap);
packkv_status_t pkgo_x_set_window(packkv_cache_t* c, int64_t w, char* err, size_t cap);
packkv_status_t pkgo_x_set_parallel(packkv_cache_t* c, void* fn, void* user, int32_t n_tasks, char* err, size_t cap);
packkv_status_t pkgo_x_window_start(const packkv_cache_t* c, int32_t id, int64_t* first, char* err, size_t cap);

#endif
