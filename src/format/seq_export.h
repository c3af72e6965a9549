// The byte format of one exported sequence (packkv_x_cache_export / _import), version 2.
// Defined here once; every field little-endian, written and read byte by byte (no struct
// is copied, so the format does not depend on the host's layout).
//
//   offset size  field
//   0      8     magic "PACKKVSQ"
//   8      4     version (kSeqExportVersion = 2; 1 is still read, see below)
//   12     4     header bytes (kSeqHeaderBytes = 128)
//   16     8     total bytes of the export (header + payload)
//   24     8     checksum: 64-bit FNV-1a of bytes [32, total)
//   32     4     block format id (fmt::FormatId; 1 = round-major)
//   36     4     n_kv_heads        40  4  head_dim        44  4  block_tokens
//   48     4     bits_k            52  4  bits_v
//   56     4     scale_granularity (packkv_scale_granularity_t)
//   60     4     has_perm (1: blocks store a repacking permutation)
//   64     4     kv_dtype (packkv_dtype_t of the sink tokens and the residual window)
//   68     4     zs_format (packkv_zs_format_t: 0 compact, 1 wide zero points and scales)
//   72     8     n_tokens: the sequence's length L
//   80     8     window_start: tokens before it are out of the sliding window
//   88     8     first_block: blocks before it were freed (sliding window)
//   96     8     n_blocks: blocks stored
//   104    8     residual_len: tokens of the residual window
//   112    4     sink_tokens (the params field)
//   116    4     k_transform (packkv_k_transform_t: 0 none, 1 K centring)
//   120    8     sink_len: sink tokens held (<= sink_tokens)
//   128          n_blocks times { u32 blob bytes B, u32 zero, B blob bytes, zero padding to a
//                multiple of 8 }, then the residual window's K, then its V:
//                residual_len * n_kv_heads * head_dim values of kv_dtype each; then the
//                sink tokens' K, then their V: sink_len * n_kv_heads * head_dim values of
//                kv_dtype each; then, when k_transform = 1 and first_block + n_blocks > 0,
//                the K mean: n_kv_heads * head_dim float32 ([head][channel]; the blocks
//                store K minus it).
// Consistency: L = sink_len + (first_block + n_blocks) * block_tokens + residual_len;
// sink_len < sink_tokens only with no block and no residual token (sink tokens fill
// first); window_start <= L, and sink_len + first_block * block_tokens <= window_start
// when first_block > 0; total = 128 + payload exactly.
// Version 1 is version 2 with bytes 112..127 zero (no sink tokens, no K centring): the
// reader takes it as such.
// The params that matter for reading are those at 32..68 and 112..116; rel_scale and
// residual_tokens of the importing cache govern only what it compresses later.
#ifndef PACKKV_FORMAT_SEQ_EXPORT_H
#define PACKKV_FORMAT_SEQ_EXPORT_H

#include <stddef.h>
#include <stdint.h>

namespace packkv {
namespace fmt {

constexpr char kSeqMagic[8] = {'P', 'A', 'C', 'K', 'K', 'V', 'S', 'Q'};
constexpr uint32_t kSeqExportVersion = 2;
constexpr uint32_t kSeqExportVersionOldest = 1;  // still read
constexpr size_t kSeqHeaderBytes = 128;
constexpr size_t kSeqChecksumFrom = 32;

// Field offsets (the table above).
enum SeqField : size_t {
  kSeqVersion = 8, kSeqHeaderSize = 12, kSeqTotal = 16, kSeqChecksum = 24, kSeqFormat = 32, kSeqHeads = 36,
  kSeqHeadDim = 40, kSeqBlockTokens = 44, kSeqBitsK = 48, kSeqBitsV = 52, kSeqGranularity = 56, kSeqHasPerm = 60,
  kSeqKvDtype = 64, kSeqZsFormat = 68, kSeqTokens = 72, kSeqWindowStart = 80, kSeqFirstBlock = 88, kSeqBlocks = 96,
  kSeqResidual = 104, kSeqSinkTokens = 112, kSeqKTransform = 116, kSeqSinkLen = 120
};

inline void put_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = (uint8_t)(v >> (8 * i));
}
inline void put_u64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = (uint8_t)(v >> (8 * i));
}
inline uint32_t get_u32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= (uint32_t)p[i] << (8 * i);
  return v;
}
inline uint64_t get_u64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

// 64-bit FNV-1a (offset basis 0xcbf29ce484222325, prime 0x100000001b3).
inline uint64_t fnv1a64(const uint8_t* p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

// Bytes a stored block takes in the payload.
inline size_t seq_block_record(size_t blob_bytes) { return 8 + (blob_bytes + 7) / 8 * 8; }

}  // namespace fmt
}  // namespace packkv

#endif  // PACKKV_FORMAT_SEQ_EXPORT_H
