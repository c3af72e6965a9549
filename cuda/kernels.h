// Interface between the CUDA cache (host code, cuda_cache.cu) and the kernels: the
// cache's configuration and device state as the kernels see them, and the descriptors
// and launch functions of the encoder (encode/) and of decompression (decompress.cu);
// attention has its own interface, attention/attention.h. Descriptors are plain data
// passed BY VALUE as kernel parameters (so no host->device copy and no pinned staging is
// needed on the hot path). Every launch function is asynchronous, allocates nothing, and
// throws Error(PACKKV_ERR_CUDA) if the launch itself fails. Thread-safety: as the cache
// (no internal lock; calls on one cache must not overlap, cache_impl.h).
#ifndef PACKKV_CUDA_KERNELS_H
#define PACKKV_CUDA_KERNELS_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "format/shape.h"
#include "pool/placement.h"

namespace packkv {
namespace cu {

// A cache's configuration as the kernels need it: the block shape (format/shape.h: H, D,
// N, scale groups, code widths, permutation flag and the block layout, computed once by
// the cache's Config) and the coding and device parameters around it.
struct KernelConfig {
  fmt::Shape shape;  // the compressed blocks (Config::shape)
  int ring_tokens;   // C = residual_tokens + block_tokens: residual ring capacity
  int sink_tokens;   // S = Config::sink_tokens: sink rows after the ring's C slots (row C + j = sink token j)
  int k_center;      // 1: K centring (PACKKV_K_TRANSFORM_CENTER): blocks store K - mu, see CacheDevicePtrs::k_mean
  int median;        // repack == MEDIAN
  float rel_k, rel_v;
  int kv_dtype;      // dtype of the residual ring
  int max_blocks;    // block-table row length per sequence
  size_t max_tile;   // shape.max_tile_bytes of the wider of K and V, rounded up to 16
  int num_sms;       // multiprocessors of the device (split heuristics)
  int smem_optin;    // largest dynamic shared memory per CTA (bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin)
  int cc;            // compute capability, major * 10 + minor (attention family dispatch)
};

// A sequence as the attention and decompression kernels see it.
// Its tokens are, in order: sink_len sink tokens (rows ring_tokens + j of its ring
// buffers), n_blocks compressed blocks, residual_len residual tokens (ring slots).
struct AttnSeq {
  int seq;
  int n_blocks;
  int residual_len;     // residual-window tokens
  int ring_start;  // ring slot of residual token 0
  int sink_len;    // sink tokens (Config::sink_tokens once the sequence has that many)
};

// Where a sequence writes its next blob (pool/placement.h).
using packkv::PlaceState;
using packkv::place_le;
using packkv::place_next;

// Device pointers shared by all calls of a cache.
struct CacheDevicePtrs {
  unsigned long long* block_table;  // [max_seqs][max_blocks] blob addresses
  unsigned long long* ring_table;   // [max_seqs][2] residual ring addresses (K, V)
  unsigned long long* pages;        // [max_seqs][max_pages] page addresses: each sequence's page list
  PlaceState* place;                // [max_seqs] placement state of each sequence
  unsigned long long* committed;    // bytes of blobs placed so far (16-aligned; pool tokens_fit)
  int max_pages;                    // page-list length per sequence
  unsigned page_cap;                // bytes of a page that blobs may take (page_bytes - kPageSlack)
  fmt::BlobSizes* seq_stats;        // [max_seqs] bytes of the sequence's blobs, by part
  unsigned long long* err_key;      // min over error_key(seq, position) of non-finite input; ~0 if none
  // K centring (KernelConfig::k_center, else null): [max_seqs][H][D] fp32 mean mu of K over
  // a sequence's block 0 (fp32 of the float64 mean in token order, as the CPU backend),
  // written by the flush of that block; valid while the sequence has blocks. Its blocks
  // store K - mu (fp32); attention adds q . mu to their scores, decompression adds mu.
  float* k_mean;
};

// Key of the first non-finite input token: sequence in the high bits, position in the
// low kErrKeyPosBits (kernels report the smallest key with atomicMin; the cache decodes it).
constexpr int kErrKeyPosBits = 40;
#if defined(__CUDACC__)
__host__ __device__
#endif
inline unsigned long long error_key(int seq, int64_t pos) {
  return (static_cast<unsigned long long>(seq) << kErrKeyPosBits) | static_cast<unsigned long long>(pos);
}

// ---- append: flush (encode/flush*.cu) ----

// Descriptor arrays are sized so that every kernel's parameters stay under 4 KB: larger
// parameter blocks made each launch cost ~25 us of host time on the H200 (measured).
constexpr int kMaxFlushSeqs = 56;

// One sequence's part of a flush batch: blocks [0, n_flush) of this descriptor are the
// window tokens [win_base + b*N, win_base + (b+1)*N) of the sequence.
struct FlushSeq {
  int64_t in_row;       // row of k_new/v_new holding window index residual_len
  int64_t pos_base;     // absolute position of window index 0 (error messages)
  int64_t win_base;     // window index of this descriptor's first token
  int seq;              // sequence id
  int first_block;      // block index (in the sequence) of this descriptor's block 0
  int n_flush;          // blocks in this descriptor
  int residual_len;          // residual tokens before the append
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
// Largest dynamic shared memory the flush kernels of this config need (checked at create).
size_t flush_smem_bytes(const KernelConfig& c);

// Quantizes, repacks and bit-packs the blocks of a batch, places them in their
// sequences' pages (place_next, in block order) and commits them
// (PACKKV.md sections 3-5). k_new/v_new: [rows][H][D] in in_dtype (device). scratch:
// total_blocks * flush_scratch_bytes_per_block bytes (device).
void launch_flush(const KernelConfig& c, const FlushBatch& b, const CacheDevicePtrs& d,
                  const void* k_new, const void* v_new, int in_dtype, uint8_t* scratch,
                  cudaStream_t stream);

// ---- append: residual ring (encode/residual_ring.cu) ----

constexpr int kMaxResidualSeqs = 80;
// One sequence's new window tokens, or (sink = 1) its new sink tokens: then window index
// i means sink token i, stored in row ring_tokens + i (residual_len: sink tokens before the
// append, flushed = ring_start = pos_base = 0).
struct ResidualSeq {
  int64_t in_row;    // row of k_new/v_new of the first new token
  int64_t pos_base;  // absolute position of window index 0
  int n_new;         // new tokens
  int residual_len;       // residual tokens before the append
  int flushed;       // window tokens flushed by this append
  int ring_start;    // ring slot of window index 0 (before the append)
  int seq;           // sequence id (error messages)
  int sink;          // 1: these are sink tokens (see above)
};
struct ResidualBatch {
  int n;
  int max_new;
  ResidualSeq s[kMaxResidualSeqs];
};
// Copies the new tokens that stay in the residual window (or become sink tokens) into the
// rings (converted to kv_dtype) and checks every new token that was not flushed for
// non-finite values.
void launch_residual_write(const KernelConfig& c, const ResidualBatch& b,
                           const CacheDevicePtrs& d, const void* k_new, const void* v_new,
                           int in_dtype, cudaStream_t stream);

// Records the residual ring addresses of a sequence in the device ring table
// (stream-ordered, by a one-thread kernel: no host staging buffer).
void launch_set_ring(const CacheDevicePtrs& d, int seq, void* ring_k, void* ring_v, cudaStream_t stream);

// Writes page-list entries pages[seq * max_pages + index] = addr (stream-ordered, by value).
constexpr int kMaxPageEntries = 128;
struct PageEntries {
  int n;
  int seq[kMaxPageEntries];
  int index[kMaxPageEntries];
  unsigned long long addr[kMaxPageEntries];
};
void launch_set_pages(const CacheDevicePtrs& d, const PageEntries& e, cudaStream_t stream);

// ---- decompress (decompress.cu) ----
// Writes K and V (either may be null) of one sequence as float [T][H][D]: sink tokens,
// blocks, residual window.
void launch_decompress(const KernelConfig& c, const CacheDevicePtrs& d, const AttnSeq& s,
                       float* k_out, float* v_out, cudaStream_t stream);

// Kernel parameter blocks stay under 4 KB (see kMaxFlushSeqs).
static_assert(sizeof(KernelConfig) + sizeof(FlushBatch) + sizeof(CacheDevicePtrs) + 64 < 4096, "flush params");
static_assert(sizeof(KernelConfig) + sizeof(ResidualBatch) + sizeof(CacheDevicePtrs) + 64 < 4096, "residual params");

}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_KERNELS_H
