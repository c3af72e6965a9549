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

// The library's workers: one set per process, grown on demand, joined at exit.
class Workers {
 public:
  static Workers& instance() {
    static Workers w;
    return w;
  }

  // Runs job->drain() on the calling thread and on up to `helpers` free workers; returns
  // when every participant has returned.
  void run(Job* job, int helpers) {
    Slot slot{job, helpers, 0, 0};
    {
      std::lock_guard<std::mutex> lock(m_);
      while ((int)threads_.size() < helpers) threads_.emplace_back([this] { loop(); });
      queue_.push_back(&slot);
    }
    if (helpers == 1)
      cv_.notify_one();
    else
      cv_.notify_all();
    job->drain();
    std::unique_lock<std::mutex> lock(m_);
    // Every item is claimed: no worker may join any more.
    queue_.erase(std::find(queue_.begin(), queue_.end(), &slot));
    done_cv_.wait(lock, [&] { return slot.finished == slot.joined; });
  }

  ~Workers() {
    {
      std::lock_guard<std::mutex> lock(m_);
      stop_ = true;
    }
    cv_.notify_all();
    for (std::thread& t : threads_) t.join();
  }

 private:
  struct Slot {
    Job* job;
    int wanted;    // workers that may join
    int joined;    // workers that did
    int finished;  // of those, the ones that returned
  };

  void loop() {
    std::unique_lock<std::mutex> lock(m_);
    for (;;) {
      Slot* s = nullptr;
      cv_.wait(lock, [&] {
        if (stop_) return true;
        for (Slot* q : queue_)
          if (q->joined < q->wanted) {
            s = q;
            return true;
          }
        return false;
      });
      if (!s) return;  // stop_
      ++s->joined;
      lock.unlock();
      s->job->drain();
      lock.lock();
      ++s->finished;
      done_cv_.notify_all();
    }
  }

  std::mutex m_;
  std::condition_variable cv_, done_cv_;
  std::deque<Slot*> queue_;
  std::vector<std::thread> threads_;
  bool stop_ = false;
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
