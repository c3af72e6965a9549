// Writing and reading the byte format of one exported sequence (format/seq_export.h),
// shared by the backends: they gather a sequence's parts, these lay them out; reading
// validates everything (header, checksum, params, counts, every blob with
// format/blob_check.h, the residual and sink values and the K mean) and returns the parts,
// so that a backend's import changes nothing until all of it is known good.
#ifndef PACKKV_API_SEQ_EXPORT_IO_H
#define PACKKV_API_SEQ_EXPORT_IO_H

#include <stddef.h>
#include <stdint.h>

#include <vector>

#include "api/config.h"

namespace packkv {

// The counts of the header (seq_export.h, offsets 72..127).
struct SeqCounts {
  int64_t n_tokens = 0, window_start = 0, first_block = 0, n_blocks = 0, residual_len = 0, sink_len = 0;
};

// Clears out[0, size) and writes the header (magic, version, sizes, the params of config,
// the counts); the checksum comes from seal_seq_export.
void write_seq_header(const Config& config, const SeqCounts& counts, uint8_t* out, size_t size);
// Writes the record of one blob of z bytes at p; returns the end of the record.
uint8_t* write_block_record(uint8_t* p, const uint8_t* blob, uint32_t z);
// Writes the K mean (float bit patterns, little-endian) at p; returns the end.
uint8_t* write_k_mean(uint8_t* p, const float* mean, size_t n);
// Writes the checksum of a complete export.
void seal_seq_export(uint8_t* out, size_t size);

// A validated export: its counts and parts, in host memory.
struct SeqImage {
  SeqCounts counts;
  std::vector<uint8_t> blobs;  // the blobs, each at a 16-aligned offset (as append lays them out)
  std::vector<size_t> sizes;   // bytes of each blob
  std::vector<uint8_t> res_k, res_v, sink_k, sink_v;  // [tokens][H][D] in kv_dtype, tokens in order
  std::vector<float> k_mean;   // [H * D] with K centring and a block, else empty
};
// Validates an export for a cache of `config` and returns its parts. Throws Error:
// INVALID_ARGUMENT (bad magic, truncation, corruption, a params mismatch),
// VERSION_MISMATCH, CAPACITY_EXCEEDED (more tokens than max_tokens_per_seq); every
// message ends with "; nothing was imported".
SeqImage read_seq_export(const Config& config, const uint8_t* in, size_t size);

}  // namespace packkv

#endif  // PACKKV_API_SEQ_EXPORT_IO_H
