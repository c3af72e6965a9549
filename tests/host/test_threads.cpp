// Concurrency contract of packkv.h ("Thread safety", API-CONVENTIONS.md R9), written to
// be run under ThreadSanitizer (the `tsan` preset) as well as in the normal suite:
//   - calls taking a const cache (attention, stats, decompress, queries) run
//     concurrently on one cache and give the single-threaded results bit for bit;
//   - independent caches on different threads do not interact (each thread's results
//     equal a serial run on the same data);
//   - the last error is per thread: interleaved failures on several threads never
//     show another thread's message, and success on one thread does not clear
//     another thread's message;
//   - a cache may move between threads (created on one, used and destroyed on others).
#include <doctest/doctest.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "helpers.h"

namespace {

constexpr int kThreads = 4;

// A reusable barrier (std::barrier is C++20).
class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  /// Blocks until n threads have arrived.
  void wait() {
    std::unique_lock<std::mutex> lock(m_);
    const int gen = gen_;
    if (++count_ == n_) {
      count_ = 0;
      ++gen_;
      cv_.notify_all();
    } else {
      cv_.wait(lock, [&] { return gen != gen_; });
    }
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int n_, count_ = 0, gen_ = 0;
};

// Everything the read-only calls return for one cache, for bit-exact comparison.
struct Reads {
  std::vector<float> scores, apply_out, decode_out, lse, k, v;
  packkv_cache_stats_t stats;
  int64_t len0 = 0, len1 = 0;
  bool operator==(const Reads& o) const {
    return scores == o.scores && apply_out == o.apply_out && decode_out == o.decode_out && lse == o.lse &&
           k == o.k && v == o.v && std::memcmp(&stats, &o.stats, sizeof stats) == 0 && len0 == o.len0 &&
           len1 == o.len1;
  }
};

// Runs every const call on sequences 0 and 1 of c (2 KV heads, head_dim 64, 4 query
// heads). Returns false if any call fails. No REQUIRE: safe on worker threads.
bool read_all(const packkv_cache_t* c, const std::vector<float>& q, Reads* r) {
  const int hq = 4, d = 64;
  const int32_t ids[2] = {1, 0};
  bool ok = packkv_cache_seq_length(c, 0, &r->len0) == PACKKV_OK && packkv_cache_seq_length(c, 1, &r->len1) == PACKKV_OK;
  const int64_t ld = std::max(r->len0, r->len1);
  r->scores.assign((size_t)2 * hq * ld, 0.0f);
  r->apply_out.assign((size_t)2 * hq * d, 0.0f);
  r->decode_out.assign((size_t)2 * hq * d, 0.0f);
  r->lse.assign((size_t)2 * hq, 0.0f);
  size_t ws = 1;
  ok = ok && packkv_attn_workspace_size(c, 2, hq, &ws) == PACKKV_OK && ws == 0;
  ok = ok && packkv_attn_scores(c, 2, ids, hq, q.data(), PACKKV_DTYPE_F32, r->scores.data(), ld, nullptr, 0,
                                nullptr) == PACKKV_OK;
  std::vector<float> probs(r->scores.size());
  for (size_t i = 0; i < probs.size(); ++i) probs[i] = 1.0f / (float)(1 + i % 13);
  ok = ok && packkv_attn_apply(c, 2, ids, hq, probs.data(), ld, r->apply_out.data(), nullptr, 0, nullptr) == PACKKV_OK;
  ok = ok && packkv_attn_decode(c, 2, ids, hq, q.data(), PACKKV_DTYPE_F32, 0.125f, r->decode_out.data(),
                                r->lse.data(), nullptr, 0, nullptr) == PACKKV_OK;
  r->k.assign((size_t)r->len0 * 128, 0.0f);
  r->v.assign((size_t)r->len0 * 128, 0.0f);
  ok = ok && packkv_cache_decompress(c, 0, r->k.data(), r->v.data(), r->len0, nullptr) == PACKKV_OK;
  std::memset(&r->stats, 0, sizeof r->stats);
  r->stats.struct_size = sizeof r->stats;
  ok = ok && packkv_cache_stats(c, -1, &r->stats) == PACKKV_OK;
  packkv_cache_params_t p;
  p.struct_size = sizeof p;
  int32_t dev = 0;
  ok = ok && packkv_cache_get_params(c, &p) == PACKKV_OK && packkv_cache_device(c, &dev) == PACKKV_OK &&
       packkv_cache_sync(c) == PACKKV_OK;
  return ok;
}

// Fills a cache (2 heads x 64, two sequences) with `seed`-dependent data: compressed
// blocks and residual tokens in both sequences.
void fill(packkv_cache_t* c, unsigned seed, bool* ok) {
  auto k = pkt::kv_data(500, 2, 64, seed), v = pkt::kv_data(500, 2, 64, seed + 1);
  int32_t ids[2] = {0, 1}, n[2] = {300, 200};
  *ok = packkv_cache_append(c, 2, ids, n, k.data(), v.data(), PACKKV_DTYPE_F32, nullptr) == PACKKV_OK;
  // and a few decode steps, one token at a time
  for (int t = 0; t < 5 && *ok; ++t) {
    int32_t one = 1;
    *ok = packkv_cache_append(c, 1, &ids[t % 2], &one, k.data() + (size_t)t * 128, v.data() + (size_t)t * 128,
                              PACKKV_DTYPE_F32, nullptr) == PACKKV_OK;
  }
}

packkv_cache_params_t thread_params() {
  packkv_cache_params_t p = pkt::params(2, 64, 2);
  p.residual_tokens = 64;
  return p;
}

}  // namespace

TEST_CASE("threads: every const call runs concurrently on one cache with bit-identical results") {
  pkt::Cache c(thread_params());
  bool ok = false;
  fill(c, 1, &ok);
  REQUIRE(ok);
  const std::vector<float> q = pkt::kv_data(2, 4, 64, 9, 0.5f);
  Reads ref;
  REQUIRE(read_all(c, q, &ref));
  Barrier start(kThreads);
  std::atomic<int> failures{0};
  std::vector<std::thread> ts;
  for (int w = 0; w < kThreads; ++w)
    ts.emplace_back([&] {
      const packkv_cache_t* cc = c;
      start.wait();  // maximise overlap
      for (int it = 0; it < 3; ++it) {
        Reads r;
        if (!read_all(cc, q, &r) || !(r == ref)) ++failures;
      }
    });
  for (auto& t : ts) t.join();
  CHECK(failures.load() == 0);
}

TEST_CASE("threads: independent caches on many threads equal a serial run") {
  const std::vector<float> q = pkt::kv_data(2, 4, 64, 9, 0.5f);
  std::vector<Reads> serial(kThreads);
  for (int w = 0; w < kThreads; ++w) {
    pkt::Cache c(thread_params());
    bool ok = false;
    fill(c, 10u + (unsigned)w, &ok);
    REQUIRE(ok);
    REQUIRE(read_all(c, q, &serial[w]));
  }
  Barrier start(kThreads);
  std::atomic<int> failures{0};
  std::vector<std::thread> ts;
  for (int w = 0; w < kThreads; ++w)
    ts.emplace_back([&, w] {
      start.wait();
      for (int round = 0; round < 2; ++round) {
        packkv_cache_params_t p = thread_params();
        packkv_cache_t* c = nullptr;
        if (packkv_cache_create(&p, &c) != PACKKV_OK) {
          ++failures;
          return;
        }
        bool ok = false;
        fill(c, 10u + (unsigned)w, &ok);
        Reads r;
        if (!ok || !read_all(c, q, &r) || !(r == serial[w])) ++failures;
        // mutate, then start over on the same handle
        if (packkv_cache_remove_seq(c, 1) != PACKKV_OK || packkv_cache_reset(c) != PACKKV_OK) ++failures;
        packkv_cache_destroy(c);
      }
    });
  for (auto& t : ts) t.join();
  CHECK(failures.load() == 0);
}

TEST_CASE("threads: the last error is per thread under interleaving") {
  Barrier step(kThreads);
  std::atomic<int> failures{0};
  std::vector<std::thread> ts;
  for (int w = 0; w < kThreads; ++w)
    ts.emplace_back([&, w] {
      packkv_cache_params_t p;
      packkv_cache_params_init(&p, sizeof p);
      p.n_kv_heads = 1;
      p.head_dim = 32;
      p.max_seqs = 2;
      packkv_cache_t* c = nullptr;
      if (packkv_cache_create(&p, &c) != PACKKV_OK) {
        ++failures;
        return;
      }
      for (int it = 0; it < 20; ++it) {
        // each thread fails in its own way: a distinct bad seq id in its message
        const int32_t bad = 100 + w;
        int64_t n = 0;
        if (packkv_cache_seq_length(c, bad, &n) != PACKKV_ERR_INVALID_ARGUMENT) ++failures;
        const std::string mine = packkv_last_error_message();
        step.wait();  // every thread has failed; some now succeed
        if (w % 2 == 0 && packkv_cache_seq_length(c, 0, &n) != PACKKV_OK) ++failures;
        step.wait();
        const std::string now = packkv_last_error_message();
        if (w % 2 == 0) {
          if (!now.empty()) ++failures;  // my success cleared my message
        } else if (now != mine || now.find("seq_id " + std::to_string(bad)) == std::string::npos) {
          ++failures;  // another thread's failure or success leaked into mine
        }
        char buf[16];
        if (packkv_copy_last_error(buf, sizeof buf) != now.size()) ++failures;
        step.wait();
      }
      packkv_cache_destroy(c);
    });
  for (auto& t : ts) t.join();
  CHECK(failures.load() == 0);
}

TEST_CASE("threads: a cache created on one thread is used and destroyed on others") {
  packkv_cache_t* c = nullptr;
  std::thread([&] {
    packkv_cache_params_t p = thread_params();
    packkv_cache_create(&p, &c);
  }).join();
  REQUIRE(c != nullptr);
  bool ok = false;
  std::thread([&] { fill(c, 3, &ok); }).join();
  CHECK(ok);
  CHECK(pkt::seq_len(c, 0) == 303);
  std::thread([&] { packkv_cache_destroy(c); }).join();
}
