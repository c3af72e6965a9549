// The process's encode-ahead runner (cpu/encode_ahead.h).
#include "cpu/encode_ahead.h"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include <pthread.h>

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
    }
    st->cv.notify_one();
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
  };

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
    std::unique_lock<std::mutex> lock(st->m);
    for (;;) {
      st->cv.wait(lock, [&] { return st->stop || !st->queue.empty(); });
      if (st->stop) return;
      std::shared_ptr<AheadJob> job = std::move(st->queue.front());
      st->queue.pop_front();
      if (job->state != AheadJob::kQueued) continue;  // claimed or cancelled by its owner
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
      st->done_cv.notify_all();
    }
  }

  State* state_;
};

}  // namespace

void submit_ahead(const std::shared_ptr<AheadJob>& job) { Runner::instance().submit(job); }

int settle_ahead(AheadJob& job, bool claim) noexcept { return Runner::instance().settle(job, claim); }

}  // namespace packkv
