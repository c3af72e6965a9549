#include "safetensors.h"

#include <cstring>
#include <fstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace packkv_eval {

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int dtype_size(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL" || dtype == "F8_E4M3" || dtype == "F8_E5M2")
    return 1;
  return 0;
}

namespace {

[[noreturn]] void bad(const std::string& path, const std::string& what) {
  throw std::runtime_error("safetensors file " + path + ": " + what);
}

}  // namespace

SafeTensors read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) bad(path, "cannot open");
  in.seekg(0, std::ios::end);
  const int64_t file_size = (int64_t)in.tellg();
  in.seekg(0, std::ios::beg);
  if (file_size < 8) bad(path, "shorter than the 8-byte header length");
  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > (uint64_t)(file_size - 8)) bad(path, "header length exceeds the file size");
  std::string header((size_t)header_len, '\0');
  in.read(&header[0], (std::streamsize)header_len);
  const int64_t data_start = 8 + (int64_t)header_len;
  const int64_t data_size = file_size - data_start;

  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header);
  } catch (const nlohmann::json::exception& e) {
    bad(path, std::string("malformed JSON header: ") + e.what());
  }
  if (!j.is_object()) bad(path, "JSON header is not an object");

  SafeTensors st;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) bad(path, "__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m)
        st.metadata[m.key()] = m.value().is_string() ? m.value().get<std::string>() : m.value().dump();
      continue;
    }
    try {
      Tensor t;
      t.dtype = v.at("dtype").get<std::string>();
      t.shape = v.at("shape").get<std::vector<int64_t>>();
      auto off = v.at("data_offsets").get<std::vector<int64_t>>();
      if (off.size() != 2 || off[0] < 0 || off[1] < off[0] || off[1] > data_size)
        bad(path, "tensor " + name + ": data_offsets out of range");
      const int es = dtype_size(t.dtype);
      if (es == 0) bad(path, "tensor " + name + ": unknown dtype " + t.dtype);
      for (int64_t d : t.shape)
        if (d < 0) bad(path, "tensor " + name + ": negative dimension");
      if (t.numel() * es != off[1] - off[0])
        bad(path, "tensor " + name + ": byte count does not match dtype and shape");
      t.bytes.resize((size_t)(off[1] - off[0]));
      in.seekg(data_start + off[0], std::ios::beg);
      in.read(reinterpret_cast<char*>(t.bytes.data()), (std::streamsize)t.bytes.size());
      if (!in) bad(path, "tensor " + name + ": truncated data");
      st.tensors.emplace(name, std::move(t));
    } catch (const nlohmann::json::exception& e) {
      bad(path, "tensor " + name + ": malformed entry: " + e.what());
    }
  }
  return st;
}

void write_safetensors(const std::string& path, const SafeTensors& st) {
  nlohmann::json j = nlohmann::json::object();
  if (!st.metadata.empty()) j["__metadata__"] = st.metadata;
  int64_t offset = 0;
  for (const auto& [name, t] : st.tensors) {
    if (t.numel() * dtype_size(t.dtype) != (int64_t)t.bytes.size())
      throw std::runtime_error("write_safetensors: tensor " + name + " byte count mismatch");
    j[name] = {{"dtype", t.dtype},
               {"shape", t.shape},
               {"data_offsets", {offset, offset + (int64_t)t.bytes.size()}}};
    offset += (int64_t)t.bytes.size();
  }
  std::string header = j.dump();
  while (header.size() % 8 != 0) header.push_back(' ');  // the format pads with spaces
  std::ofstream out(path, std::ios::binary);
  if (!out) throw std::runtime_error("write_safetensors: cannot create " + path);
  unsigned char len_bytes[8];
  uint64_t len = header.size();
  for (int i = 0; i < 8; ++i) len_bytes[i] = (unsigned char)(len >> (8 * i));
  out.write(reinterpret_cast<const char*>(len_bytes), 8);
  out.write(header.data(), (std::streamsize)header.size());
  for (const auto& [name, t] : st.tensors)
    out.write(reinterpret_cast<const char*>(t.bytes.data()), (std::streamsize)t.bytes.size());
  if (!out) throw std::runtime_error("write_safetensors: write failed for " + path);
}

}  // namespace packkv_eval
