// Accuracy levers of issue 15: sink tokens (params.sink_tokens) and compact zero points
// and scales (params.zs_format, format/affine.h group_affine_compact, format/shape.h).
// Golden values are worked by hand (docs/PACKKV.md section 5.2).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "api/internal_access.h"
#include "common/dtype.h"
#include "format/affine.h"
#include "format/blob_check.h"
#include "format/shape.h"
#include "helpers.h"

using namespace packkv;

namespace {

std::vector<std::vector<uint8_t>> blobs_of(const packkv_cache_t* c, int seq) {
  const CacheImpl& impl = internal_impl(c);
  std::vector<std::vector<uint8_t>> out;
  for (int64_t b = 0; b < impl.n_blocks(seq); ++b) out.push_back(impl.block_bytes(seq, b));
  return out;
}

uint16_t u16_at(const std::vector<uint8_t>& b, size_t at) {
  uint16_t v;
  std::memcpy(&v, b.data() + at, 2);
  return v;
}

}  // namespace

// ---- compact zero points and scales ----

TEST_CASE("compact scale: bits 30..15 of the fp32 scale, rounded toward zero (hand-worked)") {
  CHECK(fmt::scale16_encode(1.0f) == 0x7F00);  // 0x3F800000 >> 15
  CHECK(fmt::scale16_decode(0x7F00) == 1.0f);
  CHECK(fmt::scale16_encode(0.1f) == 0x7B99);  // 0x3DCCCCCD >> 15
  CHECK(fmt::scale16_decode(0x7B99) == 0.099853515625f);  // 0x3DCC8000
  CHECK(fmt::scale16_encode(0.0f) == 0);
  CHECK(fmt::scale16_decode(0) == 0.0f);
  // every normal scale: decoded <= scale, and > scale * (1 - 2^-8)
  for (float s : {1e-30f, 3.3e-7f, 0.0123f, 0.7f, 1.999f, 12345.678f, 3e38f}) {
    const float d = fmt::scale16_decode(fmt::scale16_encode(s));
    CHECK(d <= s);
    CHECK(d > s * (1.0f - 1.0f / 256.0f));
  }
}

TEST_CASE("compact affine: T6 vectors and the scale rounded before quantizing (hand-worked)") {
  fmt::Affine a;
  // x = [-1, 0, 1, 3], r = 0.25: s = 1 (exact in 16 bits), z = -1, codes 0 1 2 4 (as T6)
  REQUIRE(fmt::group_affine_compact(-1.0f, 3.0f, 0.25f, &a));
  CHECK(a.scale == 1.0f);
  CHECK(a.zero == -1);
  CHECK(fmt::quantize(3.0f, a, 7) == 4u);
  // x = [0, 0.3, 1], r = 0.1: s = 0.1f rounded down to 0.099853515625, z = 0;
  // codes rint(0.3 / s) = rint(3.0044) = 3, rint(1 / s) = rint(10.0147) = 10;
  // x^ = 10 s = 0.99853515625, |1 - x^| = 0.00146 <= r * range / 2 = 0.05.
  REQUIRE(fmt::group_affine_compact(0.0f, 1.0f, 0.1f, &a));
  CHECK(a.scale == 0.099853515625f);
  CHECK(a.zero == 0);
  CHECK(fmt::quantize(0.3f, a, 15) == 3u);
  CHECK(fmt::quantize(1.0f, a, 15) == 10u);
  CHECK(fmt::dequantize(10, a) == 0.99853515625f);
}

TEST_CASE("compact affine: constant groups exact, rejection rules") {
  fmt::Affine a;
  // all-zero: s = z = 0
  REQUIRE(fmt::group_affine_compact(-0.0f, 0.0f, 0.1f, &a));
  CHECK(a.scale == 0.0f);
  CHECK(a.zero == 0);
  // fp16 value 0.2998046875 = 0x3E998000: e = 125, s = 2^(125-127-14) = 2^-16, z = 19648
  REQUIRE(fmt::group_affine_compact(0.2998046875f, 0.2998046875f, 0.1f, &a));
  CHECK(a.scale == std::ldexp(1.0f, -16));
  CHECK(a.zero == 19648);
  CHECK(fmt::quantize(0.2998046875f, a, 15) == 0u);
  CHECK(fmt::dequantize(0, a) == 0.2998046875f);
  REQUIRE(fmt::group_affine_compact(-65504.0f, -65504.0f, 0.1f, &a));  // fp16 max, negative
  CHECK(fmt::dequantize(0, a) == -65504.0f);
  CHECK(fmt::scale16_decode(fmt::scale16_encode(a.scale)) == a.scale);
  // every fp16 and bf16 constant is exact
  for (uint32_t h = 1; h < 0x7C00; h += 7) {
    const float x = half_to_float((uint16_t)h);
    if (std::fabs(x) < 1.2e-38f * 65536.0f) continue;  // s = 2^(e-14) must be a normal fp32
    REQUIRE(fmt::group_affine_compact(x, x, 0.5f, &a));
    CHECK(fmt::dequantize(fmt::quantize(x, a, 3), a) == x);
  }
  // an fp32 constant with more than 15 significant bits: no compact fields
  CHECK_FALSE(fmt::group_affine_compact(0.3f, 0.3f, 0.1f, &a));
  // far from zero against its range: |z| = 1000 / 1e-4 > 32767
  CHECK_FALSE(fmt::group_affine_compact(1000.0f, 1000.001f, 0.1f, &a));
  // at the edge: min / s = -32767 is stored, -32768 is not (s = 1: range 8, r = 1/8)
  REQUIRE(fmt::group_affine_compact(-32767.0f, -32759.0f, 0.125f, &a));
  CHECK(a.zero == -32767);
  CHECK_FALSE(fmt::group_affine_compact(-32768.0f, -32760.0f, 0.125f, &a));
  // r * range below FLT_MIN (fp32 subnormal scale): no compact fields
  CHECK_FALSE(fmt::group_affine_compact(0.0f, 1e-38f, 0.1f, &a));
}

TEST_CASE("compact blobs: field offsets, 4 bytes per token and group, same codes as wide when s is exact") {
  // H = 1, D = 32, N = 16, no repacking: tile_end[2] = 8 bytes, then
  //   compact: k_zero 8, k_scale 8 + 32 = 40, v_zero 72, v_scale 104, tiles 136
  //   wide:    k_zero 8, k_scale 8 + 64 = 72, v_zero 136, v_scale 200, tiles 264
  const fmt::BlockLayout c = fmt::block_layout(1, 16, 1, false, fmt::ZsFormat::kCompact);
  const fmt::BlockLayout w = fmt::block_layout(1, 16, 1, false, fmt::ZsFormat::kWide);
  CHECK(c.k_zero_at == 8);
  CHECK(c.k_scale_at == 40);
  CHECK(c.v_zero_at == 72);
  CHECK(c.v_scale_at == 104);
  CHECK(c.tiles_at == 136);
  CHECK(w.k_scale_at == 72);
  CHECK(w.tiles_at == 264);

  // tokens t = 0..15 of 32 channels: x = t + channel / 8 (range 3.875, r = 0.25 ->
  // s = 0.96875 = 0x3F780000, exact in 16 bits: field 0x7EF0; z = rint(t / 0.96875))
  std::vector<float> k(16 * 32), v(16 * 32);
  for (int t = 0; t < 16; ++t)
    for (int ch = 0; ch < 32; ++ch) k[t * 32 + ch] = v[t * 32 + ch] = (float)t + (float)ch / 8.0f;
  std::vector<uint8_t> blob[2];
  for (int zs = 0; zs < 2; ++zs) {
    packkv_cache_params_t p = pkt::params(1, 32);
    p.block_tokens = 16;
    p.residual_tokens = 0;
    p.repack = PACKKV_REPACK_NONE;
    p.rel_scale_k = p.rel_scale_v = 0.25f;
    p.zs_format = zs == 0 ? PACKKV_ZS_COMPACT : PACKKV_ZS_WIDE;
    p.kv_dtype = PACKKV_DTYPE_F32;
    pkt::Cache cache(p);
    pkt::append1(cache, 0, k, v, 0, 16, 32);
    const auto b = blobs_of(cache, 0);
    REQUIRE(b.size() == 1);
    blob[zs] = b[0];
    const packkv_cache_stats_t st = pkt::stats(cache);
    CHECK(st.k_scale_bytes == 16 * (zs == 0 ? 4 : 8));
    CHECK(st.v_scale_bytes == 16 * (zs == 0 ? 4 : 8));
    const fmt::Shape sh = internal_impl(cache).config().shape;
    CHECK(validate_blob(sh, blob[zs].data(), blob[zs].size()).ok);
  }
  for (int t = 0; t < 16; ++t) {
    const int z = (int)std::nearbyint((double)t / 0.96875);
    int16_t z16;
    std::memcpy(&z16, blob[0].data() + 8 + 2 * t, 2);
    CHECK(z16 == z);
    CHECK(u16_at(blob[0], 40 + 2 * t) == 0x7EF0);
    int32_t z32;
    float s32;
    std::memcpy(&z32, blob[1].data() + 8 + 4 * t, 4);
    std::memcpy(&s32, blob[1].data() + 72 + 4 * t, 4);
    CHECK(z32 == z);
    CHECK(s32 == 0.96875f);
  }
  // identical tiles (same codes): the bytes after the fields agree
  CHECK(std::vector<uint8_t>(blob[0].begin() + 136, blob[0].end()) ==
        std::vector<uint8_t>(blob[1].begin() + 264, blob[1].end()));
}

TEST_CASE("compact blobs: a group far from zero makes its block wide fallback, bound kept") {
  const int H = 2, D = 32;
  const size_t row = H * D;
  std::vector<float> k = pkt::kv_data(96, H, D, 3), v = pkt::kv_data(96, H, D, 4);
  for (size_t i = 0; i < row; ++i) k[40 * row + i] = 3000.0f + 0.25f * (float)(i % 3);  // |z| ~ 1.2e5 at r = 0.1
  packkv_cache_params_t p = pkt::params(H, D);
  p.block_tokens = 32;
  p.residual_tokens = 0;
  p.kv_dtype = PACKKV_DTYPE_F32;
  pkt::Cache c(p);
  pkt::append1(c, 0, k, v, 0, 96, row);
  const auto b = blobs_of(c, 0);
  REQUIRE(b.size() == 3);
  const fmt::Shape sh = internal_impl(c).config().shape;
  REQUIRE(sh.zs == fmt::ZsFormat::kCompact);
  for (int i = 0; i < 3; ++i) {
    CAPTURE(i);
    CHECK(validate_blob(sh, b[i].data(), b[i].size()).ok);
    CHECK(sh.zs_wide(b[i].data()) == (i == 1));  // token 40 is in block 1
    CHECK((u16_at(b[i], sh.layout.k_scale_at) == 0xFFFF) == (i == 1));
  }
  // block 1: compact fields zero but the marker; its wide fields after the tiles
  const fmt::BlobSizes z = sh.sizes(b[1].data());
  CHECK(z.k_scale == 32 * 4 + 32 * 8);
  CHECK(z.total() == (long long)b[1].size());
  const packkv_cache_stats_t st = pkt::stats(c);
  CHECK(st.k_scale_bytes == 3 * 32 * 4 + 32 * 8);
  // every value within r * range / 2 (+ fp32 rounding), the far group included
  const pkt::Decompressed d = pkt::decompress(c, 0, row);
  for (size_t t = 0; t < 96; ++t) {
    double lo = 1e30, hi = -1e30;
    for (size_t i = 0; i < row; ++i) lo = std::min(lo, (double)k[t * row + i]), hi = std::max(hi, (double)k[t * row + i]);
    for (size_t i = 0; i < row; ++i)
      REQUIRE(std::fabs((double)d.k[t * row + i] - k[t * row + i]) <=
              0.1 * (hi - lo) / 2 * (1 + 1e-6) + 2.4e-7 * std::fabs(k[t * row + i]));
  }
  // a corrupted marker is caught: the compact fields then do not match the size
  std::vector<uint8_t> bad = b[1];
  bad[sh.layout.k_scale_at] = 0x00;
  CHECK_FALSE(validate_blob(sh, bad.data(), bad.size()).ok);
}

// ---- sink tokens ----

namespace {

packkv_cache_params_t sink_params(int sinks) {
  packkv_cache_params_t p = pkt::params(2, 32, 2);
  p.block_tokens = 16;
  p.residual_tokens = 8;
  p.sink_tokens = sinks;
  p.kv_dtype = PACKKV_DTYPE_F32;
  return p;
}

}  // namespace

TEST_CASE("sink tokens: exact and first, blocks start after them, any chunking gives the same cache") {
  const int H = 2, D = 32;
  const size_t row = H * D;
  const int T = 75;
  std::vector<float> k = pkt::kv_data(T, H, D, 21), v = pkt::kv_data(T, H, D, 22);
  pkt::Cache all(sink_params(4)), one(sink_params(4)), none(sink_params(0));
  pkt::append1(all, 0, k, v, 0, T, row);
  for (int t = 0; t < T; ++t) pkt::append1(one, 1, k, v, t, 1, row);  // seq 1 of `one`
  // 4 sinks, then blocks of 16 while the window keeps >= 8 + 16: 71 window tokens ->
  // 3 blocks (48), 23 residual
  CHECK(pkt::seq_len(all, 0) == T);
  const packkv_cache_stats_t st = pkt::stats(all);
  CHECK(st.n_blocks == 3);
  CHECK(st.n_compressed_tokens == 48);
  CHECK(st.n_residual_tokens == 4 + 23);  // sink tokens count as uncompressed (residual) tokens
  CHECK(st.residual_bytes == (4 + 23) * (int64_t)row * 4 * 2);  // f32 cache, K and V
  CHECK(st.n_tokens == T);
  CHECK(blobs_of(all, 0) == blobs_of(one, 1));
  // block 0 holds tokens 4..19: the blocks of a cache without sinks over tokens 4.. are equal
  pkt::append1(none, 0, k, v, 4, T - 4, row);
  CHECK(blobs_of(all, 0) == blobs_of(none, 0));
  const pkt::Decompressed da = pkt::decompress(all, 0, row), d1 = pkt::decompress(one, 1, row),
                          dn = pkt::decompress(none, 0, row);
  CHECK(da.k == d1.k);
  CHECK(da.v == d1.v);
  for (size_t i = 0; i < 4 * row; ++i) {  // sink tokens exact (f32 cache)
    REQUIRE(da.k[i] == k[i]);
    REQUIRE(da.v[i] == v[i]);
  }
  for (size_t i = 4 * row; i < T * row; ++i) {
    REQUIRE(da.k[i] == dn.k[i - 4 * row]);
    REQUIRE(da.v[i] == dn.v[i - 4 * row]);
  }
}

TEST_CASE("sink tokens: scores, apply, decode and lse over sinks, blocks and window (float64 reference)") {
  const int H = 2, D = 32, HQ = 4;
  const size_t row = H * D;
  for (int T : {3, 4, 30, 75}) {
    CAPTURE(T);
    std::vector<float> k = pkt::kv_data(T, H, D, 31), v = pkt::kv_data(T, H, D, 32);
    packkv_cache_params_t p = sink_params(4);
    p.kv_dtype = PACKKV_DTYPE_F16;
    pkt::Cache c(p);
    int32_t ids[2] = {0, 1}, ns[2] = {T, 0};
    REQUIRE(packkv_cache_append(c, 2, ids, ns, k.data(), v.data(), PACKKV_DTYPE_F32, nullptr) == PACKKV_OK);
    const pkt::Decompressed d = pkt::decompress(c, 0, row);
    std::vector<float> q = pkt::kv_data(1, HQ, D, 33, 0.5f);
    // references on the decompressed K / V (the kernels must compute exactly that attention)
    const std::vector<double> s_ref = pkt::ref_scores(d.k, T, H, D, q, HQ);
    std::vector<float> sc((size_t)HQ * T);
    REQUIRE(packkv_attn_scores(c, 1, ids, HQ, q.data(), PACKKV_DTYPE_F32, sc.data(), T, nullptr, 0, nullptr) ==
            PACKKV_OK);
    CHECK(pkt::rel_l2(s_ref, sc) < 1e-6);
    // the sink positions: K exact up to fp16 rounding
    for (int j = 0; j < HQ; ++j)
      for (int t = 0; t < std::min(T, 4); ++t) {
        double ref = 0;
        for (int x = 0; x < D; ++x)
          ref += (double)q[j * D + x] * (double)half_to_float(float_to_half(k[(t * H + j / 2) * D + x]));
        CHECK(sc[(size_t)j * T + t] == doctest::Approx(ref).epsilon(1e-6));
      }
    std::vector<double> lse_ref;
    const double scale = 1.0 / std::sqrt((double)D);
    const std::vector<double> pr = pkt::ref_softmax(s_ref, T, HQ, scale, &lse_ref);
    std::vector<float> prf(pr.begin(), pr.end());
    std::vector<float> out((size_t)HQ * D), out2((size_t)HQ * D), lse(HQ);
    REQUIRE(packkv_attn_apply(c, 1, ids, HQ, prf.data(), T, out.data(), nullptr, 0, nullptr) == PACKKV_OK);
    const std::vector<double> o_ref = pkt::ref_apply(d.v, T, H, D, pr, HQ);
    CHECK(pkt::rel_l2(o_ref, out) < 1e-5);
    REQUIRE(packkv_attn_decode(c, 1, ids, HQ, q.data(), PACKKV_DTYPE_F32, (float)scale, out2.data(), lse.data(),
                               nullptr, 0, nullptr) == PACKKV_OK);
    CHECK(pkt::rel_l2(o_ref, out2) < 1e-5);
    for (int j = 0; j < HQ; ++j) CHECK(lse[j] == doctest::Approx(lse_ref[j]).epsilon(1e-5));
  }
}

TEST_CASE("sink tokens: params versions, range, get_params") {
  packkv_cache_params_t p;
  std::memset(&p, 0x5a, sizeof p);
  REQUIRE(packkv_cache_params_init(&p, PACKKV_CACHE_PARAMS_SIZE_V1) == PACKKV_OK);
  CHECK(p.sink_tokens == 0x5a5a5a5a);  // beyond a version-1 struct: untouched
  p.sink_tokens = 9;                    // and ignored by create (version 1 caller)
  p.zs_format = 77;
  p.n_kv_heads = 1;
  p.head_dim = 32;
  packkv_cache_t* c = nullptr;
  REQUIRE(packkv_cache_create(&p, &c) == PACKKV_OK);
  packkv_cache_params_t got;
  REQUIRE(packkv_cache_params_init(&got, sizeof got) == PACKKV_OK);
  got.sink_tokens = -5;
  REQUIRE(packkv_cache_get_params(c, &got) == PACKKV_OK);
  CHECK(got.sink_tokens == 4);  // a version-1 caller gets the later fields' defaults
  CHECK(got.zs_format == PACKKV_ZS_COMPACT);
  packkv_cache_destroy(c);

  packkv_cache_params_t q = pkt::params(1, 32);
  q.sink_tokens = -1;
  CHECK(packkv_cache_create(&q, &c) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(std::strstr(packkv_last_error_message(), "sink_tokens") != nullptr);
  q.sink_tokens = (1 << 16) + 1;
  CHECK(packkv_cache_create(&q, &c) == PACKKV_ERR_INVALID_ARGUMENT);
  q.sink_tokens = 1 << 16;
  q.zs_format = 2;
  CHECK(packkv_cache_create(&q, &c) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(std::strstr(packkv_last_error_message(), "zs_format") != nullptr);
  q.zs_format = PACKKV_ZS_WIDE;
  REQUIRE(packkv_cache_create(&q, &c) == PACKKV_OK);
  REQUIRE(packkv_cache_get_params(c, &got) == PACKKV_OK);
  CHECK(got.sink_tokens == 1 << 16);
  CHECK(got.zs_format == PACKKV_ZS_WIDE);
  packkv_cache_destroy(c);
}

TEST_CASE("sink tokens: a failed append changes nothing, capacity counts sink tokens") {
  const int H = 2, D = 32;
  const size_t row = H * D;
  packkv_cache_params_t p = sink_params(4);
  p.max_tokens_per_seq = 10;
  pkt::Cache c(p);
  std::vector<float> k = pkt::kv_data(12, H, D, 41), v = pkt::kv_data(12, H, D, 42);
  pkt::append1(c, 0, k, v, 0, 3, row);
  std::vector<float> kbad(k);
  kbad[5 * row + 3] = NAN;
  int32_t id = 0, n = 4;
  CHECK(packkv_cache_append(c, 1, &id, &n, kbad.data() + 3 * row, v.data() + 3 * row, PACKKV_DTYPE_F32, nullptr) ==
        PACKKV_ERR_INVALID_ARGUMENT);
  n = 8;
  CHECK(packkv_cache_append(c, 1, &id, &n, k.data() + 3 * row, v.data() + 3 * row, PACKKV_DTYPE_F32, nullptr) ==
        PACKKV_ERR_CAPACITY_EXCEEDED);
  CHECK(pkt::seq_len(c, 0) == 3);
  const pkt::Decompressed d = pkt::decompress(c, 0, row);
  for (size_t i = 0; i < 3 * row; ++i) REQUIRE(d.k[i] == k[i]);
  pkt::append1(c, 0, k, v, 3, 7, row);
  CHECK(pkt::seq_len(c, 0) == 10);
}

// ---- K centering ----

TEST_CASE("K centering: mean of block 0, scores / decode / lse / decompress of plain K, any chunking") {
  const int H = 2, D = 32, HQ = 4;
  const size_t row = H * D;
  const int T = 90;
  std::vector<float> k = pkt::kv_data(T, H, D, 51, 6.0f), v = pkt::kv_data(T, H, D, 52);
  for (float& x : k) x = half_to_float(float_to_half(x));  // the cache's fp16 values
  for (float& x : v) x = half_to_float(float_to_half(x));
  packkv_cache_params_t p = sink_params(1);
  p.kv_dtype = PACKKV_DTYPE_F16;
  p.k_transform = PACKKV_K_TRANSFORM_CENTER;
  pkt::Cache all(p), one(p);
  pkt::append1(all, 0, k, v, 0, T, row);
  for (int t = 0; t < T; ++t) pkt::append1(one, 0, k, v, t, 1, row);
  CHECK(blobs_of(all, 0) == blobs_of(one, 0));
  // 1 sink, blocks of 16 while 8 + 16 remain: 89 -> 5 blocks (tokens 1..80), 9 residual
  const packkv_cache_stats_t st = pkt::stats(all);
  CHECK(st.n_blocks == 5);
  CHECK(st.k_scale_bytes == 5 * 16 * 4 + (int64_t)row * 4);  // compact fields + the fp32 mean
  // mu: float64 mean of tokens 1..16 (block 0), rounded to fp32
  std::vector<float> mu(row);
  for (size_t i = 0; i < row; ++i) {
    double sum = 0;
    for (int t = 1; t <= 16; ++t) sum += k[t * row + i];
    mu[i] = (float)(sum / 16);
  }
  // decompress: plain K, within r * range(k - mu) / 2 of it (+ fp32 rounding of k - mu and of + mu)
  const pkt::Decompressed d = pkt::decompress(all, 0, row);
  for (int t = 1; t <= 80; ++t) {
    std::vector<float> c(row);
    for (size_t i = 0; i < row; ++i) c[i] = k[t * row + i] - mu[i];
    double lo = 1e30, hi = -1e30;
    for (float x : c) lo = std::min(lo, (double)x), hi = std::max(hi, (double)x);
    for (size_t i = 0; i < row; ++i)
      REQUIRE(std::fabs((double)d.k[t * row + i] - k[t * row + i]) <=
              0.1 * (hi - lo) / 2 * (1 + 1e-6) + 4e-7 * (std::fabs(k[t * row + i]) + std::fabs(mu[i])));
  }
  for (size_t i = 0; i < row; ++i) CHECK(d.k[i] == k[i]);  // the sink
  // the codes are those of the centred values: a plain cache fed k - mu has the same blocks
  packkv_cache_params_t pp = sink_params(1);
  pp.kv_dtype = PACKKV_DTYPE_F32;
  pkt::Cache plain(pp);
  std::vector<float> kc(k);
  for (int t = 1; t < T; ++t)
    for (size_t i = 0; i < row; ++i) kc[t * row + i] = k[t * row + i] - mu[i];
  pkt::append1(plain, 0, kc, v, 0, T, row);
  const auto bc = blobs_of(all, 0), bp = blobs_of(plain, 0);
  REQUIRE(bc.size() == bp.size());
  for (size_t b = 0; b < bc.size(); ++b) CHECK(bc[b] == bp[b]);
  // scores of plain q against plain K: float64 on the decompressed K
  std::vector<float> q = pkt::kv_data(1, HQ, D, 53, 0.5f);
  const std::vector<double> s_ref = pkt::ref_scores(d.k, T, H, D, q, HQ);
  std::vector<float> sc((size_t)HQ * T);
  int32_t id = 0;
  REQUIRE(packkv_attn_scores(all, 1, &id, HQ, q.data(), PACKKV_DTYPE_F32, sc.data(), T, nullptr, 0, nullptr) ==
          PACKKV_OK);
  CHECK(pkt::rel_l2(s_ref, sc) < 1e-6);
  std::vector<double> lse_ref;
  const double scale = 1.0 / std::sqrt((double)D);
  const std::vector<double> pr = pkt::ref_softmax(s_ref, T, HQ, scale, &lse_ref);
  const std::vector<double> o_ref = pkt::ref_apply(d.v, T, H, D, pr, HQ);
  std::vector<float> out((size_t)HQ * D), lse(HQ);
  REQUIRE(packkv_attn_decode(all, 1, &id, HQ, q.data(), PACKKV_DTYPE_F32, (float)scale, out.data(), lse.data(),
                             nullptr, 0, nullptr) == PACKKV_OK);
  CHECK(pkt::rel_l2(o_ref, out) < 1e-5);
  for (int j = 0; j < HQ; ++j) CHECK(lse[j] == doctest::Approx(lse_ref[j]).epsilon(1e-5));
}

TEST_CASE("K centering: needs an fp16 cache on the CPU, bad values refused") {
  packkv_cache_params_t p = pkt::params(1, 32);
  packkv_cache_t* c = nullptr;
  p.k_transform = PACKKV_K_TRANSFORM_CENTER;
  p.kv_dtype = PACKKV_DTYPE_F32;
  CHECK(packkv_cache_create(&p, &c) == PACKKV_ERR_NOT_SUPPORTED);
  p.kv_dtype = PACKKV_DTYPE_F16;
  p.device = 0;
  CHECK(packkv_cache_create(&p, &c) == PACKKV_ERR_NOT_SUPPORTED);
  p.device = -1;
  p.k_transform = 2;
  CHECK(packkv_cache_create(&p, &c) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(std::strstr(packkv_last_error_message(), "k_transform") != nullptr);
  CHECK(c == nullptr);
}
