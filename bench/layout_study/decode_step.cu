// Layout study of issue 14 (bench/RESULTS.md, "Layout study"): the step "compressed codes
// of one round -> fp16 codes in a shared-memory tile" of a tensor-core decode kernel,
// written once per candidate layout so that its SASS can be counted per code without a
// GPU (bench/layout_study/count.sh: nvcc -arch=sm_90 -cubin -O3, cuobjdump -sass).
// NOT part of the library and never launched: these kernels model the instruction stream
// of a decode inner loop. The recommended decode (a2_pack) is checked on the host against
// the library's pack writer (check_decode.cu); the other candidates are not.
//
// Common model (all candidates): head_dim D = 64 (the real data's) or 128 (Llama, Qwen),
// one warp decodes one round (16 tokens x D channels, 16 D / 32 codes per lane: CPL = D / 32
// channels per lane) per loop iteration from the tile already staged in shared memory (the staging copy, ldmatrix and mma are the same
// for every layout and are left out). Each code c of a pack with minimum mn becomes the
// fp16 value mn + c through the 0x6400 trick: (c | 0x6400) is 1024 + c as fp16, one HADD2
// with (mn - 1024) per pair. Outputs go to a [channel][16 tokens] fp16 tile (ldmatrix
// reads it directly for p.V and with .trans for K.q); the token order inside a row is a
// fixed permutation, which costs nothing (blocks are repacked anyway: the scores and
// weights follow the stored order).
//
// Candidates (layouts of a round as in src/tile_format.h unless said otherwise):
//  a1  today's bytes, L in 0..8 per pack; lane per channel pairs, one code per SHF + LOP3,
//      PRMT of the two channels' codes of one token, HADD2, STS.32 into [token][channel]
//      (the design of the tensor-core helper C1).
//  a2  today's bytes; CPL channels per lane; pairs of tokens of one channel: PRMT of two
//      shifted windows, one LOP3 (mask and 0x6400 for both), HADD2, STS.128.
//  bW  widths rounded up to {0,1,2,4,8}, today's byte order: the path for width W (a
//      warp whose lanes see several widths runs every path present, see cost_model.py).
//  cW  one width W (0..8) per 16-token x 16-channel tile: lane = (channel, half) of the
//      tile, the warp walks the D/16 tiles of a round with a warp-uniform width; the pack
//      halves of a tile are contiguous W-byte runs (lane l's at byte l*W).
//  d   bit-planes: a pack of encode length L is L 16-bit planes (plane j holds bit j of
//      the 16 codes, token t at bit t), 2L bytes as in (a); CPL channels per lane, the
//      plane loop runs to the largest L of the warp (written unrolled with guards).
// Kernels are templates on D (64, 128) and the width or plane count; count_sass.py names
// them a2_64, b_128_4, ... and divides by the codes per lane.
#include <cuda_fp16.h>
#include <stdint.h>

namespace {

// Helpers and a2_pack also compile for the host, so that check_decode.cu can test them.
#define STUDY_HD __host__ __device__ __forceinline__

STUDY_HD uint32_t bits_at(const uint32_t* T, uint32_t bit) {
  const uint32_t* w = T + (bit >> 5);
#if defined(__CUDA_ARCH__)
  return __funnelshift_r(w[0], w[1], bit);
#else
  return static_cast<uint32_t>(((static_cast<uint64_t>(w[1]) << 32) | w[0]) >> (bit & 31));
#endif
}

STUDY_HD uint32_t byte_perm(uint32_t a, uint32_t b, uint32_t sel) {
#if defined(__CUDA_ARCH__)
  return __byte_perm(a, b, sel);
#else
  const uint64_t x = (static_cast<uint64_t>(b) << 32) | a;
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) r |= static_cast<uint32_t>((x >> (8 * ((sel >> (4 * i)) & 7))) & 0xff) << (8 * i);
  return r;
#endif
}

__device__ __forceinline__ uint32_t warp_incl_scan(uint32_t v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    uint32_t t = __shfl_up_sync(0xffffffffu, v, o);
    if (lane >= o) v += t;
  }
  return v;
}

STUDY_HD uint32_t hadd2_u(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  __half2 r = __hadd2(*reinterpret_cast<__half2*>(&a), *reinterpret_cast<__half2*>(&b));
  return *reinterpret_cast<uint32_t*>(&r);
#else
  uint32_t r = 0;
  for (int i = 0; i < 2; ++i) {
    __half_raw x, y;
    x.x = static_cast<unsigned short>(a >> (16 * i));
    y.x = static_cast<unsigned short>(b >> (16 * i));
    __half_raw z = __half(__half2float(__half(x)) + __half2float(__half(y)));  // exact for these integers
    r |= static_cast<uint32_t>(z.x) << (16 * i);
  }
  return r;
#endif
}

// (x & m) | 0x64006400 as one LOP3: ptxas splits the expression into two LOP3 when m is
// an immediate too (a LOP3 takes one immediate), so the lop3 is written out.
STUDY_HD uint32_t and_or6400(uint32_t x, uint32_t m) {
#if defined(__CUDA_ARCH__)
  uint32_t d;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(x), "r"(m), "n"(0x64006400));
  return d;
#else
  return (x & m) | 0x64006400u;
#endif
}

// (mn - 1024) in both fp16 halves: the bias of the 0x6400 trick for a channel. For mn in
// 0..255, -(1024 - mn) has fp16 bits 0xE400 - 2 mn (exponent 9, mantissa step 1/2), so
// no conversion instruction is needed.
STUDY_HD uint32_t bias2(uint32_t mn) { return (0xE400u - 2u * mn) * 0x10001u; }

// Per-round metadata of the variable-width layouts (a), (b), (d): this lane's MINS and
// LENS fields of its CPL channels CPL*l .. CPL*l+CPL-1, and the bit of each of its packs
// (warp scan of the pack sizes). Returns the round size in bytes.
template <int CPL>
struct Meta {
  uint32_t mn[CPL], L[CPL], p[CPL];
};
template <int D, int CPL = D / 32>
__device__ __forceinline__ uint32_t round_meta(const uint32_t* T, uint32_t rbyte, int bits, int e, Meta<CPL>* m) {
  const int lane = threadIdx.x & 31;
  const uint32_t rbit = rbyte * 8, bm = (1u << bits) - 1u, em = (1u << e) - 1u;
  const uint32_t mw = bits_at(T, rbit + static_cast<uint32_t>(CPL * lane * bits));  // CPL * bits <= 32
  const uint32_t lw = bits_at(T, rbit + D * bits + static_cast<uint32_t>(CPL * lane * e));
  uint32_t s = 0;
#pragma unroll
  for (int j = 0; j < CPL; ++j) {
    m->mn[j] = (mw >> (j * bits)) & bm;
    m->L[j] = (lw >> (j * e)) & em;
    s += 2u * m->L[j];
  }
  const uint32_t incl = warp_incl_scan(s);
  const uint32_t meta = static_cast<uint32_t>(D * bits + D * e) / 8;
  m->p[0] = rbit + 8u * (meta + incl - s);
#pragma unroll
  for (int j = 1; j < CPL; ++j) m->p[j] = m->p[j - 1] + 16u * m->L[j - 1];
  return meta + __shfl_sync(0xffffffffu, incl, 31);
}

extern __shared__ uint32_t smem[];

}  // namespace

// ---- a1: C1's design ----
template <int D>
__global__ void study_a1(int R, int bits, int e) {
  constexpr int CPL = D / 32;
  const uint32_t* T = smem;
  uint32_t* O = smem + 8192;  // [16 tokens][D/2] half2
  const int lane = threadIdx.x & 31;
  uint32_t rbyte = 0;
#pragma unroll 1
  for (int r = 0; r < R; ++r) {
    Meta<CPL> m;
    const uint32_t size = round_meta<D>(T, rbyte, bits, e, &m);
#pragma unroll
    for (int j = 0; j < CPL; j += 2) {  // the channel pair (j, j+1) of this lane
      const uint32_t b01 = byte_perm(bias2(m.mn[j]), bias2(m.mn[j + 1]), 0x5410);  // (mn0, mn1) - 1024
      const uint32_t m0 = (1u << m.L[j]) - 1u, m1 = (1u << m.L[j + 1]) - 1u;
#pragma unroll
      for (int h = 0; h < 4; ++h) {  // window h holds tokens 15-4h .. 12-4h
        uint32_t w0 = bits_at(T, m.p[j] + 4u * h * m.L[j]), w1 = bits_at(T, m.p[j + 1] + 4u * h * m.L[j + 1]);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const uint32_t u0 = (w0 & m0) | 0x6400u, u1 = (w1 & m1) | 0x6400u;
          O[(r & 1) * 16 * (D / 2) + (15 - 4 * h - k) * (D / 2) + lane * (CPL / 2) + j / 2] =
              hadd2_u(byte_perm(u0, u1, 0x5410), b01);
          w0 >>= m.L[j];
          w1 >>= m.L[j + 1];
        }
      }
    }
    rbyte += size;
    __syncwarp();
  }
}

// ---- a2: pairs of tokens of one channel, STS.128 ----
// The 16 codes of the pack at bit p (encode length L, minimum mn) as fp16 mn + code:
// row[0..1] = 8 half2 words, word 4q+k = (token 15-8q-k, token 11-8q-k) (low, high half).
STUDY_HD void a2_pack(const uint32_t* T, uint32_t p, uint32_t L, uint32_t mn, uint4* row) {
  const uint32_t mm = ((1u << L) - 1u) * 0x10001u, b = bias2(mn);
  uint32_t h[8];
#pragma unroll
  for (int q = 0; q < 2; ++q) {  // windows (4q, 4q+1): tokens 15-8q-k and 11-8q-k
    uint32_t wa = bits_at(T, p + 8u * q * L), wb = bits_at(T, p + (8u * q + 4u) * L);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      h[4 * q + k] = hadd2_u(and_or6400(byte_perm(wa, wb, 0x5410), mm), b);
      wa >>= L;
      wb >>= L;
    }
  }
  row[0] = make_uint4(h[0], h[1], h[2], h[3]);
  row[1] = make_uint4(h[4], h[5], h[6], h[7]);
}
template <int D>
__global__ void study_a2(int R, int bits, int e) {
  constexpr int CPL = D / 32;
  const uint32_t* T = smem;
  uint4* O = reinterpret_cast<uint4*>(smem + 8192);  // [D][16 tokens] fp16 = 2 uint4 per row
  const int lane = threadIdx.x & 31;
  uint32_t rbyte = 0;
#pragma unroll 1
  for (int r = 0; r < R; ++r) {
    Meta<CPL> m;
    const uint32_t size = round_meta<D>(T, rbyte, bits, e, &m);
    uint4* o = O + (r & 1) * 2 * D;
#pragma unroll
    for (int j = 0; j < CPL; ++j) a2_pack(T, m.p[j], m.L[j], m.mn[j], o + 2 * (CPL * lane + j));
    rbyte += size;
    __syncwarp();
  }
}

// ---- bW: widths in {0,1,2,4,8}, the path of one width W (both lane slots) ----
// Today's byte order with L = W: bytes [0, W) hold tokens 8..15 (token 15 lowest), bytes
// [W, 2W) tokens 0..7. Pairs (t, t') sit 16 bits apart, so one LOP3 masks both.
template <int W>
__device__ __forceinline__ void b_pack(const uint32_t* T, uint32_t p, uint32_t mn, uint4* row) {
  const uint32_t b = bias2(mn);
  uint32_t h[8];
  if (W == 0) {
    const uint32_t v = hadd2_u(0x64006400u, b);  // offsets 0: the value is mn
#pragma unroll
    for (int i = 0; i < 8; ++i) h[i] = v;
  } else if (W == 1) {  // 2 bytes: byte 0 tokens 8..15, byte 1 tokens 0..7
    const uint32_t x = byte_perm(bits_at(T, p), 0u, 0x4140);  // byte0 -> bits 0-7, byte1 -> 16-23
#pragma unroll
    for (int k = 0; k < 8; ++k) h[k] = hadd2_u(and_or6400(x >> k, 0x00010001u), b);  // tokens 15-k, 7-k
  } else if (W == 2) {  // 4 bytes: tokens 8..15 in bits 0-15, tokens 0..7 in 16-31
    const uint32_t x = bits_at(T, p);
#pragma unroll
    for (int k = 0; k < 8; ++k) h[k] = hadd2_u(and_or6400(x >> (2 * k), 0x00030003u), b);
  } else if (W == 4) {  // 8 bytes: word 0 tokens 8..15, word 1 tokens 0..7
#pragma unroll
    for (int q = 0; q < 2; ++q) {
      const uint32_t x = bits_at(T, p + 32u * q);
#pragma unroll
      for (int k = 0; k < 4; ++k) h[4 * q + k] = hadd2_u(and_or6400(x >> (4 * k), 0x000f000fu), b);
    }
  } else {  // W == 8: 16 bytes, one code per byte
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const uint32_t x = bits_at(T, p + 32u * q);
      h[2 * q] = hadd2_u(byte_perm(x, 0x64u, 0x4140), b);  // codes (0, 1) of the word
      h[2 * q + 1] = hadd2_u(byte_perm(x, 0x64u, 0x4342), b);
    }
  }
  row[0] = make_uint4(h[0], h[1], h[2], h[3]);
  row[1] = make_uint4(h[4], h[5], h[6], h[7]);
}
template <int D, int W>
__global__ void study_b(int R, int bits, int e) {
  constexpr int CPL = D / 32;
  const uint32_t* T = smem;
  uint4* O = reinterpret_cast<uint4*>(smem + 8192);
  const int lane = threadIdx.x & 31;
  uint32_t rbyte = 0;
#pragma unroll 1
  for (int r = 0; r < R; ++r) {
    Meta<CPL> m;
    const uint32_t size = round_meta<D>(T, rbyte, bits, e, &m);
    uint4* o = O + (r & 1) * 2 * D;
#pragma unroll
    for (int j = 0; j < CPL; ++j) b_pack<W>(T, m.p[j], m.mn[j], o + 2 * (CPL * lane + j));
    rbyte += size;
    __syncwarp();
  }
}
#define PACKKV_STUDY_B(D) \
  template __global__ void study_b<D, 0>(int, int, int); \
  template __global__ void study_b<D, 1>(int, int, int); \
  template __global__ void study_b<D, 2>(int, int, int); \
  template __global__ void study_b<D, 4>(int, int, int); \
  template __global__ void study_b<D, 8>(int, int, int);
PACKKV_STUDY_B(64)
PACKKV_STUDY_B(128)

// The real (b) kernel: a switch on each lane's width; a warp runs every path present.
template <int D>
__global__ void study_b_switch(int R, int bits, int e) {
  constexpr int CPL = D / 32;
  const uint32_t* T = smem;
  uint4* O = reinterpret_cast<uint4*>(smem + 8192);
  const int lane = threadIdx.x & 31;
  uint32_t rbyte = 0;
#pragma unroll 1
  for (int r = 0; r < R; ++r) {
    Meta<CPL> m;
    const uint32_t size = round_meta<D>(T, rbyte, bits, e, &m);
    uint4* o = O + (r & 1) * 2 * D;
#pragma unroll
    for (int j = 0; j < CPL; ++j) {
      const uint32_t L = m.L[j], p = m.p[j], mn = m.mn[j];
      uint4* row = o + 2 * (CPL * lane + j);
      switch (L) {
        case 0: b_pack<0>(T, p, mn, row); break;
        case 1: b_pack<1>(T, p, mn, row); break;
        case 2: b_pack<2>(T, p, mn, row); break;
        case 4: b_pack<4>(T, p, mn, row); break;
        default: b_pack<8>(T, p, mn, row); break;
      }
    }
    rbyte += size;
    __syncwarp();
  }
}

// ---- cW: one width per 16 x 16 tile, warp-uniform ----
// Round layout: MINS (D fields of b bits), TLENS (D/16 fields of e bits), then tile j =
// 16 packs of 2 W_j bytes each in channel order (today's pack byte order), so lane
// l = 2 c + h (channel c of the tile, half h: 0 = tokens 8..15, 1 = tokens 0..7) finds its
// 8 codes in the W bytes at byte l * W of the tile. Pairs (k, k + 4) of the 8 codes.
template <int W>
__device__ __forceinline__ void c_half(const uint32_t* T, uint32_t bit, uint32_t b, uint4* out) {
  uint32_t h[4];
  constexpr uint32_t m = W ? ((1u << W) - 1u) * 0x10001u : 0u;
  if (W == 0) {
    const uint32_t v = hadd2_u(0x64006400u, b);
#pragma unroll
    for (int k = 0; k < 4; ++k) h[k] = v;
  } else if (W == 1) {  // one byte: spread its nibbles to bits 0-3 and 16-19
    const uint32_t x = bits_at(T, bit) & 0xffu;
    const uint32_t y = (x & 0xfu) | ((x & 0xf0u) << 12);
#pragma unroll
    for (int k = 0; k < 4; ++k) h[k] = hadd2_u(and_or6400(y >> k, m), b);
  } else if (W == 2) {  // two bytes: byte 0 to bits 0-7, byte 1 to 16-23
    const uint32_t y = byte_perm(bits_at(T, bit), 0u, 0x4140);
#pragma unroll
    for (int k = 0; k < 4; ++k) h[k] = hadd2_u(and_or6400(y >> (2 * k), m), b);
  } else if (W == 4) {  // one word: codes k and k + 4 sit 16 bits apart
    const uint32_t y = bits_at(T, bit);
#pragma unroll
    for (int k = 0; k < 4; ++k) h[k] = hadd2_u(and_or6400(y >> (4 * k), m), b);
  } else if (W == 8) {  // two words, one code per byte: PRMT with the 0x64 byte
    const uint32_t lo = bits_at(T, bit), hi = bits_at(T, bit + 32u);
    h[0] = hadd2_u(byte_perm(lo, 0x64u, 0x4140), b);  // codes (0, 1)
    h[1] = hadd2_u(byte_perm(lo, 0x64u, 0x4342), b);
    h[2] = hadd2_u(byte_perm(hi, 0x64u, 0x4140), b);
    h[3] = hadd2_u(byte_perm(hi, 0x64u, 0x4342), b);
  } else {  // W = 3, 5, 6, 7: the half's 8W bits as lo:hi, codes by funnel shifts
    const uint32_t lo = bits_at(T, bit);
    const uint32_t hi = W > 4 ? bits_at(T, bit + 32u) : 0u;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t u = __funnelshift_r(lo, hi, k * W), v = __funnelshift_r(lo, hi, (k + 4) * W);
      h[k] = hadd2_u(and_or6400(byte_perm(u, v, 0x5410), m), b);
    }
  }
  *out = make_uint4(h[0], h[1], h[2], h[3]);
}
template <int D, int W>
__global__ void study_c(int R, int bits, int e) {
  const uint32_t* T = smem;
  uint4* O = reinterpret_cast<uint4*>(smem + 8192);
  const int lane = threadIdx.x & 31;
  const uint32_t bm = (1u << bits) - 1u, em = (1u << e) - 1u;
  uint32_t rbyte = 0;
#pragma unroll 1
  for (int r = 0; r < R; ++r) {
    const uint32_t rbit = rbyte * 8;
    const uint32_t tl = bits_at(T, rbit + D * bits);  // the 4 tile widths: offsets (and, in a real kernel, the path)
    uint32_t tbyte = rbyte + (D * bits + ((D / 16) * e + 7) / 8 * 8) / 8;
    uint4* o = O + (r & 1) * 2 * D;
#pragma unroll
    for (int j = 0; j < D / 16; ++j) {
      const int c = 16 * j + (lane >> 1);
      const uint32_t mn = bits_at(T, rbit + static_cast<uint32_t>(c * bits)) & bm;
      c_half<W>(T, (tbyte + static_cast<uint32_t>(lane * W)) * 8, bias2(mn), o + 2 * c + (lane & 1));
      tbyte += 32u * ((tl >> (j * e)) & em);
    }
    rbyte = tbyte;
    __syncwarp();
  }
}
#define PACKKV_STUDY_C(D) \
  template __global__ void study_c<D, 0>(int, int, int); \
  template __global__ void study_c<D, 1>(int, int, int); \
  template __global__ void study_c<D, 2>(int, int, int); \
  template __global__ void study_c<D, 3>(int, int, int); \
  template __global__ void study_c<D, 4>(int, int, int); \
  template __global__ void study_c<D, 5>(int, int, int); \
  template __global__ void study_c<D, 6>(int, int, int); \
  template __global__ void study_c<D, 7>(int, int, int); \
  template __global__ void study_c<D, 8>(int, int, int);
PACKKV_STUDY_C(64)
PACKKV_STUDY_C(128)

// ---- d: bit-planes, lane per channel pair, plane loop guarded per lane ----
__device__ __forceinline__ void d_planes(const uint32_t* T, uint32_t p, uint32_t L, int j, uint32_t (&acc)[8]) {
  if (static_cast<uint32_t>(j) < L) {
    const uint32_t plane = bits_at(T, p + 16u * j) & 0xffffu;
    const uint32_t x = byte_perm(plane, 0u, 0x4140) << j;  // tokens 0..7 -> bits j.., 8..15 -> 16+j..
    const uint32_t mj = 0x00010001u << j;
#pragma unroll
    for (int t = 0; t < 8; ++t) acc[t] |= (x >> t) & mj;  // pair (t, t + 8)
  }
}
template <int D, int P>  // planes unrolled (a warp runs as many as the largest L of its lanes)
__global__ void study_d(int R, int bits, int e) {
  constexpr int CPL = D / 32;
  const uint32_t* T = smem;
  uint4* O = reinterpret_cast<uint4*>(smem + 8192);
  const int lane = threadIdx.x & 31;
  uint32_t rbyte = 0;
#pragma unroll 1
  for (int r = 0; r < R; ++r) {
    Meta<CPL> m;
    const uint32_t size = round_meta<D>(T, rbyte, bits, e, &m);
    uint32_t acc[CPL][8];
#pragma unroll
    for (int c = 0; c < CPL; ++c)
#pragma unroll
      for (int t = 0; t < 8; ++t) acc[c][t] = 0;
#pragma unroll
    for (int j = 0; j < P; ++j)
#pragma unroll
      for (int c = 0; c < CPL; ++c) d_planes(T, m.p[c], m.L[c], j, acc[c]);
    uint4* o = O + (r & 1) * 2 * D;
#pragma unroll
    for (int c = 0; c < CPL; ++c) {
      const uint32_t b = bias2(m.mn[c]);
      uint32_t h[8];
#pragma unroll
      for (int t = 0; t < 8; ++t) h[t] = hadd2_u(acc[c][t] | 0x64006400u, b);
      o[2 * (CPL * lane + c)] = make_uint4(h[0], h[1], h[2], h[3]);
      o[2 * (CPL * lane + c) + 1] = make_uint4(h[4], h[5], h[6], h[7]);
    }
    rbyte += size;
    __syncwarp();
  }
}
#define PACKKV_STUDY_AD(D) \
  template __global__ void study_a1<D>(int, int, int); \
  template __global__ void study_a2<D>(int, int, int); \
  template __global__ void study_b_switch<D>(int, int, int); \
  template __global__ void study_d<D, 0>(int, int, int); \
  template __global__ void study_d<D, 4>(int, int, int); \
  template __global__ void study_d<D, 8>(int, int, int);
PACKKV_STUDY_AD(64)
PACKKV_STUDY_AD(128)
