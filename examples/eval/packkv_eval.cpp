// packkv-eval: replays a real KV dump (scripts/kv_dump) into a libpackkv cache as an
// inference engine would and reports, per layer and in total, separately for K and V,
// the fp16 and all-in compressed bytes, the ratio, and the relative L2 errors of K, V,
// attention scores and attention output with the dump's real queries; the same for
// fp8 e4m3 (per-head scale), KIVI-2 and KIVI-4. --sweep adds the error-ratio curves and
// PackKV's ratio over KIVI's at equal attention-output error.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <sstream>
#include <string>
#include <vector>

#include "eval.h"
#include "kv_dump.h"
#include "packkv/packkv.h"
#include "report.h"

#ifndef PACKKV_DATA_DIR
#define PACKKV_DATA_DIR "data"
#endif

namespace {

using namespace packkv_eval;

const char* kDefaultData = PACKKV_DATA_DIR "/smollm2_kv_sample.safetensors";

void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: packkv-eval [options]\n"
               "Replays a KV dump into a packkv cache (prefill, then one-token decode steps with the\n"
               "dump's queries) and compares PackKV with fp8 e4m3, KIVI-2 and KIVI-4.\n\n"
               "  --data PATH          safetensors KV dump (default: %s)\n"
               "  --rk R               PackKV relative scale of K (default 0.035)\n"
               "  --rv R               PackKV relative scale of V (default 0.07)\n"
               "  --repack M           none | median | greedy (default median)\n"
               "  --granularity G      token | token-head: one (z, s) per token, or per token and KV head\n"
               "                       (default token)\n"
               "  --block N            tokens per compressed block, multiple of 16 in [16, 256] (default 64)\n"
               "  --residual N         tokens kept uncompressed after a flush (default 64)\n"
               "  --sinks N            the first N tokens kept exact (fp16) by every method: PackKV's\n"
               "                       sink_tokens, and the baselines likewise (default 4)\n"
               "  --zs F               compact | wide: PackKV zero point and scale fields (default compact)\n"
               "  --k-center           PackKV centres K per channel on each sequence's first block\n"
               "  --levers             also the levers table: PackKV from the version-1 format (wide z/s,\n"
               "                       no sinks) through compact z/s and 1 / 4 sink tokens, each with its\n"
               "                       bytes and errors at the given settings and its ratio over KIVI-b\n"
               "                       and fp8 (same sink tokens) at equal attention-output error\n"
               "  --layers L,L,...     only these layers of the dump (default all)\n"
               "  --stride N           evaluate attention at every N-th decode step (default 1: all)\n"
               "  --sweep              also the error-ratio curves: PackKV at r_K = r_V = r for every r of\n"
               "                       --sweep-r, KIVI-b for b = 1..8, fp8; and PackKV's ratio over each\n"
               "                       baseline's at equal attention-output error, for K and for V\n"
               "  --sweep-r R,R,...    the r grid (default 0.02,0.03,0.05,0.07,0.1,0.14,0.2,0.28,0.4,0.55,0.75,1)\n"
               "  --json               machine-readable output on stdout (progress stays on stderr)\n"
               "  --quiet              no progress messages on stderr\n"
               "  -h, --help           this text\n\n"
               "JSON: {tool, libpackkv_version, command, data{path, metadata, n_tokens, ...}, stride,\n"
               "byte_split, errors, methods[{method, params, layers[{layer, k{bytes{fp16, all_in, payload,\n"
               "metadata, residual, compressed_fp16, ratio, compressed_ratio}, k_err, score_err,\n"
               "out_err_k_only}, v{bytes, v_err, out_err_v_only}, kv{bytes, out_err}}], total{...}}],\n"
               "sweep{r_grid, packkv[...], kivi[...], fp8, k_equal_error[{baseline, baseline_out_err,\n"
               "baseline_ratio, baseline_compressed_ratio, packkv_ratio, packkv_compressed_ratio, gain,\n"
               "compressed_gain}], v_equal_error[...]}, levers[{lever, method{...}, sweep{...}}]}\n",
               kDefaultData);
}

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "packkv-eval: %s (see --help)\n", msg.c_str());
  std::exit(2);
}

/** Parses a whole string as a number, or exits with a message naming the option. */
double parse_num(const std::string& opt, const std::string& s) {
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end != '\0') die(opt + " expects a number, got '" + s + "'");
  return v;
}

int parse_int(const std::string& opt, const std::string& s) {
  double v = parse_num(opt, s);
  if (v != (double)(int)v) die(opt + " expects an integer, got '" + s + "'");
  return (int)v;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(item);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string data = kDefaultData;
  PackkvConfig cfg;
  bool sweep = false, json = false, quiet = false, levers = false;
  int stride = 1, sinks = 4;
  std::vector<int> layers;
  std::vector<float> r_grid = {0.02f, 0.03f, 0.05f, 0.07f, 0.1f, 0.14f, 0.2f, 0.28f, 0.4f, 0.55f, 0.75f, 1.0f};
  std::string command = "packkv-eval";
  for (int i = 1; i < argc; ++i) command += std::string(" ") + argv[i];

  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      usage(stdout);
      return 0;
    } else if (a == "--data") {
      data = value();
    } else if (a == "--rk") {
      cfg.rel_scale_k = (float)parse_num(a, value());
    } else if (a == "--rv") {
      cfg.rel_scale_v = (float)parse_num(a, value());
    } else if (a == "--repack") {
      const std::string m = value();
      if (m == "none") cfg.repack = PACKKV_REPACK_NONE;
      else if (m == "median") cfg.repack = PACKKV_REPACK_MEDIAN;
      else if (m == "greedy") cfg.repack = PACKKV_REPACK_GREEDY;
      else die("--repack expects none, median or greedy, got '" + m + "'");
    } else if (a == "--granularity") {
      const std::string g = value();
      if (g == "token") cfg.granularity = PACKKV_SCALE_PER_TOKEN;
      else if (g == "token-head") cfg.granularity = PACKKV_SCALE_PER_TOKEN_HEAD;
      else die("--granularity expects token or token-head, got '" + g + "'");
    } else if (a == "--block") {
      cfg.block_tokens = parse_int(a, value());
    } else if (a == "--residual") {
      cfg.residual_tokens = parse_int(a, value());
    } else if (a == "--sinks") {
      sinks = parse_int(a, value());
      if (sinks < 0) die("--sinks must be >= 0");
    } else if (a == "--zs") {
      const std::string z = value();
      if (z == "compact") cfg.zs_format = PACKKV_ZS_COMPACT;
      else if (z == "wide") cfg.zs_format = PACKKV_ZS_WIDE;
      else die("--zs expects compact or wide, got '" + z + "'");
    } else if (a == "--k-center") {
      cfg.k_transform = PACKKV_K_TRANSFORM_CENTER;
    } else if (a == "--levers") {
      levers = true;
    } else if (a == "--layers") {
      for (const auto& s : split(value())) layers.push_back(parse_int("--layers", s));
    } else if (a == "--stride") {
      stride = parse_int(a, value());
      if (stride < 1) die("--stride must be >= 1");
    } else if (a == "--sweep") {
      sweep = true;
    } else if (a == "--sweep-r") {
      r_grid.clear();
      for (const auto& s : split(value())) r_grid.push_back((float)parse_num("--sweep-r", s));
      if (r_grid.empty()) die("--sweep-r needs at least one value");
    } else if (a == "--json") {
      json = true;
    } else if (a == "--quiet") {
      quiet = true;
    } else {
      die("unknown argument '" + a + "'");
    }
  }

  try {
    KvDump dump = load_kv_dump(data, layers);
    RunOptions opt;
    opt.stride = stride;
    if (!quiet) opt.progress = [](const std::string& m) { std::fprintf(stderr, "packkv-eval: %s\n", m.c_str()); };

    std::vector<MethodSpec> specs(4);
    specs[0].kind = MethodSpec::kPackkv;
    specs[0].packkv = cfg;
    specs[1].kind = MethodSpec::kFp8;
    specs[2].kind = MethodSpec::kKivi;
    specs[2].bits = 2;
    specs[3].kind = MethodSpec::kKivi;
    specs[3].bits = 4;
    for (MethodSpec& s : specs) s.sink_tokens = sinks;

    Report rep;
    rep.dump = &dump;
    rep.command = command;
    rep.packkv = cfg;
    rep.sink_tokens = sinks;
    rep.stride = stride;
    rep.table = run_methods(dump, specs, opt);
    if (sweep) rep.sweep = run_sweep(dump, cfg, sinks, r_grid, opt);
    if (levers) rep.levers = run_levers(dump, cfg, r_grid, opt);

    if (json)
      std::printf("%s\n", to_json(rep).dump(1).c_str());
    else
      print_text(stdout, rep);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "packkv-eval: %s\n", e.what());
    return 1;
  }
  return 0;
}
