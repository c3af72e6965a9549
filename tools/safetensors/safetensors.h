// Minimal safetensors reader and writer (format: 8-byte little-endian header length,
// a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {str: str}},
// then the raw little-endian tensor bytes). The JSON is parsed with nlohmann::json.
// Built once as the internal static library packkv_safetensors (tools/CMakeLists.txt)
// for packkv-eval, the GPU benchmark and tools/; the namespace is the eval tool's, where
// it started.
#ifndef PACKKV_EVAL_SAFETENSORS_H
#define PACKKV_EVAL_SAFETENSORS_H

#include <stdint.h>

#include <map>
#include <string>
#include <vector>

namespace packkv_eval {

/** One tensor of a safetensors file: dtype string ("F16", "F32", "I32", ...), shape,
 *  and its raw bytes (little-endian, row-major). */
struct Tensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;

  /** Number of elements (product of the shape; 1 for a scalar). */
  int64_t numel() const;
};

/** Contents of a safetensors file. */
struct SafeTensors {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;
};

/** Reads a whole safetensors file. Throws std::runtime_error naming the file and the
 *  problem (missing file, truncated data, malformed header, offsets out of range,
 *  a byte count that does not match dtype and shape). */
SafeTensors read_safetensors(const std::string& path);

/** Writes a safetensors file (tensors in name order, data packed back to back).
 *  Throws std::runtime_error if the file cannot be written or a tensor's byte count
 *  does not match its dtype and shape. */
void write_safetensors(const std::string& path, const SafeTensors& st);

/** Bytes per element of a safetensors dtype string; 0 for an unknown dtype. */
int dtype_size(const std::string& dtype);

}  // namespace packkv_eval

#endif  // PACKKV_EVAL_SAFETENSORS_H
