#include "eval.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <stdexcept>

#include "packkv/packkv.h"

namespace packkv_eval {

LayerResult& LayerResult::operator+=(const LayerResult& o) {
  k.bytes += o.k.bytes;
  v.bytes += o.v.bytes;
  k.x_err += o.k.x_err;
  v.x_err += o.v.x_err;
  k.out_err += o.k.out_err;
  v.out_err += o.v.out_err;
  score_err += o.score_err;
  out_err += o.out_err;
  for (const auto& [name, value] : o.cache_stats) cache_stats[name] += value;
  return *this;
}

std::string MethodSpec::name() const {
  switch (kind) {
    case kPackkv: return "packkv";
    case kFp8: return "fp8-e4m3";
    case kKivi: return "kivi-" + std::to_string(bits);
  }
  return "?";
}

std::optional<double> EqualErrorMatch::gain() const {
  if (!packkv_ratio || baseline_ratio <= 0.0) return std::nullopt;
  return *packkv_ratio / baseline_ratio;
}

std::optional<double> EqualErrorMatch::cgain() const {
  if (!packkv_cratio || baseline_cratio <= 0.0) return std::nullopt;
  return *packkv_cratio / baseline_cratio;
}

namespace {

/** Shapes and data of the layer being replayed. */
struct Ctx {
  const KvDump* dump;
  const DumpLayer* layer;
  int T, H, D, Hq, group, row, n_prefill;
  double scale;  // softmax scale 1/sqrt(head_dim)
};

/** The float64 reference of one decode step on the original K/V. */
struct StepRef {
  int n;                 // tokens cached: the query attends to 0..n-1
  const double* q;       // [Hq][D]
  const uint16_t* q16;   // the same query, fp16 bits
  const double* s;       // [Hq][n] raw scores q.k
  const double* p;       // [Hq][n] softmax(scale * s)
  const double* out;     // [Hq][D]
};

/** Dot product of two length-n vectors with four partial sums (vectorizes). */
inline double dot(const double* a, const double* b, int n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

/** out[0..D) = sum_t w[t] * x[t*row + off + c], rows t < split taken from xa, the rest from xb. */
inline void weighted_rows(const double* w, int n, int split, const double* xa, const double* xb, int row,
                          int off, int D, double* out) {
  for (int c = 0; c < D; ++c) out[c] = 0.0;
  for (int t = 0; t < n; ++t) {
    const double* x = (t < split ? xa : xb) + (size_t)t * row + off;
    const double wt = w[t];
    for (int c = 0; c < D; ++c) out[c] += wt * x[c];
  }
}

/** A method replayed over one layer at a time. */
class Method {
 public:
  explicit Method(MethodSpec spec) : spec_(std::move(spec)) {}
  virtual ~Method() = default;
  const MethodSpec& spec() const { return spec_; }
  /** Starts a layer with a prefill of c.n_prefill tokens. */
  virtual void begin_layer(const Ctx& c) = 0;
  /** Decode step i (token n_prefill + i is appended); r is null when the step is
   *  not evaluated (--stride). */
  virtual void step(const Ctx& c, int i, const StepRef* r, bool joint, LayerResult& acc) = 0;
  /** Ends the layer: bytes and K/V reconstruction errors. */
  virtual void end_layer(const Ctx& c, LayerResult& acc) = 0;
  int bits_k = 0, bits_v = 0;

 protected:
  MethodSpec spec_;
};

/** A baseline simulated by fake quantization: tokens [0, flushed(n)) read the
 *  dequantized values, later tokens the exact ones. */
class SimulatedMethod : public Method {
 public:
  using Method::Method;

  void begin_layer(const Ctx& c) override {
    const DumpLayer& L = *c.layer;
    if (spec_.kind == MethodSpec::kFp8) {
      std::vector<float> scales;
      fp8_fake_quant(L.kd.data(), c.T, c.H, c.D, khat_, scales);
      fp8_fake_quant(L.vd.data(), c.T, c.H, c.D, vhat_, scales);
    } else {
      // A token's quantized value never changes once its group is flushed, so the
      // final state serves every step (tokens past flushed(n) read exact values). The
      // groups start after the sink tokens.
      const int sk = sinks(c);
      const int64_t nq = flushed_tokens(c.T - sk, kKiviGroup, kKiviResidual);
      kivi_fake_quant_k(L.kd.data() + (size_t)sk * c.row, c.T - sk, c.H, c.D, spec_.bits, nq, khat_);
      kivi_fake_quant_v(L.vd.data() + (size_t)sk * c.row, c.T - sk, c.H, c.D, spec_.bits, nq, vhat_);
      khat_.insert(khat_.begin(), L.kd.begin(), L.kd.begin() + (ptrdiff_t)((size_t)sk * c.row));
      vhat_.insert(vhat_.begin(), L.vd.begin(), L.vd.begin() + (ptrdiff_t)((size_t)sk * c.row));
    }
    if (spec_.kind == MethodSpec::kFp8)  // sink tokens exact
      for (size_t i = 0; i < (size_t)sinks(c) * c.row; ++i) khat_[i] = L.kd[i], vhat_[i] = L.vd[i];
    s_.resize((size_t)c.T);
    p_.resize((size_t)c.T);
    out_.resize((size_t)c.D);
  }

  int sinks(const Ctx& c) const { return std::min(spec_.sink_tokens, c.T); }

  // Tokens [0, flushed(n)) read khat_ / vhat_ (which hold the sink tokens exact).
  int64_t flushed(int64_t n) const {
    const int64_t sk = std::min<int64_t>(spec_.sink_tokens, n);
    return spec_.kind == MethodSpec::kFp8 ? n : sk + flushed_tokens(n - sk, kKiviGroup, kKiviResidual);
  }

  void step(const Ctx& c, int, const StepRef* r, bool joint, LayerResult& acc) override {
    if (!r) return;
    const DumpLayer& L = *c.layer;
    const int n = r->n;
    const int f = (int)flushed(n);
    for (int h = 0; h < c.Hq; ++h) {
      const int off = (h / c.group) * c.D;
      const double* q = r->q + (size_t)h * c.D;
      const double* sref = r->s + (size_t)h * n;
      const double* pref = r->p + (size_t)h * n;
      const double* oref = r->out + (size_t)h * c.D;
      for (int t = 0; t < n; ++t) {
        const double* kr = (t < f ? khat_.data() : L.kd.data()) + (size_t)t * c.row + off;
        s_[t] = dot(q, kr, c.D);
        acc.score_err.add(sref[t], s_[t]);
      }
      softmax_inplace(p_.data(), s_.data(), n, c.scale);
      weighted_rows(p_.data(), n, 0, L.vd.data(), L.vd.data(), c.row, off, c.D, out_.data());
      for (int d = 0; d < c.D; ++d) acc.k.out_err.add(oref[d], out_[d]);
      weighted_rows(pref, n, f, vhat_.data(), L.vd.data(), c.row, off, c.D, out_.data());
      for (int d = 0; d < c.D; ++d) acc.v.out_err.add(oref[d], out_[d]);
      if (joint) {
        weighted_rows(p_.data(), n, f, vhat_.data(), L.vd.data(), c.row, off, c.D, out_.data());
        for (int d = 0; d < c.D; ++d) acc.out_err.add(oref[d], out_[d]);
      }
    }
  }

  void end_layer(const Ctx& c, LayerResult& acc) override {
    const DumpLayer& L = *c.layer;
    const size_t nf = (size_t)flushed(c.T) * c.row;
    for (size_t i = 0; i < (size_t)c.T * c.row; ++i) {
      acc.k.x_err.add(L.kd[i], i < nf ? khat_[i] : L.kd[i]);
      acc.v.x_err.add(L.vd[i], i < nf ? vhat_[i] : L.vd[i]);
    }
    const int sk = sinks(c);
    if (spec_.kind == MethodSpec::kFp8) {
      acc.k.bytes = fp8_bytes(c.T - sk, c.H, c.D);
      acc.v.bytes = fp8_bytes(c.T - sk, c.H, c.D);
    } else {
      acc.k.bytes = kivi_bytes(c.T - sk, c.H, c.D, spec_.bits, true);
      acc.v.bytes = kivi_bytes(c.T - sk, c.H, c.D, spec_.bits, false);
    }
    for (ByteCount* b : {&acc.k.bytes, &acc.v.bytes}) {  // sink tokens in fp16
      b->fp16 += 2 * (int64_t)sk * c.row;
      b->residual += 2 * (int64_t)sk * c.row;
    }
    khat_.clear();
    vhat_.clear();
  }

 private:
  std::vector<double> khat_, vhat_, s_, p_, out_;
};

/** Throws with the library's message when a libpackkv call fails. */
void check(packkv_status_t st, const char* what) {
  if (st != PACKKV_OK)
    throw std::runtime_error(std::string(what) + " failed: " + packkv_status_string(st) + ": " +
                             packkv_last_error_message());
}

/** PackKV through the public C API: one CPU cache per layer, attention computed by
 *  the library on the compressed cache. */
class PackkvMethod : public Method {
 public:
  using Method::Method;
  ~PackkvMethod() override { packkv_cache_destroy(cache_); }

  void begin_layer(const Ctx& c) override {
    packkv_cache_destroy(cache_);
    cache_ = nullptr;
    packkv_cache_params_t p;
    check(packkv_cache_params_init(&p, sizeof p), "packkv_cache_params_init");
    const PackkvConfig& k = spec_.packkv;
    p.device = -1;
    p.n_kv_heads = c.H;
    p.head_dim = c.D;
    p.max_seqs = 1;
    p.kv_dtype = PACKKV_DTYPE_F16;
    p.max_tokens_per_seq = c.T;
    p.rel_scale_k = k.rel_scale_k;
    p.rel_scale_v = k.rel_scale_v;
    p.repack = k.repack;
    p.scale_granularity = k.granularity;
    p.block_tokens = k.block_tokens;
    p.residual_tokens = k.residual_tokens;
    p.sink_tokens = spec_.sink_tokens;
    p.zs_format = k.zs_format;
    p.k_transform = k.k_transform;
    check(packkv_cache_create(&p, &cache_), "packkv_cache_create");
    packkv_cache_params_t eff;
    eff.struct_size = sizeof eff;
    check(packkv_cache_get_params(cache_, &eff), "packkv_cache_get_params");
    bits_k = eff.bits_k;
    bits_v = eff.bits_v;
    size_t ws = 0;
    check(packkv_attn_workspace_size(cache_, 1, c.Hq, &ws), "packkv_attn_workspace_size");
    workspace_.assign(ws, 0);
    scores_.resize((size_t)c.Hq * c.T);
    probs_.resize((size_t)c.Hq * c.T);
    outf_.resize((size_t)c.Hq * c.D);
    p_.resize((size_t)c.T);
    s_.resize((size_t)c.T);
    out_.resize((size_t)c.D);
    append(c, 0, c.n_prefill);
  }

  void append(const Ctx& c, int t0, int n) {
    const int32_t seq = 0, count = n;
    const size_t off = (size_t)t0 * c.row;
    check(packkv_cache_append(cache_, 1, &seq, &count, c.layer->k.data() + off, c.layer->v.data() + off,
                              PACKKV_DTYPE_F16, nullptr),
          "packkv_cache_append");
  }

  void step(const Ctx& c, int i, const StepRef* r, bool joint, LayerResult& acc) override {
    append(c, c.n_prefill + i, 1);
    if (!r) return;
    const DumpLayer& L = *c.layer;
    const int n = r->n;
    const int32_t seq = 0;
    void* ws = workspace_.empty() ? nullptr : workspace_.data();
    // Scores on the compressed K; the output with exact V from their softmax.
    check(packkv_attn_scores(cache_, 1, &seq, c.Hq, r->q16, PACKKV_DTYPE_F16, scores_.data(), c.T, ws,
                             workspace_.size(), nullptr),
          "packkv_attn_scores");
    for (int h = 0; h < c.Hq; ++h) {
      const int off = (h / c.group) * c.D;
      const float* sh = scores_.data() + (size_t)h * c.T;
      for (int t = 0; t < n; ++t) {
        s_[t] = sh[t];
        acc.score_err.add(r->s[(size_t)h * n + t], s_[t]);
      }
      softmax_inplace(p_.data(), s_.data(), n, c.scale);
      weighted_rows(p_.data(), n, 0, L.vd.data(), L.vd.data(), c.row, off, c.D, out_.data());
      for (int d = 0; d < c.D; ++d) acc.k.out_err.add(r->out[(size_t)h * c.D + d], out_[d]);
      for (int t = 0; t < n; ++t) probs_[(size_t)h * c.T + t] = (float)r->p[(size_t)h * n + t];
    }
    // The reference probabilities applied to the compressed V.
    check(packkv_attn_apply(cache_, 1, &seq, c.Hq, probs_.data(), c.T, outf_.data(), ws, workspace_.size(),
                            nullptr),
          "packkv_attn_apply");
    for (size_t j = 0; j < (size_t)c.Hq * c.D; ++j) acc.v.out_err.add(r->out[j], outf_[j]);
    if (joint) {
      // The library's complete decode attention on compressed K and V.
      check(packkv_attn_decode(cache_, 1, &seq, c.Hq, r->q16, PACKKV_DTYPE_F16, (float)c.scale, outf_.data(),
                               nullptr, ws, workspace_.size(), nullptr),
            "packkv_attn_decode");
      for (size_t j = 0; j < (size_t)c.Hq * c.D; ++j) acc.out_err.add(r->out[j], outf_[j]);
    }
  }

  void end_layer(const Ctx& c, LayerResult& acc) override {
    const DumpLayer& L = *c.layer;
    std::vector<float> k((size_t)c.T * c.row), v((size_t)c.T * c.row);
    check(packkv_cache_decompress(cache_, 0, k.data(), v.data(), c.T, nullptr), "packkv_cache_decompress");
    for (size_t i = 0; i < k.size(); ++i) {
      acc.k.x_err.add(L.kd[i], k[i]);
      acc.v.x_err.add(L.vd[i], v[i]);
    }
    packkv_cache_stats_t st;
    st.struct_size = sizeof st;
    check(packkv_cache_stats(cache_, 0, &st), "packkv_cache_stats");
    // Split of the bytes K and V share: the block index and the permutations (one
    // per block, shared by K and V) go half to K and half to V; the residual window
    // holds K and V of the same tokens in the same dtype, so it splits exactly.
    const int64_t fp16 = 2 * st.n_tokens * c.row;
    const int64_t cfp16 = 2 * st.n_compressed_tokens * c.row;
    const int64_t shared = st.index_bytes + st.perm_bytes;
    acc.k.bytes.fp16 = acc.v.bytes.fp16 = fp16;
    acc.k.bytes.compressed_fp16 = acc.v.bytes.compressed_fp16 = cfp16;
    acc.k.bytes.payload = st.k_tile_bytes;
    acc.v.bytes.payload = st.v_tile_bytes;
    acc.k.bytes.metadata = st.k_scale_bytes + shared / 2;
    acc.v.bytes.metadata = st.v_scale_bytes + (shared - shared / 2);
    acc.k.bytes.residual = st.residual_bytes / 2;
    acc.v.bytes.residual = st.residual_bytes - st.residual_bytes / 2;
    if (st.fp16_bytes != 2 * fp16 || st.n_tokens != c.T ||
        acc.k.bytes.all_in() + acc.v.bytes.all_in() != st.compressed_bytes_used + st.residual_bytes)
      throw std::runtime_error("packkv_cache_stats is inconsistent (fp16_bytes " + std::to_string(st.fp16_bytes) +
                               ", n_tokens " + std::to_string(st.n_tokens) + ")");
    acc.cache_stats = {{"n_tokens", st.n_tokens},
                       {"n_compressed_tokens", st.n_compressed_tokens},
                       {"n_residual_tokens", st.n_residual_tokens},
                       {"n_blocks", st.n_blocks},
                       {"k_tile_bytes", st.k_tile_bytes},
                       {"v_tile_bytes", st.v_tile_bytes},
                       {"k_scale_bytes", st.k_scale_bytes},
                       {"v_scale_bytes", st.v_scale_bytes},
                       {"index_bytes", st.index_bytes},
                       {"perm_bytes", st.perm_bytes},
                       {"compressed_bytes_used", st.compressed_bytes_used},
                       {"compressed_bytes_reserved", st.compressed_bytes_reserved},
                       {"residual_bytes", st.residual_bytes},
                       {"fp16_bytes", st.fp16_bytes}};
    packkv_cache_destroy(cache_);
    cache_ = nullptr;
  }

 private:
  packkv_cache_t* cache_ = nullptr;
  std::vector<unsigned char> workspace_;
  std::vector<float> scores_, probs_, outf_;
  std::vector<double> p_, s_, out_;
};

std::unique_ptr<Method> make_method(const MethodSpec& spec) {
  if (spec.kind == MethodSpec::kPackkv) return std::make_unique<PackkvMethod>(spec);
  return std::make_unique<SimulatedMethod>(spec);
}

/** Fills the float64 reference of decode step i (query position n - 1). */
void reference_step(const Ctx& c, int i, std::vector<double>& s, std::vector<double>& p, std::vector<double>& out,
                    StepRef& r) {
  const DumpLayer& L = *c.layer;
  const int n = c.n_prefill + i + 1;
  r.n = n;
  r.q = L.qd.data() + (size_t)i * c.Hq * c.D;
  r.q16 = L.q.data() + (size_t)i * c.Hq * c.D;
  for (int h = 0; h < c.Hq; ++h) {
    const int off = (h / c.group) * c.D;
    double* sh = s.data() + (size_t)h * n;
    for (int t = 0; t < n; ++t) sh[t] = dot(r.q + (size_t)h * c.D, L.kd.data() + (size_t)t * c.row + off, c.D);
    softmax_inplace(p.data() + (size_t)h * n, sh, n, c.scale);
    weighted_rows(p.data() + (size_t)h * n, n, 0, L.vd.data(), L.vd.data(), c.row, off, c.D,
                  out.data() + (size_t)h * c.D);
  }
  r.s = s.data();
  r.p = p.data();
  r.out = out.data();
}

}  // namespace

std::vector<MethodResult> run_methods(const KvDump& dump, const std::vector<MethodSpec>& specs,
                                      const RunOptions& options) {
  std::vector<std::unique_ptr<Method>> methods;
  std::vector<MethodResult> results;
  for (const auto& s : specs) {
    methods.push_back(make_method(s));
    results.push_back(MethodResult{s, {}, {}, 0, 0});
  }
  const int stride = options.stride < 1 ? 1 : options.stride;
  for (const DumpLayer& L : dump.layers) {
    const auto t_start = std::chrono::steady_clock::now();
    Ctx c;
    c.dump = &dump;
    c.layer = &L;
    c.T = dump.n_tokens;
    c.H = dump.n_kv_heads;
    c.D = dump.head_dim;
    c.Hq = dump.n_q_heads;
    c.group = c.Hq / c.H;
    c.row = dump.row();
    c.n_prefill = dump.n_tokens - dump.n_queries;
    c.scale = 1.0 / std::sqrt((double)c.D);
    std::vector<LayerResult> acc(methods.size());
    for (size_t m = 0; m < methods.size(); ++m) {
      acc[m].layer = L.index;
      methods[m]->begin_layer(c);
    }
    std::vector<double> s((size_t)c.Hq * c.T), p((size_t)c.Hq * c.T), out((size_t)c.Hq * c.D);
    for (int i = 0; i < dump.n_queries; ++i) {
      const bool eval = i % stride == 0 || i == dump.n_queries - 1;
      StepRef r;
      if (eval) reference_step(c, i, s, p, out, r);
      for (size_t m = 0; m < methods.size(); ++m)
        methods[m]->step(c, i, eval ? &r : nullptr, options.joint, acc[m]);
    }
    for (size_t m = 0; m < methods.size(); ++m) {
      methods[m]->end_layer(c, acc[m]);
      results[m].bits_k = methods[m]->bits_k;
      results[m].bits_v = methods[m]->bits_v;
      results[m].layers.push_back(acc[m]);
      results[m].total += acc[m];
    }
    if (options.progress) {
      const double sec =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
      char buf[128];
      std::snprintf(buf, sizeof buf, "layer %d done (%zu methods, %.1f s)", L.index, methods.size(), sec);
      options.progress(buf);
    }
  }
  return results;
}

SweepResult run_sweep(const KvDump& dump, const PackkvConfig& base, int sink_tokens, const std::vector<float>& r_grid,
                      const RunOptions& options) {
  std::vector<MethodSpec> specs;
  for (float r : r_grid) {
    MethodSpec s;
    s.sink_tokens = sink_tokens;
    s.kind = MethodSpec::kPackkv;
    s.packkv = base;
    s.packkv.rel_scale_k = s.packkv.rel_scale_v = r;
    specs.push_back(s);
  }
  for (int b = 1; b <= 8; ++b) {
    MethodSpec s;
    s.sink_tokens = sink_tokens;
    s.kind = MethodSpec::kKivi;
    s.bits = b;
    specs.push_back(s);
  }
  MethodSpec f8;
  f8.sink_tokens = sink_tokens;
  f8.kind = MethodSpec::kFp8;
  specs.push_back(f8);

  RunOptions o = options;
  o.joint = false;  // the curves need K-only and V-only outputs
  std::vector<MethodResult> all = run_methods(dump, specs, o);

  SweepResult sw;
  sw.r_grid = r_grid;
  size_t i = 0;
  for (; i < r_grid.size(); ++i) sw.packkv.push_back(all[i]);
  for (int b = 1; b <= 8; ++b) sw.kivi.push_back(all[i++]);
  sw.fp8 = all[i];

  for (int kv = 0; kv < 2; ++kv) {
    auto tensor = [kv](const MethodResult& m) -> const TensorResult& { return kv == 0 ? m.total.k : m.total.v; };
    std::vector<CurvePoint> pk, pkc;
    for (const auto& m : sw.packkv) {
      pk.push_back({tensor(m).bytes.ratio(), tensor(m).out_err.value()});
      pkc.push_back({tensor(m).bytes.compressed_ratio(), tensor(m).out_err.value()});
    }
    std::vector<const MethodResult*> baselines;
    for (const auto& m : sw.kivi) baselines.push_back(&m);
    baselines.push_back(&sw.fp8);
    for (const MethodResult* b : baselines) {
      EqualErrorMatch mt;
      mt.baseline = b->spec.name();
      mt.baseline_error = tensor(*b).out_err.value();
      mt.baseline_ratio = tensor(*b).bytes.ratio();
      mt.baseline_cratio = tensor(*b).bytes.compressed_ratio();
      mt.packkv_ratio = ratio_at_error(pk, mt.baseline_error);
      mt.packkv_cratio = ratio_at_error(pkc, mt.baseline_error);
      (kv == 0 ? sw.k_matches : sw.v_matches).push_back(mt);
    }
  }
  return sw;
}

std::vector<LeverResult> run_levers(const KvDump& dump, const PackkvConfig& base, const std::vector<float>& r_grid,
                                    const RunOptions& options) {
  struct Lever {
    const char* name;
    int zs_format, sinks, k_transform;
  };
  const int kNone = PACKKV_K_TRANSFORM_NONE, kCenter = PACKKV_K_TRANSFORM_CENTER;
  const Lever levers[] = {{"v1: wide z/s, no sinks", PACKKV_ZS_WIDE, 0, kNone},
                          {"compact z/s", PACKKV_ZS_COMPACT, 0, kNone},
                          {"compact z/s + 1 sink", PACKKV_ZS_COMPACT, 1, kNone},
                          {"compact z/s + 4 sinks", PACKKV_ZS_COMPACT, 4, kNone},
                          {"wide z/s + 4 sinks", PACKKV_ZS_WIDE, 4, kNone},
                          {"compact + K centred", PACKKV_ZS_COMPACT, 0, kCenter},
                          {"compact+4 sinks+K centred", PACKKV_ZS_COMPACT, 4, kCenter}};
  std::vector<LeverResult> out;
  for (const Lever& l : levers) {
    LeverResult r;
    r.name = l.name;
    r.spec.kind = MethodSpec::kPackkv;
    r.spec.packkv = base;
    r.spec.packkv.zs_format = l.zs_format;
    r.spec.packkv.k_transform = l.k_transform;
    r.spec.sink_tokens = l.sinks;
    if (options.progress) options.progress(std::string("lever: ") + l.name);
    r.result = run_methods(dump, {r.spec}, options)[0];
    PackkvConfig b = base;
    b.zs_format = l.zs_format;
    b.k_transform = l.k_transform;
    r.sweep = run_sweep(dump, b, l.sinks, r_grid, options);
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace packkv_eval
