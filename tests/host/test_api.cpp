// The C API contract: NULL handling, parameter validation, struct_size evolution,
// status strings, versions, thread-local last error (API-CONVENTIONS.md R3-R6, R9).
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "helpers.h"
#define PACKKV_EXPERIMENTAL_API
#include "packkv/packkv_experimental.h"  // packkv_attn_decode_multi

namespace {
std::string last() { return packkv_last_error_message(); }
}  // namespace

TEST_CASE("version, build info, status strings") {
  CHECK(packkv_version_number() == PACKKV_VERSION_NUMBER);
  CHECK(packkv_version_number() / 10000 == PACKKV_VERSION_MAJOR);
  CHECK(std::string(packkv_version_string()) == "0.1.0");
  CHECK(std::string(packkv_build_info()).find("libpackkv 0.1.0") != std::string::npos);
  CHECK(std::string(packkv_status_string(PACKKV_OK)) == "PACKKV_OK");
  CHECK(std::string(packkv_status_string(PACKKV_ERR_CAPACITY_EXCEEDED)) == "PACKKV_ERR_CAPACITY_EXCEEDED");
  CHECK(std::string(packkv_status_string(PACKKV_ERR_INTERNAL)) == "PACKKV_ERR_INTERNAL");
  CHECK(std::string(packkv_status_string(12345)) == "unknown status");
  CHECK(std::string(packkv_status_string(-1)) == "unknown status");
  // pinned values
  CHECK(PACKKV_ERR_INVALID_ARGUMENT == 1);
  CHECK(PACKKV_ERR_NOT_SUPPORTED == 8);
  CHECK(PACKKV_ERR_INTERNAL == 10);
}

TEST_CASE("params_init: defaults, struct sizes") {
  packkv_cache_params_t p;
  std::memset(&p, 0xff, sizeof p);
  REQUIRE(packkv_cache_params_init(&p, sizeof p) == PACKKV_OK);
  CHECK(p.struct_size == sizeof p);
  CHECK(sizeof p == PACKKV_CACHE_PARAMS_SIZE_V2);
  CHECK(p.sink_tokens == 4);  // the defaults of bench/RESULTS.md's end-to-end study
  CHECK(p.k_transform == PACKKV_K_TRANSFORM_NONE);
  CHECK(p.repack == PACKKV_REPACK_MEDIAN);
  CHECK(p.zs_format == PACKKV_ZS_COMPACT);
  CHECK(p.device == -1);
  CHECK(p.n_kv_heads == 8);
  CHECK(p.head_dim == 128);
  CHECK(p.rel_scale_k == 0.035f);
  CHECK(p.rel_scale_v == 0.07f);
  CHECK(p.bits_k == 0);
  CHECK(p.block_tokens == 64);
  CHECK(p.residual_tokens == 64);
  CHECK(p.kv_dtype == PACKKV_DTYPE_F16);
  CHECK(packkv_cache_params_init(nullptr, sizeof p) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_cache_params_init(&p, 32) == PACKKV_ERR_VERSION_MISMATCH);
  CHECK(last().find("struct_size") != std::string::npos);
  // a newer caller's larger struct: the tail is zeroed
  unsigned char big[96];
  std::memset(big, 0xee, sizeof big);
  REQUIRE(packkv_cache_params_init(reinterpret_cast<packkv_cache_params_t*>(big), sizeof big) == PACKKV_OK);
  for (size_t i = sizeof p; i < sizeof big; ++i) CHECK(big[i] == 0);
}

TEST_CASE("create: newer struct with zero tail works, non-zero tail is NOT_SUPPORTED, older is VERSION_MISMATCH") {
  struct Newer {
    packkv_cache_params_t v1;
    int32_t future_field;
    int32_t pad;
  } n;
  REQUIRE(packkv_cache_params_init(&n.v1, sizeof n) == PACKKV_OK);
  n.v1.n_kv_heads = 2;
  n.v1.head_dim = 64;
  packkv_cache_t* c = nullptr;
  REQUIRE(packkv_cache_create(&n.v1, &c) == PACKKV_OK);
  packkv_cache_destroy(c);
  n.future_field = 1;
  c = reinterpret_cast<packkv_cache_t*>(0x1);
  CHECK(packkv_cache_create(&n.v1, &c) == PACKKV_ERR_NOT_SUPPORTED);
  CHECK(c == nullptr);
  packkv_cache_params_t p = pkt::params(1, 32);
  p.struct_size = 60;
  CHECK(packkv_cache_create(&p, &c) == PACKKV_ERR_VERSION_MISMATCH);
  CHECK(c == nullptr);
}

TEST_CASE("create: every out-of-range field is INVALID_ARGUMENT naming the field") {
  struct Bad {
    const char* field;
    void (*edit)(packkv_cache_params_t*);
  };
  const Bad bad[] = {
      {"device", [](packkv_cache_params_t* p) { p->device = -2; }},
      {"n_kv_heads", [](packkv_cache_params_t* p) { p->n_kv_heads = 0; }},
      {"head_dim", [](packkv_cache_params_t* p) { p->head_dim = 72; }},
      {"head_dim", [](packkv_cache_params_t* p) { p->head_dim = 16; }},
      {"head_dim", [](packkv_cache_params_t* p) { p->head_dim = 272; }},
      {"max_seqs", [](packkv_cache_params_t* p) { p->max_seqs = 0; }},
      {"kv_dtype", [](packkv_cache_params_t* p) { p->kv_dtype = 7; }},
      {"max_tokens_per_seq", [](packkv_cache_params_t* p) { p->max_tokens_per_seq = 0; }},
      {"rel_scale_k", [](packkv_cache_params_t* p) { p->rel_scale_k = 0.0f; }},
      {"rel_scale_k", [](packkv_cache_params_t* p) { p->rel_scale_k = NAN; }},
      {"rel_scale_v", [](packkv_cache_params_t* p) { p->rel_scale_v = 1.5f; }},
      {"rel_scale_v", [](packkv_cache_params_t* p) { p->rel_scale_v = 0.001f; }},
      {"bits_k", [](packkv_cache_params_t* p) { p->bits_k = 9; }},
      {"bits_v", [](packkv_cache_params_t* p) { p->bits_v = -1; }},
      {"repack", [](packkv_cache_params_t* p) { p->repack = 3; }},
      {"scale_granularity", [](packkv_cache_params_t* p) { p->scale_granularity = 2; }},
      {"block_tokens", [](packkv_cache_params_t* p) { p->block_tokens = 40; }},
      {"block_tokens", [](packkv_cache_params_t* p) { p->block_tokens = 272; }},
      {"residual_tokens", [](packkv_cache_params_t* p) { p->residual_tokens = -1; }},
  };
  for (const Bad& b : bad) {
    packkv_cache_params_t p = pkt::params(2, 64);
    b.edit(&p);
    packkv_cache_t* c = reinterpret_cast<packkv_cache_t*>(0x1);
    CAPTURE(b.field);
    CHECK(packkv_cache_create(&p, &c) == PACKKV_ERR_INVALID_ARGUMENT);
    CHECK(c == nullptr);
    CHECK(last().find(b.field) != std::string::npos);
  }
  packkv_cache_t* c = nullptr;
  CHECK(packkv_cache_create(nullptr, &c) == PACKKV_ERR_INVALID_ARGUMENT);
  packkv_cache_params_t p = pkt::params(2, 64);
  CHECK(packkv_cache_create(&p, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
}

TEST_CASE("a GPU device without a usable CUDA backend is NOT_SUPPORTED") {
  if (packkv_has_cuda()) return;  // covered by the GPU suite
  packkv_cache_params_t p = pkt::params(2, 64);
  p.device = 0;
  packkv_cache_t* c = nullptr;
  CHECK(packkv_cache_create(&p, &c) == PACKKV_ERR_NOT_SUPPORTED);
  CHECK(c == nullptr);
  CHECK(!last().empty());
}

TEST_CASE("get_params returns derived bit widths, device is -1") {
  packkv_cache_params_t p = pkt::params(2, 64);
  p.rel_scale_k = 0.05f;
  p.bits_v = 6;
  pkt::Cache c(p);
  packkv_cache_params_t q;
  q.struct_size = sizeof q;
  REQUIRE(packkv_cache_get_params(c, &q) == PACKKV_OK);
  CHECK(q.bits_k == 5);  // 1/0.05 = 20 -> codes up to 21 -> 5 bits
  CHECK(q.bits_v == 6);
  CHECK(q.n_kv_heads == 2);
  int32_t dev = 5;
  REQUIRE(packkv_cache_device(c, &dev) == PACKKV_OK);
  CHECK(dev == -1);
  q.struct_size = 8;
  CHECK(packkv_cache_get_params(c, &q) == PACKKV_ERR_VERSION_MISMATCH);
  CHECK(packkv_cache_get_params(nullptr, &q) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_cache_get_params(c, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_cache_device(nullptr, &dev) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_cache_device(c, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
}

TEST_CASE("destroy accepts NULL") { packkv_cache_destroy(nullptr); }

TEST_CASE("append argument errors") {
  pkt::Cache c(pkt::params(1, 32, 2));
  std::vector<float> k(64 * 32, 0.5f), v(64 * 32, 0.25f);
  int32_t id = 0, n = 2, ids2[2] = {0, 0}, n2[2] = {1, 1}, neg = -1, bad_id = 2;
  const void* kp = k.data();
  const void* vp = v.data();
  CHECK(packkv_cache_append(nullptr, 1, &id, &n, kp, vp, PACKKV_DTYPE_F32, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_cache_append(c, 0, &id, &n, kp, vp, PACKKV_DTYPE_F32, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_cache_append(c, 1, nullptr, &n, kp, vp, PACKKV_DTYPE_F32, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_cache_append(c, 1, &id, nullptr, kp, vp, PACKKV_DTYPE_F32, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_cache_append(c, 1, &id, &n, nullptr, vp, PACKKV_DTYPE_F32, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(last().find("k_new") != std::string::npos);
  CHECK(packkv_cache_append(c, 1, &id, &n, kp, nullptr, PACKKV_DTYPE_F32, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_cache_append(c, 1, &id, &n, kp, vp, 9, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(last().find("dtype") != std::string::npos);
  CHECK(packkv_cache_append(c, 1, &id, &neg, kp, vp, PACKKV_DTYPE_F32, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_cache_append(c, 1, &bad_id, &n, kp, vp, PACKKV_DTYPE_F32, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(last().find("seq_id 2") != std::string::npos);
  CHECK(packkv_cache_append(c, 2, ids2, n2, kp, vp, PACKKV_DTYPE_F32, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(last().find("twice") != std::string::npos);
  CHECK(pkt::stats(c).n_tokens == 0);
  CHECK(packkv_cache_append(c, 1, &id, &n, kp, vp, PACKKV_DTYPE_F32, nullptr) == PACKKV_OK);
  CHECK(last().empty());  // success clears the message
}

TEST_CASE("query, stats, decompress, remove, reset argument errors") {
  pkt::Cache c(pkt::params(1, 32, 2));
  auto k = pkt::kv_data(300, 1, 32, 1), v = pkt::kv_data(300, 1, 32, 2);
  pkt::append1(c, 0, k, v, 0, 300, 32);
  int64_t n = 0;
  CHECK(packkv_cache_seq_length(nullptr, 0, &n) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_cache_seq_length(c, 2, &n) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_cache_seq_length(c, -1, &n) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_cache_seq_length(c, 0, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  packkv_cache_stats_t s;
  s.struct_size = sizeof s;
  CHECK(sizeof s == PACKKV_CACHE_STATS_SIZE_V1);
  CHECK(packkv_cache_stats(nullptr, -1, &s) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_cache_stats(c, 5, &s) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_cache_stats(c, -2, &s) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(std::string(packkv_last_error_message()).find("neither -1 (whole cache)") != std::string::npos);
  CHECK(packkv_cache_stats(c, 0, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  s.struct_size = 16;
  CHECK(packkv_cache_stats(c, 0, &s) == PACKKV_ERR_VERSION_MISMATCH);
  std::vector<float> out(300 * 32);
  CHECK(packkv_cache_decompress(nullptr, 0, out.data(), out.data(), 300, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_cache_decompress(c, 3, out.data(), out.data(), 300, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_cache_decompress(c, 0, out.data(), nullptr, 299, nullptr) == PACKKV_ERR_CAPACITY_EXCEEDED);
  CHECK(packkv_cache_decompress(c, 0, out.data(), nullptr, 300, nullptr) == PACKKV_OK);
  CHECK(packkv_cache_remove_seq(nullptr, 0) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_cache_remove_seq(c, 2) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_cache_reset(nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_cache_sync(nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_cache_sync(c) == PACKKV_OK);
  CHECK(pkt::seq_len(c, 0) == 300);  // nothing changed by the failures
}

TEST_CASE("attention argument errors leave outputs untouched") {
  pkt::Cache c(pkt::params(2, 32, 2));
  auto k = pkt::kv_data(100, 2, 32, 1), v = pkt::kv_data(100, 2, 32, 2);
  pkt::append1(c, 0, k, v, 0, 100, 64);
  std::vector<float> q(4 * 32, 0.1f), scores(4 * 100, 7.0f), out(4 * 32, 7.0f);
  int32_t id = 0, dup[2] = {0, 0};
  size_t ws = 1;
  REQUIRE(packkv_attn_workspace_size(c, 1, 4, &ws) == PACKKV_OK);
  CHECK(ws == 0);
  CHECK(packkv_attn_workspace_size(c, 1, 3, &ws) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_attn_workspace_size(c, 0, 4, &ws) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_attn_workspace_size(c, 1, 4, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_attn_workspace_size(nullptr, 1, 4, &ws) == PACKKV_ERR_INVALID_ARGUMENT);
  const float* qp = q.data();
  CHECK(packkv_attn_scores(c, 1, &id, 3, qp, PACKKV_DTYPE_F32, scores.data(), 100, nullptr, 0, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(last().find("n_q_heads") != std::string::npos);
  CHECK(packkv_attn_scores(c, 1, &id, 4, qp, PACKKV_DTYPE_F32, scores.data(), 99, nullptr, 0, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(last().find("ld_scores") != std::string::npos);
  CHECK(packkv_attn_scores(c, 2, dup, 4, qp, PACKKV_DTYPE_F32, scores.data(), 100, nullptr, 0, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_attn_scores(c, 1, &id, 4, nullptr, PACKKV_DTYPE_F32, scores.data(), 100, nullptr, 0, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_attn_scores(c, 1, &id, 4, qp, 5, scores.data(), 100, nullptr, 0, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_attn_scores(c, 1, &id, 4, qp, PACKKV_DTYPE_F32, nullptr, 100, nullptr, 0, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_attn_scores(nullptr, 1, &id, 4, qp, PACKKV_DTYPE_F32, scores.data(), 100, nullptr, 0, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_attn_apply(c, 1, &id, 4, nullptr, 100, out.data(), nullptr, 0, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_attn_apply(c, 1, &id, 4, scores.data(), 100, nullptr, nullptr, 0, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_attn_apply(c, 1, &id, 4, scores.data(), 50, out.data(), nullptr, 0, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  for (float bad_scale : {0.0f, -1.0f, NAN, INFINITY})
    CHECK(packkv_attn_decode(c, 1, &id, 4, qp, PACKKV_DTYPE_F32, bad_scale, out.data(), nullptr, nullptr, 0, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_attn_decode(c, 1, &id, 4, qp, PACKKV_DTYPE_F32, 0.5f, nullptr, nullptr, nullptr, 0, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  int32_t far = 9;
  CHECK(packkv_attn_decode(c, 1, &far, 4, qp, PACKKV_DTYPE_F32, 0.5f, out.data(), nullptr, nullptr, 0, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  for (float x : scores) CHECK(x == 7.0f);
  for (float x : out) CHECK(x == 7.0f);
}

TEST_CASE("last error is per thread, copy_last_error truncates") {
  CHECK(packkv_cache_reset(nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  const std::string mine = last();
  CHECK(mine.find("packkv_cache_reset") != std::string::npos);
  std::atomic<bool> other_ok{false};
  std::thread t([&] {
    const bool empty_at_start = std::string(packkv_last_error_message()).empty();
    int32_t b = 0;
    const bool failed = packkv_bits_for_rel_scale(-1.0f, &b) == PACKKV_ERR_INVALID_ARGUMENT;
    other_ok = empty_at_start && failed &&
               std::string(packkv_last_error_message()).find("packkv_bits_for_rel_scale") != std::string::npos;
  });
  t.join();
  CHECK(other_ok.load());
  CHECK(last() == mine);  // untouched by the other thread
  char buf[8];
  const size_t full = packkv_copy_last_error(buf, sizeof buf);
  CHECK(full == mine.size());
  CHECK(std::string(buf) == mine.substr(0, 7));
  CHECK(packkv_copy_last_error(nullptr, 0) == mine.size());
}

TEST_CASE("concurrent read-only attention on one cache from several threads") {
  pkt::Cache c(pkt::params(2, 64));
  auto k = pkt::kv_data(600, 2, 64, 1), v = pkt::kv_data(600, 2, 64, 2);
  pkt::append1(c, 0, k, v, 0, 600, 128);
  auto q = pkt::kv_data(1, 4, 64, 3, 0.5f);
  int32_t id = 0;
  std::vector<float> ref(4 * 64);
  REQUIRE(packkv_attn_decode(c, 1, &id, 4, q.data(), PACKKV_DTYPE_F32, 0.125f, ref.data(), nullptr, nullptr, 0, nullptr) == PACKKV_OK);
  std::atomic<int> mismatches{0};
  std::vector<std::thread> ts;
  for (int w = 0; w < 4; ++w)
    ts.emplace_back([&] {
      std::vector<float> out(4 * 64);
      for (int it = 0; it < 20; ++it) {
        if (packkv_attn_decode(c, 1, &id, 4, q.data(), PACKKV_DTYPE_F32, 0.125f, out.data(), nullptr, nullptr, 0, nullptr) != PACKKV_OK ||
            out != ref)
          ++mismatches;
      }
    });
  for (auto& t : ts) t.join();
  CHECK(mismatches.load() == 0);
}

TEST_CASE("argument checks come before capacity checks, strides that overflow are rejected") {
  packkv_cache_params_t p = pkt::params(1, 32, 2);
  p.max_tokens_per_seq = 10;
  pkt::Cache c(p);
  std::vector<float> k(20 * 32, 0.5f), v(20 * 32, 0.5f);
  int32_t id = 0, n = 20;
  // NULL data with a count over capacity: the NULL is reported (INVALID_ARGUMENT)
  CHECK(packkv_cache_append(c, 1, &id, &n, nullptr, v.data(), PACKKV_DTYPE_F32, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(last().find("k_new") != std::string::npos);
  n = 5;
  REQUIRE(packkv_cache_append(c, 1, &id, &n, k.data(), v.data(), PACKKV_DTYPE_F32, nullptr) == PACKKV_OK);
  // both outputs NULL: nothing to write, whatever the capacity
  CHECK(packkv_cache_decompress(c, 0, nullptr, nullptr, 0, nullptr) == PACKKV_OK);
  CHECK(packkv_cache_decompress(c, 0, k.data(), nullptr, -1, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  std::vector<float> q(4 * 32, 0.1f), scores(4 * 8, 7.0f);
  int32_t ids[2] = {0, 1};
  CHECK(packkv_attn_scores(c, 2, ids, 2, q.data(), PACKKV_DTYPE_F32, scores.data(), INT64_MAX / 2, nullptr, 0,
                           nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(last().find("ld_scores") != std::string::npos);
  CHECK(packkv_attn_apply(c, 2, ids, 2, scores.data(), INT64_MAX / 4, q.data(), nullptr, 0, nullptr) ==
        PACKKV_ERR_INVALID_ARGUMENT);
  for (float x : scores) CHECK(x == 7.0f);
}

TEST_CASE("struct_size above PACKKV_CACHE_*_SIZE_MAX is refused before any byte past the struct is touched") {
  // Issue 18 item 6: struct_size 100000 made packkv_cache_create read past the caller's
  // struct (it reported some non-zero byte instead of refusing the size). The buffers here
  // are exactly MAX bytes, so a read or write beyond them is an out-of-bounds access (ASan).
  static_assert(PACKKV_CACHE_PARAMS_SIZE_MAX >= sizeof(packkv_cache_params_t), "room for the struct");
  static_assert(PACKKV_CACHE_STATS_SIZE_MAX >= sizeof(packkv_cache_stats_t), "room for the struct");
  std::vector<unsigned char> buf(PACKKV_CACHE_PARAMS_SIZE_MAX, 0);
  auto* p = reinterpret_cast<packkv_cache_params_t*>(buf.data());
  // The largest accepted size: a newer caller's struct whose unknown bytes are zero.
  REQUIRE(packkv_cache_params_init(p, PACKKV_CACHE_PARAMS_SIZE_MAX) == PACKKV_OK);
  p->n_kv_heads = 2;
  p->head_dim = 64;
  packkv_cache_t* c = nullptr;
  REQUIRE(packkv_cache_create(p, &c) == PACKKV_OK);
  buf[PACKKV_CACHE_PARAMS_SIZE_MAX - 1] = 1;  // a field unknown to this library
  packkv_cache_t* c2 = nullptr;
  CHECK(packkv_cache_create(p, &c2) == PACKKV_ERR_NOT_SUPPORTED);
  CHECK(c2 == nullptr);
  buf[PACKKV_CACHE_PARAMS_SIZE_MAX - 1] = 0;
  std::memset(buf.data() + 8, 0xAB, 16);  // get_params overwrites it all, zeroing the tail
  REQUIRE(packkv_cache_get_params(c, p) == PACKKV_OK);
  CHECK(p->n_kv_heads == 2);
  CHECK(buf[PACKKV_CACHE_PARAMS_SIZE_MAX - 1] == 0);

  for (uint32_t size : {uint32_t(PACKKV_CACHE_PARAMS_SIZE_MAX + 1), uint32_t(100000), UINT32_MAX}) {
    CAPTURE(size);
    packkv_cache_params_t small = pkt::params(2, 64);
    small.struct_size = size;
    c2 = reinterpret_cast<packkv_cache_t*>(0x1);
    CHECK(packkv_cache_create(&small, &c2) == PACKKV_ERR_VERSION_MISMATCH);
    CHECK(c2 == nullptr);
    CHECK(last().find("larger than PACKKV_CACHE_PARAMS_SIZE_MAX (1024)") != std::string::npos);
    CHECK(packkv_cache_get_params(c, &small) == PACKKV_ERR_VERSION_MISMATCH);
    CHECK(small.n_kv_heads == 2);
    packkv_cache_params_t before = small;
    CHECK(packkv_cache_params_init(&small, size) == PACKKV_ERR_VERSION_MISMATCH);
    CHECK(std::memcmp(&before, &small, sizeof small) == 0);  // nothing written
    packkv_cache_stats_t st;
    std::memset(&st, 0, sizeof st);
    st.struct_size = size;
    CHECK(packkv_cache_stats(c, -1, &st) == PACKKV_ERR_VERSION_MISMATCH);
    CHECK(last().find("larger than PACKKV_CACHE_STATS_SIZE_MAX") != std::string::npos);
    CHECK(st.n_tokens == 0);
  }
  CHECK(packkv_cache_params_init(p, size_t(1) << 40) == PACKKV_ERR_VERSION_MISMATCH);
  std::vector<unsigned char> sbuf(PACKKV_CACHE_STATS_SIZE_MAX, 0xCD);
  auto* st = reinterpret_cast<packkv_cache_stats_t*>(sbuf.data());
  st->struct_size = PACKKV_CACHE_STATS_SIZE_MAX;
  REQUIRE(packkv_cache_stats(c, -1, st) == PACKKV_OK);
  CHECK(sbuf[PACKKV_CACHE_STATS_SIZE_MAX - 1] == 0);
  packkv_cache_destroy(c);
}

TEST_CASE("n_seqs above max_seqs is refused before h_seq_ids is read") {
  // fresh6 item 2: the count was checked only through the ids, so a count larger than the
  // caller's array read past it. The arrays here hold n_seqs = 3 entries (the call reads
  // nothing wrong), but their third id is out of range: the message must be about n_seqs,
  // which shows that the count is checked before any id.
  pkt::Cache c(pkt::params(2, 32, 2));  // max_seqs 2
  std::vector<float> k(3 * 2 * 32, 0.5f), v(3 * 2 * 32, 0.25f), q(3 * 4 * 32, 0.1f), out(3 * 4 * 32, 7.0f);
  std::vector<float> scores(3 * 4 * 8, 7.0f);
  int32_t ids[3] = {0, 1, 77}, n[3] = {1, 1, 1};
  const std::string want = "n_seqs must be in [1, max_seqs = 2], got 3";
  auto check_last = [&](const char* fn) {
    CHECK(last() == std::string(fn) + ": " + want);
  };
  CHECK(packkv_cache_append(c, 3, ids, n, k.data(), v.data(), PACKKV_DTYPE_F32, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  check_last("packkv_cache_append");
  CHECK(packkv_attn_decode(c, 3, ids, 4, q.data(), PACKKV_DTYPE_F32, 0.5f, out.data(), nullptr, nullptr, 0, nullptr) ==
        PACKKV_ERR_INVALID_ARGUMENT);
  check_last("packkv_attn_decode");
  CHECK(packkv_attn_scores(c, 3, ids, 4, q.data(), PACKKV_DTYPE_F32, scores.data(), 8, nullptr, 0, nullptr) ==
        PACKKV_ERR_INVALID_ARGUMENT);
  check_last("packkv_attn_scores");
  CHECK(packkv_attn_apply(c, 3, ids, 4, scores.data(), 8, out.data(), nullptr, 0, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  check_last("packkv_attn_apply");
  CHECK(packkv_attn_decode_multi(c, 3, ids, 4, 1, q.data(), PACKKV_DTYPE_F32, 0.5f, out.data(), nullptr, nullptr, 0,
                                 nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  check_last("packkv_attn_decode_multi");
  size_t ws = 7;
  CHECK(packkv_attn_workspace_size(c, 3, 4, &ws) == PACKKV_ERR_INVALID_ARGUMENT);
  check_last("packkv_attn_workspace_size");
  CHECK(ws == 7);
  // n_seqs below 1: same message, same place
  CHECK(packkv_cache_append(c, 0, ids, n, k.data(), v.data(), PACKKV_DTYPE_F32, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(last() == "packkv_cache_append: n_seqs must be in [1, max_seqs = 2], got 0");
  CHECK(packkv_attn_decode(c, -1, ids, 4, q.data(), PACKKV_DTYPE_F32, 0.5f, out.data(), nullptr, nullptr, 0, nullptr) ==
        PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(last() == "packkv_attn_decode: n_seqs must be in [1, max_seqs = 2], got -1");
  for (float x : out) CHECK(x == 7.0f);
  for (float x : scores) CHECK(x == 7.0f);
  CHECK(pkt::stats(c).n_tokens == 0);
}

TEST_CASE("n_q_heads above 2^20 is refused before anything is sized by it") {
  // fresh6 item 3: a huge n_q_heads (a multiple of n_kv_heads) made the CPU decode
  // allocate its query copy, n_seqs * n_q_heads * head_dim floats (256 GiB here), first.
  // packkv.h: n_q_heads (n_q_heads * q_len for decode_multi) is at most 2^20.
  pkt::Cache c(pkt::params(2, 32, 1));
  auto k = pkt::kv_data(10, 2, 32, 1), v = pkt::kv_data(10, 2, 32, 2);
  pkt::append1(c, 0, k, v, 0, 10, 64);
  std::vector<float> q(4 * 32, 0.1f), out(4 * 32, 7.0f), scores(4 * 10, 7.0f);
  int32_t id = 0;
  const int32_t huge = INT32_MAX - 1;  // a multiple of n_kv_heads = 2
  const std::string rule = ": n_q_heads must be a positive multiple of n_kv_heads = 2 and at most 2^20, got ";
  CHECK(packkv_attn_decode(c, 1, &id, huge, q.data(), PACKKV_DTYPE_F32, 0.5f, out.data(), nullptr, nullptr, 0,
                           nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(last() == "packkv_attn_decode" + rule + std::to_string(huge));
  CHECK(packkv_attn_scores(c, 1, &id, huge, q.data(), PACKKV_DTYPE_F32, scores.data(), 10, nullptr, 0, nullptr) ==
        PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(last() == "packkv_attn_scores" + rule + std::to_string(huge));
  CHECK(packkv_attn_apply(c, 1, &id, huge, scores.data(), 10, out.data(), nullptr, 0, nullptr) ==
        PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(last() == "packkv_attn_apply" + rule + std::to_string(huge));
  // the bound itself: 2^20 accepted, the next multiple of n_kv_heads refused
  size_t ws = 7;
  CHECK(packkv_attn_workspace_size(c, 1, 1 << 20, &ws) == PACKKV_OK);
  CHECK(ws == 0);
  ws = 7;
  CHECK(packkv_attn_workspace_size(c, 1, (1 << 20) + 2, &ws) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(last() == "packkv_attn_workspace_size" + rule + std::to_string((1 << 20) + 2));
  CHECK(ws == 7);
  // decode_multi: n_q_heads * q_len, here 2 * (2^30 - 1) (below INT32_MAX, which was the old bound)
  const int32_t q_len = (1 << 30) - 1;
  CHECK(packkv_attn_decode_multi(c, 1, &id, 2, q_len, q.data(), PACKKV_DTYPE_F32, 0.5f, out.data(), nullptr, nullptr,
                                 0, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(last() == "packkv_attn_decode_multi: q_len must be >= 1 with n_q_heads * q_len <= 2^20, got q_len " +
                      std::to_string(q_len) + " (n_q_heads 2)");
  CHECK(packkv_attn_decode_multi(c, 1, &id, 2, (1 << 19) + 1, q.data(), PACKKV_DTYPE_F32, 0.5f, out.data(), nullptr,
                                 nullptr, 0, nullptr) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(last().find("n_q_heads * q_len <= 2^20") != std::string::npos);
  for (float x : out) CHECK(x == 7.0f);
  for (float x : scores) CHECK(x == 7.0f);
}
