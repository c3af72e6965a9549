// Tensor-core rounds for GQA groups (G >= 2 query heads per KV head): part of
// attention.cu (included inside its anonymous namespace, after bits_at, LanePos and
// lane_pos; not a header of its own).
//
// On CUDA cores every decoded code costs G FMAs (one per query head), so G = 4 ran 1.6x
// (K) and 2.2x (V) slower than G = 1. Here the 8-lane groups decode their packs into
// exact fp16 codes (integers 0..255) in a small shared "slab" per round group, and the
// warp multiplies the slabs with mma.sync.m16n8k16 (fp16 in, fp32 accumulate):
//   K: scores[token][head] = sum_c code[token][c] * q[head][c]   (A = codes^T via ldmatrix.trans)
//   V: out[c][head]       = sum_t code[t][c] * w[head][t]        (A = codes via ldmatrix)
// The 8 fp16 columns of B hold 4 heads x (hi, lo): x = hi + lo with hi = fp16(x) and
// lo = fp16(x - hi), after scaling each head by a power of two so that its largest
// magnitude is in [2^13, 2^14) (exact; undone on the fp32 result). That keeps about 21
// significant bits of every query and weight, so results match the fp32 CUDA-core path
// to ~1e-6 relative.
//
// Slab layout: 16 rows of 16 fp16 tokens (48-byte stride: ldmatrix and the 16-byte row
// stores are bank-conflict free). Row k of the slab of loop step j (channels
// j, j+1 of every lane) holds channel (k % 8) * D/8 + j + k / 8, i.e. lane_g = k % 8 and
// u = k / 8; B is built in the same channel order.
#ifndef PACKKV_CUDA_ATTENTION_MMA_CUH
#define PACKKV_CUDA_ATTENTION_MMA_CUH

constexpr int kSlabRowBytes = 48;                  // bytes per slab row (16 fp16 + 16 padding)
constexpr int kSlabBytes = 16 * kSlabRowBytes;     // one 16 x 16 slab
constexpr int kWarpSlabBytes = 2 * kGroups * kSlabBytes;  // double-buffered, one per group

// fp16 pair {lo: 1024 + a, hi: 1024 + b} minus 1024 each: the codes a, b as exact fp16.
__device__ __forceinline__ uint32_t codes_to_half2(uint32_t packed) {
  __half2 h = *reinterpret_cast<__half2*>(&packed);
  h = __hsub2(h, __half2half2(__ushort_as_half(0x6400)));  // 1024.0
  return *reinterpret_cast<uint32_t*>(&h);
}

// Pair of tokens (even, odd) from x, where the odd token's code is in the low L bits and
// the even token's code in the next L bits: {even, odd} as fp16.
__device__ __forceinline__ uint32_t pair_half2(uint32_t x, uint32_t L, uint32_t m) {
  const uint32_t lo = ((x >> L) & m) | 0x64006400u;
  return codes_to_half2(((x << 16) & (m << 16)) | lo);
}

// The 16 codes of the pack at bit pbit (encode length L) as 8 fp16 pairs: word i holds
// tokens 2i (low half) and 2i + 1. Token t sits at bit pbit + (15 - t) * L.
template <bool NARROW>
__device__ __forceinline__ void decode_pack_half2(const uint32_t* T, uint32_t pbit, uint32_t L,
                                                  uint32_t (&w)[8]) {
  const uint32_t m = (1u << L) - 1u;
  if (NARROW) {  // windows of 8 tokens: [15..8] at pbit, [7..0] at pbit + 8L (last token lowest)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      uint32_t x = bits_at(T, pbit + static_cast<uint32_t>(8 * h) * L);
      const int base = h == 0 ? 8 : 0;
#pragma unroll
      for (int p = 3; p >= 0; --p) {  // pair (base + 2p, base + 2p + 1): odd token at shift (6 - 2p) L
        w[base / 2 + p] = pair_half2(x, L, m);
        x >>= 2 * L;
      }
    }
  } else {  // windows of 4 tokens: [15-4h .. 12-4h] at pbit + 4hL
#pragma unroll
    for (int h = 0; h < 4; ++h) {
      uint32_t x = bits_at(T, pbit + static_cast<uint32_t>(4 * h) * L);
      const int base = 12 - 4 * h;
      w[base / 2 + 1] = pair_half2(x, L, m);  // tokens base + 2, base + 3 (shifts 1, 0)
      x >>= 2 * L;
      w[base / 2] = pair_half2(x, L, m);      // tokens base, base + 1 (shifts 3, 2)
    }
  }
}

__device__ __forceinline__ void sts128(uint8_t* p, uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  *reinterpret_cast<uint4*>(p) = make_uint4(a, b, c, d);
}

// ldmatrix.x4 (optionally transposed) of the 16 x 16 slab at s; thread i supplies the row
// address of 8x8 matrix i / 8, row i % 8.
template <bool TRANS>
__device__ __forceinline__ void ldmatrix_slab(const uint8_t* s, uint32_t (&a)[4]) {
  const int i = threadIdx.x & 31, m = i >> 3, rr = i & 7;
  // A fragment order: {rows 0-7, k 0-7}, {rows 8-15, k 0-7}, {rows 0-7, k 8-15}, {rows 8-15, k 8-15}.
  // V (A = codes, slab rows = A rows): matrix m = rows (m & 1) * 8.., columns (m >> 1) * 8..
  // K (A = codes^T, slab rows = k):     matrix m = slab rows (m >> 1) * 8.., columns (m & 1) * 8..
  const int row = TRANS ? (m >> 1) * 8 + rr : (m & 1) * 8 + rr;
  const int col16 = TRANS ? (m & 1) : (m >> 1);
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(s + row * kSlabRowBytes + col16 * 16));
  if (TRANS)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3]) : "r"(addr));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3]) : "r"(addr));
}

__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// 2^k such that max_abs * 2^k is in [2^13, 2^14) (1 for 0 or non-finite max_abs).
__device__ __forceinline__ float pow2_scale(float max_abs) {
  if (!(max_abs > 0.f) || !isfinite(max_abs)) return 1.f;
  int e;
  frexpf(max_abs, &e);  // max_abs = f * 2^e, f in [0.5, 1)
  return ldexpf(1.f, 14 - e);
}

// x (already scaled) as the fp16 hi part (part 0) or lo part (part 1).
__device__ __forceinline__ __half split_part(float x, int part) {
  const __half hi = __float2half_rn(x);
  return part == 0 ? hi : __float2half_rn(x - __half2float(hi));
}

// B fragments of the queries for every slab step, built once per CTA: Bq[s * 32 + lane]
// = {b0b1, b2b3} of lane for loop step j = 2s. Column n = lane / 4 is head n / 2, part
// n % 2; row k is channel (k % 8) * D/8 + 2s + k / 8. qscale[g]: the power-of-two scale of
// head g. All threads of the CTA; qS [G][D] (heads >= n_valid are zero).
template <int G>
__device__ void build_query_frags(const float* qS, const float* qscale, int D, uint2* Bq) {
  const int cpl = D >> 3, n_slabs = D >> 4;
  for (int i = threadIdx.x; i < n_slabs * 32; i += blockDim.x) {
    const int s = i >> 5, lane = i & 31, gid = lane >> 2, tig = lane & 3;
    const int h = gid >> 1, part = gid & 1;
    uint32_t r[2];
#pragma unroll
    for (int reg = 0; reg < 2; ++reg) {
      __half v[2];
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int k = 2 * tig + 8 * reg + e;
        const int c = (k & 7) * cpl + 2 * s + (k >> 3);
        v[e] = h < G ? split_part(qS[h * D + c] * qscale[h], part) : __float2half_rn(0.f);
      }
      r[reg] = static_cast<uint32_t>(__half_as_ushort(v[0])) | (static_cast<uint32_t>(__half_as_ushort(v[1])) << 16);
    }
    Bq[i] = make_uint2(r[0], r[1]);
  }
}

// K of one block on tensor cores (one warp). For each round r < R and token t (0..15)
// and head g < G, calls epi(r, t, g, sum_c q[g][c] * (min_c + code_{c,t})). T/tile:
// the staged K tile, rs/pre its round table (walk_tile); qS [G][D] fp32; Bq from
// build_query_frags with scales qscale; slabs: this warp's kWarpSlabBytes; qm: [4][G]
// fp32 scratch (shared, this warp).
template <int G, bool NARROW, typename Epi>
__device__ __forceinline__ void k_block_mma(const uint32_t* T, uint32_t tile, const int* rs, const int* pre,
                                            int R, int D, int bits, int e, const float* qS, const uint2* Bq,
                                            const float* qscale, uint8_t* slabs, float* qm_s, Epi&& epi) {
  const int lane = threadIdx.x & 31, gi = lane >> 3, lane_g = lane & 7, gid = lane >> 2, tig = lane & 3;
  const int cpl = D >> 3;
  const uint32_t bm = (1u << bits) - 1u, em = (1u << e) - 1u;
  for (int r0 = 0; r0 < R; r0 += kGroups) {
    const bool on = r0 + gi < R;
    LanePos p = lane_pos(tile, rs, pre, on ? r0 + gi : r0, lane_g, D, bits, e);
    float d[kGroups][4] = {};
    float qm[G];
#pragma unroll
    for (int g = 0; g < G; ++g) qm[g] = 0.f;
    int buf = 0;
    for (int j = 0; j < cpl; j += 2) {
      const uint32_t mw = bits_at(T, p.mbit), lw = bits_at(T, p.lbit);
      p.mbit += 2 * bits;
      p.lbit += 2 * e;
      uint8_t* slab = slabs + (buf * kGroups + gi) * kSlabBytes;
#pragma unroll
      for (int u = 0; u < 2; ++u) {
        const int c = lane_g * cpl + j + u;
        const uint32_t mn = (mw >> (u * bits)) & bm, L = (lw >> (u * e)) & em;
#pragma unroll
        for (int g = 0; g < G; ++g) qm[g] = fmaf(qS[g * D + c], code_to_float(mn), qm[g]);
        uint32_t w[8];
        decode_pack_half2<NARROW>(T, p.pbit, L, w);
        p.pbit += 16 * L;
        uint8_t* row = slab + (u * 8 + lane_g) * kSlabRowBytes;
        sts128(row, w[0], w[1], w[2], w[3]);
        sts128(row + 16, w[4], w[5], w[6], w[7]);
      }
      __syncwarp();
      const uint2 b = Bq[(j >> 1) * 32 + lane];
#pragma unroll
      for (int q = 0; q < kGroups; ++q) {
        if (r0 + q < R) {
          uint32_t a[4];
          ldmatrix_slab<true>(slabs + (buf * kGroups + q) * kSlabBytes, a);
          mma16816(d[q], a, b.x, b.y);
        }
      }
      buf ^= 1;
    }
    // The mins term of each round: reduce over the 8 lanes of the group.
    const unsigned gmask = 0xffu << (lane & 24);
#pragma unroll
    for (int g = 0; g < G; ++g) {
#pragma unroll
      for (int o = 4; o > 0; o >>= 1) qm[g] += __shfl_xor_sync(gmask, qm[g], o);
      if (lane_g == 0) qm_s[gi * G + g] = qm[g];
    }
    __syncwarp();
    // d[q]: rows gid / gid + 8 = tokens, columns 2 tig / 2 tig + 1 = head tig (hi, lo).
    if (tig < G) {
      const float inv = 1.f / qscale[tig];
#pragma unroll
      for (int q = 0; q < kGroups; ++q) {
        if (r0 + q < R) {
          const float m = qm_s[q * G + tig];
          epi(r0 + q, gid, tig, (d[q][0] + d[q][1]) * inv + m);
          epi(r0 + q, gid + 8, tig, (d[q][2] + d[q][3]) * inv + m);
        }
      }
    }
    __syncwarp();
  }
}

// V of one block on tensor cores (one warp). Adds, for every channel c and head g < G,
// sum over the block's tokens of w[g][t] * (min_c(round of t) + code_{c,t}) + w z into
// the accumulator rows: the mins part into the round group's row acc + gi * arw (as the
// CUDA-core path does), the code part into the tensor row acc + kGroups * arw (layout
// acc_word). w: sc [G][N] weights (p s); Wr/WZr [G][16] per-round sums of w and w z.
template <int G, bool NARROW>
__device__ __forceinline__ void v_block_mma(const uint32_t* T, uint32_t tile, const int* rs, const int* pre,
                                            int R, int D, int N, int bits, int e, const float* sc,
                                            const float* Wr, const float* WZr, uint8_t* slabs, float* acc,
                                            int arw) {
  const int lane = threadIdx.x & 31, gi = lane >> 3, lane_g = lane & 7, gid = lane >> 2, tig = lane & 3;
  const int cpl = D >> 3;
  const uint32_t bm = (1u << bits) - 1u, em = (1u << e) - 1u;
  // Power-of-two scale per head over the block's weights.
  float wscale[G];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    float mx = 0.f;
    for (int t = lane; t < N; t += 32) mx = fmaxf(mx, fabsf(sc[g * N + t]));
    wscale[g] = pow2_scale(warp_max(mx));
  }
  const int h = gid >> 1, part = gid & 1;
  float hs = 0.f;  // this lane's B column: head h, scaled
#pragma unroll
  for (int g = 0; g < G; ++g)
    if (g == h) hs = wscale[g];
  float* trow = acc + kGroups * arw;
  for (int r0 = 0; r0 < R; r0 += kGroups) {
    const int r = r0 + gi;
    const bool on = r < R;
    // B fragments of the (up to) 4 rounds: tokens 2 tig, 2 tig + 1 (b0) and + 8 (b1), column gid.
    uint32_t bw[kGroups][2];
#pragma unroll
    for (int q = 0; q < kGroups; ++q) {
#pragma unroll
      for (int reg = 0; reg < 2; ++reg) {
        __half v[2];
#pragma unroll
        for (int e2 = 0; e2 < 2; ++e2) {
          const int t = 2 * tig + 8 * reg + e2;
          const bool ok = r0 + q < R && h < G;
          v[e2] = ok ? split_part(sc[h * N + 16 * (r0 + q) + t] * hs, part) : __float2half_rn(0.f);
        }
        bw[q][reg] = static_cast<uint32_t>(__half_as_ushort(v[0])) | (static_cast<uint32_t>(__half_as_ushort(v[1])) << 16);
      }
    }
    float wr[G], wz[G];
#pragma unroll
    for (int g = 0; g < G; ++g) {
      wr[g] = on ? Wr[g * 16 + r] : 0.f;
      wz[g] = on ? WZr[g * 16 + r] : 0.f;
    }
    float* grow = acc + gi * arw;
    LanePos p = lane_pos(tile, rs, pre, on ? r : r0, lane_g, D, bits, e);
    int buf = 0;
    for (int j = 0; j < cpl; j += 2) {
      const uint32_t mw = bits_at(T, p.mbit), lw = bits_at(T, p.lbit);
      p.mbit += 2 * bits;
      p.lbit += 2 * e;
      uint8_t* slab = slabs + (buf * kGroups + gi) * kSlabBytes;
#pragma unroll
      for (int u = 0; u < 2; ++u) {
        const uint32_t mn = (mw >> (u * bits)) & bm, L = (lw >> (u * e)) & em;
        const float mf = code_to_float(mn);
        if (on) {
#pragma unroll
          for (int g = 0; g < G; ++g) grow[g * D + (j + u) * 8 + lane_g] += fmaf(mf, wr[g], wz[g]);
        }
        uint32_t w[8];
        decode_pack_half2<NARROW>(T, p.pbit, L, w);
        p.pbit += 16 * L;
        uint8_t* row = slab + (u * 8 + lane_g) * kSlabRowBytes;
        sts128(row, w[0], w[1], w[2], w[3]);
        sts128(row + 16, w[4], w[5], w[6], w[7]);
      }
      __syncwarp();
      float d[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int q = 0; q < kGroups; ++q) {
        if (r0 + q < R) {
          uint32_t a[4];
          ldmatrix_slab<false>(slabs + (buf * kGroups + q) * kSlabBytes, a);
          mma16816(d, a, bw[q][0], bw[q][1]);
        }
      }
      // d: rows gid (u = 0) and gid + 8 (u = 1) = channel gid * D/8 + j + u; columns = head tig.
      if (tig < G) {
        float inv = 0.f;
#pragma unroll
        for (int g = 0; g < G; ++g)
          if (g == tig) inv = 1.f / wscale[g];
        trow[tig * D + j * 8 + gid] += (d[0] + d[1]) * inv;
        trow[tig * D + (j + 1) * 8 + gid] += (d[2] + d[3]) * inv;
      }
      buf ^= 1;
    }
    __syncwarp();
  }
}

#endif  // PACKKV_CUDA_ATTENTION_MMA_CUH
