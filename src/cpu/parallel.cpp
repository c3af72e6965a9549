// parallel_for and the process-wide workers (cpu/parallel.h).
#include "cpu/parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include <pthread.h>

#if defined(__linux__)
#include <sched.h>
#endif

namespace packkv {

namespace {

// True on a thread while it runs work items (library worker or participating caller):
// a packkv call made from there (nested) must not wait for workers that may be busy with
// the outer call's items.
thread_local bool t_in_items = false;

// The items of one call and the counter participants pull them from.
struct Job {
  const std::function<void(int64_t)>* item = nullptr;
  int64_t n_items = 0;
  std::atomic<int64_t> next{0};
  std::mutex error_mutex;
  std::exception_ptr error;

  // Pulls and runs items until none is left (or one failed).
  void drain() {
    const bool outer = t_in_items;
    t_in_items = true;
    for (;;) {
      const int64_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= n_items) break;
      try {
        (*item)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        next.store(n_items, std::memory_order_relaxed);  // hand out nothing more
      }
    }
    t_in_items = outer;
  }
};

// The library's workers: one set per process, grown on demand, joined at exit. After
// fork() the child has none of the parent's threads, and the parent's mutex and condition
// variables may be in any state (a worker between two steps, waiters that do not exist in
// the child): the child's fork handler leaks the old state (its thread handles are neither
// joined nor destroyed) and starts from a new one; workers start again on demand.
class Workers {
 public:
  static Workers& instance() {
    static Workers w;
    return w;
  }

  // Runs job->drain() on the calling thread and on up to `helpers` free workers; returns
  // when every participant has returned.
  void run(Job* job, int helpers) {
    State* st = state_;  // a fork() child changes state_ only while no call is in progress
    Slot slot{job, helpers, 0, 0};
    {
      std::lock_guard<std::mutex> lock(st->m);
      while ((int)st->threads.size() < helpers) st->threads.emplace_back([st] { loop(st); });
      st->queue.push_back(&slot);
    }
    if (helpers == 1)
      st->cv.notify_one();
    else
      st->cv.notify_all();
    job->drain();
    std::unique_lock<std::mutex> lock(st->m);
    // Every item is claimed: no worker may join any more.
    st->queue.erase(std::find(st->queue.begin(), st->queue.end(), &slot));
    st->done_cv.wait(lock, [&] { return slot.finished == slot.joined; });
  }

  ~Workers() {
    State* st = state_;
    {
      std::lock_guard<std::mutex> lock(st->m);
      st->stop = true;
    }
    st->cv.notify_all();
    for (std::thread& t : st->threads) t.join();
    delete st;
  }

 private:
  struct Slot {
    Job* job;
    int wanted;    // workers that may join
    int joined;    // workers that did
    int finished;  // of those, the ones that returned
  };
  struct State {
    std::mutex m;
    std::condition_variable cv, done_cv;
    std::deque<Slot*> queue;
    std::vector<std::thread> threads;
    bool stop = false;
  };

  Workers() : state_(new State) { pthread_atfork(nullptr, nullptr, &Workers::after_fork_in_child); }
  static void after_fork_in_child() { instance().state_ = new State; }  // the old one is leaked

  static void loop(State* st) {
    std::unique_lock<std::mutex> lock(st->m);
    for (;;) {
      Slot* s = nullptr;
      st->cv.wait(lock, [&] {
        if (st->stop) return true;
        for (Slot* q : st->queue)
          if (q->joined < q->wanted) {
            s = q;
            return true;
          }
        return false;
      });
      if (!s) return;  // stop
      ++s->joined;
      lock.unlock();
      s->job->drain();
      lock.lock();
      ++s->finished;
      st->done_cv.notify_all();
    }
  }

  State* state_;
};

// Arguments of the caller's task function.
struct CallerTask {
  Job* job;
  static void run(void* ctx, int32_t) { static_cast<CallerTask*>(ctx)->job->drain(); }
};

}  // namespace

int default_threads() {
  static const int n = [] {
    int cpus = 0;
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) cpus = CPU_COUNT(&set);
#endif
    if (cpus <= 0) cpus = (int)std::thread::hardware_concurrency();
    return std::max(1, std::min(cpus, kMaxDefaultThreads));
  }();
  return n;
}

void parallel_for(const Parallel& how, int64_t n_items, int64_t work, const std::function<void(int64_t)>& item) {
  if (n_items <= 0) return;
  int64_t want = std::min<int64_t>(n_items, std::max<int64_t>(1, work / kMinWorkPerThread));
  want = std::min<int64_t>(want, std::max(1, how.n_threads));
  Job job;
  job.item = &item;
  job.n_items = n_items;
  if (want <= 1 || (t_in_items && !how.caller_fn)) {
    job.drain();
  } else if (how.caller_fn) {
    CallerTask task{&job};
    how.caller_fn(how.caller_user, (int32_t)want, &CallerTask::run, &task);
    job.drain();  // items a runner left unclaimed (it must run every task; this is a safety net)
  } else {
    Workers::instance().run(&job, (int)want - 1);
  }
  if (job.error) std::rethrow_exception(job.error);
}

}  // namespace packkv
