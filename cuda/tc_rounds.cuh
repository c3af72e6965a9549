// Tensor-core decoding of V tiles for p.V with GQA (PACKKV.md sections 5, 6.2, 8.3).
// Device only (attention.cu).
//
// For one block and one warp, out[h][c] += sum_t w[h][t] * (min_{r,c} + z_t + off_{t,c})
// (w = p * s already folded by make_weights, one round r = 16 tokens) is split into
//   - the pack minimums and zero points: per round, min_{r,c} * W_r[h] + WZ_r[h], on the
//     CUDA cores (one FMA per channel and head per round);
//   - the pack offsets: sum_t w[h][t] off_{t,c}, with mma.sync.m16n8k16 (fp16 inputs, fp32
//     accumulation): A = the offsets of 16 channels x the 16 tokens of a round, B = the
//     weights of those tokens for up to 8 query heads, C = 16 channels x 8 heads.
// Offsets (0..255) enter A as exact fp16 integers: the pair's fields are placed in the two
// halves (a shift, a byte permute, a LOP3 that also ORs in the exponent of 1024) and
// 1024 is subtracted with one HSUB2. (Raw fp16 subnormals, off * 2^-24 with no HSUB2,
// measured 30x the error of the CUDA-core path on the H200, 1.3e-5 against the CPU
// backend: the tensor cores align products by exponent, and a subnormal's leading zero
// bits then cost precision.)
// Weights enter B as hi + lo fp16 halves after scaling each head's weights of the block
// by a power of two (largest in [2^14, 2^15)), so that B carries ~22 bits of each weight:
// the products are exact and the sum is fp32, within the 1e-5 of the CPU backend.
//
// Fragment mapping (PTX ISA, mma.m16n8k16 .f16: lane l, g = l / 4, t = l % 4):
//   A regs {a0, a1, a2, a3} = rows {g, g + 8, g, g + 8} x k pairs {2t, 2t, 2t + 8, 2t + 8},
//   B regs {b0, b1} = k pairs {2t, 2t + 8} x column g, C regs = rows {g, g, g + 8, g + 8} x
//   columns {2t, 2t + 1, 2t, 2t + 1}. Rows g and g + 8 are channels 2g and 2g + 1 of the
//   slice; k = 2t + i and 2t + 8 + i are the pack fields 4t + i and 4t + 2 + i (field f =
//   bits [f L, (f + 1) L) of the pack = stored token 15 - f, fmt::write_pack), so a lane's
//   four fields of one channel are one 4L-bit window.
#ifndef PACKKV_CUDA_TC_ROUNDS_CUH
#define PACKKV_CUDA_TC_ROUNDS_CUH

#include <cuda_fp16.h>
#include <stdint.h>

#include "device_util.cuh"

namespace packkv {
namespace cu {

// c += A * B for one m16n8k16 tile (fp16 in, fp32 accumulate). sm_80 and later.
__device__ __forceinline__ void mma_16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                          uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// fp16x2 (lo in the low half) of two floats, and the fp16x2 of what they lose to it.
__device__ __forceinline__ void split_pair(float x, float y, uint32_t* hi, uint32_t* lo) {
  const __half2 h = __floats2half2_rn(x, y);
  const float2 hf = __half22float2(h);
  const __half2 l = __floats2half2_rn(x - hf.x, y - hf.y);
  *hi = *reinterpret_cast<const uint32_t*>(&h);
  *lo = *reinterpret_cast<const uint32_t*>(&l);
}

// Shared memory of v_block_tc per warp: the channel table (pack bit and encode length
// of every channel of every round) and the B fragments of every round.
__host__ __device__ inline size_t tc_tab_bytes(int block_tokens, int head_dim) {
  return static_cast<size_t>(block_tokens / 16) * head_dim * 4;
}
__host__ __device__ inline size_t tc_bfrag_bytes(int block_tokens) {
  return static_cast<size_t>(block_tokens / 16) * 32 * 16;
}

// 2^n as a float, n in [-126, 127].
__device__ __forceinline__ float pow2i(int n) { return __int_as_float((n + 127) << 23); }

// The scale factors of one head's weights for v_block_tc, from their largest magnitude
// mx over the block: scl[0] * scl[1] = 2^sh puts mx in [2^14, 2^15) (two factors, so
// each is a normal float), scl[2] * scl[3] = 2^-sh undoes it.
__device__ __forceinline__ void tc_weight_scale(float mx, float* scl) {
  int ex = 0;
  if (mx > 0.f) (void)frexpf(mx, &ex);
  const int sh = mx > 0.f ? 15 - ex : 0;
  const int sh1 = sh / 2, sh2 = sh - sh1;
  scl[0] = pow2i(sh1);
  scl[1] = pow2i(sh2);
  scl[2] = pow2i(-sh1);
  scl[3] = pow2i(-sh2);
}

// Two offsets (< 1024) in bits [0, 10) and [16, 26) of v as an exact fp16x2.
__device__ __forceinline__ uint32_t offsets_h2(uint32_t v) {
  const uint32_t m = v | 0x64006400u;  // 1024 + off in each half
  const __half2 x = __hsub2(*reinterpret_cast<const __half2*>(&m), __half2(__half(1024.f), __half(1024.f)));
  return *reinterpret_cast<const uint32_t*>(&x);
}

// V of one staged block, whole warp: add(h, c, x) is called once per (head h < G,
// channel c) and phase with x = the part of sum over the block's tokens of
// w[h][t] * (code_{t,c} + z_t) (the zero point and scale folding of attention.cu's
// v_round); no two lanes add to the same (h, c) at once. T/tile: the staged V tile; w:
// weights [G][N] (stored slots); Wr/WZr: per-round sum w and sum w z [G][16]; tab/bf:
// this warp's tc_tab_bytes / tc_bfrag_bytes scratch; scl: per head the 4 factors of
// tc_weight_scale for this block's weights.
template <int G, typename Add>
__device__ __forceinline__ void v_block_tc(const uint32_t* T, uint32_t tile, int D, int N, int bits, int e,
                                           const float* w, const float* Wr, const float* WZr, uint32_t* tab,
                                           uint4* bf, float* scl, Add&& add) {
  static_assert(G >= 1 && G <= 8, "B has 8 columns");
  const int lane = threadIdx.x & 31;
  const int R = N >> 4;
  // Walk: lane owns channels [cb, cb + nf) of every round (nf <= 8).
  const int cb = (lane * D) >> 5, nf = (((lane + 1) * D) >> 5) - cb;
  const uint32_t bm = (1u << bits) - 1u, em = (1u << e) - 1u;
  const uint32_t meta = static_cast<uint32_t>(D * bits + D * e) / 8;
  float macc[8][G];
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int h = 0; h < G; ++h) macc[i][h] = 0.f;
  uint32_t start = 0;
  for (int r = 0; r < R; ++r) {
    const uint32_t rb = (tile + start) * 8;
    const uint32_t lw = bits_at(T, rb + static_cast<uint32_t>(D * bits + cb * e));
    const uint32_t mb = rb + static_cast<uint32_t>(cb * bits);
    const uint64_t mw = static_cast<uint64_t>(bits_at(T, mb)) | (static_cast<uint64_t>(bits_at(T, mb + 32)) << 32);
    uint32_t Ls[8], excl[8], sum = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      Ls[i] = i < nf ? (lw >> (i * e)) & em : 0u;
      excl[i] = sum;
      sum += Ls[i];
    }
    const uint32_t incl = warp_incl_scan(sum);
    const uint32_t pbase = rb + 8 * meta + 16 * (incl - sum);
    float wr[G], wz[G];
#pragma unroll
    for (int h = 0; h < G; ++h) {
      wr[h] = Wr[h * 16 + r];
      wz[h] = WZr[h * 16 + r];
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      if (i < nf) {
        tab[r * D + cb + i] = (pbase + 16 * excl[i]) | (Ls[i] << 28);
        const float mn = code_to_float(static_cast<uint32_t>(mw >> (i * bits)) & bm);
#pragma unroll
        for (int h = 0; h < G; ++h) macc[i][h] += fmaf(mn, wr[h], wz[h]);
      }
    }
    start += meta + 2u * __shfl_sync(0xffffffffu, incl, 31);
    // B fragments of round r: column = head lane / 4, k rows as in the header.
    const int hg = lane >> 2, t = lane & 3;
    uint4 b = make_uint4(0u, 0u, 0u, 0u);
    if (hg < G) {
      const float* wt = w + hg * N + 16 * r;
      const float f1 = scl[4 * hg], f2 = scl[4 * hg + 1];
      split_pair(wt[15 - 4 * t] * f1 * f2, wt[14 - 4 * t] * f1 * f2, &b.x, &b.z);
      split_pair(wt[13 - 4 * t] * f1 * f2, wt[12 - 4 * t] * f1 * f2, &b.y, &b.w);
    }
    bf[r * 32 + lane] = b;
  }
#pragma unroll
  for (int i = 0; i < 8; ++i)
    if (i < nf)
#pragma unroll
      for (int h = 0; h < G; ++h) add(h, cb + i, macc[i][h]);
  __syncwarp();

  // Offsets: per slice of 16 channels, the rounds' mma into c, then into the output. Two
  // slices per iteration, so that a warp has two independent chains of loads and mma.
  const int g = lane >> 2, t = lane & 3, nj = D >> 4;
  // A fragment of slice j, round r: rows = channels 16j + 2g (+1), fields 4t .. 4t+3.
  auto frag = [&](int j, int r, uint32_t (&a)[4]) {
    const uint2 ent = *reinterpret_cast<const uint2*>(&tab[r * D + 16 * j + 2 * g]);
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      const uint32_t E = u == 0 ? ent.x : ent.y;
      const uint32_t L = E >> 28;
      const uint32_t x = bits_at(T, (E & 0x0FFFFFFFu) + 4u * t * L);
      const uint32_t M = ((1u << L) - 1u) * 0x10001u;
      const uint32_t x2 = x >> (2 * L);
      a[u] = offsets_h2(__byte_perm(x, x << (16 - L), 0x7610) & M);        // fields 4t, 4t+1
      a[2 + u] = offsets_h2(__byte_perm(x2, x2 << (16 - L), 0x7610) & M);  // fields 4t+2, 4t+3
    }
  };
  auto flush = [&](int j, const float (&c)[4]) {
    const int ch = 16 * j + 2 * g;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int h = 2 * t + (q & 1);
      if (h < G) add(h, ch + (q >> 1), c[q] * scl[4 * h + 2] * scl[4 * h + 3]);
    }
  };
  for (int j = 0; j < nj; j += 2) {
    const bool two = j + 1 < nj;
    // Each mma (a round's hi or lo half) starts from a zero tile and is added to c on the
    // CUDA cores: the tensor cores align every product of an mma to the largest addend,
    // the accumulator included, and truncate, so chaining rounds (and lo after hi)
    // through the accumulator would lose bits to the larger partial sums.
    float c0[4] = {0.f, 0.f, 0.f, 0.f}, c1[4] = {0.f, 0.f, 0.f, 0.f};
    for (int r = 0; r < R; ++r) {
      const uint4 b = bf[r * 32 + lane];
      uint32_t a0[4], a1[4];
      frag(j, r, a0);
      if (two) frag(j + 1, r, a1);
      float h0[4] = {0.f, 0.f, 0.f, 0.f}, l0[4] = {0.f, 0.f, 0.f, 0.f};
      float h1[4] = {0.f, 0.f, 0.f, 0.f}, l1[4] = {0.f, 0.f, 0.f, 0.f};
      mma_16816(h0, a0[0], a0[1], a0[2], a0[3], b.x, b.y);
      mma_16816(l0, a0[0], a0[1], a0[2], a0[3], b.z, b.w);
      if (two) {
        mma_16816(h1, a1[0], a1[1], a1[2], a1[3], b.x, b.y);
        mma_16816(l1, a1[0], a1[1], a1[2], a1[3], b.z, b.w);
      }
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        c0[q] += h0[q] + l0[q];
        c1[q] += h1[q] + l1[q];
      }
    }
    flush(j, c0);
    if (two) flush(j + 1, c1);
  }
  __syncwarp();
}

}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_TC_ROUNDS_CUH
