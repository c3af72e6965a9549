// C shims of the Go binding (compiled by cgo with the package). See shims.h.
#include "shims.h"

// Every shim calls one fallible libpackkv function and, when it fails, copies the
// thread-local last-error message into err (cap bytes) within the same cgo call: between two
// cgo calls a goroutine may move to another OS thread, where the message would be another
// call's. Device pointers and streams arrive as uintptr_t and become pointers here, so Go
// code never converts an integer into an unsafe.Pointer (and never hides a Go pointer in an
// integer either).

static packkv_status_t pkgo_done(packkv_status_t st, char* err, size_t cap) {
  if (st != PACKKV_OK && cap > 0) packkv_copy_last_error(err, cap);
  return st;
}

packkv_status_t pkgo_params_init(packkv_cache_params_t* p, size_t size, char* err, size_t cap) {
  return pkgo_done(packkv_cache_params_init(p, size), err, cap);
}
packkv_status_t pkgo_bits_for_rel_scale(float r, int32_t* bits, char* err, size_t cap) {
  return pkgo_done(packkv_bits_for_rel_scale(r, bits), err, cap);
}
packkv_status_t pkgo_create(const packkv_cache_params_t* p, packkv_cache_t** out, char* err, size_t cap) {
  return pkgo_done(packkv_cache_create(p, out), err, cap);
}
packkv_status_t pkgo_get_params(const packkv_cache_t* c, packkv_cache_params_t* p, char* err, size_t cap) {
  return pkgo_done(packkv_cache_get_params(c, p), err, cap);
}
packkv_status_t pkgo_device(const packkv_cache_t* c, int32_t* d, char* err, size_t cap) {
  return pkgo_done(packkv_cache_device(c, d), err, cap);
}
// Data arguments arrive twice: as a Go pointer (host slices, checked by cgo's pointer rules and
// kept alive for the call) and as a device address; exactly one of them is used.
#define PKGO_PTR(h, d) ((h) != NULL ? (void*)(h) : (void*)(d))

packkv_status_t pkgo_append(packkv_cache_t* c, int32_t n_seqs, const int32_t* ids,
                                   const int32_t* n_tokens, const void* hk, uintptr_t dk,
                                   const void* hv, uintptr_t dv, packkv_dtype_t dtype,
                                   uintptr_t stream, int64_t* needed, char* err, size_t cap) {
  packkv_status_t st = packkv_cache_append(c, n_seqs, ids, n_tokens, PKGO_PTR(hk, dk), PKGO_PTR(hv, dv), dtype,
                                           (packkv_stream_t)stream);
  *needed = packkv_x_last_bytes_needed();  // same thread as the call (thread-local)
  return pkgo_done(st, err, cap);
}
packkv_status_t pkgo_remove_seq(packkv_cache_t* c, int32_t id, char* err, size_t cap) {
  return pkgo_done(packkv_cache_remove_seq(c, id), err, cap);
}
packkv_status_t pkgo_reset(packkv_cache_t* c, char* err, size_t cap) {
  return pkgo_done(packkv_cache_reset(c), err, cap);
}
packkv_status_t pkgo_seq_length(const packkv_cache_t* c, int32_t id, int64_t* n, char* err, size_t cap) {
  return pkgo_done(packkv_cache_seq_length(c, id, n), err, cap);
}
packkv_status_t pkgo_stats(const packkv_cache_t* c, int32_t id, packkv_cache_stats_t* s, char* err, size_t cap) {
  s->struct_size = (uint32_t)sizeof *s;
  return pkgo_done(packkv_cache_stats(c, id, s), err, cap);
}
packkv_status_t pkgo_decompress(const packkv_cache_t* c, int32_t id, float* hk, uintptr_t dk,
                                       float* hv, uintptr_t dv, int64_t capacity,
                                       uintptr_t stream, char* err, size_t cap) {
  return pkgo_done(packkv_cache_decompress(c, id, (float*)PKGO_PTR(hk, dk), (float*)PKGO_PTR(hv, dv),
                                           capacity, (packkv_stream_t)stream), err, cap);
}
packkv_status_t pkgo_sync(const packkv_cache_t* c, char* err, size_t cap) {
  return pkgo_done(packkv_cache_sync(c), err, cap);
}
packkv_status_t pkgo_workspace_size(const packkv_cache_t* c, int32_t n_seqs, int32_t n_q_heads,
                                           size_t* bytes, char* err, size_t cap) {
  return pkgo_done(packkv_attn_workspace_size(c, n_seqs, n_q_heads, bytes), err, cap);
}
packkv_status_t pkgo_scores(const packkv_cache_t* c, int32_t n_seqs, const int32_t* ids,
                                   int32_t n_q_heads, const void* hq, uintptr_t dq,
                                   packkv_dtype_t q_dtype, float* hs, uintptr_t ds, int64_t ld,
                                   void* hws, uintptr_t dws, size_t ws_bytes, uintptr_t stream,
                                   char* err, size_t cap) {
  return pkgo_done(packkv_attn_scores(c, n_seqs, ids, n_q_heads, PKGO_PTR(hq, dq), q_dtype,
                                      (float*)PKGO_PTR(hs, ds), ld, PKGO_PTR(hws, dws), ws_bytes,
                                      (packkv_stream_t)stream), err, cap);
}
packkv_status_t pkgo_apply(const packkv_cache_t* c, int32_t n_seqs, const int32_t* ids,
                                  int32_t n_q_heads, const float* hp, uintptr_t dp, int64_t ld,
                                  float* ho, uintptr_t dout, void* hws, uintptr_t dws,
                                  size_t ws_bytes, uintptr_t stream, char* err, size_t cap) {
  return pkgo_done(packkv_attn_apply(c, n_seqs, ids, n_q_heads, (const float*)PKGO_PTR(hp, dp), ld,
                                     (float*)PKGO_PTR(ho, dout), PKGO_PTR(hws, dws), ws_bytes,
                                     (packkv_stream_t)stream), err, cap);
}
packkv_status_t pkgo_decode(const packkv_cache_t* c, int32_t n_seqs, const int32_t* ids,
                                   int32_t n_q_heads, const void* hq, uintptr_t dq,
                                   packkv_dtype_t q_dtype, float scale, float* ho, uintptr_t dout,
                                   float* hl, uintptr_t dl, void* hws, uintptr_t dws,
                                   size_t ws_bytes, uintptr_t stream, char* err, size_t cap) {
  return pkgo_done(packkv_attn_decode(c, n_seqs, ids, n_q_heads, PKGO_PTR(hq, dq), q_dtype, scale,
                                      (float*)PKGO_PTR(ho, dout), (float*)PKGO_PTR(hl, dl),
                                      PKGO_PTR(hws, dws), ws_bytes, (packkv_stream_t)stream),
                   err, cap);
}

// Experimental API (packkv_experimental.h).
packkv_status_t pkgo_x_pool_params_init(packkv_x_pool_params_t* p, size_t size, char* err, size_t cap) {
  return pkgo_done(packkv_x_pool_params_init(p, size), err, cap);
}
packkv_status_t pkgo_x_pool_create(const packkv_x_pool_params_t* p, packkv_x_pool_t** out, char* err, size_t cap) {
  return pkgo_done(packkv_x_pool_create(p, out), err, cap);
}
packkv_status_t pkgo_x_pool_stats(const packkv_x_pool_t* pool, packkv_x_pool_stats_t* s, char* err, size_t cap) {
  return pkgo_done(packkv_x_pool_stats(pool, s), err, cap);
}
packkv_status_t pkgo_x_pool_tokens_fit(const packkv_x_pool_t* pool, int64_t* n, char* err, size_t cap) {
  return pkgo_done(packkv_x_pool_tokens_fit(pool, n), err, cap);
}
packkv_status_t pkgo_x_pool_page_bytes_for(const packkv_cache_params_t* p, int64_t* n, char* err, size_t cap) {
  return pkgo_done(packkv_x_pool_page_bytes_for(p, n), err, cap);
}
packkv_status_t pkgo_x_create_in_pool(const packkv_cache_params_t* p, packkv_x_pool_t* pool, packkv_cache_t** out,
                                      char* err, size_t cap) {
  return pkgo_done(packkv_x_cache_create_in_pool(p, pool, out), err, cap);
}
packkv_status_t pkgo_x_truncate(packkv_cache_t* c, int32_t id, int64_t n, char* err, size_t cap) {
  return pkgo_done(packkv_x_cache_truncate(c, id, n), err, cap);
}
packkv_status_t pkgo_x_fork(packkv_cache_t* c, int32_t src, int32_t dst, char* err, size_t cap) {
  return pkgo_done(packkv_x_cache_fork(c, src, dst), err, cap);
}
packkv_status_t pkgo_x_set_window(packkv_cache_t* c, int64_t w, char* err, size_t cap) {
  return pkgo_done(packkv_x_cache_set_window(c, w), err, cap);
}
packkv_status_t pkgo_x_set_parallel(packkv_cache_t* c, void* fn, void* user, int32_t n_tasks, char* err, size_t cap) {
  return pkgo_done(packkv_x_cache_set_parallel(c, (packkv_x_parallel_fn)fn, user, n_tasks), err, cap);
}
packkv_status_t pkgo_x_window_start(const packkv_cache_t* c, int32_t id, int64_t* first, char* err, size_t cap) {
  return pkgo_done(packkv_x_cache_window_start(c, id, first), err, cap);
}
packkv_status_t pkgo_x_export_size(const packkv_cache_t* c, int32_t id, size_t* n, char* err, size_t cap) {
  return pkgo_done(packkv_x_cache_export_size(c, id, n), err, cap);
}
packkv_status_t pkgo_x_export(const packkv_cache_t* c, int32_t id, void* buf, size_t capacity, size_t* written,
                              char* err, size_t cap) {
  return pkgo_done(packkv_x_cache_export(c, id, buf, capacity, written), err, cap);
}
packkv_status_t pkgo_x_import(packkv_cache_t* c, int32_t id, const void* buf, size_t size, int64_t* needed,
                              char* err, size_t cap) {
  packkv_status_t st = packkv_x_cache_import(c, id, buf, size);
  *needed = packkv_x_last_bytes_needed();
  return pkgo_done(st, err, cap);
}
