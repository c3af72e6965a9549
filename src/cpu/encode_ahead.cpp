// The process's encode-ahead runner (cpu/encode_ahead.h).
#include "cpu/encode_ahead.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cpu/parallel.h"

namespace packkv {

namespace {

class Runner {
 public:
  static Runner& instance() {
    static Runner r;
    return r;
  }

  void submit(const std::shared_ptr<AheadJob>& job) {
    State* st = state_;
    {
      std::lock_guard<std::mutex> lock(st->m);
      if (st->stop) return;  // the process is exiting: the job stays queued (its owner claims it)
      if (!st->thread.joinable()) st->thread = std::thread([st] { loop(st); });
      st->queue.push_back(job);  // may throw: then nothing is queued (the thread may idle)
      if (st->polling) return;   // it looks within kPoll: no wake-up on the caller's path
    }
    st->cv.notify_one();
  }

  void pause(bool paused) {
    State* st = state_;
    {
      std::lock_guard<std::mutex> lock(st->m);
      st->paused = paused;
    }
    st->cv.notify_all();
  }

  void wait_idle() {
    State* st = state_;
    std::unique_lock<std::mutex> lock(st->m);
    st->done_cv.wait(lock, [&] { return !st->running && (st->paused || st->queue.empty() || !st->thread.joinable()); });
  }

  int64_t done() {
    State* st = state_;
    std::lock_guard<std::mutex> lock(st->m);
    return st->done;
  }

  int settle(AheadJob& job, bool claim) {
    State* st = state_;
    std::unique_lock<std::mutex> lock(st->m);
    st->done_cv.wait(lock, [&] { return job.state != AheadJob::kRunning; });
    if (job.state == AheadJob::kQueued) job.state = claim ? AheadJob::kClaimed : AheadJob::kCancelled;
    return job.state;
  }

  ~Runner() {
    State* st = state_;
    {
      std::lock_guard<std::mutex> lock(st->m);
      st->stop = true;
    }
    st->cv.notify_all();
    if (st->thread.joinable()) st->thread.join();
    // jobs still queued stay kQueued: their owners claim and run them (no state freed
    // here: a cache destroyed later still settles its jobs through state_)
  }

 private:
  struct State {
    std::mutex m;
    std::condition_variable cv, done_cv;
    std::deque<std::shared_ptr<AheadJob>> queue;
    std::thread thread;
    AheadJob* running = nullptr;
    bool stop = false;
    bool polling = false;  // idle, but looking at the queue every kPoll
    bool paused = false;   // tests: start no job
    int64_t done = 0;      // jobs completed
  };
  // After a job the thread looks at the queue every kPoll for kLinger before it sleeps
  // until woken: a wake-up (futex + inter-processor interrupt, ~10-20 us on a VM) would
  // otherwise be paid by the append that queues the next job -- the flush step of the
  // previous block -- while decoding queues one job per block_tokens appends. A job then
  // waits up to kPoll to start, far less than the residual_tokens appends it has.
  static constexpr std::chrono::milliseconds kPoll{2}, kLinger{2000};

  Runner() : state_(new State) {
    pthread_atfork(&Runner::before_fork, &Runner::after_fork_in_parent, &Runner::after_fork_in_child);
  }
  // The mutex is held across fork() so that the child's copy is in a known state.
  static void before_fork() { instance().state_->m.lock(); }
  static void after_fork_in_parent() { instance().state_->m.unlock(); }
  // The child has no runner thread: a new state (the old one, with its std::thread
  // handle, is leaked: destroying a joinable handle would terminate), the job that was
  // running marked failed (its owner encodes inline), queued ones left queued (claimed).
  static void after_fork_in_child() {
    State* old = instance().state_;
    if (old->running) old->running->state = AheadJob::kFailed;
    old->m.unlock();
    instance().state_ = new State;
  }

  static void loop(State* st) {
#if defined(__linux__) && defined(SCHED_BATCH)
    // SCHED_BATCH: a fair share of the CPU, but its wake-up never preempts the thread
    // that queued the job (with SCHED_OTHER the appending thread could be switched out
    // for the whole encode when no other CPU is idle); allowed without privileges.
    sched_param sp{};
    pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
#endif
    std::unique_lock<std::mutex> lock(st->m);
    auto last = std::chrono::steady_clock::now();  // the last job's end
    for (;;) {
      const auto ready = [&] { return st->stop || (!st->paused && !st->queue.empty()); };
      while (!ready()) {
        st->polling = std::chrono::steady_clock::now() - last < kLinger;
        if (st->polling)
          st->cv.wait_for(lock, kPoll, ready);
        else
          st->cv.wait(lock, ready);
      }
      st->polling = false;
      if (st->stop) return;
      std::shared_ptr<AheadJob> job = std::move(st->queue.front());
      st->queue.pop_front();
      if (job->state != AheadJob::kQueued) {  // claimed or cancelled by its owner
        st->done_cv.notify_all();             // (wait_idle)
        continue;
      }
      job->state = AheadJob::kRunning;
      st->running = job.get();
      lock.unlock();
      bool ok = true;
      try {
        job->work(*job);
      } catch (...) {
        ok = false;
      }
      lock.lock();
      st->running = nullptr;
      job->state = ok ? AheadJob::kDone : AheadJob::kFailed;
      st->done += ok ? 1 : 0;
      st->done_cv.notify_all();
      last = std::chrono::steady_clock::now();
    }
  }

  State* state_;
};

}  // namespace

void prefault(uint8_t* p, size_t n) noexcept {
#if defined(__linux__)
  const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  if (!p || n == 0 || page == 0 || (page & (page - 1)) != 0) return;
  const uintptr_t a = (uintptr_t)p & ~(page - 1), b = ((uintptr_t)p + n + page - 1) & ~(page - 1);
  (void)madvise((void*)a, b - a, 23 /* MADV_POPULATE_WRITE */);  // EINVAL before 5.14: nothing
#else
  (void)p;
  (void)n;
#endif
}

namespace {
std::atomic<int> g_force{-1};
}  // namespace

bool ahead_enabled(int n_threads, bool caller_runner) {
  const int f = g_force.load();
  if (f >= 0) return f == 1;
  return !caller_runner && std::min(n_threads, available_cpus()) > 1;
}

void force_ahead_for_tests(int mode) { g_force.store(mode); }
void pause_ahead_for_tests(bool paused) { Runner::instance().pause(paused); }
void wait_ahead_idle_for_tests() { Runner::instance().wait_idle(); }
int64_t ahead_jobs_done_for_tests() { return Runner::instance().done(); }

void submit_ahead(const std::shared_ptr<AheadJob>& job) { Runner::instance().submit(job); }

int settle_ahead(AheadJob& job, bool claim) noexcept { return Runner::instance().settle(job, claim); }

}  // namespace packkv
