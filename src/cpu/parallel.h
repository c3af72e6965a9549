// How the CPU backend runs independent work items on several threads (issue 19).
//
// A call's work is a list of items (cpu/attention.cpp: one (sequence, KV head, span of
// tokens) each; append.cpp: one block to encode each). parallel_for hands them out to
// participants that each pull the next unclaimed item from one atomic counter until none
// is left (dynamic scheduling), so which thread runs which item never matters: callers
// make every item write its own output, and the results are the same bit for bit for any
// number of threads.
//
// The participants come from one of two places:
//   - the library's workers (default): the calling thread plus up to n_threads - 1
//     threads of ONE process-wide set of workers shared by every cache. Workers are
//     started on first use, as many as the largest n_threads - 1 asked for so far, and
//     sleep between calls. Several caches therefore never hold more than
//     max(n_threads) - 1 library threads in total, and concurrent calls on several user
//     threads share them (each call gets those that are free plus its own thread).
//     A call made from inside a work item (a nested call) runs on its own thread only.
//   - the caller's threads (packkv_x_cache_set_parallel): the caller's function runs
//     n_tasks tasks, each of which pulls items as above.
// An exception thrown by an item stops the hand-out of further items; the first one is
// rethrown on the calling thread once every participant has returned.
#ifndef PACKKV_CPU_PARALLEL_H
#define PACKKV_CPU_PARALLEL_H

#include <stdint.h>

#include <functional>

#define PACKKV_EXPERIMENTAL_API
#include "packkv/packkv_experimental.h"

namespace packkv {

// Where a cache's parallel work runs.
struct Parallel {
  int n_threads = 1;                         // participants at most, calling thread included (>= 1)
  packkv_x_parallel_fn caller_fn = nullptr;  // the caller's task runner, or null: the library's workers
  void* caller_user = nullptr;               // its first argument
};

// Participants used for 0 (the default of params.n_threads): the CPUs this process may
// run on (sched_getaffinity), at most kMaxDefaultThreads.
constexpr int kMaxDefaultThreads = 64;
int default_threads();

// Runs item(i) once for every i in [0, n_items). `work` estimates the total work in
// units of about 0.1 microsecond (token-query-head products): no more than one participant
// per kMinWorkPerThread units is used, so that short calls stay on the calling thread.
// Thread-safe; item must be safe to call concurrently for different i.
constexpr int64_t kMinWorkPerThread = 2048;
void parallel_for(const Parallel& how, int64_t n_items, int64_t work, const std::function<void(int64_t)>& item);

}  // namespace packkv

#endif  // PACKKV_CPU_PARALLEL_H
