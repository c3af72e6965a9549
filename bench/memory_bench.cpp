// Memory held vs used, and append latency, of the CPU cache (issue 16). Uses only the
// stable C API for the `latency` and `memory` modes, so the same binary runs against an
// older libpackkv (LD_LIBRARY_PATH) as the baseline of the same run; the `budget` mode
// uses the experimental pool API, looked up with dlsym (absent from older libraries).
//
//   latency  one sequence grown by single-token appends to --tokens (default 131072);
//            p50 / p99 / p99.9 / max of each append's wall time, and the worst step;
//            --decode 0 (default): appends back to back (a tight loop); --decode 1: an
//            engine-like loop, each append followed by packkv_attn_decode of that sequence
//            with 32 query heads (GQA 4, f32 queries, fixed seed), only the append timed
//            (CPU only); --threads N: params.n_threads (default 0: all CPUs; 1 turns the
//            CPU cache's encode ahead off, see packkv.h). Prints the load average (getloadavg)
//            before and after, and whether p99.9 <= 3 x p50 (issue 16)
//   memory   --seqs sequences of mixed lengths (uniform in [--min-len, --max-len], fixed
//            seed) grown by --grow prefill | chunk (512 tokens) | token; memory actually
//            held = RSS growth of the process (/proc/self/statm) against used =
//            compressed_bytes_used + residual_bytes, and compressed_bytes_reserved; RSS is
//            read as it is and after malloc_trim(0) (free heap memory returned: what the
//            live allocations and their fragmentation hold), the bench's own staging buffers
//            freed before both readings; and the peak RSS growth during the run (VmHWM;
//            includes the bench's staging buffers: up to 128 MB for prefill, small otherwise)
//   budget   as memory, the caches' blocks in a pool with a budget of --budget-mb MiB
//            (reserve mode: mapped and touched at creation); RSS and pool stats
//   --device G (a build with the CUDA backend): the same on CUDA caches on device G. Memory
//            held = the drop of the device's free memory (cudaMemGetInfo; the bench's
//            device staging buffers are allocated before the first reading) from before
//            the cache's creation to after the run, against the same used bytes; the
//            budget mode's pool is a device pool (packkv_x_pool_params_t.device = G).
//            latency: each append is followed by cudaStreamSynchronize, so a step's time
//            is its host call plus its kernels. memory / budget: --warm 1 (default) grows
//            and destroys a throwaway cache before the first reading (warm_up: lazily
//            loaded kernel modules and local memory are the process's, not the cache's);
//            --warm 0 reads from a cold process (the results before 2026-12-06 session 8).
// Shape: 8 KV heads x 128, blocks of 64, residual 128, fp16, default rates; K/V-like data
// (per-channel offsets + Gaussian, cpu_bench.cpp's generator), cycled from 4096 tokens.
// Usage: packkv_bench_memory latency|memory|budget [--tokens N] [--seqs S] [--min-len A]
//        [--max-len B] [--grow prefill|chunk|token] [--budget-mb M] [--device G] [--warm 0|1]
//        [--decode 0|1] [--threads N]
#include <dlfcn.h>
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#ifdef PACKKV_BENCH_CUDA
#include <cuda_runtime.h>
#endif

#include "bench_util.h"
#include "packkv/packkv.h"
#define PACKKV_EXPERIMENTAL_API
#include "packkv/packkv_experimental.h"

using packkv_bench::check;
using packkv_bench::to_half;

namespace {

using Clock = std::chrono::steady_clock;
const int H = 8, D = 128, kRow = H * D, kPoolTokens = 4096, kQueries = 64;

std::vector<uint16_t> make_kv(unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  std::vector<float> offs(kRow);
  for (float& o : offs) o = 2.0f * n01(rng);
  std::vector<uint16_t> x((size_t)kPoolTokens * kRow);
  for (size_t t = 0; t < (size_t)kPoolTokens; ++t)
    for (size_t i = 0; i < (size_t)kRow; ++i) x[t * kRow + i] = to_half(offs[i] + 0.7f * n01(rng));
  return x;
}

// Peak resident bytes of the process so far (VmHWM of /proc/self/status).
long peak_rss_bytes() {
  long kb = 0;
  FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "VmHWM: %ld kB", &kb) == 1) break;
  std::fclose(f);
  return kb * 1024;
}

long rss_bytes() {
  long pages = 0, resident = 0;
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (f) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return resident * sysconf(_SC_PAGESIZE);
}

// Device side of --device (a no-op build without CUDA: --device is refused in main).
struct Device {
  int id = -1;
  void* k = nullptr;  // staging of one append's K and V (device)
  void* v = nullptr;
  size_t bytes = 0;
#ifdef PACKKV_BENCH_CUDA
  static void ok(cudaError_t e, const char* what) {
    if (e != cudaSuccess) {
      std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
      std::exit(1);
    }
  }
  void init(int dev, size_t staging) {
    id = dev;
    ok(cudaSetDevice(dev), "cudaSetDevice");
    bytes = staging;
    ok(cudaMalloc(&k, bytes), "cudaMalloc");
    ok(cudaMalloc(&v, bytes), "cudaMalloc");
  }
  ~Device() {
    if (k) cudaFree(k);
    if (v) cudaFree(v);
  }
  // Copies n bytes of host K and V into the staging buffers; returns their device copies.
  void stage(const void* hk, const void* hv, size_t n, const void** dk, const void** dv) {
    ok(cudaMemcpy(k, hk, n, cudaMemcpyHostToDevice), "cudaMemcpy");
    ok(cudaMemcpy(v, hv, n, cudaMemcpyHostToDevice), "cudaMemcpy");
    *dk = k;
    *dv = v;
  }
  static void sync() { ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }
  // Returns the stream-ordered allocator's unused memory to the device (so that a free
  // memory reading does not count what an earlier cache left in the default pool).
  void trim() const {
    cudaMemPool_t mp;
    ok(cudaDeviceGetDefaultMemPool(&mp, id), "cudaDeviceGetDefaultMemPool");
    ok(cudaMemPoolTrimTo(mp, 0), "cudaMemPoolTrimTo");
  }
  static long free_bytes() {
    size_t f = 0, t = 0;
    ok(cudaMemGetInfo(&f, &t), "cudaMemGetInfo");
    return (long)f;
  }
#else
  void init(int, size_t) {}
  void stage(const void* hk, const void* hv, size_t, const void** dk, const void** dv) {
    *dk = hk;
    *dv = hv;
  }
  static void sync() {}
  void trim() const {}
  static long free_bytes() { return 0; }
#endif
};

struct Args {
  std::string mode;
  int device = -1;
  long tokens = 131072;
  int seqs = 1;
  long min_len = 1024, max_len = 32768;
  std::string grow = "token";
  long budget_mb = 0;
  int warm = 1;
  int decode = 0;   // latency: an attention decode after each append (untimed)
  int threads = 0;  // params.n_threads
};

packkv_cache_params_t params(int max_seqs, int device) {
  packkv_cache_params_t p;
  check(packkv_cache_params_init(&p, sizeof p), "params_init");
  p.device = device;
  p.n_kv_heads = H;
  p.head_dim = D;
  p.max_seqs = max_seqs;
  p.max_tokens_per_seq = 1 << 20;
  // the recorded results' configuration (not the library's defaults)
  p.rel_scale_k = 0.1f;
  p.rel_scale_v = 0.2f;
  p.residual_tokens = 128;
  p.sink_tokens = 0;
  return p;
}

void latency(const Args& a) {
  const std::vector<uint16_t> k = make_kv(1), v = make_kv(2);
  packkv_cache_t* c = nullptr;
  packkv_cache_params_t p = params(1, a.device);
  p.n_threads = a.threads;
  Device dev;
  const void* kin = k.data();
  const void* vin = v.data();
  if (a.device >= 0) {  // the whole token pool on the device: no copy in the timed loop
    dev.init(a.device, k.size() * 2);
    dev.stage(k.data(), v.data(), k.size() * 2, &kin, &vin);
  }
  check(packkv_cache_create(&p, &c), "create");
  std::vector<double> us((size_t)a.tokens), dec_us;
  int32_t id = 0, one = 1;
  const int n_q = 4 * H;  // GQA 4
  std::vector<float> qs((size_t)kQueries * n_q * D), out((size_t)n_q * D);
  std::mt19937 rng(7);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  for (float& x : qs) x = n01(rng);
  double load0[3] = {0, 0, 0}, load1[3] = {0, 0, 0};
  if (getloadavg(load0, 3) < 0) load0[0] = -1;
  for (long t = 0; t < a.tokens; ++t) {
    const size_t at = (size_t)(t % kPoolTokens) * kRow;
    const auto t0 = Clock::now();
    check(packkv_cache_append(c, 1, &id, &one, (const uint16_t*)kin + at, (const uint16_t*)vin + at,
                              PACKKV_DTYPE_F16, nullptr),
          "append");
    if (a.device >= 0) Device::sync();
    const auto t1 = Clock::now();
    us[(size_t)t] = std::chrono::duration<double, std::micro>(t1 - t0).count();
    if (a.decode) {
      check(packkv_attn_decode(c, 1, &id, n_q, qs.data() + (size_t)(t % kQueries) * n_q * D, PACKKV_DTYPE_F32,
                               0.08838834764831845f, out.data(), nullptr, nullptr, 0, nullptr),
            "decode");
      dec_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t1).count());
    }
  }
  if (getloadavg(load1, 3) < 0) load1[0] = -1;
  const long worst = (long)(std::max_element(us.begin(), us.end()) - us.begin());
  const double worst_us = us[(size_t)worst];
  // flush steps (every 64th token once the window is full) and the others, apart
  std::vector<double> flush, plain;
  for (long t = 0; t < a.tokens; ++t) ((t >= 191 && (t - 191) % 64 == 0) ? flush : plain).push_back(us[(size_t)t]);
  auto q = [](std::vector<double> x, double f) {
    std::sort(x.begin(), x.end());
    return x.empty() ? 0.0 : x[std::min(x.size() - 1, (size_t)(f * (double)x.size()))];
  };
  packkv_cache_stats_t s;
  s.struct_size = sizeof s;
  check(packkv_cache_stats(c, -1, &s), "stats");
  std::printf("latency: %ld single-token appends, 8x128 f16, %s, %s, n_threads %d (%s)\n", a.tokens,
              a.device >= 0 ? ("device " + std::to_string(a.device) + ", each step synchronized").c_str() : "CPU",
              a.decode ? "decode loop (append + attn_decode of 32 query heads, append timed)" : "tight loop",
              a.threads, packkv_version_string());
  std::printf("  load average before %.2f %.2f %.2f, after %.2f %.2f %.2f\n", load0[0], load0[1], load0[2],
              load1[0], load1[1], load1[2]);
  std::printf("  all steps   p50 %.2f us  p99 %.2f us  p99.9 %.2f us  max %.1f us (at token %ld)\n", q(us, 0.5),
              q(us, 0.99), q(us, 0.999), worst_us, worst);
  std::printf("  flush steps p50 %.1f us  p99 %.1f us  max %.1f us  (%zu steps)\n", q(flush, 0.5), q(flush, 0.99),
              q(flush, 1.0), flush.size());
  std::printf("  other steps p50 %.2f us  p99 %.2f us  p99.9 %.2f us  max %.1f us\n", q(plain, 0.5), q(plain, 0.99),
              q(plain, 0.999), q(plain, 1.0));
  if (a.decode) std::printf("  decode (untimed in the above) p50 %.1f us\n", q(dec_us, 0.5));
  std::printf("  p99.9 / p50 = %.2f: issue 16's p99.9 <= 3 x p50 %s\n", q(us, 0.999) / q(us, 0.5),
              q(us, 0.999) <= 3 * q(us, 0.5) ? "holds" : "does not hold");
  std::printf("  used %.1f MB, reserved %.1f MB (%.3fx)\n", s.compressed_bytes_used / 1e6,
              s.compressed_bytes_reserved / 1e6, (double)s.compressed_bytes_reserved / (double)s.compressed_bytes_used);
  packkv_cache_destroy(c);
}

// dlsym'd pool API (absent from libraries before issue 16)
struct PoolApi {
  decltype(&packkv_x_pool_params_init) params_init = nullptr;
  decltype(&packkv_x_pool_create) create = nullptr;
  decltype(&packkv_x_pool_destroy) destroy = nullptr;
  decltype(&packkv_x_cache_create_in_pool) create_in = nullptr;
  decltype(&packkv_x_pool_stats) stats = nullptr;
  decltype(&packkv_x_pool_page_bytes_for) page_bytes_for = nullptr;
  bool load_page_bytes_for() {
    page_bytes_for = (decltype(page_bytes_for))dlsym(RTLD_DEFAULT, "packkv_x_pool_page_bytes_for");
    return page_bytes_for != nullptr;
  }
  bool load() {
    params_init = (decltype(params_init))dlsym(RTLD_DEFAULT, "packkv_x_pool_params_init");
    create = (decltype(create))dlsym(RTLD_DEFAULT, "packkv_x_pool_create");
    destroy = (decltype(destroy))dlsym(RTLD_DEFAULT, "packkv_x_pool_destroy");
    create_in = (decltype(create_in))dlsym(RTLD_DEFAULT, "packkv_x_cache_create_in_pool");
    stats = (decltype(stats))dlsym(RTLD_DEFAULT, "packkv_x_pool_stats");
    return params_init && create && destroy && create_in && stats;
  }
};

// --warm 1 (device): one throwaway cache of the same shape, grown by a 700-token prefill
// and 70 single tokens, then destroyed, before the first free-memory reading: the process's
// one-time device costs (kernel modules loaded lazily at their first launch, the local
// memory the driver reserves for them) are then not counted as the measured cache's.
void warm_up(const Args& a, Device& dev, const std::vector<uint16_t>& k, const std::vector<uint16_t>& v) {
  if (a.device < 0 || !a.warm) return;
  packkv_cache_t* c = nullptr;
  const packkv_cache_params_t p = params(1, a.device);
  check(packkv_cache_create(&p, &c), "create (warm-up)");
  const void* kin = nullptr;
  const void* vin = nullptr;
  dev.stage(k.data(), v.data(), (size_t)770 * kRow * 2, &kin, &vin);
  int32_t id = 0, n = 700;
  check(packkv_cache_append(c, 1, &id, &n, kin, vin, PACKKV_DTYPE_F16, nullptr), "append (warm-up)");
  n = 1;
  for (int t = 700; t < 770; ++t)
    check(packkv_cache_append(c, 1, &id, &n, (const uint16_t*)kin + (size_t)t * kRow,
                              (const uint16_t*)vin + (size_t)t * kRow, PACKKV_DTYPE_F16, nullptr),
          "append (warm-up)");
  Device::sync();
  packkv_cache_destroy(c);
  Device::sync();
  dev.trim();
}

void memory(const Args& a, bool budget) {
  const std::vector<uint16_t> k = make_kv(1), v = make_kv(2);
  std::mt19937 rng(7);
  std::uniform_int_distribution<long> len(a.min_len, a.max_len);
  std::vector<long> lens((size_t)a.seqs);
  long total = 0;
  for (long& l : lens) total += (l = len(rng));
  PoolApi api;
  packkv_x_pool_t* pool = nullptr;
  const long step = a.grow == "prefill" ? (1L << 40) : a.grow == "chunk" ? 512 : 1;
  const size_t staging_cap = (size_t)64 << 20;  // elements of K per append (plus one sequence's step)
  Device dev;
  if (a.device >= 0)
    dev.init(a.device, 2 * (staging_cap + (size_t)std::min<long>(step, a.max_len) * kRow + (size_t)kRow));
  if (a.device >= 0) Device::sync();
  warm_up(a, dev, k, v);
  const long dfree0 = a.device >= 0 ? Device::free_bytes() : 0;
  malloc_trim(0);
  const long rss0 = rss_bytes();
  packkv_cache_t* c = nullptr;
  const packkv_cache_params_t p = params(a.seqs, a.device);
  if (budget) {
    if (!api.load()) {
      std::printf("budget: this libpackkv has no pool API\n");
      return;
    }
    packkv_x_pool_params_t pp;
    check(api.params_init(&pp, sizeof pp), "pool params");
    pp.budget_bytes = a.budget_mb << 20;
    pp.reserve = 1;
    pp.device = a.device;
    check(api.create(&pp, &pool), "pool create");
    check(api.create_in(&p, pool, &c), "create in pool");
  } else {
    check(packkv_cache_create(&p, &c), "create");
  }
  const long rss_created = rss_bytes();
  const long dfree_created = a.device >= 0 ? Device::free_bytes() : 0;
  // grow: every sequence gets its tokens by the chosen pattern, sequences interleaved
  std::vector<long> done((size_t)a.seqs, 0);
  std::vector<int32_t> ids, counts;
  std::vector<uint16_t> kb, vb;
  long dfree_first = 0;
  const auto t0 = Clock::now();
  for (bool more = true; more;) {
    more = false;
    ids.clear();
    counts.clear();
    kb.clear();
    vb.clear();
    for (int s = 0; s < a.seqs; ++s) {
      const long n = std::min(step, lens[(size_t)s] - done[(size_t)s]);
      if (n <= 0) continue;
      ids.push_back(s);
      counts.push_back((int32_t)n);
      for (long t = done[(size_t)s]; t < done[(size_t)s] + n; ++t) {
        const size_t at = (size_t)((t * 7 + s) % kPoolTokens) * kRow;
        kb.insert(kb.end(), &k[at], &k[at] + kRow);
        vb.insert(vb.end(), &v[at], &v[at] + kRow);
      }
      done[(size_t)s] += n;
      more = true;
      if (kb.size() > staging_cap) break;  // bounded staging buffer for prefills
    }
    if (!ids.empty()) {
      const void* kin = kb.data();
      const void* vin = vb.data();
      if (a.device >= 0) dev.stage(kb.data(), vb.data(), kb.size() * 2, &kin, &vin);
      check(packkv_cache_append(c, (int32_t)ids.size(), ids.data(), counts.data(), kin, vin, PACKKV_DTYPE_F16,
                                nullptr),
            "append");
      if (a.device >= 0 && dfree_first == 0) {  // after the first append call: rings, first pages, scratch
        Device::sync();
        dfree_first = Device::free_bytes();
      }
    }
  }
  if (a.device >= 0) Device::sync();
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  std::vector<uint16_t>().swap(kb);
  std::vector<uint16_t>().swap(vb);
  const long rss1 = rss_bytes();
  malloc_trim(0);
  const long rss1t = rss_bytes();
  packkv_cache_stats_t s;
  s.struct_size = sizeof s;
  check(packkv_cache_stats(c, -1, &s), "stats");
  const double used = (double)(s.compressed_bytes_used + s.residual_bytes);
  std::printf("%s: %d seqs, %ld tokens (lengths %ld..%ld), grow by %s, %s, %.1f s\n", budget ? "budget" : "memory",
              a.seqs, total, a.min_len, a.max_len, a.grow.c_str(), packkv_version_string(), secs);
  std::printf("  used %.1f MB (compressed %.1f + residual %.1f), reserved (stats) %.1f MB = %.3fx compressed used\n",
              used / 1e6, s.compressed_bytes_used / 1e6, s.residual_bytes / 1e6, s.compressed_bytes_reserved / 1e6,
              (double)s.compressed_bytes_reserved / (double)s.compressed_bytes_used);
  std::printf("  RSS growth %.1f MB = %.3fx used; after malloc_trim %.1f MB = %.3fx used (at create %.1f MB)\n",
              (rss1 - rss0) / 1e6, (double)(rss1 - rss0) / used, (rss1t - rss0) / 1e6, (double)(rss1t - rss0) / used,
              (rss_created - rss0) / 1e6);
  const long peak = peak_rss_bytes() - rss0;
  std::printf("  peak RSS growth during the run %.1f MB = %.3fx used\n", peak / 1e6, (double)peak / used);
  if (a.device >= 0) {
    const long held = dfree0 - Device::free_bytes();
    std::printf("  device %d: free memory drop %.1f MB = %.3fx used, %.3fx compressed used (at create %.1f MB)\n",
                a.device, held / 1e6, (double)held / used, (double)held / (double)s.compressed_bytes_used,
                (dfree0 - dfree_created) / 1e6);
    std::printf("  device %d: drop after the first append call %.1f MB\n", a.device, (dfree0 - dfree_first) / 1e6);
    // issue 16's bound: held <= 1.05 x used + one page per sequence
    int64_t page = 0;  // 0 for a budget's shared pool (its page size: the pool stats)
    if (!budget && api.load_page_bytes_for() && api.page_bytes_for(&p, &page) != PACKKV_OK) page = 0;
    if (page)
      std::printf("  bound 1.05 x used + %d pages of %.3f MB = %.1f MB: %s\n", a.seqs, page / 1e6,
                  (1.05 * used + (double)a.seqs * (double)page) / 1e6,
                  held <= 1.05 * used + (double)a.seqs * (double)page ? "held within" : "held ABOVE");
  }
  if (budget) {
    packkv_x_pool_stats_t ps;
    ps.struct_size = sizeof ps;
    check(api.stats(pool, &ps), "pool stats");
    std::printf("  pool: budget %.1f MB, held %.1f MB, in use %.1f MB, free %.1f MB\n", ps.budget_bytes / 1e6,
                ps.bytes_held / 1e6, ps.bytes_in_use / 1e6, ps.free_bytes / 1e6);
  }
  packkv_cache_destroy(c);
  if (pool) api.destroy(pool);
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  if (argc >= 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) {
    std::printf("usage: %s latency|memory|budget [options]\n"
                "Memory held vs used and append latency of the CPU (or --device G: CUDA) cache; modes and options in the\n"
                "header of bench/memory_bench.cpp.\n", argv[0]);
    return 0;
  }
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s latency|memory|budget [options] (--help)\n", argv[0]);
    return 2;
  }
  a.mode = argv[1];
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string o = argv[i], v = argv[i + 1];
    if (o == "--tokens") a.tokens = std::atol(v.c_str());
    else if (o == "--seqs") a.seqs = std::atoi(v.c_str());
    else if (o == "--min-len") a.min_len = std::atol(v.c_str());
    else if (o == "--max-len") a.max_len = std::atol(v.c_str());
    else if (o == "--grow") a.grow = v;
    else if (o == "--budget-mb") a.budget_mb = std::atol(v.c_str());
    else if (o == "--device") a.device = std::atoi(v.c_str());
    else if (o == "--warm") a.warm = std::atoi(v.c_str());
    else if (o == "--decode") a.decode = std::atoi(v.c_str());
    else if (o == "--threads") a.threads = std::atoi(v.c_str());
    else {
      std::fprintf(stderr, "unknown option %s\n", o.c_str());
      return 2;
    }
  }
  if (a.tokens < 1 || a.seqs < 1 || a.min_len < 1 || a.max_len < a.min_len ||
      (a.grow != "prefill" && a.grow != "chunk" && a.grow != "token") || (a.mode == "budget" && a.budget_mb < 1)) {
    std::fprintf(stderr, "bad options\n");
    return 2;
  }
#ifndef PACKKV_BENCH_CUDA
  if (a.device >= 0) {
    std::fprintf(stderr, "--device: this build of the benchmark has no CUDA\n");
    return 2;
  }
#endif
  if (a.decode && a.device >= 0) {
    std::fprintf(stderr, "--decode: CPU caches only (the queries are host memory)\n");
    return 2;
  }
  if (a.mode == "latency") latency(a);
  else if (a.mode == "memory") memory(a, false);
  else if (a.mode == "budget") memory(a, true);
  else {
    std::fprintf(stderr, "unknown mode %s\n", a.mode.c_str());
    return 2;
  }
  return 0;
}
