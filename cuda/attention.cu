// Fused decode attention on the compressed tiles (PACKKV.md sections 6.1-6.3, 8.3):
// one kernel computes, per (sequence, KV head, token split), either
//   scores  s_t * (q . k_int_t + z_t * sum(q))          (packkv_attn_scores)
//   apply   sum_t p_t s_t (v_int_t + z_t)                 (packkv_attn_apply)
//   decode  online softmax over both                      (packkv_attn_decode)
// decoding the packs in registers (zero point and scale folded in, no dequantization
// pass), once per GQA group (up to 4 query heads share each decoded tile), in fp32. The
// last splits of the grid handle the uncompressed residual window in the same launch. A
// second small kernel merges the splits exactly (flash-decoding: max, sum-exp, partial
// output) or sums them (apply).
//
// Work split (chosen so that almost every instruction decodes a code):
//  - a CTA has nw <= 4 warps; a warp owns whole blocks and stages its tiles, zero points
//    and scales into its shared memory with 16-byte cp.async copies;
//  - walk_tile: the 32 lanes walk the rounds of a staged tile once (round r's position
//    follows from the encode lengths of rounds < r) and record, per round, where it
//    starts and the prefix sums of its encode lengths at every eighth of the channels;
//  - the warp then splits into 4 groups of 8 lanes, group i decoding round r + i; lane j
//    of a group owns the D/8 channels [j D/8, (j+1) D/8) of its round and decodes their
//    16-token packs from 32-bit shared-memory windows (bits_at).
//  K: a lane accumulates 16 partial dot products per query head over its channels; one
//     transposed reduction over the 8 lanes of the group gives the round's scores.
//  V: a lane computes, per channel, sum_t w_t code_t over the round's 16 tokens; with one
//     query head (G = 1) it adds that to its group's fp32 accumulator row in shared
//     memory (rows summed at the end), with G >= 2 the 4 groups are summed by two
//     shuffles and group 0 adds to the warp's single row (see v_rows).
#include <cuda_pipeline_primitives.h>
#include <cuda_runtime.h>
#include <math.h>

#include "attention/tc_family.h"
#include "cuda_check.h"
#include "device_util.cuh"
#include "kernels.h"
#include "tile_format.h"

namespace packkv {
namespace cu {
namespace {

constexpr int kMaxWarps = 4;
constexpr int kGroups = 4;      // rounds decoded side by side by one warp
// V accumulation: with G = 1 query head each round group adds into its own accumulator
// row; with G >= 2 the 4 groups are summed by two shuffles into one row (less shared
// memory, so more resident warps). H200, headline shape, same run, two repeats: G = 1
// decode 915-926 us with rows vs 1010-1025 with shuffles; G = 4 decode 2287-2310 us with
// shuffles vs 2639-2669 with rows, p.V 968-987 vs 1030.
__host__ __device__ constexpr bool v_rows(int G) { return G == 1; }
__host__ __device__ constexpr int acc_rows(int G) { return v_rows(G) ? kGroups : 1; }  // per warp
constexpr int kMaxRounds = fmt::kMaxBlockTokens / fmt::kPackTokens;
constexpr int kMaxG = 4;        // query heads per CTA (larger GQA groups use several CTAs)

__host__ __device__ inline size_t al16(size_t x) { return (x + 15) & ~static_cast<size_t>(15); }

// V accumulators: acc_rows(G) rows of G*D fp32 (+ 8 words of padding) per warp. Within a
// head's D words, channel c = lane_g * (D/8) + j is stored at word j * 8 + lane_g, so the
// lanes that add to channel j of their own lane_g touch different banks: with G = 1 all
// 32 lanes, each in its own group's row (rows 8 banks apart), with G >= 2 the 8 lanes of
// group 0 in the single row.
__host__ __device__ inline int acc_row_words(int G, int D) { return G * D + 8; }
__device__ __forceinline__ int acc_word(int g, int c, int D) {
  const int cpl = D >> 3;
  const int lg = c / cpl;
  return g * D + (c - lg * cpl) * 8 + lg;
}

// Shared-memory layout of one CTA: a CTA part (queries, per-warp accumulators) and nw
// warp parts (staged tiles and metadata, scores/weights, round tables).
struct AttnSmem {
  size_t q, qsum, acc, ml, warp0;          // CTA part (acc: [nw][acc_rows(G)][acc_row_words])
  size_t kbuf, vbuf, zb, sb, vzb, vsb, pb;  // warp part: staging buffers
  size_t sc, wr, wzr, rs, pre;             // warp part: scores/weights, round tables
  size_t stride, total;
};
__host__ __device__ inline AttnSmem attn_smem(const KernelConfig& c, int G, int mode, int nw) {
  AttnSmem s;
  const size_t D = static_cast<size_t>(c.head_dim), N = static_cast<size_t>(c.block_tokens);
  size_t at = 0;
  s.q = at;    at += al16(G * D * 4);
  s.qsum = at; at += al16(G * 4);
  s.acc = at;  at += mode == kAttnScores ? 0 : al16(static_cast<size_t>(nw) * acc_rows(G) * acc_row_words(G, static_cast<int>(D)) * 4);
  s.ml = at;   at += al16(static_cast<size_t>(nw) * G * 2 * 4);
  s.warp0 = at;
  // Tile buffers: a copy starts up to 15 bytes before the tile (16-byte chunks) and
  // bits_at reads one 32-bit word past the last byte it needs.
  const size_t tb = al16(c.max_tile + 48), zs = al16(N * 4 + 32);
  size_t w = 0;
  s.kbuf = w; if (mode != kAttnApply) w += tb;
  s.vbuf = w; if (mode != kAttnScores) w += tb;
  s.zb = w;   w += zs;
  s.sb = w;   w += zs;
  s.vzb = w;  if (mode == kAttnDecode) w += zs;
  s.vsb = w;  if (mode == kAttnDecode) w += zs;
  s.pb = w;   w += al16(N + 32);
  s.sc = w;   w += al16(G * N * 4);
  s.wr = w;   w += al16(G * 16 * 4);
  s.wzr = w;  w += al16(G * 16 * 4);
  s.rs = w;   w += al16((kMaxRounds + 1) * 4);
  s.pre = w;  w += al16(kMaxRounds * 8 * 4);
  s.stride = al16(w);
  s.total = at + nw * s.stride;
  return s;
}

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

// Round table of a tile staged at byte `tile` of T (fmt layout: per round MINS, LENS,
// PAYLOAD). Writes rs[r] = byte offset of round r from the tile start and
// pre[r*8 + j] = sum of the encode lengths of channels [0, j*D/8) of round r, for
// r < R. Whole warp.
__device__ __forceinline__ void walk_tile(const uint32_t* T, uint32_t tile, int D, int bits, int e,
                                          int R, int* rs, int* pre) {
  const int lane = threadIdx.x & 31;
  const int cb = (lane * D) >> 5, nf = (((lane + 1) * D) >> 5) - cb;  // nf <= 8, nf*e <= 32
  // Sum of nf e-bit fields = sum over k < e of 2^k * popc(bit k of every field).
  const uint32_t wmask = nf * e >= 32 ? 0xffffffffu : (1u << (nf * e)) - 1u;
  const uint32_t m0 = e == 1 ? 0xffffffffu : e == 2 ? 0x55555555u : e == 3 ? 0x49249249u : 0x11111111u;
  const uint32_t m1 = e > 1 ? m0 << 1 : 0u, m2 = e > 2 ? m0 << 2 : 0u, m3 = e > 3 ? m0 << 3 : 0u;
  const uint32_t meta = static_cast<uint32_t>(D * bits + D * e) / 8;
  uint32_t start = 0;
  for (int r = 0; r < R; ++r) {
    if (lane == 0) rs[r] = static_cast<int>(start);
    const uint32_t w = bits_at(T, (tile + start) * 8 + static_cast<uint32_t>(D * bits + cb * e)) & wmask;
    const uint32_t s = __popc(w & m0) + 2 * __popc(w & m1) + 4 * __popc(w & m2) + 8 * __popc(w & m3);
    const uint32_t incl = warp_incl_scan(s);
    if ((lane & 3) == 0) pre[r * 8 + (lane >> 2)] = static_cast<int>(incl - s);
    start += meta + 2u * __shfl_sync(0xffffffffu, incl, 31);
  }
  __syncwarp();
}

// Where one lane's channels of round r start: bit of its first MINS field, of its first
// LENS field and of its first pack (all relative to T).
struct LanePos {
  uint32_t mbit, lbit, pbit;
};
__device__ __forceinline__ LanePos lane_pos(uint32_t tile, const int* rs, const int* pre, int r,
                                            int lane_g, int D, int bits, int e) {
  const int c0 = lane_g * (D >> 3);
  const uint32_t rbit = (tile + static_cast<uint32_t>(rs[r])) * 8;
  LanePos p;
  p.mbit = rbit + static_cast<uint32_t>(c0 * bits);
  p.lbit = rbit + static_cast<uint32_t>(D * bits + c0 * e);
  p.pbit = rbit + static_cast<uint32_t>(D * bits + D * e) + 16u * static_cast<uint32_t>(pre[r * 8 + lane_g]);
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

// Walks this lane's D/8 channels of one round (LanePos p from lane_pos): reads the MINS
// and LENS fields two channels at a time and calls fn(j, min code, encode length L, bit
// of the pack) for j = 0 .. D/8 - 1 (channel lane_g * D/8 + j).
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

// K of one round (one group of 8 lanes): part[t*G + g] += sum over this lane's channels
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

// V of one round (one group of 8 lanes): for each channel c of this lane,
//   acc[g][c] += min_c * W_r + WZ_r + sum_t w_t code_{c,t}
// wk: the round's weights w_t = p_t s_t (zero for a group without a round), wr/wz:
// sum_t w_t and sum_t w_t z_t; acc: the accumulator row (shared, layout acc_word) that
// this lane adds to when lead (G = 1: its group's row, every lane; G >= 2: the warp's
// row, group 0 after summing the groups, so all 32 lanes must run this in lockstep).
template <int G, bool NARROW>
__device__ __forceinline__ void v_round(const uint32_t* T, LanePos p, int D, int bits, int e, int lane_g,
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
      if (!v_rows(G)) {  // sum the 4 groups (all 32 lanes run this loop in lockstep)
        x += __shfl_xor_sync(0xffffffffu, x, 8);
        x += __shfl_xor_sync(0xffffffffu, x, 16);
      }
      if (lead) acc[g * D + j * 8 + lane_g] += x;  // acc_word(g, lane_g * D/8 + j, D)
    }
  });
}

// Transposed reduction of V values over the 8 lanes of a group (V >= 8, a power of two):
// afterwards the lane holds in x[0 .. V/8) the group sums of value indices base + i.
// Only the group's own lanes take part (groups without a round skip it).
template <int V>
__device__ __forceinline__ int group_reduce(float (&x)[V]) {
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


// The fused attention kernel. Device. Grid (n_splits + res_splits, H_kv * n_gchunks, b.n), nw*32
// threads, dynamic smem attn_smem(c, G, MODE, nw).total. CTA (split, kv head and group
// chunk, sequence) covers compressed blocks [split*bps, (split+1)*bps) of the sequence
// (splits n_splits .. gridDim.x - 1: its residual window, warp w of residual split r
// taking 16-token chunks r*nw + w, stepping by nw*res_splits) for G query heads (heads
// qh0 .. qh0+n_valid-1).
// Inputs: a.q [n_seqs][n_q_heads][D] in a.q_dtype (scores, decode), a.probs fp32
// [..][ld] (apply). Outputs: scores fp32 [..][ld] at original token positions (MODE
// scores), or one partial per (sequence, head, split) in a.partial: [m, l, acc[D]]
// (decode: max of scaled scores, sum of exp, unnormalized output; apply: acc only),
// merged by merge_kernel. fp32 arithmetic throughout. PACKKV.md 6.1-6.3, 8.3. Reads
// only; thread-safe across calls.
// Register allocation is left to ptxas except for two variants. Apply with G = 1 is held
// to 64 registers, its count before the residual-window loads were batched (which took it
// to 72; ptxas picks 64 again without the target since then); the "8 CTAs" target is a
// register cap only: shared memory allows about 6 such CTAs per SM at head_dim 128. With
// nvcc 13.0 it spills 16 bytes on sm_90 and 40 on sm_80 (where apply with G = 2 and 4 and
// decode with G = 4 spill 20-36 bytes too); tuned on the H200 only. Scores and apply with G = 4
// are held to 128 (4 CTAs): H200, same run, two repeats each, every g = 4 shape of the
// sweep: K.q and p.V 5-20% faster than with ptxas's 156-161; decode with G = 4 spilled
// at 128 and was slower at head_dim 128, so it is left free. Targets for every variant
// (8/6/4/3 CTAs for G = 1/2/4) measured at the headline K.q 423 vs 402 us and decode
// 1155 vs 920 us; decode with G = 1 alone at 80 registers (6 CTAs, no spills): 1137-1140
// vs 911-920 us, slower at every T >= 16K, mixed below (third session, same run).
#ifndef PACKKV_ATTN_G4_MIN_CTAS
#define PACKKV_ATTN_G4_MIN_CTAS 4  // compile-time A/B knobs (bench/gpu_run.sh ab)
#endif
__host__ __device__ constexpr int attn_min_ctas(int G, int MODE) {
  return MODE == kAttnApply && G == 1 ? 8 : (G == 4 && MODE != kAttnDecode ? PACKKV_ATTN_G4_MIN_CTAS : 0);
}
template <int G, int MODE>
__global__ void __launch_bounds__(kMaxWarps * 32, attn_min_ctas(G, MODE)) attn_kernel(KernelConfig c, AttnBatch b, CacheDevicePtrs d,
                                                              AttnCall a, int n_gchunks, int group, int bps,
                                                              int n_splits, int split0) {
  extern __shared__ __align__(16) uint8_t smem[];
  const int nw = blockDim.x >> 5;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int gi = lane >> 3, lane_g = lane & 7;
  const AttnSeq& s = b.s[blockIdx.z];
  const int row = b.first + blockIdx.z;
  const int kvh = blockIdx.y / n_gchunks;
  const int chunk = blockIdx.y - kvh * n_gchunks;
  const int qh0 = kvh * group + chunk * G;
  const int n_valid = min(G, group - chunk * G);
  const int D = c.head_dim, N = c.block_tokens, H = c.n_kv_heads, R = N / 16;
  const int split = split0 + static_cast<int>(blockIdx.x);  // split0 > 0: residual splits only

  const AttnSmem L = attn_smem(c, G, MODE, nw);
  float* qS = reinterpret_cast<float*>(smem + L.q);
  float* qsum = reinterpret_cast<float*>(smem + L.qsum);
  // This warp's V accumulator rows (acc_rows(G); the residual window uses row 0).
  const int arw = acc_row_words(G, D);
  constexpr int kAccRows = acc_rows(G), kVRows = v_rows(G);
  float* acc = reinterpret_cast<float*>(smem + L.acc) + static_cast<size_t>(warp) * kAccRows * arw;
  float* ml = reinterpret_cast<float*>(smem + L.ml);
  uint8_t* wb = smem + L.warp0 + static_cast<size_t>(warp) * L.stride;
  uint8_t* kbuf = wb + L.kbuf;
  uint8_t* vbuf = wb + L.vbuf;
  float* sc = reinterpret_cast<float*>(wb + L.sc);   // [G][N] scores, then weights
  float* Wr = reinterpret_cast<float*>(wb + L.wr);   // [G][16] per-round sum w
  float* WZr = reinterpret_cast<float*>(wb + L.wzr); // [G][16] per-round sum w*z
  int* rs = reinterpret_cast<int*>(wb + L.rs);
  int* pre = reinterpret_cast<int*>(wb + L.pre);

  if (MODE != kAttnApply) {
    for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
      const int g = i / D, ch = i - g * D;
      qS[i] = g < n_valid ? load_elem(a.q, (static_cast<size_t>(row) * a.n_q_heads + qh0 + g) * D + ch, a.q_dtype)
                          : 0.f;
    }
    __syncthreads();
    if (warp == 0) {
      for (int g = 0; g < G; ++g) {
        float x = 0.f;
        for (int ch = lane; ch < D; ch += 32) x += qS[g * D + ch];
        x = warp_sum(x);
        if (lane == 0) qsum[g] = x;
      }
    }
  }
  if (MODE != kAttnScores)
    for (int i = lane; i < kAccRows * arw; i += 32) acc[i] = 0.f;
  __syncthreads();

  float m_run[G], l_run[G];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m_run[g] = -INFINITY;
    l_run[g] = 0.f;
  }

  // Weights of n slots from scores (decode) or probs (apply): w = p*vs, per-round sums.
  // vs/vz null: residual tokens (s = 1, z = 0). orig(slot): original token position.
  auto make_weights = [&](int n, const float* vs, const int32_t* vz, auto&& orig) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float m_new = m_run[g], alpha = 1.f;
      if (MODE == kAttnDecode) {
        float mx = -INFINITY;
        for (int t = lane; t < n; t += 32) mx = fmaxf(mx, sc[g * N + t] * a.scale);
        mx = warp_max(mx);
        m_new = fmaxf(m_run[g], mx);
        alpha = m_new == -INFINITY ? 1.f : __expf(m_run[g] - m_new);
      }
      float psum = 0.f;
      for (int t0 = 0; t0 < n; t0 += 32) {
        const int t = t0 + lane;
        float w = 0.f, wz = 0.f;
        if (t < n) {
          float p;
          if (MODE == kAttnDecode) {
            const float x = sc[g * N + t] * a.scale;
            p = x == -INFINITY ? 0.f : __expf(x - m_new);
          } else {
            p = (g < n_valid) ? a.probs[(static_cast<size_t>(row) * a.n_q_heads + qh0 + g) * a.ld + orig(t)] : 0.f;
          }
          psum += p;
          w = vs ? p * vs[t] : p;
          wz = vz ? w * static_cast<float>(vz[t]) : 0.f;
          sc[g * N + t] = w;
        }
#pragma unroll
        for (int o = 8; o > 0; o >>= 1) {
          w += __shfl_xor_sync(0xffffffffu, w, o);
          wz += __shfl_xor_sync(0xffffffffu, wz, o);
        }
        const int r = (t0 >> 4) + (lane >> 4);
        if ((lane & 15) == 0 && 16 * r < n) {
          Wr[g * 16 + r] = w;
          WZr[g * 16 + r] = wz;
        }
      }
      if (MODE == kAttnDecode) {
        psum = warp_sum(psum);
        l_run[g] = l_run[g] * alpha + psum;
        m_run[g] = m_new;
        if (alpha != 1.f)
          for (int i = lane; i < kAccRows * D; i += 32) acc[(i / D) * arw + g * D + i % D] *= alpha;
      }
    }
    __syncwarp();
  };

  if (split < n_splits) {
    const int blk_begin = split * bps;
    const int blk_end = min(s.n_blocks, blk_begin + bps);
    const fmt::BlockLayout BL = fmt::block_layout(H, N, c.groups, c.has_perm != 0);
    const size_t zs_off = static_cast<size_t>(c.groups == 1 ? 0 : kvh) * N * 4;
    const int ek = fmt::len_bits(c.bits_k), ev = fmt::len_bits(c.bits_v);
    const unsigned long long* table = d.block_table + static_cast<size_t>(s.seq) * c.max_blocks;
    const uint32_t* KT = reinterpret_cast<const uint32_t*>(kbuf);
    const uint32_t* VT = reinterpret_cast<const uint32_t*>(vbuf);
    unsigned long long next_ptr = blk_begin + warp < blk_end ? table[blk_begin + warp] : 0ull;
    for (int blk = blk_begin + warp; blk < blk_end; blk += nw) {
      const uint8_t* blob = reinterpret_cast<const uint8_t*>(next_ptr);
      if (blk + nw < blk_end) next_ptr = table[blk + nw];  // prefetch the next pointer
      size_t koff, ksz, voff, vsz;
      fmt::tile_extent(blob, BL, kvh, &koff, &ksz);
      fmt::tile_extent(blob, BL, H + kvh, &voff, &vsz);
      // Stage this block: K tile, V tile, their zero points and scales, the perm.
      const size_t z_at = MODE == kAttnApply ? BL.v_zero_at : BL.k_zero_at;
      const size_t s_at = MODE == kAttnApply ? BL.v_scale_at : BL.k_scale_at;
      const uint32_t kt = MODE != kAttnApply ? stage(kbuf, blob + koff, ksz) : 0u;
      const uint32_t vt = MODE != kAttnScores ? stage(vbuf, blob + voff, vsz) : 0u;
      const int32_t* zst = reinterpret_cast<const int32_t*>(wb + L.zb + stage(wb + L.zb, blob + z_at + zs_off, N * 4));
      const float* sst = reinterpret_cast<const float*>(wb + L.sb + stage(wb + L.sb, blob + s_at + zs_off, N * 4));
      const uint8_t* perm = blob + BL.perm_at;
      if (MODE != kAttnDecode && c.has_perm) perm = wb + L.pb + stage(wb + L.pb, perm, N);
      const int32_t* vzst = zst;
      const float* vsst = sst;
      if (MODE == kAttnDecode) {
        vzst = reinterpret_cast<const int32_t*>(wb + L.vzb + stage(wb + L.vzb, blob + BL.v_zero_at + zs_off, N * 4));
        vsst = reinterpret_cast<const float*>(wb + L.vsb + stage(wb + L.vsb, blob + BL.v_scale_at + zs_off, N * 4));
      }
      __pipeline_commit();
      auto orig = [&](int slot) -> int64_t {
        return static_cast<int64_t>(blk) * N + (c.has_perm ? perm[slot] : slot);
      };
      __pipeline_wait_prior(0);
      __syncwarp();

      if (MODE != kAttnApply) {
        walk_tile(KT, kt, D, c.bits_k, ek, R, rs, pre);
        for (int r0 = 0; r0 < R; r0 += kGroups) {
          const int r = r0 + gi;
          if (r < R) {
            float part[16 * G];
#pragma unroll
            for (int i = 0; i < 16 * G; ++i) part[i] = 0.f;
            const LanePos p = lane_pos(kt, rs, pre, r, lane_g, D, c.bits_k, ek);
            if (c.bits_k <= 4) k_round<G, true>(KT, p, D, c.bits_k, ek, lane_g * (D >> 3), qS, part);
            else k_round<G, false>(KT, p, D, c.bits_k, ek, lane_g * (D >> 3), qS, part);
            const int base = group_reduce<16 * G>(part);
#pragma unroll
            for (int i = 0; i < 2 * G; ++i) {
              const int v = base + i, k = v / G, g = v - k * G;
              const int slot = 16 * r + k;
              const float score = sst[slot] * (part[i] + static_cast<float>(zst[slot]) * qsum[g]);
              if (MODE == kAttnScores) {
                if (g < n_valid) a.out[(static_cast<size_t>(row) * a.n_q_heads + qh0 + g) * a.ld + orig(slot)] = score;
              } else {
                sc[g * N + slot] = score;
              }
            }
          }
        }
        __syncwarp();
      }
      if (MODE != kAttnScores) {
        make_weights(N, vsst, vzst, orig);
        walk_tile(VT, vt, D, c.bits_v, ev, R, rs, pre);
        for (int r0 = 0; r0 < R; r0 += kGroups) {
          const int r = r0 + gi;
          const bool on = r < R;
          if (kVRows && !on) continue;
          // Without per-group rows every group runs (the shuffles of v_round need all 32
          // lanes): a group without a round decodes round r0 with zero weights.
          float wk[G][16], wr[G], wz[G];
#pragma unroll
          for (int g = 0; g < G; ++g) {
#pragma unroll
            for (int t = 0; t < 16; ++t) wk[g][t] = on ? sc[g * N + 16 * r + t] : 0.f;
            wr[g] = on ? Wr[g * 16 + r] : 0.f;
            wz[g] = on ? WZr[g * 16 + r] : 0.f;
          }
          const LanePos p = lane_pos(vt, rs, pre, on ? r : r0, lane_g, D, c.bits_v, ev);
          float* row_acc = acc + static_cast<size_t>(kVRows ? gi : 0) * arw;
          const bool lead = kVRows || gi == 0;
          if (c.bits_v <= 4) v_round<G, true>(VT, p, D, c.bits_v, ev, lane_g, wk, wr, wz, lead, row_acc);
          else v_round<G, false>(VT, p, D, c.bits_v, ev, lane_g, wk, wr, wz, lead, row_acc);
        }
        __syncwarp();
      }
    }
  } else {
    // Residual window: dense tokens of the ring, 16 per warp iteration. A lane issues its
    // loads in batches (K: 4 vectors of 8 elements, V: 8 tokens) before the FMAs that use
    // them, so an iteration costs a few memory latencies (at head_dim 128: 2 for K, 4 for
    // V), not one per element: the residual splits are the critical path of short contexts.
    const size_t row_elems = static_cast<size_t>(H) * D;
    const size_t head_off = static_cast<size_t>(kvh) * D;
    const void* ring_k = reinterpret_cast<const void*>(d.ring_table[2 * s.seq]);
    const void* ring_v = reinterpret_cast<const void*>(d.ring_table[2 * s.seq + 1]);
    const int64_t pos0 = static_cast<int64_t>(s.n_blocks) * N;
    const int res_splits = split0 + static_cast<int>(gridDim.x) - n_splits;
    for (int c0 = 16 * ((split - n_splits) * nw + warp); c0 < s.res_len; c0 += 16 * nw * res_splits) {
      const int n = min(16, s.res_len - c0);
      // Ring slots of the n tokens (rs is free in the residual split; a slot is below
      // ring_tokens, an int).
      if (lane < n) rs[lane] = (s.ring_start + c0 + lane) % c.ring_tokens;
      __syncwarp();
      auto orig = [&](int t) -> int64_t { return pos0 + c0 + t; };
      if (MODE != kAttnApply) {
        // Lane = token i (lane & 15) x half hh (lane >> 4) of the channels: q . k_i over
        // channels [hh D/2, (hh+1) D/2) from 8-element loads, halves summed by a shuffle.
        const int i = lane & 15, hh = lane >> 4, hd = D >> 1;
        float part[G];
#pragma unroll
        for (int g = 0; g < G; ++g) part[g] = 0.f;
        if (i < n) {
          const size_t o = static_cast<size_t>(rs[i]) * row_elems + head_off + static_cast<size_t>(hh * hd);
          const float* qh = qS + hh * hd;
#pragma unroll 4
          for (int c8 = 0; c8 < hd; c8 += 8) {
            float x[8];
            load_elem8(ring_k, o + c8, c.kv_dtype, x);
#pragma unroll
            for (int k = 0; k < 8; ++k)
#pragma unroll
              for (int g = 0; g < G; ++g) part[g] = fmaf(qh[g * D + c8 + k], x[k], part[g]);
          }
        }
#pragma unroll
        for (int g = 0; g < G; ++g) part[g] += __shfl_xor_sync(0xffffffffu, part[g], 16);
        if (hh == 0) {
#pragma unroll
          for (int g = 0; g < G; ++g) {
            if (MODE == kAttnScores) {
              if (i < n && g < n_valid) a.out[(static_cast<size_t>(row) * a.n_q_heads + qh0 + g) * a.ld + orig(i)] = part[g];
            } else {
              sc[g * N + i] = i < n ? part[g] : -INFINITY;
            }
          }
        }
        __syncwarp();
      }
      if (MODE != kAttnScores) {
        make_weights(n, nullptr, nullptr, orig);
        // Lane = channel pair (2 cp, 2 cp + 1): 8 tokens' values are loaded first (one 4-
        // or 8-byte load each; 8, not 16, to keep the kernel's register count), then added
        // for all G heads.
        for (int cp = lane; cp < (D >> 1); cp += 32) {
          const int ch = 2 * cp;
#pragma unroll 1
          for (int i0 = 0; i0 < n; i0 += 8) {
            float2 v[8];
#pragma unroll
            for (int k = 0; k < 8; ++k)
              v[k] = i0 + k < n ? load_elem2(ring_v, static_cast<size_t>(rs[i0 + k]) * row_elems + head_off + ch, c.kv_dtype)
                                : make_float2(0.f, 0.f);
#pragma unroll
            for (int g = 0; g < G; ++g) {
              float x0 = acc[acc_word(g, ch, D)], x1 = acc[acc_word(g, ch + 1, D)];
#pragma unroll
              for (int k = 0; k < 8; ++k) {
                if (i0 + k < n) {
                  const float w = sc[g * N + i0 + k];
                  x0 = fmaf(w, v[k].x, x0);
                  x1 = fmaf(w, v[k].y, x1);
                }
              }
              acc[acc_word(g, ch, D)] = x0;
              acc[acc_word(g, ch + 1, D)] = x1;
            }
          }
        }
      }
      __syncwarp();
    }
  }
  if (MODE == kAttnScores) return;

  // Merge the warps of the CTA and write this split's partial result [m, l, acc[D]].
  if (lane == 0) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      ml[(warp * G + g) * 2] = m_run[g];
      ml[(warp * G + g) * 2 + 1] = l_run[g];
    }
  }
  __syncthreads();
  const float* acc0 = reinterpret_cast<const float*>(smem + L.acc);
  auto acc_sum = [&](int w, int g, int ch) {  // warp w's sum of its group rows
    float x = 0.f;
#pragma unroll
    for (int q = 0; q < kAccRows; ++q) x += acc0[(static_cast<size_t>(w) * kAccRows + q) * arw + acc_word(g, ch, D)];
    return x;
  };
  const int rsz = D + 2;
  for (int i = threadIdx.x; i < n_valid * rsz; i += blockDim.x) {
    const int g = i / rsz, k = i - g * rsz;
    float* dst = a.partial + ((static_cast<size_t>(row) * a.n_q_heads + qh0 + g) * kSplitsTotal + split) * rsz;
    float v = 0.f;
    if (MODE == kAttnDecode) {
      float M = -INFINITY;
      for (int w = 0; w < nw; ++w) M = fmaxf(M, ml[(w * G + g) * 2]);
      if (k == 0) {
        v = M;
      } else {
        for (int w = 0; w < nw; ++w) {
          const float mw = ml[(w * G + g) * 2];
          if (mw == -INFINITY) continue;
          const float x = k == 1 ? ml[(w * G + g) * 2 + 1] : acc_sum(w, g, k - 2);
          v += x * __expf(mw - M);
        }
      }
    } else if (k >= 2) {
      for (int w = 0; w < nw; ++w) v += acc_sum(w, g, k - 2);
    }
    dst[k] = v;
  }
}

// Merges the splits of every (sequence, query head) of a batch: decode: exact
// flash-decoding merge (max, rescaled sums) into out [..][D] fp32 and lse (optional;
// -inf for empty sequences, whose output is 0); apply: sum of the partial outputs.
// Device; grid b.n * n_q_heads, blockDim.x a multiple of 32. Decode: warp 0 reads every
// split's (m, l) at once and leaves the rescale factors in shared memory, so the call is
// two memory round trips (it was three dependent loops over the splits).
__global__ void merge_kernel(int mode, int D, int n_q_heads, int first, int n_splits_used,
                             const float* partial, float* out, float* lse) {
  const int rq = blockIdx.x;  // row-local (seq in batch) * n_q_heads + head
  const size_t gi = static_cast<size_t>(first) * n_q_heads + rq;
  const int rs = D + 2;
  const float* p = partial + gi * kSplitsTotal * rs;
  if (mode == kAttnDecode) {
    __shared__ float fac[kSplitsTotal];  // exp(m_s - M), 0 for empty splits
    __shared__ float ML[2];
    if (threadIdx.x < 32) {
      constexpr int kPer = (kSplitsTotal + 31) / 32;
      float m[kPer], l[kPer], M = -INFINITY;
#pragma unroll
      for (int k = 0; k < kPer; ++k) {
        const int sp = threadIdx.x + 32 * k;
        m[k] = sp < n_splits_used ? p[sp * rs] : -INFINITY;
        l[k] = sp < n_splits_used ? p[sp * rs + 1] : 0.f;
        M = fmaxf(M, m[k]);
      }
      M = warp_max(M);
      float L = 0.f;
#pragma unroll
      for (int k = 0; k < kPer; ++k) {
        const int sp = threadIdx.x + 32 * k;
        const float f = m[k] == -INFINITY ? 0.f : __expf(m[k] - M);
        if (sp < n_splits_used) fac[sp] = f;
        L += l[k] * f;
      }
      L = warp_sum(L);
      if (threadIdx.x == 0) {
        ML[0] = M;
        ML[1] = L;
      }
    }
    __syncthreads();
    const float M = ML[0], L = ML[1];
    for (int ch = threadIdx.x; ch < D; ch += blockDim.x) {
      float v = 0.f;
      if (L > 0.f) {
        for (int sp = 0; sp < n_splits_used; ++sp)
          if (fac[sp] != 0.f) v += p[sp * rs + 2 + ch] * fac[sp];
        v /= L;
      }
      out[gi * D + ch] = v;
    }
    if (threadIdx.x == 0 && lse) lse[gi] = L > 0.f ? M + logf(L) : -INFINITY;
  } else {
    for (int ch = threadIdx.x; ch < D; ch += blockDim.x) {
      float v = 0.f;
      for (int sp = 0; sp < n_splits_used; ++sp) v += p[sp * rs + 2 + ch];
      out[gi * D + ch] = v;
    }
  }
}

// Query heads per CTA for a GQA group: the power of two >= group, at most kMaxG.
int heads_per_cta(int group) {
  int G = 1;
  while (G < group && G < kMaxG) G *= 2;
  return G;
}

// Warps per CTA for a launch: the most (4, 2 or 1) whose shared memory fits.
int attn_warps(const KernelConfig& c, int G, int mode) {
  int nw = kMaxWarps;
  while (nw > 1 && attn_smem(c, G, mode, nw).total > static_cast<size_t>(c.smem_optin)) nw /= 2;
  return nw;
}

// Host: enqueues attn_kernel<G, MODE> (raising the dynamic smem limit if needed).
// Throws Error(PACKKV_ERR_CUDA) if the launch fails.
template <int G, int MODE>
void launch_one(const KernelConfig& c, const AttnBatch& b, const CacheDevicePtrs& d, const AttnCall& a,
                int nw, int n_gchunks, int group, int bps, int n_splits, int res_splits, int split0, cudaStream_t stream) {
  const size_t smem = attn_smem(c, G, MODE, nw).total;
  auto kern = attn_kernel<G, MODE>;
  if (smem > 48 * 1024)
    check(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
          "cudaFuncSetAttribute(attn_kernel)");
  dim3 grid(n_splits + res_splits - split0, c.n_kv_heads * n_gchunks, b.n);
  kern<<<grid, nw * 32, smem, stream>>>(c, b, d, a, n_gchunks, group, bps, n_splits, split0);
  check_launch("attn_kernel");
}

template <int MODE>
void dispatch_g(int G, const KernelConfig& c, const AttnBatch& b, const CacheDevicePtrs& d, const AttnCall& a,
                int nw, int n_gchunks, int group, int bps, int n_splits, int res_splits, int split0, cudaStream_t st) {
  switch (G) {
    case 1: launch_one<1, MODE>(c, b, d, a, nw, n_gchunks, group, bps, n_splits, res_splits, split0, st); break;
    case 2: launch_one<2, MODE>(c, b, d, a, nw, n_gchunks, group, bps, n_splits, res_splits, split0, st); break;
    default: launch_one<4, MODE>(c, b, d, a, nw, n_gchunks, group, bps, n_splits, res_splits, split0, st); break;
  }
}

}  // namespace

size_t attn_workspace_bytes(const KernelConfig& c, int n_seqs, int n_q_heads) {
  return static_cast<size_t>(n_seqs) * n_q_heads * kSplitsTotal * (c.head_dim + 2) * sizeof(float);
}

int attn_grid_rows(const KernelConfig& c, int n_q_heads) {
  const int group = n_q_heads / c.n_kv_heads;
  const int G = heads_per_cta(group);
  return c.n_kv_heads * ((group + G - 1) / G);
}

size_t attn_min_smem_bytes(const KernelConfig& c) { return attn_smem(c, kMaxG, kAttnDecode, 1).total; }

void launch_attention(const KernelConfig& c, const AttnBatch& b, const CacheDevicePtrs& d,
                      const AttnCall& a, cudaStream_t stream) {
  if (b.n == 0) return;
  const int group = a.n_q_heads / c.n_kv_heads;
  const int G = heads_per_cta(group);
  const int n_gchunks = (group + G - 1) / G;
  const int nw = attn_warps(c, G, a.mode);
  const int ctas_per_split = b.n * c.n_kv_heads * n_gchunks;
  // Splits: about 32 CTAs per SM in all (several waves of the 6-8 resident ones), so that
  // the last wave is a small part of the call (H200, headline shape: 8 per SM left a
  // partial second wave, K.q 458 us; 32 per SM: 391 us).
  const int target = 32 * (c.num_sms > 0 ? c.num_sms : 132);
  int splits = (target + ctas_per_split - 1) / ctas_per_split;
  splits = splits < 1 ? 1 : (splits > kMaxSplits ? kMaxSplits : splits);
  int bps = (b.max_blocks + splits - 1) / splits;
  if (bps < nw) bps = nw;
  int n_splits = b.max_blocks == 0 ? 0 : (b.max_blocks + bps - 1) / bps;
  while (n_splits > kMaxSplits) { ++bps; n_splits = (b.max_blocks + bps - 1) / bps; }
  // Residual window: one 16-token chunk per warp where possible (a CTA that walked several
  // chunks, one memory latency each, was the critical path of short contexts).
  int max_res = 0;
  for (int i = 0; i < b.n; ++i) max_res = b.s[i].res_len > max_res ? b.s[i].res_len : max_res;
  int res_splits = ((max_res + 15) / 16 + nw - 1) / nw;
  res_splits = res_splits < 1 ? 1 : (res_splits > kMaxResSplits ? kMaxResSplits : res_splits);
  // Family: the tensor-core kernel takes the compressed splits where the dispatcher picks
  // it, and this kernel then runs the residual splits alone (split0 = n_splits).
  int split0 = 0;
  if (tc_family_selected(c, a.mode, group, b.max_blocks)) {
    launch_tc_attention(c, b, d, a, group, bps, n_splits, stream);
    split0 = n_splits;
  }
  switch (a.mode) {
    case kAttnDecode: dispatch_g<kAttnDecode>(G, c, b, d, a, nw, n_gchunks, group, bps, n_splits, res_splits, split0, stream); break;
    case kAttnScores: dispatch_g<kAttnScores>(G, c, b, d, a, nw, n_gchunks, group, bps, n_splits, res_splits, split0, stream); break;
    default: dispatch_g<kAttnApply>(G, c, b, d, a, nw, n_gchunks, group, bps, n_splits, res_splits, split0, stream); break;
  }
  if (a.mode == kAttnScores) return;
  merge_kernel<<<b.n * a.n_q_heads, 128, 0, stream>>>(a.mode, c.head_dim, a.n_q_heads, b.first,
                                                       n_splits + res_splits, a.partial, a.out, a.lse);
  check_launch("merge_kernel");
}

}  // namespace cu
}  // namespace packkv
