// The bad-input matrix (issue 7 item 3): every exported function of packkv.h x every
// class of bad argument. Each cell is either one or more cases or an explicit "not
// applicable" with the reason. Every case runs against one populated cache and checks:
//   - the documented status;
//   - a non-empty thread-local message that names the function (and that
//     packkv_copy_last_error returns the same text);
//   - the cache is exactly as before (stats of all and of each sequence, sequence
//     lengths, decompressed K/V and the compressed block bytes);
//   - output arguments are not written (sentinels survive; a failed create sets *out
//     to NULL).
// A further test parses include/packkv/packkv.h and fails if a packkv_* function there
// is missing from the matrix (or the matrix names one that no longer exists).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "api/cache_impl.h"
#include "helpers.h"
#include "api/internal_access.h"

#ifndef PACKKV_PUBLIC_HEADER
#error "PACKKV_PUBLIC_HEADER (path of include/packkv/packkv.h) must be defined by tests/CMakeLists.txt"
#endif

namespace {

// Classes of bad argument (the rows of the issue's matrix).
enum BadClass { kNull, kSize, kShape, kUnsupported, kSeqId, kCapacity, kNonFinite, kNumClasses };
const char* const kClassName[] = {"NULL pointer",           "zero or negative size",        "mismatched dimensions",
                                  "unsupported dtype/head_dim/bit width", "unknown sequence id", "capacity exceeded",
                                  "non-finite value"};

constexpr int kH = 2, kD = 64, kSeqs = 3, kHq = 4;
constexpr int64_t kMaxTokens = 400;
constexpr size_t kRow = (size_t)kH * kD;
constexpr float kSentinel = -4242.0f;

// The populated cache every case runs against, plus valid arguments and sentinel-filled
// output buffers.
struct Fixture {
  packkv_cache_t* c = nullptr;
  std::vector<float> k, v;             // 400 tokens of input data
  std::vector<float> q, probs;         // [kSeqs][kHq][kD], [kSeqs][kHq][ld]
  std::vector<float> scores, out, lse; // outputs, sentinel
  std::vector<float> k_out, v_out;     // decompress outputs, sentinel, kMaxTokens rows
  packkv_cache_stats_t stats;          // sentinel bytes
  packkv_cache_params_t params;        // sentinel bytes
  int32_t i32 = -77;
  int64_t i64 = -77;
  size_t bytes = 77;
  int32_t ids[3] = {0, 1, 2};

  Fixture() {
    packkv_cache_params_t p = pkt::params(kH, kD, kSeqs);
    p.max_tokens_per_seq = kMaxTokens;
    p.residual_tokens = 64;
    REQUIRE(packkv_cache_create(&p, &c) == PACKKV_OK);
    k = pkt::kv_data(kMaxTokens, kH, kD, 21);
    v = pkt::kv_data(kMaxTokens, kH, kD, 22);
    int32_t n[2] = {300, 10};  // sequence 0: blocks + residual, 1: residual only, 2: empty
    REQUIRE(packkv_cache_append(c, 2, ids, n, k.data(), v.data(), PACKKV_DTYPE_F32, nullptr) == PACKKV_OK);
    q = pkt::kv_data((size_t)kSeqs * kHq, 1, kD, 23, 0.5f);
    probs.assign((size_t)kSeqs * kHq * 300, 1.0f / 300.0f);
    reset_outputs();
  }
  ~Fixture() { packkv_cache_destroy(c); }
  Fixture(const Fixture&) = delete;
  Fixture& operator=(const Fixture&) = delete;

  /// Fills every output argument with sentinels.
  void reset_outputs() {
    scores.assign((size_t)kSeqs * kHq * 300, kSentinel);
    out.assign((size_t)kSeqs * kHq * kD, kSentinel);
    lse.assign((size_t)kSeqs * kHq, kSentinel);
    k_out.assign((size_t)kMaxTokens * kRow, kSentinel);
    v_out.assign((size_t)kMaxTokens * kRow, kSentinel);
    std::memset(&stats, 0xab, sizeof stats);
    stats.struct_size = sizeof stats;
    std::memset(&params, 0xab, sizeof params);
    params.struct_size = sizeof params;
    i32 = -77;
    i64 = -77;
    bytes = 77;
  }

  /// True if no output argument was written.
  bool outputs_untouched() const {
    for (const std::vector<float>* b : {&scores, &out, &lse, &k_out, &v_out})
      for (float x : *b)
        if (x != kSentinel) return false;
    const unsigned char* s = reinterpret_cast<const unsigned char*>(&stats);
    for (size_t i = 4; i < sizeof stats; ++i)
      if (s[i] != 0xab) return false;
    const unsigned char* p = reinterpret_cast<const unsigned char*>(&params);
    for (size_t i = 4; i < sizeof params; ++i)
      if (p[i] != 0xab) return false;
    return i32 == -77 && i64 == -77 && bytes == 77;
  }
};

// Everything observable about the fixture's cache.
struct Snapshot {
  std::vector<packkv_cache_stats_t> stats;  // all, then each sequence
  std::vector<pkt::Decompressed> data;
  std::vector<std::vector<uint8_t>> blocks;
  bool same_as(const Snapshot& o) const {
    if (stats.size() != o.stats.size() || data.size() != o.data.size() || blocks != o.blocks) return false;
    for (size_t i = 0; i < stats.size(); ++i)
      if (std::memcmp(&stats[i], &o.stats[i], sizeof stats[i]) != 0) return false;
    for (size_t i = 0; i < data.size(); ++i)
      if (data[i].k != o.data[i].k || data[i].v != o.data[i].v) return false;
    return true;
  }
};

Snapshot snapshot(const packkv_cache_t* c) {
  Snapshot s;
  s.stats.push_back(pkt::stats(c, -1));
  const packkv::CacheImpl& impl = packkv::internal_impl(c);
  for (int i = 0; i < kSeqs; ++i) {
    s.stats.push_back(pkt::stats(c, i));
    s.data.push_back(pkt::decompress(c, i, kRow));
    for (int64_t b = 0; b < impl.n_blocks(i); ++b) s.blocks.push_back(impl.block_bytes(i, b));
  }
  return s;
}

// One cell entry: a call with one bad argument and the status it must return.
struct Case {
  const char* fn;  // exported function
  BadClass cls;
  const char* what;
  packkv_status_t expect;
  std::function<packkv_status_t(Fixture&)> call;
};

// A cell that has no case, and why.
struct NotApplicable {
  const char* fn;
  BadClass cls;  // kNumClasses: every class (the function has no argument that can be bad)
  const char* why;
};

// Functions that cannot fail (no status): checked for sane results on edge arguments
// instead (they must not crash, and must not change the last error unless documented).
struct Infallible {
  const char* fn;
  const char* what;
  std::function<bool(Fixture&)> check;
};

int32_t one_token = 1;
const int32_t kBadIds[] = {-1, kSeqs, INT32_MAX, INT32_MIN};

std::vector<float> with_value(const std::vector<float>& x, size_t at, float value) {
  std::vector<float> y(x);
  y[at] = value;
  return y;
}

packkv_status_t create_with(Fixture& f, void (*edit)(packkv_cache_params_t*)) {
  packkv_cache_params_t p = pkt::params(kH, kD);
  edit(&p);
  packkv_cache_t* c = reinterpret_cast<packkv_cache_t*>(&f);  // must become NULL
  const packkv_status_t st = packkv_cache_create(&p, &c);
  if (st != PACKKV_OK && c != nullptr) return PACKKV_ERR_INTERNAL;  // *out not cleared
  if (st == PACKKV_OK) packkv_cache_destroy(c);
  return st;
}

packkv_status_t append_one(Fixture& f, int32_t id, packkv_dtype_t dtype = PACKKV_DTYPE_F32) {
  return packkv_cache_append(f.c, 1, &id, &one_token, f.k.data(), f.v.data(), dtype, nullptr);
}

packkv_status_t scores_with(Fixture& f, int32_t n_seqs, const int32_t* ids, int32_t hq, const void* q,
                            packkv_dtype_t dt, float* out, int64_t ld) {
  return packkv_attn_scores(f.c, n_seqs, ids, hq, q, dt, out, ld, nullptr, 0, nullptr);
}

packkv_status_t apply_with(Fixture& f, int32_t n_seqs, const int32_t* ids, int32_t hq, const float* probs, int64_t ld,
                           float* out) {
  return packkv_attn_apply(f.c, n_seqs, ids, hq, probs, ld, out, nullptr, 0, nullptr);
}

packkv_status_t decode_with(Fixture& f, int32_t n_seqs, const int32_t* ids, int32_t hq, const void* q,
                            packkv_dtype_t dt, float scale, float* out) {
  return packkv_attn_decode(f.c, n_seqs, ids, hq, q, dt, scale, out, f.lse.data(), nullptr, 0, nullptr);
}

constexpr packkv_status_t INV = PACKKV_ERR_INVALID_ARGUMENT;
constexpr packkv_status_t VER = PACKKV_ERR_VERSION_MISMATCH;
constexpr packkv_status_t CAP = PACKKV_ERR_CAPACITY_EXCEEDED;
constexpr packkv_status_t NSUP = PACKKV_ERR_NOT_SUPPORTED;

// The matrix. Valid calls differ from the fixture's defaults in exactly one argument.
std::vector<Case> cases() {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::vector<Case> m = {
      // ---- packkv_cache_params_init
      {"packkv_cache_params_init", kNull, "params NULL", INV,
       [](Fixture&) { return packkv_cache_params_init(nullptr, sizeof(packkv_cache_params_t)); }},
      {"packkv_cache_params_init", kSize, "struct_size 0", VER,
       [](Fixture& f) { return packkv_cache_params_init(&f.params, 0); }},
      {"packkv_cache_params_init", kShape, "struct_size 63 (older than V1)", VER,
       [](Fixture& f) { return packkv_cache_params_init(&f.params, PACKKV_CACHE_PARAMS_SIZE_V1 - 1); }},
      // ---- packkv_bits_for_rel_scale
      {"packkv_bits_for_rel_scale", kNull, "bits NULL", INV,
       [](Fixture&) { return packkv_bits_for_rel_scale(0.1f, nullptr); }},
      {"packkv_bits_for_rel_scale", kSize, "r = 0", INV, [](Fixture& f) { return packkv_bits_for_rel_scale(0.0f, &f.i32); }},
      {"packkv_bits_for_rel_scale", kSize, "r < 0", INV, [](Fixture& f) { return packkv_bits_for_rel_scale(-0.1f, &f.i32); }},
      {"packkv_bits_for_rel_scale", kUnsupported, "r needs 9 bits", INV,
       [](Fixture& f) { return packkv_bits_for_rel_scale(0.001f, &f.i32); }},
      {"packkv_bits_for_rel_scale", kUnsupported, "r > 1", INV,
       [](Fixture& f) { return packkv_bits_for_rel_scale(1.5f, &f.i32); }},
      {"packkv_bits_for_rel_scale", kNonFinite, "r NaN", INV,
       [nan](Fixture& f) { return packkv_bits_for_rel_scale(nan, &f.i32); }},
      {"packkv_bits_for_rel_scale", kNonFinite, "r inf", INV,
       [inf](Fixture& f) { return packkv_bits_for_rel_scale(inf, &f.i32); }},
      // ---- packkv_cache_create
      {"packkv_cache_create", kNull, "params NULL", INV,
       [](Fixture& f) {
         packkv_cache_t* c = reinterpret_cast<packkv_cache_t*>(&f);
         const packkv_status_t st = packkv_cache_create(nullptr, &c);
         return c == nullptr ? st : PACKKV_ERR_INTERNAL;
       }},
      {"packkv_cache_create", kNull, "out NULL", INV,
       [](Fixture&) {
         packkv_cache_params_t p = pkt::params(kH, kD);
         return packkv_cache_create(&p, nullptr);
       }},
      {"packkv_cache_create", kSize, "n_kv_heads 0", INV, [](Fixture& f) { return create_with(f, [](packkv_cache_params_t* p) { p->n_kv_heads = 0; }); }},
      {"packkv_cache_create", kSize, "n_kv_heads -1", INV, [](Fixture& f) { return create_with(f, [](packkv_cache_params_t* p) { p->n_kv_heads = -1; }); }},
      {"packkv_cache_create", kSize, "head_dim 0", INV, [](Fixture& f) { return create_with(f, [](packkv_cache_params_t* p) { p->head_dim = 0; }); }},
      {"packkv_cache_create", kSize, "max_seqs 0", INV, [](Fixture& f) { return create_with(f, [](packkv_cache_params_t* p) { p->max_seqs = 0; }); }},
      {"packkv_cache_create", kSize, "max_tokens_per_seq 0", INV, [](Fixture& f) { return create_with(f, [](packkv_cache_params_t* p) { p->max_tokens_per_seq = 0; }); }},
      {"packkv_cache_create", kSize, "max_tokens_per_seq -1", INV, [](Fixture& f) { return create_with(f, [](packkv_cache_params_t* p) { p->max_tokens_per_seq = -1; }); }},
      {"packkv_cache_create", kSize, "block_tokens 0", INV, [](Fixture& f) { return create_with(f, [](packkv_cache_params_t* p) { p->block_tokens = 0; }); }},
      {"packkv_cache_create", kSize, "residual_tokens -1", INV, [](Fixture& f) { return create_with(f, [](packkv_cache_params_t* p) { p->residual_tokens = -1; }); }},
      {"packkv_cache_create", kSize, "struct_size 0", VER, [](Fixture& f) { return create_with(f, [](packkv_cache_params_t* p) { p->struct_size = 0; }); }},
      {"packkv_cache_create", kShape, "head_dim 72 (not a multiple of 16)", INV, [](Fixture& f) { return create_with(f, [](packkv_cache_params_t* p) { p->head_dim = 72; }); }},
      {"packkv_cache_create", kShape, "block_tokens 40 (not a multiple of 16)", INV, [](Fixture& f) { return create_with(f, [](packkv_cache_params_t* p) { p->block_tokens = 40; }); }},
      {"packkv_cache_create", kUnsupported, "kv_dtype 3", INV, [](Fixture& f) { return create_with(f, [](packkv_cache_params_t* p) { p->kv_dtype = 3; }); }},
      {"packkv_cache_create", kUnsupported, "kv_dtype -1", INV, [](Fixture& f) { return create_with(f, [](packkv_cache_params_t* p) { p->kv_dtype = -1; }); }},
      {"packkv_cache_create", kUnsupported, "head_dim 16", INV, [](Fixture& f) { return create_with(f, [](packkv_cache_params_t* p) { p->head_dim = 16; }); }},
      {"packkv_cache_create", kUnsupported, "head_dim 272", INV, [](Fixture& f) { return create_with(f, [](packkv_cache_params_t* p) { p->head_dim = 272; }); }},
      {"packkv_cache_create", kUnsupported, "bits_k 9", INV, [](Fixture& f) { return create_with(f, [](packkv_cache_params_t* p) { p->bits_k = 9; }); }},
      {"packkv_cache_create", kUnsupported, "bits_v -1", INV, [](Fixture& f) { return create_with(f, [](packkv_cache_params_t* p) { p->bits_v = -1; }); }},
      {"packkv_cache_create", kUnsupported, "rel_scale_k 0.001 (needs 9 bits)", INV, [](Fixture& f) { return create_with(f, [](packkv_cache_params_t* p) { p->rel_scale_k = 0.001f; }); }},
      {"packkv_cache_create", kUnsupported, "repack 3", INV, [](Fixture& f) { return create_with(f, [](packkv_cache_params_t* p) { p->repack = 3; }); }},
      {"packkv_cache_create", kUnsupported, "scale_granularity 2", INV, [](Fixture& f) { return create_with(f, [](packkv_cache_params_t* p) { p->scale_granularity = 2; }); }},
      {"packkv_cache_create", kUnsupported, "device -2", INV, [](Fixture& f) { return create_with(f, [](packkv_cache_params_t* p) { p->device = -2; }); }},
      {"packkv_cache_create", kCapacity, "max_tokens_per_seq 2^40 + 1", INV, [](Fixture& f) { return create_with(f, [](packkv_cache_params_t* p) { p->max_tokens_per_seq = (1ll << 40) + 1; }); }},
      {"packkv_cache_create", kCapacity, "max_seqs 2^20 + 1", INV, [](Fixture& f) { return create_with(f, [](packkv_cache_params_t* p) { p->max_seqs = (1 << 20) + 1; }); }},
      {"packkv_cache_create", kCapacity, "n_kv_heads 4097", INV, [](Fixture& f) { return create_with(f, [](packkv_cache_params_t* p) { p->n_kv_heads = 4097; }); }},
      {"packkv_cache_create", kNonFinite, "rel_scale_k NaN", INV, [](Fixture& f) { return create_with(f, [](packkv_cache_params_t* p) { p->rel_scale_k = std::numeric_limits<float>::quiet_NaN(); }); }},
      {"packkv_cache_create", kNonFinite, "rel_scale_v inf", INV, [](Fixture& f) { return create_with(f, [](packkv_cache_params_t* p) { p->rel_scale_v = std::numeric_limits<float>::infinity(); }); }},
      // ---- packkv_cache_get_params
      {"packkv_cache_get_params", kNull, "cache NULL", INV, [](Fixture& f) { return packkv_cache_get_params(nullptr, &f.params); }},
      {"packkv_cache_get_params", kNull, "params NULL", INV, [](Fixture& f) { return packkv_cache_get_params(f.c, nullptr); }},
      {"packkv_cache_get_params", kSize, "params->struct_size 0", VER,
       [](Fixture& f) {
         f.params.struct_size = 0;
         const packkv_status_t st = packkv_cache_get_params(f.c, &f.params);
         f.params.struct_size = sizeof f.params;
         return st;
       }},
      {"packkv_cache_get_params", kShape, "params->struct_size 32 (older than V1)", VER,
       [](Fixture& f) {
         f.params.struct_size = 32;
         const packkv_status_t st = packkv_cache_get_params(f.c, &f.params);
         f.params.struct_size = sizeof f.params;
         return st;
       }},
      // ---- packkv_cache_device
      {"packkv_cache_device", kNull, "cache NULL", INV, [](Fixture& f) { return packkv_cache_device(nullptr, &f.i32); }},
      {"packkv_cache_device", kNull, "device NULL", INV, [](Fixture& f) { return packkv_cache_device(f.c, nullptr); }},
      // ---- packkv_cache_append
      {"packkv_cache_append", kNull, "cache NULL", INV,
       [](Fixture& f) { return packkv_cache_append(nullptr, 1, f.ids, &one_token, f.k.data(), f.v.data(), PACKKV_DTYPE_F32, nullptr); }},
      {"packkv_cache_append", kNull, "h_seq_ids NULL", INV,
       [](Fixture& f) { return packkv_cache_append(f.c, 1, nullptr, &one_token, f.k.data(), f.v.data(), PACKKV_DTYPE_F32, nullptr); }},
      {"packkv_cache_append", kNull, "h_n_tokens NULL", INV,
       [](Fixture& f) { return packkv_cache_append(f.c, 1, f.ids, nullptr, f.k.data(), f.v.data(), PACKKV_DTYPE_F32, nullptr); }},
      {"packkv_cache_append", kNull, "k_new NULL", INV,
       [](Fixture& f) { return packkv_cache_append(f.c, 1, f.ids, &one_token, nullptr, f.v.data(), PACKKV_DTYPE_F32, nullptr); }},
      {"packkv_cache_append", kNull, "v_new NULL", INV,
       [](Fixture& f) { return packkv_cache_append(f.c, 1, f.ids, &one_token, f.k.data(), nullptr, PACKKV_DTYPE_F32, nullptr); }},
      {"packkv_cache_append", kSize, "n_seqs 0", INV,
       [](Fixture& f) { return packkv_cache_append(f.c, 0, f.ids, &one_token, f.k.data(), f.v.data(), PACKKV_DTYPE_F32, nullptr); }},
      {"packkv_cache_append", kSize, "n_seqs -1", INV,
       [](Fixture& f) { return packkv_cache_append(f.c, -1, f.ids, &one_token, f.k.data(), f.v.data(), PACKKV_DTYPE_F32, nullptr); }},
      {"packkv_cache_append", kSize, "h_n_tokens[1] = -1 in a batch", INV,
       [](Fixture& f) {
         int32_t n[2] = {5, -1};
         return packkv_cache_append(f.c, 2, f.ids, n, f.k.data(), f.v.data(), PACKKV_DTYPE_F32, nullptr);
       }},
      {"packkv_cache_append", kShape, "a sequence id repeated in h_seq_ids", INV,
       [](Fixture& f) {
         int32_t ids[2] = {1, 1}, n[2] = {1, 1};
         return packkv_cache_append(f.c, 2, ids, n, f.k.data(), f.v.data(), PACKKV_DTYPE_F32, nullptr);
       }},
      {"packkv_cache_append", kShape, "n_seqs > max_seqs", INV,
       [](Fixture& f) {
         int32_t ids[4] = {0, 1, 2, 0}, n[4] = {1, 1, 1, 1};
         return packkv_cache_append(f.c, 4, ids, n, f.k.data(), f.v.data(), PACKKV_DTYPE_F32, nullptr);
       }},
      {"packkv_cache_append", kUnsupported, "dtype 3", INV, [](Fixture& f) { return append_one(f, 1, 3); }},
      {"packkv_cache_append", kUnsupported, "dtype -1", INV, [](Fixture& f) { return append_one(f, 1, -1); }},
      {"packkv_cache_append", kCapacity, "one sequence over max_tokens_per_seq", CAP,
       [](Fixture& f) {
         int32_t id = 0, n = (int32_t)(kMaxTokens - 300 + 1);
         return packkv_cache_append(f.c, 1, &id, &n, f.k.data(), f.v.data(), PACKKV_DTYPE_F32, nullptr);
       }},
      {"packkv_cache_append", kCapacity, "second sequence of a batch over capacity (first would flush)", CAP,
       [](Fixture& f) {
         int32_t ids[2] = {1, 2}, n[2] = {100, (int32_t)kMaxTokens + 1};
         std::vector<float> k((size_t)(n[0] + n[1]) * kRow, 0.5f);
         return packkv_cache_append(f.c, 2, ids, n, k.data(), k.data(), PACKKV_DTYPE_F32, nullptr);
       }},
      {"packkv_cache_append", kCapacity, "h_n_tokens INT32_MAX", CAP,
       [](Fixture& f) {
         int32_t id = 2, n = INT32_MAX;
         return packkv_cache_append(f.c, 1, &id, &n, f.k.data(), f.v.data(), PACKKV_DTYPE_F32, nullptr);
       }},
  };
  for (int32_t bad : kBadIds) {
    m.push_back({"packkv_cache_append", kSeqId, "seq id out of range", INV, [bad](Fixture& f) { return append_one(f, bad); }});
    m.push_back({"packkv_cache_remove_seq", kSeqId, "seq id out of range", INV,
                 [bad](Fixture& f) { return packkv_cache_remove_seq(f.c, bad); }});
    m.push_back({"packkv_cache_seq_length", kSeqId, "seq id out of range", INV,
                 [bad](Fixture& f) { return packkv_cache_seq_length(f.c, bad, &f.i64); }});
    if (bad != -1)
      m.push_back({"packkv_cache_stats", kSeqId, "seq id out of range (not -1)", INV,
                   [bad](Fixture& f) { return packkv_cache_stats(f.c, bad, &f.stats); }});
    m.push_back({"packkv_cache_decompress", kSeqId, "seq id out of range", INV,
                 [bad](Fixture& f) { return packkv_cache_decompress(f.c, bad, f.k_out.data(), f.v_out.data(), kMaxTokens, nullptr); }});
    m.push_back({"packkv_attn_scores", kSeqId, "seq id out of range", INV, [bad](Fixture& f) {
                   const int32_t ids[2] = {0, bad};
                   return scores_with(f, 2, ids, kHq, f.q.data(), PACKKV_DTYPE_F32, f.scores.data(), 300);
                 }});
    m.push_back({"packkv_attn_apply", kSeqId, "seq id out of range", INV, [bad](Fixture& f) {
                   const int32_t ids[2] = {bad, 0};
                   return apply_with(f, 2, ids, kHq, f.probs.data(), 300, f.out.data());
                 }});
    m.push_back({"packkv_attn_decode", kSeqId, "seq id out of range", INV, [bad](Fixture& f) {
                   return decode_with(f, 1, &bad, kHq, f.q.data(), PACKKV_DTYPE_F32, 0.125f, f.out.data());
                 }});
  }
  const float bad_values[] = {nan, inf, -inf, 1e6f /* overflows the fp16 residual window */};
  for (float x : bad_values)
    for (int kv = 0; kv < 2; ++kv)
      m.push_back({"packkv_cache_append", kNonFinite, kv ? "bad value in V of the 2nd sequence of a batch" : "bad value in K of the 2nd sequence of a batch", INV,
                   [x, kv](Fixture& f) {
                     int32_t ids[2] = {1, 2}, n[2] = {100, 7};  // sequence 1 alone would flush a block
                     const size_t at = (size_t)(100 + 6) * kRow + 3;
                     const std::vector<float> k = kv == 0 ? with_value(f.k, at, x) : f.k;
                     const std::vector<float> v = kv == 1 ? with_value(f.v, at, x) : f.v;
                     return packkv_cache_append(f.c, 2, ids, n, k.data(), v.data(), PACKKV_DTYPE_F32, nullptr);
                   }});
  m.push_back({"packkv_cache_append", kNonFinite, "NaN in fp16 input", INV, [](Fixture& f) {
                 std::vector<uint16_t> h(kRow, 0x3c00), hv(kRow, 0x3c00);
                 h[5] = 0x7e00;  // fp16 NaN
                 int32_t id = 1;
                 return packkv_cache_append(f.c, 1, &id, &one_token, h.data(), hv.data(), PACKKV_DTYPE_F16, nullptr);
               }});
  m.push_back({"packkv_cache_append", kNonFinite, "inf in bf16 input", INV, [](Fixture& f) {
                 std::vector<uint16_t> h(kRow, 0x3f80), hv(kRow, 0x3f80);
                 hv[9] = 0xff80;  // bf16 -inf
                 int32_t id = 1;
                 return packkv_cache_append(f.c, 1, &id, &one_token, h.data(), hv.data(), PACKKV_DTYPE_BF16, nullptr);
               }});
  const std::vector<Case> more = {
      // ---- packkv_cache_remove_seq, reset, sync
      {"packkv_cache_remove_seq", kNull, "cache NULL", INV, [](Fixture&) { return packkv_cache_remove_seq(nullptr, 0); }},
      {"packkv_cache_reset", kNull, "cache NULL", INV, [](Fixture&) { return packkv_cache_reset(nullptr); }},
      {"packkv_cache_sync", kNull, "cache NULL", INV, [](Fixture&) { return packkv_cache_sync(nullptr); }},
      // ---- packkv_cache_seq_length
      {"packkv_cache_seq_length", kNull, "cache NULL", INV, [](Fixture& f) { return packkv_cache_seq_length(nullptr, 0, &f.i64); }},
      {"packkv_cache_seq_length", kNull, "n_tokens NULL", INV, [](Fixture& f) { return packkv_cache_seq_length(f.c, 0, nullptr); }},
      // ---- packkv_cache_stats
      {"packkv_cache_stats", kNull, "cache NULL", INV, [](Fixture& f) { return packkv_cache_stats(nullptr, -1, &f.stats); }},
      {"packkv_cache_stats", kNull, "stats NULL", INV, [](Fixture& f) { return packkv_cache_stats(f.c, -1, nullptr); }},
      {"packkv_cache_stats", kSize, "stats->struct_size 0", VER,
       [](Fixture& f) {
         f.stats.struct_size = 0;
         const packkv_status_t st = packkv_cache_stats(f.c, -1, &f.stats);
         f.stats.struct_size = sizeof f.stats;
         return st;
       }},
      {"packkv_cache_stats", kShape, "stats->struct_size 119 (older than V1)", VER,
       [](Fixture& f) {
         f.stats.struct_size = PACKKV_CACHE_STATS_SIZE_V1 - 1;
         const packkv_status_t st = packkv_cache_stats(f.c, 0, &f.stats);
         f.stats.struct_size = sizeof f.stats;
         return st;
       }},
      // ---- packkv_cache_decompress
      {"packkv_cache_decompress", kNull, "cache NULL", INV,
       [](Fixture& f) { return packkv_cache_decompress(nullptr, 0, f.k_out.data(), f.v_out.data(), kMaxTokens, nullptr); }},
      {"packkv_cache_decompress", kSize, "capacity_tokens 0 for a non-empty sequence", CAP,
       [](Fixture& f) { return packkv_cache_decompress(f.c, 1, f.k_out.data(), f.v_out.data(), 0, nullptr); }},
      {"packkv_cache_decompress", kSize, "capacity_tokens -1", INV,
       [](Fixture& f) { return packkv_cache_decompress(f.c, 2, f.k_out.data(), f.v_out.data(), -1, nullptr); }},
      {"packkv_cache_decompress", kCapacity, "capacity_tokens one short", CAP,
       [](Fixture& f) { return packkv_cache_decompress(f.c, 0, f.k_out.data(), f.v_out.data(), 299, nullptr); }},
      {"packkv_cache_decompress", kCapacity, "capacity_tokens one short, K only", CAP,
       [](Fixture& f) { return packkv_cache_decompress(f.c, 0, f.k_out.data(), nullptr, 299, nullptr); }},
      // ---- packkv_attn_workspace_size
      {"packkv_attn_workspace_size", kNull, "cache NULL", INV, [](Fixture& f) { return packkv_attn_workspace_size(nullptr, 1, kHq, &f.bytes); }},
      {"packkv_attn_workspace_size", kNull, "bytes NULL", INV, [](Fixture& f) { return packkv_attn_workspace_size(f.c, 1, kHq, nullptr); }},
      {"packkv_attn_workspace_size", kSize, "n_seqs 0", INV, [](Fixture& f) { return packkv_attn_workspace_size(f.c, 0, kHq, &f.bytes); }},
      {"packkv_attn_workspace_size", kSize, "n_seqs -1", INV, [](Fixture& f) { return packkv_attn_workspace_size(f.c, -1, kHq, &f.bytes); }},
      {"packkv_attn_workspace_size", kSize, "n_q_heads 0", INV, [](Fixture& f) { return packkv_attn_workspace_size(f.c, 1, 0, &f.bytes); }},
      {"packkv_attn_workspace_size", kSize, "n_q_heads -2", INV, [](Fixture& f) { return packkv_attn_workspace_size(f.c, 1, -2, &f.bytes); }},
      {"packkv_attn_workspace_size", kShape, "n_q_heads 3 (not a multiple of n_kv_heads 2)", INV, [](Fixture& f) { return packkv_attn_workspace_size(f.c, 1, 3, &f.bytes); }},
      {"packkv_attn_workspace_size", kCapacity, "n_seqs > max_seqs", INV, [](Fixture& f) { return packkv_attn_workspace_size(f.c, kSeqs + 1, kHq, &f.bytes); }},
      // ---- packkv_attn_scores
      {"packkv_attn_scores", kNull, "cache NULL", INV,
       [](Fixture& f) { return packkv_attn_scores(nullptr, 1, f.ids, kHq, f.q.data(), PACKKV_DTYPE_F32, f.scores.data(), 300, nullptr, 0, nullptr); }},
      {"packkv_attn_scores", kNull, "h_seq_ids NULL", INV, [](Fixture& f) { return scores_with(f, 1, nullptr, kHq, f.q.data(), PACKKV_DTYPE_F32, f.scores.data(), 300); }},
      {"packkv_attn_scores", kNull, "q NULL", INV, [](Fixture& f) { return scores_with(f, 1, f.ids, kHq, nullptr, PACKKV_DTYPE_F32, f.scores.data(), 300); }},
      {"packkv_attn_scores", kNull, "scores NULL", INV, [](Fixture& f) { return scores_with(f, 1, f.ids, kHq, f.q.data(), PACKKV_DTYPE_F32, nullptr, 300); }},
      {"packkv_attn_scores", kSize, "n_seqs 0", INV, [](Fixture& f) { return scores_with(f, 0, f.ids, kHq, f.q.data(), PACKKV_DTYPE_F32, f.scores.data(), 300); }},
      {"packkv_attn_scores", kSize, "n_seqs -1", INV, [](Fixture& f) { return scores_with(f, -1, f.ids, kHq, f.q.data(), PACKKV_DTYPE_F32, f.scores.data(), 300); }},
      {"packkv_attn_scores", kSize, "n_q_heads 0", INV, [](Fixture& f) { return scores_with(f, 1, f.ids, 0, f.q.data(), PACKKV_DTYPE_F32, f.scores.data(), 300); }},
      {"packkv_attn_scores", kSize, "ld_scores 0 (sequence 0 holds 300 tokens)", INV, [](Fixture& f) { return scores_with(f, 1, f.ids, kHq, f.q.data(), PACKKV_DTYPE_F32, f.scores.data(), 0); }},
      {"packkv_attn_scores", kSize, "ld_scores -1", INV, [](Fixture& f) { return scores_with(f, 1, f.ids + 2, kHq, f.q.data(), PACKKV_DTYPE_F32, f.scores.data(), -1); }},
      {"packkv_attn_scores", kShape, "n_q_heads 3 (not a multiple of n_kv_heads)", INV, [](Fixture& f) { return scores_with(f, 1, f.ids, 3, f.q.data(), PACKKV_DTYPE_F32, f.scores.data(), 300); }},
      {"packkv_attn_scores", kShape, "a sequence id repeated", INV, [](Fixture& f) {
         const int32_t ids[2] = {1, 1};
         return scores_with(f, 2, ids, kHq, f.q.data(), PACKKV_DTYPE_F32, f.scores.data(), 300);
       }},
      {"packkv_attn_scores", kUnsupported, "q_dtype 3", INV, [](Fixture& f) { return scores_with(f, 1, f.ids, kHq, f.q.data(), 3, f.scores.data(), 300); }},
      {"packkv_attn_scores", kCapacity, "ld_scores one short of the longest sequence", INV, [](Fixture& f) {
         const int32_t ids[2] = {1, 0};
         return scores_with(f, 2, ids, kHq, f.q.data(), PACKKV_DTYPE_F32, f.scores.data(), 299);
       }},
      // ---- packkv_attn_apply
      {"packkv_attn_apply", kNull, "cache NULL", INV,
       [](Fixture& f) { return packkv_attn_apply(nullptr, 1, f.ids, kHq, f.probs.data(), 300, f.out.data(), nullptr, 0, nullptr); }},
      {"packkv_attn_apply", kNull, "h_seq_ids NULL", INV, [](Fixture& f) { return apply_with(f, 1, nullptr, kHq, f.probs.data(), 300, f.out.data()); }},
      {"packkv_attn_apply", kNull, "probs NULL", INV, [](Fixture& f) { return apply_with(f, 1, f.ids, kHq, nullptr, 300, f.out.data()); }},
      {"packkv_attn_apply", kNull, "out NULL", INV, [](Fixture& f) { return apply_with(f, 1, f.ids, kHq, f.probs.data(), 300, nullptr); }},
      {"packkv_attn_apply", kSize, "n_seqs 0", INV, [](Fixture& f) { return apply_with(f, 0, f.ids, kHq, f.probs.data(), 300, f.out.data()); }},
      {"packkv_attn_apply", kSize, "n_q_heads -4", INV, [](Fixture& f) { return apply_with(f, 1, f.ids, -4, f.probs.data(), 300, f.out.data()); }},
      {"packkv_attn_apply", kSize, "ld_probs 0 (sequence 0 holds 300 tokens)", INV, [](Fixture& f) { return apply_with(f, 1, f.ids, kHq, f.probs.data(), 0, f.out.data()); }},
      {"packkv_attn_apply", kShape, "n_q_heads 5 (not a multiple of n_kv_heads)", INV, [](Fixture& f) { return apply_with(f, 1, f.ids, 5, f.probs.data(), 300, f.out.data()); }},
      {"packkv_attn_apply", kShape, "a sequence id repeated", INV, [](Fixture& f) {
         const int32_t ids[3] = {0, 2, 0};
         return apply_with(f, 3, ids, kHq, f.probs.data(), 300, f.out.data());
       }},
      {"packkv_attn_apply", kCapacity, "ld_probs one short of the longest sequence", INV, [](Fixture& f) { return apply_with(f, 1, f.ids, kHq, f.probs.data(), 299, f.out.data()); }},
      // ---- packkv_attn_decode
      {"packkv_attn_decode", kNull, "cache NULL", INV,
       [](Fixture& f) { return packkv_attn_decode(nullptr, 1, f.ids, kHq, f.q.data(), PACKKV_DTYPE_F32, 0.125f, f.out.data(), f.lse.data(), nullptr, 0, nullptr); }},
      {"packkv_attn_decode", kNull, "h_seq_ids NULL", INV, [](Fixture& f) { return decode_with(f, 1, nullptr, kHq, f.q.data(), PACKKV_DTYPE_F32, 0.125f, f.out.data()); }},
      {"packkv_attn_decode", kNull, "q NULL", INV, [](Fixture& f) { return decode_with(f, 1, f.ids, kHq, nullptr, PACKKV_DTYPE_F32, 0.125f, f.out.data()); }},
      {"packkv_attn_decode", kNull, "out NULL", INV, [](Fixture& f) { return decode_with(f, 1, f.ids, kHq, f.q.data(), PACKKV_DTYPE_F32, 0.125f, nullptr); }},
      {"packkv_attn_decode", kSize, "n_seqs -1", INV, [](Fixture& f) { return decode_with(f, -1, f.ids, kHq, f.q.data(), PACKKV_DTYPE_F32, 0.125f, f.out.data()); }},
      {"packkv_attn_decode", kSize, "n_q_heads 0", INV, [](Fixture& f) { return decode_with(f, 1, f.ids, 0, f.q.data(), PACKKV_DTYPE_F32, 0.125f, f.out.data()); }},
      {"packkv_attn_decode", kSize, "scale 0", INV, [](Fixture& f) { return decode_with(f, 1, f.ids, kHq, f.q.data(), PACKKV_DTYPE_F32, 0.0f, f.out.data()); }},
      {"packkv_attn_decode", kSize, "scale -1", INV, [](Fixture& f) { return decode_with(f, 1, f.ids, kHq, f.q.data(), PACKKV_DTYPE_F32, -1.0f, f.out.data()); }},
      {"packkv_attn_decode", kShape, "n_q_heads 7 (not a multiple of n_kv_heads)", INV, [](Fixture& f) { return decode_with(f, 1, f.ids, 7, f.q.data(), PACKKV_DTYPE_F32, 0.125f, f.out.data()); }},
      {"packkv_attn_decode", kShape, "n_seqs > max_seqs (ids repeat)", INV, [](Fixture& f) {
         const int32_t ids[4] = {0, 1, 2, 1};
         return decode_with(f, 4, ids, kHq, f.q.data(), PACKKV_DTYPE_F32, 0.125f, f.out.data());
       }},
      {"packkv_attn_decode", kUnsupported, "q_dtype -1", INV, [](Fixture& f) { return decode_with(f, 1, f.ids, kHq, f.q.data(), -1, 0.125f, f.out.data()); }},
      {"packkv_attn_decode", kNonFinite, "scale NaN", INV, [nan](Fixture& f) { return decode_with(f, 1, f.ids, kHq, f.q.data(), PACKKV_DTYPE_F32, nan, f.out.data()); }},
      {"packkv_attn_decode", kNonFinite, "scale inf", INV, [inf](Fixture& f) { return decode_with(f, 1, f.ids, kHq, f.q.data(), PACKKV_DTYPE_F32, inf, f.out.data()); }},
  };
  m.insert(m.end(), more.begin(), more.end());
  m.push_back({"packkv_cache_create", kShape, "a newer struct_size with a field this version does not know", NSUP,
               [](Fixture& f) {
                 struct Newer {
                   packkv_cache_params_t v1;
                   int32_t future_field, pad;
                 } n;
                 REQUIRE(packkv_cache_params_init(&n.v1, sizeof n) == PACKKV_OK);
                 n.future_field = 1;
                 packkv_cache_t* c = reinterpret_cast<packkv_cache_t*>(&f);
                 const packkv_status_t st = packkv_cache_create(&n.v1, &c);
                 return c == nullptr ? st : PACKKV_ERR_INTERNAL;
               }});
  if (!packkv_has_cuda())
    m.push_back({"packkv_cache_create", kUnsupported, "device 0 without a CUDA backend or device", NSUP,
                 [](Fixture& f) { return create_with(f, [](packkv_cache_params_t* p) { p->device = 0; }); }});
  return m;
}

// Cells without a case.
const std::vector<NotApplicable>& not_applicable() {
  static const std::vector<NotApplicable> na = {
      {"packkv_version_number", kNumClasses, "no arguments; cannot fail"},
      {"packkv_version_string", kNumClasses, "no arguments; cannot fail"},
      {"packkv_build_info", kNumClasses, "no arguments; cannot fail"},
      {"packkv_has_cuda", kNumClasses, "no arguments; cannot fail"},
      {"packkv_last_error_message", kNumClasses, "no arguments; cannot fail"},
      {"packkv_status_string", kNumClasses, "every int32 is valid (unknown values give \"unknown status\")"},
      {"packkv_copy_last_error", kNumClasses, "returns a length, no status; buf NULL with cap 0 is documented valid"},
      {"packkv_cache_destroy", kNumClasses, "returns nothing; NULL is documented valid"},
      {"packkv_cache_params_init", kUnsupported, "no dtype/shape argument"},
      {"packkv_cache_params_init", kSeqId, "no sequence argument"},
      {"packkv_cache_params_init", kCapacity, "a larger struct_size is valid (newer caller)"},
      {"packkv_cache_params_init", kNonFinite, "no floating-point argument"},
      {"packkv_bits_for_rel_scale", kShape, "scalar argument"},
      {"packkv_bits_for_rel_scale", kSeqId, "no sequence argument"},
      {"packkv_bits_for_rel_scale", kCapacity, "no capacity"},
      {"packkv_cache_create", kSeqId, "no sequence argument"},
      {"packkv_cache_get_params", kUnsupported, "reads a valid cache"},
      {"packkv_cache_get_params", kSeqId, "no sequence argument"},
      {"packkv_cache_get_params", kCapacity, "a larger struct_size is valid (tail zeroed)"},
      {"packkv_cache_get_params", kNonFinite, "no floating-point input"},
      {"packkv_cache_device", kSize, "no size argument"},
      {"packkv_cache_device", kShape, "no shape argument"},
      {"packkv_cache_device", kUnsupported, "no dtype argument"},
      {"packkv_cache_device", kSeqId, "no sequence argument"},
      {"packkv_cache_device", kCapacity, "no capacity"},
      {"packkv_cache_device", kNonFinite, "no floating-point input"},
      {"packkv_cache_remove_seq", kSize, "no size argument"},
      {"packkv_cache_remove_seq", kShape, "no shape argument"},
      {"packkv_cache_remove_seq", kUnsupported, "no dtype argument"},
      {"packkv_cache_remove_seq", kCapacity, "removal frees capacity"},
      {"packkv_cache_remove_seq", kNonFinite, "no floating-point input"},
      {"packkv_cache_reset", kSize, "only the cache argument"},
      {"packkv_cache_reset", kShape, "only the cache argument"},
      {"packkv_cache_reset", kUnsupported, "only the cache argument"},
      {"packkv_cache_reset", kSeqId, "only the cache argument"},
      {"packkv_cache_reset", kCapacity, "only the cache argument"},
      {"packkv_cache_reset", kNonFinite, "only the cache argument"},
      {"packkv_cache_sync", kSize, "only the cache argument"},
      {"packkv_cache_sync", kShape, "only the cache argument"},
      {"packkv_cache_sync", kUnsupported, "only the cache argument"},
      {"packkv_cache_sync", kSeqId, "only the cache argument"},
      {"packkv_cache_sync", kCapacity, "only the cache argument"},
      {"packkv_cache_sync", kNonFinite, "a CPU cache has no asynchronous errors (GPU: tests/gpu)"},
      {"packkv_cache_seq_length", kSize, "no size argument"},
      {"packkv_cache_seq_length", kShape, "no shape argument"},
      {"packkv_cache_seq_length", kUnsupported, "no dtype argument"},
      {"packkv_cache_seq_length", kCapacity, "no capacity"},
      {"packkv_cache_seq_length", kNonFinite, "no floating-point input"},
      {"packkv_cache_stats", kUnsupported, "no dtype argument"},
      {"packkv_cache_stats", kCapacity, "a larger struct_size is valid (tail zeroed)"},
      {"packkv_cache_stats", kNonFinite, "no floating-point input"},
      {"packkv_cache_decompress", kNull, "k_out / v_out NULL are documented as 'skip'"},
      {"packkv_cache_decompress", kShape, "output shape follows the cache"},
      {"packkv_cache_decompress", kUnsupported, "output is always fp32"},
      {"packkv_cache_decompress", kNonFinite, "no floating-point input"},
      {"packkv_attn_workspace_size", kUnsupported, "no dtype argument"},
      {"packkv_attn_workspace_size", kSeqId, "takes a count, not ids"},
      {"packkv_attn_workspace_size", kNonFinite, "no floating-point input"},
      {"packkv_attn_scores", kNonFinite,
       "queries are not validated (documented nowhere as required finite); NaN q gives NaN scores, the cache is untouched"},
      {"packkv_attn_apply", kUnsupported, "probs are always fp32"},
      {"packkv_attn_apply", kNonFinite, "probabilities are not validated (caller data)"},
      {"packkv_attn_decode", kCapacity,
       "outputs are [n_seqs][n_q_heads][head_dim]: no stride; WORKSPACE_TOO_SMALL cannot occur on the CPU (size 0)"},
  };
  return na;
}

// Edge-argument sanity checks of the functions without a status.
std::vector<Infallible> infallible() {
  return {
      {"packkv_version_number", "major matches the header", [](Fixture&) { return packkv_version_number() / 10000 == PACKKV_VERSION_MAJOR; }},
      {"packkv_version_string", "non-empty static string", [](Fixture&) { return packkv_version_string()[0] != '\0'; }},
      {"packkv_build_info", "non-empty static string", [](Fixture&) { return packkv_build_info()[0] != '\0'; }},
      {"packkv_has_cuda", "0 or 1", [](Fixture&) { const int32_t h = packkv_has_cuda(); return h == 0 || h == 1; }},
      {"packkv_status_string", "unknown values", [](Fixture&) {
         for (packkv_status_t s : {-1, 12, 1000, INT32_MIN, INT32_MAX})
           if (std::string(packkv_status_string(s)) != "unknown status") return false;
         return true;
       }},
      {"packkv_last_error_message", "never NULL", [](Fixture&) { return packkv_last_error_message() != nullptr; }},
      {"packkv_copy_last_error", "buf NULL with cap 0; cap 1 writes only the NUL", [](Fixture&) {
         packkv_cache_reset(nullptr);  // some message
         const size_t n = std::strlen(packkv_last_error_message());
         char one[2] = {'x', 'y'};
         return n > 0 && packkv_copy_last_error(nullptr, 0) == n && packkv_copy_last_error(one, 1) == n && one[0] == '\0' &&
                one[1] == 'y';
       }},
      {"packkv_cache_destroy", "NULL", [](Fixture&) { packkv_cache_destroy(nullptr); return true; }},
  };
}

// packkv_* functions declared in the public header.
std::set<std::string> header_functions() {
  std::ifstream in(PACKKV_PUBLIC_HEADER);
  REQUIRE_MESSAGE(in.good(), "cannot read " << PACKKV_PUBLIC_HEADER);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  const std::regex decl(R"(PACKKV_API\s+[^;(]*?\b(packkv_[A-Za-z0-9_]+)\s*\()");
  std::set<std::string> names;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), decl); it != std::sregex_iterator(); ++it)
    names.insert((*it)[1].str());
  return names;
}

}  // namespace

TEST_CASE("bad-input matrix: covers every exported function and every class of bad argument") {
  const std::set<std::string> exported = header_functions();
  REQUIRE(exported.size() >= 20);
  std::map<std::string, std::set<int>> covered;  // function -> classes with a case or an N/A
  for (const Case& c : cases()) covered[c.fn].insert(c.cls);
  for (const NotApplicable& n : not_applicable()) {
    if (n.cls == kNumClasses)
      for (int k = 0; k < kNumClasses; ++k) covered[n.fn].insert(k);
    else
      covered[n.fn].insert(n.cls);
  }
  for (const Infallible& i : infallible()) CHECK_MESSAGE(covered.count(i.fn), i.fn << " has a sanity check but no matrix row");
  for (const std::string& fn : exported) {
    CAPTURE(fn);
    REQUIRE_MESSAGE(covered.count(fn), fn << " is exported by packkv.h but missing from the bad-input matrix");
    for (int k = 0; k < kNumClasses; ++k)
      CHECK_MESSAGE(covered[fn].count(k), fn << ": no case and no 'not applicable' for class '" << kClassName[k] << "'");
  }
  for (const auto& kv : covered)
    CHECK_MESSAGE(exported.count(kv.first), kv.first << " is in the matrix but not declared in packkv.h");
}

TEST_CASE("bad-input matrix: expected status, a message naming the function, cache and outputs unchanged") {
  Fixture f;
  const Snapshot before = snapshot(f.c);
  int n = 0;
  for (const Case& c : cases()) {
    CAPTURE(c.fn);
    CAPTURE(kClassName[c.cls]);
    CAPTURE(c.what);
    f.reset_outputs();
    const packkv_status_t st = c.call(f);
    const std::string msg = packkv_last_error_message();
    CHECK_MESSAGE(st == c.expect, "got " << packkv_status_string(st) << " (" << msg << ")");
    CHECK(!msg.empty());
    CHECK_MESSAGE(msg.find(c.fn) != std::string::npos, "message does not name the function: " << msg);
    std::vector<char> copy(msg.size() + 1, 'x');
    CHECK(packkv_copy_last_error(copy.data(), copy.size()) == msg.size());
    CHECK(std::string(copy.data()) == msg);
    CHECK(f.outputs_untouched());
    CHECK(snapshot(f.c).same_as(before));
    ++n;
  }
  MESSAGE(n << " bad-input cases");
  // and the fixture still works
  int32_t id = 0;
  std::vector<float> out((size_t)kHq * kD);
  CHECK(packkv_attn_decode(f.c, 1, &id, kHq, f.q.data(), PACKKV_DTYPE_F32, 0.125f, out.data(), nullptr, nullptr, 0,
                           nullptr) == PACKKV_OK);
  CHECK(std::string(packkv_last_error_message()).empty());
}

TEST_CASE("bad-input matrix: functions without a status behave on edge arguments") {
  Fixture f;
  const Snapshot before = snapshot(f.c);
  for (const Infallible& i : infallible()) {
    CAPTURE(i.fn);
    CAPTURE(i.what);
    CHECK(i.check(f));
  }
  CHECK(snapshot(f.c).same_as(before));
}
