// The format module's shared pieces against independent definitions: the block layout
// accessors of fmt::Shape (format/shape.h), the round cursor's two walks
// (format/round_cursor.h) and the rules both backends share (common/rules.h).
#include <doctest/doctest.h>

#include <cstring>
#include <random>
#include <vector>

#include "codec/bitpack.h"
#include "common/rules.h"
#include "format/round_cursor.h"
#include "format/shape.h"

using namespace packkv;

TEST_CASE("Shape: offsets of head h's tile, zero points and scales, written out by hand") {
  // H = 3, N = 32, per-head scale groups, perm on: tile_end 24 bytes, perm 32 -> 56,
  // then 4 arrays of 3 x 32 x 4 = 384 bytes each: k_zero 56, k_scale 440, v_zero 824,
  // v_scale 1208, tiles 1592.
  const fmt::Shape s = fmt::make_shape(3, 64, 32, 3, 4, 3, true);
  CHECK(s.layout.perm_at == 24);
  CHECK(s.layout.k_zero_at == 56);
  CHECK(s.layout.k_scale_at == 440);
  CHECK(s.layout.v_zero_at == 824);
  CHECK(s.layout.v_scale_at == 1208);
  CHECK(s.layout.tiles_at == 1592);
  std::vector<uint8_t> blob(1592 + 600, 0);
  const uint32_t ends[6] = {100, 150, 210, 300, 420, 600};  // K0 K1 K2 V0 V1 V2
  std::memcpy(blob.data(), ends, sizeof ends);
  const fmt::HeadView v1 = s.head(blob.data(), fmt::kV, 1);
  CHECK(v1.tile == blob.data() + 1592 + 300);
  CHECK(v1.tile_bytes == 120);
  CHECK(v1.zero == blob.data() + 824 + 128);   // group 1 of V
  CHECK(v1.scale == blob.data() + 1208 + 128);
  CHECK(v1.perm == blob.data() + 24);
  const fmt::HeadView k0 = s.head(blob.data(), fmt::kK, 0);
  CHECK(k0.tile == blob.data() + 1592);
  CHECK(k0.tile_bytes == 100);
  const fmt::BlobSizes z = s.sizes(blob.data());
  CHECK(z.k_tiles == 210);
  CHECK(z.v_tiles == 390);
  CHECK(z.perm == 32);
  CHECK(z.header == 24);  // tile_end; no padding (24 + 32 is a multiple of 4)
  CHECK(z.k_scale == 768);
  CHECK(z.v_scale == 768);
  CHECK(z.total() == (long long)blob.size());
  // one scale group: every head reads group 0; no perm: identity order
  const fmt::Shape t = fmt::make_shape(3, 64, 32, 1, 4, 3, false);
  CHECK(t.head(blob.data(), fmt::kK, 2).zero == blob.data() + t.layout.k_zero_at);
  CHECK(t.head(blob.data(), fmt::kK, 2).original(7) == 7);
  CHECK(t.max_blob_bytes() == t.layout.tiles_at + 3 * (fmt::max_tile_bytes(32, 64, 4) + fmt::max_tile_bytes(32, 64, 3)));
}

TEST_CASE("RoundCursor: the parallel walk (positions from LENS) ends every round where the sequential walk does") {
  std::mt19937 rng(11);
  for (int d : {32, 80, 256})
    for (int b : {1, 2, 5, 8}) {
      const int n = 64;
      std::vector<uint8_t> codes((size_t)n * d);
      for (uint8_t& x : codes) x = (uint8_t)(rng() & ((1u << b) - 1u) & (rng() % 3 == 0 ? 0u : 0xffu));
      std::vector<uint8_t> tile;
      encode_tile(codes.data(), d, n, d, b, &tile);
      fmt::RoundCursor seq(tile.data(), d, b), par(tile.data(), d, b);
      for (int r = 0; r < n / 16; ++r) {
        CHECK(par.round_offset() == seq.round_offset());
        size_t pos = 0;
        for (int c = 0; c < d; ++c) {
          const fmt::Pack p = seq.next_pack(c);
          CHECK(p.bytes == par.payload() + pos);  // pack c starts after the 2L bytes of channels < c
          CHECK(p.length == par.channel_length(c));
          CHECK(p.min == par.channel_min(c));
          for (int i = 0; i < 16; ++i) CHECK(p.min + p.offset(i) == codes[(size_t)(16 * r + i) * d + c]);
          pos += 2 * (size_t)p.length;
        }
        seq.next_round();
        par.next_round_after(pos);
      }
      CHECK(seq.round_offset() == tile.size());
      CHECK(par.round_offset() == tile.size());
    }
}

TEST_CASE("blocks_to_flush: the closed form equals flushing one block at a time while window >= residual + block") {
  for (int residual : {0, 1, 63, 128})
    for (int block : {16, 64, 256})
      for (int64_t window = 0; window <= 1200; ++window) {
        int64_t flushed = 0;
        while (window - flushed * block >= (int64_t)residual + block) ++flushed;
        CAPTURE(residual);
        CAPTURE(block);
        CAPTURE(window);
        REQUIRE(blocks_to_flush(window, residual, block) == flushed);
      }
}

TEST_CASE("align16 and elem_bytes") {
  CHECK(align16(0) == 0);
  CHECK(align16(1) == 16);
  CHECK(align16(16) == 16);
  CHECK(align16(17) == 32);
  CHECK(kBlobAlign == 16);
  CHECK(elem_bytes(PACKKV_DTYPE_F16) == 2);
  CHECK(elem_bytes(PACKKV_DTYPE_BF16) == 2);
  CHECK(elem_bytes(PACKKV_DTYPE_F32) == 4);
  CHECK(elem_bytes(99) == 0);
}
