// Encode ahead (issue 16): a block that is complete in a sequence's residual window but not
// yet flushed (it is flushed residual_tokens appends after it became complete) is encoded
// by a background thread, so that the append that flushes it only places and copies its
// blob (cpu/append.cpp: schedule_ahead, and the flush step that claims the result).
//
// The thread: ONE per process, shared by every CPU cache, started by the first job; jobs
// run one at a time in the order they were submitted. SCHED_BATCH on Linux (its wake-up
// never preempts the appending thread); after a job it looks at its queue every 2 ms for
// 2 s, then sleeps until a job wakes it (encode_ahead.cpp: kPoll, kLinger -- a wake-up
// costs the queuing append 15-350 us on a loaded VM, bench/RESULTS.md session 8).
// One thread, not the library's workers (cpu/parallel.h): those serve a call that waits
// for them (parallel_for), and a job that outlives the call needs a runner that nobody
// waits on; one is enough for single-token decoding (a block of 8 KV heads x 128 takes
// ~0.2 ms to encode and has residual_tokens appends of time), and the process never
// holds more than one such thread, however many caches.
//
// A job's work reads inputs that its owner keeps unchanged until it settles the job
// (settle() below: the cache's block tokens in its residual ring) and writes only the
// job's own outputs; a job never throws out (a failure marks it failed: the owner then
// encodes inline). Results never depend on timing: the owner uses a job's output only
// when it is done, and computes the same bytes itself otherwise.
// fork(): a child process has no runner thread; jobs queued in the parent stay queued
// (their owner claims and runs them inline), the one running at the fork is marked failed.
#ifndef PACKKV_CPU_ENCODE_AHEAD_H
#define PACKKV_CPU_ENCODE_AHEAD_H

#include <stdint.h>

#include <functional>
#include <memory>
#include <vector>

namespace packkv {

// One block encoded ahead of its flush.
struct AheadJob {
  enum State { kQueued, kRunning, kDone, kFailed, kClaimed, kCancelled };
  std::function<void(AheadJob&)> work;  // fills blob (and mean); may throw (then kFailed)
  std::vector<uint8_t> blob;            // the encoded block (kDone)
  std::vector<float> mean;              // K centring, the sequence's block 0: its K mean
  int state = kQueued;                  // guarded by the runner (settle)
};

// Faults in the memory pages of [p, p + n) writable without writing to them
// (madvise MADV_POPULATE_WRITE, Linux 5.14 and later; elsewhere, or on failure, nothing):
// a job prefaults where its block's blob will go in its sequence's open page, so that the
// flush step's copy takes no page faults (~2 us each on a VM: ~25 us per 40 KB blob).
// Changes no byte; p may be any address (the range is widened to whole memory pages).
void prefault(uint8_t* p, size_t n) noexcept;

// Queues job on the process's runner thread (started on first use). May throw
// (allocation, thread creation): then nothing was queued.
void submit_ahead(const std::shared_ptr<AheadJob>& job);

// Settles job for its owner (the cache thread): waits while it runs; a job still queued
// becomes kClaimed (claim: the owner will run it itself) or kCancelled (!claim). Returns
// the state then: kDone (blob and mean are final and no longer touched by the runner) or
// another state (the owner computes the block itself). After it returns, the runner
// neither reads the job's inputs nor writes its outputs. No throw.
int settle_ahead(AheadJob& job, bool claim) noexcept;

// Whether a CPU cache encodes ahead: when it may use more than one thread (n_threads,
// the participants of its parallel work, > 1, and more than one CPU available) and runs
// its work on the library's threads (caller_runner false: no packkv_x_cache_set_parallel).
// Read by a cache at creation and at set_parallel.
bool ahead_enabled(int n_threads, bool caller_runner);

// ---- for tests (test_encode_ahead.cpp); thread-safe ----
// Forces the choice of ahead_enabled for caches created (or set_parallel) from now on:
// 1 always, 0 never, -1 back to the rule above.
void force_ahead_for_tests(int mode);
// While paused the runner starts no job (queued ones stay queued: their owners claim them).
void pause_ahead_for_tests(bool paused);
// Returns once no job runs and (unless paused) none is queued.
void wait_ahead_idle_for_tests();
// Jobs the runner has completed (kDone) since the process started.
int64_t ahead_jobs_done_for_tests();

}  // namespace packkv

#endif  // PACKKV_CPU_ENCODE_AHEAD_H
