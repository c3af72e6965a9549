// The KV-dump layout written by scripts/kv_dump/dump_kv.py (data/README.md):
// layer.{L}.k / layer.{L}.v float16 [T, n_kv_heads, head_dim] (post-RoPE K),
// layer.{L}.q float16 [Tq, n_q_heads, head_dim] = the queries of positions T-Tq..T-1.
#ifndef PACKKV_EVAL_KV_DUMP_H
#define PACKKV_EVAL_KV_DUMP_H

#include <stdint.h>

#include <map>
#include <string>
#include <vector>

namespace packkv_eval {

/** One attention layer of a dump. k, v and q keep the fp16 bit patterns (so they can
 *  be appended to a cache unchanged); kd, vd and qd hold the same values as double. */
struct DumpLayer {
  int index = 0;                 // layer number L in the model
  std::vector<uint16_t> k, v;    // [T][n_kv_heads][head_dim], fp16 bits
  std::vector<uint16_t> q;       // [Tq][n_q_heads][head_dim], fp16 bits
  std::vector<double> kd, vd, qd;
};

/** A KV dump: the layers in increasing layer order and the shapes they share. */
struct KvDump {
  std::string path;
  std::map<std::string, std::string> metadata;
  int n_tokens = 0;     // T
  int n_kv_heads = 0;
  int head_dim = 0;
  int n_q_heads = 0;
  int n_queries = 0;    // Tq; query i sits at position T - Tq + i
  std::vector<DumpLayer> layers;

  /** Values per token of K (or V): n_kv_heads * head_dim. */
  int row() const { return n_kv_heads * head_dim; }
};

/** Loads a dump. `layer_filter` (may be empty: all layers) keeps only the listed
 *  layer numbers. Throws std::runtime_error on a missing tensor, a dtype other than
 *  F16, inconsistent shapes, a query count larger than T, or a q head count that is
 *  not a multiple of the KV head count. */
KvDump load_kv_dump(const std::string& path, const std::vector<int>& layer_filter = {});

}  // namespace packkv_eval

#endif  // PACKKV_EVAL_KV_DUMP_H
