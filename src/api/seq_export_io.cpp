// Writing and reading one exported sequence (api/seq_export_io.h; the format:
// format/seq_export.h).
#include "api/seq_export_io.h"

#include <cmath>
#include <cstring>
#include <string>

#include "common/dtype.h"
#include "common/error.h"
#include "common/rules.h"
#include "format/blob_check.h"
#include "format/seq_export.h"
#define PACKKV_EXPERIMENTAL_API
#include "packkv/packkv_experimental.h"

namespace packkv {

static_assert(PACKKV_X_SEQ_EXPORT_VERSION == fmt::kSeqExportVersion, "export version: header and format agree");

namespace {

using namespace fmt;

[[noreturn]] void bad(const std::string& what) { fail(PACKKV_ERR_INVALID_ARGUMENT, what + "; nothing was imported"); }

}  // namespace

void write_seq_header(const Config& c, const SeqCounts& n, uint8_t* out, size_t size) {
  using namespace fmt;
  std::memset(out, 0, size);
  std::memcpy(out, kSeqMagic, 8);
  put_u32(out + kSeqVersion, kSeqExportVersion);
  put_u32(out + kSeqHeaderSize, (uint32_t)kSeqHeaderBytes);
  put_u64(out + kSeqTotal, size);
  put_u32(out + kSeqFormat, (uint32_t)c.shape.format);
  put_u32(out + kSeqHeads, (uint32_t)c.shape.n_kv_heads);
  put_u32(out + kSeqHeadDim, (uint32_t)c.shape.head_dim);
  put_u32(out + kSeqBlockTokens, (uint32_t)c.shape.block_tokens);
  put_u32(out + kSeqBitsK, (uint32_t)c.shape.bits_k);
  put_u32(out + kSeqBitsV, (uint32_t)c.shape.bits_v);
  put_u32(out + kSeqGranularity, (uint32_t)c.granularity);
  put_u32(out + kSeqHasPerm, c.shape.has_perm ? 1u : 0u);
  put_u32(out + kSeqKvDtype, (uint32_t)c.kv_dtype);
  put_u32(out + kSeqZsFormat, (uint32_t)c.shape.zs);
  put_u64(out + kSeqTokens, (uint64_t)n.n_tokens);
  put_u64(out + kSeqWindowStart, (uint64_t)n.window_start);
  put_u64(out + kSeqFirstBlock, (uint64_t)n.first_block);
  put_u64(out + kSeqBlocks, (uint64_t)n.n_blocks);
  put_u64(out + kSeqResidual, (uint64_t)n.residual_len);
  put_u32(out + kSeqSinkTokens, (uint32_t)c.sink_tokens);
  put_u32(out + kSeqKTransform, (uint32_t)c.k_transform);
  put_u64(out + kSeqSinkLen, (uint64_t)n.sink_len);
}

uint8_t* write_block_record(uint8_t* p, const uint8_t* blob, uint32_t z) {
  fmt::put_u32(p, z);
  std::memcpy(p + 8, blob, z);
  return p + fmt::seq_block_record(z);
}

uint8_t* write_k_mean(uint8_t* p, const float* mean, size_t n) {
  for (size_t i = 0; i < n; ++i) {  // bit pattern, little-endian
    uint32_t u;
    std::memcpy(&u, &mean[i], 4);
    fmt::put_u32(p, u);
    p += 4;
  }
  return p;
}

void seal_seq_export(uint8_t* out, size_t size) {
  fmt::put_u64(out + fmt::kSeqChecksum, fmt::fnv1a64(out + fmt::kSeqChecksumFrom, size - fmt::kSeqChecksumFrom));
}

SeqImage read_seq_export(const Config& config, const uint8_t* in, size_t size) {
  const Config& c = config;
  const size_t row_ = (size_t)c.shape.token_values(), elem_ = dtype_size(c.kv_dtype);
  const fmt::Shape& sh = c.shape;
  // 1. header
  if (size < kSeqHeaderBytes)
    bad("truncated: " + std::to_string(size) + " bytes, less than the " + std::to_string(kSeqHeaderBytes) +
        "-byte header");
  if (std::memcmp(in, kSeqMagic, 8) != 0) bad("bad magic: not a libpackkv sequence export");
  const uint32_t version = get_u32(in + kSeqVersion);
  if (version < kSeqExportVersionOldest || version > kSeqExportVersion)
    fail(PACKKV_ERR_VERSION_MISMATCH, "export format version " + std::to_string(version) + ", this library reads " +
                                          std::to_string(kSeqExportVersionOldest) + " to " +
                                          std::to_string(kSeqExportVersion) + "; nothing was imported");
  if (get_u32(in + kSeqHeaderSize) != kSeqHeaderBytes) bad("corrupt header: header size field");
  const uint64_t total = get_u64(in + kSeqTotal);
  if (total > size)
    bad("truncated: the export is " + std::to_string(total) + " bytes, the buffer holds " + std::to_string(size));
  if (total < size)
    bad("size mismatch: the export is " + std::to_string(total) + " bytes, the buffer holds " + std::to_string(size));
  if (get_u64(in + kSeqChecksum) != fnv1a64(in + kSeqChecksumFrom, size - kSeqChecksumFrom))
    bad("checksum mismatch: the export is corrupt");
  // version 1: bytes 112..127 were reserved zero (no sink tokens, no K centring)
  if (version == 1 && (get_u64(in + kSeqSinkTokens) != 0 || get_u64(in + kSeqSinkLen) != 0))
    bad("corrupt header: reserved fields of a version 1 export are not zero");
  // 2. params that matter for reading
  const struct {
    const char* name;
    size_t at;
    uint32_t mine;
  } params[] = {{"format id", kSeqFormat, (uint32_t)sh.format},
                {"n_kv_heads", kSeqHeads, (uint32_t)sh.n_kv_heads},
                {"head_dim", kSeqHeadDim, (uint32_t)sh.head_dim},
                {"block_tokens", kSeqBlockTokens, (uint32_t)sh.block_tokens},
                {"bits_k", kSeqBitsK, (uint32_t)sh.bits_k},
                {"bits_v", kSeqBitsV, (uint32_t)sh.bits_v},
                {"scale_granularity", kSeqGranularity, (uint32_t)c.granularity},
                {"repack (permutation stored or not)", kSeqHasPerm, sh.has_perm ? 1u : 0u},
                {"kv_dtype", kSeqKvDtype, (uint32_t)c.kv_dtype},
                {"zs_format", kSeqZsFormat, (uint32_t)c.shape.zs},
                {"sink_tokens", kSeqSinkTokens, (uint32_t)c.sink_tokens},
                {"k_transform", kSeqKTransform, (uint32_t)c.k_transform}};
  for (const auto& f : params)
    if (get_u32(in + f.at) != f.mine)
      bad("params mismatch: the export has " + std::string(f.name) + " = " + std::to_string(get_u32(in + f.at)) +
          ", this cache " + std::to_string(f.mine));
  // 3. counts (no overflow: each bounded before it is multiplied)
  const uint64_t n_tokens = get_u64(in + kSeqTokens), start = get_u64(in + kSeqWindowStart);
  const uint64_t first = get_u64(in + kSeqFirstBlock), n_blocks = get_u64(in + kSeqBlocks);
  const uint64_t residual = get_u64(in + kSeqResidual), sinks = get_u64(in + kSeqSinkLen);
  const uint64_t limit = (uint64_t)1 << 40;
  if (n_tokens > limit || first > limit || n_blocks > limit || residual > limit || start > n_tokens ||
      sinks > (uint64_t)c.sink_tokens ||
      sinks + (first + n_blocks) * (uint64_t)sh.block_tokens + residual != n_tokens ||
      (sinks < (uint64_t)c.sink_tokens && sinks != n_tokens) ||
      (first > 0 && sinks + first * (uint64_t)sh.block_tokens > start))
    bad("corrupt header: inconsistent counts (n_tokens " + std::to_string(n_tokens) + ", window_start " +
        std::to_string(start) + ", sink_len " + std::to_string(sinks) + ", first_block " + std::to_string(first) +
        ", n_blocks " + std::to_string(n_blocks) + ", residual_len " + std::to_string(residual) + ")");
  if ((int64_t)n_tokens > c.max_tokens_per_seq)
    fail(PACKKV_ERR_CAPACITY_EXCEEDED, "the export holds " + std::to_string(n_tokens) +
                                           " tokens, more than max_tokens_per_seq = " +
                                           std::to_string(c.max_tokens_per_seq) + "; nothing was imported");
  // 4. blocks: bounds, padding, then the blob itself (copied 16-aligned, as append lays them out)
  const size_t worst = sh.max_blob_bytes();
  size_t at = kSeqHeaderBytes;
  std::vector<uint8_t> blobs;
  std::vector<size_t> sizes;
  for (uint64_t b = 0; b < n_blocks; ++b) {
    if (size - at < 8) bad("truncated: block " + std::to_string(b) + " record header");
    const uint32_t z = get_u32(in + at);
    if (z == 0 || z > worst || get_u32(in + at + 4) != 0)
      bad("corrupt block " + std::to_string(b) + ": size " + std::to_string(z));
    const size_t rec = seq_block_record(z);
    if (size - at < rec) bad("truncated: block " + std::to_string(b));
    for (size_t i = 8 + z; i < rec; ++i)
      if (in[at + i] != 0) bad("corrupt block " + std::to_string(b) + ": non-zero padding");
    blobs.resize(align16(blobs.size()), 0);
    blobs.insert(blobs.end(), in + at + 8, in + at + 8 + z);
    sizes.push_back(z);
    at += rec;
  }
  for (size_t b = 0, off = 0; b < sizes.size(); ++b) {  // aligned now (vector storage is 16-aligned)
    const BlobCheck chk = validate_blob(sh, blobs.data() + off, sizes[b]);
    if (!chk.ok) bad("corrupt block " + std::to_string(b) + ": " + chk.error);
    off = align16(off + sizes[b]);
  }
  // 5. the residual window, the sink tokens and the K mean: exactly the rest, finite values
  const size_t res_bytes = (size_t)residual * row_ * elem_, sink_bytes = (size_t)sinks * row_ * elem_;
  const bool has_mean = c.k_transform == PACKKV_K_TRANSFORM_CENTER && first + n_blocks > 0;
  const size_t mean_bytes = has_mean ? row_ * 4 : 0;
  if (size - at != 2 * res_bytes + 2 * sink_bytes + mean_bytes)
    bad("size mismatch: " + std::to_string(size - at) + " bytes after the blocks, the residual window of " +
        std::to_string(residual) + " tokens, the " + std::to_string(sinks) + " sink tokens and the K mean take " +
        std::to_string(2 * res_bytes + 2 * sink_bytes + mean_bytes));
  std::vector<uint8_t> rk(in + at, in + at + res_bytes), rv(in + at + res_bytes, in + at + 2 * res_bytes);
  at += 2 * res_bytes;
  std::vector<uint8_t> sk(in + at, in + at + sink_bytes), sv(in + at + sink_bytes, in + at + 2 * sink_bytes);
  at += 2 * sink_bytes;
  const struct {
    const std::vector<uint8_t>* bytes;
    const char* what;
  } dense[] = {{&rk, "residual window"}, {&rv, "residual window"}, {&sk, "sink tokens"}, {&sv, "sink tokens"}};
  std::vector<float> f;
  for (const auto& d : dense) {
    f.resize(d.bytes->size() / elem_);
    to_float(d.bytes->data(), c.kv_dtype, f.size(), f.data());
    for (size_t i = 0; i < f.size(); ++i)
      if (!std::isfinite(f[i])) bad("corrupt " + std::string(d.what) + ": value " + std::to_string(i) + " is not finite");
  }
  std::vector<float> mean(has_mean ? row_ : 0);
  for (size_t i = 0; i < mean.size(); ++i) {
    const uint32_t u = get_u32(in + at + 4 * i);
    std::memcpy(&mean[i], &u, 4);
    if (!std::isfinite(mean[i])) bad("corrupt K mean: value " + std::to_string(i) + " is not finite");
  }
  SeqImage img;
  img.counts.n_tokens = (int64_t)n_tokens;
  img.counts.window_start = (int64_t)start;
  img.counts.first_block = (int64_t)first;
  img.counts.n_blocks = (int64_t)n_blocks;
  img.counts.residual_len = (int64_t)residual;
  img.counts.sink_len = (int64_t)sinks;
  img.blobs.swap(blobs);
  img.sizes.swap(sizes);
  img.res_k.swap(rk);
  img.res_v.swap(rv);
  img.sink_k.swap(sk);
  img.sink_v.swap(sv);
  img.k_mean.swap(mean);
  return img;
}

}  // namespace packkv
