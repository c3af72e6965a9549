// The CUDA-core family's arithmetic on one decoded round (PACKKV.md sections 6.1-6.2,
// 8.3): K rounds as partial dot products, V rounds as weighted sums added to shared
// accumulator rows, and the transposed reduction over the 8 lanes of an octet (the lanes that decode one
// round together).
// Zero points and scales are folded in (no dequantization pass). Device only.
//  K: a lane accumulates 16 partial dot products per query head over its channels; one
//     transposed reduction over the 8 lanes of the octet gives the round's scores.
//  V: a lane computes, per channel, sum_t w_t code_t over the round's 16 tokens; with one
//     query head (G = 1) it adds that to its octet's fp32 accumulator row in shared
//     memory (rows summed at the end), with G >= 2 the 4 octets are summed by two
//     shuffles and octet 0 adds to the warp's single row (tuning.h v_rows).
#ifndef PACKKV_CUDA_ATTENTION_CUDACORE_ROUNDS_CUH
#define PACKKV_CUDA_ATTENTION_CUDACORE_ROUNDS_CUH

#include "attention/tile_walk.cuh"
#include "attention/tuning.h"

namespace packkv {
namespace cu {

// K of one round (one octet): part[t*G + g] += sum over this lane's channels
// c of q[g][c] * (min_c + code_{c,t}). qS: queries [G][D] (shared).
template <int G, bool NARROW>
__device__ __forceinline__ void k_round(const uint32_t* T, LanePos p, int D, int bits, int e, int c0,
                                        const float* qS, float (&part)[16 * G]) {
  float qm[G];
#pragma unroll
  for (int g = 0; g < G; ++g) qm[g] = 0.f;
  for_channels(T, p, D, bits, e, [&](int j, uint32_t mn, uint32_t L, uint32_t pbit) {
    float q[G];
#pragma unroll
    for (int g = 0; g < G; ++g) {
      q[g] = qS[g * D + c0 + j];
      qm[g] = fmaf(q[g], code_to_float(mn), qm[g]);
    }
    for_codes<NARROW>(T, pbit, L, [&](int t, float f) {
#pragma unroll
      for (int g = 0; g < G; ++g) part[t * G + g] = fmaf(q[g], f, part[t * G + g]);
    });
  });
#pragma unroll
  for (int t = 0; t < 16; ++t)
#pragma unroll
    for (int g = 0; g < G; ++g) part[t * G + g] += qm[g];
}

// V of one round (one octet): for each channel c of this lane,
//   acc[g][c] += min_c * W_r + WZ_r + sum_t w_t code_{c,t}
// wk: the round's weights w_t = p_t s_t (zero for an octet without a round), wr/wz:
// sum_t w_t and sum_t w_t z_t; acc: the accumulator row (shared, layout acc_word) that
// this lane adds to when lead (G = 1: its octet's row, every lane; G >= 2: the warp's
// row, octet 0 after summing the octets, so all 32 lanes must run this in lockstep).
template <int G, bool NARROW>
__device__ __forceinline__ void v_round(const uint32_t* T, LanePos p, int D, int bits, int e, int octet_lane,
                                        const float (&wk)[G][16], const float (&wr)[G],
                                        const float (&wz)[G], bool lead, float* acc) {
  for_channels(T, p, D, bits, e, [&](int j, uint32_t mn, uint32_t L, uint32_t pbit) {
    float a[G], b[G];
#pragma unroll
    for (int g = 0; g < G; ++g) {
      a[g] = fmaf(code_to_float(mn), wr[g], wz[g]);
      b[g] = 0.f;
    }
    for_codes<NARROW>(T, pbit, L, [&](int t, float f) {
#pragma unroll
      for (int g = 0; g < G; ++g) {
        if (t & 1) a[g] = fmaf(wk[g][t], f, a[g]);
        else b[g] = fmaf(wk[g][t], f, b[g]);
      }
    });
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float x = a[g] + b[g];
      if (!v_rows(G)) {  // sum the 4 octets (all 32 lanes run this loop in lockstep)
        x += __shfl_xor_sync(0xffffffffu, x, 8);
        x += __shfl_xor_sync(0xffffffffu, x, 16);
      }
      if (lead) acc[g * D + j * 8 + octet_lane] += x;  // acc_word(g, octet_lane * D/8 + j, D)
    }
  });
}

// Transposed reduction of V values over the 8 lanes of an octet (V >= 8, a power of two):
// afterwards the lane holds in x[0 .. V/8) the octet sums of value indices base + i.
// Only the octet's own lanes take part (octets without a round skip it).
template <int V>
__device__ __forceinline__ int octet_reduce(float (&x)[V]) {
  const int lane = threadIdx.x & 31;
  const unsigned mask = 0xffu << (lane & 24);
  int base = 0, n = V;
#pragma unroll
  for (int o = 4; o > 0; o >>= 1) {
    const bool up = (lane & o) != 0;
#pragma unroll
    for (int i = 0; i < V / 2; ++i) {
      if (i < n / 2) {
        const float send = up ? x[i] : x[i + n / 2];
        const float keep = up ? x[i + n / 2] : x[i];
        x[i] = keep + __shfl_xor_sync(mask, send, o);
      }
    }
    if (up) base += n / 2;
    n /= 2;
  }
  return base;
}
}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_ATTENTION_CUDACORE_ROUNDS_CUH
