// The baselines that packkv-eval compares PackKV against (DESIGN.md, "Baselines"),
// as fake-quantization simulations with exact byte counts:
//  * fp8 e4m3 with one fp32 scale per KV head of the layer tensor (scale = amax/448,
//    amax over every token of the dump: a calibrated static scale as vLLM uses);
//    every token is stored in fp8 (no fp16 window).
//  * KIVI-b: K quantized per channel over groups of 32 tokens, V per token over groups
//    of 32 channels (within a head), asymmetric min/max with 2^b levels
//    (scale = (max - min) / (2^b - 1), code = round-half-even((x - min) / scale)),
//    fp16 scale and fp16 zero (= min) per group, and a window of recent tokens kept in
//    fp16: whenever the window holds >= residual + 32 tokens its oldest 32 tokens are
//    quantized (the same flush rule as the packkv cache, with 32-token groups).
#ifndef PACKKV_EVAL_BASELINES_H
#define PACKKV_EVAL_BASELINES_H

#include <stdint.h>

#include <vector>

namespace packkv_eval {

/** Bytes of one tensor (K or V) of one layer under some storage method. "all-in" is
 *  payload + metadata + residual; the fp16 baseline is fp16. */
struct ByteCount {
  int64_t fp16 = 0;            // the tensor in fp16 (2 bytes per value)
  int64_t payload = 0;         // codes / packed tiles
  int64_t metadata = 0;        // scales, zero points, indexes, permutations (shares of)
  int64_t residual = 0;        // uncompressed recent tokens
  int64_t compressed_fp16 = 0; // fp16 bytes of the tokens that are stored compressed

  int64_t all_in() const { return payload + metadata + residual; }
  /** fp16 / all-in bytes. */
  double ratio() const { return all_in() > 0 ? (double)fp16 / (double)all_in() : 0.0; }
  /** Ratio of the compressed part only (the PackKV paper's CR, no residual window). */
  double compressed_ratio() const {
    return payload + metadata > 0 ? (double)compressed_fp16 / (double)(payload + metadata) : 0.0;
  }
  ByteCount& operator+=(const ByteCount& o);
};

/** Tokens stored compressed after a sequence of n tokens was appended (in any
 *  chunking) to a cache that flushes its oldest `group` tokens whenever its window
 *  holds >= residual + group tokens: group * floor(max(0, n - residual) / group). */
int64_t flushed_tokens(int64_t n, int group, int residual);

/** fp8 e4m3 with a per-head scale: fills xhat ([T][H][D], like x) with the
 *  dequantized values and scales[h] with amax_h / 448 (fp32; 1 for an all-zero head). */
void fp8_fake_quant(const double* x, int n_tokens, int n_heads, int head_dim, std::vector<double>& xhat,
                    std::vector<float>& scales);

/** Bytes of an fp8 tensor of n tokens: one byte per value plus a 4-byte scale per head. */
ByteCount fp8_bytes(int64_t n_tokens, int n_heads, int head_dim);

/** Group sizes and window of the KIVI baseline. */
constexpr int kKiviGroup = 32;
constexpr int kKiviResidual = 128;

/** Quantizes one group of n values (stride apart) with b-bit asymmetric min/max KIVI
 *  quantization, fp16 scale and zero, writing the dequantized values to out (same
 *  stride). A constant group reconstructs exactly (scale 0, code 0). */
void kivi_quant_group(const double* x, int n, int64_t stride, int bits, double* out);

/** KIVI-b K: per channel over 32-token groups, for the first `n_quantized` tokens
 *  (a multiple of 32); later tokens are copied unchanged. */
void kivi_fake_quant_k(const double* k, int n_tokens, int n_heads, int head_dim, int bits,
                       int64_t n_quantized, std::vector<double>& khat);

/** KIVI-b V: per token over groups of 32 channels inside each head (a last, shorter
 *  group when head_dim is not a multiple of 32), for the first n_quantized tokens. */
void kivi_fake_quant_v(const double* v, int n_tokens, int n_heads, int head_dim, int bits,
                       int64_t n_quantized, std::vector<double>& vhat);

/** Bytes of a KIVI-b tensor holding n tokens, with the window rule above:
 *  payload = ceil(quantized values * b / 8), metadata = 4 bytes (fp16 scale + zero)
 *  per group, residual = 2 bytes per value of the fp16 window. */
ByteCount kivi_bytes(int64_t n_tokens, int n_heads, int head_dim, int bits, bool is_k);

}  // namespace packkv_eval

#endif  // PACKKV_EVAL_BASELINES_H
