/*
 * libpackkv: a compressed KV cache for LLM decode attention (the PackKV method,
 * arXiv 2512.24449), behind a stable C99 ABI.
 *
 * One cache handle holds the K and V of ONE attention layer for up to
 * `max_seqs` sequences, `n_kv_heads` KV heads of `head_dim` channels each.
 * Tokens are appended post-RoPE. The most recent tokens of each sequence stay
 * uncompressed in a residual window; older tokens are compressed in blocks of
 * `block_tokens` tokens: per-token error-bounded quantization (relative scale r,
 * zero point z, scale s), optional token repacking inside the block, and
 * 16-token bit-packing (PACKKV.md sections 2-5). Attention is computed directly
 * on the packed integers with z and s folded in (PACKKV.md section 6.3).
 *
 * References: "PACKKV.md section N" and test vectors "Tn" point to docs/PACKKV.md of the
 * source repository (the method as its authors' code implements it, with golden test
 * vectors); the compressed layout is defined in src/format/ there (shape.h: the block,
 * round_tile.h: the tiles).
 *
 * Memory location of array arguments
 *   Arguments named h_* are always host memory. Arguments without a prefix that
 *   hold K, V, queries, scores, probabilities or outputs live where the cache
 *   lives: host memory for a CPU cache (params.device = -1), device memory of the
 *   cache's GPU for a CUDA cache. All arrays are dense, row-major, and need only
 *   the natural alignment of their element type. The library never retains a
 *   caller's pointer after a call returns.
 *
 * Errors
 *   Every fallible function returns a packkv_status_t. On failure the cache is
 *   left exactly as it was before the call, and packkv_last_error_message()
 *   returns a detailed, thread-local message naming the function and argument.
 *   The library never prints.
 *
 * Thread safety (the libcurl model)
 *   Functions without a cache handle are thread-safe. A cache has no internal
 *   lock: calls that take a non-const `packkv_cache_t*` (append, reset,
 *   remove_seq, destroy) must not overlap any other call on the same cache.
 *   Calls that take a `const packkv_cache_t*` (attention, stats, decompress,
 *   queries) may run concurrently with each other (on a CUDA cache each
 *   concurrent call needs its own workspace). Different caches are independent.
 *   A cache may move between threads. A CPU cache may encode blocks on a library
 *   background thread between calls (packkv_cache_params_t.n_threads, "encode
 *   ahead"); it synchronizes with the cache's calls itself and changes none of
 *   these rules.
 */
#ifndef PACKKV_PACKKV_H
#define PACKKV_PACKKV_H

#include <stddef.h>
#include <stdint.h>

#if defined(PACKKV_STATIC)
#define PACKKV_API
#elif defined(_WIN32)
#if defined(PACKKV_BUILDING)
#define PACKKV_API __declspec(dllexport)
#else
#define PACKKV_API __declspec(dllimport)
#endif
#elif defined(__GNUC__) || defined(__clang__)
#define PACKKV_API __attribute__((visibility("default")))
#else
#define PACKKV_API
#endif

#if defined(__GNUC__) || defined(__clang__)
#define PACKKV_DEPRECATED(msg) __attribute__((deprecated(msg)))
#else
#define PACKKV_DEPRECATED(msg)
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------- */
/* Version                                                                   */
/* ------------------------------------------------------------------------- */

#define PACKKV_VERSION_MAJOR 0
#define PACKKV_VERSION_MINOR 1
#define PACKKV_VERSION_PATCH 0
#define PACKKV_VERSION_NUMBER \
  (PACKKV_VERSION_MAJOR * 10000 + PACKKV_VERSION_MINOR * 100 + PACKKV_VERSION_PATCH)

/** Runtime version as MAJOR*10000 + MINOR*100 + PATCH. A loader that dlopen()s the
 *  library must check that packkv_version_number()/10000 equals the major it was
 *  built for. Thread-safe, never fails. */
PACKKV_API uint32_t packkv_version_number(void);

/** Runtime version as "MAJOR.MINOR.PATCH" (static string). Thread-safe. */
PACKKV_API const char* packkv_version_string(void);

/** Static description of the build: version, C++ compiler, and whether CUDA is
 *  compiled in -- if so, the version of the CUDA compiler that built the kernels and
 *  their SM architectures (the CUDA runtime is linked statically, from that same
 *  toolkit). Thread-safe. */
PACKKV_API const char* packkv_build_info(void);

/** 1 if this build contains the CUDA backend and at least one CUDA device is
 *  visible, else 0. Thread-safe. */
PACKKV_API int32_t packkv_has_cuda(void);

/* ------------------------------------------------------------------------- */
/* Status codes (values pinned forever; new codes are only appended)         */
/* ------------------------------------------------------------------------- */

typedef int32_t packkv_status_t;
enum {
  PACKKV_OK = 0,
  PACKKV_ERR_INVALID_ARGUMENT = 1,
  PACKKV_ERR_INVALID_STATE = 2,
  PACKKV_ERR_CAPACITY_EXCEEDED = 3,
  PACKKV_ERR_WORKSPACE_TOO_SMALL = 4,
  PACKKV_ERR_OUT_OF_HOST_MEMORY = 5,
  PACKKV_ERR_OUT_OF_DEVICE_MEMORY = 6,
  PACKKV_ERR_CUDA = 7,
  PACKKV_ERR_NOT_SUPPORTED = 8,
  PACKKV_ERR_VERSION_MISMATCH = 9,
  PACKKV_ERR_INTERNAL = 10
};

/** Short static name of a status ("PACKKV_ERR_INVALID_ARGUMENT"); "unknown status"
 *  for values this version does not know. Never NULL. Thread-safe. */
PACKKV_API const char* packkv_status_string(packkv_status_t status);

/** Detailed message of the last failed call on the calling thread (function name,
 *  offending argument, CUDA error name where relevant). Every function that returns a
 *  packkv_status_t clears it on entry, so it is empty after such a call succeeds; the
 *  functions that return no status (version, status strings, this one) leave it alone.
 *  Valid until the next packkv_* call on the same thread. Never NULL. Thread-safe (the
 *  message is thread-local). */
PACKKV_API const char* packkv_last_error_message(void);

/** Copies the last error message of the calling thread into buf (NUL-terminated,
 *  truncated to cap-1 characters) and returns the full message length (excluding
 *  the NUL). buf may be NULL when cap is 0. Does not change the last error. */
PACKKV_API size_t packkv_copy_last_error(char* buf, size_t cap);

/* ------------------------------------------------------------------------- */
/* Enumerations (stored as int32_t)                                          */
/* ------------------------------------------------------------------------- */

typedef int32_t packkv_dtype_t;
enum { PACKKV_DTYPE_F16 = 0, PACKKV_DTYPE_BF16 = 1, PACKKV_DTYPE_F32 = 2 };

/** Token repacking inside a block (PACKKV.md section 4). The permutation is stored
 *  with the block (one byte per token) so that original order can be recovered. */
typedef int32_t packkv_repack_t;
enum {
  PACKKV_REPACK_NONE = 0,   /* tokens keep their order */
  PACKKV_REPACK_MEDIAN = 1, /* sort tokens by the median of their V integers, descending (section 4.2) */
  PACKKV_REPACK_GREEDY = 2  /* greedy pack formation minimizing encode length (section 4.3): about
                               2% fewer bytes than MEDIAN (SmolLM2, bench/RESULTS.md), but its
                               encoder is O(block_tokens^2 x values per token) per block: 0.026 GB/s
                               of fp16 input on one CPU core, 50-70x slower than MEDIAN (1.3-1.4
                               GB/s), so every flush of a decode step pays it. For offline packing
                               (exports, prefix stores), not for serving. CPU backend only. */
};

/** Granularity of the zero point and scale of the per-token quantization. */
typedef int32_t packkv_scale_granularity_t;
enum {
  PACKKV_SCALE_PER_TOKEN = 0,      /* one (z, s) per token across all KV heads (the paper's TokenQuant) */
  PACKKV_SCALE_PER_TOKEN_HEAD = 1  /* one (z, s) per token and KV head (PACKKV.md section 8.3) */
};

/** Storage of the per-token zero points z and scales s of the compressed blocks
 *  (PACKKV.md section 5.1). Either way every compressed value obeys
 *  |x - x^| <= r * range / 2; the formats differ only in bytes. */
typedef int32_t packkv_zs_format_t;
enum {
  PACKKV_ZS_COMPACT = 0, /* int16 z and a 16-bit scale (the fp32 scale rounded down to 8
                            fraction bits): 4 bytes per token and scale group. A block with a
                            group that cannot be stored so without breaking the error bound
                            (far from zero against its range, or an fp32-subnormal scale)
                            falls back to the wide fields for that block alone, K and V
                            together. Such a wide fallback block keeps its (zeroed) compact
                            fields and adds the wide ones: 12 bytes per token and scale
                            group, for K and for V, more than PACKKV_ZS_WIDE's 8; data that
                            falls back in most blocks (e.g. values near 1000 varying by
                            about 1 with r = 1/254) is smaller with PACKKV_ZS_WIDE */
  PACKKV_ZS_WIDE = 1     /* int32 z and fp32 s: 8 bytes per token and scale group (the
                            format of version 1) */
};

/** A transform of K applied inside the library before quantization and undone by every
 *  read, so that callers pass plain K and q and get plain scores, outputs, lse and
 *  decompressed K back. */
typedef int32_t packkv_k_transform_t;
enum {
  PACKKV_K_TRANSFORM_NONE = 0,  /* K quantized as given */
  PACKKV_K_TRANSFORM_CENTER = 1 /* per (sequence, KV head, channel) mean mu of K over the
                                   sequence's first compressed block (fp32, the float64 mean
                                   rounded once), subtracted before quantization (k - mu in
                                   fp32) and added back: scores get q . mu, decompress k^ + mu.
                                   The error bound then holds for k - mu with the range of the
                                   centred group. Sink and residual tokens are stored plain.
                                   Needs kv_dtype F16 (NOT_SUPPORTED otherwise). CPU and CUDA
                                   caches (byte-identical blocks) */
};

/** CUDA stream; the same type as cudaStream_t. NULL is the legacy default stream.
 *  Ignored by a CPU cache. */
typedef struct CUstream_st* packkv_stream_t;

/* ------------------------------------------------------------------------- */
/* Cache parameters                                                          */
/* ------------------------------------------------------------------------- */

/** Creation-time configuration. Always initialise with packkv_cache_params_init();
 *  new fields are only appended, and the library reads only the first struct_size
 *  bytes (fields beyond take their defaults). Fixed-width fields only.
 *
 *  The defaults (r_K 0.035, r_V 0.07: 5- and 4-bit codes; 4 sink tokens; residual window
 *  64; compact zero points and scales; no K transform; median repacking) were chosen
 *  end to end on SmolLM2-135M (bench/RESULTS.md, "End-to-end KL divergence (issue 15)":
 *  16,384 scored tokens of prose and code, mean KL divergence of the next-token
 *  distribution from an fp16 cache's): mean KL 0.0077 nats/token, +0.48% perplexity, at
 *  0.537 bytes per K/V element all-in (3.7x smaller than fp16, 1.24x smaller than KIVI-4,
 *  the smallest KIVI setting within KL 0.01). residual_tokens 64 rather than 32: 32 is
 *  4.4% smaller (0.514 B/element, 3.9x fp16, 1.30x KIVI-4) but sat on the bound (KL
 *  0.0092 overall, 0.0101 on one of the four 4096-token windows); 64 keeps a 23% margin
 *  under KL 0.01 on both texts. Set 32 when memory matters more than that margin. On
 *  Gemma 3 270M no setting of the grid met KL 0.01 (RESULTS.md): the defaults are a
 *  starting point, measure on your model. */
typedef struct packkv_cache_params {
  uint32_t struct_size;        /* sizeof(packkv_cache_params_t) as the caller compiled it */
  int32_t device;              /* -1 (default): CPU backend; >= 0: CUDA device ordinal */
  int32_t n_kv_heads;          /* KV heads per token, in [1, 4096] (default 8) */
  int32_t head_dim;            /* channels per head: a multiple of 16 in [32, 256] (default 128) */
  int32_t max_seqs;            /* sequence ids are 0 .. max_seqs-1, in [1, 2^20] (default 1).
                                  Every slot costs memory from creation, used or not: a CPU
                                  cache 192 bytes of host memory per slot (its per-sequence
                                  record, x86-64 build; 2^20 slots: 192 MiB, paid again by
                                  each layer's cache); a CUDA cache
                                  8 * ceil(max_tokens_per_seq / block_tokens) + 72 bytes of
                                  device memory per slot (block table and byte counters; plus
                                  n_kv_heads * head_dim * 4 with K centring) and about 100
                                  bytes of host memory. Buffers of sink tokens and residual
                                  windows are allocated at a sequence's first append */
  packkv_dtype_t kv_dtype;     /* dtype of the uncompressed residual window (default F16) */
  int64_t max_tokens_per_seq;  /* capacity of one sequence in tokens, in [1, 2^40] (default 131072) */
  float rel_scale_k;           /* relative scale r of K, in [1/254, 1] (default 0.035): every
                                  compressed value obeys |k - k^| <= r * range / 2 (up to fp32
                                  rounding), range = max - min of its scale group, k the value
                                  after conversion to kv_dtype. Smaller r: more accurate, larger */
  float rel_scale_v;           /* relative scale r of V, in [1/254, 1] (default 0.07) */
  int32_t bits_k;              /* K code width 1..8; 0 (default) derives it from rel_scale_k. A
                                  smaller width clamps codes and voids the error bound; a larger
                                  one changes nothing but the minimum field width (accuracy is
                                  set by rel_scale_k alone) */
  int32_t bits_v;              /* V code width 1..8; 0 (default) derives it from rel_scale_v */
  packkv_repack_t repack;      /* default PACKKV_REPACK_MEDIAN */
  packkv_scale_granularity_t scale_granularity; /* default PACKKV_SCALE_PER_TOKEN */
  int32_t block_tokens;        /* tokens compressed together: a multiple of 16 in [16, 256] (default 64) */
  int32_t residual_tokens;     /* tokens kept uncompressed after a flush, in [0, 2^20] (default 64) */
  /* ---- version 2 (struct_size >= PACKKV_CACHE_PARAMS_SIZE_V2) ---- */
  int32_t sink_tokens;         /* the first sink_tokens tokens of every sequence are never
                                  compressed: they stay in kv_dtype, exact, and take part in
                                  every attention call at their positions 0..sink_tokens-1
                                  (attention sinks, StreamingLLM). Blocks start after them.
                                  Counted in the stats as uncompressed tokens: in
                                  n_residual_tokens and residual_bytes. In [0, 2^16]
                                  (default 4). CPU and CUDA caches */
  packkv_zs_format_t zs_format; /* storage of the per-token zero points and scales:
                                  PACKKV_ZS_COMPACT (default) or PACKKV_ZS_WIDE */
  packkv_k_transform_t k_transform; /* PACKKV_K_TRANSFORM_NONE (default) or _CENTER */
  /* ---- version 3 (struct_size >= PACKKV_CACHE_PARAMS_SIZE_V3) ---- */
  int32_t n_threads;           /* CPU cache: threads one call may use, the calling thread
                                  included, in [0, 1024]. 0 (default): the CPUs this process may
                                  run on (sched_getaffinity), at most 64; 1: the calling thread
                                  only. Attention (scores, apply, decode, decode_multi) splits
                                  into (sequence, KV head, span of tokens) items and append
                                  encodes the flushed blocks of a call in parallel. The extra
                                  threads come from one set of library worker threads shared
                                  by every cache of the process (started on first use, as
                                  many as the largest n_threads - 1 asked for, asleep between
                                  calls), so many caches never oversubscribe the machine; a
                                  call made from inside a library work item runs serially.
                                  A call never uses more threads than the CPUs this process
                                  may run on (sched_getaffinity, read once per process), so
                                  an n_threads above that count works as that count and
                                  never starts more than (CPUs - 1) library worker
                                  threads (plus the one encode-ahead thread below); it
                                  changes only speed, never results (see below).
                                  Results do not depend on n_threads: the spans depend on the
                                  sequence length only, and partial results are merged in a
                                  fixed order, so every n_threads gives the same bits. Short
                                  calls stay on the calling thread. To run on the caller's
                                  own threads instead: packkv_x_cache_set_parallel
                                  (packkv_experimental.h). Ignored by a CUDA cache.
                                  Encode ahead (single-token decoding without a stall
                                  every block_tokens steps): when n_threads != 1 and the
                                  process may run on more than one CPU (and no caller's
                                  runner is set), a block that is complete in a
                                  sequence's residual window is encoded by ONE
                                  library background thread per process (started by the
                                  first such block, SCHED_BATCH on Linux, polling its
                                  queue every 2 ms for 2 s after a block, then asleep)
                                  during the residual_tokens appends before its flush;
                                  the append that flushes it then only copies the blob
                                  into its page (and encodes it itself if the thread has
                                  not started it). Pages are taken by that append as
                                  without it, so a budget failure happens at the same
                                  append, and the bytes of every block are the same.
                                  The background work reads only the residual window,
                                  never races with the cache's calls (read-only calls may
                                  still overlap each other), and every call that changes
                                  a sequence first waits for (or drops) its pending
                                  blocks. n_threads == 1 turns it off (no library
                                  thread at all).
                                  Instruction set (CPU cache): the kernels use AVX-512, else
                                  AVX2 + FMA, else portable code, chosen at the first call
                                  from what the CPU supports; the environment variable
                                  PACKKV_CPU_ISA=portable|avx2|avx512 (read once per process)
                                  caps the choice; another value is ignored with one warning
                                  on stderr. Attention results may differ in the last bits
                                  between instruction sets (compressed bytes never do). */
} packkv_cache_params_t;

/** Size of version 1 of packkv_cache_params_t, the smallest struct_size accepted
 *  (fields up to residual_tokens; a caller with this size gets the defaults of the
 *  later fields). */
#define PACKKV_CACHE_PARAMS_SIZE_V1 64
/** Size of version 2 (adds sink_tokens, zs_format and k_transform). */
#define PACKKV_CACHE_PARAMS_SIZE_V2 80
/** Size of version 3 (adds n_threads). Still 80 bytes: n_threads occupies what was the tail
 *  padding of version 2, which packkv_cache_params_init always zeroed, so a version-2
 *  caller that initialised its struct gets the default (0) of n_threads. */
#define PACKKV_CACHE_PARAMS_SIZE_V3 80
/** Largest struct_size accepted in a packkv_cache_params_t (by params_init, cache_create and
 *  cache_get_params): a newer caller's larger struct is accepted up to this size (bytes this
 *  library does not know must be zero for cache_create, and are zeroed by the others); a
 *  larger struct_size is PACKKV_ERR_VERSION_MISMATCH and no byte of the struct past its
 *  first field is read or written. Fixed for major version 0. */
#define PACKKV_CACHE_PARAMS_SIZE_MAX 1024

/** Fills *params with defaults and sets params->struct_size = struct_size.
 *  @param params      [host] struct to fill; only its first struct_size bytes are written.
 *  @param struct_size sizeof(packkv_cache_params_t) as the caller compiled it.
 *  @return PACKKV_ERR_INVALID_ARGUMENT if params is NULL; PACKKV_ERR_VERSION_MISMATCH
 *          if struct_size < PACKKV_CACHE_PARAMS_SIZE_V1 or > PACKKV_CACHE_PARAMS_SIZE_MAX
 *          (nothing written). Bytes beyond the fields this
 *          library knows are set to zero. Thread-safe. */
PACKKV_API packkv_status_t packkv_cache_params_init(packkv_cache_params_t* params,
                                                    size_t struct_size);

/** The code width (bits) that a relative scale r implies for the default compact zero
 *  points and scales: the smallest b with 2^b - 1 >= floor((1/r) / (1 - 2^-8) * (1 + 1e-6)) + 1,
 *  i.e. room for the largest code the quantizer can produce, q <= range/s + 1, with s the
 *  stored scale (rounded down by less than 2^-8 of itself; PACKKV.md sections 3.1, 8.4;
 *  r = 0.1 -> 4, r = 0.2 -> 3, r = 1/254 -> 8). A PACKKV_ZS_WIDE cache derives its widths
 *  without the 1 / (1 - 2^-8) factor (version 1), one bit less for 1/r just below 2^b - 1.
 *  @param rel_scale r, finite, in (0, 1].
 *  @param bits      [host] out: 1..8.
 *  @return PACKKV_ERR_INVALID_ARGUMENT if bits is NULL, r is out of range, or r
 *          needs more than 8 bits. Thread-safe. */
PACKKV_API packkv_status_t packkv_bits_for_rel_scale(float rel_scale, int32_t* bits);

/* ------------------------------------------------------------------------- */
/* Cache lifecycle                                                           */
/* ------------------------------------------------------------------------- */

typedef struct packkv_cache packkv_cache_t;

/** Creates a cache for one attention layer.
 *  @param params [host] initialised by packkv_cache_params_init, then edited.
 *  @param out    [host] receives the handle; set to NULL on failure.
 *  @return PACKKV_ERR_INVALID_ARGUMENT for NULL pointers or an out-of-range field
 *          (message names the field); PACKKV_ERR_VERSION_MISMATCH if struct_size is
 *          smaller than PACKKV_CACHE_PARAMS_SIZE_V1 or larger than
 *          PACKKV_CACHE_PARAMS_SIZE_MAX; PACKKV_ERR_NOT_SUPPORTED if params->device >= 0 and this build
 *          or machine has no CUDA backend, or if bytes beyond the known fields are
 *          non-zero (a newer caller asking for a feature this library lacks), or
 *          for repack = PACKKV_REPACK_GREEDY on a CUDA cache (greedy repacking runs
 *          on the CPU backend only); PACKKV_ERR_OUT_OF_HOST_MEMORY /
 *          PACKKV_ERR_OUT_OF_DEVICE_MEMORY; PACKKV_ERR_CUDA.
 *  Thread-safe. Memory grows with the compressed size; besides the per-slot cost of
 *  max_seqs (see there; on CUDA it includes a block table sized by max_tokens_per_seq),
 *  nothing is reserved for max_tokens_per_seq up front. A CPU cache keeps its compressed blocks in fixed-size
 *  pages of a private pool (never copied as a sequence grows; held <= used + the unused
 *  end of each page + one partly filled page per sequence), its residual windows in
 *  per-sequence host buffers. A CUDA cache is bound to params->device: every call
 *  sets and restores the current device itself. */
PACKKV_API packkv_status_t packkv_cache_create(const packkv_cache_params_t* params,
                                               packkv_cache_t** out);

/** Destroys a cache and frees all its memory. Accepts NULL. Blocks until work the
 *  library enqueued for this cache has completed. Must not overlap any other call
 *  on the same cache; safe from any thread (e.g. a garbage-collector finalizer). */
PACKKV_API void packkv_cache_destroy(packkv_cache_t* cache);

/** Copies the effective parameters (with derived bits_k / bits_v filled in) into
 *  *params, whose struct_size the caller must have set (as by params_init).
 *  @return PACKKV_ERR_INVALID_ARGUMENT for NULL; PACKKV_ERR_VERSION_MISMATCH if
 *          params->struct_size is outside [PACKKV_CACHE_PARAMS_SIZE_V1,
 *          PACKKV_CACHE_PARAMS_SIZE_MAX]. */
PACKKV_API packkv_status_t packkv_cache_get_params(const packkv_cache_t* cache,
                                                   packkv_cache_params_t* params);

/** Device ordinal of the cache (-1 for a CPU cache).
 *  @param device [host] out.
 *  @return PACKKV_ERR_INVALID_ARGUMENT for NULL arguments.
 *  Thread-safety: read-only call (may overlap other read-only calls). */
PACKKV_API packkv_status_t packkv_cache_device(const packkv_cache_t* cache, int32_t* device);

/* ------------------------------------------------------------------------- */
/* Append                                                                    */
/* ------------------------------------------------------------------------- */

/** Appends new tokens to several sequences at once (a prefill, or one decode step
 *  of a batch) and compresses every block that the flush policy releases: while a
 *  sequence's residual window holds >= residual_tokens + block_tokens tokens, its
 *  oldest block_tokens tokens are quantized, repacked and bit-packed
 *  (PACKKV.md sections 2.3, 3, 4, 5; test vectors T6, T7).
 *
 *  @param cache      the cache.
 *  @param n_seqs     number of sequences in this call, in [1, max_seqs] (checked
 *                    before h_seq_ids is read).
 *  @param h_seq_ids  [host] int32[n_seqs]: distinct ids in [0, max_seqs).
 *  @param h_n_tokens [host] int32[n_seqs]: new tokens per sequence, >= 0.
 *  @param k_new      K of the new tokens, [sum(h_n_tokens)][n_kv_heads][head_dim] in
 *                    `dtype`, sequences in the order of h_seq_ids, tokens in order.
 *                    Host memory for a CPU cache, device memory for a CUDA cache.
 *  @param v_new      V of the new tokens, same shape, dtype and memory as k_new.
 *                    k_new and v_new may be NULL when every count is 0 (nothing is read).
 *  @param dtype      PACKKV_DTYPE_F16, _BF16 or _F32; values are converted to
 *                    params.kv_dtype (round to nearest even) on entry.
 *  @param stream     CUDA stream (ignored by a CPU cache).
 *  @return PACKKV_ERR_INVALID_ARGUMENT for NULL pointers, n_seqs outside
 *          [1, max_seqs], a bad or repeated seq id, a negative count, an unknown dtype, or a non-finite
 *          value (or one that overflows kv_dtype) in K or V (the message names the
 *          sequence and token; on a CUDA cache this check runs inside the kernels
 *          and is reported by the next call that synchronizes);
 *          PACKKV_ERR_CAPACITY_EXCEEDED if a sequence would exceed
 *          max_tokens_per_seq; PACKKV_ERR_OUT_OF_HOST_MEMORY /
 *          PACKKV_ERR_OUT_OF_DEVICE_MEMORY; for a cache made in a pool with a budget
 *          (packkv_experimental.h), PACKKV_X_ERR_BUDGET_EXCEEDED (11) when the new
 *          blocks need more pages than the budget allows. On any failure nothing is
 *          appended.
 *  CUDA cache: the call enqueues its work on `stream` and returns without waiting.
 *  It allocates device memory (stream-ordered) only at a sequence's first tokens, when
 *  the compressed pool of a sequence needs another chunk, and for a prefill longer than
 *  any before; decode-step appends do not allocate. Non-finite input found by the
 *  kernels is reported by the next packkv_cache_sync (naming sequence and token); the
 *  contents of that sequence are then unspecified: remove it (packkv_cache_remove_seq).
 *  Not thread-safe on one cache (see the header comment). */
PACKKV_API packkv_status_t packkv_cache_append(packkv_cache_t* cache, int32_t n_seqs,
                                               const int32_t* h_seq_ids,
                                               const int32_t* h_n_tokens,
                                               const void* k_new, const void* v_new,
                                               packkv_dtype_t dtype, packkv_stream_t stream);

/** Removes every token of one sequence and frees its memory; the id can be reused
 *  at once.
 *  @return PACKKV_ERR_INVALID_ARGUMENT for NULL or an id outside [0, max_seqs).
 *  Thread-safety: mutating call (must not overlap any other call on the cache). */
PACKKV_API packkv_status_t packkv_cache_remove_seq(packkv_cache_t* cache, int32_t seq_id);

/** Removes every token of every sequence and frees their memory (the configuration
 *  is kept).
 *  @return PACKKV_ERR_INVALID_ARGUMENT for NULL.
 *  Thread-safety: mutating call (must not overlap any other call on the cache). */
PACKKV_API packkv_status_t packkv_cache_reset(packkv_cache_t* cache);

/* ------------------------------------------------------------------------- */
/* Queries                                                                   */
/* ------------------------------------------------------------------------- */

/** Number of tokens currently held for one sequence (compressed + residual).
 *  @param n_tokens [host] out.
 *  @return PACKKV_ERR_INVALID_ARGUMENT for NULL or an id outside [0, max_seqs).
 *  Thread-safety: read-only call. */
PACKKV_API packkv_status_t packkv_cache_seq_length(const packkv_cache_t* cache,
                                                   int32_t seq_id, int64_t* n_tokens);

/** Memory accounting. Every byte the cache stores for the tokens is counted in
 *  exactly one of the *_bytes "used" fields; compressed_bytes_used is their sum
 *  over the compressed blocks, and the all-in size of the cache is
 *  compressed_bytes_used + residual_bytes. */
typedef struct packkv_cache_stats_s {
  uint32_t struct_size;           /* caller sets: sizeof(packkv_cache_stats_t) */
  uint32_t reserved0;             /* zero */
  int64_t n_tokens;               /* tokens held (compressed + residual) */
  int64_t n_compressed_tokens;    /* tokens in compressed blocks */
  int64_t n_residual_tokens;      /* uncompressed tokens: residual windows and sink tokens */
  int64_t n_blocks;               /* compressed blocks */
  int64_t k_tile_bytes;           /* K tiles: pack minimums, encode lengths, payload */
  int64_t v_tile_bytes;           /* V tiles */
  int64_t k_scale_bytes;          /* K zero points and scales; with K centring
                                     (PACKKV_K_TRANSFORM_CENTER) also the stored K mean,
                                     n_kv_heads * head_dim * 4 bytes per sequence once its
                                     block 0 exists (a forked sequence holds its own copy,
                                     counted for each sequence, also by seq_id -1) */
  int64_t v_scale_bytes;          /* V zero points and scales */
  int64_t index_bytes;            /* block index and per-block tile offsets */
  int64_t perm_bytes;             /* stored repacking permutations */
  int64_t compressed_bytes_used;  /* sum of the six fields above */
  int64_t compressed_bytes_reserved; /* bytes allocated for compressed data (>= used) */
  int64_t residual_bytes;         /* K and V of the uncompressed tokens (windows, sinks), in kv_dtype */
  int64_t fp16_bytes;             /* what K and V of all tokens would take in fp16 */
} packkv_cache_stats_t;

/** Size of version 1 of packkv_cache_stats_t. */
#define PACKKV_CACHE_STATS_SIZE_V1 120
/** Largest struct_size accepted in a packkv_cache_stats_t (see PACKKV_CACHE_PARAMS_SIZE_MAX). */
#define PACKKV_CACHE_STATS_SIZE_MAX 1024

/** Fills *stats for one sequence, or for all sequences when seq_id == -1. Sizes in
 *  bytes, token counts in tokens. The compressed layout is PACKKV.md section 5 as
 *  generalized in src/format/ (shape.h, round_tile.h).
 *  @param stats [host] its struct_size must be set by the caller, in
 *               [PACKKV_CACHE_STATS_SIZE_V1, PACKKV_CACHE_STATS_SIZE_MAX]; only the first
 *               struct_size bytes are written.
 *  @return PACKKV_ERR_INVALID_ARGUMENT for NULL or a bad seq_id;
 *          PACKKV_ERR_VERSION_MISMATCH if stats->struct_size is out of that range.
 *  Thread-safety: read-only call. */
PACKKV_API packkv_status_t packkv_cache_stats(const packkv_cache_t* cache, int32_t seq_id,
                                              packkv_cache_stats_t* stats);

/** Thread-safety: read-only call.
 *  Reconstructs K and V of one sequence in original token order: dequantized
 *  compressed tokens ((q + z) * s, PACKKV.md section 3.1), then the residual
 *  window converted to fp32.
 *  @param k_out, v_out  float32 [n_tokens][n_kv_heads][head_dim]; host memory for a
 *                       CPU cache, device memory for a CUDA cache. Either may be NULL
 *                       to skip it.
 *  @param capacity_tokens rows available in k_out / v_out.
 *  @return PACKKV_ERR_INVALID_ARGUMENT for a NULL cache, a bad seq_id or a negative
 *          capacity_tokens; PACKKV_ERR_CAPACITY_EXCEEDED if an output is given and the
 *          sequence holds more than capacity_tokens tokens (nothing written). */
PACKKV_API packkv_status_t packkv_cache_decompress(const packkv_cache_t* cache, int32_t seq_id,
                                                   float* k_out, float* v_out,
                                                   int64_t capacity_tokens,
                                                   packkv_stream_t stream);

/** Waits for work the library enqueued for this cache and reports errors detected
 *  asynchronously on the device (non-finite input found by the append kernels,
 *  CUDA faults). Always PACKKV_OK for a CPU cache with valid arguments.
 *  @return PACKKV_ERR_INVALID_ARGUMENT for NULL; PACKKV_ERR_INVALID_ARGUMENT naming
 *          the sequence and token of non-finite input found on the device;
 *          PACKKV_ERR_CUDA for a device fault. Thread-safety: read-only call. */
PACKKV_API packkv_status_t packkv_cache_sync(const packkv_cache_t* cache);

/* ------------------------------------------------------------------------- */
/* Attention                                                                 */
/* ------------------------------------------------------------------------- */
/* Common arguments of the attention calls:
 *   n_seqs, h_seq_ids  n_seqs in [1, max_seqs] (checked before h_seq_ids is read);
 *                      [host] int32[n_seqs] distinct ids in [0, max_seqs).
 *   n_q_heads          query heads per sequence: a positive multiple of n_kv_heads, at
 *                      most 2^20 (GQA: query head j reads KV head j / (n_q_heads / n_kv_heads)).
 *                      Checked before anything is sized by it; a CUDA cache has a lower
 *                      limit from its grid (PACKKV_ERR_NOT_SUPPORTED, see its message).
 *   q, q_dtype         queries [n_seqs][n_q_heads][head_dim] in q_dtype (F16/BF16/F32).
 *   workspace          scratch of at least packkv_attn_workspace_size() bytes, device
 *                      memory for a CUDA cache (NULL allowed when that size is 0).
 *   Thread-safety: read-only calls; concurrent calls on one cache need separate
 *   workspaces.
 *   Queries and probabilities are not checked for NaN or infinity (that would cost a
 *   pass over them); non-finite inputs give non-finite outputs (on a CPU cache, decode
 *   gives NaN out and lse for a query head with a non-finite value).
 *   Row strides (ld_scores, ld_probs) must be >= the longest requested sequence and
 *   small enough that n_seqs * n_q_heads * ld elements are addressable; when every
 *   requested sequence is empty, 0 is allowed and scores / probs may be NULL (nothing is
 *   read or written through them).
 *   Range on the CPU backend (float64 where fp32 would overflow): for every finite K, V
 *   and q, apply's and decode's out stay finite and accurate; a value that is itself
 *   beyond the fp32 range comes back as +-inf -- a raw score q . k above FLT_MAX in
 *   magnitude (packkv_attn_scores; e.g. K and q near 1e20 each) and a decode lse above
 *   FLT_MAX (tests/host/test_numeric_edges.cpp). Known gap of the CUDA backend: with K or V within a factor of about
 *   4 of FLT_MAX and |q| ~ 1, scores below FLT_MAX may come back as inf and decode may be off
 *   (apply, and queries whose scores stay well inside the fp32 range, are exact as usual;
 *   tests/gpu "known gap" case).
 *   Arithmetic and accumulation are fp32; results are fp32. Tokens are scored in
 *   original order whatever the repacking. Sequences with no tokens give empty
 *   scores, zero outputs and lse = -inf. No allocation and no host synchronization
 *   on a CUDA cache, so the calls can in principle be captured in a CUDA graph (not
 *   tested yet). */

/** Workspace bytes needed by an attention call on this cache with these sizes
 *  (0 for a CPU cache). The workspace must be 256-byte aligned (cudaMalloc memory is).
 *  @param bytes [host] out.
 *  @return PACKKV_ERR_INVALID_ARGUMENT for NULL or bad sizes. Thread-safe (read-only). */
PACKKV_API packkv_status_t packkv_attn_workspace_size(const packkv_cache_t* cache,
                                                      int32_t n_seqs, int32_t n_q_heads,
                                                      size_t* bytes);

/** Raw attention scores q . k for every cached token (no softmax scale applied):
 *  scores[i][j][t] = q[i][j] . K_seq(i)[t][kv_head(j)] (PACKKV.md section 6.1, 6.3;
 *  test vector T8). Entries t >= length of sequence i are not written.
 *  @param scores    float32 [n_seqs][n_q_heads][ld_scores].
 *  @param ld_scores row stride in elements, >= the longest requested sequence.
 *  @return PACKKV_ERR_INVALID_ARGUMENT (NULL, bad sizes, ld_scores too small,
 *          repeated ids), PACKKV_ERR_WORKSPACE_TOO_SMALL. */
PACKKV_API packkv_status_t packkv_attn_scores(const packkv_cache_t* cache, int32_t n_seqs,
                                              const int32_t* h_seq_ids, int32_t n_q_heads,
                                              const void* q, packkv_dtype_t q_dtype,
                                              float* scores, int64_t ld_scores,
                                              void* workspace, size_t workspace_bytes,
                                              packkv_stream_t stream);

/** Weighted sum of V: out[i][j][c] = sum_t probs[i][j][t] * V_seq(i)[t][kv_head(j)][c]
 *  (PACKKV.md section 6.2, 6.3; test vector T9). probs need not sum to 1.
 *  @param probs    float32 [n_seqs][n_q_heads][ld_probs], original token order; only
 *                  the first seq_length entries of each row are read.
 *  @param ld_probs row stride in elements, >= the longest requested sequence.
 *  @param out      float32 [n_seqs][n_q_heads][head_dim].
 *  @return as packkv_attn_scores. */
PACKKV_API packkv_status_t packkv_attn_apply(const packkv_cache_t* cache, int32_t n_seqs,
                                             const int32_t* h_seq_ids, int32_t n_q_heads,
                                             const float* probs, int64_t ld_probs,
                                             float* out, void* workspace,
                                             size_t workspace_bytes, packkv_stream_t stream);

/** Complete decode attention for one new query per head:
 *  out = softmax(scale * q . K^T) V over every cached token (compressed blocks and
 *  residual window), split over tokens and merged exactly (flash-decoding).
 *  @param scale    softmax scale, finite and > 0 (usually 1/sqrt(head_dim)).
 *  @param out      float32 [n_seqs][n_q_heads][head_dim].
 *  @param lse      optional float32 [n_seqs][n_q_heads]: natural log of
 *                  sum_t exp(scale * q . k_t), for merging with attention computed
 *                  elsewhere (e.g. over the current token); NULL to skip.
 *  @return as packkv_attn_scores, and PACKKV_ERR_INVALID_ARGUMENT for a bad scale. */
PACKKV_API packkv_status_t packkv_attn_decode(const packkv_cache_t* cache, int32_t n_seqs,
                                              const int32_t* h_seq_ids, int32_t n_q_heads,
                                              const void* q, packkv_dtype_t q_dtype,
                                              float scale, float* out, float* lse,
                                              void* workspace, size_t workspace_bytes,
                                              packkv_stream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* PACKKV_PACKKV_H */
