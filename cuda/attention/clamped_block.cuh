// The V pass of a compressed block whose quantization grid reaches beyond FLT_MAX (data
// within s/2 of the fp32 limit, issue 18 item 3): decompress clamps such values to
// +-FLT_MAX (fmt::dequantize), which the folded arithmetic of v_round cannot do, so this
// rare path dequantizes every value itself, clamps it, and adds p_t * v_t to the warp's
// accumulator row 0 (in the warp's units 2^-e, online_softmax.cuh). It walks the tile in
// global memory with the host's reader (fmt::RoundCursor). Any kernel family with the
// cta_layout.cuh accumulators can call it. Device only; slow by design (taken only for
// blocks that fit_block flags).
#ifndef PACKKV_CUDA_ATTENTION_CLAMPED_BLOCK_CUH
#define PACKKV_CUDA_ATTENTION_CLAMPED_BLOCK_CUH

#include <stdint.h>

#include "attention/cta_layout.cuh"
#include "attention/zs_stage.cuh"
#include "format/round_cursor.h"
#include "format/round_tile.h"

namespace packkv {
namespace cu {

// True if some grid point (z or z + qmax) * s of the block's N slots (staged zero points
// and scales zs, any encoding) lies beyond FLT_MAX. Such a grid needs |s| > 2^97 (|z| s is within s/2 of
// a value, and |x| / s < 2^30, format/affine.h), so normal data cost one max and one vote
// per block. Whole warp.
__device__ __forceinline__ bool grid_beyond_fp32(const ZsView& zs, int N, int qmax, int lane) {
  float smax = 0.f;
  for (int i = lane; i < N; i += 32) smax = fmaxf(smax, fabsf(zs.s(i)));
  if (!__any_sync(0xffffffffu, smax > 0x1p96f)) return false;
  bool beyond = false;
  for (int i = lane; i < N; i += 32) {
    const double sd = fabs(static_cast<double>(zs.s(i))), zd = static_cast<double>(zs.z(i));
    beyond |= fabs(zd) * sd > 3.4028234663852886e38 || fabs(zd + qmax) * sd > 3.4028234663852886e38;
  }
  return __any_sync(0xffffffffu, beyond);
}

// The K pass of such a block: put(g, slot, score) for every query head g < G and slot,
// score = sum_c q[g][c] * clamp((code + z) s, +-FLT_MAX) in double (q: t.qS, already
// times the softmax scale for decode). tile: the block's K tile of this head (global).
// Whole warp (lane i < 16 takes slot i of each round). Inlined behind a rare branch (a
// call raised the kernel's register count, nvcc 13.0 sm_90).
template <int G, typename Put>
__device__ __forceinline__ void k_block_clamped(const Cta<G>& t, const uint8_t* tile, int D, int N, int bits,
                                                const float* ks, const int32_t* kz, Put put) {
  fmt::RoundCursor cur(tile, D, bits);
  const int i = t.lane;
  for (int r = 0; r < N / fmt::kPackTokens; ++r) {
    const int slot = fmt::kPackTokens * r + (i & 15);
    double dot[G];
#pragma unroll
    for (int g = 0; g < G; ++g) dot[g] = 0.0;
    for (int ch = 0; ch < D; ++ch) {
      const fmt::Pack pk = cur.next_pack(ch);
      if (i >= fmt::kPackTokens) continue;
      const int64_t q = static_cast<int64_t>(pk.min + pk.offset(i)) + kz[slot];
      double v = static_cast<double>(q) * static_cast<double>(ks[slot]);
      v = v > 3.4028234663852886e38 ? 3.4028234663852886e38 : (v < -3.4028234663852886e38 ? -3.4028234663852886e38 : v);
#pragma unroll
      for (int g = 0; g < G; ++g) dot[g] += static_cast<double>(t.qS[g * D + ch]) * v;
    }
    if (i < fmt::kPackTokens)
#pragma unroll
      for (int g = 0; g < G; ++g) put(g, slot, static_cast<float>(dot[g]));
    cur.next_round();
  }
  __syncwarp();
}

// The V pass of such a block. tile: the block's V tile of this head (global); N tokens,
// D channels, `bits`-bit codes; vs/vz: the staged scales (already times 2^-e) and zero
// points; sc[g * N + slot] = w = p * vs[slot] (weights()). Adds sum_slot p * clamp((code +
// z) vs, +-FLT_MAX 2^-e) to accumulator row `acc` (layout acc_word) of every query head
// g < G. Whole warp (lanes own channels). Inlined (see k_block_clamped; fp32 sums here
// cost the G = 2 decode kernel 31 more registers, nvcc 13.0 sm_90).
template <int G>
__device__ __forceinline__ void v_block_clamped(const uint8_t* tile, int D, int N, int bits, const float* vs,
                                             const int32_t* vz, int e, const float* sc, float* acc, int lane) {
  const double lim = 3.4028234663852886e38 * static_cast<double>(__int_as_float((127 - e / 2) << 23)) *
                     static_cast<double>(__int_as_float((127 - (e - e / 2)) << 23));  // FLT_MAX * 2^-e
  fmt::RoundCursor cur(tile, D, bits);
  for (int r = 0; r < N / fmt::kPackTokens; ++r) {
    for (int ch = 0; ch < D; ++ch) {
      const fmt::Pack pk = cur.next_pack(ch);
      if ((ch & 31) != lane) continue;
      uint64_t lo = 0, hi = 0;
      fmt::read_pack_halves(pk.bytes, pk.length, &lo, &hi);
      double add[G];
#pragma unroll
      for (int g = 0; g < G; ++g) add[g] = 0.0;
      for (int i = 0; i < fmt::kPackTokens; ++i) {
        const int slot = fmt::kPackTokens * r + i;
        if (vs[slot] == 0.f) continue;  // all-zero group: v = 0
        const int64_t q = static_cast<int64_t>(pk.min + fmt::pack_offset(lo, hi, pk.length, i)) + vz[slot];
        double v = static_cast<double>(q) * static_cast<double>(vs[slot]);
        v = v > lim ? lim : (v < -lim ? -lim : v);
#pragma unroll
        for (int g = 0; g < G; ++g) add[g] += static_cast<double>(sc[g * N + slot]) / vs[slot] * v;
      }
#pragma unroll
      for (int g = 0; g < G; ++g) acc[acc_word(g, ch, D)] += static_cast<float>(add[g]);
    }
    cur.next_round();
  }
  __syncwarp();
}

}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_ATTENTION_CLAMPED_BLOCK_CUH
