// Encode ahead (src/cpu/cpu_cache.h, src/cpu/encode_ahead.h): a cache that encodes the
// complete, unflushed blocks of its residual windows on the background runner must hold
// exactly what the same cache without it holds -- every block's bytes, the stats, the
// decompressed values and attention bit for bit -- whether a job finished before its
// flush (the runner idle: wait_ahead_idle_for_tests), never started (runner paused: the
// flush claims and encodes inline) or anything in between (free-running); and every call
// that changes a sequence, or fails, with blocks pending must leave it as without them.
// No timing is asserted: only the states that timing may produce are forced.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cpu/encode_ahead.h"
#include "cpu/parallel.h"
#include "seq_ops_helpers.h"

namespace {

using namespace seqt;

// The runner's state during a test: how the jobs are left before each mutating call.
enum class Timing { kFinished, kQueued, kFree };

// Restores the runner and the policy whatever the test does.
struct RunnerGuard {
  ~RunnerGuard() {
    packkv::pause_ahead_for_tests(false);
    packkv::force_ahead_for_tests(-1);
  }
};

// A cache of `p` in its own pool, encoding ahead or not.
std::unique_ptr<pkt::Cache> make(const packkv_cache_params_t& p, bool ahead) {
  packkv::force_ahead_for_tests(ahead ? 1 : 0);
  std::unique_ptr<pkt::Cache> c(new pkt::Cache(p));
  packkv::force_ahead_for_tests(-1);
  return c;
}

// Puts the runner in the state of `t` before a mutating call on the ahead cache.
void before_call(Timing t) {
  if (t == Timing::kFinished) {
    packkv::pause_ahead_for_tests(false);
    packkv::wait_ahead_idle_for_tests();
  } else if (t == Timing::kQueued) {
    packkv::pause_ahead_for_tests(true);
    packkv::wait_ahead_idle_for_tests();  // the job running when paused ends
  } else {
    packkv::pause_ahead_for_tests(false);
  }
}

const char* name(Timing t) { return t == Timing::kFinished ? "finished" : t == Timing::kQueued ? "queued" : "free"; }

// Token data of each sequence (different seeds), enough for every test here.
struct Data {
  std::vector<std::vector<float>> k, v;
  explicit Data(int seqs, size_t tokens = 2400) {
    for (int s = 0; s < seqs; ++s) {
      k.push_back(pkt::kv_data(tokens, H, D, 100 + 2 * s));
      v.push_back(pkt::kv_data(tokens, H, D, 101 + 2 * s));
    }
  }
};

// One append call of several sequences: ids[i] gets counts[i] tokens from position at[i]
// of its data (at advanced).
packkv_status_t append_many(packkv_cache_t* c, const std::vector<int32_t>& ids, const std::vector<int32_t>& counts,
                            const Data& d, std::vector<size_t>* at) {
  std::vector<float> k, v;
  for (size_t i = 0; i < ids.size(); ++i) {
    const size_t from = (*at)[(size_t)ids[i]] * kRow, n = (size_t)counts[i] * kRow;
    k.insert(k.end(), d.k[(size_t)ids[i]].begin() + from, d.k[(size_t)ids[i]].begin() + from + n);
    v.insert(v.end(), d.v[(size_t)ids[i]].begin() + from, d.v[(size_t)ids[i]].begin() + from + n);
  }
  const packkv_status_t st = packkv_cache_append(c, (int32_t)ids.size(), ids.data(), counts.data(), k.data(), v.data(),
                                                 PACKKV_DTYPE_F32, nullptr);
  if (st == PACKKV_OK)
    for (size_t i = 0; i < ids.size(); ++i) (*at)[(size_t)ids[i]] += (size_t)counts[i];
  return st;
}

// Everything observable of both caches equal, bit for bit, and attention of each sequence.
void check_same(packkv_cache_t* a, packkv_cache_t* b, int seqs) {
  CHECK(pkt::state(a, seqs, kRow) == pkt::state(b, seqs, kRow));
  const std::vector<float> q = pkt::kv_data(1, kHq, D, 7);
  for (int s = 0; s < seqs; ++s)
    if (pkt::seq_len(a, s) > 0) CHECK(decode(a, s, q) == decode(b, s, q));
}

// Grows `seqs` sequences of both caches alike by appends of mixed sizes (single tokens,
// a few, whole blocks, more than a window), one sequence or several per call.
void grow(packkv_cache_t* on, packkv_cache_t* off, const Data& d, int seqs, int steps, Timing t,
          std::vector<size_t>* at_on, std::vector<size_t>* at_off) {
  static const int32_t sizes[] = {1, 1, 3, 64, 1, 1, 130, 17, 1, 1, 1, 63, 1, 1, 200, 1};
  for (int i = 0; i < steps; ++i) {
    std::vector<int32_t> ids, counts;
    const int32_t n = sizes[i % 16];
    ids.push_back(i % seqs);
    counts.push_back(n);
    if (i % 5 == 4 && seqs > 1) {  // a call of two sequences
      ids.push_back((i + 1) % seqs);
      counts.push_back(sizes[(i + 3) % 16]);
    }
    before_call(t);
    REQUIRE(append_many(on, ids, counts, d, at_on) == PACKKV_OK);
    REQUIRE(append_many(off, ids, counts, d, at_off) == PACKKV_OK);
  }
}

}  // namespace

TEST_CASE("encode ahead: the policy (on with more than one thread on the library's runner)") {
  RunnerGuard guard;
  CHECK_FALSE(packkv::ahead_enabled(1, false));  // n_threads 1: no library thread
  CHECK_FALSE(packkv::ahead_enabled(4, true));   // the caller's task runner: no library thread
  CHECK(packkv::ahead_enabled(2, false) == (packkv::available_cpus() > 1));
  packkv::force_ahead_for_tests(1);
  CHECK(packkv::ahead_enabled(1, true));
  packkv::force_ahead_for_tests(0);
  CHECK_FALSE(packkv::ahead_enabled(8, false));
}

TEST_CASE("encode ahead: blocks, stats, decompress and attention identical with and without, mixed appends") {
  RunnerGuard guard;
  const int seqs = 3;
  const Data d(seqs);
  struct Variant {
    std::string what;
    int sink;
    packkv_k_transform_t kt;
    packkv_dtype_t kv;
    int64_t window;  // sliding window (expired blocks freed while others are pending)
  };
  for (const Variant& var :
       {Variant{"plain f16", 0, PACKKV_K_TRANSFORM_NONE, PACKKV_DTYPE_F16, 0},
        Variant{"K centring, 4 sink tokens", 4, PACKKV_K_TRANSFORM_CENTER, PACKKV_DTYPE_F16, 0},
        Variant{"f32 window, sliding window 150", 0, PACKKV_K_TRANSFORM_NONE, PACKKV_DTYPE_F32, 150}})
    for (Timing t : {Timing::kFinished, Timing::kQueued, Timing::kFree}) {
      CAPTURE(var.what);
      CAPTURE(std::string(name(t)));
      packkv_cache_params_t p = pkt::params(H, D, seqs);
      p.sink_tokens = var.sink;
      p.k_transform = var.kt;
      p.kv_dtype = var.kv;
      std::unique_ptr<pkt::Cache> on = make(p, true), off = make(p, false);
      if (var.window > 0) {
        REQUIRE(packkv_x_cache_set_window(*on, var.window) == PACKKV_OK);
        REQUIRE(packkv_x_cache_set_window(*off, var.window) == PACKKV_OK);
      }
      std::vector<size_t> at_on(seqs, 0), at_off(seqs, 0);
      before_call(t);  // (queued: the runner paused before the count is read)
      const int64_t done0 = packkv::ahead_jobs_done_for_tests();
      grow(*on, *off, d, seqs, 60, t, &at_on, &at_off);
      check_same(*on, *off, seqs);
      grow(*on, *off, d, seqs, 45, t, &at_on, &at_off);
      const int64_t done1 = packkv::ahead_jobs_done_for_tests();
      before_call(Timing::kFree);
      check_same(*on, *off, seqs);
      if (var.window == 0) CHECK(pkt::stats(*on).n_blocks > 20);
      // the runner did encode blocks that appends then used (finished), or none (queued)
      if (t == Timing::kFinished) CHECK(done1 > done0);
      if (t == Timing::kQueued) CHECK(done1 == done0);
    }
}

TEST_CASE("encode ahead: every sequence operation with blocks pending leaves the cache as without them") {
  RunnerGuard guard;
  const int seqs = 3;
  const Data d(seqs);
  const packkv_cache_params_t p = pkt::params(H, D, seqs);
  enum Op { kTruncWindow, kTruncPending, kTruncBlock, kTruncZero, kFork, kRemove, kReset, kImport, kSetWindow,
            kNonFinite, kNumOps };
  for (int op = 0; op < kNumOps; ++op)
    for (Timing t : {Timing::kFinished, Timing::kQueued, Timing::kFree}) {
      CAPTURE(op);
      CAPTURE(std::string(name(t)));
      std::unique_ptr<pkt::Cache> on = make(p, true), off = make(p, false);
      std::vector<size_t> at_on(seqs, 0), at_off(seqs, 0);
      // sequences 0 and 1: blocks flushed and two complete blocks pending in the window
      for (int s = 0; s < 2; ++s) {
        for (packkv_cache_t* c : {(packkv_cache_t*)*on, (packkv_cache_t*)*off}) {
          std::vector<size_t>& at = c == *on ? at_on : at_off;
          REQUIRE(append_many(c, {s}, {200}, d, &at) == PACKKV_OK);
          for (int i = 0; i < 100; ++i) REQUIRE(append_many(c, {s}, {1}, d, &at) == PACKKV_OK);
        }
      }
      REQUIRE(pkt::stats(*on, 0).n_residual_tokens >= 128);  // two whole blocks in the window
      before_call(t);
      const int64_t len0 = pkt::seq_len(*on, 0);
      for (packkv_cache_t* c : {(packkv_cache_t*)*on, (packkv_cache_t*)*off}) {
        std::vector<size_t>& at = c == *on ? at_on : at_off;
        switch (op) {
          case kTruncWindow:  // inside the window, after the complete blocks
            REQUIRE(packkv_x_cache_truncate(c, 0, len0 - 10) == PACKKV_OK);
            at[0] -= 10;
            break;
          case kTruncPending:  // inside the first pending block
            REQUIRE(packkv_x_cache_truncate(c, 0, len0 - 150) == PACKKV_OK);
            at[0] -= 150;
            break;
          case kTruncBlock:  // inside a compressed block (returns to the window)
            REQUIRE(packkv_x_cache_truncate(c, 0, 100) == PACKKV_OK);
            at[0] = 100;
            break;
          case kTruncZero:
            REQUIRE(packkv_x_cache_truncate(c, 0, 0) == PACKKV_OK);
            at[0] = 0;
            break;
          case kFork:
            REQUIRE(packkv_x_cache_fork(c, 0, 2) == PACKKV_OK);
            at[2] = 1000;  // then different tokens than 0's
            break;
          case kRemove:
            REQUIRE(packkv_cache_remove_seq(c, 0) == PACKKV_OK);
            at[0] = 0;
            break;
          case kReset:
            REQUIRE(packkv_cache_reset(c) == PACKKV_OK);
            at.assign(seqs, 0);
            break;
          case kImport: {  // sequence 1's export (from the cache without encode ahead) into 2
            size_t size = 0, written = 0;
            REQUIRE(packkv_x_cache_export_size(*off, 1, &size) == PACKKV_OK);
            std::vector<uint8_t> buf(size);
            REQUIRE(packkv_x_cache_export(*off, 1, buf.data(), size, &written) == PACKKV_OK);
            REQUIRE(packkv_x_cache_import(c, 2, buf.data(), written) == PACKKV_OK);
            at[2] = at[1];
            break;
          }
          case kSetWindow: {  // refused on a cache that holds tokens: nothing changes
            const pkt::State before = pkt::state(c, seqs, kRow);
            CHECK(packkv_x_cache_set_window(c, 150) == PACKKV_ERR_INVALID_STATE);
            CHECK(pkt::state(c, seqs, kRow) == before);
            break;
          }
          case kNonFinite: {  // fails: nothing changes, the pending jobs stay valid
            const pkt::State before = pkt::state(c, seqs, kRow);
            std::vector<float> bad(2 * kRow, 0.5f);
            bad[kRow + 7] = NAN;
            const int32_t ids[2] = {1, 0}, counts[2] = {1, 1};
            CHECK(packkv_cache_append(c, 2, ids, counts, bad.data(), bad.data(), PACKKV_DTYPE_F32, nullptr) ==
                  PACKKV_ERR_INVALID_ARGUMENT);
            CHECK(pkt::state(c, seqs, kRow) == before);
            break;
          }
          default:
            FAIL("op");
        }
      }
      before_call(Timing::kFree);
      check_same(*on, *off, seqs);
      // then both go on alike (mixed sizes, several sequences per call)
      grow(*on, *off, d, seqs, 40, t, &at_on, &at_off);
      before_call(Timing::kFree);
      check_same(*on, *off, seqs);
    }
}

TEST_CASE("encode ahead: an append that exceeds the pool budget fails at the same append and changes nothing") {
  RunnerGuard guard;
  const Data d(2, 3000);
  const int64_t page = 16384;
  for (Timing t : {Timing::kFinished, Timing::kQueued, Timing::kFree}) {
    CAPTURE(std::string(name(t)));
    std::vector<int64_t> failed_at;
    std::vector<pkt::State> states;
    for (bool ahead : {true, false}) {
      pkt::Pool pool(pkt::pool_params(page, 3 * page));
      packkv::force_ahead_for_tests(ahead ? 1 : 0);
      pkt::PoolCache c(pkt::params(H, D, 2), pool);
      packkv::force_ahead_for_tests(-1);
      std::vector<size_t> at(2, 0);
      packkv_status_t st = PACKKV_OK;
      int64_t n = 0;
      pkt::State before;
      while (st == PACKKV_OK && at[0] < 2900) {
        if (ahead) before_call(t);
        if (ahead) before = pkt::state(c, 2, kRow, pool);
        st = append_many(c, {0, 1}, {1, (int32_t)(n % 3)}, d, &at);
        ++n;
      }
      REQUIRE(st == PACKKV_X_ERR_BUDGET_EXCEEDED);
      failed_at.push_back(n);
      if (ahead) CHECK(pkt::state(c, 2, kRow, pool) == before);  // the failed append changed nothing
      before_call(Timing::kFree);
      states.push_back(pkt::state(c, 2, kRow, pool));
    }
    CHECK(failed_at[0] == failed_at[1]);
    CHECK(states[0] == states[1]);
  }
}

TEST_CASE("encode ahead: destroying a cache with jobs queued, running or finished") {
  RunnerGuard guard;
  const Data d(2);
  const packkv_cache_params_t p = pkt::params(H, D, 2);
  for (Timing t : {Timing::kFinished, Timing::kQueued, Timing::kFree}) {
    CAPTURE(std::string(name(t)));
    std::unique_ptr<pkt::Cache> on = make(p, true);
    std::vector<size_t> at(2, 0);
    for (int i = 0; i < 300; ++i) {
      if (i == 299) before_call(t);
      REQUIRE(append_many(*on, {i % 2}, {1 + i % 5}, d, &at) == PACKKV_OK);
    }
    on.reset();  // settles every job; the runner never touches the freed windows
    packkv::pause_ahead_for_tests(false);
    packkv::wait_ahead_idle_for_tests();
  }
  // set_parallel turns it off and settles the jobs; the cache goes on alike
  std::unique_ptr<pkt::Cache> on = make(p, true), off = make(p, false);
  std::vector<size_t> a1(2, 0), a2(2, 0);
  grow(*on, *off, d, 2, 20, Timing::kFree, &a1, &a2);
  const packkv_x_parallel_fn serial = [](void*, int32_t n, void (*task)(void*, int32_t), void* ctx) {
    for (int32_t i = 0; i < n; ++i) task(ctx, i);
  };
  REQUIRE(packkv_x_cache_set_parallel(*on, serial, nullptr, 2) == PACKKV_OK);
  grow(*on, *off, d, 2, 20, Timing::kFree, &a1, &a2);
  check_same(*on, *off, 2);
}

TEST_CASE("encode ahead: read-only calls from several threads while blocks are encoded in the background") {
  RunnerGuard guard;
  const int seqs = 2;
  const Data d(seqs);
  const packkv_cache_params_t p = pkt::params(H, D, seqs);
  std::unique_ptr<pkt::Cache> on = make(p, true), off = make(p, false);
  std::vector<size_t> at_on(seqs, 0), at_off(seqs, 0);
  const std::vector<float> q = pkt::kv_data(1, kHq, D, 9);
  for (int round = 0; round < 24; ++round) {
    // appends that complete blocks (jobs queued), then readers at once, without waiting
    for (int i = 0; i < 40; ++i) {
      const std::vector<int32_t> ids = {0, 1}, counts = {1 + (i + round) % 3, 1};
      REQUIRE(append_many(*on, ids, counts, d, &at_on) == PACKKV_OK);
      REQUIRE(append_many(*off, ids, counts, d, &at_off) == PACKKV_OK);
    }
    std::vector<std::vector<float>> ref;
    for (int s = 0; s < seqs; ++s) ref.push_back(decode(*off, s, q));
    size_t ref_export = 0;
    REQUIRE(packkv_x_cache_export_size(*off, 0, &ref_export) == PACKKV_OK);
    const int64_t ref_used = pkt::stats(*off).compressed_bytes_used;
    std::vector<int> ok(4, 0);
    std::vector<std::thread> readers;
    for (int r = 0; r < 4; ++r)
      readers.emplace_back([&, r] {
        const packkv_cache_t* c = *on;
        bool same = true;
        for (int j = 0; j < 3; ++j) {
          const int s = (r + j) % seqs;
          std::vector<float> out((size_t)kHq * D), lse(kHq);
          int32_t id = s;
          same = same && packkv_attn_decode(c, 1, &id, kHq, q.data(), PACKKV_DTYPE_F32, 0.17f, out.data(), lse.data(),
                                            nullptr, 0, nullptr) == PACKKV_OK;
          out.insert(out.end(), lse.begin(), lse.end());
          same = same && out == ref[(size_t)s];
          packkv_cache_stats_t st;
          std::memset(&st, 0, sizeof st);
          st.struct_size = sizeof st;
          same = same && packkv_cache_stats(c, -1, &st) == PACKKV_OK && st.compressed_bytes_used == ref_used;
          size_t size = 0;
          same = same && packkv_x_cache_export_size(c, 0, &size) == PACKKV_OK && size == ref_export;
          std::vector<uint8_t> buf(size);
          size_t written = 0;
          same = same && packkv_x_cache_export(c, 0, buf.data(), size, &written) == PACKKV_OK && written == size;
        }
        ok[(size_t)r] = same ? 1 : 0;
      });
    for (std::thread& th : readers) th.join();
    CHECK(ok == std::vector<int>(4, 1));
  }
  check_same(*on, *off, seqs);
}
