// Every tuning knob of the attention kernels, in one place, each with the measurement
// that set it (bench/RESULTS.md, "GPU backend (issue 4): H200"; same-run A/B tables in
// bench/results/h200-20261129-ab-*.txt). Changing a value changes performance only,
// never results: every knob is a work split, a layout choice or a register target.
//
// A/B mechanism: the knobs that are macros can be overridden at compile time, so that
// bench/gpu_run.sh ab builds a second tree with e.g. AB_FLAGS=-DPACKKV_ATTN_G4_MIN_CTAS=0
// and runs the benchmark A, B, A, B in one run. No other file defines a tuning macro.
// Host and device (included by CUDA translation units only).
#ifndef PACKKV_CUDA_ATTENTION_TUNING_H
#define PACKKV_CUDA_ATTENTION_TUNING_H

namespace packkv {
namespace cu {

// Warps per CTA (at most; fewer when shared memory does not fit, family_cudacore.cu).
// Set by design with the first kernel, not by an A/B measurement.
constexpr int kMaxWarps = 4;
// Query heads per CTA: a GQA group larger than this uses several CTAs per KV head. Set by
// the register budget of the K and V rounds (16 x G partial sums or weights per lane);
// not A/B-measured against 8.
constexpr int kMaxG = 4;

// CTAs per SM that the compressed-token splits aim for: several waves of the 6-8 resident
// CTAs, so that the last wave is a small part of the call. RESULTS.md "Second session",
// row "`92150fe` + 32 CTAs/SM": 8 per SM left a partial second wave (K.q 458 us), 32 per
// SM: 391 us.
constexpr int kSplitCtasPerSm = 32;
// SM count assumed when the device reports none.
constexpr int kDefaultSms = 132;
// Compressed-token splits per (sequence, KV head, query-head chunk): the upper bound of
// the split heuristic and the partial rows reserved per (sequence, query head).
constexpr int kMaxSplits = 32;

// Residual-window splits per (sequence, KV head) (one 16-token chunk per warp where
// possible). RESULTS.md "Third session", "Residual window (`43ebfa4`, `70557ff`)": 8 vs
// 1, same run: p.V at T <= 4K 7-30% faster, decode within the spread
// (results/h200-20261129-ab-residual-splits-5040d38.txt).
#ifndef PACKKV_ATTN_MAX_RES_SPLITS
#define PACKKV_ATTN_MAX_RES_SPLITS 8  // A/B knob (see above)
#endif
constexpr int kMaxResSplits = PACKKV_ATTN_MAX_RES_SPLITS;
static_assert(kMaxResSplits >= 1, "the residual window needs at least one split");
constexpr int kSplitsTotal = kMaxSplits + kMaxResSplits;

// V accumulation: with G = 1 query head each octet (8 lanes decoding one round) adds into
// its own accumulator row; with G >= 2 the 4 octets are summed by two shuffles into one row (less
// shared memory, so more resident warps). RESULTS.md "Second session", same-run A/B "V
// accumulation, per-group rows vs shuffles into one row": rows win at G = 1 (decode
// 915-926 vs 1010-1025 us), shuffles at G = 4 (decode 2287-2310 vs 2639-2669, p.V 968-987
// vs 1030).
#if defined(__CUDACC__)
__host__ __device__
#endif
constexpr bool v_rows(int G) { return G == 1; }

// Tensor-core family (family_tensorcore.cuh / .cu). Warps per CTA (at most; fewer when shared
// memory does not fit). Which calls it takes (tensorcore_selected): GQA group >=
// kTensorcoreMinGroup, or >= kTensorcoreMinGroupLong when the longest sequence has >=
// kTensorcoreLongTokens compressed tokens, or decode >= kTensorcoreMinGroupWindow (below);
// the CUDA-core family otherwise. RESULTS.md
// "Issue 14: tensor-core family", H100, same run, decode us (tensor-core / CUDA-core):
// BH 256 D 128 T 32K: g 1 1107 / 903, g 2 1141 / 1321, g 4 1240 / 2211, g 8 1453 / 4124;
// T 1K: g 1 96.5 / 71.7, g 2 103 / 87.2, g 4 130 / 143, g 8 169 / 244; BH 1024 D 64 T 1K:
// g 1 207 / 196, g 2 236 / 264, g 4 287 / 368, g 8 378 / 747.
constexpr int kTensorcoreMaxWarps = 4;
constexpr int kTensorcoreMinGroup = 4;
constexpr int kTensorcoreMinGroupLong = 2;
constexpr int kTensorcoreLongTokens = 8192;
// Decode with an fp16 ring whose dense window the tensor-core launch runs on mma
// (tensorcore_window.cuh; sm_90, head_dim 64/128/256): tensor cores from group 2 at any
// length. RESULTS.md "Issue 14, sixth session", run A (H100, same run, both families
// forced, decode us, tensor-core / CUDA-core): T 1K g 2: BH 256 D 128 98.1 / 104.3, BH
// 1024 D 64 214.3 / 251.1, BH 128 D 256 109.7 / 129.9; g 1 stays on CUDA cores (BH 256 D
// 128: 95.2 / 87.9).
constexpr int kTensorcoreMinGroupWindow = 2;
// Padding (words) between the rows of the tensor-core family's per-warp score/weight
// buffer [8 heads][block tokens] (tensorcore_layout.cuh). Rows N words apart (N a
// multiple of 32) put every head's token t in the same bank: the softmax lanes (32 / gp
// per head) conflicted 4-way at g 4 and 8-way at g 8 on every score and weight access,
// the p.V B-fragment loads (lane = head gid, token tig) 8-way and the score stores 4-way.
// 4 words: bank 4 h + t, conflict-free at g 8 and for the B loads, 2-way at g 4 and for
// the stores (1 register more at head_dim 256, 16 spill bytes more at head_dim 64 outside
// the round loops, nvcc 13.0 sm_90). Default 0 (the layout the GPU suite ran): 4 is
// compiled here but NOT measured nor run on a GPU yet (RESULTS.md "Issue 14, sixth
// session": the session's second device run was cancelled). A/B: bench/gpu_run.sh ab with
// AB_FLAGS=-DPACKKV_TC_SC_PAD=4, and its GPU suite, before changing the default.
#ifndef PACKKV_TC_SC_PAD
#define PACKKV_TC_SC_PAD 0  // A/B knob (see above)
#endif
constexpr int kTcScPad = PACKKV_TC_SC_PAD;
// Register target of the tensor-core decode kernel at head_dim 32 and 64 (DT): the
// minimum resident CTAs given to __launch_bounds__ (0: none, ptxas chooses). Without it
// decode takes 123-128 registers at head_dim 64 (4 CTAs of 4 warps) while shared memory
// allows 5; with 5 it takes 96 (68 bytes of spills, nvcc 13.0 sm_90). RESULTS.md "Issue
// 14 on the H100: one launch for short calls, warps per CTA by grid": decode 5 vs none,
// same run, BH 1024 D 64: T 1K g 4 292-294 vs 322-338 us, g 8 414-433 vs 444-447 (run 1,
// residual fused); T 32K g 4 3142-3150 vs 3196-3257 (run 2, not fused). Scores and apply
// keep no target: with it they were 8-12% slower at BH 1024, T 32K, D 64 (run 2).
#ifndef PACKKV_TC_MIN_CTAS_SMALL_D
#define PACKKV_TC_MIN_CTAS_SMALL_D 5  // A/B knob (see above)
#endif
#if defined(__CUDACC__)
__host__ __device__
#endif
constexpr int tensorcore_min_ctas(bool softmax, int DT) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  return 0;  // sm_80: not measured (ptxas spills 20 bytes at head_dim 64 with the target)
#else
  return softmax && (DT == 32 || DT == 64) ? PACKKV_TC_MIN_CTAS_SMALL_D : 0;
#endif
}
// The tensor-core decode launch at head_dim 64/128/256 (family_tensorcore.cuh,
// tensorcore_fuses) runs the residual splits itself (as extra CTAs, first in the linear
// CTA order) when its ring is fp16 (mma window, tensorcore_window.cuh) or its CTAs have
// at least the CUDA-core plan's warps (so a residual_window warp covers no more of the
// window than on the CUDA-core kernel); otherwise the residual splits run on the
// CUDA-core kernel in a second launch. RESULTS.md "Issue 14 on the
// H100: one launch for short calls, warps per CTA by grid", same run, decode fused /
// second launch: BH 256 T 1K D 128 g 4 131-132 vs 153-154 us, BH 1024 T 1K D 64 g 4
// 255-272 vs 333-350, Llama-3-8B batch 1 T 1K 35.2 vs 54.6, batch 32 126.5 vs 149.4; T >=
// 32K within 2%. sm_90 code only (family_tensorcore.cuh: at sm_80 the residual path made
// ptxas spill, and no sm_80 GPU measured it). A/B knob: 0 never fuses (the kernel is then
// compiled without the residual path).
#ifndef PACKKV_TC_FUSE_RESIDUAL
#define PACKKV_TC_FUSE_RESIDUAL 1  // A/B knob (see above)
#endif
constexpr bool kTensorcoreFuseResidual = PACKKV_TC_FUSE_RESIDUAL != 0;

// Register targets: the minimum resident CTAs per SM given to __launch_bounds__ (0: none,
// ptxas chooses). Indexed by the variant's role (scores, apply, decode) and G.
//  - apply, G = 1: 8 CTAs (64 registers), its count before the residual-window loads were
//    batched; ptxas picks 64 without the target too since then (commit 5040d38). With
//    nvcc 13.0 it spills 16 bytes on sm_90, 40 on sm_80 (tuned on the H200 only).
//  - scores and apply, G = 4: 4 CTAs (128 registers, ptxas alone takes 156-161).
//    RESULTS.md "Third session", "Register target for G = 4 (`d9d1c9d`)": K.q and p.V
//    5-20% faster at every g = 4 shape, same run (results/h200-20261129-ab-g4-min-ctas-70557ff.txt).
//  - decode, G = 4: none (spilled at 128 and was slower at head_dim 128, same entry).
//  - decode, G = 1: none; 80 registers tried: RESULTS.md "Decode with G = 1 at 80 registers"
//    (headline 1137-1140 vs 911-920 us; results/h200-20261129-ab-decode1-registers-9b2c926.txt).
//  - targets for every variant (8/6/4/3 CTAs for G = 1/2/4): RESULTS.md "Second session",
//    "ptxas register targets ... vs none": K.q 420-426 vs 401-403 us, decode 1150-1162 vs
//    918-921. Dropped.
#ifndef PACKKV_ATTN_G4_MIN_CTAS
#define PACKKV_ATTN_G4_MIN_CTAS 4  // A/B knob (see above)
#endif
constexpr int kMinCtasApplyG1 = 8;
//  - scores, G = 1: 7 CTAs (72 registers, 8 bytes of spills on sm_90), main's count before
//    the sixth session moved the K vote after the rounds (ptxas then took 96 registers and
//    K.q at the headline shape went from 405 to 428 us, H100 run A of that session; the
//    target itself is unmeasured on a GPU).
constexpr int kMinCtasScoresG1 = 7;
constexpr int kMinCtasG4ScoresApply = PACKKV_ATTN_G4_MIN_CTAS;

// Decode with 1-2 query heads on the CUDA-core family: a fast block loop without the
// near-fp32-limit rare paths, the rare block redone after it (family_cudacore.cuh). RESULTS.md
// "Issue 14, sixth session: CUDA-core family", run A (H100, same run, 256 x 32K x 128, g 1):
// the new loop with the rare paths inline 1028 / 1022 us, without them 890 / 893 (main 1153 /
// 1143). A/B knob: 0 keeps one loop with the rare code inline. Default 0 until measured: the
// two-path loop (1) was written after that run and has not run on a GPU (no device time was
// left in the sixth session); 0 is the form closest to run A's GPU-tested loop (X3: rare code
// inline, bulk staging, 984 / 993 us, GPU suite passed). Set 1 after the GPU suite passes with it.
#ifndef PACKKV_ATTN_TWO_PATHS
#define PACKKV_ATTN_TWO_PATHS 0  // A/B knob (see above)
#endif
constexpr bool kDecodeTwoPaths = PACKKV_ATTN_TWO_PATHS != 0;

// Staging of a block in the CUDA-core decode kernel on sm_90 (family_cudacore.cuh, decode
// with one query head): one lane issues bulk (TMA) copies of the K tile, the V tile
// and the block's compact zero points and scales, completing on the warp's mbarrier, instead
// of 16-byte cp.async copies by every lane. RESULTS.md "Issue 14, sixth session: CUDA-core
// family", run A (H100, same run, 256 x 32K x 128, g 1, rare paths inline): 984 / 993 us
// against 1028 / 1022 with cp.async; 256 x 1K: equal. A/B knob: 0 stages with cp.async.
#ifndef PACKKV_ATTN_BULK_STAGE
#define PACKKV_ATTN_BULK_STAGE 1  // A/B knob (see above)
#endif
constexpr bool kBulkStaging = PACKKV_ATTN_BULK_STAGE != 0;

}  // namespace cu
}  // namespace packkv

#endif  // PACKKV_CUDA_ATTENTION_TUNING_H
