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
 *   - The language bindings (Python, Rust, Go) wrap packkv.h only.
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
#define PACKKV_EXPERIMENTAL_VERSION 2

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
 *  @param q_len     queries per sequence and head, >= 1; n_q_heads * q_len <= INT32_MAX.
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

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* PACKKV_PACKKV_EXPERIMENTAL_H */
