// Attention on the compressed cache (PACKKV.md section 6; golden vectors T8, T9) against
// float64 references computed from the dequantized cache.
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "api/config.h"
#include "codec/bitpack.h"
#include "cpu/block_attention.h"
#include "helpers.h"
#include "format/shape.h"

using namespace packkv;

namespace {
// A hand-built blob: one KV head, every K code = kcode, every V code = vcode, zero
// points and scales as given (tiles made with encode_tile, header per format/shape.h).
std::vector<uint8_t> handmade_blob(const Config& c, uint8_t kcode, uint8_t vcode, int32_t z, float s) {
  const int n = c.shape.block_tokens, d = c.shape.head_dim;
  const fmt::BlockLayout l = fmt::block_layout(1, n, 1, false);
  std::vector<uint8_t> blob(l.tiles_at, 0);
  for (int j = 0; j < n; ++j) {
    std::memcpy(&blob[l.k_zero_at + 4 * j], &z, 4);
    std::memcpy(&blob[l.k_scale_at + 4 * j], &s, 4);
    std::memcpy(&blob[l.v_zero_at + 4 * j], &z, 4);
    std::memcpy(&blob[l.v_scale_at + 4 * j], &s, 4);
  }
  std::vector<uint8_t> kc((size_t)n * d, kcode), vc((size_t)n * d, vcode);
  encode_tile(kc.data(), d, n, d, c.shape.bits_k, &blob);
  const uint32_t kend = (uint32_t)(blob.size() - l.tiles_at);
  encode_tile(vc.data(), d, n, d, c.shape.bits_v, &blob);
  const uint32_t ends[2] = {kend, (uint32_t)(blob.size() - l.tiles_at)};
  std::memcpy(blob.data(), ends, 8);
  return blob;
}
Config one_head(int d) {
  Config c;
  c.repack = PACKKV_REPACK_NONE;
  c.shape = fmt::make_shape(1, d, 64, 1, c.shape.bits_k, c.shape.bits_v, false);
  return c;
}
}  // namespace

TEST_CASE("T8: q = 1, k_int = 1, z = 2, s = 0.5 gives score 192 for head_dim 128") {
  const Config c = one_head(128);
  const std::vector<uint8_t> blob = handmade_blob(c, 1, 0, 2, 0.5f);
  std::vector<float> q(128, 1.0f), out(64, 0.0f);
  AttnScratch scratch;
  block_scores(c.shape, blob.data(), 0, q.data(), 1, out.data(), 64, &scratch);
  for (float x : out) CHECK(x == 192.0f);
}

TEST_CASE("T9: uniform p, v_int = c, per-token z and constant s give s * (c + z)") {
  const Config c = one_head(64);
  const std::vector<uint8_t> blob = handmade_blob(c, 0, 5, -3, 0.25f);
  std::vector<float> p(64, 1.0f / 64.0f);
  std::vector<double> out(64, 0.0);
  AttnScratch scratch;
  block_apply(c.shape, blob.data(), 0, p.data(), 1, 64, out.data(), &scratch);
  for (double x : out) CHECK(x == doctest::Approx(0.25 * (5 - 3)).epsilon(1e-7));
}

namespace {
struct Shape {
  int hkv, d, group, n_seqs;
  packkv_scale_granularity_t gran;
  packkv_repack_t repack;
  packkv_dtype_t q_dtype;
};

void check_attention(const Shape& sh) {
  packkv_cache_params_t p = pkt::params(sh.hkv, sh.d, sh.n_seqs + 1);
  p.scale_granularity = sh.gran;
  p.repack = sh.repack;
  pkt::Cache c(p);
  const size_t row = (size_t)sh.hkv * sh.d;
  const int hq = sh.hkv * sh.group;
  std::vector<int32_t> ids;
  std::vector<size_t> lens;
  for (int i = 0; i < sh.n_seqs; ++i) {
    const size_t n = 37 + 251 * (size_t)i + (size_t)(sh.d % 7) * 13;  // different lengths, some < residual
    auto k = pkt::kv_data(n, sh.hkv, sh.d, 1000 + i), v = pkt::kv_data(n, sh.hkv, sh.d, 2000 + i);
    const int seq = sh.n_seqs - i;  // ids not in order
    pkt::append1(c, seq, k, v, 0, (int)n, row);
    ids.push_back(seq);
    lens.push_back(n);
  }
  size_t longest = 0;
  for (size_t n : lens) longest = std::max(longest, n);
  auto qf = pkt::kv_data((size_t)sh.n_seqs, hq, sh.d, 77, 0.5f);
  std::vector<uint16_t> q16(qf.size());
  const void* q = qf.data();
  if (sh.q_dtype != PACKKV_DTYPE_F32) {  // queries exactly representable in the 16-bit dtype
    for (size_t i = 0; i < qf.size(); ++i) {
      uint32_t u;
      std::memcpy(&u, &qf[i], 4);
      u &= 0xffff0000u;  // truncate to bf16 precision (only BF16 queries take this path)
      std::memcpy(&qf[i], &u, 4);
      q16[i] = (uint16_t)(u >> 16);
    }
    q = q16.data();
  }
  const size_t ld = longest + 3;
  std::vector<float> scores((size_t)sh.n_seqs * hq * ld, -12345.0f), probs((size_t)sh.n_seqs * hq * ld, 0.0f);
  std::vector<float> out_apply((size_t)sh.n_seqs * hq * sh.d), out_dec(out_apply.size()), lse((size_t)sh.n_seqs * hq);
  REQUIRE(packkv_attn_scores(c, sh.n_seqs, ids.data(), hq, q, sh.q_dtype, scores.data(), (int64_t)ld, nullptr, 0, nullptr) == PACKKV_OK);
  const float scale = 1.0f / std::sqrt((float)sh.d);
  std::vector<std::vector<double>> ref_p(sh.n_seqs), ref_lse(sh.n_seqs);
  for (int i = 0; i < sh.n_seqs; ++i) {
    const size_t n = lens[i];
    const pkt::Decompressed dq = pkt::decompress(c, ids[i], row);
    std::vector<float> qi(qf.begin() + (size_t)i * hq * sh.d, qf.begin() + (size_t)(i + 1) * hq * sh.d);
    const std::vector<double> rs = pkt::ref_scores(dq.k, n, sh.hkv, sh.d, qi, hq);
    std::vector<float> got((size_t)hq * n);
    for (int j = 0; j < hq; ++j) {
      for (size_t t = 0; t < n; ++t) got[(size_t)j * n + t] = scores[((size_t)i * hq + j) * ld + t];
      for (size_t t = n; t < ld; ++t) CHECK(scores[((size_t)i * hq + j) * ld + t] == -12345.0f);  // untouched
    }
    CHECK(pkt::rel_l2(rs, got) <= 1e-5);
    ref_p[i] = pkt::ref_softmax(rs, n, hq, scale, &ref_lse[i]);
    for (int j = 0; j < hq; ++j)
      for (size_t t = 0; t < n; ++t) probs[((size_t)i * hq + j) * ld + t] = (float)ref_p[i][(size_t)j * n + t];
  }
  REQUIRE(packkv_attn_apply(c, sh.n_seqs, ids.data(), hq, probs.data(), (int64_t)ld, out_apply.data(), nullptr, 0, nullptr) == PACKKV_OK);
  REQUIRE(packkv_attn_decode(c, sh.n_seqs, ids.data(), hq, q, sh.q_dtype, scale, out_dec.data(), lse.data(), nullptr, 0, nullptr) == PACKKV_OK);
  for (int i = 0; i < sh.n_seqs; ++i) {
    const size_t n = lens[i];
    const pkt::Decompressed dq = pkt::decompress(c, ids[i], row);
    std::vector<double> pf((size_t)hq * n);
    for (int j = 0; j < hq; ++j)
      for (size_t t = 0; t < n; ++t) pf[(size_t)j * n + t] = probs[((size_t)i * hq + j) * ld + t];
    const std::vector<double> ra = pkt::ref_apply(dq.v, n, sh.hkv, sh.d, pf, hq);
    const std::vector<double> rd = pkt::ref_apply(dq.v, n, sh.hkv, sh.d, ref_p[i], hq);
    std::vector<float> ga(out_apply.begin() + (size_t)i * hq * sh.d, out_apply.begin() + (size_t)(i + 1) * hq * sh.d);
    std::vector<float> gd(out_dec.begin() + (size_t)i * hq * sh.d, out_dec.begin() + (size_t)(i + 1) * hq * sh.d);
    CHECK(pkt::rel_l2(ra, ga) <= 1e-5);
    CHECK(pkt::rel_l2(rd, gd) <= 1e-5);
    for (int j = 0; j < hq; ++j) CHECK(lse[(size_t)i * hq + j] == doctest::Approx(ref_lse[i][j]).epsilon(1e-6));
  }
}
}  // namespace

TEST_CASE("attention vs float64 reference: head_dim 32..256, GQA, batches, granularity, repacking") {
  const Shape shapes[] = {
      {1, 32, 1, 1, PACKKV_SCALE_PER_TOKEN, PACKKV_REPACK_NONE, PACKKV_DTYPE_F32},
      {3, 64, 3, 3, PACKKV_SCALE_PER_TOKEN, PACKKV_REPACK_MEDIAN, PACKKV_DTYPE_F32},  // SmolLM2 shape
      {2, 80, 4, 2, PACKKV_SCALE_PER_TOKEN_HEAD, PACKKV_REPACK_MEDIAN, PACKKV_DTYPE_BF16},
      {2, 96, 2, 2, PACKKV_SCALE_PER_TOKEN, PACKKV_REPACK_GREEDY, PACKKV_DTYPE_F32},
      {4, 128, 2, 2, PACKKV_SCALE_PER_TOKEN, PACKKV_REPACK_MEDIAN, PACKKV_DTYPE_F32},
      {1, 256, 8, 1, PACKKV_SCALE_PER_TOKEN_HEAD, PACKKV_REPACK_NONE, PACKKV_DTYPE_F32},
  };
  for (const Shape& sh : shapes) {
    CAPTURE(sh.d);
    CAPTURE(sh.hkv);
    CAPTURE(sh.group);
    check_attention(sh);
  }
}

TEST_CASE("fp16 queries give the same result as the same values in fp32") {
  packkv_cache_params_t p = pkt::params(2, 64);
  pkt::Cache c(p);
  auto k = pkt::kv_data(300, 2, 64, 5), v = pkt::kv_data(300, 2, 64, 6);
  pkt::append1(c, 0, k, v, 0, 300, 128);
  std::vector<float> qf(2 * 64);
  std::vector<uint16_t> qh(qf.size());
  for (size_t i = 0; i < qf.size(); ++i) {
    qf[i] = (float)((int)i % 17 - 8) * 0.125f;  // exact in fp16
    qh[i] = (uint16_t)0;
  }
  // build fp16 bits by hand for these multiples of 1/8 via the library-independent formula
  for (size_t i = 0; i < qf.size(); ++i) {
    const float x = qf[i];
    if (x == 0.0f) continue;
    const float a = std::fabs(x);
    int e = (int)std::floor(std::log2(a));
    const int man = (int)std::lround((a / std::ldexp(1.0f, e) - 1.0f) * 1024.0f);
    qh[i] = (uint16_t)((x < 0 ? 0x8000 : 0) | ((e + 15) << 10) | man);
  }
  int32_t id = 0;
  std::vector<float> o32(2 * 64), o16(2 * 64);
  REQUIRE(packkv_attn_decode(c, 1, &id, 2, qf.data(), PACKKV_DTYPE_F32, 0.125f, o32.data(), nullptr, nullptr, 0, nullptr) == PACKKV_OK);
  REQUIRE(packkv_attn_decode(c, 1, &id, 2, qh.data(), PACKKV_DTYPE_F16, 0.125f, o16.data(), nullptr, nullptr, 0, nullptr) == PACKKV_OK);
  CHECK(o32 == o16);
}

TEST_CASE("decode on an empty sequence gives zeros and lse = -inf") {
  pkt::Cache c(pkt::params(1, 32, 2));
  std::vector<float> q(32, 1.0f), out(32, 5.0f);
  float lse = 0;
  int32_t id = 1;
  REQUIRE(packkv_attn_decode(c, 1, &id, 1, q.data(), PACKKV_DTYPE_F32, 1.0f, out.data(), &lse, nullptr, 0, nullptr) == PACKKV_OK);
  for (float x : out) CHECK(x == 0.0f);
  CHECK(std::isinf(lse));
  CHECK(lse < 0);
}

TEST_CASE("scores and apply on empty sequences take ld 0 (and NULL scores / probs): nothing written, zeros") {
  pkt::Cache c(pkt::params(1, 32, 2));
  std::vector<float> q(2 * 32, 1.0f), out(2 * 32, 5.0f), probs(2, 7.0f), scores(2, 9.0f);
  const int32_t ids[2] = {1, 0};
  REQUIRE(packkv_attn_apply(c, 2, ids, 1, probs.data(), 0, out.data(), nullptr, 0, nullptr) == PACKKV_OK);
  for (float x : out) CHECK(x == 0.0f);
  out.assign(out.size(), 5.0f);
  REQUIRE(packkv_attn_apply(c, 2, ids, 1, nullptr, 0, out.data(), nullptr, 0, nullptr) == PACKKV_OK);
  for (float x : out) CHECK(x == 0.0f);
  REQUIRE(packkv_attn_scores(c, 2, ids, 1, q.data(), PACKKV_DTYPE_F32, scores.data(), 0, nullptr, 0, nullptr) ==
          PACKKV_OK);
  CHECK(scores == std::vector<float>(2, 9.0f));
  REQUIRE(packkv_attn_scores(c, 2, ids, 1, q.data(), PACKKV_DTYPE_F32, nullptr, 0, nullptr, 0, nullptr) == PACKKV_OK);
  // once a sequence holds a token, ld 0 and NULL are refused
  auto k = pkt::kv_data(1, 1, 32, 1), v = pkt::kv_data(1, 1, 32, 2);
  pkt::append1(c, 0, k, v, 0, 1, 32);
  CHECK(packkv_attn_apply(c, 2, ids, 1, probs.data(), 0, out.data(), nullptr, 0, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_attn_apply(c, 2, ids, 1, nullptr, 1, out.data(), nullptr, 0, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_attn_scores(c, 2, ids, 1, q.data(), PACKKV_DTYPE_F32, nullptr, 1, nullptr, 0, nullptr) ==
        PACKKV_ERR_INVALID_ARGUMENT);
}

TEST_CASE("compressed attention is close to attention on the original data") {
  // The end-to-end accuracy at the default r_K = 0.1, r_V = 0.2 on smooth data.
  const int H = 2, D = 64;
  const size_t n = 800, row = H * D;
  pkt::Cache c(pkt::params(H, D));
  auto k = pkt::kv_data(n, H, D, 41), v = pkt::kv_data(n, H, D, 42);
  pkt::append1(c, 0, k, v, 0, (int)n, row);
  auto q = pkt::kv_data(1, 2 * H, D, 43, 0.5f);
  std::vector<float> out(2 * H * D);
  int32_t id = 0;
  REQUIRE(packkv_attn_decode(c, 1, &id, 2 * H, q.data(), PACKKV_DTYPE_F32, 0.125f, out.data(), nullptr, nullptr, 0, nullptr) == PACKKV_OK);
  const auto s = pkt::ref_scores(k, n, H, D, q, 2 * H);
  const auto ref = pkt::ref_apply(v, n, H, D, pkt::ref_softmax(s, n, 2 * H, 0.125), 2 * H);
  const double err = pkt::rel_l2(ref, out);
  CHECK(err < 0.1);
  CHECK(err > 1e-4);  // it is lossy: compressed tokens are not exact
}
