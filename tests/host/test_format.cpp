// The tile format: pack words, field streams, encode lengths, tile round trips
// (PACKKV.md section 5; golden vectors T1, T2).
#include <doctest/doctest.h>

#include <random>
#include <vector>

#include "codec/bitpack.h"
#include "format/round_tile.h"

using namespace packkv;

namespace {
std::vector<uint8_t> pack_bytes(const std::vector<uint32_t>& x) {
  uint32_t mn = x[0], mx = x[0];
  for (uint32_t v : x) {
    mn = std::min(mn, v);
    mx = std::max(mx, v);
  }
  const int L = fmt::encode_length(mx - mn);
  std::vector<uint32_t> d(16);
  for (int i = 0; i < 16; ++i) d[i] = x[i] - mn;
  std::vector<uint8_t> out(2 * L);
  fmt::write_pack(out.data(), d.data(), L);
  return out;
}
}  // namespace

TEST_CASE("T1: pack 0..15 with L = 4") {
  std::vector<uint32_t> x(16);
  for (int i = 0; i < 16; ++i) x[i] = i;
  CHECK(pack_bytes(x) == std::vector<uint8_t>{0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01});
}

TEST_CASE("T1: pack 5 x15 then 6, L = 1") {
  std::vector<uint32_t> x(16, 5);
  x[15] = 6;
  CHECK(pack_bytes(x) == std::vector<uint8_t>{0x01, 0x00});
}

TEST_CASE("T1: pack 3 x8 then 4 x8, L = 1") {
  std::vector<uint32_t> x(16, 3);
  for (int i = 8; i < 16; ++i) x[i] = 4;
  CHECK(pack_bytes(x) == std::vector<uint8_t>{0xff, 0x00});
}

TEST_CASE("T1: pack (0..7) twice, L = 3") {
  std::vector<uint32_t> x(16);
  for (int i = 0; i < 16; ++i) x[i] = i % 8;
  CHECK(pack_bytes(x) == std::vector<uint8_t>{0x77, 0x39, 0x05, 0x77, 0x39, 0x05});
}

TEST_CASE("T1: pack (9,10,11,12) x4, L = 2") {
  std::vector<uint32_t> x(16);
  for (int i = 0; i < 16; ++i) x[i] = 9 + i % 4;
  CHECK(pack_bytes(x) == std::vector<uint8_t>{0x1b, 0x1b, 0x1b, 0x1b});
}

TEST_CASE("T1: constant pack has L = 0 and no payload") {
  CHECK(pack_bytes(std::vector<uint32_t>(16, 200)).empty());
}

TEST_CASE("T2: encode length rule") {
  CHECK(fmt::encode_length(0) == 0);
  CHECK(fmt::encode_length(1) == 1);
  CHECK(fmt::encode_length(2) == 2);
  CHECK(fmt::encode_length(3) == 2);
  for (uint32_t r = 4; r <= 7; ++r) CHECK(fmt::encode_length(r) == 3);
  for (uint32_t r = 8; r <= 15; ++r) CHECK(fmt::encode_length(r) == 4);
  CHECK(fmt::encode_length(255) == 8);
}

TEST_CASE("encode-length field width e = ceil(log2(b + 1)) (PACKKV.md 5.2)") {
  const int expect[9] = {0, 1, 2, 2, 3, 3, 3, 3, 4};
  for (int b = 1; b <= 8; ++b) CHECK(fmt::len_bits(b) == expect[b]);
}

TEST_CASE("pack words round trip for every L up to 8") {
  std::mt19937 rng(7);
  for (int L = 1; L <= 8; ++L) {
    for (int rep = 0; rep < 50; ++rep) {
      uint32_t d[16];
      for (uint32_t& v : d) v = rng() & ((1u << L) - 1u);
      std::vector<uint8_t> buf(2 * L + 3, 0xAA);  // guard bytes must survive
      fmt::write_pack(buf.data(), d, L);
      uint64_t lo, hi;
      fmt::read_pack_halves(buf.data(), L, &lo, &hi);
      for (int i = 0; i < 16; ++i) CHECK(fmt::pack_offset(lo, hi, L, i) == d[i]);
      CHECK(buf[2 * L] == 0xAA);
    }
  }
}

TEST_CASE("LSB-first field streams: hand-worked bytes and round trip") {
  // fields 5, 3, 7 of width 3: bits 101 | 011 | 111 -> 0b11011101 = 0xdd, then 0b1 = 0x01
  std::vector<uint8_t> b(2, 0);
  fmt::write_field(b.data(), 0, 3, 5);
  fmt::write_field(b.data(), 1, 3, 3);
  fmt::write_field(b.data(), 2, 3, 7);
  CHECK(b[0] == 0xdd);
  CHECK(b[1] == 0x01);
  CHECK(fmt::read_field(b.data(), 2, 3) == 7);
  std::mt19937 rng(3);
  for (int w = 1; w <= 8; ++w) {
    std::vector<uint32_t> vals(37);
    std::vector<uint8_t> s((37 * w + 7) / 8, 0);
    for (size_t k = 0; k < vals.size(); ++k) {
      vals[k] = rng() & ((1u << w) - 1u);
      fmt::write_field(s.data(), k, w, vals[k]);
    }
    for (size_t k = 0; k < vals.size(); ++k) CHECK(fmt::read_field(s.data(), k, w) == vals[k]);
  }
}

TEST_CASE("tiles round trip for every head_dim and bit width") {
  std::mt19937 rng(11);
  for (int d = 32; d <= 256; d += 16) {
    for (int b = 1; b <= 8; ++b) {
      const int n = 64;
      std::vector<uint8_t> codes((size_t)n * d);
      // smooth along tokens within a channel, with some constant channels
      for (int c = 0; c < d; ++c) {
        uint32_t base = rng() & ((1u << b) - 1u);
        int spread = (int)(rng() % (b + 1));
        for (int t = 0; t < n; ++t) {
          uint32_t v = base + (spread ? (rng() & ((1u << spread) - 1u)) : 0u);
          codes[(size_t)t * d + c] = (uint8_t)std::min<uint32_t>(v, (1u << b) - 1u);
        }
      }
      std::vector<uint8_t> tile;
      encode_tile(codes.data(), d, n, d, b, &tile);
      CHECK(tile.size() <= fmt::max_tile_bytes(n, d, b));
      CHECK(tile.size() >= (size_t)(n / 16) * (fmt::mins_bytes(d, b) + fmt::lens_bytes(d, b)));
      std::vector<uint8_t> back((size_t)n * d, 0xff);
      CHECK(decode_tile(tile.data(), n, d, b, back.data(), d) == tile.size());
      CHECK(back == codes);
    }
  }
}

TEST_CASE("tile size = rounds x (mins + lens) + sum of 2L (PACKKV.md T11 analogue)") {
  const int n = 32, d = 48, b = 4;
  std::vector<uint8_t> codes((size_t)n * d);
  size_t payload = 0;
  for (int c = 0; c < d; ++c)
    for (int r = 0; r < 2; ++r) {
      const int range = c % 16;  // pack range -> L
      for (int i = 0; i < 16; ++i) codes[(size_t)(16 * r + i) * d + c] = (uint8_t)(i == 0 ? 0 : (i == 1 ? range : 0));
      payload += 2 * fmt::encode_length((uint32_t)range);
    }
  std::vector<uint8_t> tile;
  encode_tile(codes.data(), d, n, d, b, &tile);
  CHECK(tile.size() == 2 * (d * 4 / 8 + d * 3 / 8) + payload);
}

TEST_CASE("encode_tile writes exactly the layout of format/round_tile.h (reference built field by field)") {
  std::mt19937 rng(5);
  for (int d : {32, 48, 128, 256})
    for (int b : {1, 3, 4, 8}) {
      const int n = 64;
      std::vector<uint8_t> codes((size_t)n * d);
      for (int c = 0; c < d; ++c) {
        const int spread = (int)(rng() % (b + 1));
        const uint32_t base = rng() & ((1u << b) - 1u);
        for (int t = 0; t < n; ++t)
          codes[(size_t)t * d + c] = (uint8_t)std::min<uint32_t>(base + (spread ? rng() & ((1u << spread) - 1u) : 0u), (1u << b) - 1u);
      }
      std::vector<uint8_t> tile;
      encode_tile(codes.data(), d, n, d, b, &tile);
      // reference: MINS, LENS and packs of every round with the primitives of format/round_tile.h
      std::vector<uint8_t> ref;
      const int e = fmt::len_bits(b);
      for (int r = 0; r < n / 16; ++r) {
        std::vector<uint8_t> mins(fmt::mins_bytes(d, b), 0), lens(fmt::lens_bytes(d, b), 0), pay;
        for (int c = 0; c < d; ++c) {
          uint32_t v[16], mn = 255, mx = 0;
          for (int i = 0; i < 16; ++i) {
            v[i] = codes[(size_t)(16 * r + i) * d + c];
            mn = std::min(mn, v[i]);
            mx = std::max(mx, v[i]);
          }
          const int L = fmt::encode_length(mx - mn);
          fmt::write_field(mins.data(), (size_t)c, b, mn);
          fmt::write_field(lens.data(), (size_t)c, e, (uint32_t)L);
          for (uint32_t& x : v) x -= mn;
          std::vector<uint8_t> pk(2 * L);
          fmt::write_pack(pk.data(), v, L);
          pay.insert(pay.end(), pk.begin(), pk.end());
        }
        ref.insert(ref.end(), mins.begin(), mins.end());
        ref.insert(ref.end(), lens.begin(), lens.end());
        ref.insert(ref.end(), pay.begin(), pay.end());
      }
      CAPTURE(d);
      CAPTURE(b);
      CHECK(tile == ref);
    }
}
