// The CPU encoder's bytes are frozen: encode_block on real SmolLM2 K/V and on synthetic
// odd shapes and edge values must give exactly the blobs it gave before the encoder was
// optimised (issue 19: every output byte unchanged, on every instruction set and thread
// count; the CUDA encoder must produce the same bytes too).
//
// How the hashes were made: this file was added first, with the encoder of commit 6ab49a6
// (branch s7-enc's base, main's encoder); each case printed its FNV-1a 64-bit hash of the
// concatenated blobs (the CHECK failure message shows the computed value, in decimal) and the
// printed values were pasted below; only after that was the encoder changed. A change
// of any output byte changes the hash.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "api/config.h"
#include "codec/block_codec.h"
#include "doctest/doctest.h"
#include "safetensors_f16.h"

namespace {

using packkv::Config;

uint64_t fnv1a(const std::vector<uint8_t>& b) {
  uint64_t h = 1469598103934665603ull;
  for (uint8_t x : b) h = (h ^ x) * 1099511628211ull;
  return h;
}

// Deterministic, library-independent numbers (splitmix64).
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int in(int lo, int hi) { return lo + (int)(next() % (uint64_t)(hi - lo + 1)); }  // [lo, hi]
};

Config config(int h, int d, int block_tokens, packkv_repack_t repack, packkv_scale_granularity_t gran,
              packkv_zs_format_t zs, float rk, float rv, packkv_dtype_t dtype) {
  packkv_cache_params_t p;
  REQUIRE(packkv_cache_params_init(&p, sizeof p) == PACKKV_OK);
  p.n_kv_heads = h;
  p.head_dim = d;
  p.block_tokens = block_tokens;
  p.repack = repack;
  p.scale_granularity = gran;
  p.zs_format = zs;
  p.rel_scale_k = rk;
  p.rel_scale_v = rv;
  p.kv_dtype = dtype;
  return Config::from_params(&p, "test");
}

// Encodes `blocks` blocks of x (K) and y (V), [blocks * block_tokens][row], into one buffer.
uint64_t encode_hash(const Config& c, const std::vector<float>& k, const std::vector<float>& v, int blocks) {
  const size_t vals = (size_t)c.shape.block_tokens * c.shape.n_kv_heads * c.shape.head_dim;
  REQUIRE(k.size() >= vals * blocks);
  std::vector<uint8_t> out;
  for (int b = 0; b < blocks; ++b) packkv::encode_block(c, k.data() + vals * b, v.data() + vals * b, &out);
  return fnv1a(out);
}

// ---- real data: data/smollm2_kv_sample.safetensors, fp16 [2048][3][64] ----

std::vector<float> read_f16(const std::string& name) {
  const pkt::Tensor16 t = pkt::read_f16(std::string(PACKKV_DATA_DIR) + "/smollm2_kv_sample.safetensors", name);
  REQUIRE(t.v.size() == (size_t)2048 * 3 * 64);
  std::vector<float> x(t.v.size());
  for (size_t i = 0; i < t.v.size(); ++i) x[i] = pkt::half_to_float(t.v[i]);
  return x;
}

// ---- synthetic data: fp16-exact values (multiples of 2^-10 below 2 in magnitude plus
// per-channel offsets of multiples of 1/4), with edge tokens: all zero, constant, one
// huge outlier (x / s beyond 2^22: the scalar quantizer), a narrow range far from zero
// (compact zero point out of int16 range: wide fallback) ----

std::vector<float> synth(int tokens, int row, uint64_t seed, bool edges) {
  Rng r{seed};
  std::vector<float> off(row);
  for (float& o : off) o = (float)r.in(-8, 8) / 4.0f;
  std::vector<float> x((size_t)tokens * row);
  for (int t = 0; t < tokens; ++t)
    for (int i = 0; i < row; ++i) x[(size_t)t * row + i] = off[i] + (float)(r.in(-700, 700) + r.in(-700, 700)) / 1024.0f;
  if (edges) {
    for (int i = 0; i < row; ++i) {
      x[(size_t)3 * row + i] = 0.0f;         // all-zero token
      x[(size_t)5 * row + i] = -1.5f;        // constant token
      x[(size_t)9 * row + i] = 1000.0f + (float)(i % 4) / 64.0f;  // narrow, far from zero
    }
    x[(size_t)7 * row + row / 2] = 60000.0f;  // outlier
  }
  return x;
}

}  // namespace

TEST_CASE("encoder golden bytes: real SmolLM2 K/V (3 heads x 64, 32 blocks per layer)") {
  struct Case {
    const char* layer;
    int block_tokens;
    packkv_repack_t repack;
    packkv_scale_granularity_t gran;
    packkv_zs_format_t zs;
    float rk, rv;
    int blocks;
    uint64_t hash;
  };
  const Case cases[] = {
      {"layer.0", 64, PACKKV_REPACK_MEDIAN, PACKKV_SCALE_PER_TOKEN, PACKKV_ZS_COMPACT, 0.035f, 0.07f, 32, 1273323234854005055ull},
      {"layer.15", 64, PACKKV_REPACK_MEDIAN, PACKKV_SCALE_PER_TOKEN, PACKKV_ZS_COMPACT, 0.035f, 0.07f, 32, 3077159813588374764ull},
      {"layer.29", 64, PACKKV_REPACK_MEDIAN, PACKKV_SCALE_PER_TOKEN, PACKKV_ZS_COMPACT, 0.035f, 0.07f, 32, 13932076991705803909ull},
      {"layer.15", 64, PACKKV_REPACK_NONE, PACKKV_SCALE_PER_TOKEN_HEAD, PACKKV_ZS_COMPACT, 0.1f, 0.2f, 32, 1418094479020468373ull},
      {"layer.15", 16, PACKKV_REPACK_MEDIAN, PACKKV_SCALE_PER_TOKEN_HEAD, PACKKV_ZS_WIDE, 0.1f, 0.2f, 128, 5021639692878156582ull},
      {"layer.29", 256, PACKKV_REPACK_MEDIAN, PACKKV_SCALE_PER_TOKEN, PACKKV_ZS_WIDE, 1.0f / 254, 0.5f, 8, 13149616669295826986ull},
      {"layer.0", 64, PACKKV_REPACK_GREEDY, PACKKV_SCALE_PER_TOKEN, PACKKV_ZS_COMPACT, 0.1f, 0.2f, 2, 10970345229660487117ull},
  };
  for (const Case& cs : cases) {
    const std::vector<float> k = read_f16(std::string(cs.layer) + ".k"), v = read_f16(std::string(cs.layer) + ".v");
    const Config c = config(3, 64, cs.block_tokens, cs.repack, cs.gran, cs.zs, cs.rk, cs.rv, PACKKV_DTYPE_F16);
    const uint64_t got = encode_hash(c, k, v, cs.blocks);
    INFO(std::string(cs.layer), " block_tokens ", cs.block_tokens, " repack ", (int)cs.repack, " granularity ", (int)cs.gran,
         " zs ", (int)cs.zs);
    CHECK_MESSAGE(got == cs.hash, "computed ", got, "ull");
  }
}

TEST_CASE("encoder golden bytes: synthetic shapes and edge tokens") {
  struct Case {
    int h, d, block_tokens;
    packkv_repack_t repack;
    packkv_scale_granularity_t gran;
    packkv_zs_format_t zs;
    packkv_dtype_t dtype;
    uint64_t hash;
  };
  const Case cases[] = {
      {1, 32, 64, PACKKV_REPACK_MEDIAN, PACKKV_SCALE_PER_TOKEN, PACKKV_ZS_COMPACT, PACKKV_DTYPE_F16, 6702549177762827482ull},
      {5, 48, 32, PACKKV_REPACK_MEDIAN, PACKKV_SCALE_PER_TOKEN_HEAD, PACKKV_ZS_COMPACT, PACKKV_DTYPE_F16, 11342895594031704846ull},
      {2, 80, 64, PACKKV_REPACK_NONE, PACKKV_SCALE_PER_TOKEN, PACKKV_ZS_COMPACT, PACKKV_DTYPE_F16, 13009531852651988250ull},
      {7, 96, 48, PACKKV_REPACK_MEDIAN, PACKKV_SCALE_PER_TOKEN, PACKKV_ZS_WIDE, PACKKV_DTYPE_F16, 9735773106015224885ull},
      {1, 256, 16, PACKKV_REPACK_MEDIAN, PACKKV_SCALE_PER_TOKEN_HEAD, PACKKV_ZS_COMPACT, PACKKV_DTYPE_F16, 10990248867192986188ull},
      {8, 128, 64, PACKKV_REPACK_MEDIAN, PACKKV_SCALE_PER_TOKEN, PACKKV_ZS_COMPACT, PACKKV_DTYPE_F16, 17673667966220803507ull},
      {3, 112, 64, PACKKV_REPACK_MEDIAN, PACKKV_SCALE_PER_TOKEN, PACKKV_ZS_COMPACT, PACKKV_DTYPE_F32, 3092793989336088844ull},
      {4, 64, 64, PACKKV_REPACK_GREEDY, PACKKV_SCALE_PER_TOKEN_HEAD, PACKKV_ZS_COMPACT, PACKKV_DTYPE_F16, 12648172981527452216ull},
  };
  uint64_t seed = 1;
  for (const Case& cs : cases) {
    const int row = cs.h * cs.d, blocks = 3;
    const Config c = config(cs.h, cs.d, cs.block_tokens, cs.repack, cs.gran, cs.zs, 0.035f, 0.07f, cs.dtype);
    // block 0 plain, blocks 1 and 2 with edge tokens; F32: values off the fp16 grid
    std::vector<float> k = synth(cs.block_tokens * blocks, row, seed++, false), v = synth(cs.block_tokens * blocks, row, seed++, false);
    for (int b = 1; b < blocks; ++b) {
      const std::vector<float> ek = synth(cs.block_tokens, row, seed++, true), ev = synth(cs.block_tokens, row, seed++, true);
      std::copy(ek.begin(), ek.end(), k.begin() + (size_t)b * cs.block_tokens * row);
      std::copy(ev.begin(), ev.end(), v.begin() + (size_t)b * cs.block_tokens * row);
    }
    if (cs.dtype == PACKKV_DTYPE_F32) {
      for (size_t i = 0; i < k.size(); ++i) {
        k[i] *= 1.0f + 1e-6f * (float)(i % 7);
        v[i] *= 1.0f - 1e-6f * (float)(i % 5);
      }
      // a range of 2e-4 at 1000: x / s beyond 2^22 (the scalar quantizer)
      for (int i = 0; i < row; ++i) k[(size_t)(cs.block_tokens + 11) * row + i] = 1000.0f + 1e-4f * (float)(i % 3);
    }
    const uint64_t got = encode_hash(c, k, v, blocks);
    INFO(cs.h, " x ", cs.d, " block_tokens ", cs.block_tokens, " repack ", (int)cs.repack, " granularity ",
         (int)cs.gran, " zs ", (int)cs.zs, " dtype ", (int)cs.dtype);
    CHECK_MESSAGE(got == cs.hash, "computed ", got, "ull");
  }
}
