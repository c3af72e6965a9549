// Tensor-core attention family (issue 14): conversion of one round of a staged
// compressed tile (format/round_tile.h: MINS, LENS, PAYLOAD) into an fp16 tile in shared
// memory that ldmatrix reads as mma.sync.m16n8k16 operand A, and the mma/ldmatrix
// wrappers. Device only.
//
// The fp16 tile ("x tile") of a round holds x'[c][t] = min_c + code_{c,t} (<= 510, an
// exact fp16 integer) for the D channels c of the round's 16 tokens, one 32-byte row per
// channel. Positions inside a row are permuted: position 2k holds token k, position
// 2k+1 token k+8 (k = 0..7), because a pack stores tokens 8..15 and 0..7 as two halves
// with the same field positions (fmt::write_pack), so one byte permute puts tokens k and
// k+8 of a pack into one half2. Rows are 16-byte-chunk swizzled (chunk h of row c sits
// at chunk (2 (c & 3) + h) ^ ((c >> 2) & 7) of its 128-byte line), so that neither the
// decoding lanes' 16-byte stores nor ldmatrix's 8-row reads conflict on banks.
//
// Used both ways: K.q reads it transposed (ldmatrix.trans: A = 16 tokens x 16
// channels), p.V straight (A = 16 channels x 16 tokens).
#ifndef PACKKV_CUDA_ATTENTION_TENSORCORE_TILE_CUH
#define PACKKV_CUDA_ATTENTION_TENSORCORE_TILE_CUH

#include <cuda_fp16.h>
#include <stdint.h>

#include "attention/tile_walk.cuh"  // bits_at, walk_lane, scan_lengths
#include "device_util.cuh"

namespace packkv {
namespace cu {
namespace tensorcore {

// Token (0..15) at tile position p (see above); position of token t.
__host__ __device__ constexpr int pos_token(int p) { return (p >> 1) + 8 * (p & 1); }

// Byte offset in the x tile of chunk h (positions 8h .. 8h+7) of channel row c.
__device__ __forceinline__ uint32_t x_chunk(int c, int h) {
  const int line = c >> 2;
  return static_cast<uint32_t>(line * 128 + (((2 * (c & 3) + h) ^ (line & 7)) << 4));
}

// One pair of codes as half2 (1024 + code_k, 1024 + code_{k+8}) from a word P whose
// low 16 bits hold the field of token k at bit 0 and whose high 16 bits hold the field
// of token k + 8 at bit 16: one LOP3 (mask both fields, OR the fp16 exponent of 1024).
__device__ __forceinline__ uint32_t pair_1024(uint32_t P, uint32_t m2) { return (P & m2) | 0x64006400u; }

__device__ __forceinline__ uint32_t hadd2_u(uint32_t a, uint32_t b) {
  uint32_t r;
  asm("add.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  return r;
}

// Per-round constants of one lane for a tile of code width `bits`: its share of the warp
// walk (tile_walk.cuh: channels [w.cb, w.cb + w.nf), bit offsets of their fields).
struct RoundCtx {
  WalkLane w;
  int bits, e;  // code width, encode-length field width
  bool narrow;  // every encode length <= 4
};
__device__ __forceinline__ RoundCtx round_ctx(int D, int bits, int e) {
  RoundCtx r;
  r.w = walk_lane(D, bits, e);
  r.bits = bits;
  r.e = e;
  r.narrow = bits <= 4;
  return r;
}

// A mask of the low n bits (n in 0..32), one BMSK.
__device__ __forceinline__ uint32_t low_mask(uint32_t n) {
  uint32_t m;
  asm("bmsk.clamp.b32 %0, 0, %1;" : "=r"(m) : "r"(n));
  return m;
}

// Byte offset in the x tile of chunk 0 of channel row c (chunk 1: ^ 16); x_chunk in
// three integer operations: t = 32 c holds the line (bits 7+) and the logical chunk 2 (c
// & 3) (bits 5-6); bits 4-6 are replaced by (2 (c & 3)) ^ (line & 7) (from t ^ 4 c).
__device__ __forceinline__ uint32_t x_row(uint32_t c) {
  const uint32_t t = c << 5;
  return (t & ~0x70u) | ((t ^ (c << 2)) & 0x70u);
}

// Decodes the pack of channel c (encode length L, minimum mn) at bit pbit of T into row
// c of the x tile. Pairs k = 0..7: (token k, token k+8) = fields at bit (7-k) L of the
// two halves (half B at pbit + 8L holds tokens 0..7, half A at pbit tokens 8..15).
// NARROW: every L <= 4 (code width <= 4).
// The 16 codes of a pack as 8 half2 pairs (1024 + code_k, 1024 + code_{k+8}) + hm, from
// the 64-bit window A (low 32 bits: half A, tokens 8..15) / V1 (next 32 bits) starting at
// the pack (encode length L <= 4), and stores them as row c of the x tile.
__device__ __forceinline__ void narrow_pack(uint32_t A, uint32_t V1, uint32_t L, uint32_t hm, uint8_t* x, uint32_t c) {
  const uint32_t m2 = low_mask(L) * 0x10001u;
  const uint32_t B = __funnelshift_rc(A, V1, 8 * L);  // half B (tokens 0..7); 8L = 32 gives V1
  const uint32_t s4 = 4 * L;
  uint32_t P1 = __byte_perm(B, A, 0x5410);              // fields k = 7..4 at 0, L, 2L, 3L
  uint32_t P2 = __byte_perm(B >> s4, A >> s4, 0x5410);  // fields k = 3..0
  uint32_t p[8];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    p[7 - i] = pair_1024(P1, m2);
    p[3 - i] = pair_1024(P2, m2);
    P1 >>= L;
    P2 >>= L;
  }
#pragma unroll
  for (int k = 0; k < 8; ++k) p[k] = hadd2_u(p[k], hm);  // exact: min + code <= 510
  const uint32_t r0 = x_row(c);
  *reinterpret_cast<uint4*>(x + r0) = make_uint4(p[0], p[1], p[2], p[3]);
  *reinterpret_cast<uint4*>(x + (r0 ^ 16u)) = make_uint4(p[4], p[5], p[6], p[7]);
}

// Same for a pack of encode length L <= 8 at bit pbit of T (four 16-bit windows of two
// fields per half, read from shared memory).
__device__ __forceinline__ void wide_pack(const uint32_t* T, uint32_t pbit, uint32_t L, uint32_t hm, uint8_t* x,
                                          uint32_t c) {
  const uint32_t m2 = low_mask(L) * 0x10001u;
  uint32_t p[8];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const uint32_t o = pbit + 2 * j * L;
    const uint32_t P = __byte_perm(bits_at(T, o + 8 * L), bits_at(T, o), 0x5410);
    p[7 - 2 * j] = pair_1024(P, m2);
    p[6 - 2 * j] = pair_1024(P >> L, m2);
  }
#pragma unroll
  for (int k = 0; k < 8; ++k) p[k] = hadd2_u(p[k], hm);
  const uint32_t r0 = x_row(c);
  *reinterpret_cast<uint4*>(x + r0) = make_uint4(p[0], p[1], p[2], p[3]);
  *reinterpret_cast<uint4*>(x + (r0 ^ 16u)) = make_uint4(p[4], p[5], p[6], p[7]);
}

// Decodes the round starting at bit rbit of T into the x tile (whole warp: lane owns
// channels [cb, cb + nf) of r.w) and returns the bit where the next round starts. The
// pack positions come from a warp prefix sum of the encode lengths (scan_lengths, as in
// walk_tile; the lane sums its fields one by one, as it needs each); the lane's LENS
// (nf * e <= 32 bits) and MINS (nf * bits <= 64 bits) fields are read once. NF: nf when
// it is the same for every lane (D a multiple of 32: D / 32), else 0 (nf <= 8 at run time).
template <int NF, bool NARROW>
__device__ __forceinline__ uint32_t decode_round_t(const uint32_t* T, uint32_t rbit, const RoundCtx& r,
                                                   uint8_t* x) {
  constexpr int kNF = NF ? NF : 8;
  const int nf = NF ? NF : r.w.nf;
  const uint32_t em = (1u << r.e) - 1u, bm = (1u << r.bits) - 1u;
  uint32_t lw = bits_at(T, rbit + r.w.lens);
  uint32_t L[kNF];
  uint32_t sum = 0;
#pragma unroll
  for (int j = 0; j < kNF; ++j) {
    L[j] = j < nf ? lw & em : 0u;
    lw >>= r.e;
    sum += L[j];
  }
  const LengthScan sc = scan_lengths(sum);
  uint32_t pbit = rbit + r.w.payload + 16u * sc.before();
  const uint32_t mbit = rbit + r.w.mins;
  uint32_t mw = bits_at(T, mbit), mw2 = bits_at(T, mbit + 32);
  uint32_t hm[kNF];  // half2 (mn - 1024, mn - 1024) of each pack
#pragma unroll
  for (int j = 0; j < kNF; ++j) {
    hm[j] = 0xE400E400u - (mw & bm) * 0x20002u;
    mw = __funnelshift_r(mw, mw2, r.bits);
    mw2 >>= r.bits;
  }
  if (NARROW) {
    // Every pack's window is loaded before the first x tile store: the compiler cannot
    // move a load of T above a store to x (both shared memory), so interleaved loads and
    // stores would serialize the packs.
    uint32_t A[kNF], V1[kNF];
#pragma unroll
    for (int j = 0; j < kNF; ++j) {
      if (j < nf) {
        const uint32_t* w = T + (pbit >> 5);
        const uint32_t w0 = w[0], w1 = w[1], w2 = w[2];
        A[j] = __funnelshift_r(w0, w1, pbit);
        V1[j] = __funnelshift_r(w1, w2, pbit);
        pbit += 16u * L[j];
      }
    }
#pragma unroll
    for (int j = 0; j < kNF; ++j)
      if (j < nf) narrow_pack(A[j], V1[j], L[j], hm[j], x, static_cast<uint32_t>(r.w.cb + j));
  } else {
#pragma unroll
    for (int j = 0; j < kNF; ++j) {
      if (j < nf) {
        wide_pack(T, pbit, L[j], hm[j], x, static_cast<uint32_t>(r.w.cb + j));
        pbit += 16u * L[j];
      }
    }
  }
  return rbit + r.w.payload + 16u * sc.total();
}
template <int NF>
__device__ __forceinline__ uint32_t decode_round(const uint32_t* T, uint32_t rbit, const RoundCtx& r, uint8_t* x) {
  return r.narrow ? decode_round_t<NF, true>(T, rbit, r, x) : decode_round_t<NF, false>(T, rbit, r, x);
}

// ---- tensor-core wrappers (sm_80+) ----

__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t (&a)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3]) : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t addr, uint32_t (&a)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3]) : "r"(addr));
}
// d += A (16x16 fp16, row) * B (16x8 fp16, col), fp32 accumulate.
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 2^e as float, e in [-126, 127].
__device__ __forceinline__ float pow2i(int e) { return __uint_as_float(static_cast<uint32_t>(127 + e) << 23); }

// Exponent E (in [-110, 110]) with mx * 2^E < 2^14 for mx = the largest magnitude of a
// set of values scaled before their fp16 hi + lo split (so hi stays far from fp16's
// overflow and the small values far from its subnormals); 110 when mx is 0.
__device__ __forceinline__ int split_exp(float mx) {
  if (!(mx > 0.f)) return 110;
  const int k = static_cast<int>((__float_as_uint(mx) >> 23) & 255u) - 126;  // mx < 2^k
  const int E = 14 - k;
  return E < -110 ? -110 : (E > 110 ? 110 : E);
}

// (hi, lo) fp16 pairs of two floats: hi = fp16(v), lo = fp16(v - hi); hi + lo carries
// 22 significant bits.
__device__ __forceinline__ void split2(float v0, float v1, uint32_t* hi, uint32_t* lo) {
  const __half2 h = __floats2half2_rn(v0, v1);
  const float2 hf = __half22float2(h);
  const __half2 l = __floats2half2_rn(v0 - hf.x, v1 - hf.y);
  *hi = *reinterpret_cast<const uint32_t*>(&h);
  *lo = *reinterpret_cast<const uint32_t*>(&l);
}

}  // namespace tensorcore
}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_ATTENTION_TENSORCORE_TILE_CUH
