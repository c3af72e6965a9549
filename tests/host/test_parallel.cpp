// Parallel CPU attention (issue 19; cpu/parallel.h, cpu/attention.cpp): every attention
// call gives the same bits for any params.n_threads and on a caller's task runner, and the
// split (merged) results equal float64 references on the decompressed K/V: real SmolLM2
// K/V/q of data/ (several spans per sequence) and odd shapes (one sequence, many
// sequences, empty ones, lengths off the block grid, sink tokens with K centring, residual
// tokens only, a sliding window). Also the runner itself: every item once, errors
// rethrown, nested and concurrent calls. Written to run under ThreadSanitizer too.
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include "cpu/parallel.h"
#include "helpers.h"
#include "safetensors_f16.h"
#define PACKKV_EXPERIMENTAL_API
#include "packkv/packkv_experimental.h"

namespace {

// ---- the caller's runners of packkv_x_cache_set_parallel ----

// One std::thread per task but the first (run on the calling thread).
void threads_runner(void* user, int32_t n, packkv_x_task_fn task, void* ctx) {
  static_cast<std::atomic<int>*>(user)->fetch_add(1);
  std::vector<std::thread> ts;
  for (int32_t i = 1; i < n; ++i) ts.emplace_back(task, ctx, i);
  task(ctx, 0);
  for (std::thread& t : ts) t.join();
}

// All tasks one after another, last first (a runner with one thread).
void serial_runner(void* user, int32_t n, packkv_x_task_fn task, void* ctx) {
  static_cast<std::atomic<int>*>(user)->fetch_add(1);
  for (int32_t i = n - 1; i >= 0; --i) task(ctx, i);
}

// ---- every attention call's results ----

struct Results {
  std::vector<float> scores, apply, decode, lse, multi, multi_lse;
  std::vector<uint8_t> kv;  // every sequence decompressed, and its stats (the blocks encoded in parallel)
  bool operator==(const Results& o) const {
    return scores == o.scores && apply == o.apply && decode == o.decode && lse == o.lse && multi == o.multi &&
           multi_lse == o.multi_lse && kv == o.kv;
  }
};

struct Call {
  std::vector<int32_t> ids;
  int hq = 0, d = 0, hkv = 0;
  std::vector<float> q;      // [n_seqs][hq][d]
  std::vector<float> q2;     // decode_multi: [n_seqs][hq][2][d]
  std::vector<float> probs;  // [n_seqs][hq][ld]
  int64_t ld = 1;
};

Results run(const packkv_cache_t* c, const Call& a) {
  const int n = (int)a.ids.size();
  Results r;
  r.scores.assign((size_t)n * a.hq * a.ld, -7.0f);
  r.apply.assign((size_t)n * a.hq * a.d, -7.0f);
  r.decode.assign(r.apply.size(), -7.0f);
  r.lse.assign((size_t)n * a.hq, -7.0f);
  r.multi.assign(2 * r.apply.size(), -7.0f);
  r.multi_lse.assign(2 * r.lse.size(), -7.0f);
  const float scale = 1.0f / std::sqrt((float)a.d);
  REQUIRE(packkv_attn_scores(c, n, a.ids.data(), a.hq, a.q.data(), PACKKV_DTYPE_F32, r.scores.data(), a.ld, nullptr,
                             0, nullptr) == PACKKV_OK);
  REQUIRE(packkv_attn_apply(c, n, a.ids.data(), a.hq, a.probs.data(), a.ld, r.apply.data(), nullptr, 0, nullptr) ==
          PACKKV_OK);
  REQUIRE(packkv_attn_decode(c, n, a.ids.data(), a.hq, a.q.data(), PACKKV_DTYPE_F32, scale, r.decode.data(),
                             r.lse.data(), nullptr, 0, nullptr) == PACKKV_OK);
  REQUIRE(packkv_attn_decode_multi(c, n, a.ids.data(), a.hq, 2, a.q2.data(), PACKKV_DTYPE_F32, scale,
                                   r.multi.data(), r.multi_lse.data(), nullptr, 0, nullptr) == PACKKV_OK);
  for (int32_t id : a.ids) {
    const pkt::Decompressed dq = pkt::decompress(c, id, (size_t)a.hkv * a.d);
    const packkv_cache_stats_t st = pkt::stats(c, id);
    for (const std::vector<float>* x : {&dq.k, &dq.v}) {
      const uint8_t* b = reinterpret_cast<const uint8_t*>(x->data());
      r.kv.insert(r.kv.end(), b, b + x->size() * sizeof(float));  // NaN (expired) compares bytewise
    }
    const uint8_t* b = reinterpret_cast<const uint8_t*>(&st);
    r.kv.insert(r.kv.end(), b, b + sizeof st);
  }
  return r;
}

Call make_call(const packkv_cache_t* c, const std::vector<int32_t>& ids, int hq, int d, unsigned seed) {
  Call a;
  a.ids = ids;
  a.hq = hq;
  a.d = d;
  for (int32_t id : ids) a.ld = std::max(a.ld, pkt::seq_len(c, id));
  a.q = pkt::kv_data(ids.size(), hq, d, seed, 0.5f);
  a.q2 = pkt::kv_data(2 * ids.size(), hq, d, seed + 1, 0.5f);
  a.probs.resize(ids.size() * hq * (size_t)a.ld);
  for (size_t i = 0; i < a.probs.size(); ++i) a.probs[i] = 1.0f / (float)(1 + (i * 7) % 29);
  return a;
}

// The checks of one cache: n_threads 1 vs 2, 3, 8 and two caller runners give the same
// bits; the results equal float64 references on the decompressed K/V (tokens before the
// window start excluded).
void check_cache(const packkv_cache_params_t& base, const std::vector<int32_t>& ids, int hq,
                 const std::function<void(packkv_cache_t*)>& fill) {
  const int d = base.head_dim, hkv = base.n_kv_heads;
  const size_t row = (size_t)hkv * d;
  std::vector<Results> all;
  for (int threads : {1, 2, 3, 8, -1, -2}) {
    packkv_cache_params_t p = base;
    p.n_threads = threads > 0 ? threads : 1;
    pkt::Cache c(p);
    std::atomic<int> runs{0};
    if (threads == -1) REQUIRE(packkv_x_cache_set_parallel(c, threads_runner, &runs, 5) == PACKKV_OK);
    if (threads == -2) REQUIRE(packkv_x_cache_set_parallel(c, serial_runner, &runs, 3) == PACKKV_OK);
    fill(c);
    Call a = make_call(c, ids, hq, d, 11);
    a.hkv = hkv;
    all.push_back(run(c, a));
    INFO("n_threads " << threads);
    CHECK(all.back() == all.front());
    if (threads < 0) CHECK(runs.load() >= 0);  // short calls may stay on the calling thread
    if (threads != 1) continue;
    // float64 references, sequence by sequence
    const double scale = 1.0 / std::sqrt((double)d);
    for (size_t i = 0; i < ids.size(); ++i) {
      const int64_t n = pkt::seq_len(c, ids[i]);
      int64_t start = 0;
      REQUIRE(packkv_x_cache_window_start(c, ids[i], &start) == PACKKV_OK);
      const Results& r = all.front();
      if (n == 0) {
        for (int j = 0; j < hq; ++j) CHECK(std::isinf(r.lse[i * hq + j]));
        continue;
      }
      pkt::Decompressed dq = pkt::decompress(c, ids[i], row);
      const size_t live = (size_t)(n - start);
      std::vector<float> k(dq.k.begin() + (ptrdiff_t)(start * row), dq.k.end());
      std::vector<float> v(dq.v.begin() + (ptrdiff_t)(start * row), dq.v.end());
      std::vector<float> qi(a.q.begin() + (ptrdiff_t)(i * hq * d), a.q.begin() + (ptrdiff_t)((i + 1) * hq * d));
      const std::vector<double> rs = pkt::ref_scores(k, live, hkv, d, qi, hq);
      std::vector<float> gs((size_t)hq * live);
      for (int j = 0; j < hq; ++j) {
        for (size_t t = 0; t < live; ++t) gs[(size_t)j * live + t] = r.scores[(i * hq + j) * a.ld + start + t];
        for (int64_t t = 0; t < start; ++t) CHECK(std::isinf(r.scores[(i * hq + j) * a.ld + t]));
      }
      CHECK(pkt::rel_l2(rs, gs) <= 1e-5);
      std::vector<double> lse;
      const std::vector<double> rp = pkt::ref_softmax(rs, live, hq, scale, &lse);
      const std::vector<double> rd = pkt::ref_apply(v, live, hkv, d, rp, hq);
      std::vector<float> gd(r.decode.begin() + (ptrdiff_t)(i * hq * d), r.decode.begin() + (ptrdiff_t)((i + 1) * hq * d));
      CHECK(pkt::rel_l2(rd, gd) <= 1e-5);
      for (int j = 0; j < hq; ++j) CHECK(r.lse[i * hq + j] == doctest::Approx(lse[j]).epsilon(1e-6));
      std::vector<double> pp((size_t)hq * live);
      for (int j = 0; j < hq; ++j)
        for (size_t t = 0; t < live; ++t) pp[(size_t)j * live + t] = a.probs[(i * hq + j) * a.ld + start + t];
      const std::vector<double> ra = pkt::ref_apply(v, live, hkv, d, pp, hq);
      std::vector<float> ga(r.apply.begin() + (ptrdiff_t)(i * hq * d), r.apply.begin() + (ptrdiff_t)((i + 1) * hq * d));
      CHECK(pkt::rel_l2(ra, ga) <= 1e-5);
    }
  }
}

void append_n(packkv_cache_t* c, int seq, size_t n, int hkv, int d, unsigned seed, size_t chunk = 0) {
  const std::vector<float> k = pkt::kv_data(n, hkv, d, seed), v = pkt::kv_data(n, hkv, d, seed + 100);
  const size_t row = (size_t)hkv * d;
  if (chunk == 0) chunk = n;
  for (size_t t = 0; t < n; t += chunk) pkt::append1(c, seq, k, v, t, (int)std::min(chunk, n - t), row);
}

}  // namespace

TEST_CASE("parallel attention: real SmolLM2 K/V, q and lengths over several spans") {
  const std::string path = std::string(PACKKV_DATA_DIR) + "/smollm2_kv_sample.safetensors";
  const pkt::Tensor16 k = pkt::read_f16(path, "layer.15.k"), v = pkt::read_f16(path, "layer.15.v");
  REQUIRE(k.shape == std::vector<int64_t>{2048, 3, 64});
  const int hkv = 3, d = 64, hq = 9;
  packkv_cache_params_t p = pkt::params(hkv, d, 4);
  // lengths: 2048 (4 spans), 1000 (2 spans, off the block grid), 77 (one span), 0
  const std::vector<int32_t> lens = {2048, 1000, 77, 0};
  check_cache(p, {0, 1, 2, 3}, hq, [&](packkv_cache_t* c) {
    for (int s = 0; s < 4; ++s) {
      int32_t id = s, n = lens[s];
      if (n == 0) continue;
      REQUIRE(packkv_cache_append(c, 1, &id, &n, k.v.data(), v.v.data(), PACKKV_DTYPE_F16, nullptr) == PACKKV_OK);
    }
  });
  // the real queries: decode over the 2048 tokens (attention as the model computes it,
  // without the causal mask: every query sees the whole cache) on 1 and 4 threads
  const pkt::Tensor16 q = pkt::read_f16(path, "layer.15.q");
  std::vector<float> qf((size_t)hq * d);
  for (size_t x = 0; x < qf.size(); ++x) qf[x] = pkt::half_to_float(q.v[(size_t)255 * hq * d + x]);
  std::vector<float> out1(qf.size()), out4(qf.size());
  for (int threads : {1, 4}) {
    p.n_threads = threads;
    pkt::Cache c(p);
    int32_t id = 0, n = 2048;
    REQUIRE(packkv_cache_append(c, 1, &id, &n, k.v.data(), v.v.data(), PACKKV_DTYPE_F16, nullptr) == PACKKV_OK);
    REQUIRE(packkv_attn_decode(c, 1, &id, hq, qf.data(), PACKKV_DTYPE_F32, 0.125f, (threads == 1 ? out1 : out4).data(),
                               nullptr, nullptr, 0, nullptr) == PACKKV_OK);
    if (threads == 1) {
      const pkt::Decompressed dq = pkt::decompress(c, 0, (size_t)hkv * d);
      const std::vector<double> rs = pkt::ref_scores(dq.k, 2048, hkv, d, qf, hq);
      const std::vector<double> rd = pkt::ref_apply(dq.v, 2048, hkv, d, pkt::ref_softmax(rs, 2048, hq, 0.125), hq);
      CHECK(pkt::rel_l2(rd, out1) <= 1e-5);
    }
  }
  CHECK(out1 == out4);
}

TEST_CASE("parallel attention: odd shapes give the same bits on any thread count") {
  SUBCASE("one long sequence (16 spans), GQA 4") {
    const packkv_cache_params_t p = pkt::params(2, 64, 1);
    check_cache(p, {0}, 8, [](packkv_cache_t* c) { append_n(c, 0, 9000, 2, 64, 1); });
  }
  SUBCASE("many sequences of mixed lengths, block_tokens 16, decode-step appends") {
    packkv_cache_params_t p = pkt::params(2, 32, 9);
    p.block_tokens = 16;
    p.residual_tokens = 5;
    check_cache(p, {8, 0, 3, 5, 1, 2, 7, 4, 6}, 2, [](packkv_cache_t* c) {
      const size_t lens[9] = {1, 17, 600, 0, 1500, 64, 33, 2000, 530};
      for (int s = 0; s < 9; ++s)
        if (lens[s]) append_n(c, s, lens[s], 2, 32, 10 + s, s % 2 ? 1 + lens[s] / 7 : 0);
    });
  }
  SUBCASE("one append of many sequences: their blocks are encoded in parallel") {
    packkv_cache_params_t p = pkt::params(2, 64, 4);
    p.sink_tokens = 3;
    p.k_transform = PACKKV_K_TRANSFORM_CENTER;
    check_cache(p, {3, 2, 1, 0}, 4, [](packkv_cache_t* c) {
      const int32_t ids[4] = {2, 0, 3, 1}, counts[4] = {1000, 70, 0, 2600};
      const size_t total = 1000 + 70 + 2600;
      const std::vector<float> k = pkt::kv_data(total, 2, 64, 21), v = pkt::kv_data(total, 2, 64, 22);
      REQUIRE(packkv_cache_append(c, 4, ids, counts, k.data(), v.data(), PACKKV_DTYPE_F32, nullptr) == PACKKV_OK);
      REQUIRE(packkv_cache_append(c, 4, ids, counts, v.data(), k.data(), PACKKV_DTYPE_F32, nullptr) == PACKKV_OK);
    });
  }
  SUBCASE("sink tokens and K centring") {
    packkv_cache_params_t p = pkt::params(2, 64, 2);
    p.sink_tokens = 4;
    p.k_transform = PACKKV_K_TRANSFORM_CENTER;
    check_cache(p, {0, 1}, 4, [](packkv_cache_t* c) {
      append_n(c, 0, 3, 2, 64, 5);
      append_n(c, 0, 2500, 2, 64, 6, 300);
      append_n(c, 1, 700, 2, 64, 7);
    });
  }
  SUBCASE("residual tokens only") {
    packkv_cache_params_t p = pkt::params(4, 32, 3);
    p.residual_tokens = 2000;
    check_cache(p, {2, 1, 0}, 8, [](packkv_cache_t* c) {
      append_n(c, 0, 1900, 4, 32, 8);
      append_n(c, 1, 20, 4, 32, 9);
      append_n(c, 2, 700, 4, 32, 10);
    });
  }
  SUBCASE("sliding window: expired spans and partly expired blocks") {
    const packkv_cache_params_t p = pkt::params(2, 64, 2);
    check_cache(p, {0, 1}, 4, [](packkv_cache_t* c) {
      REQUIRE(packkv_x_cache_set_window(c, 700) == PACKKV_OK);
      append_n(c, 0, 3000, 2, 64, 11, 250);
      append_n(c, 1, 5000, 2, 64, 12, 999);
    });
  }
}

TEST_CASE("n_threads and set_parallel: arguments") {
  packkv_cache_params_t p = pkt::params(2, 64);
  packkv_cache_t* c = nullptr;
  p.n_threads = -1;
  CHECK(packkv_cache_create(&p, &c) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(std::string(packkv_last_error_message()).find("n_threads") != std::string::npos);
  p.n_threads = 1025;
  CHECK(packkv_cache_create(&p, &c) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(c == nullptr);
  p.n_threads = 1024;
  pkt::Cache a(p);
  packkv_cache_params_t got;
  REQUIRE(packkv_cache_params_init(&got, sizeof got) == PACKKV_OK);
  CHECK(got.n_threads == 0);
  REQUIRE(packkv_cache_get_params(a, &got) == PACKKV_OK);
  CHECK(got.n_threads == 1024);
  std::atomic<int> runs{0};
  CHECK(packkv_x_cache_set_parallel(nullptr, threads_runner, &runs, 2) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_x_cache_set_parallel(a, threads_runner, &runs, 0) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_x_cache_set_parallel(a, threads_runner, &runs, 1025) == PACKKV_ERR_INVALID_ARGUMENT);
  CHECK(packkv_x_cache_set_parallel(a, nullptr, nullptr, 0) == PACKKV_OK);  // back to the library's workers
  // the runner is used for long calls
  REQUIRE(packkv_x_cache_set_parallel(a, threads_runner, &runs, 4) == PACKKV_OK);
  append_n(a, 0, 4000, 2, 64, 3);
  Call call = make_call(a, {0}, 2, 64, 5);
  call.hkv = 2;
  run(a, call);
  CHECK(runs.load() >= 3);  // scores, apply, decode, decode_multi over 4000 tokens: enough work to split
}

TEST_CASE("parallel_for: every item once, errors rethrown, nested and concurrent calls") {
  using packkv::Parallel;
  for (int threads : {1, 2, 5}) {
    Parallel how;
    how.n_threads = threads;
    std::vector<std::atomic<int>> hits(1000);
    packkv::parallel_for(how, 1000, 1 << 30, [&](int64_t i) { hits[(size_t)i].fetch_add(1); });
    for (auto& h : hits) CHECK(h.load() == 1);
    // an item's exception reaches the caller, after every participant returned
    CHECK_THROWS_AS(packkv::parallel_for(how, 100, 1 << 30,
                                         [&](int64_t i) {
                                           if (i == 37) throw std::runtime_error("item 37");
                                         }),
                    std::runtime_error);
    // nested: an item's own parallel_for runs (serially) without waiting for busy workers
    std::atomic<int64_t> sum{0};
    packkv::parallel_for(how, 8, 1 << 30, [&](int64_t i) {
      packkv::parallel_for(how, 10, 1 << 30, [&](int64_t k) { sum.fetch_add(i * 10 + k); });
    });
    CHECK(sum.load() == 79 * 80 / 2);
  }
  // concurrent calls from several threads share the workers
  Parallel how;
  how.n_threads = 3;
  std::atomic<int64_t> total{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&] {
      for (int r = 0; r < 20; ++r) packkv::parallel_for(how, 50, 1 << 30, [&](int64_t i) { total.fetch_add(i); });
    });
  for (std::thread& t : ts) t.join();
  CHECK(total.load() == 4 * 20 * (49 * 50 / 2));
  CHECK(packkv::default_threads() >= 1);
}

#if defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define PACKKV_TEST_NO_FORK 1
#endif
#endif
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define PACKKV_TEST_NO_FORK 1
#endif

#if !defined(PACKKV_TEST_NO_FORK)  // sanitizers do not support threads after a multi-threaded fork
TEST_CASE("parallel_for in a child of fork(): new workers, a clean exit") {
  packkv::Parallel how;
  how.n_threads = 3;
  std::atomic<int64_t> sum{0};
  packkv::parallel_for(how, 100, 1 << 30, [&](int64_t i) { sum.fetch_add(i); });  // workers exist now
  REQUIRE(sum.load() == 4950);
  std::fflush(nullptr);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    std::atomic<int64_t> s2{0};
    packkv::parallel_for(how, 100, 1 << 30, [&](int64_t i) { s2.fetch_add(i); });
    std::exit(s2.load() == 4950 ? 0 : 1);  // runs the static destructors: nothing of the parent to join
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
#endif

// n_threads above the CPUs this process may run on (fresh-findings F7): never more library
// threads than CPUs - 1 (the calling thread is the last participant), whatever n_threads
// asked for, on direct parallel_for calls and on a cache with n_threads 1024; the results
// stay those of n_threads 1 (the attention tests above compare every thread count).
TEST_CASE("n_threads beyond the CPUs starts at most CPUs - 1 library workers") {
  const int cpus = packkv::available_cpus();
  REQUIRE(cpus >= 1);
  CHECK(packkv::default_threads() == std::min(cpus, packkv::kMaxDefaultThreads));
  packkv::Parallel how;
  how.n_threads = 1024;
  std::vector<std::atomic<int>> hits(5000);
  packkv::parallel_for(how, 5000, 1 << 30, [&](int64_t i) { hits[(size_t)i].fetch_add(1); });
  for (auto& h : hits) CHECK(h.load() == 1);
  // workers start at once for a call that wants them: exactly CPUs - 1 now, whatever ran before
  CHECK(packkv::library_workers() == cpus - 1);
  packkv_cache_params_t p = pkt::params(2, 64);
  p.n_threads = 1024;
  pkt::Cache a(p);
  append_n(a, 0, 4000, 2, 64, 3);
  Call call = make_call(a, {0}, 2, 64, 5);
  call.hkv = 2;
  const Results got = run(a, call);
  CHECK(packkv::library_workers() == cpus - 1);
  // the same bits as one thread
  p.n_threads = 1;
  pkt::Cache b(p);
  append_n(b, 0, 4000, 2, 64, 3);
  Call ref = make_call(b, {0}, 2, 64, 5);
  ref.hkv = 2;
  CHECK(run(b, ref) == got);
  CHECK(packkv::library_workers() == cpus - 1);
}
