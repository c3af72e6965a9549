// GPU benchmark of libpackkv (issues 4 and 14), one run, one program: device copy
// bandwidth; cuBLAS fp16 batched gemv for K.q and p.V; packkv fused K.q
// (packkv_attn_scores), p.V (packkv_attn_apply), decode attention (packkv_attn_decode)
// and flush cost, over n_kv_heads x batch x T x head_dim x GQA group g x q_len.
// Prints speedups and the fraction of copy bandwidth reached by the compressed bytes;
// with --sdpa FILE (CSV from bench/sdpa_baseline.py, which times the shapes this program
// lists with --list-shapes) also decode vs torch fp16 SDPA; with --json FILE one record
// per shape (format below, bench/results/gpu-latest.json).
//
// Shape sets (one of):
//   (default)  the sweep of issue 4: H_kv 8, D 128/64, g 1/4, B*H_kv 32..1024, T 1K..64K
//              (all measurements; --headline, --one, --shape BH,T,D,g narrow it);
//   --models   real model attention shapes (issue 14): Llama-3-8B (8 KV heads, D 128,
//              g 4), Qwen2.5-7B (4, 128, g 7), Gemma-3 270M/1B (1, 256, g 4), Gemma-3 4B
//              (4, 256, g 2); batch 1/8/32/128; T 1K/8K/32K/128K; q_len 1 and 4;
//   --gqa      g 1/2/4/8 x q_len 1/4 at H_kv 8, batch 32, D 128, T 4K/32K.
//   --models and --gqa time decode only (no cuBLAS, scores/apply or flush: --full adds
//   them back) and may be given together. --quick: T 1K/32K/128K and batch 1/32/128 for
//   --models, T 32K for --gqa, 5 repetitions. --filter S: only shapes whose model name
//   contains S. --time-budget S: start no new shape after S seconds (the rest is listed
//   as skipped). Shapes whose fp16 K+V exceed --max-gb (default 9 for the sweep, 85% of
//   the device memory for --models/--gqa, which allocate no dense copy) are skipped.
// q_len > 1: until the library has a several-queries-per-sequence call, q_len queries of
//   a sequence are run as g * q_len query heads per KV head (same arithmetic: each query
//   attends to every cached token, as issue 14 item 4 defines it; no causal mask inside
//   the cache). The place to call the multi-query API is marked "MULTIQUERY".
// Data: "real" = SmolLM2-135M K/V of data/ (layer 15: 3 KV heads x 64 channels x 2048
//   tokens) tiled over tokens, heads and channels to the shape's size (real per-channel
//   statistics, not the model's own KV); "synth" = Gaussian with per-channel offsets.
// JSON: {"gpu", "commit", "build", "copy_bw_GBps", "data_note", "records": [{"model",
//   "n_kv_heads", "batch", "bh", "T", "D", "g", "q_len", "data", "ratio", "pk_dec_us",
//   "sdpa_us", "bw_frac", "sdpa_bw_frac"}]} with times in microseconds (median), ratio =
//   all-in compression ratio, bw_frac = compressed bytes read by the decode / its time /
//   copy bandwidth, sdpa_bw_frac = the same for the fp16 bytes and SDPA (null when no
//   SDPA time).
// Timing: CUDA events, median of --reps runs after warm-up. Host + device program.
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "packkv/packkv.h"
#include "safetensors.h"

#define CK(x)                                                                            \
  do {                                                                                   \
    cudaError_t e_ = (x);                                                                \
    if (e_ != cudaSuccess) {                                                             \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorName(e_)); \
      std::exit(1);                                                                      \
    }                                                                                    \
  } while (0)
#define PK(x)                                                                            \
  do {                                                                                   \
    packkv_status_t s_ = (x);                                                            \
    if (s_ != PACKKV_OK) {                                                               \
      std::fprintf(stderr, "%s:%d %s: %s %s\n", __FILE__, __LINE__, #x,                 \
                   packkv_status_string(s_), packkv_last_error_message());               \
      std::exit(1);                                                                      \
    }                                                                                    \
  } while (0)
#define CB(x)                                                                            \
  do {                                                                                   \
    cublasStatus_t s_ = (x);                                                             \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                                   \
      std::fprintf(stderr, "%s:%d %s: cublas %d\n", __FILE__, __LINE__, #x, (int)s_);   \
      std::exit(1);                                                                      \
    }                                                                                    \
  } while (0)

namespace {

struct Opts {
  std::string data, sdpa, json, commit, filter;
  int reps = 20;
  bool reps_set = false;
  double max_gb = -1.0;  // skip shapes whose fp16 K+V exceed this (< 0: the mode's default)
  bool headline_only = false;
  bool one = false;  // only the headline shape on real data (profiling)
  int only_g = 0;  // --g N: only shapes with GQA group N
  int shape[4] = {0, 0, 0, 0};  // --shape BH,T,D,g: only this shape on real data (profiling)
  bool models = false, gqa = false, quick = false, full = false, list_shapes = false;
  double time_budget_s = 0;  // 0: none
};

// One benchmark shape: n_kv_heads H, batch B (B*H = "BH"), T cached tokens per sequence,
// head_dim D, GQA group g, q_len queries per sequence; model names the row.
struct Shape {
  std::string model;
  int H, B, T, D, g, q_len;
  int bh() const { return H * B; }
  double fp16_gb() const { return 4.0 * bh() * static_cast<double>(T) * D / 1e9; }  // K + V fp16
  std::string key() const {  // the SDPA CSV key
    return std::to_string(H) + "," + std::to_string(B) + "," + std::to_string(T) + "," + std::to_string(D) + "," +
           std::to_string(g) + "," + std::to_string(q_len);
  }
};

// ---- data generation on the device ----
__device__ inline uint32_t hash3(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t h = a * 0x9E3779B1u ^ (b + 0x7F4A7C15u) * 0x85EBCA77u ^ (c + 0x165667B1u) * 0xC2B2AE3Du;
  h ^= h >> 15; h *= 0x2C1B3C6Du; h ^= h >> 12; h *= 0x297A2D39u; h ^= h >> 15;
  return h;
}
__device__ inline float gauss(uint32_t a, uint32_t b, uint32_t c) {
  float s = 0.f;
  for (int i = 0; i < 4; ++i) s += (hash3(a, b, c * 4u + i) & 0xFFFFFF) * (1.0f / 16777216.0f);
  return (s - 2.0f) * 1.7320508f;  // ~N(0,1)
}
// value of (seq, token, head, channel) for K (which=0) or V (1).
__device__ inline float kv_value(const __half* real, int which, int seq, int64_t t, int h, int c, int D) {
  if (real) {  // real KV [2][2048][192] (K then V), tiled
    const int64_t tt = (t + 131 * seq + 17 * h) % 2048;
    const int ch = (h * D + c) % 192;
    return __half2float(real[(static_cast<int64_t>(which) * 2048 + tt) * 192 + ch]);
  }
  const float off = which == 0 ? 2.0f * gauss(7u, h, c) : 0.3f * gauss(9u, h, c);
  return off + (which == 0 ? 1.0f : 0.5f) * gauss(static_cast<uint32_t>(seq * 7919 + which), static_cast<uint32_t>(t), h * 1024 + c);
}
// packkv append layout: [seq][t0 .. t0+n)[H][D]
__global__ void gen_append(const __half* real, __half* k, __half* v, int B, int n, int64_t t0, int H, int D) {
  const int64_t total = static_cast<int64_t>(B) * n * H * D;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i;
    const int c = r % D; r /= D;
    const int h = r % H; r /= H;
    const int tt = r % n; r /= n;
    const int seq = static_cast<int>(r);
    k[i] = __float2half(kv_value(real, 0, seq, t0 + tt, h, c, D));
    v[i] = __float2half(kv_value(real, 1, seq, t0 + tt, h, c, D));
  }
}
// cuBLAS layout: [seq*H + h][T][D]
__global__ void gen_dense(const __half* real, __half* k, __half* v, int B, int64_t T, int H, int D) {
  const int64_t total = static_cast<int64_t>(B) * H * T * D;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t r = i;
    const int c = r % D; r /= D;
    const int64_t t = r % T; r /= T;
    const int h = r % H; r /= H;
    const int seq = static_cast<int>(r);
    k[i] = __float2half(kv_value(real, 0, seq, t, h, c, D));
    v[i] = __float2half(kv_value(real, 1, seq, t, h, c, D));
  }
}
__global__ void gen_vec(__half* q, float* qf, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float x = gauss(seed, static_cast<uint32_t>(i), 3u);
    if (q) q[i] = __float2half(x);
    if (qf) qf[i] = x;
  }
}
__global__ void gen_probs(float* p, __half* ph, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    float x = (hash3(seed, static_cast<uint32_t>(i), 5u) & 0xFFFF) * (1.0f / 65536.0f) * 1e-4f;
    if (p) p[i] = x;
    if (ph) ph[i] = __float2half(x);
  }
}

// Loads layer.15.k/v ([2048][3][64] fp16) from a safetensors file into host memory
// (tools/safetensors: the project's one reader).
bool load_real(const std::string& path, std::vector<__half>* out) {
  constexpr size_t kValues = 2048 * 192;
  try {
    const packkv_eval::SafeTensors st = packkv_eval::read_safetensors(path);
    out->assign(2 * kValues, __half());
    const char* names[2] = {"layer.15.k", "layer.15.v"};
    for (int w = 0; w < 2; ++w) {
      const auto it = st.tensors.find(names[w]);
      if (it == st.tensors.end() || it->second.dtype != "F16" || it->second.bytes.size() != kValues * 2) return false;
      std::memcpy(out->data() + static_cast<size_t>(w) * kValues, it->second.bytes.data(), kValues * 2);
    }
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

template <typename F>
float time_ms(F&& fn, int reps, cudaStream_t st) {
  for (int i = 0; i < 3; ++i) fn();
  std::vector<float> t;
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  for (int i = 0; i < reps; ++i) {
    CK(cudaEventRecord(a, st));
    fn();
    CK(cudaEventRecord(b, st));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct Row {
  std::string src;
  Shape sh;
  int bh, T, D, g;
  bool full;  // scores, apply, cuBLAS and flush measured too
  double ratio, k_bytes, v_bytes, all_bytes, prefill_s;
  float cb_kq, pk_kq, cb_pv, pk_pv, pk_dec, sdpa, flush, append_noflush;
};

// SDPA times (ms) from bench/sdpa_baseline.py: lines "H,B,T,D,g,q_len,ms" (nan when it
// did not run).
std::map<std::string, float> load_sdpa(const std::string& path) {
  std::map<std::string, float> m;
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) {
    int H, B, T, D, g, ql;
    float ms;
    if (std::sscanf(line.c_str(), "%d,%d,%d,%d,%d,%d,%f", &H, &B, &T, &D, &g, &ql, &ms) == 7)
      m[Shape{"", H, B, T, D, g, ql}.key()] = ms;
  }
  return m;
}

// Builds one cache of shape (H, B, T, D) from the data source and measures every variant
// (g, q_len) of `group` on it (the cache does not depend on them). full: also K.q, p.V,
// their cuBLAS baselines and the flush cost (measured once, after the variants).
std::vector<Row> run_group(const Opts& o, const __half* d_real, const char* src, const std::vector<Shape>& group,
                           bool full, cublasHandle_t cb, cudaStream_t st) {
  const Shape& s0 = group.front();
  const int H = s0.H, B = s0.B, BH = s0.bh(), T = s0.T, D = s0.D;
  Row base{};
  base.src = src; base.bh = BH; base.T = T; base.D = D; base.full = full;
  base.cb_kq = base.pk_kq = base.cb_pv = base.pk_pv = base.flush = base.append_noflush = NAN;
  const auto t_prefill = std::chrono::steady_clock::now();
  // ---- packkv cache ----
  packkv_cache_params_t p;
  PK(packkv_cache_params_init(&p, sizeof p));
  p.device = 0;
  p.n_kv_heads = H;
  p.head_dim = D;
  p.max_seqs = B;
  p.max_tokens_per_seq = T + 256;
  // the configuration of the recorded results (bench/RESULTS.md), not the library's
  // defaults, which follow accuracy studies: r_K 0.1, r_V 0.2, residual 128, no sink tokens
  p.rel_scale_k = 0.1f;
  p.rel_scale_v = 0.2f;
  p.residual_tokens = 128;
  p.sink_tokens = 0;
  packkv_cache_t* cache = nullptr;
  PK(packkv_cache_create(&p, &cache));
  std::vector<int32_t> ids(B), cnt(B);
  for (int i = 0; i < B; ++i) ids[i] = i;
  const int chunk = static_cast<int>(std::max<int64_t>(16, std::min<int64_t>(T, (int64_t{1} << 27) / (int64_t{B} * H * D))));
  __half *ak = nullptr, *av = nullptr;
  CK(cudaMalloc(&ak, static_cast<size_t>(B) * chunk * H * D * 2));
  CK(cudaMalloc(&av, static_cast<size_t>(B) * chunk * H * D * 2));
  for (int t0 = 0; t0 < T; t0 += chunk) {
    const int n = std::min(chunk, T - t0);
    gen_append<<<2048, 256, 0, st>>>(d_real, ak, av, B, n, t0, H, D);
    for (int i = 0; i < B; ++i) cnt[i] = n;
    PK(packkv_cache_append(cache, B, ids.data(), cnt.data(), ak, av, PACKKV_DTYPE_F16, st));
  }
  PK(packkv_cache_sync(cache));
  base.prefill_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_prefill).count();
  packkv_cache_stats_t s;
  std::memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  PK(packkv_cache_stats(cache, -1, &s));
  base.ratio = static_cast<double>(s.fp16_bytes) / static_cast<double>(s.compressed_bytes_used + s.residual_bytes);
  base.k_bytes = static_cast<double>(s.k_tile_bytes + s.k_scale_bytes + s.index_bytes / 2 + s.perm_bytes + s.residual_bytes / 2);
  base.v_bytes = static_cast<double>(s.v_tile_bytes + s.v_scale_bytes + s.index_bytes / 2 + s.perm_bytes + s.residual_bytes / 2);
  base.all_bytes = static_cast<double>(s.compressed_bytes_used + s.residual_bytes);
  std::vector<Row> rows;
  for (const Shape& sh : group) {
    Row r = base;
    r.sh = sh;
    r.g = sh.g;
    // MULTIQUERY: with a several-queries-per-sequence call, pass q_len there instead; until
    // then q_len queries run as g * q_len query heads per KV head (see the header).
    const int HQ = H * sh.g * sh.q_len;
    const int64_t nq = static_cast<int64_t>(B) * HQ * D;
    __half* q16 = nullptr;
    float *out = nullptr, *lse = nullptr;
    CK(cudaMalloc(&q16, nq * 2));
    CK(cudaMalloc(&out, nq * 4));
    CK(cudaMalloc(&lse, static_cast<size_t>(B) * HQ * 4));
    gen_vec<<<1024, 256, 0, st>>>(q16, nullptr, nq, 11u);
    size_t wsb = 0;
    PK(packkv_attn_workspace_size(cache, B, HQ, &wsb));
    void* ws = nullptr;
    CK(cudaMalloc(&ws, wsb ? wsb : 1));
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    if (full) {
      const int64_t np = static_cast<int64_t>(B) * HQ * T;
      float *scores = nullptr, *probs = nullptr;
      CK(cudaMalloc(&scores, np * 4));
      CK(cudaMalloc(&probs, np * 4));
      gen_probs<<<1024, 256, 0, st>>>(probs, nullptr, np, 13u);
      r.pk_kq = time_ms([&] { PK(packkv_attn_scores(cache, B, ids.data(), HQ, q16, PACKKV_DTYPE_F16, scores, T, ws, wsb, st)); }, o.reps, st);
      r.pk_pv = time_ms([&] { PK(packkv_attn_apply(cache, B, ids.data(), HQ, probs, T, out, ws, wsb, st)); }, o.reps, st);
      CK(cudaFree(scores));
      CK(cudaFree(probs));
    }
    // a refused shape (e.g. a grid over the launch limits) is reported, not fatal
    const packkv_status_t ds = packkv_attn_decode(cache, B, ids.data(), HQ, q16, PACKKV_DTYPE_F16, scale, out, lse, ws, wsb, st);
    if (ds == PACKKV_OK) {
      r.pk_dec = time_ms([&] { PK(packkv_attn_decode(cache, B, ids.data(), HQ, q16, PACKKV_DTYPE_F16, scale, out, lse, ws, wsb, st)); }, o.reps, st);
    } else {
      r.pk_dec = NAN;
      std::printf("  decode refused at %s H %d B %d T %d D %d g %d q_len %d: %s %s\n", sh.model.c_str(), H, B, T, D,
                  sh.g, sh.q_len, packkv_status_string(ds), packkv_last_error_message());
    }
    CK(cudaFree(q16));
    CK(cudaFree(out));
    CK(cudaFree(lse));
    CK(cudaFree(ws));
    rows.push_back(r);
  }
  // ---- flush cost: single-token appends; every 64th flushes one block per sequence ----
  if (full) {
    std::vector<int32_t> ones(B, 1);
    gen_append<<<256, 256, 0, st>>>(d_real, ak, av, B, 1, T, H, D);
    std::vector<float> fl, nf, flh, nfh;
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    packkv_cache_stats_t s2;
    for (int step = 0; step < 200 && static_cast<int>(fl.size()) < 3; ++step) {
      PK(packkv_cache_stats(cache, 0, &s));
      CK(cudaEventRecord(a, st));
      const auto h0 = std::chrono::steady_clock::now();
      PK(packkv_cache_append(cache, B, ids.data(), ones.data(), ak, av, PACKKV_DTYPE_F16, st));
      const double host_us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - h0).count();
      CK(cudaEventRecord(b, st));
      CK(cudaEventSynchronize(b));
      float ms = 0;
      CK(cudaEventElapsedTime(&ms, a, b));
      std::memset(&s2, 0, sizeof s2);
      s2.struct_size = sizeof s2;
      PK(packkv_cache_stats(cache, 0, &s2));
      (s2.n_blocks > s.n_blocks ? fl : nf).push_back(ms);
      (s2.n_blocks > s.n_blocks ? flh : nfh).push_back(static_cast<float>(host_us));
    }
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
    std::sort(fl.begin(), fl.end());
    std::sort(nf.begin(), nf.end());
    const float flush = fl.empty() ? NAN : fl[fl.size() / 2], noflush = nf.empty() ? NAN : nf[nf.size() / 2];
    for (Row& r : rows) {
      r.flush = flush;
      r.append_noflush = noflush;
    }
    std::sort(flh.begin(), flh.end());
    std::sort(nfh.begin(), nfh.end());
    std::printf("  [flush detail BH=%d T=%d D=%d] GPU-timeline append: flushing %.1f us, plain %.1f us; host time "
                "in the call: flushing %.1f us, plain %.1f us\n",
                BH, T, D, flush * 1e3, noflush * 1e3, flh.empty() ? NAN : flh[flh.size() / 2],
                nfh.empty() ? NAN : nfh[nfh.size() / 2]);
  }
  packkv_cache_destroy(cache);
  CK(cudaFree(ak));
  CK(cudaFree(av));
  if (!full) return rows;
  // ---- cuBLAS fp16 baselines, [BH][T][D]: g * q_len query vectors per KV head ----
  __half *k16 = nullptr, *v16 = nullptr;
  CK(cudaMalloc(&k16, static_cast<size_t>(BH) * T * D * 2));
  CK(cudaMalloc(&v16, static_cast<size_t>(BH) * T * D * 2));
  gen_dense<<<4096, 256, 0, st>>>(d_real, k16, v16, B, T, H, D);
  CB(cublasSetStream(cb, st));
  const float one = 1.f, zero = 0.f;
  for (Row& r : rows) {
    const int gq = r.sh.g * r.sh.q_len;
    __half *q16 = nullptr, *p16 = nullptr, *c16 = nullptr;
    const int64_t np = static_cast<int64_t>(BH) * gq * T;
    CK(cudaMalloc(&q16, static_cast<size_t>(BH) * gq * D * 2));
    CK(cudaMalloc(&p16, np * 2));
    CK(cudaMalloc(&c16, np * 2));
    gen_vec<<<1024, 256, 0, st>>>(q16, nullptr, static_cast<int64_t>(BH) * gq * D, 11u);
    gen_probs<<<1024, 256, 0, st>>>(nullptr, p16, np, 13u);
    // scores (T x gq) = K^T (T x D) * q (D x gq), batch BH
    r.cb_kq = time_ms([&] {
      CB(cublasGemmStridedBatchedEx(cb, CUBLAS_OP_T, CUBLAS_OP_N, T, gq, D, &one, k16, CUDA_R_16F, D,
                                    static_cast<long long>(T) * D, q16, CUDA_R_16F, D, static_cast<long long>(D) * gq,
                                    &zero, c16, CUDA_R_16F, T, static_cast<long long>(T) * gq, BH,
                                    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }, o.reps, st);
    // out (D x gq) = V^T (D x T) * p (T x gq)
    r.cb_pv = time_ms([&] {
      CB(cublasGemmStridedBatchedEx(cb, CUBLAS_OP_N, CUBLAS_OP_N, D, gq, T, &one, v16, CUDA_R_16F, D,
                                    static_cast<long long>(T) * D, p16, CUDA_R_16F, T, static_cast<long long>(T) * gq,
                                    &zero, c16, CUDA_R_16F, D, static_cast<long long>(D) * gq, BH,
                                    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }, o.reps, st);
    CK(cudaFree(q16));
    CK(cudaFree(p16));
    CK(cudaFree(c16));
  }
  CK(cudaFree(k16));
  CK(cudaFree(v16));
  return rows;
}

// ---- shape sets ----
// The sweep of issue 4 (H_kv 8, q_len 1), headline shapes first.
std::vector<Shape> sweep_shapes(const Opts& o) {
  std::vector<Shape> v;
  auto add = [&](int bh, int T, int D, int g) {
    for (const Shape& x : v)
      if (x.bh() == bh && x.T == T && x.D == D && x.g == g) return;
    v.push_back({"sweep", 8, bh / 8, T, D, g, 1});
  };
  if (o.shape[0] > 0) add(o.shape[0], o.shape[1], o.shape[2], o.shape[3]);
  else add(256, 32768, 128, 1);
  if (!o.one) {
    add(256, 32768, 128, 4);
    add(256, 1024, 128, 1);
  }
  if (!o.headline_only)
    for (int D : {128, 64})
      for (int g : {1, 4})
        for (int bh : {32, 256, 1024})
          for (int T : {1024, 4096, 16384, 32768, 65536}) add(bh, T, D, g);
  return v;
}

// Attention shapes of real models (config.json of each: num_key_value_heads, head_dim,
// num_attention_heads / num_key_value_heads). Gemma 3 270M and 1B share one shape (4
// query heads, 1 KV head, head_dim 256); Gemma 3's local layers attend to a 1024-token
// window only, its global layers (1 in 6) to every token: the rows are those layers.
std::vector<Shape> model_shapes(const Opts& o) {
  struct M { const char* name; int H, D, g; };
  const M models[] = {{"llama3-8b", 8, 128, 4}, {"qwen2.5-7b", 4, 128, 7}, {"gemma3-270m/1b", 1, 256, 4},
                      {"gemma3-4b", 4, 256, 2}};
  std::vector<int> Ts = {1024, 8192, 32768, 131072}, Bs = {1, 8, 32, 128};
  if (o.quick) {
    Ts = {1024, 32768, 131072};
    Bs = {1, 32, 128};
  }
  std::vector<Shape> v;
  // small shapes first (a --time-budget cut drops the largest), both q_len on one cache
  for (int T : Ts)
    for (int B : Bs)
      for (const M& m : models)
        for (int ql : {1, 4}) v.push_back({m.name, m.H, B, T, m.D, m.g, ql});
  return v;
}

// The GQA group sweep of issue 14: g 1/2/4/8 x q_len 1/4 at one shape.
std::vector<Shape> gqa_shapes(const Opts& o) {
  std::vector<int> Ts = {4096, 32768};
  if (o.quick) Ts = {32768};
  std::vector<Shape> v;
  for (int T : Ts)
    for (int ql : {1, 4})
      for (int g : {1, 2, 4, 8}) v.push_back({"gqa-sweep", 8, 32, T, 128, g, ql});
  return v;
}

std::string json_str(const std::string& x) {
  std::string r = "\"";
  for (char c : x) {
    if (c == '"' || c == '\\') r += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    r += c;
  }
  return r + "\"";
}
std::string json_num(double x, int prec) {
  if (!std::isfinite(x)) return "null";
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", prec, x);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  Opts o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--data" && i + 1 < argc) o.data = argv[++i];
    else if (a == "--sdpa" && i + 1 < argc) o.sdpa = argv[++i];
    else if (a == "--json" && i + 1 < argc) o.json = argv[++i];
    else if (a == "--commit" && i + 1 < argc) o.commit = argv[++i];
    else if (a == "--filter" && i + 1 < argc) o.filter = argv[++i];
    else if (a == "--reps" && i + 1 < argc) { o.reps = std::atoi(argv[++i]); o.reps_set = true; }
    else if (a == "--max-gb" && i + 1 < argc) o.max_gb = std::atof(argv[++i]);
    else if (a == "--time-budget" && i + 1 < argc) o.time_budget_s = std::atof(argv[++i]);
    else if (a == "--headline") o.headline_only = true;
    else if (a == "--one") o.headline_only = o.one = true;
    else if (a == "--models") o.models = true;
    else if (a == "--gqa") o.gqa = true;
    else if (a == "--quick") o.quick = true;
    else if (a == "--full") o.full = true;
    else if (a == "--list-shapes") o.list_shapes = true;
    else if (a == "--g" && i + 1 < argc) o.only_g = std::atoi(argv[++i]);
    else if (a == "--help" || a == "-h") {
      std::printf(
          "usage: %s [--data FILE] [--sdpa FILE] [--reps R] [--max-gb X] [--headline | --one]\n"
          "          [--g G] [--shape BH,T,D,g] [--models] [--gqa] [--quick | --full] [--filter NAME]\n"
          "          [--time-budget S] [--list-shapes] [--json FILE] [--commit ID]\n"
          "GPU benchmark of the CUDA backend (encode, scores, apply, decode attention against\n"
          "copy bandwidth and, with --sdpa, torch SDPA timings); see bench/gpu_run.sh and\n"
          "bench/RESULTS.md.\n"
          "  --data FILE     KV dump for the real-data rows\n"
          "  --sdpa FILE     SDPA timings (bench/sdpa_baseline.py output) to compare against\n"
          "  --reps R        timed repetitions (default 20)\n"
          "  --max-gb X      skip shapes whose fp16 K+V exceed X GB (default 9)\n"
          "  --headline      the headline shapes only; --one: only the headline shape on real data\n"
          "  --g G           only shapes with GQA group G\n"
          "  --shape BH,T,D,g  only this shape on real data (profiling)\n"
          "  --models        issue-14 model shapes (Llama-3-8B, Qwen2.5-7B, Gemma-3) x batch x T x q_len\n"
          "  --gqa           GQA sweep: g 1/2/4/8 x q_len 1/4 at the headline shape\n"
          "  --quick/--full  fewer / all sizes of --models; --filter NAME: shapes whose name contains NAME\n"
          "  --time-budget S stop timing new shapes after S seconds; --list-shapes: print them for SDPA\n"
          "  --json FILE     one record per shape (bench/results/gpu-latest.json format); --commit ID\n",
          argv[0]);
      return 0;
    }
    else if (a == "--shape" && i + 1 < argc) {
      if (std::sscanf(argv[++i], "%d,%d,%d,%d", &o.shape[0], &o.shape[1], &o.shape[2], &o.shape[3]) != 4 ||
          o.shape[0] <= 0 || o.shape[1] <= 0 || o.shape[2] <= 0 || o.shape[3] <= 0 || o.shape[0] % 8 != 0) {
        std::fprintf(stderr, "--shape wants BH,T,D,g (four positive integers, BH a multiple of 8), got '%s'\n", argv[i]);
        return 2;
      }
      o.headline_only = o.one = true;
    } else {
      std::fprintf(stderr, "%s: unknown or incomplete argument '%s' (try --help)\n", argv[0], a.c_str());
      return 2;
    }
  }
  if (o.reps < 1) {
    std::fprintf(stderr, "--reps wants a positive count\n");
    return 2;
  }
  const bool decode_mode = o.models || o.gqa;  // the issue-14 sets: decode only unless --full
  const bool full = !decode_mode || o.full;
  if (!o.reps_set) o.reps = o.quick ? 5 : decode_mode ? 10 : 20;
  size_t mem_free = 0, mem_total = 0;
  if (o.max_gb < 0 && decode_mode && !o.full) {  // (--list-shapes with --max-gb needs no device)
    CK(cudaMemGetInfo(&mem_free, &mem_total));
    o.max_gb = 0.85 * mem_total / 1e9;
  }
  if (o.max_gb < 0) o.max_gb = 9.0;
  // ---- the shapes, filtered by memory, --g and --filter ----
  std::vector<Shape> shapes, skipped;
  std::vector<std::string> skip_why;
  {
    std::vector<Shape> all;
    if (decode_mode) {
      if (o.gqa)
        for (const Shape& x : gqa_shapes(o)) all.push_back(x);
      if (o.models)
        for (const Shape& x : model_shapes(o)) all.push_back(x);
    } else {
      all = sweep_shapes(o);
    }
    for (const Shape& x : all) {
      if (o.only_g > 0 && x.g != o.only_g) continue;
      if (!o.filter.empty() && x.model.find(o.filter) == std::string::npos) continue;
      if (x.fp16_gb() > o.max_gb) {
        skipped.push_back(x);
        char why[96];
        std::snprintf(why, sizeof why, "fp16 K+V %.1f GB > %.1f GB", x.fp16_gb(), o.max_gb);
        skip_why.push_back(why);
        continue;
      }
      shapes.push_back(x);
    }
  }
  if (o.list_shapes) {  // for bench/sdpa_baseline.py: the shapes SDPA must time
    for (const Shape& x : shapes) std::printf("%s\n", x.key().c_str());
    return 0;
  }
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  CK(cudaMemGetInfo(&mem_free, &mem_total));
  std::printf("# packkv GPU benchmark: %s, %d SMs, %.0f MB L2, %.1f GB; %s\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize / 1048576.0, mem_total / 1e9, packkv_build_info());
  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  const auto t_start = std::chrono::steady_clock::now();
  // ---- copy bandwidth (bytes read + written) ----
  double copy_bw = 0;
  {
    const size_t bytes = 2ull << 30;
    void *a = nullptr, *b = nullptr;
    CK(cudaMalloc(&a, bytes));
    CK(cudaMalloc(&b, bytes));
    CK(cudaMemset(a, 1, bytes));
    float ms = time_ms([&] { CK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, st)); }, o.reps, st);
    copy_bw = 2.0 * bytes / (ms * 1e-3);
    std::printf("copy bandwidth: %.0f GB/s (2 GiB device-to-device, read + write, median of %d)\n", copy_bw / 1e9, o.reps);
    CK(cudaFree(a));
    CK(cudaFree(b));
  }
  std::vector<__half> real;
  __half* d_real = nullptr;
  if (!o.data.empty() && load_real(o.data, &real)) {
    CK(cudaMalloc(&d_real, real.size() * 2));
    CK(cudaMemcpy(d_real, real.data(), real.size() * 2, cudaMemcpyHostToDevice));
  } else {
    std::printf("(no real data: %s)\n", o.data.c_str());
  }
  const char* data_note =
      "real = SmolLM2-135M K/V of data/ (layer 15, 3 KV heads x 64 channels x 2048 tokens) tiled over tokens, heads "
      "and channels to each shape (real per-channel statistics, not the named model's KV); synth = Gaussian with "
      "per-channel offsets";
  std::printf("data: %s\n", data_note);
  if (decode_mode)
    std::printf("q_len > 1 runs as g * q_len query heads per KV head (no multi-query call yet; same arithmetic: "
                "every query attends to every cached token)\n");
  std::map<std::string, float> sdpa = o.sdpa.empty() ? std::map<std::string, float>() : load_sdpa(o.sdpa);
  cublasHandle_t cb;
  CB(cublasCreate(&cb));
  std::vector<Row> rows;
  if (full)
    std::printf("\n%-5s %5s %6s %4s %2s | %6s | %8s %8s %6s | %8s %8s %6s | %8s %8s %6s %6s | %7s %6s %6s %6s | %7s %6s\n",
                "data", "BH", "T", "D", "g", "ratio", "cb_kq", "pk_kq", "x", "cb_pv", "pk_pv", "x", "pk_dec",
                "sdpa", "x", "0.7r", "bw_kq%", "bw_pv%", "bw_dec", "", "flush", "%dec");
  else
    std::printf("\n%-15s %-5s %2s %4s %6s %4s %2s %2s | %6s %7s | %9s %9s %6s %6s | %7s %7s\n", "model", "data", "H",
                "B", "T", "D", "g", "ql", "ratio", "prefill", "pk_dec", "sdpa", "x", "0.7r", "bw_dec%", "bw_sdpa%");
  for (int pass = 0; pass < 2; ++pass) {
    const char* src = pass == 0 ? "real" : "synth";
    if (pass == 0 && !d_real) continue;
    if (pass == 1 && (o.one || (decode_mode && d_real))) continue;
    for (size_t i = 0; i < shapes.size();) {
      // consecutive shapes of one (H, B, T, D) share a cache
      size_t j = i + 1;
      while (j < shapes.size() && shapes[j].H == shapes[i].H && shapes[j].B == shapes[i].B &&
             shapes[j].T == shapes[i].T && shapes[j].D == shapes[i].D)
        ++j;
      std::vector<Shape> group(shapes.begin() + static_cast<std::ptrdiff_t>(i), shapes.begin() + static_cast<std::ptrdiff_t>(j));
      i = j;
      const Shape& sh = group.front();
      if (!decode_mode && pass == 1 && !(sh.bh() == 256 && (sh.T == 32768 || sh.T == 1024)) && d_real) continue;  // synth: a subset
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
      if (o.time_budget_s > 0 && elapsed > o.time_budget_s) {
        for (const Shape& x : group) {
          skipped.push_back(x);
          skip_why.push_back("time budget");
        }
        continue;
      }
      for (Row& r : run_group(o, pass == 0 ? d_real : nullptr, src, group, full, cb, st)) {
        auto it = sdpa.find(r.sh.key());
        r.sdpa = it == sdpa.end() ? NAN : it->second;
        rows.push_back(r);
        const double bw_dec = r.all_bytes / (r.pk_dec * 1e-3) / copy_bw * 100;
        if (full) {
          const double bw_kq = r.k_bytes / (r.pk_kq * 1e-3) / copy_bw * 100;
          const double bw_pv = r.v_bytes / (r.pk_pv * 1e-3) / copy_bw * 100;
          std::printf("%-5s %5d %6d %4d %2d | %6.2f | %8.1f %8.1f %6.2f | %8.1f %8.1f %6.2f | %8.1f %8.1f %6.2f %6.2f | %7.1f %6.1f %6.1f %6s | %7.1f %6.2f\n",
                      r.src.c_str(), r.bh, r.T, r.D, r.g, r.ratio, r.cb_kq * 1e3, r.pk_kq * 1e3, r.cb_kq / r.pk_kq,
                      r.cb_pv * 1e3, r.pk_pv * 1e3, r.cb_pv / r.pk_pv, r.pk_dec * 1e3, r.sdpa * 1e3,
                      r.sdpa / r.pk_dec, 0.7 * r.ratio, bw_kq, bw_pv, bw_dec, "",
                      (r.flush - r.append_noflush) * 1e3, (r.flush - r.append_noflush) / r.pk_dec * 100);
        } else {
          const double bw_sdpa = r.sh.fp16_gb() * 1e9 / (r.sdpa * 1e-3) / copy_bw * 100;
          std::printf("%-15s %-5s %2d %4d %6d %4d %2d %2d | %6.2f %6.2fs | %9.1f %9.1f %6.2f %6.2f | %7.1f %7.1f\n",
                      r.sh.model.c_str(), r.src.c_str(), r.sh.H, r.sh.B, r.sh.T, r.sh.D, r.sh.g, r.sh.q_len, r.ratio,
                      r.prefill_s, r.pk_dec * 1e3, r.sdpa * 1e3, r.sdpa / r.pk_dec, 0.7 * r.ratio, bw_dec, bw_sdpa);
        }
      }
      std::fflush(stdout);
    }
  }
  if (full)
    std::printf("\ncolumns: times in microseconds (median); x = speedup over the baseline on its left; ratio = all-in\n"
                "compression ratio r (fp16 bytes / (compressed bytes used + residual bytes)); bw_* = compressed bytes the\n"
                "call reads / time, as %% of the copy bandwidth; flush = extra GPU time of an append that flushes one block per\n"
                "sequence over one that does not; %%dec = flush / decode step.\n");
  else
    std::printf("\ncolumns: H = KV heads, B = batch, ql = queries per sequence; times in microseconds (median of %d);\n"
                "prefill = wall time to append the T tokens (data generation included); x = sdpa / pk_dec (> 1: packkv\n"
                "faster); 0.7r = the bandwidth goal's speedup; bw_dec%% = compressed bytes read / pk_dec, bw_sdpa%% = fp16\n"
                "K+V bytes / sdpa, as %% of copy bandwidth.\n", o.reps);
  for (size_t i = 0; i < skipped.size(); ++i)
    std::printf("skipped: %s H %d B %d T %d D %d g %d q_len %d (%s)\n", skipped[i].model.c_str(), skipped[i].H,
                skipped[i].B, skipped[i].T, skipped[i].D, skipped[i].g, skipped[i].q_len, skip_why[i].c_str());
  std::printf("total time %.1f s\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count());
  if (!o.json.empty()) {
    std::ofstream f(o.json);
    f << "{\n  \"gpu\": " << json_str(prop.name) << ",\n  \"commit\": " << json_str(o.commit)
      << ",\n  \"build\": " << json_str(packkv_build_info()) << ",\n  \"copy_bw_GBps\": " << json_num(copy_bw / 1e9, 1)
      << ",\n  \"reps\": " << o.reps << ",\n  \"data_note\": " << json_str(data_note) << ",\n  \"records\": [";
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      const double bw = r.all_bytes / (r.pk_dec * 1e-3) / copy_bw;
      const double sbw = r.sh.fp16_gb() * 1e9 / (r.sdpa * 1e-3) / copy_bw;
      f << (i ? ",\n" : "\n") << "    {\"model\": " << json_str(r.sh.model) << ", \"n_kv_heads\": " << r.sh.H
        << ", \"batch\": " << r.sh.B << ", \"bh\": " << r.bh << ", \"T\": " << r.T << ", \"D\": " << r.D
        << ", \"g\": " << r.g << ", \"q_len\": " << r.sh.q_len << ", \"data\": " << json_str(r.src)
        << ", \"ratio\": " << json_num(r.ratio, 4) << ", \"pk_dec_us\": " << json_num(r.pk_dec * 1e3, 2)
        << ", \"sdpa_us\": " << json_num(r.sdpa * 1e3, 2) << ", \"bw_frac\": " << json_num(bw, 4)
        << ", \"sdpa_bw_frac\": " << json_num(sbw, 4) << "}";
    }
    f << "\n  ]\n}\n";
    std::printf("wrote %s (%zu records)\n", o.json.c_str(), rows.size());
  }
  cublasDestroy(cb);
  if (d_real) cudaFree(d_real);
  return 0;
}
