// Interface between the CUDA cache (host code, cuda_cache.cu) and the kernels
// (encode.cu, attention.cu, decompress.cu): plain-old-data descriptors passed BY VALUE
// as kernel parameters (so no host->device copy and no pinned staging is needed on the
// hot path), and the host functions that enqueue the kernels on a stream. Every launch
// function is asynchronous, allocates nothing, and throws Error(PACKKV_ERR_CUDA) if the
// launch itself fails. Not thread-safe per cache (the cache serializes its calls).
#ifndef PACKKV_CUDA_KERNELS_H
#define PACKKV_CUDA_KERNELS_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

namespace packkv {
namespace cu {

// Shape and coding parameters of a cache, as the kernels need them.
struct KernelConfig {
  int n_kv_heads;   // H
  int head_dim;     // D, multiple of 16 in [32, 256]
  int block_tokens; // N, multiple of 16 in [16, 256]
  int ring_tokens;  // C = residual_tokens + block_tokens: residual ring capacity
  int groups;       // scale groups per token: 1 or H
  int has_perm;     // repacking on (a perm is stored)
  int median;       // repack == MEDIAN
  int bits_k, bits_v;
  float rel_k, rel_v;
  int kv_dtype;     // dtype of the residual ring
  int max_blocks;   // block-table row length per sequence
  size_t max_tile;  // fmt::max_tile_bytes(N, D, max(bits)) rounded up to 16
  int num_sms;      // multiprocessors of the device (split heuristics)
  int smem_optin;   // largest dynamic shared memory per CTA (bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin)
  int cc;           // compute capability, major * 10 + minor (attention family dispatch)
};

// ---- append / flush (encode.cu) ----

// Descriptor arrays are sized so that every kernel's parameters stay under 4 KB: larger
// parameter blocks made each launch cost ~25 us of host time on the H200 (measured).
constexpr int kMaxFlushSeqs = 56;

// One sequence's part of a flush batch: blocks [0, n_flush) of this descriptor are the
// window tokens [win_base + b*N, win_base + (b+1)*N) of the sequence.
struct FlushSeq {
  uint8_t* chunk;       // pool chunk the blobs go to (bytes used: CacheDevicePtrs::used[seq])
  int64_t in_row;       // row of k_new/v_new holding window index res_len
  int64_t pos_base;     // absolute position of window index 0 (error messages)
  int64_t win_base;     // window index of this descriptor's first token
  int seq;              // sequence id
  int first_block;      // block index (in the sequence) of this descriptor's block 0
  int n_flush;          // blocks in this descriptor
  int res_len;          // residual tokens before the append
  int ring_start;       // ring slot of window index 0
  int block_start;      // flattened index of this descriptor's block 0 in the batch
};
struct FlushBatch {
  int n;             // descriptors used
  int total_blocks;  // sum of n_flush
  FlushSeq s[kMaxFlushSeqs];
};

// Scratch bytes needed per flushed block of a batch (stats + staged tiles).
size_t flush_scratch_bytes_per_block(const KernelConfig& c);

// Device pointers shared by all calls of a cache.
struct CacheDevicePtrs {
  unsigned long long* block_table;  // [max_seqs][max_blocks] blob addresses
  unsigned long long* ring_table;   // [max_seqs][2] residual ring addresses (K, V)
  unsigned long long* used;         // [max_seqs] bytes used in the current pool chunk
  long long* seq_stats;             // [max_seqs][6]: k_tiles, v_tiles, k_scale, v_scale, header, perm
  unsigned long long* err_key;      // min over (seq << 40 | position) of non-finite input
};

// Quantizes, repacks and bit-packs the blocks of a batch and commits them to the pools
// (PACKKV.md sections 3-5). k_new/v_new: [rows][H][D] in in_dtype (device). scratch:
// total_blocks * flush_scratch_bytes_per_block bytes (device).
void launch_flush(const KernelConfig& c, const FlushBatch& b, const CacheDevicePtrs& d,
                  const void* k_new, const void* v_new, int in_dtype, uint8_t* scratch,
                  cudaStream_t stream);

constexpr int kMaxResidualSeqs = 80;
struct ResidualSeq {
  int64_t in_row;    // row of k_new/v_new of the first new token
  int64_t pos_base;  // absolute position of window index 0
  int n_new;         // new tokens
  int res_len;       // residual tokens before the append
  int flushed;       // window tokens flushed by this append
  int ring_start;    // ring slot of window index 0 (before the append)
  int seq;           // sequence id (error messages)
};
struct ResidualBatch {
  int n;
  int max_new;
  ResidualSeq s[kMaxResidualSeqs];
};
// Copies the new tokens that stay in the residual window into the rings (converted to
// kv_dtype) and checks every new token that was not flushed for non-finite values.
void launch_residual_write(const KernelConfig& c, const ResidualBatch& b,
                           const CacheDevicePtrs& d, const void* k_new, const void* v_new,
                           int in_dtype, cudaStream_t stream);

// ---- attention (attention.cu) ----

constexpr int kMaxAttnSeqs = 200;
constexpr int kMaxSplits = 32;            // compressed-token splits per (seq, head)
#ifndef PACKKV_ATTN_MAX_RES_SPLITS
#define PACKKV_ATTN_MAX_RES_SPLITS 8       // compile-time A/B knob (bench/gpu_run.sh ab)
#endif
constexpr int kMaxResSplits = PACKKV_ATTN_MAX_RES_SPLITS;  // residual-window splits per (seq, head)
static_assert(kMaxResSplits >= 1, "the residual window needs at least one split");
constexpr int kSplitsTotal = kMaxSplits + kMaxResSplits;
struct AttnSeq {
  int seq;
  int n_blocks;
  int res_len;
  int ring_start;
};
struct AttnBatch {
  int n;            // sequences in this launch
  int first;        // index of the first one in the caller's arrays (q/out rows)
  int max_blocks;   // max n_blocks over the batch
  AttnSeq s[kMaxAttnSeqs];
};

enum AttnMode { kAttnDecode = 0, kAttnScores = 1, kAttnApply = 2 };

struct AttnCall {
  int mode;
  int n_q_heads;
  const void* q;         // [n_seqs][n_q_heads][D] (decode, scores)
  int q_dtype;
  float scale;           // decode
  float* out;            // decode/apply: [n_seqs][n_q_heads][D]; scores: [..][ld]
  float* lse;            // decode, optional
  int64_t ld;            // scores / probs row stride
  const float* probs;    // apply: [n_seqs][n_q_heads][ld]
  float* partial;        // workspace
};

// Workspace bytes of an attention call on n_seqs sequences with n_q_heads query heads.
size_t attn_workspace_bytes(const KernelConfig& c, int n_seqs, int n_q_heads);
// CTA rows (grid y) of an attention launch: n_kv_heads * GQA-group chunks. CUDA allows
// at most 65535.
int attn_grid_rows(const KernelConfig& c, int n_q_heads);
// Enqueues one attention call over a batch (at most kMaxAttnSeqs sequences).
void launch_attention(const KernelConfig& c, const AttnBatch& b, const CacheDevicePtrs& d,
                      const AttnCall& a, cudaStream_t stream);

// Records the residual ring addresses of a sequence in the device ring table
// (stream-ordered, by a one-thread kernel: no host staging buffer).
void launch_set_ring(const CacheDevicePtrs& d, int seq, void* ring_k, void* ring_v, cudaStream_t stream);

// ---- decompress (decompress.cu) ----
// Writes K and V (either may be null) of one sequence as float [T][H][D].
void launch_decompress(const KernelConfig& c, const CacheDevicePtrs& d, const AttnSeq& s,
                       float* k_out, float* v_out, cudaStream_t stream);

// Kernel parameter blocks stay under 4 KB (see kMaxFlushSeqs).
static_assert(sizeof(KernelConfig) + sizeof(FlushBatch) + sizeof(CacheDevicePtrs) + 64 < 4096, "flush params");
static_assert(sizeof(KernelConfig) + sizeof(ResidualBatch) + sizeof(CacheDevicePtrs) + 64 < 4096, "residual params");
static_assert(sizeof(KernelConfig) + sizeof(AttnBatch) + sizeof(CacheDevicePtrs) + sizeof(AttnCall) + 64 < 4096,
              "attention params");

// Largest dynamic shared memory the kernels of this config need (checked at create).
size_t flush_smem_bytes(const KernelConfig& c);
// Dynamic shared memory the largest attention launch of this config needs with one warp
// per CTA (4 query heads per CTA, decode): every launch fits when this does; checked at
// create.
size_t attn_min_smem_bytes(const KernelConfig& c);

}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_KERNELS_H
