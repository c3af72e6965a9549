// The device tile walk of the attention kernels (PACKKV.md section 5; the round layout
// is src/format/round_tile.h): staging a tile into shared memory, the warp-parallel walk
// that finds where each round starts (walk_tile), where one lane's channels of a round
// sit (lane_pos), and the per-channel and per-code iteration over a round (for_channels,
// for_codes, code_at). Device only.
//
// THE device tile walk: the kernels that read tiles use it (the CUDA-core attention
// family, the clamped blocks of clamped_block.cuh, the decompression kernel, and the
// tensor-core family's decode_round in tensorcore_tile.cuh, which takes its lane split
// and round and pack positions from walk_lane and scan_lengths); the host has its own,
// format/round_cursor.h. A round is MINS (D*b bits, fmt::mins_bytes), LENS (D*e bits,
// fmt::lens_bytes), then the packs, 2L bytes each (round_mins_bit, round_lens_bit,
// round_payload_bit, for every device reader); walk_tile is the cursor's
// next_round_after() done by a warp, in 32-bit bit offsets into the staged copy. It does
// not construct a cursor: doing so (64-bit pointers, or the header sizes in bytes) made
// ptxas spill in the hot loops of scores with one query head (nvcc 13.0, sm_90: 64
// registers and 12-28 bytes of spills against 72 and none).
//
// Work split: the 32 lanes walk the rounds of a staged tile once (round r's position
// follows from the encode lengths of rounds < r) and record, per round, where it starts
// and the prefix sums of its encode lengths at every eighth of the channels; then the
// warp splits into 4 octets of 8 lanes, octet i decoding round r + i; lane j of an octet
// owns the D/8 channels [j D/8, (j+1) D/8) of its round and decodes their 16-token packs
// from 32-bit shared-memory windows (bits_at).
#ifndef PACKKV_CUDA_ATTENTION_TILE_WALK_CUH
#define PACKKV_CUDA_ATTENTION_TILE_WALK_CUH

#include <cuda_pipeline_primitives.h>
#include <stdint.h>

#include "device_util.cuh"
#include "format/round_tile.h"
#include "format/shape.h"  // kMaxBlockTokens

namespace packkv {
namespace cu {

constexpr int kRoundBatch = 4;  // rounds decoded side by side by one warp (one per octet of 8 lanes)
constexpr int kMaxRounds = fmt::kMaxBlockTokens / fmt::kPackTokens;

// Copies the bytes [src, src+n) into dst (16-byte aligned) with 16-byte cp.async and
// returns the offset in dst of src[0] (0..15). Copies whole aligned 16-byte chunks.
__device__ inline uint32_t stage(uint8_t* dst, const uint8_t* src, size_t n) {
  const int lane = threadIdx.x & 31;
  const uintptr_t a0 = reinterpret_cast<uintptr_t>(src) & ~static_cast<uintptr_t>(15);
  const uintptr_t a1 = (reinterpret_cast<uintptr_t>(src) + n + 15) & ~static_cast<uintptr_t>(15);
  const int nvec = static_cast<int>((a1 - a0) >> 4);
  for (int i = lane; i < nvec; i += 32)
    __pipeline_memcpy_async(dst + 16 * i, reinterpret_cast<const void*>(a0 + 16 * i), 16);
  return static_cast<uint32_t>(reinterpret_cast<uintptr_t>(src) - a0);
}

// The 32 bits of an LSB-first bitstream starting at bit `bit` of the 4-byte aligned
// shared buffer T (two aligned loads and a funnel shift).
__device__ __forceinline__ uint32_t bits_at(const uint32_t* T, uint32_t bit) {
  const uint32_t* w = T + (bit >> 5);
  return __funnelshift_r(w[0], w[1], bit);  // the shift is taken mod 32
}

// Bit offsets inside a round of D channels (code width b = bits, e = fmt::len_bits(b)),
// from the round's first bit: channel c's MINS field, channel c's LENS field, the first
// pack (MINS + LENS: the payload).
__device__ __forceinline__ uint32_t round_mins_bit(int c, int bits) { return static_cast<uint32_t>(c * bits); }
__device__ __forceinline__ uint32_t round_lens_bit(int D, int bits, int e, int c) {
  return static_cast<uint32_t>(D * bits + c * e);
}
__device__ __forceinline__ uint32_t round_payload_bit(int D, int bits, int e) {
  return static_cast<uint32_t>(D * bits + D * e);
}

// One lane's share of a round in the warp walk (walk_tile; tensorcore_tile.cuh's
// decode_round): the channels [cb, cb + nf) (nf = 1..8 and nf * e <= 32: their LENS
// fields fit one 32-bit window) and, from the round's first bit, where channel cb's MINS
// and LENS fields and the round's payload start.
struct WalkLane {
  int cb, nf;
  uint32_t mins, lens, payload;
};
__device__ __forceinline__ WalkLane walk_lane(int D, int bits, int e) {
  const int lane = threadIdx.x & 31;
  WalkLane w;
  w.cb = (lane * D) >> 5;
  w.nf = (((lane + 1) * D) >> 5) - w.cb;
  w.mins = round_mins_bit(w.cb, bits);
  w.lens = round_lens_bit(D, bits, e, w.cb);
  w.payload = round_payload_bit(D, bits, e);
  return w;
}

// The warp's prefix sum of the lanes' encode-length sums `own` (each lane: the sum over
// its channels of a round): before() = the sum over the lanes below (this lane's first
// pack sits 16 * before() bits into the payload), total() = the round's sum (the payload
// is 16 * total() bits: 2L bytes a pack). Whole warp; total() is one shuffle, taken where
// it is called.
struct LengthScan {
  uint32_t incl, own;
  __device__ __forceinline__ uint32_t before() const { return incl - own; }
  __device__ __forceinline__ uint32_t total() const { return __shfl_sync(0xffffffffu, incl, 31); }
};
__device__ __forceinline__ LengthScan scan_lengths(uint32_t own) { return LengthScan{warp_incl_scan(own), own}; }

// Round table of a tile staged at byte `tile` of T (b = bits, e = fmt::len_bits(b)).
// Writes round_start[r] = byte offset of round r from the tile start and pre[r*8 + j] =
// sum of the encode lengths of channels [0, j*D/8) of round r, for r < R. Whole warp.
__device__ __forceinline__ void walk_tile(const uint32_t* T, uint32_t tile, int D, int bits, int e,
                                          int R, int* round_start, int* pre) {
  const int lane = threadIdx.x & 31;
  const WalkLane wl = walk_lane(D, bits, e);  // lane 4j starts at channel j*D/8
  // Sum of nf e-bit fields = sum over k < e of 2^k * popc(bit k of every field).
  const uint32_t wmask = wl.nf * e >= 32 ? 0xffffffffu : (1u << (wl.nf * e)) - 1u;
  const uint32_t m0 = e == 1 ? 0xffffffffu : e == 2 ? 0x55555555u : e == 3 ? 0x49249249u : 0x11111111u;
  const uint32_t m1 = e > 1 ? m0 << 1 : 0u, m2 = e > 2 ? m0 << 2 : 0u, m3 = e > 3 ? m0 << 3 : 0u;
  const uint32_t meta = wl.payload / 8;  // bytes of MINS + LENS
  uint32_t start = 0;
  for (int r = 0; r < R; ++r) {
    if (lane == 0) round_start[r] = static_cast<int>(start);
    // The LENS bit as an expression here, not wl.lens: with that loop invariant the
    // CUDA-core kernels compiled differently (scores G 2: 127 -> 96 registers, +31
    // instructions; nvcc 13.0 sm_90), unmeasured on a GPU.
    const uint32_t w = bits_at(T, (tile + start) * 8 + round_lens_bit(D, bits, e, wl.cb)) & wmask;
    const LengthScan sc =
        scan_lengths(__popc(w & m0) + 2 * __popc(w & m1) + 4 * __popc(w & m2) + 8 * __popc(w & m3));
    if ((lane & 3) == 0) pre[r * 8 + (lane >> 2)] = static_cast<int>(sc.before());
    start += meta + 2u * sc.total();
  }
  __syncwarp();
}

// Where one lane's channels of round r start: bit of its first MINS field, of its first
// LENS field and of its first pack (all relative to T).
struct LanePos {
  uint32_t mbit, lbit, pbit;
};
__device__ __forceinline__ LanePos lane_pos(uint32_t tile, const int* round_start, const int* pre, int r,
                                            int octet_lane, int D, int bits, int e) {
  const int c0 = octet_lane * (D >> 3);
  const uint32_t rbit = (tile + static_cast<uint32_t>(round_start[r])) * 8;
  LanePos p;
  p.mbit = rbit + round_mins_bit(c0, bits);
  p.lbit = rbit + round_lens_bit(D, bits, e, c0);
  p.pbit = rbit + round_payload_bit(D, bits, e) + 16u * static_cast<uint32_t>(pre[r * 8 + octet_lane]);
  return p;
}

// Decodes the 16 codes of the pack at bit pbit (encode length L) and calls fn(t, code
// as float) for t = 0..15. Token t sits at bit pbit + (15 - t) * L (fmt::write_pack);
// NARROW (L <= 4): two 32-bit windows of 8 codes, else four of 4. Per code: one shift,
// one LOP3 (mask and the exponent of 2^23), one FADD (code_to_float).
template <bool NARROW, typename Fn>
__device__ __forceinline__ void for_codes(const uint32_t* T, uint32_t pbit, uint32_t L, Fn&& fn) {
  constexpr int kPer = NARROW ? 8 : 4;
  const uint32_t m = (1u << L) - 1u;
#pragma unroll
  for (int h = 0; h < 16 / kPer; ++h) {
    uint32_t w = bits_at(T, pbit + static_cast<uint32_t>(h * kPer) * L);
#pragma unroll
    for (int k = 0; k < kPer; ++k) {  // the code at shift k*L is token 15 - h*kPer - k
      fn(15 - h * kPer - k, code_to_float(w & m));
      w >>= L;
    }
  }
}

// The code of token t (0..15) of the pack at bit pbit (encode length L) alone: the
// field for_codes reads at shift (15 - t) * L, for the rare paths that want one token.
__device__ __forceinline__ uint32_t code_at(const uint32_t* T, uint32_t pbit, uint32_t L, int t) {
  return bits_at(T, pbit + static_cast<uint32_t>(15 - t) * L) & ((1u << L) - 1u);
}

// Walks this lane's D/8 channels of one round (LanePos p from lane_pos): reads the MINS
// and LENS fields two channels at a time and calls fn(j, min code, encode length L, bit
// of the pack) for j = 0 .. D/8 - 1 (channel octet_lane * D/8 + j).
template <typename Fn>
__device__ __forceinline__ void for_channels(const uint32_t* T, LanePos p, int D, int bits, int e, Fn&& fn) {
  const int cpl = D >> 3;  // even
  const uint32_t bm = (1u << bits) - 1u, em = (1u << e) - 1u;
  for (int j = 0; j < cpl; j += 2) {
    const uint32_t mw = bits_at(T, p.mbit), lw = bits_at(T, p.lbit);
    p.mbit += 2 * bits;
    p.lbit += 2 * e;
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      const uint32_t L = (lw >> (u * e)) & em;
      fn(j + u, (mw >> (u * bits)) & bm, L, p.pbit);
      p.pbit += 16 * L;
    }
  }
}
}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_ATTENTION_TILE_WALK_CUH
