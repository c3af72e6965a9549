// libFuzzer harness: random sequences of C API calls (packkv.h) on up to three CPU
// caches, with random (often invalid) parameters and shapes, and appends of
// non-finite, huge, subnormal and ordinary values, interleaved with attention calls.
//
// Every buffer handed to the library has exactly the size the call's documented
// arguments imply, so ASan reports any access outside it. Invariants checked after
// every call (abort = finding):
//   - the status is a known code; failure <=> a non-empty last-error message;
//   - a failed call leaves the cache unchanged (stats and sequence lengths) and does
//     not write its outputs;
//   - a successful append adds exactly the requested tokens, never stores a
//     non-finite value (decompress of the sequence is finite), and is rejected when
//     the input holds NaN or infinity;
//   - decode attention over finite, moderate data with finite queries is finite.
// Input: a program of one-byte opcodes followed by their arguments (fuzz_input.h).
#include <stddef.h>
#include <stdint.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "fuzz_input.h"
#include "packkv/packkv.h"

namespace {

constexpr int kSlots = 3;
constexpr float kSentinel = -12345.0f;

// A live cache and what the harness knows about it.
struct Slot {
  packkv_cache_t* c = nullptr;
  packkv_cache_params_t p{};  // effective params (get_params)
  bool tame = true;           // every stored value has |x| <= 1e4
};

// Checks the status / last-error contract of the call that just returned `st`.
void check_status(packkv_status_t st) {
  PKFUZZ_CHECK(st >= PACKKV_OK && st <= PACKKV_ERR_INTERNAL);
  PKFUZZ_CHECK(st != PACKKV_ERR_INTERNAL);  // internal errors are library bugs
  const std::string msg = packkv_last_error_message();
  if (st == PACKKV_OK)
    PKFUZZ_CHECK(msg.empty());
  else
    PKFUZZ_CHECK(!msg.empty());
  PKFUZZ_CHECK(packkv_copy_last_error(nullptr, 0) == msg.size());
}

// Observable state of a cache: all-sequence stats and every sequence length.
struct State {
  packkv_cache_stats_t stats;
  std::vector<int64_t> lens;
  bool operator==(const State& o) const {
    return std::memcmp(&stats, &o.stats, sizeof stats) == 0 && lens == o.lens;
  }
};

State state_of(const Slot& s) {
  State st;
  std::memset(&st.stats, 0, sizeof st.stats);
  st.stats.struct_size = sizeof st.stats;
  PKFUZZ_CHECK(packkv_cache_stats(s.c, -1, &st.stats) == PACKKV_OK);
  for (int i = 0; i < s.p.max_seqs; ++i) {
    int64_t n = -1;
    PKFUZZ_CHECK(packkv_cache_seq_length(s.c, i, &n) == PACKKV_OK);
    st.lens.push_back(n);
  }
  return st;
}

bool valid_dtype(packkv_dtype_t d) { return d >= PACKKV_DTYPE_F16 && d <= PACKKV_DTYPE_F32; }

// Converts floats to `dtype` bytes (invalid dtypes: fp32 bytes).
std::vector<uint8_t> encode_as(const std::vector<float>& x, packkv_dtype_t dtype) {
  std::vector<uint8_t> out;
  if (dtype == PACKKV_DTYPE_F16 || dtype == PACKKV_DTYPE_BF16) {
    out.resize(x.size() * 2);
    packkv::from_float(x.data(), x.size(), dtype, out.data());
  } else {
    out.resize(x.size() * 4);
    if (!x.empty()) std::memcpy(out.data(), x.data(), out.size());
  }
  return out;
}

// True if some value of the converted input is NaN or infinite.
bool has_non_finite(const std::vector<uint8_t>& bytes, packkv_dtype_t dtype, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(packkv::load_as_float(bytes.data(), dtype, i))) return true;
  return false;
}

class Program {
 public:
  explicit Program(pkfuzz::Reader& r) : r_(r) {}
  ~Program() {
    for (Slot& s : slots_) packkv_cache_destroy(s.c);
  }

  /// Runs one opcode.
  void step() {
    const uint8_t op = r_.u8();
    switch (op % 16) {
      case 0: create(); break;
      case 1: destroy(); break;
      case 2:
      case 3: append(); break;
      case 4: attention(0); break;
      case 5: attention(1); break;
      case 6: attention(2); break;
      case 7: workspace(); break;
      case 8: stats(); break;
      case 9: decompress(); break;
      case 10: remove_or_reset(); break;
      case 11: params_and_device(); break;
      case 12: strings(); break;
      case 13: bits(); break;
      case 14: seq_length(); break;
      default: append(); break;
    }
  }

 private:
  // The slot the next byte names, or nullptr (a NULL cache argument) when it is empty.
  Slot* slot() {
    const uint8_t b = r_.u8();
    Slot& s = slots_[b % kSlots];
    return s.c ? &s : nullptr;
  }

  // A sequence id: usually valid, sometimes -1, max_seqs or far out.
  int32_t seq_id(const Slot* s) {
    const int max = s ? s->p.max_seqs : 1;
    const uint8_t b = r_.u8();
    if (b < 230) return b % max;
    const int32_t bad[] = {-1, max, max + 1, INT32_MIN, INT32_MAX, -2};
    return bad[b % 6];
  }

  void create() {
    // params live in a larger buffer: struct_size may claim more than sizeof(params)
    alignas(8) unsigned char raw[128];
    std::memset(raw, 0, sizeof raw);
    packkv_cache_params_t& p = *reinterpret_cast<packkv_cache_params_t*>(raw);
    const uint8_t how = r_.u8();
    uint32_t struct_size = sizeof p;
    if (how % 16 == 15) struct_size = r_.u8() % 96;  // too small, exact, or a newer caller's size
    check_status(packkv_cache_params_init(&p, sizeof p));
    p.struct_size = struct_size;
    if (how % 64 == 47) raw[sizeof p + r_.u8() % 32] = 1;  // a field unknown to this version
    const int32_t heads[] = {1, 2, 3, 1, 2, 0, -1, 5000};
    const int32_t dims[] = {32, 48, 64, 128, 256, 80, 16, 40, 272, 0};
    const int32_t seqs[] = {1, 2, 3, 1, 0, -1};
    const int32_t dtypes[] = {0, 1, 2, 0, 1, 2, 3, -1};
    const int64_t caps[] = {64, 200, 1000, 5000, 1, 0, -5, (int64_t)1 << 41};
    const float scales[] = {0.1f, 0.2f, 0.05f, 1.0f / 254.0f, 1.0f, 0.5f, 0.0f, NAN, INFINITY, 2.0f, 0.001f};
    const int32_t bitsv[] = {0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, -1};
    const int32_t blocks[] = {16, 32, 64, 128, 256, 48, 40, 272, 0};
    const int32_t resid[] = {0, 16, 64, 128, 7, -1};
    const int32_t devices[] = {-1, -1, -1, -1, 0, -2};
    p.n_kv_heads = r_.pick(heads);
    p.head_dim = r_.pick(dims);
    p.max_seqs = r_.pick(seqs);
    p.kv_dtype = r_.pick(dtypes);
    p.max_tokens_per_seq = r_.pick(caps);
    p.rel_scale_k = r_.pick(scales);
    p.rel_scale_v = r_.pick(scales);
    p.bits_k = r_.pick(bitsv);
    p.bits_v = r_.pick(bitsv);
    p.repack = r_.u8() % 4;
    p.scale_granularity = r_.u8() % 3;
    p.block_tokens = r_.pick(blocks);
    p.residual_tokens = r_.pick(resid);
    const int32_t sinks[] = {0, 0, 1, 4, 17, -1};
    p.sink_tokens = r_.pick(sinks);
    p.zs_format = r_.u8() % 3;  // compact, wide, invalid
    p.device = r_.pick(devices);
    packkv_cache_t* c = reinterpret_cast<packkv_cache_t*>(&p);  // must be overwritten
    const bool null_out = how % 32 == 30;
    const bool null_params = how % 32 == 31;
    const packkv_status_t st = packkv_cache_create(null_params ? nullptr : &p, null_out ? nullptr : &c);
    check_status(st);
    if (null_out || null_params) {
      PKFUZZ_CHECK(st == PACKKV_ERR_INVALID_ARGUMENT);
      if (!null_out) PKFUZZ_CHECK(c == nullptr);
      return;
    }
    if (st != PACKKV_OK) {
      PKFUZZ_CHECK(c == nullptr);
      return;
    }
    PKFUZZ_CHECK(c != nullptr);
    if (p.device >= 0) {  // a CUDA cache (CUDA build on a GPU machine): K/V would have to be
      packkv_cache_destroy(c);  // device memory, which this harness does not provide
      return;
    }
    Slot& s = slots_[how % kSlots];
    packkv_cache_destroy(s.c);
    s = Slot();
    s.c = c;
    s.p.struct_size = sizeof s.p;
    PKFUZZ_CHECK(packkv_cache_get_params(c, &s.p) == PACKKV_OK);
    PKFUZZ_CHECK(s.p.bits_k >= 1 && s.p.bits_k <= 8 && s.p.bits_v >= 1 && s.p.bits_v <= 8);
  }

  void destroy() {
    Slot& s = slots_[r_.u8() % kSlots];
    packkv_cache_destroy(s.c);  // NULL accepted
    s = Slot();
  }

  void append() {
    Slot* s = slot();
    const int max = s ? s->p.max_seqs : 1;
    int32_t n_seqs = r_.u8() % (max + 2);  // 0 and max + 1 are invalid
    if (r_.u8() == 255) n_seqs = -1;
    const int n = std::max(n_seqs, 0);
    std::vector<int32_t> ids(n), counts(n);
    for (int i = 0; i < n; ++i) ids[i] = seq_id(s);
    int64_t total = 0;
    for (int i = 0; i < n; ++i) {
      const uint16_t b = r_.u16();
      counts[i] = b >= 65000 ? -(int32_t)(b % 7) - 1 : (int32_t)(b % 300);
      if (b % 97 == 0) counts[i] = 1;
      total += std::max(counts[i], 0);
    }
    const int32_t dt_pick[] = {PACKKV_DTYPE_F32, PACKKV_DTYPE_F16, PACKKV_DTYPE_BF16, PACKKV_DTYPE_F32, 7};
    const packkv_dtype_t dtype = r_.pick(dt_pick);
    const int cls = r_.u8() % pkfuzz::kNumClasses;
    const uint32_t seed = r_.u32();
    const uint8_t nulls = r_.u8();
    const size_t row = s ? (size_t)s->p.n_kv_heads * s->p.head_dim : 32;
    std::vector<float> kf, vf;
    pkfuzz::fill_values(&kf, (size_t)total, row, cls, seed);
    pkfuzz::fill_values(&vf, (size_t)total, row, cls == pkfuzz::kNonFinite ? pkfuzz::kGaussian : cls, seed + 1);
    if (cls == pkfuzz::kNonFinite && (seed & 1)) std::swap(kf, vf);
    const std::vector<uint8_t> kb = encode_as(kf, dtype), vb = encode_as(vf, dtype);
    const bool bad_input = valid_dtype(dtype) && (has_non_finite(kb, dtype, kf.size()) || has_non_finite(vb, dtype, vf.size()));
    const void* kp = nulls == 1 ? nullptr : (kb.empty() ? nullptr : kb.data());
    const void* vp = nulls == 2 ? nullptr : (vb.empty() ? nullptr : vb.data());
    const int32_t* idp = nulls == 3 ? nullptr : ids.data();
    const int32_t* cntp = nulls == 4 ? nullptr : counts.data();
    if (n == 0) idp = nulls == 3 ? nullptr : &max;  // a valid pointer for n_seqs <= 0
    if (n == 0) cntp = nulls == 4 ? nullptr : &max;

    State before;
    if (s) before = state_of(*s);
    const packkv_status_t st = packkv_cache_append(s ? s->c : nullptr, n_seqs, idp, cntp, kp, vp, dtype, nullptr);
    check_status(st);
    if (!s) {
      PKFUZZ_CHECK(st == PACKKV_ERR_INVALID_ARGUMENT);
      return;
    }
    const State after = state_of(*s);
    if (st != PACKKV_OK) {
      PKFUZZ_CHECK(after == before);  // a failed append appends nothing
      return;
    }
    PKFUZZ_CHECK(!bad_input || total == 0);  // NaN / infinity must be rejected
    PKFUZZ_CHECK(after.stats.n_tokens == before.stats.n_tokens + total);
    for (int i = 0; i < n; ++i) PKFUZZ_CHECK(after.lens[ids[i]] == before.lens[ids[i]] + counts[i]);
    if (total == 0) return;
    if (cls == pkfuzz::kHuge || cls == pkfuzz::kFp16Limit || cls == pkfuzz::kMixed) s->tame = false;
    // nothing non-finite is ever stored
    const size_t row_vals = (size_t)s->p.n_kv_heads * s->p.head_dim;
    for (int i = 0; i < n; ++i) {
      const int64_t len = after.lens[ids[i]];
      if ((size_t)len * row_vals > ((size_t)1 << 18)) continue;  // keep one input fast
      std::vector<float> k((size_t)len * row_vals), v((size_t)len * row_vals);
      PKFUZZ_CHECK(packkv_cache_decompress(s->c, ids[i], k.data(), v.data(), len, nullptr) == PACKKV_OK);
      for (float x : k) PKFUZZ_CHECK(std::isfinite(x));
      for (float x : v) PKFUZZ_CHECK(std::isfinite(x));
    }
  }

  // kind 0: scores, 1: apply, 2: decode.
  void attention(int kind) {
    Slot* s = slot();
    const int max = s ? s->p.max_seqs : 1;
    const int hkv = s ? s->p.n_kv_heads : 1;
    const int d = s ? s->p.head_dim : 32;
    int32_t n_seqs = 1 + r_.u8() % (max + 1);
    if (r_.u8() == 255) n_seqs = 0;
    std::vector<int32_t> ids(std::max(n_seqs, 1));
    for (int32_t i = 0; i < n_seqs; ++i) ids[i] = seq_id(s);
    const uint8_t hq = r_.u8();
    int32_t n_q = hkv * (1 + hq % 3);
    if (hq >= 240) n_q = (int32_t)(hq % 5) - 1;  // -1..3: often not a multiple of n_kv_heads
    const int32_t dt_pick[] = {PACKKV_DTYPE_F32, PACKKV_DTYPE_F16, PACKKV_DTYPE_BF16, 3};
    const packkv_dtype_t q_dtype = r_.pick(dt_pick);
    int64_t longest = 0;
    bool ids_ok = s != nullptr;
    for (int32_t i = 0; i < n_seqs && s; ++i) {
      int64_t len = 0;
      if (ids[i] >= 0 && ids[i] < max && packkv_cache_seq_length(s->c, ids[i], &len) == PACKKV_OK)
        longest = std::max(longest, len);
      else
        ids_ok = false;
    }
    (void)ids_ok;
    const int8_t ld_delta = (int8_t)(r_.u8() % 5) - 3;  // -3..1
    const int64_t ld = std::max<int64_t>(longest + ld_delta, r_.u8() % 2);
    const uint8_t nulls = r_.u8();
    const uint32_t seed = r_.u32();
    const uint8_t qcls = r_.u8();
    const size_t rows = (size_t)std::max(n_seqs, 0) * (size_t)std::max(n_q, 0);
    std::vector<float> qf;
    pkfuzz::fill_values(&qf, rows, (size_t)d, qcls % 4 == 3 ? pkfuzz::kNonFinite : pkfuzz::kGaussian, seed);
    const std::vector<uint8_t> qb = encode_as(qf, q_dtype);
    std::vector<float> buf(rows * (size_t)std::max<int64_t>(ld, 0), kSentinel);  // scores or probs
    std::vector<float> out(rows * (size_t)d, kSentinel), lse(rows, kSentinel);
    const void* qp = nulls == 1 || qb.empty() ? nullptr : qb.data();
    float* bp = nulls == 2 || buf.empty() ? nullptr : buf.data();
    float* op = nulls == 3 || out.empty() ? nullptr : out.data();
    float* lp = nulls % 2 == 0 ? lse.data() : nullptr;
    const int32_t* idp = nulls == 4 ? nullptr : ids.data();
    const packkv_cache_t* c = s ? s->c : nullptr;
    State before;
    if (s) before = state_of(*s);
    packkv_status_t st;
    if (kind == 0) {
      st = packkv_attn_scores(c, n_seqs, idp, n_q, qp, q_dtype, bp, ld, nullptr, 0, nullptr);
    } else if (kind == 1) {
      std::mt19937 rng(seed);
      for (float& x : buf) x = (float)(rng() % 1000) / 1000.0f;
      st = packkv_attn_apply(c, n_seqs, idp, n_q, bp, ld, op, nullptr, 0, nullptr);
    } else {
      const float scales[] = {0.125f, 0.088f, 1.0f, 0.0f, -1.0f, NAN, INFINITY, 1e-30f};
      const float scale = r_.pick(scales);
      st = packkv_attn_decode(c, n_seqs, idp, n_q, qp, q_dtype, scale, op, lp, nullptr, 0, nullptr);
      if (st == PACKKV_OK && s->tame && qcls % 4 != 3 && std::isfinite(scale) && scale <= 1.0f)
        for (float x : out) PKFUZZ_CHECK(std::isfinite(x));
    }
    check_status(st);
    if (s) PKFUZZ_CHECK(state_of(*s) == before);  // attention never changes the cache
    if (st != PACKKV_OK) {  // outputs untouched
      if (kind == 0)
        for (float x : buf) PKFUZZ_CHECK(x == kSentinel);
      for (float x : out) PKFUZZ_CHECK(x == kSentinel);
      for (float x : lse) PKFUZZ_CHECK(x == kSentinel);
    }
  }

  void workspace() {
    Slot* s = slot();
    size_t bytes = 7;
    const int32_t n_seqs = (int32_t)(r_.u8() % 6) - 1;
    const int32_t n_q = (int32_t)(r_.u8() % 10) - 1;
    const packkv_status_t st = packkv_attn_workspace_size(s ? s->c : nullptr, n_seqs, n_q, r_.u8() == 0 ? nullptr : &bytes);
    check_status(st);
    if (st == PACKKV_OK) PKFUZZ_CHECK(bytes == 0);  // CPU caches need no workspace
  }

  void stats() {
    Slot* s = slot();
    const int32_t seq = r_.u8() % 7 == 0 ? -1 : seq_id(s);
    alignas(8) unsigned char raw[200];
    std::memset(raw, 0x5a, sizeof raw);
    const uint32_t sizes[] = {sizeof(packkv_cache_stats_t), sizeof(packkv_cache_stats_t), 8, 119, 160};
    const uint32_t size = r_.pick(sizes);
    std::memcpy(raw, &size, 4);
    const packkv_status_t st = packkv_cache_stats(s ? s->c : nullptr, seq, r_.u8() == 0 ? nullptr : reinterpret_cast<packkv_cache_stats_t*>(raw));
    check_status(st);
    if (st == PACKKV_OK) {
      for (size_t i = sizeof(packkv_cache_stats_t); i < sizeof raw; ++i) PKFUZZ_CHECK(raw[i] == (i < size ? 0 : 0x5a));
      packkv_cache_stats_t x;
      std::memcpy(&x, raw, sizeof x);
      PKFUZZ_CHECK(x.compressed_bytes_used == x.k_tile_bytes + x.v_tile_bytes + x.k_scale_bytes + x.v_scale_bytes +
                                                  x.index_bytes + x.perm_bytes);
      PKFUZZ_CHECK(x.n_tokens == x.n_compressed_tokens + x.n_residual_tokens);
    }
  }

  void decompress() {
    Slot* s = slot();
    const int32_t seq = seq_id(s);
    int64_t len = 0;
    if (s && seq >= 0 && seq < s->p.max_seqs) PKFUZZ_CHECK(packkv_cache_seq_length(s->c, seq, &len) == PACKKV_OK);
    const int64_t caps[] = {len, len, len - 1, len + 1, 0, -1};
    const int64_t cap = r_.pick(caps);
    const size_t row = s ? (size_t)s->p.n_kv_heads * s->p.head_dim : 32;
    std::vector<float> k((size_t)std::max<int64_t>(cap, 0) * row, kSentinel), v(k.size(), kSentinel);
    const uint8_t nulls = r_.u8() % 4;
    const packkv_status_t st = packkv_cache_decompress(s ? s->c : nullptr, seq, nulls & 1 || k.empty() ? nullptr : k.data(),
                                                       nulls & 2 || v.empty() ? nullptr : v.data(), cap, nullptr);
    check_status(st);
    if (st != PACKKV_OK) {
      for (float x : k) PKFUZZ_CHECK(x == kSentinel);
      for (float x : v) PKFUZZ_CHECK(x == kSentinel);
    }
  }

  void remove_or_reset() {
    Slot* s = slot();
    const uint8_t b = r_.u8();
    if (b % 4 == 0) {
      check_status(packkv_cache_reset(s ? s->c : nullptr));
      return;
    }
    const int32_t seq = seq_id(s);
    State before;
    if (s) before = state_of(*s);
    const packkv_status_t st = packkv_cache_remove_seq(s ? s->c : nullptr, seq);
    check_status(st);  // before any other call replaces the last error
    if (s && st != PACKKV_OK) PKFUZZ_CHECK(state_of(*s) == before);
    if (s && st == PACKKV_OK) {
      int64_t n = -1;
      PKFUZZ_CHECK(packkv_cache_seq_length(s->c, seq, &n) == PACKKV_OK && n == 0);
    }
  }

  void params_and_device() {
    Slot* s = slot();
    const packkv_cache_t* c = s ? s->c : nullptr;
    alignas(8) unsigned char raw[128];
    std::memset(raw, 0x77, sizeof raw);
    const uint32_t sizes[] = {sizeof(packkv_cache_params_t), 32, 63, 96};
    const uint32_t size = r_.pick(sizes);
    std::memcpy(raw, &size, 4);
    packkv_status_t st = packkv_cache_get_params(c, r_.u8() == 0 ? nullptr : reinterpret_cast<packkv_cache_params_t*>(raw));
    check_status(st);
    if (st == PACKKV_OK)
      for (size_t i = sizeof(packkv_cache_params_t); i < sizeof raw; ++i) PKFUZZ_CHECK(raw[i] == (i < size ? 0 : 0x77));
    int32_t dev = 5;
    st = packkv_cache_device(c, r_.u8() == 0 ? nullptr : &dev);
    check_status(st);
    if (st == PACKKV_OK) PKFUZZ_CHECK(dev == -1);
    check_status(packkv_cache_sync(c));
  }

  void strings() {
    const packkv_status_t code = (packkv_status_t)r_.u32();
    const char* s = packkv_status_string(code);
    PKFUZZ_CHECK(s != nullptr && s[0] != '\0');
    const std::string msg = packkv_last_error_message();
    const size_t cap = r_.u8() % 64;
    std::vector<char> buf(cap ? cap : 1, 'x');
    const size_t full = packkv_copy_last_error(cap ? buf.data() : nullptr, cap);
    PKFUZZ_CHECK(full == msg.size());
    if (cap) PKFUZZ_CHECK(std::string(buf.data()) == msg.substr(0, cap - 1));
    PKFUZZ_CHECK(packkv_version_number() == PACKKV_VERSION_NUMBER);
    PKFUZZ_CHECK(packkv_version_string() != nullptr && packkv_build_info() != nullptr);
    PKFUZZ_CHECK(packkv_has_cuda() == 0 || packkv_has_cuda() == 1);
  }

  void bits() {
    const float r = r_.u8() % 2 ? r_.f32() : (float)(1 + r_.u8()) / 256.0f;
    int32_t b = -7;
    const packkv_status_t st = packkv_bits_for_rel_scale(r, r_.u8() == 0 ? nullptr : &b);
    check_status(st);
    if (st == PACKKV_OK) PKFUZZ_CHECK(b >= 1 && b <= 8);
  }

  void seq_length() {
    Slot* s = slot();
    int64_t n = -3;
    const int32_t seq = seq_id(s);
    const packkv_status_t st = packkv_cache_seq_length(s ? s->c : nullptr, seq, r_.u8() == 0 ? nullptr : &n);
    check_status(st);
    if (st == PACKKV_OK) PKFUZZ_CHECK(n >= 0 && n <= s->p.max_tokens_per_seq);
  }

  pkfuzz::Reader& r_;
  Slot slots_[kSlots];
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pkfuzz::Reader r(data, size);
  Program prog(r);
  for (int i = 0; i < 48 && r.more(); ++i) prog.step();
  return 0;
}
