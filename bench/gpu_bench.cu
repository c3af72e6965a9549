// GPU benchmark of libpackkv (issue 4), one run, one program: device copy bandwidth;
// cuBLAS fp16 batched gemv for K.q and p.V; packkv fused K.q (packkv_attn_scores),
// p.V (packkv_attn_apply), decode attention (packkv_attn_decode) and flush cost, on
// real KV (data/, tiled to size) and synthetic data, over B*H_kv x T x head_dim x GQA.
// Prints speedups and the fraction of copy bandwidth reached by the compressed bytes;
// with --sdpa FILE (CSV from bench/sdpa_baseline.py) also decode vs torch fp16 SDPA.
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
  std::string data, sdpa;
  int reps = 20;
  double max_gb = 9.0;  // skip shapes whose fp16 K+V exceed this
  bool headline_only = false;
  bool one = false;  // only the headline shape on real data (profiling)
  int only_g = 0;  // --g N: only shapes with GQA group N
  int shape[4] = {0, 0, 0, 0};  // --shape BH,T,D,g: only this shape on real data (profiling)
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
  int bh, T, D, g;
  double ratio, k_bytes, v_bytes, all_bytes;
  float cb_kq, pk_kq, cb_pv, pk_pv, pk_dec, sdpa, flush, append_noflush;
};

std::map<std::string, float> load_sdpa(const std::string& path) {
  std::map<std::string, float> m;
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) {
    int bh, T, D, g;
    float ms;
    if (std::sscanf(line.c_str(), "%d,%d,%d,%d,%f", &bh, &T, &D, &g, &ms) == 5)
      m[std::to_string(bh) + "," + std::to_string(T) + "," + std::to_string(D) + "," + std::to_string(g)] = ms;
  }
  return m;
}

Row run_shape(const Opts& o, const __half* d_real, const char* src, int BH, int T, int D, int g,
              cublasHandle_t cb, cudaStream_t st) {
  const int H = 8, B = BH / H, HQ = H * g;
  Row r{};
  r.src = src; r.bh = BH; r.T = T; r.D = D; r.g = g;
  // ---- packkv cache ----
  packkv_cache_params_t p;
  PK(packkv_cache_params_init(&p, sizeof p));
  p.device = 0;
  p.n_kv_heads = H;
  p.head_dim = D;
  p.max_seqs = B;
  p.max_tokens_per_seq = T + 256;
  packkv_cache_t* cache = nullptr;
  PK(packkv_cache_create(&p, &cache));
  std::vector<int32_t> ids(B), cnt(B);
  for (int i = 0; i < B; ++i) ids[i] = i;
  const int chunk = std::min(T, 4096);
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
  packkv_cache_stats_t s;
  std::memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  PK(packkv_cache_stats(cache, -1, &s));
  r.ratio = static_cast<double>(s.fp16_bytes) / static_cast<double>(s.compressed_bytes_used + s.residual_bytes);
  r.k_bytes = static_cast<double>(s.k_tile_bytes + s.k_scale_bytes + s.index_bytes / 2 + s.perm_bytes + s.residual_bytes / 2);
  r.v_bytes = static_cast<double>(s.v_tile_bytes + s.v_scale_bytes + s.index_bytes / 2 + s.perm_bytes + s.residual_bytes / 2);
  r.all_bytes = static_cast<double>(s.compressed_bytes_used + s.residual_bytes);
  // queries, probabilities, outputs
  const int64_t nq = static_cast<int64_t>(B) * HQ * D;
  const int64_t np = static_cast<int64_t>(B) * HQ * T;
  __half* q16 = nullptr;
  float *scores = nullptr, *probs = nullptr, *out = nullptr, *lse = nullptr;
  __half* p16 = nullptr;
  CK(cudaMalloc(&q16, nq * 2));
  CK(cudaMalloc(&scores, np * 4));
  CK(cudaMalloc(&probs, np * 4));
  CK(cudaMalloc(&p16, np * 2));
  CK(cudaMalloc(&out, nq * 4));
  CK(cudaMalloc(&lse, static_cast<size_t>(B) * HQ * 4));
  gen_vec<<<1024, 256, 0, st>>>(q16, nullptr, nq, 11u);
  gen_probs<<<1024, 256, 0, st>>>(probs, p16, np, 13u);
  size_t wsb = 0;
  PK(packkv_attn_workspace_size(cache, B, HQ, &wsb));
  void* ws = nullptr;
  CK(cudaMalloc(&ws, wsb ? wsb : 1));
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  r.pk_kq = time_ms([&] { PK(packkv_attn_scores(cache, B, ids.data(), HQ, q16, PACKKV_DTYPE_F16, scores, T, ws, wsb, st)); }, o.reps, st);
  r.pk_pv = time_ms([&] { PK(packkv_attn_apply(cache, B, ids.data(), HQ, probs, T, out, ws, wsb, st)); }, o.reps, st);
  r.pk_dec = time_ms([&] { PK(packkv_attn_decode(cache, B, ids.data(), HQ, q16, PACKKV_DTYPE_F16, scale, out, lse, ws, wsb, st)); }, o.reps, st);
  // ---- flush cost: single-token appends; every 64th flushes one block per sequence ----
  {
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
    r.flush = fl.empty() ? NAN : fl[fl.size() / 2];
    r.append_noflush = nf.empty() ? NAN : nf[nf.size() / 2];
    std::sort(flh.begin(), flh.end());
    std::sort(nfh.begin(), nfh.end());
    std::printf("  [flush detail BH=%d T=%d D=%d g=%d] GPU-timeline append: flushing %.1f us, plain %.1f us; host time "
                "in the call: flushing %.1f us, plain %.1f us\n",
                BH, T, D, g, r.flush * 1e3, r.append_noflush * 1e3, flh.empty() ? NAN : flh[flh.size() / 2],
                nfh.empty() ? NAN : nfh[nfh.size() / 2]);
  }
  packkv_cache_destroy(cache);
  CK(cudaFree(ak));
  CK(cudaFree(av));
  CK(cudaFree(ws));
  // ---- cuBLAS fp16 baselines, [BH][T][D] ----
  __half *k16 = nullptr, *v16 = nullptr, *c16 = nullptr;
  CK(cudaMalloc(&k16, static_cast<size_t>(BH) * T * D * 2));
  CK(cudaMalloc(&v16, static_cast<size_t>(BH) * T * D * 2));
  CK(cudaMalloc(&c16, static_cast<size_t>(np) * 2));
  gen_dense<<<4096, 256, 0, st>>>(d_real, k16, v16, B, T, H, D);
  CB(cublasSetStream(cb, st));
  const float one = 1.f, zero = 0.f;
  // scores (T x g) = K^T (T x D) * q (D x g), batch BH
  r.cb_kq = time_ms([&] {
    CB(cublasGemmStridedBatchedEx(cb, CUBLAS_OP_T, CUBLAS_OP_N, T, g, D, &one, k16, CUDA_R_16F, D,
                                  static_cast<long long>(T) * D, q16, CUDA_R_16F, D, static_cast<long long>(D) * g,
                                  &zero, c16, CUDA_R_16F, T, static_cast<long long>(T) * g, BH,
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }, o.reps, st);
  // out (D x g) = V^T (D x T) * p (T x g)
  r.cb_pv = time_ms([&] {
    CB(cublasGemmStridedBatchedEx(cb, CUBLAS_OP_N, CUBLAS_OP_N, D, g, T, &one, v16, CUDA_R_16F, D,
                                  static_cast<long long>(T) * D, p16, CUDA_R_16F, T, static_cast<long long>(T) * g,
                                  &zero, c16, CUDA_R_16F, D, static_cast<long long>(D) * g, BH,
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }, o.reps, st);
  CK(cudaFree(k16));
  CK(cudaFree(v16));
  CK(cudaFree(c16));
  CK(cudaFree(q16));
  CK(cudaFree(scores));
  CK(cudaFree(probs));
  CK(cudaFree(p16));
  CK(cudaFree(out));
  CK(cudaFree(lse));
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  Opts o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--data" && i + 1 < argc) o.data = argv[++i];
    else if (a == "--sdpa" && i + 1 < argc) o.sdpa = argv[++i];
    else if (a == "--reps" && i + 1 < argc) o.reps = std::atoi(argv[++i]);
    else if (a == "--max-gb" && i + 1 < argc) o.max_gb = std::atof(argv[++i]);
    else if (a == "--headline") o.headline_only = true;
    else if (a == "--one") o.headline_only = o.one = true;
    else if (a == "--g" && i + 1 < argc) o.only_g = std::atoi(argv[++i]);
    else if (a == "--shape" && i + 1 < argc) {
      if (std::sscanf(argv[++i], "%d,%d,%d,%d", &o.shape[0], &o.shape[1], &o.shape[2], &o.shape[3]) != 4 ||
          o.shape[0] <= 0 || o.shape[1] <= 0 || o.shape[2] <= 0 || o.shape[3] <= 0) {
        std::fprintf(stderr, "--shape wants BH,T,D,g (four positive integers), got '%s'\n", argv[i]);
        return 2;
      }
      o.headline_only = o.one = true;
    }
  }
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("# packkv GPU benchmark: %s, %d SMs, %.0f MB L2; %s\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize / 1048576.0, packkv_build_info());
  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
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
  std::map<std::string, float> sdpa = o.sdpa.empty() ? std::map<std::string, float>() : load_sdpa(o.sdpa);
  cublasHandle_t cb;
  CB(cublasCreate(&cb));
  std::vector<Row> rows;
  struct Shape { int bh, T, D, g; };
  std::vector<Shape> shapes;
  if (o.shape[0] > 0) shapes.push_back({o.shape[0], o.shape[1], o.shape[2], o.shape[3]});
  else shapes.push_back({256, 32768, 128, 1});  // the headline shape first
  if (!o.one) {
    shapes.push_back({256, 32768, 128, 4});
    shapes.push_back({256, 1024, 128, 1});
  }
  if (!o.headline_only)
    for (int D : {128, 64})
      for (int g : {1, 4})
        for (int bh : {32, 256, 1024})
          for (int T : {1024, 4096, 16384, 32768, 65536}) {
            bool dup = false;
            for (const Shape& x : shapes) dup |= x.bh == bh && x.T == T && x.D == D && x.g == g;
            if (!dup) shapes.push_back({bh, T, D, g});
          }
  std::printf("\n%-5s %5s %6s %4s %2s | %6s | %8s %8s %6s | %8s %8s %6s | %8s %8s %6s %6s | %7s %6s %6s %6s | %7s %6s\n",
              "data", "BH", "T", "D", "g", "ratio", "cb_kq", "pk_kq", "x", "cb_pv", "pk_pv", "x", "pk_dec",
              "sdpa", "x", "0.7r", "bw_kq%", "bw_pv%", "bw_dec", "", "flush", "%dec");
  for (int pass = 0; pass < 2; ++pass) {
    const char* src = pass == 0 ? "real" : "synth";
    if (pass == 0 && !d_real) continue;
    if (pass == 1 && o.one) continue;
    for (const Shape& sh : shapes) {
      const double fp16_gb = 4.0 * sh.bh * static_cast<double>(sh.T) * sh.D / 1e9;
      if (fp16_gb > o.max_gb) continue;
      if (o.only_g > 0 && sh.g != o.only_g) continue;
      if (pass == 1 && !(sh.bh == 256 && (sh.T == 32768 || sh.T == 1024)) && d_real) continue;  // synth: a subset
      Row r = run_shape(o, pass == 0 ? d_real : nullptr, src, sh.bh, sh.T, sh.D, sh.g, cb, st);
      auto it = sdpa.find(std::to_string(sh.bh) + "," + std::to_string(sh.T) + "," + std::to_string(sh.D) + "," + std::to_string(sh.g));
      r.sdpa = it == sdpa.end() ? NAN : it->second;
      rows.push_back(r);
      const double bw_kq = r.k_bytes / (r.pk_kq * 1e-3) / copy_bw * 100;
      const double bw_pv = r.v_bytes / (r.pk_pv * 1e-3) / copy_bw * 100;
      const double bw_dec = r.all_bytes / (r.pk_dec * 1e-3) / copy_bw * 100;
      std::printf("%-5s %5d %6d %4d %2d | %6.2f | %8.1f %8.1f %6.2f | %8.1f %8.1f %6.2f | %8.1f %8.1f %6.2f %6.2f | %7.1f %6.1f %6.1f %6s | %7.1f %6.2f\n",
                  r.src.c_str(), r.bh, r.T, r.D, r.g, r.ratio, r.cb_kq * 1e3, r.pk_kq * 1e3, r.cb_kq / r.pk_kq,
                  r.cb_pv * 1e3, r.pk_pv * 1e3, r.cb_pv / r.pk_pv, r.pk_dec * 1e3, r.sdpa * 1e3,
                  r.sdpa / r.pk_dec, 0.7 * r.ratio, bw_kq, bw_pv, bw_dec, "",
                  (r.flush - r.append_noflush) * 1e3, (r.flush - r.append_noflush) / r.pk_dec * 100);
      std::fflush(stdout);
    }
  }
  std::printf("\ncolumns: times in microseconds (median); x = speedup over the baseline on its left; ratio = all-in\n"
              "compression ratio r (fp16 bytes / (compressed bytes used + residual bytes)); bw_* = compressed bytes the\n"
              "call reads / time, as %% of the copy bandwidth; flush = extra GPU time of an append that flushes one block per\n"
              "sequence over one that does not; %%dec = flush / decode step.\n");
  cublasDestroy(cb);
  if (d_real) cudaFree(d_real);
  return 0;
}
