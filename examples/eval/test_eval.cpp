// Tests of packkv-eval: the number formats and baselines by hand, and the tool itself
// on tiny dumps written here from known values, with its JSON checked against numbers
// computed independently (byte counts by formula, errors that must be 0 or follow
// from the fp16 rounding of a KIVI scale, the PackKV error bound).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "baselines.h"
#include "kv_dump.h"
#include "metrics.h"
#include "numeric.h"
#include "safetensors.h"

using namespace packkv_eval;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

/** A value of the tiny dumps as a function of (token or query index, head, channel). */
using Gen = std::function<double(int, int, int)>;

/** Shapes of a tiny dump. */
struct TinyShape {
  int T = 320, Tq = 32, H = 2, D = 32, Hq = 4;
  std::vector<int> layers = {0, 3};
};

Tensor f16_tensor(int a, int b, int c, const Gen& g) {
  Tensor t;
  t.dtype = "F16";
  t.shape = {a, b, c};
  t.bytes.resize((size_t)a * b * c * 2);
  size_t i = 0;
  for (int x = 0; x < a; ++x)
    for (int y = 0; y < b; ++y)
      for (int z = 0; z < c; ++z, ++i) {
        uint16_t h = double_to_half(g(x, y, z));
        t.bytes[2 * i] = (uint8_t)(h & 0xff);
        t.bytes[2 * i + 1] = (uint8_t)(h >> 8);
      }
  return t;
}

/** Writes a dump in the layout of scripts/kv_dump (layer l's values are g(...) + 0 for
 *  every layer; the layers differ only in their number). */
std::string write_dump(const std::string& name, const TinyShape& s, const Gen& k, const Gen& v) {
  fs::path dir = fs::temp_directory_path() / ("packkv_eval_test_" + std::to_string(getpid()));
  fs::create_directories(dir);
  SafeTensors st;
  Gen q = [](int i, int h, int d) { return ((i * 7 + h * 3 + d) % 11 - 5) * 0.125; };
  for (int l : s.layers) {
    const std::string p = "layer." + std::to_string(l) + ".";
    st.tensors[p + "k"] = f16_tensor(s.T, s.H, s.D, k);
    st.tensors[p + "v"] = f16_tensor(s.T, s.H, s.D, v);
    st.tensors[p + "q"] = f16_tensor(s.Tq, s.Hq, s.D, q);
  }
  st.metadata["model"] = "tiny test dump";
  st.metadata["q_positions_start"] = std::to_string(s.T - s.Tq);
  const std::string path = (dir / name).string();
  write_safetensors(path, st);
  return path;
}

/** Runs the packkv-eval binary (path in $PACKKV_EVAL_BIN) and returns (exit code, stdout). */
std::pair<int, std::string> run_tool(const std::string& args) {
  const char* bin = std::getenv("PACKKV_EVAL_BIN");
  REQUIRE_MESSAGE(bin != nullptr, "set PACKKV_EVAL_BIN to the packkv-eval binary");
  std::string cmd = std::string("'") + bin + "' " + args + " 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

// packkv-eval's PackKV defaults follow the library's (packkv.h); the tests state theirs
// first (r_K 0.1, r_V 0.2, residual window 128; a later flag overrides).
json run_json(const std::string& args) {
  auto [rc, out] = run_tool("--rk 0.1 --rv 0.2 --residual 128 " + args + " --json --quiet");
  REQUIRE(rc == 0);
  return json::parse(out);  // throws (fails the test) if not JSON
}

const json& method(const json& j, const std::string& name) {
  for (const auto& m : j.at("methods"))
    if (m.at("method") == name) return m;
  FAIL("no method " << name);
  static json none;
  return none;
}

// Dataset A: every value 0 or 1, half of each token's channels 1. PackKV with r = 1 is
// exact (range 1 -> s = 1, z = 0, q = x), KIVI-b is exact up to its fp16 scale.
double bin_k(int t, int h, int d) { return (t + d + h) % 2; }
double bin_v(int t, int h, int d) { return (t / 2 + d + h) % 2; }

}  // namespace

TEST_CASE("fp8 e4m3 conversion, checked by hand") {
  struct { double x; uint8_t code; double back; } cases[] = {
      {0.0, 0x00, 0.0},          {1.0, 0x38, 1.0},        {0.5, 0x30, 0.5},      {-2.0, 0xC0, -2.0},
      {448.0, 0x7E, 448.0},      {1000.0, 0x7E, 448.0},   // saturates
      {1.0625, 0x38, 1.0},       // halfway 1 / 1.125: ties to even mantissa (0)
      {1.1875, 0x3A, 1.25},      // halfway 1.125 / 1.25: to even mantissa (2)
      {1.2, 0x3A, 1.25},         {17.0, 0x58, 16.0},      // 16 * 1.0625: tie -> 16
      {std::ldexp(1.0, -9), 0x01, std::ldexp(1.0, -9)},  // smallest subnormal
      {std::ldexp(1.0, -10), 0x00, 0.0},                 // half of it: tie -> 0
      {3 * std::ldexp(1.0, -10), 0x02, std::ldexp(1.0, -8)},  // 1.5 units -> 2
      {7.5 * std::ldexp(1.0, -9), 0x08, std::ldexp(1.0, -6)}, // rounds up into the normals
      {240.0, 0x77, 240.0},      {-0.001953125, 0x81, -0.001953125},
  };
  for (const auto& c : cases) {
    CAPTURE(c.x);
    CHECK(double_to_fp8_e4m3(c.x) == c.code);
    CHECK(fp8_e4m3_to_double(c.code) == c.back);
  }
  CHECK(std::isnan(fp8_e4m3_to_double(0x7F)));
  // Every code decodes and re-encodes to itself.
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7F) == 0x7F) continue;
    CAPTURE(c);
    const double v = fp8_e4m3_to_double((uint8_t)c);
    if (v == 0.0) continue;  // -0 encodes as 0x80, +0 as 0x00
    CHECK(double_to_fp8_e4m3(v) == c);
  }
}

TEST_CASE("fp16 rounding, checked by hand") {
  CHECK(double_to_half(1.0 / 3.0) == 0x3555);
  CHECK(half_to_double(0x3555) == 0.333251953125);
  CHECK(round_to_half(1.0 / 15.0) == 0.066650390625);
  CHECK(double_to_half(65504.0) == 0x7BFF);
  CHECK(double_to_half(65520.0) == 0x7C00);  // halfway to 2^16: ties to even -> overflow
  CHECK(double_to_half(std::ldexp(1.0, -24)) == 0x0001);
  CHECK(double_to_half(std::ldexp(1.0, -25)) == 0x0000);
  CHECK(double_to_half(3 * std::ldexp(1.0, -25)) == 0x0002);
  CHECK(double_to_half(-1.5) == 0xBE00);
  for (uint32_t h = 0; h < 0x7C00; ++h) CHECK(double_to_half(half_to_double((uint16_t)h)) == h);
}

TEST_CASE("flush rule and KIVI byte formulas") {
  CHECK(flushed_tokens(191, 64, 128) == 0);  // PACKKV.md T7
  CHECK(flushed_tokens(192, 64, 128) == 64);
  CHECK(flushed_tokens(1000, 64, 128) == 832);
  CHECK(flushed_tokens(159, 32, 128) == 0);
  CHECK(flushed_tokens(160, 32, 128) == 32);
  CHECK(flushed_tokens(10, 32, 0) == 0);
  // T = 320, 2 heads x 32: 192 tokens quantized, 128 in the window.
  ByteCount k2 = kivi_bytes(320, 2, 32, 2, true);
  CHECK(k2.fp16 == 40960);
  CHECK(k2.payload == 192 * 64 * 2 / 8);
  CHECK(k2.metadata == 4 * 6 * 64);  // 6 token groups x 64 channels
  CHECK(k2.residual == 128 * 64 * 2);
  ByteCount v4 = kivi_bytes(320, 2, 32, 4, false);
  CHECK(v4.payload == 192 * 64 / 2);
  CHECK(v4.metadata == 4 * 192 * 2);  // one group per token and head
  ByteCount v3 = kivi_bytes(2048, 3, 48, 3, false);  // head_dim 48: groups of 32 + 16
  CHECK(v3.metadata == 4 * 1920 * 3 * 2);
  CHECK(v3.payload == (1920LL * 144 * 3 + 7) / 8);
  ByteCount f = fp8_bytes(320, 2, 32);
  CHECK(f.all_in() == 320 * 64 + 8);
}

TEST_CASE("KIVI group quantization") {
  double x[4] = {0, 1, 2, 3}, out[4];
  kivi_quant_group(x, 4, 1, 2, out);
  for (int i = 0; i < 4; ++i) CHECK(out[i] == x[i]);
  double y[3] = {-1, 0.5, 2}, o[3];
  kivi_quant_group(y, 3, 1, 1, o);  // scale 3: (0.5 + 1) / 3 = 0.5 ties to even -> code 0
  CHECK(o[0] == -1);
  CHECK(o[1] == -1);
  CHECK(o[2] == 2);
  double c[2] = {0.7, 0.7}, oc[2];
  kivi_quant_group(c, 2, 1, 2, oc);  // constant group: zero = fp16(0.7), scale 0
  CHECK(oc[0] == round_to_half(0.7));
}

TEST_CASE("equal-error interpolation") {
  std::vector<CurvePoint> curve = {{2.0, 0.01}, {4.0, 0.04}, {8.0, 0.2}};
  auto r = ratio_at_error(curve, 0.02);
  REQUIRE(r);
  CHECK(*r == doctest::Approx(std::sqrt(8.0)));  // halfway in log error -> halfway in log ratio
  CHECK(*ratio_at_error(curve, 0.04) == doctest::Approx(4.0));
  CHECK_FALSE(ratio_at_error(curve, 0.005));
  CHECK_FALSE(ratio_at_error(curve, 0.3));
}

TEST_CASE("safetensors round trip") {
  TinyShape s;
  s.T = 40;
  s.Tq = 8;
  s.layers = {5};
  const std::string path = write_dump("rt.safetensors", s, bin_k, bin_v);
  KvDump d = load_kv_dump(path);
  CHECK(d.n_tokens == 40);
  CHECK(d.n_queries == 8);
  CHECK(d.n_kv_heads == 2);
  CHECK(d.head_dim == 32);
  CHECK(d.n_q_heads == 4);
  REQUIRE(d.layers.size() == 1);
  CHECK(d.layers[0].index == 5);
  CHECK(d.layers[0].kd[1 * 64 + 0 * 32 + 0] == 1.0);  // t=1, h=0, d=0
  CHECK(d.layers[0].qd[0] == -5 * 0.125);
  CHECK_THROWS(load_kv_dump(path, {6}));
  CHECK_THROWS(load_kv_dump(path + ".missing"));
}

TEST_CASE("packkv-eval on a tiny 0/1 dump: bytes by formula, exact and fp16-scale errors") {
  TinyShape s;
  const std::string path = write_dump("bin.safetensors", s, bin_k, bin_v);
  json j = run_json("--data '" + path + "' --sinks 0 --rk 1 --rv 1 --repack none");
  CHECK(j.at("data").at("n_tokens") == 320);
  CHECK(j.at("data").at("layers") == json::array({0, 3}));
  REQUIRE(j.at("methods").size() == 4);
  const int64_t fp16 = 320 * 64 * 2;
  for (const auto& m : j.at("methods")) {
    CAPTURE(m.at("method"));
    REQUIRE(m.at("layers").size() == 2);
    for (const char* kv : {"k", "v"}) {
      CHECK(m.at("layers")[0].at(kv).at("bytes").at("fp16") == fp16);
      CHECK(m.at("total").at(kv).at("bytes").at("fp16") == 2 * fp16);
      const json& b = m.at("total").at(kv).at("bytes");
      CHECK(b.at("all_in") == b.at("payload").get<int64_t>() + b.at("metadata").get<int64_t>() +
                                  b.at("residual").get<int64_t>());
      CHECK(b.at("ratio").get<double>() == doctest::Approx((double)fp16 * 2 / b.at("all_in").get<double>()));
    }
  }
  // fp8: one byte per value + 2 fp32 scales; 0/1 scaled by 1/448 are exact up to the
  // fp32 rounding of the scale.
  const json& f8 = method(j, "fp8-e4m3");
  CHECK(f8.at("layers")[0].at("k").at("bytes").at("all_in") == 320 * 64 + 8);
  CHECK(f8.at("total").at("k").at("k_err").get<double>() < 1e-6);
  CHECK(f8.at("total").at("kv").at("out_err").get<double>() < 1e-6);
  // KIVI-b: 192 tokens quantized (6 groups of 32), 128 in the fp16 window. Ones are
  // reconstructed as (2^b - 1) * fp16(1 / (2^b - 1)) = 0.999755859375 for b = 2 and 4,
  // zeros exactly; half of every token's values are ones -> err = delta * sqrt(192/320).
  const double kivi_err = (1.0 - 0.999755859375) * std::sqrt(192.0 / 320.0);
  for (int b : {2, 4}) {
    const json& m = method(j, "kivi-" + std::to_string(b));
    CAPTURE(b);
    const json& kb = m.at("layers")[1].at("k").at("bytes");
    CHECK(kb.at("payload") == 192 * 64 * b / 8);
    CHECK(kb.at("metadata") == 4 * 6 * 64);
    CHECK(kb.at("residual") == 128 * 64 * 2);
    CHECK(m.at("layers")[1].at("v").at("bytes").at("metadata") == 4 * 192 * 2);
    CHECK(m.at("total").at("k").at("k_err").get<double>() == doctest::Approx(kivi_err).epsilon(1e-9));
    CHECK(m.at("total").at("v").at("v_err").get<double>() == doctest::Approx(kivi_err).epsilon(1e-9));
    CHECK(m.at("total").at("k").at("score_err").get<double>() > 0.0);
    CHECK(m.at("total").at("kv").at("out_err").get<double>() < 1e-3);
  }
  // PackKV, r = 1 (b = 2, e = 2), no repacking: exact. 3 blocks of 64 tokens; per
  // block and head 4 rounds x (8 B mins + 8 B lens + 32 packs x 2 B, L = 1) = 320 B;
  // one int16 zero + 16-bit scale per token and tensor (compact fields, the default).
  const json& pk = method(j, "packkv");
  CHECK(pk.at("params").at("bits_k") == 2);
  const json& cs = pk.at("layers")[0].at("cache_stats");
  CHECK(cs.at("n_compressed_tokens") == 192);
  CHECK(cs.at("n_residual_tokens") == 128);
  CHECK(cs.at("n_blocks") == 3);
  CHECK(cs.at("k_tile_bytes") == 3 * 2 * 320);
  CHECK(cs.at("v_tile_bytes") == 3 * 2 * 320);
  CHECK(cs.at("k_scale_bytes") == 192 * 4);  // compact: int16 zero + 16-bit scale
  CHECK(cs.at("perm_bytes") == 0);
  CHECK(cs.at("residual_bytes") == 2 * 128 * 64 * 2);
  CHECK(pk.at("layers")[0].at("k").at("bytes").at("payload") == 1920);
  CHECK(pk.at("layers")[0].at("k").at("bytes").at("residual") == 128 * 64 * 2);
  CHECK(pk.at("layers")[0].at("k").at("bytes").at("compressed_fp16") == 192 * 64 * 2);
  CHECK(pk.at("total").at("k").at("k_err") == 0.0);
  CHECK(pk.at("total").at("v").at("v_err") == 0.0);
  CHECK(pk.at("total").at("k").at("score_err").get<double>() < 1e-6);
  CHECK(pk.at("total").at("k").at("out_err_k_only").get<double>() < 1e-6);
  CHECK(pk.at("total").at("v").at("out_err_v_only").get<double>() < 1e-6);
  CHECK(pk.at("total").at("kv").at("out_err").get<double>() < 1e-6);
}

TEST_CASE("packkv-eval with sink tokens: every method keeps them exact in fp16, blocks and groups after them") {
  TinyShape s;
  const std::string path = write_dump("bin.safetensors", s, bin_k, bin_v);
  json j = run_json("--data '" + path + "' --rk 1 --rv 1 --repack none --sinks 4");
  for (const auto& m : j.at("methods")) CHECK(m.at("params").at("sink_tokens") == 4);
  // fp8: 316 tokens in fp8 + 2 fp32 scales, 4 tokens in fp16
  CHECK(method(j, "fp8-e4m3").at("layers")[0].at("k").at("bytes").at("all_in") == 316 * 64 + 8 + 4 * 64 * 2);
  // KIVI-2: groups of 32 after the 4 sinks: 32 * floor((316 - 128) / 32) = 160 quantized,
  // 4 + 156 tokens in fp16
  const json& kb = method(j, "kivi-2").at("layers")[0].at("k").at("bytes");
  CHECK(kb.at("payload") == 160 * 64 * 2 / 8);
  CHECK(kb.at("residual") == 160 * 64 * 2);
  // PackKV: 4 sink tokens, then blocks of 64 while 128 + 64 remain: 2 blocks, 188 residual
  const json& cs = method(j, "packkv").at("layers")[0].at("cache_stats");
  CHECK(cs.at("n_compressed_tokens") == 128);
  CHECK(cs.at("n_residual_tokens") == 4 + 188);
  CHECK(cs.at("residual_bytes") == 2 * 192 * 64 * 2);
  // --levers: five rows, compact z/s halves the metadata of v1's wide fields
  json l = run_json("--data '" + path + "' --rk 1 --rv 1 --repack none --levers --sweep-r 0.5,1").at("levers");
  REQUIRE(l.size() == 7);
  CHECK(l[6].at("method").at("params").at("k_transform") == "center");
  CHECK(l[0].at("lever") == "v1: wide z/s, no sinks");
  CHECK(l[0].at("method").at("params").at("zs_format") == "wide");
  CHECK(l[3].at("method").at("params").at("sink_tokens") == 4);
  const json& k0 = l[0].at("method").at("layers")[0].at("cache_stats");
  const json& k1 = l[1].at("method").at("layers")[0].at("cache_stats");
  CHECK(k0.at("k_scale_bytes") == 192 * 8);
  CHECK(k1.at("k_scale_bytes") == 192 * 4);
  CHECK(l[3].at("sweep").at("k_equal_error").size() == 9);
}

TEST_CASE("packkv-eval on constant tokens: PackKV and KIVI's per-token V are exact") {
  TinyShape s;
  Gen c = [](int t, int, int) { return ((t % 7) - 3) * 0.25; };
  const std::string path = write_dump("const.safetensors", s, c, c);
  for (const char* gran : {"token", "token-head"}) {
    CAPTURE(gran);
    json j = run_json("--data '" + path + "' --sinks 0 --granularity " + gran);
    const json& pk = method(j, "packkv").at("total");
    CHECK(pk.at("k").at("k_err") == 0.0);
    CHECK(pk.at("v").at("v_err") == 0.0);
    CHECK(pk.at("k").at("score_err").get<double>() < 1e-6);
    CHECK(pk.at("kv").at("out_err").get<double>() < 1e-6);
    const json& k2 = method(j, "kivi-2").at("total");
    CHECK(k2.at("v").at("v_err") == 0.0);  // per-token groups of a constant token
    CHECK(k2.at("v").at("out_err_v_only").get<double>() < 1e-12);
    CHECK(k2.at("k").at("k_err").get<double>() > 0.01);  // 7 levels in 4 codes per channel
  }
}

TEST_CASE("packkv-eval on pseudo-random data: error bounds, orderings, sweep") {
  TinyShape s;
  s.layers = {1};
  auto lcg = [](int t, int h, int d, int salt) {
    uint32_t x = (uint32_t)(t * 7919 + h * 104729 + d * 1299709 + salt * 15485863);
    x = x * 1103515245u + 12345u;
    x = x * 1103515245u + 12345u;
    return (double)((x >> 16) & 0x7fff) / 32768.0;  // [0, 1)
  };
  Gen k = [&](int t, int h, int d) { return (lcg(t, h, d, 1) * 4 - 2) + (d % 5 == 0 ? 6.0 : 0.0); };
  Gen v = [&](int t, int h, int d) { return lcg(t, h, d, 2) * 2 - 1; };
  const std::string path = write_dump("rand.safetensors", s, k, v);
  const double rk = 0.1, rv = 0.2;
  json j = run_json("--data '" + path + "' --sinks 0 --rk 0.1 --rv 0.2 --repack greedy --block 32 --residual 64");

  // PackKV bound: |x - x^| <= r * range_t / 2 per value of a compressed token (per-token
  // scale over both heads), so K err <= sqrt(sum_t 64 (r range_t / 2)^2 / sum x^2).
  KvDump d = load_kv_dump(path);
  const DumpLayer& L = d.layers[0];
  const json& pk = method(j, "packkv").at("total");
  const int64_t nc = pk.at("cache_stats").at("n_compressed_tokens");
  CHECK(nc == flushed_tokens(320, 32, 64));
  for (int kv = 0; kv < 2; ++kv) {
    const std::vector<double>& x = kv == 0 ? L.kd : L.vd;
    const double r = kv == 0 ? rk : rv;
    double err2 = 0, ref2 = 0;
    for (int t = 0; t < 320; ++t) {
      double lo = 1e30, hi = -1e30;
      for (int i = 0; i < 64; ++i) {
        lo = std::min(lo, x[t * 64 + i]);
        hi = std::max(hi, x[t * 64 + i]);
        ref2 += x[t * 64 + i] * x[t * 64 + i];
      }
      if (t < nc) err2 += 64 * std::pow(r * (hi - lo) / 2, 2);
    }
    const double bound = std::sqrt(err2 / ref2) * (1 + 1e-4);
    const double got = pk.at(kv == 0 ? "k" : "v").at(kv == 0 ? "k_err" : "v_err");
    CAPTURE(kv);
    CHECK(got > 0.0);
    CHECK(got <= bound);
    CHECK(got > bound / 4);  // uniform rounding error is ~bound/sqrt(3)
  }
  CHECK(pk.at("k").at("bytes").at("metadata").get<int64_t>() >= nc * 4);  // int16 zero + 16-bit scale per token
  // fp8 e4m3 keeps 3 mantissa bits: relative error <= 2^-4 per value.
  CHECK(method(j, "fp8-e4m3").at("total").at("k").at("k_err").get<double>() < 0.0625);
  CHECK(method(j, "kivi-4").at("total").at("k").at("k_err").get<double>() <
        method(j, "kivi-2").at("total").at("k").at("k_err").get<double>());

  json sw = run_json("--data '" + path + "' --sinks 0 --sweep --sweep-r 0.02,0.1,0.3,1").at("sweep");
  CHECK(sw.at("packkv").size() == 4);
  REQUIRE(sw.at("kivi").size() == 8);
  CHECK(sw.at("kivi")[0].at("total").at("k").at("out_err_k_only").get<double>() >
        sw.at("kivi")[7].at("total").at("k").at("out_err_k_only").get<double>());
  CHECK(sw.at("packkv")[0].at("total").at("v").at("out_err_v_only").get<double>() <
        sw.at("packkv")[3].at("total").at("v").at("out_err_v_only").get<double>());
  for (const char* key : {"k_equal_error", "v_equal_error"}) {
    REQUIRE(sw.at(key).size() == 9);
    for (const auto& m : sw.at(key))
      if (!m.at("gain").is_null())
        CHECK(m.at("gain").get<double>() ==
              doctest::Approx(m.at("packkv_ratio").get<double>() / m.at("baseline_ratio").get<double>()));
  }
}

TEST_CASE("packkv-eval rejects bad input") {
  CHECK(run_tool("--data /nonexistent/x.safetensors").first == 1);
  CHECK(run_tool("--bogus").first == 2);
  CHECK(run_tool("--rk").first == 2);
  CHECK(run_tool("--repack sideways").first == 2);
  auto [rc, out] = run_tool("--help");
  CHECK(rc == 0);
  CHECK(out.find("--sweep") != std::string::npos);
}
