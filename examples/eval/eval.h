// The evaluation engine of packkv-eval: replays a KV dump into every method's cache
// as an inference engine would (a prefill of the first T - Tq tokens, then Tq
// single-token decode steps; at each step the token's K/V is appended first and the
// dump's query for that position then attends to every cached token, itself
// included) and measures errors against a float64 reference on the original fp16
// K/V.
#ifndef PACKKV_EVAL_EVAL_H
#define PACKKV_EVAL_EVAL_H

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "baselines.h"
#include "kv_dump.h"
#include "metrics.h"

namespace packkv_eval {

/** Results for one tensor (K or V) of one layer (or of all layers summed). */
struct TensorResult {
  ByteCount bytes;  // at the end of the replay (all T tokens cached)
  RelL2 x_err;      // the tensor reconstructed from the cache vs the original, all T tokens
  RelL2 out_err;    // attention output with only this tensor compressed (the other exact)
};

/** Results of one method on one layer (or the sum over layers). */
struct LayerResult {
  int layer = -1;       // -1 for the total
  TensorResult k, v;
  RelL2 score_err;      // raw scores q.k of every cached token (depends on K only)
  RelL2 out_err;        // attention output with K and V both compressed
  std::map<std::string, long long> cache_stats;  // PackKV: packkv_cache_stats fields at the end
  LayerResult& operator+=(const LayerResult& o);
};

/** The PackKV cache configuration (see packkv_cache_params_t). */
struct PackkvConfig {
  float rel_scale_k = 0.035f;  // the library's defaults (packkv.h)
  float rel_scale_v = 0.07f;
  int repack = 1;       // PACKKV_REPACK_*
  int granularity = 0;  // PACKKV_SCALE_*
  int block_tokens = 64;
  int residual_tokens = 64;
  int zs_format = 0;    // PACKKV_ZS_* (0: compact)
  int k_transform = 0;  // PACKKV_K_TRANSFORM_*
};

/** One method to evaluate. */
struct MethodSpec {
  enum Kind { kPackkv, kFp8, kKivi } kind = kPackkv;
  int bits = 0;          // KIVI-b
  int sink_tokens = 0;   // every method: the first tokens of the sequence kept exact (fp16)
  PackkvConfig packkv;   // PackKV
  /** "packkv", "fp8-e4m3", "kivi-2", ... */
  std::string name() const;
};

/** A method's results: per layer and in total. */
struct MethodResult {
  MethodSpec spec;
  std::vector<LayerResult> layers;
  LayerResult total;
  int bits_k = 0, bits_v = 0;  // PackKV: code widths the library derived
};

/** Replay options. */
struct RunOptions {
  int stride = 1;            // evaluate attention at every stride-th decode step (and the last)
  bool joint = true;         // also measure the output with K and V both compressed
  std::function<void(const std::string&)> progress;  // optional progress messages
};

/** Runs every method over every layer of the dump. Throws std::runtime_error with
 *  the library's message if a libpackkv call fails. */
std::vector<MethodResult> run_methods(const KvDump& dump, const std::vector<MethodSpec>& methods,
                                      const RunOptions& options);

/** PackKV's ratio compared with one baseline at the baseline's attention-output error. */
struct EqualErrorMatch {
  std::string baseline;          // "kivi-2", ...
  double baseline_error = 0.0;   // its output error (this tensor compressed only)
  double baseline_ratio = 0.0;   // all-in
  double baseline_cratio = 0.0;  // compressed part only
  std::optional<double> packkv_ratio;   // PackKV all-in ratio at that error (interpolated)
  std::optional<double> packkv_cratio;  // PackKV compressed-part ratio at that error
  std::optional<double> gain() const;   // packkv_ratio / baseline_ratio
  std::optional<double> cgain() const;  // packkv_cratio / baseline_cratio
};

/** Results of --sweep: the curves and the equal-error comparison for K and for V. */
struct SweepResult {
  std::vector<float> r_grid;
  std::vector<MethodResult> packkv;  // one per r (r_K = r_V = r)
  std::vector<MethodResult> kivi;    // KIVI-b, b = 1..8
  MethodResult fp8;
  std::vector<EqualErrorMatch> k_matches, v_matches;  // vs every KIVI-b and fp8
};

/** Runs the sweep: PackKV with the given base configuration at r_K = r_V = r for
 *  every r of r_grid, KIVI-b for b = 1..8, fp8. "K curve" = (all-in K ratio,
 *  attention-output error with only K compressed, V exact); "V curve" likewise. */
SweepResult run_sweep(const KvDump& dump, const PackkvConfig& base, int sink_tokens, const std::vector<float>& r_grid,
                      const RunOptions& options);

/** One row of --levers: a PackKV configuration (a lever set on or off), its results at
 *  the given settings, and its sweep against KIVI / fp8 with the same sink tokens. */
struct LeverResult {
  std::string name;     // "v1: wide z/s, no sinks", ...
  MethodSpec spec;      // PackKV at the report's r_K, r_V
  MethodResult result;  // at those settings
  SweepResult sweep;    // equal-error comparison (baselines keep the same sink tokens exact)
};

/** Runs the levers one after another from the version-1 format: wide z/s and no sink
 *  tokens; compact z/s; compact z/s with 1 and with 4 sink tokens; wide z/s with 4 sink
 *  tokens; K centring with compact z/s, without and with 4 sink tokens. */
std::vector<LeverResult> run_levers(const KvDump& dump, const PackkvConfig& base, const std::vector<float>& r_grid,
                                    const RunOptions& options);

}  // namespace packkv_eval

#endif  // PACKKV_EVAL_EVAL_H
