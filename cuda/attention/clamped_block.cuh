// The K and V passes of a compressed block whose quantization grid reaches beyond FLT_MAX
// (data within s/2 of the fp32 limit, issue 18 item 3): decompress clamps such values to
// +-FLT_MAX (fmt::dequantize), which the folded arithmetic of k_round / v_round cannot do,
// so this rare path dequantizes every value itself, clamps it and sums in double. It reads
// the warp's staged tile with the device tile walk (tile_walk.cuh), like the hot path.
// Normal data pay two votes per block (family_cudacore.cuh: one on the staged V fields
// before the weights, one on the K scores after the rounds). The passes keep G doubles per
// lane, one round at a time, so that they
// leave the kernels' register allocation alone (nvcc 13.0, sm_90: as __noinline__ calls
// they raised decode with one query head from 116 to 160 registers, and the earlier
// inlined versions, which walked the tile in global memory with the host cursor, made
// apply with one query head spill 108 bytes). Any kernel family with the cta_layout.cuh
// accumulators can call them. Device only; slow by design.
#ifndef PACKKV_CUDA_ATTENTION_CLAMPED_BLOCK_CUH
#define PACKKV_CUDA_ATTENTION_CLAMPED_BLOCK_CUH

#include <stdint.h>

#include "attention/cta_layout.cuh"
#include "attention/online_softmax.cuh"
#include "attention/tile_walk.cuh"
#include "attention/tuning.h"
#include "attention/zs_stage.cuh"
#include "format/round_tile.h"

namespace packkv {
namespace cu {

constexpr double kFltMaxD = 3.4028234663852886e38;  // FLT_MAX

// (code + z) * s in double, clamped to +-lim (fmt::dequantize's expression; code = the
// pack minimum plus the offset that for_codes hands over as an exact float).
__device__ __forceinline__ double clamped_value(uint32_t code, int32_t z, float s, double lim) {
  const double v = static_cast<double>(static_cast<int64_t>(code) + z) * static_cast<double>(s);
  return v > lim ? lim : (v < -lim ? -lim : v);
}

// The K pass: sc[g * N + slot] = sum_c qS[g][c] * clamp((code + z) s, +-FLT_MAX), summed in
// double, for every query head g < G and slot < N (qS: [G][D] queries in shared memory,
// already times the softmax scale for decode). T, tile: the staged K tile (stage(), as
// for walk_tile); ks / kz: the staged scales and zero points; round_start / pre: the
// warp's round tables (overwritten). Whole warp, one round at a time: lane = token i
// (lane & 15) x half of the channels (lane >> 4: octet lanes 4 (lane >> 4) .. + 3 of
// lane_pos).
template <int G>
__device__ __forceinline__ void k_block_clamped(const uint32_t* T, uint32_t tile, int D, int N, int bits,
                                                    const float* qS, const float* ks, const int32_t* kz,
                                                    int* round_start, int* pre, float* sc) {
  const int lane = threadIdx.x & 31, i = lane & 15, hh = lane >> 4;
  const int e = fmt::len_bits(bits), R = N / fmt::kPackTokens, cpl = D >> 3;
  walk_tile(T, tile, D, bits, e, R, round_start, pre);
  for (int r = 0; r < R; ++r) {
    const int slot = 16 * r + i;
    const int32_t z = kz[slot];
    const float s = ks[slot];
    double dot[G];
#pragma unroll
    for (int g = 0; g < G; ++g) dot[g] = 0.0;
    for (int ol = 4 * hh; ol < 4 * hh + 4; ++ol) {
      const LanePos p = lane_pos(tile, round_start, pre, r, ol, D, bits, e);
      for_channels(T, p, D, bits, e, [&](int j, uint32_t mn, uint32_t L, uint32_t pbit) {
        const double v = clamped_value(mn + code_at(T, pbit, L, i), z, s, kFltMaxD);
#pragma unroll
        for (int g = 0; g < G; ++g) dot[g] += static_cast<double>(qS[g * D + ol * cpl + j]) * v;
      });
    }
#pragma unroll
    for (int g = 0; g < G; ++g) {
      dot[g] += __shfl_xor_sync(0xffffffffu, dot[g], 16);
      if (hh == 0) sc[g * N + slot] = static_cast<float>(dot[g]);
    }
  }
  __syncwarp();
}

// The V pass: adds sum_slot p_slot * clamp((code + z) vs, +-FLT_MAX 2^-e) to accumulator
// row 0 (layout acc_word) of every query head g < G (any row serves: the kernels sum the
// rows of a warp). T, tile: the staged V tile; vs / vz: the staged scales (already times
// 2^-e) and zero points; sc[g * N + slot] = w = p * vs[slot] (SoftmaxState::weights);
// round_start / pre as for k_block_clamped. Whole warp, one round at a time: lane = octet
// lane ol (lane & 7, its D/8 channels of lane_pos) x tokens 4 (lane >> 3) .. + 3.
template <int G>
__device__ __forceinline__ void v_block_clamped(const uint32_t* T, uint32_t tile, int D, int N, int bits,
                                                    const float* vs, const int32_t* vz, int e_acc, const float* sc,
                                                    float* acc, int* round_start, int* pre) {
  const int lane = threadIdx.x & 31, ol = lane & 7, i0 = 4 * (lane >> 3);
  const int e = fmt::len_bits(bits), R = N / fmt::kPackTokens;
  const double lim = kFltMaxD * static_cast<double>(__int_as_float((127 - e_acc / 2) << 23)) *
                     static_cast<double>(__int_as_float((127 - (e_acc - e_acc / 2)) << 23));  // FLT_MAX 2^-e
  walk_tile(T, tile, D, bits, e, R, round_start, pre);
  for (int r = 0; r < R; ++r) {
    const LanePos p = lane_pos(tile, round_start, pre, r, ol, D, bits, e);
    for_channels(T, p, D, bits, e, [&](int j, uint32_t mn, uint32_t L, uint32_t pbit) {
      double add[G];
#pragma unroll
      for (int g = 0; g < G; ++g) add[g] = 0.0;
      for (int i = i0; i < i0 + 4; ++i) {
        const int slot = 16 * r + i;
        if (vs[slot] == 0.f) continue;  // all-zero group: v = 0
        const double v = clamped_value(mn + code_at(T, pbit, L, i), vz[slot], vs[slot], lim);
#pragma unroll
        for (int g = 0; g < G; ++g) add[g] += static_cast<double>(sc[g * N + slot]) / vs[slot] * v;
      }
#pragma unroll
      for (int g = 0; g < G; ++g) {
        add[g] += __shfl_xor_sync(0xffffffffu, add[g], 8);
        add[g] += __shfl_xor_sync(0xffffffffu, add[g], 16);
        if (i0 == 0) acc[g * D + j * 8 + ol] += static_cast<float>(add[g]);  // acc_word(g, ol * D/8 + j, D)
      }
    });
  }
  __syncwarp();
}

}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_ATTENTION_CLAMPED_BLOCK_CUH
