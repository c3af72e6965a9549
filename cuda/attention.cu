// Fused decode attention on the compressed tiles (PACKKV.md sections 6.1-6.3, 8.3):
// one kernel computes, per (sequence, KV head, token split), either
//   scores  s_t * (q . k_int_t + z_t * sum(q))          (packkv_attn_scores)
//   apply   sum_t p_t s_t (v_int_t + z_t)                 (packkv_attn_apply)
//   decode  online softmax over both                      (packkv_attn_decode)
// decoding the packs in registers (zero point and scale folded in, no dequantization
// pass), once per GQA group (G query heads share each decoded tile), in fp32. The last
// split of the grid handles the uncompressed residual window in the same launch. A
// second small kernel merges the splits exactly (flash-decoding: max, sum-exp,
// partial output) or sums them (apply).
//
// Threads: 4 warps per CTA; a warp owns whole blocks (64-token tiles by default); lane
// l owns channels [l*CPL, (l+1)*CPL). Each warp stages its K and V tiles into shared
// memory with 16-byte cp.async copies, then decodes from there.
#include <cuda_pipeline_primitives.h>
#include <cuda_runtime.h>
#include <math.h>

#include <type_traits>

#include "cuda_check.h"
#include "device_util.cuh"
#include "kernels.h"
#include "tile_format.h"

namespace packkv {
namespace cu {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;

__host__ __device__ inline size_t al16(size_t x) { return (x + 15) & ~static_cast<size_t>(15); }

// Per-warp shared memory layout.
struct WarpSmem {
  size_t tile_buf;  // bytes of one staged tile buffer (0: decode from global memory)
  size_t stride;    // bytes per warp
};
// dual: a second tile buffer so that decode stages K and V together at block start
// (measured: staging V after the K rounds made decode ~5% slower).
__host__ __device__ inline WarpSmem warp_smem(const KernelConfig& c, int G, bool dual) {
  WarpSmem w;
  size_t tb = al16(c.max_tile + 48);
  size_t rest = al16(static_cast<size_t>(G) * c.block_tokens * 4) + static_cast<size_t>(G) * 16 * 4 * 2 +
                static_cast<size_t>(G) * 4;
  rest = al16(rest) + 4 * al16(static_cast<size_t>(c.block_tokens) * 4 + 32) +
         al16(static_cast<size_t>(c.block_tokens) + 32);  // staged zero points, scales, perm
  rest = al16(rest);
  const int nbuf = dual ? 2 : 1;
  if (kWarps * (nbuf * tb + rest) > 160 * 1024) tb = 0;
  w.tile_buf = tb;
  w.stride = nbuf * tb + rest;
  return w;
}
__host__ __device__ inline size_t attn_smem_bytes(const KernelConfig& c, int G, bool dual) {
  size_t a = kWarps * warp_smem(c, G, dual).stride;
  size_t merge = static_cast<size_t>(kWarps) * G * (c.head_dim + 2) * 4;
  return a > merge ? a : merge;
}

// Copies the bytes [src, src+n) into dst (16-byte aligned) with 16-byte cp.async and
// returns the address in dst of src[0]. Copies whole aligned 16-byte chunks.
__device__ inline const uint8_t* stage_tile(uint8_t* dst, const uint8_t* src, size_t n) {
  const int lane = threadIdx.x & 31;
  const uintptr_t a0 = reinterpret_cast<uintptr_t>(src) & ~static_cast<uintptr_t>(15);
  const uintptr_t a1 = (reinterpret_cast<uintptr_t>(src) + n + 15) & ~static_cast<uintptr_t>(15);
  const int nvec = static_cast<int>((a1 - a0) >> 4);
  for (int i = lane; i < nvec; i += 32)
    __pipeline_memcpy_async(dst + 16 * i, reinterpret_cast<const void*>(a0 + 16 * i), 16);
  return dst + (reinterpret_cast<uintptr_t>(src) - a0);
}

// The (min, encode length) fields of this lane's CPL channels in one round, and the
// byte offset of each of its packs relative to the round's payload.
template <int CPL>
struct RoundMeta {
  uint32_t mn[CPL];
  int L[CPL];
  uint32_t off[CPL];
  uint32_t total;  // payload bytes of the round (all lanes)
};
template <int CPL>
__device__ __forceinline__ void read_round_meta(const uint8_t* round, int D, int bits, int e,
                                                bool lane_valid, RoundMeta<CPL>& m) {
  const int lane = threadIdx.x & 31;
  const int mb = D * bits / 8;
  {
    const int bit0 = lane * CPL * bits;
    const int sh = bit0 & 7;
    const int nb = min(8, (sh + CPL * bits + 7) >> 3);
    uint64_t w = lane_valid ? load_le_bytes(round + (bit0 >> 3), nb) >> sh : 0ull;
#pragma unroll
    for (int j = 0; j < CPL; ++j) m.mn[j] = lane_valid ? static_cast<uint32_t>((w >> (j * bits)) & ((1u << bits) - 1u)) : 0u;
  }
  {
    const int bit0 = lane * CPL * e;
    const int sh = bit0 & 7;
    const int nb = min(8, (sh + CPL * e + 7) >> 3);
    uint64_t w = lane_valid ? load_le_bytes(round + mb + (bit0 >> 3), nb) >> sh : 0ull;
#pragma unroll
    for (int j = 0; j < CPL; ++j) m.L[j] = lane_valid ? static_cast<int>((w >> (j * e)) & ((1u << e) - 1u)) : 0;
  }
  uint32_t sz = 0;
#pragma unroll
  for (int j = 0; j < CPL; ++j) { m.off[j] = sz; sz += 2u * m.L[j]; }
  const uint32_t incl = warp_incl_scan(sz);
  const uint32_t base = incl - sz;
#pragma unroll
  for (int j = 0; j < CPL; ++j) m.off[j] += base;
  m.total = __shfl_sync(0xffffffffu, incl, 31);
}

// Codes of tokens k = 0..7 of one 8-token half word (token k at shift (7-k)*L).
__device__ __forceinline__ void unpack_half(uint64_t w, int L, float (&f)[8]) {
  const uint32_t m = (1u << L) - 1u;
  const uint32_t lo = static_cast<uint32_t>(w);                       // tokens 4..7
  const uint32_t hi = static_cast<uint32_t>(w >> (4 * L));            // tokens 0..3
  const int L2 = 2 * L, L3 = 3 * L;
  f[3] = code_to_float(hi & m);
  f[2] = code_to_float((hi >> L) & m);
  f[1] = code_to_float((hi >> L2) & m);
  f[0] = code_to_float((hi >> L3) & m);
  f[7] = code_to_float(lo & m);
  f[6] = code_to_float((lo >> L) & m);
  f[5] = code_to_float((lo >> L2) & m);
  f[4] = code_to_float((lo >> L3) & m);
}

// Narrow variant for L <= 4 (codes of at most 4 bits): an 8-token half fits 32 bits.
__device__ __forceinline__ uint32_t load_le_u32(const uint8_t* p, int n) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  const uint32_t* w = reinterpret_cast<const uint32_t*>(a & ~static_cast<uintptr_t>(3));
  (void)n;  // bits beyond the 8L of the half are never read by unpack_half32
  return __funnelshift_r(w[0], w[1], static_cast<int>(a & 3) * 8);
}
__device__ __forceinline__ void unpack_half32(uint32_t w, int L, float (&f)[8]) {
  const uint32_t m = (1u << L) - 1u;
#pragma unroll
  for (int k = 7; k >= 0; --k) {
    f[k] = code_to_float(w & m);
    w >>= L;
  }
}
template <bool NARROW>
__device__ __forceinline__ uint64_t load_half(const uint8_t* p, int n) {
  if (NARROW) return load_le_u32(p, n);
  return load_le_bytes(p, 8);  // unmasked: unpack_half reads only the low 8L bits
}
template <bool NARROW>
__device__ __forceinline__ void unpack(uint64_t w, int L, float (&f)[8]) {
  if (NARROW) unpack_half32(static_cast<uint32_t>(w), L, f);
  else unpack_half(w, L, f);
}

struct SeqCtx {
  int row;        // row of q/out (index into the caller's arrays)
  int qh0;        // first query head of this CTA's group chunk
  int n_valid;    // valid query heads in the chunk
  int kvh;
};

// Device, whole warp: reduces partial dot products part[k*G + g] (8 tokens of a half) over the warp and
// stores the results for tokens slot0 + k into res[g * stride + slot0 + k] via fn.
template <int G, typename Fn>
__device__ __forceinline__ void reduce_half(float (&part)[8 * G], Fn&& fn) {
  const int lane = threadIdx.x & 31;
  constexpr int V = 8 * G;
  const int base = warp_reduce_transposed<V>(part);
  constexpr int per = V > 32 ? V / 32 : 1;
  constexpr int dup = V >= 32 ? 1 : 32 / V;
  if ((lane & (dup - 1)) != 0) return;
#pragma unroll
  for (int i = 0; i < per; ++i) {
    const int v = base + i;
    fn(v / G, v % G, part[i]);
  }
}

// Register cap for 6 resident CTAs (24 warps per SM) for the scores/apply kernels with
// small accumulators: they are issue-bound and latency-sensitive (ncu: 20 warps/SM,
// register-limited, 67% issue-slot use). Decode keeps the default: with the cap it
// spills (244 bytes at CPL 4, G 1).
template <int CPL, int G, int MODE>
struct MinBlocks { static constexpr int value = (MODE != kAttnDecode && G * CPL <= 4) ? 6 : 1; };

// The fused attention kernel. Device. Grid (n_splits + 1, H_kv * n_gchunks, b.n), 128
// threads, dynamic smem attn_smem_bytes(). CTA (split, kv head and group chunk, sequence)
// covers compressed blocks [split*bps, (split+1)*bps) of the sequence (split n_splits: its
// residual window) for G query heads (heads qh0 .. qh0+n_valid-1). Inputs: a.q
// [n_seqs][n_q_heads][D] in a.q_dtype (scores, decode), a.probs fp32 [..][ld] (apply).
// Outputs: scores fp32 [..][ld] at original token positions (MODE scores), or one partial
// per (sequence, head, split) in a.partial: [m, l, acc[D]] (decode: max of scaled scores,
// sum of exp, unnormalized output; apply: acc only), merged by merge_kernel. fp32
// arithmetic throughout. PACKKV.md 6.1-6.3, 8.3. Reads only; thread-safe across calls.
template <int CPL, int G, int MODE>
__global__ void __launch_bounds__(kThreads, (MinBlocks<CPL, G, MODE>::value)) attn_kernel(KernelConfig c, AttnBatch b,
                                                        CacheDevicePtrs d, AttnCall a,
                                                        int n_gchunks, int group, int bps,
                                                        int n_splits) {
  extern __shared__ __align__(16) uint8_t smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const AttnSeq& s = b.s[blockIdx.z];
  SeqCtx ctx;
  ctx.row = b.first + blockIdx.z;
  ctx.kvh = blockIdx.y / n_gchunks;
  const int chunk = blockIdx.y - ctx.kvh * n_gchunks;
  ctx.qh0 = ctx.kvh * group + chunk * G;
  ctx.n_valid = min(G, group - chunk * G);
  const int D = c.head_dim, N = c.block_tokens, H = c.n_kv_heads;
  const int split = blockIdx.x;
  const bool is_res = split == n_splits;

  constexpr bool kDual = MODE == kAttnDecode;
  const WarpSmem ws = warp_smem(c, G, kDual);
  uint8_t* wbase = smem + warp * ws.stride;
  uint8_t* kbuf = wbase;
  uint8_t* vbuf = kDual ? wbase + ws.tile_buf : wbase;
  wbase += (kDual ? ws.tile_buf : 0);  // the rest of the layout follows the tile buffers
  float* sc = reinterpret_cast<float*>(wbase + ws.tile_buf);  // [G][N] scores, then weights
  float* Wr = sc + al16(static_cast<size_t>(G) * N * 4) / 4;        // [G][16] per-round sum w
  float* WZr = Wr + G * 16;                                          // [G][16] per-round sum w*z
  float* qsum_s = WZr + G * 16;                                      // [G]
  uint8_t* zbuf = reinterpret_cast<uint8_t*>(wbase + ws.tile_buf) +
                  al16(al16(static_cast<size_t>(G) * N * 4) + static_cast<size_t>(G) * 16 * 4 * 2 + G * 4);
  uint8_t* sbuf = zbuf + al16(static_cast<size_t>(N) * 4 + 32);
  uint8_t* vzbuf = sbuf + al16(static_cast<size_t>(N) * 4 + 32);
  uint8_t* vsbuf = vzbuf + al16(static_cast<size_t>(N) * 4 + 32);
  uint8_t* pbuf = vsbuf + al16(static_cast<size_t>(N) * 4 + 32);

  const bool lane_valid = lane * CPL < D;
  // Queries of this lane's channels.
  float qv[G][CPL];
  if (MODE != kAttnApply) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      float qs = 0.f;
#pragma unroll
      for (int j = 0; j < CPL; ++j) {
        float x = 0.f;
        if (lane_valid && g < ctx.n_valid)
          x = load_elem(a.q, (static_cast<size_t>(ctx.row) * a.n_q_heads + ctx.qh0 + g) * D + lane * CPL + j,
                        a.q_dtype);
        qv[g][j] = x;
        qs += x;
      }
      qs = warp_sum(qs);
      if (lane == 0) qsum_s[g] = qs;
    }
    __syncwarp();
  }
  float m_run[G], l_run[G], acc[G][CPL];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m_run[g] = -INFINITY;
    l_run[g] = 0.f;
#pragma unroll
    for (int j = 0; j < CPL; ++j) acc[g][j] = 0.f;
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
            p = (g < ctx.n_valid)
                    ? a.probs[(static_cast<size_t>(ctx.row) * a.n_q_heads + ctx.qh0 + g) * a.ld + orig(t)]
                    : 0.f;
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
#pragma unroll
        for (int j = 0; j < CPL; ++j) acc[g][j] *= alpha;
      }
    }
    __syncwarp();
  };

  if (!is_res) {
    const int blk_begin = split * bps;
    const int blk_end = min(s.n_blocks, blk_begin + bps);
    const fmt::BlockLayout BL = fmt::block_layout(H, N, c.groups, c.has_perm != 0);
    const int grp = c.groups == 1 ? 0 : ctx.kvh;
    const int ek = fmt::len_bits(c.bits_k), ev = fmt::len_bits(c.bits_v);
    const unsigned long long* table = d.block_table + static_cast<size_t>(s.seq) * c.max_blocks;
    unsigned long long next_ptr = blk_begin + warp < blk_end ? table[blk_begin + warp] : 0ull;
    for (int blk = blk_begin + warp; blk < blk_end; blk += kWarps) {
      const uint8_t* blob = reinterpret_cast<const uint8_t*>(next_ptr);
      if (blk + kWarps < blk_end) next_ptr = table[blk + kWarps];  // prefetch the next pointer
      size_t koff, ksz, voff, vsz;
      fmt::tile_extent(blob, BL, ctx.kvh, &koff, &ksz);
      fmt::tile_extent(blob, BL, H + ctx.kvh, &voff, &vsz);
      const uint8_t* kt = blob + koff;
      const uint8_t* vt = blob + voff;
      const size_t zs_off = static_cast<size_t>(grp) * N * 4;
      const int32_t* zst = reinterpret_cast<const int32_t*>(blob + (MODE == kAttnApply ? BL.v_zero_at : BL.k_zero_at) + zs_off);
      const float* sst = reinterpret_cast<const float*>(blob + (MODE == kAttnApply ? BL.v_scale_at : BL.k_scale_at) + zs_off);
      const uint8_t* perm = blob + BL.perm_at;
      if (ws.tile_buf) {
        if (MODE != kAttnApply) kt = stage_tile(kbuf, blob + koff, ksz);
        if (MODE != kAttnScores) vt = stage_tile(vbuf, blob + voff, vsz);
        zst = reinterpret_cast<const int32_t*>(stage_tile(zbuf, reinterpret_cast<const uint8_t*>(zst), N * 4));
        sst = reinterpret_cast<const float*>(stage_tile(sbuf, reinterpret_cast<const uint8_t*>(sst), N * 4));
        if (MODE != kAttnDecode && c.has_perm) perm = stage_tile(pbuf, perm, N);
        if (MODE == kAttnDecode) {
          stage_tile(vzbuf, blob + BL.v_zero_at + zs_off, N * 4);
          stage_tile(vsbuf, blob + BL.v_scale_at + zs_off, N * 4);
        }
        __pipeline_commit();
      }
      auto orig = [&](int slot) -> int64_t {
        return static_cast<int64_t>(blk) * N + (c.has_perm ? perm[slot] : slot);
      };
      if (ws.tile_buf) __pipeline_wait_prior(0);
      __syncwarp();
      if (MODE != kAttnApply) {
        const int32_t* kz = zst;
        const float* ks = sst;
        auto k_rounds = [&](auto narrow_tag) {
          constexpr bool NARROW = decltype(narrow_tag)::value;
          const uint8_t* rp = kt;
          for (int r = 0; r < N / 16; ++r) {
            RoundMeta<CPL> m;
            read_round_meta<CPL>(rp, D, c.bits_k, ek, lane_valid, m);
            const uint8_t* pay = rp + (D * c.bits_k + D * ek) / 8;
            uint64_t lo[CPL], hi[CPL];
#pragma unroll
            for (int j = 0; j < CPL; ++j) {
              lo[j] = load_half<NARROW>(pay + m.off[j], m.L[j]);
              hi[j] = load_half<NARROW>(pay + m.off[j] + m.L[j], m.L[j]);
            }
            float qm[G];
#pragma unroll
            for (int g = 0; g < G; ++g) {
              qm[g] = 0.f;
#pragma unroll
              for (int j = 0; j < CPL; ++j) qm[g] = fmaf(qv[g][j], code_to_float(m.mn[j]), qm[g]);
            }
#pragma unroll
            for (int half = 0; half < 2; ++half) {
              float part[8 * G];
#pragma unroll
              for (int k = 0; k < 8; ++k)
#pragma unroll
                for (int g = 0; g < G; ++g) part[k * G + g] = qm[g];
#pragma unroll
              for (int j = 0; j < CPL; ++j) {
                float f[8];
                unpack<NARROW>(half == 0 ? hi[j] : lo[j], m.L[j], f);
#pragma unroll
                for (int k = 0; k < 8; ++k)
#pragma unroll
                  for (int g = 0; g < G; ++g) part[k * G + g] = fmaf(qv[g][j], f[k], part[k * G + g]);
              }
              reduce_half<G>(part, [&](int k, int g, float x) {
                const int slot = 16 * r + 8 * half + k;
                const float score = ks[slot] * (x + static_cast<float>(kz[slot]) * qsum_s[g]);
                if (MODE == kAttnScores) {
                  if (g < ctx.n_valid)
                    a.out[(static_cast<size_t>(ctx.row) * a.n_q_heads + ctx.qh0 + g) * a.ld + orig(slot)] = score;
                } else {
                  sc[g * N + slot] = score;
                }
              });
            }
            rp = pay + m.total;
          }
        };
        if (c.bits_k <= 4) k_rounds(std::true_type{}); else k_rounds(std::false_type{});
        __syncwarp();

        if (MODE == kAttnDecode) {  // V's zero points and scales
          const size_t zs_off2 = static_cast<size_t>(grp) * N * 4;
          const uint8_t* vzg = blob + BL.v_zero_at + zs_off2;
          const uint8_t* vsg = blob + BL.v_scale_at + zs_off2;
          zst = reinterpret_cast<const int32_t*>(ws.tile_buf ? vzbuf + (reinterpret_cast<uintptr_t>(vzg) & 15) : vzg);
          sst = reinterpret_cast<const float*>(ws.tile_buf ? vsbuf + (reinterpret_cast<uintptr_t>(vsg) & 15) : vsg);
        }
      }
      if (MODE != kAttnScores) {
        const int32_t* vz = zst;
        const float* vs = sst;
        make_weights(N, vs, vz, orig);
        auto v_rounds = [&](auto narrow_tag) {
          constexpr bool NARROW = decltype(narrow_tag)::value;
          const uint8_t* rp = vt;
          for (int r = 0; r < N / 16; ++r) {
            RoundMeta<CPL> m;
            read_round_meta<CPL>(rp, D, c.bits_v, ev, lane_valid, m);
            const uint8_t* pay = rp + (D * c.bits_v + D * ev) / 8;
#pragma unroll
            for (int j = 0; j < CPL; ++j) {
#pragma unroll
              for (int g = 0; g < G; ++g)
                acc[g][j] += fmaf(code_to_float(m.mn[j]), Wr[g * 16 + r], WZr[g * 16 + r]);
            }
#pragma unroll
            for (int half = 0; half < 2; ++half) {
              float w[G][8];
#pragma unroll
              for (int g = 0; g < G; ++g)
#pragma unroll
                for (int k = 0; k < 8; ++k) w[g][k] = sc[g * N + 16 * r + 8 * half + k];
#pragma unroll
              for (int j = 0; j < CPL; ++j) {
                const uint64_t word = load_half<NARROW>(pay + m.off[j] + (half == 0 ? m.L[j] : 0), m.L[j]);
                float f[8];
                unpack<NARROW>(word, m.L[j], f);
#pragma unroll
                for (int k = 0; k < 8; ++k)
#pragma unroll
                  for (int g = 0; g < G; ++g) acc[g][j] = fmaf(w[g][k], f[k], acc[g][j]);
              }
            }
            rp = pay + m.total;
          }
        };
        if (c.bits_v <= 4) v_rounds(std::true_type{}); else v_rounds(std::false_type{});
        __syncwarp();
      }
    }
  } else {
    // Residual window: dense tokens of the ring, 16 per warp iteration.
    const size_t row_elems = static_cast<size_t>(H) * D;
    const void* ring_k = reinterpret_cast<const void*>(d.ring_table[2 * s.seq]);
    const void* ring_v = reinterpret_cast<const void*>(d.ring_table[2 * s.seq + 1]);
    const int64_t pos0 = static_cast<int64_t>(s.n_blocks) * N;
    for (int c0 = 16 * warp; c0 < s.res_len; c0 += 16 * kWarps) {
      const int n = min(16, s.res_len - c0);
      auto ring_off = [&](int i) -> size_t {
        const int slot = (s.ring_start + c0 + i) % c.ring_tokens;
        return static_cast<size_t>(slot) * row_elems + static_cast<size_t>(ctx.kvh) * D + lane * CPL;
      };
      auto orig = [&](int t) -> int64_t { return pos0 + c0 + t; };
      if (MODE != kAttnApply) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          float part[8 * G];
#pragma unroll
          for (int k = 0; k < 8 * G; ++k) part[k] = 0.f;
#pragma unroll
          for (int k = 0; k < 8; ++k) {
            const int i = 8 * half + k;
            if (i < n && lane_valid) {
              const size_t o = ring_off(i);
#pragma unroll
              for (int j = 0; j < CPL; ++j) {
                const float x = load_elem(ring_k, o + j, c.kv_dtype);
#pragma unroll
                for (int g = 0; g < G; ++g) part[k * G + g] = fmaf(qv[g][j], x, part[k * G + g]);
              }
            }
          }
          reduce_half<G>(part, [&](int k, int g, float x) {
            const int i = 8 * half + k;
            if (MODE == kAttnScores) {
              if (i < n && g < ctx.n_valid)
                a.out[(static_cast<size_t>(ctx.row) * a.n_q_heads + ctx.qh0 + g) * a.ld + orig(i)] = x;
            } else {
              sc[g * N + i] = i < n ? x : -INFINITY;
            }
          });
        }
        __syncwarp();
      }
      if (MODE != kAttnScores) {
        make_weights(n, nullptr, nullptr, orig);
        for (int i = 0; i < n; ++i) {
          if (!lane_valid) break;
          const size_t o = ring_off(i);
#pragma unroll
          for (int j = 0; j < CPL; ++j) {
            const float x = load_elem(ring_v, o + j, c.kv_dtype);
#pragma unroll
            for (int g = 0; g < G; ++g) acc[g][j] = fmaf(sc[g * N + i], x, acc[g][j]);
          }
        }
        __syncwarp();
      }
    }
  }
  if (MODE == kAttnScores) return;

  // Merge the warps of the CTA and write this split's partial result.
  __syncthreads();
  float* mg = reinterpret_cast<float*>(smem);  // [warp][G][D + 2]
  const int rs = D + 2;
#pragma unroll
  for (int g = 0; g < G; ++g) {
    float* p = mg + (warp * G + g) * rs;
    if (lane == 0) { p[0] = m_run[g]; p[1] = l_run[g]; }
    if (lane_valid) {
#pragma unroll
      for (int j = 0; j < CPL; ++j) p[2 + lane * CPL + j] = acc[g][j];
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < ctx.n_valid * rs; i += blockDim.x) {
    const int g = i / rs, k = i - g * rs;
    float* dst = a.partial +
                 ((static_cast<size_t>(ctx.row) * a.n_q_heads + ctx.qh0 + g) * kSplitsTotal + split) * rs;
    if (MODE == kAttnDecode) {
      float M = -INFINITY;
      for (int w = 0; w < kWarps; ++w) M = fmaxf(M, mg[(w * G + g) * rs]);
      float v = 0.f;
      if (k == 0) {
        v = M;
      } else {
        for (int w = 0; w < kWarps; ++w) {
          const float* p = mg + (w * G + g) * rs;
          if (p[0] != -INFINITY) v += p[k] * __expf(p[0] - M);
        }
      }
      dst[k] = v;
    } else {
      float v = 0.f;
      for (int w = 0; w < kWarps; ++w) v += mg[(w * G + g) * rs + k];
      dst[k] = v;
    }
  }
}

// Merges the splits of every (sequence, query head) of a batch: decode: exact
// flash-decoding merge (max, rescaled sums) into out [..][D] fp32 and lse (optional;
// -inf for empty sequences, whose output is 0); apply: sum of the partial outputs.
// Device; grid b.n * n_q_heads, any block size.
__global__ void merge_kernel(int mode, int D, int n_q_heads, int first, int n_splits_used,
                             const float* partial, float* out, float* lse) {
  const int rq = blockIdx.x;  // row-local (seq in batch) * n_q_heads + head
  const size_t gi = static_cast<size_t>(first) * n_q_heads + rq;
  const int rs = D + 2;
  const float* p = partial + gi * kSplitsTotal * rs;
  if (mode == kAttnDecode) {
    float M = -INFINITY;
    for (int s = 0; s < n_splits_used; ++s) M = fmaxf(M, p[s * rs]);
    float L = 0.f;
    if (M != -INFINITY)
      for (int s = 0; s < n_splits_used; ++s)
        if (p[s * rs] != -INFINITY) L += p[s * rs + 1] * __expf(p[s * rs] - M);
    for (int ch = threadIdx.x; ch < D; ch += blockDim.x) {
      float v = 0.f;
      if (L > 0.f) {
        for (int s = 0; s < n_splits_used; ++s)
          if (p[s * rs] != -INFINITY) v += p[s * rs + 2 + ch] * __expf(p[s * rs] - M);
        v /= L;
      }
      out[gi * D + ch] = v;
    }
    if (threadIdx.x == 0 && lse) lse[gi] = L > 0.f ? M + logf(L) : -INFINITY;
  } else {
    for (int ch = threadIdx.x; ch < D; ch += blockDim.x) {
      float v = 0.f;
      for (int s = 0; s < n_splits_used; ++s) v += p[s * rs + 2 + ch];
      out[gi * D + ch] = v;
    }
  }
}

// Host: enqueues attn_kernel<CPL, G, MODE> (raising the dynamic smem limit if needed).
// Throws Error(PACKKV_ERR_CUDA) if the launch fails.
template <int CPL, int G, int MODE>
void launch_one(const KernelConfig& c, const AttnBatch& b, const CacheDevicePtrs& d,
                const AttnCall& a, int n_gchunks, int group, int bps, int n_splits,
                cudaStream_t stream) {
  const size_t smem = attn_smem_bytes(c, G, MODE == kAttnDecode);
  auto kern = attn_kernel<CPL, G, MODE>;
  if (smem > 48 * 1024)
    check(cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
          "cudaFuncSetAttribute(attn_kernel)");
  dim3 grid(n_splits + 1, c.n_kv_heads * n_gchunks, b.n);
  kern<<<grid, kThreads, smem, stream>>>(c, b, d, a, n_gchunks, group, bps, n_splits);
  check_launch("attn_kernel");
}

// Host: runtime (CPL, G) -> template instantiation (CPL, G in {1, 2, 4, 8}).
template <int CPL, int MODE>
void dispatch_g(int G, const KernelConfig& c, const AttnBatch& b, const CacheDevicePtrs& d,
                const AttnCall& a, int n_gchunks, int group, int bps, int n_splits, cudaStream_t st) {
  switch (G) {
    case 1: launch_one<CPL, 1, MODE>(c, b, d, a, n_gchunks, group, bps, n_splits, st); break;
    case 2: launch_one<CPL, 2, MODE>(c, b, d, a, n_gchunks, group, bps, n_splits, st); break;
    case 4: launch_one<CPL, 4, MODE>(c, b, d, a, n_gchunks, group, bps, n_splits, st); break;
    default: launch_one<CPL, 8, MODE>(c, b, d, a, n_gchunks, group, bps, n_splits, st); break;
  }
}

template <int MODE>
void dispatch_cpl(int CPL, int G, const KernelConfig& c, const AttnBatch& b, const CacheDevicePtrs& d,
                  const AttnCall& a, int n_gchunks, int group, int bps, int n_splits, cudaStream_t st) {
  switch (CPL) {
    case 1: dispatch_g<1, MODE>(G, c, b, d, a, n_gchunks, group, bps, n_splits, st); break;
    case 2: dispatch_g<2, MODE>(G, c, b, d, a, n_gchunks, group, bps, n_splits, st); break;
    case 4: dispatch_g<4, MODE>(G, c, b, d, a, n_gchunks, group, bps, n_splits, st); break;
    default: dispatch_g<8, MODE>(G, c, b, d, a, n_gchunks, group, bps, n_splits, st); break;
  }
}

}  // namespace

size_t attn_workspace_bytes(const KernelConfig& c, int n_seqs, int n_q_heads) {
  return static_cast<size_t>(n_seqs) * n_q_heads * kSplitsTotal * (c.head_dim + 2) * sizeof(float);
}

void launch_attention(const KernelConfig& c, const AttnBatch& b, const CacheDevicePtrs& d,
                      const AttnCall& a, cudaStream_t stream) {
  if (b.n == 0) return;
  const int group = a.n_q_heads / c.n_kv_heads;
  int G = 1;
  while (G < group && G < 8) G *= 2;
  const int n_gchunks = (group + G - 1) / G;
  int cpl = 1;
  while (cpl * 32 < c.head_dim) cpl *= 2;
  // Splits: enough CTAs to fill the machine several times, at most kMaxSplits.
  const int ctas_per_split = b.n * c.n_kv_heads * n_gchunks;
  const int target = 8 * (c.num_sms > 0 ? c.num_sms : 132);
  int splits = (target + ctas_per_split - 1) / ctas_per_split;
  splits = splits < 1 ? 1 : (splits > kMaxSplits ? kMaxSplits : splits);
  int bps = (b.max_blocks + splits - 1) / splits;
  if (bps < kWarps) bps = kWarps;
  int n_splits = b.max_blocks == 0 ? 0 : (b.max_blocks + bps - 1) / bps;
  while (n_splits > kMaxSplits) { ++bps; n_splits = (b.max_blocks + bps - 1) / bps; }
  switch (a.mode) {
    case kAttnDecode: dispatch_cpl<kAttnDecode>(cpl, G, c, b, d, a, n_gchunks, group, bps, n_splits, stream); break;
    case kAttnScores: dispatch_cpl<kAttnScores>(cpl, G, c, b, d, a, n_gchunks, group, bps, n_splits, stream); break;
    default: dispatch_cpl<kAttnApply>(cpl, G, c, b, d, a, n_gchunks, group, bps, n_splits, stream); break;
  }
  if (a.mode == kAttnScores) return;
  merge_kernel<<<b.n * a.n_q_heads, 128, 0, stream>>>(a.mode, c.head_dim, a.n_q_heads, b.first,
                                                       n_splits + 1, a.partial, a.out, a.lse);
  check_launch("merge_kernel");
}

}  // namespace cu
}  // namespace packkv
