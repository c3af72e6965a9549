/*
 * libpackkv: the experimental part of the C API -- declarations that are NOT yet frozen.
 *
 * Policy (modelled on zstd's ZSTD_STATIC_LINKING_ONLY section)
 *   - Everything in packkv.h is frozen: it keeps its meaning and ABI for the whole
 *     major version (the SONAME).
 *   - Everything here may change or disappear in ANY release, minor and patch ones
 *     included, without a deprecation period. Code that uses it must be rebuilt against
 *     the exact libpackkv version it runs with (check packkv_version_number() against
 *     PACKKV_VERSION_NUMBER at start-up, or link libpackkv statically).
 *   - To use it, define PACKKV_EXPERIMENTAL_API before including this header: the
 *     opt-in makes every use visible in the caller's source. Without it, this header
 *     stops the build with an error.
 *   - The language bindings (Python, Rust, Go) wrap it too, marked experimental in each
 *     (they are built with the library and change with it).
 *   - A declaration moves from here to packkv.h (unchanged, or changed once more) when it
 *     is frozen; this header then keeps nothing for it.
 *   - Plain C99, like packkv.h; installed next to it; compiled as strict C99 by the
 *     header check of the test suite.
 *
 * Contents (this version)
 *   - packkv_attn_decode_multi: decode attention for several queries per sequence
 *     (chunked prefill over a cached prefix, speculative-decoding verification).
 *   - packkv_format_id_t: the identifiers of the compressed block formats. Only one
 *     format exists today (every cache uses it); a second one (a tile layout made for
 *     tensor-core decoding) is planned, and with it a way to choose one at cache creation.
 *     The identifiers are listed here first so that tools that store compressed blocks can
 *     name the format they hold.
 *   - Memory pools (packkv_x_pool_*): fixed-size pages for the compressed blocks, shared by
 *     the caches of all layers, with a byte budget; PACKKV_X_ERR_BUDGET_EXCEEDED.
 *   - Sequence operations: packkv_x_cache_truncate, packkv_x_cache_fork.
 *   - Sliding window: packkv_x_cache_set_window, packkv_x_cache_window_start.
 *   - Export / import of one sequence: packkv_x_cache_export_size, packkv_x_cache_export,
 *     packkv_x_cache_import (byte format version PACKKV_X_SEQ_EXPORT_VERSION).
 *   - Running a CPU cache's parallel work on the caller's threads: packkv_x_cache_set_parallel.
 *   Names follow docs/API-CONVENTIONS.md R2: packkv_x_* until frozen.
 */
#ifndef PACKKV_PACKKV_EXPERIMENTAL_H
#define PACKKV_PACKKV_EXPERIMENTAL_H

#if !defined(PACKKV_EXPERIMENTAL_API)
#error "packkv_experimental.h declares functions that are not frozen; define PACKKV_EXPERIMENTAL_API to use it"
#endif

#include "packkv/packkv.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Version of this experimental header: raised whenever anything in it changes. */
#define PACKKV_EXPERIMENTAL_VERSION 4

/** Identifier of a compressed block format (the layout of a block's bytes: header,
 *  permutation, zero points and scales, tiles). The values are those of the library's
 *  internal fmt::FormatId (src/format/shape.h of the source repository).
 *
 *  PACKKV_FORMAT_ROUND_MAJOR  tiles of rounds of 16 tokens: per round the channels'
 *                             minimums, encode lengths and packed offsets (PACKKV.md
 *                             section 5); the format of every cache of this version. */
typedef enum packkv_format_id {
  PACKKV_FORMAT_ROUND_MAJOR = 1
} packkv_format_id_t;

/* ------------------------------------------------------------------------- */
/* Status codes of the experimental API (values pinned like packkv.h's)       */
/* ------------------------------------------------------------------------- */

enum {
  /** An append needed more pool pages than the pool's budget allows. Nothing was
   *  appended; packkv_x_last_bytes_needed() says how many bytes of pages it needed. Free
   *  memory (remove, truncate sequences) or give the pool a larger budget. */
  PACKKV_X_ERR_BUDGET_EXCEEDED = 11
};

/** Bytes of pool pages that the last call on the calling thread needed when it failed
 *  with PACKKV_X_ERR_BUDGET_EXCEEDED (a multiple of the pool's page_bytes); 0 after any
 *  other outcome (every status-returning call clears it on entry). Thread-safe
 *  (thread-local), never fails. */
PACKKV_API int64_t packkv_x_last_bytes_needed(void);

/* ------------------------------------------------------------------------- */
/* Memory pools                                                              */
/* ------------------------------------------------------------------------- */
/* A pool holds the compressed blocks of the caches made in it (all the layers of a model
 * on one device, typically) in fixed-size pages. A sequence's blocks are placed one
 * after the other (16-byte aligned) in its open page; a block that does not fit starts
 * a new page, and the rest of the old one stays unused (at most one block's bytes per
 * page: the page-end waste). Blocks never move, so growing a sequence never copies it,
 * and the memory held is at most the bytes used, plus the page-end waste, plus one
 * partly filled page per sequence (bench/RESULTS.md measures both).
 * What a pool does NOT hold: residual windows (per sequence, residual_tokens to
 * residual_tokens + block_tokens tokens plus the largest append, in kv_dtype) and block
 * tables (16 bytes per block on the CPU; 8 bytes per block and per page-list entry on a
 * CUDA cache, allocated at creation for max_tokens_per_seq); they belong to each cache,
 * outside the budget.
 * A cache made with packkv_cache_create has a private pool without a budget, its page
 * size from packkv_x_pool_page_bytes_for().
 * Memory: host pages are anonymous mmaps; a grow-on-demand pool returns a page to the
 * system as soon as no block and no sequence uses it (RSS shrinks), a reserving pool
 * maps and touches its whole budget at creation and keeps it until destroyed.
 * Thread safety: every packkv_x_pool_* function is thread-safe, and caches made in one pool
 * may be used from different threads at the same time (the pool locks itself); each cache
 * keeps packkv.h's rules (its mutating calls do not overlap other calls on it).
 * Device pools (params.device >= 0) hold the compressed blocks of CUDA caches on that
 * device: pages carved from cudaMalloc slabs (multiples of 2 MiB, the allocation granule;
 * a reserving pool takes its budget as one slab at creation; a growing one frees a slab
 * once all its pages are free, keeping one empty slab). A CUDA cache made with
 * packkv_cache_create has a private device pool. The blobs of a CUDA cache are placed by
 * the device (only it knows their sizes), so an append takes pages for the worst case of
 * its flushes and gives back what it did not use once the device reports the exact
 * placement (asynchronously, at a later call); each page keeps 64 bytes unused at its
 * end. When the worst case does not fit the budget, the append first waits for the
 * cache's work to learn the exact placement and tries again; it fails with
 * PACKKV_X_ERR_BUDGET_EXCEEDED only if the worst case still does not fit (the bytes
 * needed are that worst case). A CPU cache needs a host pool and a CUDA cache a pool of
 * its device (else PACKKV_ERR_NOT_SUPPORTED). */

typedef struct packkv_x_pool packkv_x_pool_t;

/** Pool configuration (rules of packkv.h's params structs: struct_size first, defaults
 *  from packkv_x_pool_params_init, fields only appended). */
typedef struct packkv_x_pool_params {
  uint32_t struct_size;  /* sizeof(packkv_x_pool_params_t) as the caller compiled it */
  int32_t device;        /* -1 (default): host pages for CPU caches; >= 0: pages in that CUDA
                            device's memory, for CUDA caches on it */
  int64_t page_bytes;    /* bytes per page: a multiple of 4096 in [4096, 2^31]; default
                            PACKKV_X_POOL_DEFAULT_PAGE_BYTES. Must hold the largest block of
                            every cache made in it (packkv_x_pool_page_bytes_for) */
  int64_t budget_bytes;  /* 0 (default): no budget; else the pool never holds more than
                            floor(budget_bytes / page_bytes) >= 1 pages */
  int32_t reserve;       /* 0 (default): pages are mapped on demand and unmapped when freed;
                            1: the whole budget is mapped and touched at creation (needs
                            budget_bytes > 0) and held until the pool is destroyed */
  int32_t reserved0;     /* zero */
} packkv_x_pool_params_t;

/** Size of version 1 of packkv_x_pool_params_t. */
#define PACKKV_X_POOL_PARAMS_SIZE_V1 32

/** Largest-possible blocks per page of packkv_x_pool_page_bytes_for. */
#define PACKKV_X_BLOCKS_PER_PAGE 16

/** Default page size: 1 MiB = packkv_x_pool_page_bytes_for() of 8 KV heads x 128, blocks of 64
 *  tokens, 4/3-bit codes: 16 largest-possible blocks, about 36 blocks of real K/V (29 KB each);
 *  page-end waste 1.2% (bench/RESULTS.md, "Page size"). With the default 5/4-bit codes of that
 *  shape a 1 MiB page holds 12 largest-possible blocks, inside the measured knee (8-16);
 *  packkv_x_pool_page_bytes_for() gives 1.3125 MiB (16 of them) on the host, 2 MiB on a device. */
#define PACKKV_X_POOL_DEFAULT_PAGE_BYTES 1048576

/** Fills *params with defaults (device -1, PACKKV_X_POOL_DEFAULT_PAGE_BYTES, no budget,
 *  grow on demand) and sets struct_size.
 *  @return PACKKV_ERR_INVALID_ARGUMENT for NULL; PACKKV_ERR_VERSION_MISMATCH if
 *          struct_size < PACKKV_X_POOL_PARAMS_SIZE_V1. Thread-safe. */
PACKKV_API packkv_status_t packkv_x_pool_params_init(packkv_x_pool_params_t* params, size_t struct_size);

/** The page size for caches with these params: what a private pool uses, and the
 *  recommended page_bytes of a shared pool for them: room for PACKKV_X_BLOCKS_PER_PAGE
 *  largest-possible blocks of that shape, rounded up to 64 KiB (chosen by the
 *  measurement in bench/RESULTS.md, "Page size"); for params.device >= 0 further rounded
 *  up to a power of two up to 2 MiB, or to a multiple of 2 MiB, so that pages tile the
 *  device allocator's 2 MiB granules (2 MiB for 8 KV heads x 128 with the default codes;
 *  cuda/device_pages.cu). A pool's pages must hold at least one
 *  largest-possible block (16-byte aligned); the message of a refused
 *  packkv_x_cache_create_in_pool gives that minimum.
 *  @param params     [host] cache params (validated as by packkv_cache_create, except
 *                    that params.device is not looked up: only host (-1) or device
 *                    (>= 0) matters).
 *  @param page_bytes [host] out.
 *  @return as packkv_cache_create's validation; PACKKV_ERR_INVALID_ARGUMENT when 16
 *          largest-possible blocks pass the largest page (2^31 bytes; the message names
 *          the shape). Thread-safe. */
PACKKV_API packkv_status_t packkv_x_pool_page_bytes_for(const packkv_cache_params_t* params, int64_t* page_bytes);

/** Creates a pool.
 *  @param params [host] from packkv_x_pool_params_init, then edited.
 *  @param out    [host] receives the handle; NULL on failure.
 *  @return PACKKV_ERR_INVALID_ARGUMENT for NULL or a bad field (message names it);
 *          PACKKV_ERR_VERSION_MISMATCH; PACKKV_ERR_NOT_SUPPORTED for device >= 0 in a
 *          build without the CUDA backend (or with no CUDA device visible);
 *          PACKKV_ERR_INVALID_ARGUMENT for a device ordinal that does not exist;
 *          PACKKV_ERR_OUT_OF_HOST_MEMORY when reserving the budget fails
 *          (PACKKV_ERR_OUT_OF_DEVICE_MEMORY for a reserving device pool).
 *  Thread-safe. */
PACKKV_API packkv_status_t packkv_x_pool_create(const packkv_x_pool_params_t* params, packkv_x_pool_t** out);

/** Drops the caller's reference to a pool. The pool itself is freed when its last
 *  cache is destroyed too (caches made in it keep working). Accepts NULL. Thread-safe
 *  with respect to the pool's caches (they may be in use on other threads). */
PACKKV_API void packkv_x_pool_destroy(packkv_x_pool_t* pool);

/** Creates a cache whose compressed blocks live in `pool` (packkv_cache_create
 *  otherwise: same params, errors and handle; destroy it with packkv_cache_destroy).
 *  @return as packkv_cache_create, and PACKKV_ERR_INVALID_ARGUMENT for a NULL pool or
 *          pages smaller than this cache's largest block (the message gives the size
 *          needed); PACKKV_ERR_NOT_SUPPORTED when params->device is not the pool's.
 *  Thread-safe (the pool may be in use by its other caches meanwhile). */
PACKKV_API packkv_status_t packkv_x_cache_create_in_pool(const packkv_cache_params_t* params,
                                                         packkv_x_pool_t* pool, packkv_cache_t** out);

/** Pool accounting (a consistent snapshot). Sizes in bytes. */
typedef struct packkv_x_pool_stats_s {
  uint32_t struct_size;  /* caller sets: sizeof(packkv_x_pool_stats_t) */
  uint32_t reserved0;
  int64_t page_bytes;
  int64_t budget_bytes;  /* whole pages: floor(budget / page) * page; 0: no budget */
  int64_t bytes_held;    /* memory the pool holds: pages mapped (in use + kept free by a
                            reserving pool); a device pool: its whole slabs */
  int64_t bytes_in_use;  /* pages holding blocks or open for writing */
  int64_t free_bytes;    /* budget_bytes - bytes_in_use; -1 without a budget */
  int64_t n_caches;      /* caches made in the pool and not destroyed */
} packkv_x_pool_stats_t;

#define PACKKV_X_POOL_STATS_SIZE_V1 56

/** Fills *stats.
 *  @return PACKKV_ERR_INVALID_ARGUMENT for NULL; PACKKV_ERR_VERSION_MISMATCH if
 *          stats->struct_size < PACKKV_X_POOL_STATS_SIZE_V1. Thread-safe. */
PACKKV_API packkv_status_t packkv_x_pool_stats(const packkv_x_pool_t* pool, packkv_x_pool_stats_t* stats);

/** How many more tokens fit in the pool's free bytes if every token is appended to
 *  every cache of the pool (one token of a model = one token in each layer's cache): 
 *  floor(free pages / sum over caches of pages per token). A cache's pages per token is
 *  1 / (block_tokens * m), m being the blocks of its mean size b so far (before its first
 *  block: its largest block) that one page holds as blocks are placed (each starting
 *  16-aligned, never split across pages): m = floor((page_bytes - b) / align16(b)) + 1,
 *  or 1 when b >= page_bytes -- so page-end waste is counted. What it assumes: every
 *  later block has the mean size; free pages are the budget's pages not in use (the room
 *  left in the pages sequences are filling is not counted, so with few pages the estimate
 *  errs low); residual windows live outside the pool and are not counted. Measured
 *  against appending until PACKKV_X_ERR_BUDGET_EXCEEDED: within 10% for one sequence in 8-32
 *  pages (tests/host/test_pool.cpp); low by up to one page per sequence being filled (4
 *  sequences in 16 pages: 0.76x the tokens that fit).
 *  @param tokens [host] out: -1 without a budget; 0 when no cache is attached.
 *  @return PACKKV_ERR_INVALID_ARGUMENT for NULL. Thread-safe. */
PACKKV_API packkv_status_t packkv_x_pool_tokens_fit(const packkv_x_pool_t* pool, int64_t* tokens);

/* ------------------------------------------------------------------------- */
/* Sequence operations                                                       */
/* ------------------------------------------------------------------------- */

/** Keeps the first n_tokens tokens of a sequence and drops the rest (speculative
 *  decoding rollback, editing a conversation). Tokens in the residual window are dropped
 *  without any other work. Blocks start after the sink tokens: block b holds tokens
 *  [sink_tokens + b * block_tokens, sink_tokens + (b + 1) * block_tokens). When n_tokens
 *  falls inside a compressed block, that block is decoded and its first
 *  (n_tokens - sink_tokens) % block_tokens tokens return to the residual window
 *  from their STORED values: dequantized ((q + z) * s), rounded to kv_dtype and clamped
 *  to its finite range -- they keep the compression error (within the relative-scale
 *  bound of packkv_cache_params_t) and are compressed again by later flushes. That block
 *  and all later ones are released (their pages return to the pool when nothing else
 *  uses them; a sequence's open page is rewound when no other sequence shares it).
 *  Sink tokens (params.sink_tokens > 0): n_tokens <= sink_tokens keeps the first n_tokens
 *  sink tokens exactly and drops every block and the residual window (no token returns
 *  to it); later appends
 *  fill the sink tokens again first, as in a fresh sequence. K centring
 *  (PACKKV_K_TRANSFORM_CENTER): tokens returned to the residual window get the K mean
 *  added back (their stored K is (k - mean)^ + mean, as packkv_cache_decompress gives);
 *  when block 0 goes, the K mean goes with it and the next block 0 computes it again.
 *  In every case the sequence then equals a fresh one fed the kept tokens' stored values.
 *  @param seq_id   in [0, max_seqs).
 *  @param n_tokens in [window start, current length] (window start: 0 without a sliding
 *                  window, see packkv_x_cache_window_start): n_tokens == length changes
 *                  nothing, 0 empties the sequence.
 *  @return PACKKV_ERR_INVALID_ARGUMENT for NULL, a bad seq_id, or n_tokens outside
 *          [window start, length]; PACKKV_ERR_OUT_OF_HOST_MEMORY (OUT_OF_DEVICE_MEMORY,
 *          CUDA on a CUDA cache). On failure nothing changes.
 *  CUDA caches: the same results, bit for bit (the block is decompressed on the device,
 *  rounded on the host); a cut into the blocks waits for the cache's work (a cut in the
 *  residual window does not); takes no stream.
 *  Thread-safety: mutating call (must not overlap any other call on the cache). */
PACKKV_API packkv_status_t packkv_x_cache_truncate(packkv_cache_t* cache, int32_t seq_id, int64_t n_tokens);

/** Makes sequence dst_seq a copy of src_seq (prefix caching, parallel sampling, beam
 *  search) that shares src's compressed blocks (reference counted, no copy) and copies
 *  its residual window, its sink tokens, its K mean (K centring) and its window start. The two then evolve independently: appends go to pages of
 *  their own; truncate, remove_seq and reset release only their own references.
 *  Statistics: packkv_cache_stats for one sequence counts every block that sequence
 *  reads, shared or not; for the whole cache (seq_id -1) a shared block counts once,
 *  and compressed_bytes_reserved counts each page once.
 *  @param src_seq, dst_seq distinct ids in [0, max_seqs); dst_seq must hold no tokens.
 *  @return PACKKV_ERR_INVALID_ARGUMENT for NULL, bad or equal ids;
 *          PACKKV_ERR_INVALID_STATE if dst_seq holds tokens; PACKKV_ERR_OUT_OF_HOST_MEMORY
 *          (OUT_OF_DEVICE_MEMORY, CUDA on a CUDA cache). On failure nothing changes. Needs
 *          no pool pages (never PACKKV_X_ERR_BUDGET_EXCEEDED). CUDA caches: waits for the
 *          cache's work (device copies of the window, sinks, K mean and tables).
 *  Thread-safety: mutating call. */
PACKKV_API packkv_status_t packkv_x_cache_fork(packkv_cache_t* cache, int32_t src_seq, int32_t dst_seq);

/* ------------------------------------------------------------------------- */
/* Sliding window                                                            */
/* ------------------------------------------------------------------------- */

/** Gives the cache a sliding window of window_tokens tokens (Mistral, Gemma 2/3 sliding
 *  layers): every sequence of length L then attends to its tokens [max(s, L - W), L) only,
 *  s being the previous window start (it never moves back, not even after a truncate).
 *  Positions keep their numbers: packkv_cache_seq_length stays L; packkv_attn_scores
 *  writes -INFINITY for the tokens before the window start, packkv_attn_apply gives them
 *  weight 0 whatever probs says, packkv_attn_decode leaves them out of the softmax, and
 *  packkv_cache_decompress writes them as NaN. A compressed block whose tokens are all
 *  before the window start is freed at the append that expires it (its pages go back to
 *  the pool); a block expired in part stays and its expired tokens are masked by position
 *  (the block's stored permutation is undone before masking). Residual-window tokens
 *  expire the same way and leave with their block's flush. packkv_cache_stats counts the
 *  tokens and bytes held (freed blocks excluded), so its n_tokens may be less than L.
 *  Sink tokens (params.sink_tokens > 0) follow the model, not StreamingLLM: a sink token
 *  older than the window is excluded like any other (sliding-window layers of Mistral
 *  and Gemma see no attention sink); it stays stored (sink_tokens tokens per sequence,
 *  counted in the stats) and packkv_cache_decompress writes it as NaN.
 *  A sequence whose window holds no token (packkv_x_cache_truncate to its window start)
 *  attends like an empty sequence: scores all -inf, zero outputs, lse = -inf.
 *  @param window_tokens >= 1, or 0 for no window (the default).
 *  @return PACKKV_ERR_INVALID_ARGUMENT for NULL or a negative window;
 *          PACKKV_ERR_INVALID_STATE if the cache holds any token (set it right after
 *          creation); PACKKV_ERR_NOT_SUPPORTED on a CUDA cache (this version: the CUDA
 *          attention kernels do not mask yet).
 *  Thread-safety: mutating call. */
PACKKV_API packkv_status_t packkv_x_cache_set_window(packkv_cache_t* cache, int64_t window_tokens);

/** First token of a sequence inside the sliding window (0 without a window or while
 *  the sequence is shorter than the window).
 *  @param first_token [host] out.
 *  @return PACKKV_ERR_INVALID_ARGUMENT for NULL or a bad seq_id.
 *  Thread-safety: read-only call. */
PACKKV_API packkv_status_t packkv_x_cache_window_start(const packkv_cache_t* cache, int32_t seq_id,
                                                       int64_t* first_token);

/* ------------------------------------------------------------------------- */
/* Export / import of one sequence                                           */
/* ------------------------------------------------------------------------- */
/* For offloading a sequence to host memory or disk and moving a prefix between processes
 * (disaggregated prefill, prefix reuse). The bytes, version 2 (all little-endian; the
 * normative table is src/format/seq_export.h of the source repository):
 *   header, 128 bytes: magic "PACKKVSQ"; u32 version; u32 header size (128); u64 total
 *     bytes; u64 checksum (64-bit FNV-1a of bytes [32, total)); u32 block format id,
 *     n_kv_heads, head_dim, block_tokens, bits_k, bits_v, scale_granularity, has_perm,
 *     kv_dtype, zs_format; u64 n_tokens, window_start, first_block (blocks freed by a sliding
 *     window), n_blocks, residual_len; u32 sink_tokens, k_transform; u64 sink_len;
 *   payload: per stored block {u32 blob bytes B, u32 0, the B bytes of the block as the
 *     cache holds it, zero padding to a multiple of 8}; then the residual window's K and V,
 *     residual_len x n_kv_heads x head_dim values of kv_dtype each; then the sink tokens'
 *     K and V, sink_len x n_kv_heads x head_dim values of kv_dtype each; then, with K
 *     centring once block 0 exists, the K mean: n_kv_heads x head_dim float32.
 * Version 1 (the format before sink tokens and K centring) is still read: it is
 * version 2 with the last 16 header bytes zero (no sink tokens, no K centring).
 * Importing restores the sequence exactly: the same blocks (byte for byte), residual
 * window, sink tokens, K mean, length and window start; decompress and attention give
 * identical results. */

/** Version of the export byte format this library writes and reads. */
#define PACKKV_X_SEQ_EXPORT_VERSION 2

/** Bytes packkv_x_cache_export writes for a sequence now.
 *  @param bytes [host] out (>= 128).
 *  @return PACKKV_ERR_INVALID_ARGUMENT for NULL or a bad seq_id. CUDA caches: waits for
 *          the cache's work (reads the blob headers).
 *  Thread-safety: read-only call. */
PACKKV_API packkv_status_t packkv_x_cache_export_size(const packkv_cache_t* cache, int32_t seq_id, size_t* bytes);

/** Writes one sequence into a caller buffer in the format above.
 *  @param h_buf    [host] capacity bytes, any alignment.
 *  @param written  [host] out: bytes written (packkv_x_cache_export_size).
 *  @return PACKKV_ERR_INVALID_ARGUMENT for NULL pointers or a bad seq_id;
 *          PACKKV_ERR_CAPACITY_EXCEEDED if capacity is too small (nothing written). The
 *          cache is not changed. CUDA caches: waits for the cache's work; the bytes are
 *          those a CPU cache fed the same tokens writes.
 *  Thread-safety: read-only call. */
PACKKV_API packkv_status_t packkv_x_cache_export(const packkv_cache_t* cache, int32_t seq_id, void* h_buf,
                                                 size_t capacity, size_t* written);

/** Restores an exported sequence into the empty sequence seq_id of this cache, after
 *  validating everything: the magic, the version, the sizes (truncation, trailing bytes),
 *  the checksum, the params that matter for reading (format id, n_kv_heads, head_dim,
 *  block_tokens, bits_k, bits_v, scale_granularity, whether blocks store a permutation,
 *  kv_dtype, zs_format, sink_tokens, k_transform; rel_scale and residual_tokens may differ
 *  and govern later flushes), the counts, every block (the blob validator: every length,
 *  offset and code in range, every value finite) and every residual value, sink value and
 *  K mean value (finite). A cache with a sliding window applies
 *  it to the imported sequence at once.
 *  @param h_buf [host] size bytes, any alignment.
 *  @return PACKKV_ERR_INVALID_ARGUMENT for NULL, a bad seq_id, or a buffer that is not a
 *          valid export for this cache (message: which check failed -- bad magic,
 *          truncated, size mismatch, checksum mismatch, params mismatch naming the field,
 *          corrupt header / block / residual window); PACKKV_ERR_VERSION_MISMATCH for
 *          a format version other than 1 and 2; PACKKV_ERR_INVALID_STATE if seq_id holds tokens;
 *          PACKKV_ERR_CAPACITY_EXCEEDED for more tokens than max_tokens_per_seq;
 *          PACKKV_X_ERR_BUDGET_EXCEEDED when the pool cannot take its blocks;
 *          PACKKV_ERR_OUT_OF_HOST_MEMORY. CUDA caches (which have no sliding window):
 *          PACKKV_ERR_NOT_SUPPORTED for an export with tokens out of a window, and
 *          PACKKV_ERR_INVALID_ARGUMENT for a residual window longer than this cache's
 *          residual_tokens + block_tokens - 1; the call waits for the cache's work. On any
 *          failure nothing is imported (cache and pool unchanged).
 *  Thread-safety: mutating call. */
PACKKV_API packkv_status_t packkv_x_cache_import(packkv_cache_t* cache, int32_t seq_id, const void* h_buf,
                                                 size_t size);

/** Attention of q_len queries per sequence over every cached token of that sequence
 *  (compressed blocks and residual window): chunked prefill over a cached prefix, the
 *  verification step of speculative decoding, multi-turn prompts. For query t of query
 *  head j of sequence i:
 *      out[i][j][t] = softmax(scale * q[i][j][t] . K^T) V,  K, V of kv head j / (n_q_heads / n_kv_heads)
 *  with no mask: every query sees every cached token and none of the q_len new tokens
 *  (which are not in the cache yet); the caller merges the causal part of its own chunk
 *  with lse (flash-attention merge: m = max(lse_a, lse_b), out = (e^(lse_a - m) out_a +
 *  e^(lse_b - m) out_b) / (e^(lse_a - m) + e^(lse_b - m))).
 *  Same as packkv_attn_decode with n_q_heads * q_len query heads whose GQA group is
 *  q_len times larger: the layouts below are chosen so (they are those of a [batch,
 *  heads, tokens, head_dim] tensor, e.g. torch's attention layout), and q_len = 1 is
 *  packkv_attn_decode itself, bit for bit.
 *  @param cache     a cache (CPU or CUDA backend).
 *  @param n_seqs    number of sequences, 1 .. max_seqs; h_seq_ids host int32[n_seqs], distinct.
 *  @param n_q_heads query heads per token, a positive multiple of n_kv_heads.
 *  @param q_len     queries per sequence and head, >= 1; n_q_heads * q_len <= 2^20 (the
 *                   query-head limit of the attention calls, packkv.h).
 *  @param q         [n_seqs][n_q_heads][q_len][head_dim] of q_dtype (F16, BF16, F32), in
 *                   the cache's memory (host or device of `device`).
 *  @param scale     softmax scale, finite and > 0.
 *  @param out       float32 [n_seqs][n_q_heads][q_len][head_dim], cache's memory.
 *  @param lse       optional float32 [n_seqs][n_q_heads][q_len] (natural log of the
 *                   softmax denominators; -inf and out = 0 for an empty sequence); NULL to skip.
 *  @param workspace bytes from packkv_attn_workspace_size(cache, n_seqs, n_q_heads * q_len).
 *  @return PACKKV_OK; PACKKV_ERR_INVALID_ARGUMENT (NULL or bad argument, message says
 *          which), PACKKV_ERR_WORKSPACE_TOO_SMALL, PACKKV_ERR_NOT_SUPPORTED (grid limits of
 *          the CUDA backend), PACKKV_ERR_CUDA. Reads the cache only; may run concurrently
 *          with other reading calls on the same cache, not with appends or removals.
 *  Asynchronous on the CUDA backend (stream-ordered), synchronous on the CPU backend. */
PACKKV_API packkv_status_t packkv_attn_decode_multi(const packkv_cache_t* cache, int32_t n_seqs,
                                                    const int32_t* h_seq_ids, int32_t n_q_heads,
                                                    int32_t q_len, const void* q, packkv_dtype_t q_dtype,
                                                    float scale, float* out, float* lse, void* workspace,
                                                    size_t workspace_bytes, packkv_stream_t stream);

/* ------------------------------------------------------------------------- */
/* Parallel work on the caller's threads (CPU caches)                         */
/* ------------------------------------------------------------------------- */

/** One task of the library: call it once per task index, from any thread. */
typedef void (*packkv_x_task_fn)(void* task_ctx, int32_t task_index);

/** The caller's task runner (an engine's own thread pool, like ggml's threadpool): must
 *  call task(task_ctx, i) exactly once for every i in [0, n_tasks), on any threads, in any
 *  order, concurrently or not, and return only after every call has returned. The tasks
 *  share the call's work (each pulls work items from a common counter until none is left),
 *  so a runner with fewer threads than n_tasks, or one that runs them one after another,
 *  is correct, only slower. A task never throws and never calls back into the runner.
 *  It is called on the thread that made the packkv call, while that call is in
 *  progress; several packkv calls on different threads (read-only calls on one cache, or
 *  calls on several caches set to the same runner) may call it concurrently. */
typedef void (*packkv_x_parallel_fn)(void* user, int32_t n_tasks, packkv_x_task_fn task, void* task_ctx);

/** Makes a CPU cache run its parallel work (see packkv_cache_params_t.n_threads) through
 *  the caller's runner fn with at most n_tasks tasks per call, instead of the library's
 *  worker threads; fn = NULL goes back to the library's workers with params.n_threads.
 *  Results are the same bits either way (they do not depend on how the work is split
 *  over threads). With a runner set, the cache also stops encoding blocks ahead on the
 *  library's background thread (packkv_cache_params_t.n_threads: every block is then
 *  encoded by the append that flushes it, on fn's tasks); fn = NULL turns it back on
 *  where n_threads allows. Blocks being encoded ahead are waited for (or dropped) first.
 *  @param fn      the runner, or NULL.
 *  @param user    passed to fn as is (the library never dereferences it).
 *  @param n_tasks most tasks one call asks fn to run, in [1, 1024] (usually the runner's
 *                 thread count); ignored when fn is NULL.
 *  @return PACKKV_ERR_INVALID_ARGUMENT for a NULL cache or n_tasks out of range with a
 *          non-NULL fn; PACKKV_ERR_NOT_SUPPORTED on a CUDA cache. On failure nothing changes.
 *  Thread-safety: mutating call (must not overlap any other call on the cache). */
PACKKV_API packkv_status_t packkv_x_cache_set_parallel(packkv_cache_t* cache, packkv_x_parallel_fn fn, void* user,
                                                       int32_t n_tasks);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* PACKKV_PACKKV_EXPERIMENTAL_H */
