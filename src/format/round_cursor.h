// The one reader (and writer) of a FormatId::kRoundMajor tile (layout in round_tile.h):
// a cursor over its rounds that knows where a round's MINS, LENS and payload sit and
// where the next pack starts. Every host decoder walks tiles with it (codec/bitpack.cpp,
// cpu/round_kernels.cpp, format/blob_check.cpp), so the host walk is written once. The
// device has its own, also written once: cuda/attention/tile_walk.cuh (32-bit bit offsets
// into a tile staged in shared memory, a warp per tile; this cursor's 64-bit pointers
// made ptxas spill in the attention kernels), used by every kernel.
//
// Three ways to walk the packs of a round:
//   - in channel order (one thread): next_pack(ch) for ch = 0 .. D-1, then next_round();
//   - in parallel (a warp): each lane reads channel_length(ch) of its channels, the lanes
//     prefix-sum 2 * L into pack positions, read their packs at payload() + position,
//     and every lane calls next_round_after(sum of 2 * L over the round);
//   - in bulk (host SIMD kernels, cpu/round_kernels.cpp): read_round_fields (the kernels
//     use its SIMD form, cpu/simd_unpack.h, tested against it), then the packs at
//     payload() + prefix sums of 2 * L, then next_round_after.
// The cursor does no bounds checks (decoders trust blobs; blob_check.cpp checks
// foreign ones first, using round_offset() and pack_offset() against the tile size).
//
// Example (decode one tile, codes[t][c] in stored token order):
//     fmt::RoundCursor cur(tile, head_dim, bits);
//     for (int r = 0; r < rounds; ++r, cur.next_round())
//       for (int c = 0; c < head_dim; ++c) {
//         const fmt::Pack p = cur.next_pack(c);
//         ... token i of the pack: p.min + p.offset(i)
//       }
//
// PACKKV_HD (compiles for both; the kernels use tile_walk.cuh); a cursor is a few
// registers, copy it freely.
#ifndef PACKKV_FORMAT_ROUND_CURSOR_H
#define PACKKV_FORMAT_ROUND_CURSOR_H

#include <stddef.h>
#include <stdint.h>

#include "common/hd.h"
#include "format/round_tile.h"

namespace packkv {
namespace fmt {

// One pack of a round, as read by RoundCursor::next_pack.
struct Pack {
  uint32_t min;          // the channel's minimum code in this round
  int length;            // encode length L (bits per offset, 0..b)
  const uint8_t* bytes;  // its 2L payload bytes

  // Offset (code - min) of token i (0..15) of the pack. Reads the 2L bytes each call:
  // loops over i should use read_pack_halves once and pack_offset (round_tile.h).
  PACKKV_HD uint32_t offset(int i) const {
    uint64_t lo = 0, hi = 0;
    read_pack_halves(bytes, length, &lo, &hi);
    return pack_offset(lo, hi, length, i);
  }
};

// Byte is const uint8_t (RoundCursor: decoders) or uint8_t (RoundWriter: the encoder).
template <typename Byte>
class BasicRoundCursor {
 public:
  // A cursor at round 0 of the tile at `tile` with head_dim channels of `bits`-bit codes.
  PACKKV_HD BasicRoundCursor(Byte* tile, int head_dim, int bits)
      : tile_(tile),
        round_(tile),
        bits_(bits),
        len_bits_(fmt::len_bits(bits)),
        mins_bytes_(fmt::mins_bytes(head_dim, bits)),
        lens_bytes_(fmt::lens_bytes(head_dim, bits)) {
    pack_ = payload();
  }

  PACKKV_HD int bits() const { return bits_; }
  PACKKV_HD int len_bits() const { return len_bits_; }
  // Bytes of MINS + LENS of every round.
  PACKKV_HD size_t header_bytes() const { return mins_bytes_ + lens_bytes_; }

  // The current round's fields.
  PACKKV_HD Byte* mins() const { return round_; }
  PACKKV_HD Byte* lens() const { return round_ + mins_bytes_; }
  PACKKV_HD Byte* payload() const { return round_ + mins_bytes_ + lens_bytes_; }
  PACKKV_HD uint32_t channel_min(int ch) const { return read_field(mins(), (size_t)ch, bits_); }
  PACKKV_HD int channel_length(int ch) const { return (int)read_field(lens(), (size_t)ch, len_bits_); }

  // Walk in channel order: the pack of channel ch (the channel after the previous call's,
  // starting at 0 in every round), then the cursor moves past it.
  PACKKV_HD Pack next_pack(int ch) {
    Pack p;
    p.min = channel_min(ch);
    p.length = channel_length(ch);
    p.bytes = pack_;
    pack_ += 2 * p.length;
    return p;
  }
  // Where the next pack starts, and moving past a pack of encode length L (a caller that
  // reads channel_length itself, e.g. to check it first, or the encoder).
  PACKKV_HD Byte* pack() const { return pack_; }
  PACKKV_HD void skip_pack(int length) { pack_ += 2 * length; }
  // To the next round, once every pack of this one was walked.
  PACKKV_HD void next_round() {
    round_ = pack_;
    pack_ = payload();
  }
  // To the next round when the packs were read in parallel: payload_bytes = sum of 2L
  // over the round's channels.
  PACKKV_HD void next_round_after(size_t payload_bytes) {
    round_ = payload() + payload_bytes;
    pack_ = payload();
  }

  // Bulk walk of the current round (host SIMD kernels): every channel's minimum and
  // encode length into mins[0..D) and lens[0..D) (D = head_dim); the pack of channel c then
  // starts at payload() + 2 * (lens[0] + .. + lens[c-1]); then next_round_after(that sum
  // over all D channels).
  PACKKV_HD void read_round_fields(int head_dim, uint8_t* mins_out, uint8_t* lens_out) const {
    read_fields(mins(), head_dim, bits_, mins_out);
    read_fields(lens(), head_dim, len_bits_, lens_out);
  }

  // Offsets from the tile start (bounds checks).
  PACKKV_HD size_t round_offset() const { return (size_t)(round_ - tile_); }
  PACKKV_HD size_t pack_offset() const { return (size_t)(pack_ - tile_); }

  // Writer only (Byte = uint8_t; the MINS and LENS bytes must start zeroed).
  PACKKV_HD void set_channel_min(int ch, uint32_t min) { write_field(mins(), (size_t)ch, bits_, min); }
  PACKKV_HD void set_channel_length(int ch, int length) {
    write_field(lens(), (size_t)ch, len_bits_, (uint32_t)length);
  }
  // Bulk form of both for a whole round (the inverse of read_round_fields): every
  // channel's minimum mins[c] and encode length lens[c], c < head_dim.
  PACKKV_HD void set_round_fields(int head_dim, const uint8_t* mins_in, const uint8_t* lens_in) {
    write_fields(mins(), head_dim, bits_, mins_in);
    write_fields(lens(), head_dim, len_bits_, lens_in);
  }

 private:
  Byte* tile_;
  Byte* round_;  // MINS of the current round
  Byte* pack_;   // next pack of the channel-order walk
  int bits_;
  int len_bits_;
  size_t mins_bytes_;
  size_t lens_bytes_;
};

using RoundCursor = BasicRoundCursor<const uint8_t>;
using RoundWriter = BasicRoundCursor<uint8_t>;

}  // namespace fmt
}  // namespace packkv

#endif  // PACKKV_FORMAT_ROUND_CURSOR_H
