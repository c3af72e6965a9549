#include "report.h"

#include <cmath>

#include "packkv/packkv.h"

namespace packkv_eval {

const char* repack_name(int repack) {
  switch (repack) {
    case PACKKV_REPACK_NONE: return "none";
    case PACKKV_REPACK_MEDIAN: return "median";
    case PACKKV_REPACK_GREEDY: return "greedy";
  }
  return "?";
}

const char* granularity_name(int granularity) {
  return granularity == PACKKV_SCALE_PER_TOKEN_HEAD ? "token-head" : "token";
}

namespace {

const char* kByteSplit =
    "all-in bytes = payload + metadata + residual window. PackKV (from packkv_cache_stats): "
    "K = k_tile + k_scale + index/2 + perm/2 + residual/2, V = v_tile + v_scale + index/2 + perm/2 + "
    "residual/2 (the block index and the repacking permutation are shared by K and V and split in half; "
    "the residual window holds K and V of the same tokens). fp8: 1 byte/value + 4-byte fp32 scale per head, "
    "no window. KIVI-b: b bits per code (total rounded up to a byte) + 4 bytes (fp16 scale + zero) per "
    "32-value group + the fp16 window (128..159 tokens).";

const char* kErrors =
    "errors are relative L2, sqrt(sum err^2 / sum ref^2), over all decode steps, query heads and "
    "tokens/channels, against a float64 reference on the original fp16 K/V. K err / V err: the cache "
    "reconstructed after the last step (packkv_cache_decompress for PackKV). score err: raw q.k of every "
    "cached token. out(K): attention output softmax(q.K^T/sqrt(d)).V with only K compressed (V exact); "
    "out(V): only V compressed (reference probabilities); out(KV): both compressed "
    "(packkv_attn_decode for PackKV).";

std::string label(const MethodResult& m) {
  if (m.spec.kind != MethodSpec::kPackkv) return m.spec.name();
  char buf[64];
  std::snprintf(buf, sizeof buf, "packkv(K%db,V%db)", m.bits_k, m.bits_v);
  return buf;
}

void print_row(std::FILE* out, const std::string& method, const std::string& layer, const LayerResult& r) {
  ByteCount kv = r.k.bytes;
  kv += r.v.bytes;
  std::fprintf(out,
               "%-17s %5s | %9lld %8lld %6.2f %8.2e %8.2e %8.2e | %9lld %8lld %6.2f %8.2e %8.2e | %6.2f %8.2e\n",
               method.c_str(), layer.c_str(), (long long)r.k.bytes.fp16, (long long)r.k.bytes.all_in(),
               r.k.bytes.ratio(), r.k.x_err.value(), r.score_err.value(), r.k.out_err.value(),
               (long long)r.v.bytes.fp16, (long long)r.v.bytes.all_in(), r.v.bytes.ratio(), r.v.x_err.value(),
               r.v.out_err.value(), kv.ratio(), r.out_err.value());
}

std::string fmt_opt(const std::optional<double>& v, const char* f) {
  if (!v) return "n/a";
  char buf[32];
  std::snprintf(buf, sizeof buf, f, *v);
  return buf;
}

void print_sweep(std::FILE* out, const SweepResult& sw) {
  for (int kv = 0; kv < 2; ++kv) {
    const char* X = kv == 0 ? "K" : "V";
    std::fprintf(out, "\n%s curve: only %s compressed (the other exact); ratio = %s all-in (compressed part only)\n", X,
                 X, X);
    std::fprintf(out, "%-10s %-8s %7s %8s %9s\n", "method", "param", "ratio", "(cmp)", "out err");
    auto line = [&](const std::string& m, const std::string& p, const MethodResult& r) {
      const TensorResult& t = kv == 0 ? r.total.k : r.total.v;
      std::fprintf(out, "%-10s %-8s %7.3f %8.3f %9.3e\n", m.c_str(), p.c_str(), t.bytes.ratio(),
                   t.bytes.compressed_ratio(), t.out_err.value());
    };
    for (size_t i = 0; i < sw.packkv.size(); ++i) {
      char p[32];
      const MethodResult& m = sw.packkv[i];
      std::snprintf(p, sizeof p, "r=%.3g", (double)sw.r_grid[i]);
      line("packkv", p, m);
    }
    for (const auto& m : sw.kivi) line("kivi", std::to_string(m.spec.bits) + "-bit", m);
    line("fp8-e4m3", "", sw.fp8);
  }
  std::fprintf(out,
               "\nEqual attention-output error: PackKV's ratio interpolated (log ratio vs log error, piecewise "
               "linear)\nat each baseline's error; gain = PackKV ratio / baseline ratio (all-in; in brackets: "
               "compressed part only)\n");
  std::fprintf(out, "%-6s %-9s %9s %8s %8s %7s | %8s %8s %7s\n", "tensor", "baseline", "error", "base", "packkv",
               "gain", "base", "packkv", "gain");
  for (int kv = 0; kv < 2; ++kv)
    for (const auto& m : kv == 0 ? sw.k_matches : sw.v_matches)
      std::fprintf(out, "%-6s %-9s %9.3e %8.3f %8s %7s | %8.3f %8s %7s\n", kv == 0 ? "K" : "V", m.baseline.c_str(),
                   m.baseline_error, m.baseline_ratio, fmt_opt(m.packkv_ratio, "%.3f").c_str(),
                   fmt_opt(m.gain(), "%.3f").c_str(), m.baseline_cratio,
                   fmt_opt(m.packkv_cratio, "%.3f").c_str(), fmt_opt(m.cgain(), "%.3f").c_str());
}

// The --levers table: one row per lever at the report's settings, and its gains over
// KIVI-2 / KIVI-4 at equal attention-output error (all-in), for K and for V.
void print_levers(std::FILE* out, const std::vector<LeverResult>& levers) {
  std::fprintf(out,
               "\nLevers (PackKV at the settings above; KIVI and fp8 keep the same sink tokens exact in the gain "
               "columns)\n");
  std::fprintf(out, "%-26s | %9s %6s %8s | %9s %6s %8s | %8s | %-21s | %-21s\n", "lever", "K bytes", "ratio", "out(K)",
               "V bytes", "ratio", "out(V)", "out(KV)", "K gain vs KIVI-2/4", "V gain vs KIVI-2/4");
  auto gain = [](const std::vector<EqualErrorMatch>& ms, const char* b) {
    for (const auto& m : ms)
      if (m.baseline == b) return fmt_opt(m.gain(), "%.3f");
    return std::string("n/a");
  };
  for (const auto& l : levers) {
    const LayerResult& t = l.result.total;
    std::fprintf(out, "%-26s | %9lld %6.3f %8.2e | %9lld %6.3f %8.2e | %8.2e | %9s / %9s | %9s / %9s\n",
                 l.name.c_str(), (long long)t.k.bytes.all_in(), t.k.bytes.ratio(), t.k.out_err.value(),
                 (long long)t.v.bytes.all_in(), t.v.bytes.ratio(), t.v.out_err.value(), t.out_err.value(),
                 gain(l.sweep.k_matches, "kivi-2").c_str(), gain(l.sweep.k_matches, "kivi-4").c_str(),
                 gain(l.sweep.v_matches, "kivi-2").c_str(), gain(l.sweep.v_matches, "kivi-4").c_str());
  }
}

nlohmann::json bytes_json(const ByteCount& b) {
  return {{"fp16", b.fp16},         {"all_in", b.all_in()},           {"payload", b.payload},
          {"metadata", b.metadata}, {"residual", b.residual},         {"compressed_fp16", b.compressed_fp16},
          {"ratio", b.ratio()},     {"compressed_ratio", b.compressed_ratio()}};
}

nlohmann::json layer_json(const LayerResult& r) {
  nlohmann::json j;
  if (r.layer >= 0) j["layer"] = r.layer;
  ByteCount kv = r.k.bytes;
  kv += r.v.bytes;
  j["k"] = {{"bytes", bytes_json(r.k.bytes)},
            {"k_err", r.k.x_err.value()},
            {"score_err", r.score_err.value()},
            {"out_err_k_only", r.k.out_err.value()}};
  j["v"] = {{"bytes", bytes_json(r.v.bytes)}, {"v_err", r.v.x_err.value()}, {"out_err_v_only", r.v.out_err.value()}};
  j["kv"] = {{"bytes", bytes_json(kv)}, {"out_err", r.out_err.value()}};
  if (!r.cache_stats.empty()) j["cache_stats"] = r.cache_stats;
  return j;
}

nlohmann::json method_json(const MethodResult& m) {
  nlohmann::json j;
  j["method"] = m.spec.name();
  if (m.spec.kind == MethodSpec::kPackkv) {
    const PackkvConfig& c = m.spec.packkv;
    j["params"] = {{"rel_scale_k", c.rel_scale_k}, {"rel_scale_v", c.rel_scale_v},
                   {"bits_k", m.bits_k},           {"bits_v", m.bits_v},
                   {"repack", repack_name(c.repack)}, {"granularity", granularity_name(c.granularity)},
                   {"block_tokens", c.block_tokens},  {"residual_tokens", c.residual_tokens},
                   {"zs_format", c.zs_format == PACKKV_ZS_WIDE ? "wide" : "compact"},
                   {"k_transform", c.k_transform == PACKKV_K_TRANSFORM_CENTER ? "center" : "none"}};
  } else if (m.spec.kind == MethodSpec::kKivi) {
    j["params"] = {{"bits", m.spec.bits}, {"group", kKiviGroup}, {"residual_tokens", kKiviResidual}};
  } else {
    j["params"] = {{"scale", "fp32 amax/448 per KV head"}};
  }
  j["params"]["sink_tokens"] = m.spec.sink_tokens;
  j["layers"] = nlohmann::json::array();
  for (const auto& l : m.layers) j["layers"].push_back(layer_json(l));
  j["total"] = layer_json(m.total);
  return j;
}

nlohmann::json sweep_json(const SweepResult& sw) {
  nlohmann::json s;
  s["r_grid"] = sw.r_grid;
  s["packkv"] = nlohmann::json::array();
  for (const auto& m : sw.packkv) s["packkv"].push_back(method_json(m));
  s["kivi"] = nlohmann::json::array();
  for (const auto& m : sw.kivi) s["kivi"].push_back(method_json(m));
  s["fp8"] = method_json(sw.fp8);
  auto opt = [](const std::optional<double>& v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); };
  for (int kv = 0; kv < 2; ++kv) {
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& m : kv == 0 ? sw.k_matches : sw.v_matches)
      arr.push_back({{"baseline", m.baseline},
                     {"baseline_out_err", m.baseline_error},
                     {"baseline_ratio", m.baseline_ratio},
                     {"baseline_compressed_ratio", m.baseline_cratio},
                     {"packkv_ratio", opt(m.packkv_ratio)},
                     {"packkv_compressed_ratio", opt(m.packkv_cratio)},
                     {"gain", opt(m.gain())},
                     {"compressed_gain", opt(m.cgain())}});
    s[kv == 0 ? "k_equal_error" : "v_equal_error"] = arr;
  }
  return s;
}

}  // namespace

void print_text(std::FILE* out, const Report& r) {
  const KvDump& d = *r.dump;
  auto meta = [&](const char* k) {
    auto it = d.metadata.find(k);
    return it == d.metadata.end() ? std::string("?") : it->second;
  };
  std::fprintf(out, "packkv-eval %s: %s\n", packkv_version_string(), d.path.c_str());
  std::fprintf(out, "  model %s; T=%d tokens, %zu layers, %d KV heads x %d, %d query heads\n",
               meta("model").c_str(), d.n_tokens, d.layers.size(), d.n_kv_heads, d.head_dim, d.n_q_heads);
  std::fprintf(out, "  replay: prefill %d tokens, then %d decode steps (append, then attend; attention evaluated every %d step%s)\n",
               d.n_tokens - d.n_queries, d.n_queries, r.stride, r.stride == 1 ? "" : "s");
  const PackkvConfig& c = r.packkv;
  std::fprintf(out, "  packkv: r_K=%g r_V=%g repack=%s granularity=%s block=%d residual=%d z/s=%s (CPU cache, kv_dtype f16)\n",
               (double)c.rel_scale_k, (double)c.rel_scale_v, repack_name(c.repack), granularity_name(c.granularity),
               c.block_tokens, c.residual_tokens, c.zs_format == PACKKV_ZS_WIDE ? "wide" : "compact");
  std::fprintf(out, "  sink tokens: the first %d tokens kept exact (fp16) by every method\n\n", r.sink_tokens);
  std::fprintf(out, "%-17s %5s | %-55s | %-46s | %-15s\n", "", "", "K", "V", "K+V");
  std::fprintf(out, "%-17s %5s | %9s %8s %6s %8s %8s %8s | %9s %8s %6s %8s %8s | %6s %8s\n", "method", "layer",
               "fp16 B", "bytes", "ratio", "K err", "score", "out(K)", "fp16 B", "bytes", "ratio", "V err", "out(V)",
               "ratio", "out(KV)");
  for (const auto& m : r.table) {
    for (const auto& l : m.layers) print_row(out, label(m), std::to_string(l.layer), l);
    print_row(out, label(m), "all", m.total);
  }
  std::fprintf(out, "\nbytes: %s\nerrors: %s\n", kByteSplit, kErrors);
  if (r.sweep) print_sweep(out, *r.sweep);
  if (!r.levers.empty()) print_levers(out, r.levers);
}

nlohmann::json to_json(const Report& r) {
  const KvDump& d = *r.dump;
  nlohmann::json j;
  j["tool"] = "packkv-eval";
  j["libpackkv_version"] = packkv_version_string();
  j["command"] = r.command;
  j["data"] = {{"path", d.path},
               {"metadata", d.metadata},
               {"n_tokens", d.n_tokens},
               {"n_kv_heads", d.n_kv_heads},
               {"head_dim", d.head_dim},
               {"n_q_heads", d.n_q_heads},
               {"n_decode_steps", d.n_queries},
               {"n_prefill", d.n_tokens - d.n_queries},
               {"layers", nlohmann::json::array()}};
  for (const auto& l : d.layers) j["data"]["layers"].push_back(l.index);
  j["stride"] = r.stride;
  j["byte_split"] = kByteSplit;
  j["errors"] = kErrors;
  j["methods"] = nlohmann::json::array();
  for (const auto& m : r.table) j["methods"].push_back(method_json(m));
  if (!r.levers.empty()) {
    j["levers"] = nlohmann::json::array();
    for (const auto& l : r.levers)
      j["levers"].push_back({{"lever", l.name}, {"method", method_json(l.result)}, {"sweep", sweep_json(l.sweep)}});
  }
  if (r.sweep) j["sweep"] = sweep_json(*r.sweep);
  return j;
}

}  // namespace packkv_eval
