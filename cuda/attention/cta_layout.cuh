// Shared-memory layout of one attention CTA and the CTA's view of it (CtaSmem: pointers
// into the CTA part and this warp's part). The residual window, the online softmax and
// the split merge work on this view, so every kernel family that uses the layout shares
// them. Host (sizes) and device.
//
// A CTA has nw <= kMaxWarps warps; a warp owns whole blocks and stages its tiles, zero
// points and scales into its own part with 16-byte cp.async copies.
#ifndef PACKKV_CUDA_ATTENTION_CTA_LAYOUT_CUH
#define PACKKV_CUDA_ATTENTION_CTA_LAYOUT_CUH

#include <stddef.h>
#include <stdint.h>

#include "attention/tile_walk.cuh"
#include "common/rules.h"
#include "attention/tuning.h"
#include "attention/variants.cuh"
#include "device_util.cuh"  // load_elem
#include "kernels.h"

namespace packkv {
namespace cu {

__host__ __device__ constexpr int acc_rows(int G) { return v_rows(G) ? kRoundBatch : 1; }  // per warp

// V accumulators: acc_rows(G) rows of G*D fp32 (+ 8 words of padding) per warp. Within a
// head's D words, channel c = octet_lane * (D/8) + j is stored at word j * 8 + octet_lane, so the
// lanes that add to channel j of their own octet_lane touch different banks: with G = 1 all
// 32 lanes, each in its own octet's row (rows 8 banks apart), with G >= 2 the 8 lanes of
// octet 0 in the single row.
__host__ __device__ inline int acc_row_words(int G, int D) { return G * D + 8; }
__device__ __forceinline__ int acc_word(int g, int c, int D) {
  const int cpl = D >> 3;
  const int lg = c / cpl;
  return g * D + (c - lg * cpl) * 8 + lg;
}

// The staging buffers at the start of a warp part, the same in both kernel families
// (AttnSmem; family_tensorcore.cuh's TensorcoreSmem): sets the byte offsets from the warp
// part of the K and V tiles (kbuf, vbuf: where variant V decodes them), of the zero
// points and scales of K (V in apply: zb, sb) and of V where both are decoded (vzb, vsb),
// and of the perm (pb, where perm_buffer: the tensor-core family passes V::kPositions,
// the variants that write or read original positions; the CUDA-core family true, as
// before: dropping it from its decode kernels changed their code, G 2 128 -> 122
// registers, unmeasured). Returns the offset after them. S: a layout struct with those
// size_t fields; N: the block tokens, passed in (read again here from c, ptxas spilled in
// the tensor-core apply kernels: 4 bytes at head_dim 128 and 256; nvcc 13.0 sm_90).
template <typename V, typename S>
__host__ __device__ inline size_t layout_staging(S& s, const KernelConfig& c, size_t N, bool perm_buffer) {
  // Tile buffers: a copy starts up to 15 bytes before the tile (16-byte chunks) and
  // bits_at reads one 32-bit word past the last byte it needs.
  const size_t tb = align16(c.max_tile + 48), zs = align16(N * 4 + 32);
  size_t w = 0;
  s.kbuf = w; if (V::kUsesK) w += tb;
  s.vbuf = w; if (V::kUsesV) w += tb;
  s.zb = w;   w += zs;
  s.sb = w;   w += zs;
  s.vzb = w;  if (V::kUsesK && V::kUsesV) w += zs;
  s.vsb = w;  if (V::kUsesK && V::kUsesV) w += zs;
  s.pb = w;   if (perm_buffer) w += align16(N + 32);
  return w;
}

// Byte offsets: a CTA part (queries, per-warp accumulators) and nw warp parts (staged
// tiles and metadata, scores/weights, round tables).
struct AttnSmem {
  size_t q, qsum, acc, ml, warp0;          // CTA part (acc: [nw][acc_rows(G)][acc_row_words])
  size_t kbuf, vbuf, zb, sb, vzb, vsb, pb;  // warp part: staging buffers (layout_staging)
  size_t sc, wr, wzr, round_start, pre;    // warp part: scores/weights, round tables
  size_t bar;                              // warp part: the mbarrier of bulk staging (sm_90)
  size_t stride, total;
};
template <typename V>
__host__ __device__ inline AttnSmem attn_smem(const KernelConfig& c, int G, int nw) {
  AttnSmem s;
  const size_t D = static_cast<size_t>(c.shape.head_dim), N = static_cast<size_t>(c.shape.block_tokens);
  size_t at = 0;
  s.q = at;    at += align16(G * D * 4);
  s.qsum = at; at += align16(2 * G * 4);  // sum of each query [G], then q . mu [G] (K centring)
  s.acc = at;  at += !V::kUsesV ? 0 : align16(static_cast<size_t>(nw) * acc_rows(G) * acc_row_words(G, static_cast<int>(D)) * 4);
  s.ml = at;   at += align16(static_cast<size_t>(nw) * (G * 2 + 1) * 4);  // + each warp's exponent e
  s.warp0 = at;
  size_t w = layout_staging<V>(s, c, N, true);  // pb in every variant (see above)
  s.sc = w;   w += align16(G * N * 4);
  s.wr = w;   w += align16(G * 16 * 4);
  s.wzr = w;  w += align16(G * 16 * 4);
  s.round_start = w; w += align16((kMaxRounds + 1) * 4);
  s.pre = w;  w += align16(kMaxRounds * 8 * 4);
  s.bar = w;  w += 16;
  s.stride = align16(w);
  s.total = at + nw * s.stride;
  return s;
}

// Loads the CTA's queries into qS [G][D] fp32: query head qh0 + g of sequence row `row`
// (AttnCall::q, a.q_dtype) for g < n_valid, zeros for the rest. Decode scales them by the
// softmax scale, so that the scores come out scaled (a raw score may exceed FLT_MAX where
// the scaled one does not; online_softmax.cuh). Whole CTA; the caller synchronizes. Both
// families (CUDA-core CTAs, tensor-core residual CTAs).
template <int G, typename V>
__device__ __forceinline__ void load_queries(float* qS, const AttnCall& a, int row, int qh0, int n_valid, int D) {
  for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
    const int g = i / D, ch = i - g * D;
    qS[i] = g < n_valid ? load_elem(a.q, (static_cast<size_t>(row) * a.n_q_heads + qh0 + g) * D + ch, a.q_dtype) *
                              (V::kSoftmax ? a.scale : 1.f)
                        : 0.f;
  }
}

// One CTA's work and shared memory, as the device code of a launch sees it. Grid (splits,
// H_kv * n_gchunks, sequences): the CTA serves query heads qh0 .. qh0 + n_valid - 1 of KV
// head kvh of sequence row `row`.
template <int G>
struct Cta {
  int warp, lane, nw;
  int row;       // the sequence's row in q / out / probs / partial (b.first + blockIdx.z)
  int kvh;       // KV head
  int qh0;       // first query head
  int n_valid;   // query heads of this CTA that exist (<= G)
  int split;     // blockIdx.x
  float* qS;     // [G][D] queries (fp32)
  float* qsum;   // [G] sum of each query
  float* acc;    // this warp's acc_rows(G) accumulator rows
  int arw;       // words per accumulator row
  float* ml;     // [nw][G][2] each warp's running (max, sum), then [nw] its accumulator exponent e (int)
  uint8_t* wb;   // this warp's part
  float* sc;     // [G][N] scores, then weights
  float* Wr;     // [G][16] per-round sum of weights
  float* WZr;    // [G][16] per-round sum of weight * zero point
  int* round_start;  // byte offsets of the staged tile's rounds (residual window: ring slots)
  int* pre;      // per-round prefix sums of encode lengths
};

}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_ATTENTION_CTA_LAYOUT_CUH
