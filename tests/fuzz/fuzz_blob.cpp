// libFuzzer harness: corrupted block blobs against validate_blob (src/format/blob_check.h) and
// every decoder of the blob format.
//
// Contract under test: the decoders (decode_block, Shape::sizes, decode_tile,
// block_scores, block_apply) are only fed bytes the library wrote or bytes that
// validate_blob accepted. So the harness feeds arbitrary / corrupted blobs to the
// validator and decodes only what it accepts, from a heap buffer of exactly the
// blob's size (ASan reports any read past it). Invariants (abort = finding):
//   - a blob fresh from encode_block is accepted;
//   - an accepted blob decodes to finite values, Shape::sizes() sums to its size,
//     decode_tile() consumes exactly each tile's extent;
//   - block_scores / block_apply agree with float64 arithmetic on decode_block's
//     output within fp32 rounding.
//
// Input: byte 0 = mode, then the configuration (7 bytes), then
//   mode even: u32 data seed, u8 value class, then corruption ops (encode, corrupt);
//   mode odd:  the raw blob bytes.
//   mode bit 1 set: the zero points and scales are compact (ZsFormat::kCompact), else wide.
#include <stddef.h>
#include <stdint.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "format/blob_check.h"
#include "codec/bitpack.h"
#include "codec/block_codec.h"
#include "api/config.h"
#include "cpu/block_attention.h"
#include "fuzz_input.h"
#include "format/shape.h"

namespace {

using packkv::Config;

// Configuration from 7 input bytes; kept small so that one input runs in well under a
// millisecond on average (n_kv_heads * head_dim * block_tokens <= 8192).
Config config_from(pkfuzz::Reader& r, packkv::fmt::ZsFormat zs) {
  Config c;
  const int h = 1 + r.u8() % 3;
  const int d = 32 + 16 * (r.u8() % 15);
  int n = 16 * (1 + r.u8() % 16);
  while ((long)h * d * n > 8192 && n > 16) n -= 16;
  const int bits_k = 1 + r.u8() % 8;
  const int bits_v = 1 + r.u8() % 8;
  const uint8_t m = r.u8();
  c.repack = m % 3;
  c.granularity = (m / 3) % 2;
  c.shape = packkv::fmt::make_shape(h, d, n, c.granularity == PACKKV_SCALE_PER_TOKEN ? 1 : h, bits_k, bits_v,
                                    c.repack != PACKKV_REPACK_NONE, packkv::fmt::FormatId::kRoundMajor, zs);
  const uint8_t rs = r.u8();
  // relative scales in [1/254, 1]; codes are clamped to the widths above
  c.rel_scale_k = 1.0f / (float)(1 + rs % 254);
  c.rel_scale_v = 1.0f / (float)(1 + (rs / 2) % 254);
  return c;
}

// A heap copy of exactly `size` bytes (16-byte aligned by operator new): reads past
// its end are heap-buffer-overflows for ASan.
std::unique_ptr<uint8_t[]> exact_copy(const uint8_t* p, size_t size) {
  std::unique_ptr<uint8_t[]> b(new uint8_t[size ? size : 1]);
  if (size) std::memcpy(b.get(), p, size);
  return b;
}

// Runs every decoder on a blob that validate_blob accepted and checks their results.
void exercise(const Config& c, const uint8_t* blob, size_t size, uint32_t seed) {
  const int n = c.shape.block_tokens, h = c.shape.n_kv_heads, d = c.shape.head_dim;
  const size_t row = (size_t)h * d;
  std::vector<float> k((size_t)n * row), v((size_t)n * row);
  packkv::decode_block(c.shape, blob, k.data(), v.data());
  for (float x : k) PKFUZZ_CHECK(std::isfinite(x));
  for (float x : v) PKFUZZ_CHECK(std::isfinite(x));
  PKFUZZ_CHECK((size_t)c.shape.sizes(blob).total() == size);

  const packkv::fmt::BlockLayout l =
      packkv::fmt::block_layout(h, n, c.shape.scale_groups, c.shape.has_perm, c.shape.zs);
  std::vector<uint8_t> codes((size_t)n * d);
  for (int t = 0; t < 2 * h; ++t) {
    size_t off, sz;
    c.shape.tile_extent(blob, t < h ? packkv::fmt::kK : packkv::fmt::kV, t % h, &off, &sz);
    PKFUZZ_CHECK(packkv::decode_tile(blob + off, n, d, c.shape.bits(t < h ? 0 : 1), codes.data(), (size_t)d) == sz);
  }

  // Attention kernels against float64 on the decoded values. Bound: fp32 rounding of
  // sums whose terms are at most |q| * (|z| + qmax) * |s| per channel.
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int n_q = 2;
  std::vector<float> q((size_t)n_q * d), scores((size_t)n_q * n), probs((size_t)n_q * n);
  for (float& x : q) x = u(rng);
  for (float& x : probs) x = 0.5f * (u(rng) + 1.0f);
  std::vector<double> out((size_t)n_q * d);
  packkv::AttnScratch scratch;
  const uint8_t* perm = c.shape.has_perm ? blob + l.perm_at : nullptr;
  for (int head = 0; head < h; ++head) {
    packkv::block_scores(c.shape, blob, head, q.data(), n_q, scores.data(), (size_t)n, &scratch);
    std::fill(out.begin(), out.end(), 0.0);
    packkv::block_apply(c.shape, blob, head, probs.data(), n_q, (size_t)n, out.data(), &scratch);
    // zero points and scales read independently of HeadView: the encoding, and for a
    // compact wide fallback block the fields after the tiles
    const uint8_t *kz = nullptr, *ks = nullptr, *vz = nullptr, *vs = nullptr;
    bool wide = c.shape.zs == packkv::fmt::ZsFormat::kWide;
    const int g = c.shape.scale_groups == 1 ? 0 : head;
    if (!wide && blob[l.k_scale_at] == 0xFF && blob[l.k_scale_at + 1] == 0xFF) {
      wide = true;
      const size_t end = l.tiles_at + c.shape.sizes(blob).k_tiles + c.shape.sizes(blob).v_tiles;
      const size_t at = (end + 3) & ~(size_t)3, meta = (size_t)c.shape.scale_groups * n * 4;
      kz = blob + at + 4 * (size_t)g * n;
      ks = kz + meta;
      vz = ks + meta;
      vs = vz + meta;
    } else {
      const size_t f = wide ? 4 : 2;
      kz = blob + l.k_zero_at + f * (size_t)g * n;
      ks = blob + l.k_scale_at + f * (size_t)g * n;
      vz = blob + l.v_zero_at + f * (size_t)g * n;
      vs = blob + l.v_scale_at + f * (size_t)g * n;
    }
    auto field = [wide](const uint8_t* zp, const uint8_t* sp, int slot) {
      packkv::fmt::Affine a;
      if (wide) {
        std::memcpy(&a.zero, zp + 4 * (size_t)slot, 4);
        std::memcpy(&a.scale, sp + 4 * (size_t)slot, 4);
      } else {
        int16_t z;
        uint16_t s16;
        std::memcpy(&z, zp + 2 * (size_t)slot, 2);
        std::memcpy(&s16, sp + 2 * (size_t)slot, 2);
        const uint32_t u = (uint32_t)s16 << 15;
        a.zero = z;
        std::memcpy(&a.scale, &u, 4);
      }
      return a;
    };
    for (int j = 0; j < n_q; ++j) {
      // scores
      for (int slot = 0; slot < n; ++slot) {
        const int t = perm ? perm[slot] : slot;
        const packkv::fmt::Affine a = field(kz, ks, slot);
        double ref = 0, mag = 0;
        for (int ch = 0; ch < d; ++ch) {
          ref += (double)q[(size_t)j * d + ch] * (double)k[(size_t)t * row + (size_t)head * d + ch];
          mag += std::fabs((double)q[(size_t)j * d + ch]);
        }
        mag *= (std::fabs((double)a.zero) + (double)((1u << c.shape.bits_k) - 1u)) * std::fabs((double)a.scale);
        const double got = scores[(size_t)j * n + t];
        if (std::isfinite(ref) && std::isfinite(mag) && mag < 1e37)
          PKFUZZ_CHECK(std::fabs(got - ref) <= 1e-4 * mag + 1e-30);
      }
      // weighted sum of V
      double mag = 0;
      for (int slot = 0; slot < n; ++slot) {
        const int t = perm ? perm[slot] : slot;
        const packkv::fmt::Affine a = field(vz, vs, slot);
        mag += (double)probs[(size_t)j * n + t] * (std::fabs((double)a.zero) + (double)((1u << c.shape.bits_v) - 1u)) *
               std::fabs((double)a.scale);
      }
      for (int ch = 0; ch < d; ++ch) {
        double ref = 0;
        for (int t = 0; t < n; ++t)
          ref += (double)probs[(size_t)j * n + t] * (double)v[(size_t)t * row + (size_t)head * d + ch];
        if (std::isfinite(ref) && std::isfinite(mag) && mag < 1e37)
          PKFUZZ_CHECK(std::fabs(out[(size_t)j * d + ch] - ref) <= 1e-4 * mag + 1e-30);
      }
    }
  }
}

// Validates a candidate blob; decodes it only if accepted.
void check_candidate(const Config& c, const uint8_t* bytes, size_t size, uint32_t seed) {
  std::unique_ptr<uint8_t[]> b = exact_copy(bytes, size);
  const packkv::BlobCheck r = packkv::validate_blob(c.shape, b.get(), size);
  if (!r.ok) {
    PKFUZZ_CHECK(!r.error.empty());
    return;
  }
  exercise(c, b.get(), size, seed);
}

// With PACKKV_FUZZ_DUMP_DIR set, writes a raw-mode input (mode 1, the same
// configuration bytes, the pristine blob) there: how corpus/blob/raw-* were made.
void dump_raw_seed(const uint8_t* input, size_t input_size, const std::vector<uint8_t>& blob) {
  const char* dir = std::getenv("PACKKV_FUZZ_DUMP_DIR");
  if (dir == nullptr) return;
  static int count = 0;
  const std::string path = std::string(dir) + "/raw-" + std::to_string(count++);
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return;
  uint8_t head[8] = {1, 0, 0, 0, 0, 0, 0, 0};  // mode 1, then the 7 configuration bytes
  for (size_t i = 1; i < 8 && i < input_size; ++i) head[i] = input[i];
  std::fwrite(head, 1, 8, f);
  std::fwrite(blob.data(), 1, blob.size(), f);
  std::fclose(f);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  pkfuzz::Reader r(data, size);
  const uint8_t mode = r.u8();
  // mode bit 1: compact zero points and scales (the corpus made before them has it clear)
  const Config c =
      config_from(r, (mode & 2) ? packkv::fmt::ZsFormat::kCompact : packkv::fmt::ZsFormat::kWide);
  if (mode % 2 == 1) {  // raw bytes
    size_t n = 0;
    const uint8_t* raw = r.rest(&n);
    check_candidate(c, raw, n, 1u);
    return 0;
  }
  // encode a real block, check it is accepted, then corrupt it
  const uint32_t seed = r.u32();
  int cls = r.u8() % (pkfuzz::kNumClasses - 1);  // finite classes only (encoder precondition)
  if (cls == pkfuzz::kNonFinite) cls = pkfuzz::kMixed;
  const size_t row = (size_t)c.shape.n_kv_heads * c.shape.head_dim;
  std::vector<float> k, v;
  pkfuzz::fill_values(&k, (size_t)c.shape.block_tokens, row, cls, seed);
  pkfuzz::fill_values(&v, (size_t)c.shape.block_tokens, row, cls == pkfuzz::kMixed ? cls : (cls + 1) % pkfuzz::kNonFinite,
                      seed ^ 0x9e3779b9u);
  std::vector<uint8_t> blob;
  packkv::encode_block(c, k.data(), v.data(), &blob);
  {
    std::unique_ptr<uint8_t[]> b = exact_copy(blob.data(), blob.size());
    const packkv::BlobCheck ok = packkv::validate_blob(c.shape, b.get(), blob.size());
    if (!ok.ok) {
      std::fprintf(stderr, "%s\n", ok.error.c_str());
      pkfuzz::die("validate_blob rejects a blob written by encode_block");
    }
    if (!r.more()) {  // no corruption: decode the pristine blob
      exercise(c, b.get(), blob.size(), seed);
      dump_raw_seed(data, size, blob);
      return 0;
    }
  }
  for (int ops = 0; ops < 8 && r.more(); ++ops) {
    const uint8_t op = r.u8();
    const size_t n = blob.size();
    switch (op % 5) {
      case 0: {  // flip bits of one byte
        const size_t at = r.u16() % n;
        const uint8_t x = r.u8();
        blob[at] ^= x ? x : 1;
        break;
      }
      case 1: {  // overwrite an aligned 32-bit field (tile_end, zero point, scale, ...)
        if (n < 4) break;
        const size_t at = 4 * (r.u16() % (n / 4));
        const uint32_t x = r.u32();
        std::memcpy(&blob[at], &x, 4);
        break;
      }
      case 2: {  // truncate
        blob.resize(n - r.u16() % n);
        break;
      }
      case 3: {  // extend
        const size_t more = 1 + r.u8() % 64;
        blob.resize(n + more, r.u8());
        break;
      }
      default: {  // set one byte inside the tiles region (encode lengths and minimums live there)
        const size_t fixed = c.shape.layout.tiles_at;
        if (n > fixed) blob[fixed + r.u16() % (n - fixed)] = r.u8();
        break;
      }
    }
    if (blob.empty()) break;
  }
  check_candidate(c, blob.data(), blob.size(), seed);
  return 0;
}
