// libFuzzer harness: packkv_x_cache_import of corrupted and raw sequence exports
// (format/seq_export.h) into a CPU cache in a pool.
//
// Contract under test: import validates everything; a buffer it accepts restores a
// sequence the rest of the library can use (decompress, attention) without reading out of
// bounds, and one it refuses changes nothing. Invariants (abort = finding):
//   - a pristine export (no corruption ops) is accepted;
//   - a failed import returns a known status with a message naming the function, and
//     leaves the target cache and its pool as they were;
//   - an accepted import re-exports to exactly the bytes given, and its sequence
//     decompresses to finite values (NaN only before the window start) and decodes to
//     finite outputs.
// The import buffer is a heap copy of exactly its size (ASan catches any over-read).
//
// Input: byte 0 = mode (bit 0: below; bit 1: 4 sink tokens; bit 2: K centring, f16
// configurations only), byte 1 = configuration, then
//   mode even: u16 tokens, u8 truncate, u8 window, u32 seed, then corruption ops
//              (u8 op, u32 position, u32 value) until the input ends; the last op byte's
//              low bit set means "recompute the checksum" (structure errors behind a valid one);
//   mode odd:  the raw bytes to import.
#include <stddef.h>
#include <stdint.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "format/seq_export.h"
#include "fuzz_input.h"
#define PACKKV_EXPERIMENTAL_API
#include "packkv/packkv_experimental.h"

namespace {

struct Owned {
  packkv_cache_t* c = nullptr;
  packkv_x_pool_t* p = nullptr;
  ~Owned() {
    packkv_cache_destroy(c);
    packkv_x_pool_destroy(p);
  }
};

packkv_cache_params_t params_from(uint8_t mode, uint8_t cfg) {
  packkv_cache_params_t p;
  packkv_cache_params_init(&p, sizeof p);
  p.n_kv_heads = 1 + cfg % 2;
  p.head_dim = (cfg / 2) % 2 ? 64 : 32;
  p.block_tokens = (cfg / 4) % 2 ? 32 : 16;
  p.residual_tokens = (cfg / 8) % 2 ? 16 : 0;
  p.kv_dtype = (cfg / 16) % 3;
  p.repack = (cfg / 48) % 3;
  p.scale_granularity = (cfg / 144) % 2;
  p.max_tokens_per_seq = 4096;
  p.sink_tokens = (mode >> 1) & 1 ? 4 : 0;
  if ((mode >> 2) & 1 && p.kv_dtype == PACKKV_DTYPE_F16) p.k_transform = PACKKV_K_TRANSFORM_CENTER;
  return p;
}

struct Snapshot {
  int64_t len = -1;
  packkv_cache_stats_t st;
  packkv_x_pool_stats_t ps;
  bool operator==(const Snapshot& o) const {
    return len == o.len && std::memcmp(&st, &o.st, sizeof st) == 0 && std::memcmp(&ps, &o.ps, sizeof ps) == 0;
  }
};

Snapshot snap(const Owned& o) {
  Snapshot s;
  std::memset(&s.st, 0, sizeof s.st);
  std::memset(&s.ps, 0, sizeof s.ps);
  s.st.struct_size = sizeof s.st;
  s.ps.struct_size = sizeof s.ps;
  PKFUZZ_CHECK(packkv_cache_seq_length(o.c, 0, &s.len) == PACKKV_OK);
  PKFUZZ_CHECK(packkv_cache_stats(o.c, -1, &s.st) == PACKKV_OK);
  PKFUZZ_CHECK(packkv_x_pool_stats(o.p, &s.ps) == PACKKV_OK);
  return s;
}

void make(const packkv_cache_params_t& p, Owned* o) {
  packkv_x_pool_params_t pp;
  PKFUZZ_CHECK(packkv_x_pool_params_init(&pp, sizeof pp) == PACKKV_OK);
  pp.page_bytes = 1 << 18;
  PKFUZZ_CHECK(packkv_x_pool_create(&pp, &o->p) == PACKKV_OK);
  PKFUZZ_CHECK(packkv_x_cache_create_in_pool(&p, o->p, &o->c) == PACKKV_OK);
}

// The export of a sequence built from the input (tokens, truncate, window).
std::vector<uint8_t> source_export(const packkv_cache_params_t& p, pkfuzz::Reader& r) {
  Owned src;
  make(p, &src);
  const int tokens = r.u16() % 700;
  const int cut = r.u8();
  const int window = r.u8();
  const uint32_t seed = r.u32();
  if (window % 4 == 1) PKFUZZ_CHECK(packkv_x_cache_set_window(src.c, 1 + window * 3) == PACKKV_OK);
  const size_t row = (size_t)p.n_kv_heads * p.head_dim;
  std::vector<float> k, v;
  pkfuzz::fill_values(&k, (size_t)tokens, row, pkfuzz::kGaussian, seed);
  pkfuzz::fill_values(&v, (size_t)tokens, row, pkfuzz::kGaussian, seed + 1);
  for (int at = 0; at < tokens;) {
    int32_t id = 0, n = std::min(tokens - at, 1 + (int)((seed >> (at % 13)) % 97u));
    PKFUZZ_CHECK(packkv_cache_append(src.c, 1, &id, &n, k.data() + at * row, v.data() + at * row, PACKKV_DTYPE_F32,
                                     nullptr) == PACKKV_OK);
    at += n;
  }
  int64_t len = 0, start = 0;
  packkv_cache_seq_length(src.c, 0, &len);
  packkv_x_cache_window_start(src.c, 0, &start);
  if (cut % 3 == 1 && len > start) PKFUZZ_CHECK(packkv_x_cache_truncate(src.c, 0, start + cut % (len - start)) == PACKKV_OK);
  size_t n = 0, written = 0;
  PKFUZZ_CHECK(packkv_x_cache_export_size(src.c, 0, &n) == PACKKV_OK);
  std::vector<uint8_t> e(n);
  PKFUZZ_CHECK(packkv_x_cache_export(src.c, 0, e.data(), n, &written) == PACKKV_OK && written == n);
  return e;
}

void check_accepted(const Owned& dst, const packkv_cache_params_t& p, const std::vector<uint8_t>& given) {
  size_t n = 0, written = 0;
  PKFUZZ_CHECK(packkv_x_cache_export_size(dst.c, 0, &n) == PACKKV_OK);
  PKFUZZ_CHECK(n == given.size());
  std::vector<uint8_t> again(n);
  PKFUZZ_CHECK(packkv_x_cache_export(dst.c, 0, again.data(), n, &written) == PACKKV_OK);
  PKFUZZ_CHECK(again == given);
  int64_t len = 0, start = 0;
  packkv_cache_seq_length(dst.c, 0, &len);
  packkv_x_cache_window_start(dst.c, 0, &start);
  const size_t row = (size_t)p.n_kv_heads * p.head_dim;
  std::vector<float> k((size_t)len * row), v((size_t)len * row);
  PKFUZZ_CHECK(packkv_cache_decompress(dst.c, 0, k.data(), v.data(), len, nullptr) == PACKKV_OK);
  for (size_t i = (size_t)start * row; i < k.size(); ++i) PKFUZZ_CHECK(std::isfinite(k[i]) && std::isfinite(v[i]));
  if (len == 0) return;
  const int hq = p.n_kv_heads;
  std::vector<float> q((size_t)hq * p.head_dim, 0.01f), out(q.size());
  int32_t id = 0;
  PKFUZZ_CHECK(packkv_attn_decode(dst.c, 1, &id, hq, q.data(), PACKKV_DTYPE_F32, 0.1f, out.data(), nullptr, nullptr,
                                  0, nullptr) == PACKKV_OK);
  for (float x : out) PKFUZZ_CHECK(std::isfinite(x));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pkfuzz::Reader r(data, size);
  const uint8_t mode = r.u8();
  const packkv_cache_params_t p = params_from(mode, r.u8());
  std::vector<uint8_t> buf;
  bool pristine = false;
  if (mode % 2 == 0) {
    buf = source_export(p, r);
    pristine = !r.more();
    bool reseal = false;
    while (r.more()) {
      const uint8_t op = r.u8();
      const uint32_t pos = r.u32(), val = r.u32();
      reseal = op & 1;
      if (buf.empty()) break;
      const size_t at = pos % buf.size();
      switch ((op >> 1) % 4) {
        case 0: buf[at] ^= (uint8_t)(val | 1); break;
        case 1:
          if (at + 4 <= buf.size()) packkv::fmt::put_u32(buf.data() + at, val);
          break;
        case 2: buf.resize(at); break;
        default: buf.insert(buf.begin() + at, (size_t)(val % 64), (uint8_t)(val >> 8)); break;
      }
    }
    if (reseal && buf.size() >= packkv::fmt::kSeqHeaderBytes)
      packkv::fmt::put_u64(buf.data() + packkv::fmt::kSeqChecksum,
                           packkv::fmt::fnv1a64(buf.data() + 32, buf.size() - 32));
  } else {
    size_t n = 0;
    const uint8_t* rest = r.rest(&n);
    buf.assign(rest, rest + n);
  }
  Owned dst;
  make(p, &dst);
  const Snapshot before = snap(dst);
  std::unique_ptr<uint8_t[]> exact(new uint8_t[buf.size() ? buf.size() : 1]);
  if (!buf.empty()) std::memcpy(exact.get(), buf.data(), buf.size());
  const packkv_status_t st = packkv_x_cache_import(dst.c, 0, exact.get(), buf.size());
  if (pristine) PKFUZZ_CHECK(st == PACKKV_OK);
  if (st == PACKKV_OK) {
    check_accepted(dst, p, buf);
  } else {
    PKFUZZ_CHECK(st == PACKKV_ERR_INVALID_ARGUMENT || st == PACKKV_ERR_VERSION_MISMATCH ||
                 st == PACKKV_ERR_CAPACITY_EXCEEDED);
    PKFUZZ_CHECK(std::string(packkv_last_error_message()).find("packkv_x_cache_import") != std::string::npos);
    PKFUZZ_CHECK(snap(dst) == before);
  }
  return 0;
}
