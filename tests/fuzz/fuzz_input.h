// Shared by the libFuzzer harnesses: a reader that takes values from the front of the
// fuzz input (0 once exhausted, so every input is a complete program), and value
// generators for K/V data of the adversarial classes the issue lists.
#ifndef PACKKV_FUZZ_INPUT_H
#define PACKKV_FUZZ_INPUT_H

#include <stddef.h>
#include <stdint.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace pkfuzz {

// Aborts the fuzz run with a message: a broken invariant is a finding.
[[noreturn]] inline void die(const char* what) {
  std::fprintf(stderr, "pkfuzz invariant broken: %s\n", what);
  std::abort();
}
#define PKFUZZ_CHECK(cond)            \
  do {                                \
    if (!(cond)) ::pkfuzz::die(#cond); \
  } while (0)

// Consumes the input front to back; reads past the end give zeros.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : p_(data), n_(size) {}
  /// One byte, or 0 when the input is exhausted.
  uint8_t u8() { return at_ < n_ ? p_[at_++] : 0; }
  /// Little-endian 16-bit value.
  uint16_t u16() { return (uint16_t)(u8() | (u8() << 8)); }
  /// Little-endian 32-bit value.
  uint32_t u32() { return (uint32_t)u16() | ((uint32_t)u16() << 16); }
  /// A float from 4 raw bytes (any bit pattern, NaN and infinities included).
  float f32() {
    const uint32_t b = u32();
    float f;
    std::memcpy(&f, &b, 4);
    return f;
  }
  /// Picks one of the n values of `options` by the next byte.
  template <class T, size_t N>
  T pick(const T (&options)[N]) { return options[u8() % N]; }
  /// True if bytes remain.
  bool more() const { return at_ < n_; }
  /// Bytes not consumed yet.
  size_t left() const { return n_ - at_; }
  /// The unconsumed rest of the input (consumes it).
  const uint8_t* rest(size_t* size) {
    *size = n_ - at_;
    const uint8_t* r = p_ + at_;
    at_ = n_;
    return r;
  }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t at_ = 0;
};

// Classes of K/V data.
enum ValueClass {
  kGaussian = 0,   // N(0, 1) plus per-channel offsets
  kConstant,       // every token constant (one value per token)
  kZeros,          // all zeros
  kSubnormal,      // fp32 subnormals and zeros
  kOutlier,        // Gaussian with one 1e4 outlier channel
  kHuge,           // up to +-1e38 (see fill_values)
  kFp16Limit,      // around the fp16 limit 65504 (some overflow fp16)
  kNonFinite,      // Gaussian with one NaN or infinity somewhere
  kMixed,          // each token from a random finite class
  kNumClasses
};

/// Fills n_tokens x row floats of class `cls` from a seeded generator. Finite unless
/// cls == kNonFinite.
inline void fill_values(std::vector<float>* out, size_t n_tokens, size_t row, int cls, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  out->assign(n_tokens * row, 0.0f);
  std::vector<float> offs(row);
  for (float& o : offs) o = 2.0f * n01(rng);
  for (size_t t = 0; t < n_tokens; ++t) {
    int c = cls;
    if (cls == kMixed) c = (int)(rng() % kNonFinite);
    float* x = out->data() + t * row;
    switch (c) {
      case kConstant: {
        const float v = n01(rng) * 3.0f;
        for (size_t i = 0; i < row; ++i) x[i] = v;
        break;
      }
      case kZeros: break;
      case kSubnormal:
        for (size_t i = 0; i < row; ++i) x[i] = (float)(rng() % 9) * 1e-45f * ((rng() & 1) ? 1.0f : -1.0f);
        break;
      case kHuge:
        // |x| <= 1e38: closer to FLT_MAX the quantizer can round a value up to a grid
        // point beyond FLT_MAX (known issue, test_numeric_edges.cpp "spanning
        // [-1e38, 3.38e38]"); widen to 3.38e38 once that is fixed.
        for (size_t i = 0; i < row; ++i) x[i] = std::max(-1e38f, std::min(1e38f, n01(rng) * 5e37f));
        break;
      case kFp16Limit:
        for (size_t i = 0; i < row; ++i) x[i] = 65504.0f + (float)((int)(rng() % 64) - 48);
        break;
      default:
        for (size_t i = 0; i < row; ++i) x[i] = offs[i] + n01(rng);
        if (c == kOutlier && t % 3 == 0) x[row / 2] = 1e4f;
        break;
    }
  }
  if (cls == kNonFinite && !out->empty()) {
    const float bad[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                         -std::numeric_limits<float>::infinity()};
    (*out)[rng() % out->size()] = bad[rng() % 3];
  }
}

}  // namespace pkfuzz

#endif
