// Zero points and scales of one block in a warp's shared memory, for the attention kernel
// families: located in the blob (fmt::Shape::zs_fields: wide int32 / fp32, compact int16 /
// 16-bit scale, or a compact cache's wide fallback block), staged with cp.async in that
// encoding, and read where the kernels consume them through fmt::load_zero / load_scale
// (format/shape.h, the host decoders' readers): a compact field costs a 2-byte load and a
// sign extension or a shift, and the encoding is one block-uniform flag, so no pass over
// the fields is needed. Only the rare paths that rescale or clamp a block (fit_block,
// clamped_block.cuh) widen a compact copy in place first (zs_widen). Device only; whole warp.
#ifndef PACKKV_CUDA_ATTENTION_ZS_STAGE_CUH
#define PACKKV_CUDA_ATTENTION_ZS_STAGE_CUH

#include <stdint.h>

#include "attention/tile_walk.cuh"
#include "format/affine.h"
#include "format/shape.h"

namespace packkv {
namespace cu {

// The [N] zero points and scales of one block and scale group (K or V) as staged in this
// warp's shared memory, in the block's encoding.
struct ZsView {
  const uint8_t* zero;  // [N] int32 (wide) or int16
  uint8_t* scale;       // [N] fp32 (wide) or 16-bit; writable: fit_block rescales a wide copy
  bool wide;            // block-uniform
  // Zero point and scale of stored slot `slot`.
  __device__ __forceinline__ int32_t z(int slot) const { return fmt::load_zero(zero, wide, static_cast<size_t>(slot)); }
  __device__ __forceinline__ float s(int slot) const { return fmt::load_scale(scale, wide, static_cast<size_t>(slot)); }
  // The fields as int32 / fp32 arrays: only once the view is wide (zs_widen).
  __device__ __forceinline__ const int32_t* zeros() const { return reinterpret_cast<const int32_t*>(zero); }
  __device__ __forceinline__ float* scales() const { return reinterpret_cast<float*>(scale); }
};

// The two header fields that say where a block's zero points and scales are: its first K
// scale field (a compact cache's wide fallback marker) and its last tile_end entry. Both
// are loaded whatever the encoding, beside the tile_end loads of the block's tiles, so
// that locating the fields adds no round trip to global memory.
struct ZsHeader {
  uint16_t first_k_scale;
  uint32_t tiles_end;
};
__device__ __forceinline__ ZsHeader zs_header(const uint8_t* blob, const fmt::Shape& SH) {
  ZsHeader h;
  h.first_k_scale = fmt::load2<uint16_t>(blob + SH.layout.k_scale_at);
  h.tiles_end = fmt::tile_end(blob, 2 * SH.n_kv_heads - 1);
  return h;
}

// Where the fields of scale group `grp` (K or V) of `blob` are in global memory, and their
// encoding (fmt::Shape::zs_offsets, as Shape::zs_fields on the host).
struct ZsSrc {
  const uint8_t* zero;
  const uint8_t* scale;
  bool wide;
};
__device__ __forceinline__ ZsSrc zs_locate(const uint8_t* blob, const fmt::Shape& SH, const ZsHeader& h, int kv,
                                           int grp) {
  size_t z = 0, s = 0;
  ZsSrc r;
  SH.zs_offsets(kv, grp, SH.zs_fallback(h.first_k_scale), SH.wide_zs_at(h.tiles_end), &z, &s, &r.wide);
  r.zero = blob + z;
  r.scale = blob + s;
  return r;
}

// Starts copying the fields of `src` ([N] each) into zbuf / sbuf (each at least N * 4 + 32
// bytes, 16-byte aligned): wide fields at the buffer start, compact ones (2N bytes) at byte
// 2N + 16, so that zs_widen can widen them toward the start without overwriting fields it
// has not read yet. The view is valid after __pipeline_commit, the wait and __syncwarp.
__device__ __forceinline__ ZsView zs_stage(uint8_t* zbuf, uint8_t* sbuf, const ZsSrc& src, int N) {
  const uint32_t dst = src.wide ? 0u : 2 * static_cast<uint32_t>(N) + 16;
  const size_t n = static_cast<size_t>(N) * (src.wide ? 4 : 2);
  ZsView v;
  v.wide = src.wide;
  v.zero = zbuf + dst + stage(zbuf + dst, src.zero, n);
  v.scale = sbuf + dst + stage(sbuf + dst, src.scale, n);
  return v;
}

// The compact part of zs_widen, out of line (rare paths only: it adds nothing to the
// register pressure of the kernels' decode loops). static: one copy per translation unit.
static __device__ __noinline__ void zs_widen_compact(uint8_t* zbuf, uint8_t* sbuf, const uint8_t* zero,
                                                     const uint8_t* scale, int N) {
  const int lane = threadIdx.x & 31;
  for (int slot0 = 0; slot0 < N; slot0 += 32) {
    const int slot = slot0 + lane;
    fmt::Affine a;
    if (slot < N) a = fmt::load_affine(zero, scale, false, static_cast<size_t>(slot));
    __syncwarp();
    if (slot < N) {
      reinterpret_cast<int32_t*>(zbuf)[slot] = a.zero;
      reinterpret_cast<float*>(sbuf)[slot] = a.scale;
    }
    __syncwarp();
  }
}

// Makes a staged view wide: compact fields are widened in place to int32 / fp32 at the
// start of the buffers they were staged into (zbuf / sbuf of zs_stage); wide ones stay.
// Whole warp (a warp barrier inside).
__device__ __forceinline__ void zs_widen(ZsView& v, uint8_t* zbuf, uint8_t* sbuf, int N) {
  if (v.wide) return;
  zs_widen_compact(zbuf, sbuf, v.zero, v.scale, N);
  v.zero = zbuf;
  v.scale = sbuf;
  v.wide = true;
}

}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_ATTENTION_ZS_STAGE_CUH
