// Test helper: one F16 tensor of a safetensors file (the real KV sample in data/), read
// without the library, and a test-side fp16 conversion.
#ifndef PACKKV_TESTS_SAFETENSORS_F16_H
#define PACKKV_TESTS_SAFETENSORS_F16_H

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace pkt {

struct Tensor16 {
  std::vector<uint16_t> v;
  std::vector<int64_t> shape;
};

// Reads one F16 tensor by name (safetensors: u64 header size, JSON header, data).
inline Tensor16 read_f16(const std::string& path, const std::string& name) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE(f.good());
  uint64_t hn = 0;
  f.read(reinterpret_cast<char*>(&hn), 8);
  std::string h(hn, '\0');
  f.read(&h[0], (std::streamsize)hn);
  const size_t at = h.find("\"" + name + "\"");
  REQUIRE(at != std::string::npos);
  const size_t sh = h.find("\"shape\":[", at), off = h.find("\"data_offsets\":[", at);
  REQUIRE(h.compare(h.find("\"dtype\":\"", at) + 9, 3, "F16") == 0);
  Tensor16 t;
  size_t p = sh + 9;
  while (h[p] != ']') {
    t.shape.push_back(std::stoll(h.substr(p)));
    p = h.find_first_of(",]", p);
    if (h[p] == ',') ++p;
  }
  const int64_t a = std::stoll(h.substr(off + 16)), b = std::stoll(h.substr(h.find(',', off + 16) + 1));
  t.v.resize((size_t)(b - a) / 2);
  f.seekg((std::streamoff)(8 + hn + (uint64_t)a));
  f.read(reinterpret_cast<char*>(t.v.data()), b - a);
  REQUIRE(f.good());
  return t;
}

// Test-side fp16 -> float conversion (normal and subnormal halves), independent of the library's.
inline float half_to_float(uint16_t h) {
  const int e = (h >> 10) & 31, m = h & 1023;
  const float v = e == 0 ? std::ldexp((float)m, -24) : std::ldexp((float)(m | 1024), e - 25);
  return (h & 0x8000) ? -v : v;
}

}  // namespace pkt

#endif  // PACKKV_TESTS_SAFETENSORS_F16_H
