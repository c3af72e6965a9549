// Zero points and scales of one block into a warp's shared memory, for the attention
// kernel families: staged with cp.async in whatever encoding the blob stores them
// (fmt::Shape::zs_fields: wide int32 / fp32, compact int16 / 16-bit scale, or a compact
// cache's wide fallback block), then, after the pipeline wait, widened in place so that
// the kernels read int32 zero points and fp32 scales at the buffer start, as before the
// compact encoding existed. Device only; whole warp.
#ifndef PACKKV_CUDA_ATTENTION_ZS_STAGE_CUH
#define PACKKV_CUDA_ATTENTION_ZS_STAGE_CUH

#include <stdint.h>

#include "attention/tile_walk.cuh"
#include "format/affine.h"
#include "format/shape.h"

namespace packkv {
namespace cu {

// What zs_stage started: the offsets of the staged fields in their buffers, and whether
// they are wide.
struct ZsStaged {
  uint32_t zero_off, scale_off;
  bool wide;
};

// Out-of-line body of zs_stage (scalars only: inlined, the branches on the encoding
// made ptxas spill in the apply kernels; nvcc 13.0, sm_90). zero_at / scale_at: the header
// fields of the group; wide_zero / wide_scale: the group's fields relative to a wide
// fallback block's wide_zs_at.
// static: one copy per translation unit (both attention families include this header).
static __device__ __noinline__ ZsStaged zs_stage_at(uint8_t* zbuf, uint8_t* sbuf, const uint8_t* blob,
                                                    uint32_t zero_at, uint32_t scale_at, uint32_t marker_at,
                                                    uint32_t tiles_at, int last_tile, uint32_t wide_zero,
                                                    uint32_t wide_scale, int N, bool compact) {
  const uint8_t* z = blob + zero_at;
  const uint8_t* s = blob + scale_at;
  bool wide = !compact;
  if (compact && fmt::load2<uint16_t>(blob + marker_at) == fmt::kWideMarker) {  // wide fallback block
    const size_t at = (tiles_at + fmt::tile_end(blob, last_tile) + 3) & ~static_cast<size_t>(3);
    z = blob + at + wide_zero;
    s = blob + at + wide_scale;
    wide = true;
  }
  const uint32_t dst = wide ? 0u : 2 * static_cast<uint32_t>(N) + 16;
  ZsStaged st;
  st.wide = wide;
  st.zero_off = dst + stage(zbuf + dst, z, static_cast<size_t>(N) * (wide ? 4 : 2));
  st.scale_off = dst + stage(sbuf + dst, s, static_cast<size_t>(N) * (wide ? 4 : 2));
  return st;
}

// Starts copying the [N] zero points and scales of scale group `grp` (K or V) of `blob`
// into zbuf / sbuf (each at least N * 4 + 32 bytes, 16-byte aligned), in the encoding the
// block uses (the offsets of fmt::Shape::zs_fields). Wide fields are staged at the buffer
// start; compact ones (2N bytes) at byte 2N + 16, so that zs_widen can widen them toward
// the start without overwriting fields it has not read yet.
__device__ inline ZsStaged zs_stage(uint8_t* zbuf, uint8_t* sbuf, const uint8_t* blob, const fmt::Shape& SH, int kv,
                                    int grp) {
  const uint32_t meta = static_cast<uint32_t>(SH.scale_groups * SH.block_tokens) * 4;
  const uint32_t wide_zero = 2 * meta * kv + 4u * grp * SH.block_tokens;
  return zs_stage_at(zbuf, sbuf, blob, static_cast<uint32_t>(SH.zero_at(kv, grp)),
                     static_cast<uint32_t>(SH.scale_at(kv, grp)), static_cast<uint32_t>(SH.layout.k_scale_at),
                     static_cast<uint32_t>(SH.layout.tiles_at), 2 * SH.n_kv_heads - 1, wide_zero, wide_zero + meta,
                     SH.block_tokens, SH.zs == fmt::ZsFormat::kCompact);
}

// The compact part of zs_widen: out of line, so that its few registers do not add to
// the register pressure of the kernels' decode loops (inlined, it made ptxas spill in
// decode with 4 query heads per CTA; nvcc 13.0, sm_90).
static __device__ __noinline__ void zs_widen_compact(uint8_t* zbuf, uint8_t* sbuf, uint32_t zero_off,
                                                     uint32_t scale_off, int N) {
  const int lane = threadIdx.x & 31;
  for (int slot0 = 0; slot0 < N; slot0 += 32) {
    const int slot = slot0 + lane;
    fmt::Affine a;
    if (slot < N) a = fmt::load_affine(zbuf + zero_off, sbuf + scale_off, false, static_cast<size_t>(slot));
    __syncwarp();
    if (slot < N) {
      reinterpret_cast<int32_t*>(zbuf)[slot] = a.zero;
      reinterpret_cast<float*>(sbuf)[slot] = a.scale;
    }
    __syncwarp();
  }
}

__device__ inline void zs_widen(uint8_t* zbuf, uint8_t* sbuf, const ZsStaged& st, int N, const int32_t** zero,
                                const float** scale) {
  if (st.wide) {
    *zero = reinterpret_cast<const int32_t*>(zbuf + st.zero_off);
    *scale = reinterpret_cast<const float*>(sbuf + st.scale_off);
    return;
  }
  zs_widen_compact(zbuf, sbuf, st.zero_off, st.scale_off, N);
  *zero = reinterpret_cast<const int32_t*>(zbuf);
  *scale = reinterpret_cast<const float*>(sbuf);
}

}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_ATTENTION_ZS_STAGE_CUH
