// A pool of fixed-size host pages for compressed blocks, shared by the caches of one
// device (every layer of a model) and bounded by an optional byte budget. A sequence's
// blobs are placed into pages (cpu/cpu_cache.h: BlockRef) and never move: growing a
// sequence takes another page instead of copying its store.
//
// Memory: each page is one anonymous mmap of page_bytes (a multiple of 4096), so that
// pages released to the system really leave the process (RSS shrinks) and untouched page
// ends cost no resident memory. In grow-on-demand mode a page whose last reference goes
// is unmapped at once; in reserve mode (engines that reserve memory once) the whole
// budget is mapped and populated at creation and pages return to the pool's free list.
//
// Reference counts: a page counts the references to it: one per block placed in it
// (across all sequences: forked sequences share blocks) plus one while it is some
// sequence's open page (the page that sequence writes its next blobs into). The page is
// released when the count reaches zero.
//
// Thread safety: every method may be called from any thread at any time (one mutex
// guards the free list, the counters and the cache table; reference counts are atomic).
// A page's contents are written only by the cache that holds it as its open page, under
// that cache's own serialization (packkv.h "Thread safety").
#ifndef PACKKV_POOL_PAGE_POOL_H
#define PACKKV_POOL_PAGE_POOL_H

#include <stddef.h>
#include <stdint.h>

#include <atomic>
#include <map>
#include <mutex>
#include <vector>

namespace packkv {

struct Page {
  uint8_t* data = nullptr;
  std::atomic<int64_t> refs{0};
};

// Counters of a pool (a consistent snapshot).
struct PoolCounters {
  int64_t page_bytes = 0;
  int64_t budget_bytes = 0;  // 0: no budget
  int64_t pages_held = 0;    // pages mapped (in use + free list)
  int64_t pages_in_use = 0;  // pages with at least one reference
  int64_t n_caches = 0;
};

class PagePool {
 public:
  // Page sizes: a multiple of kPageAlign in [kMinPageBytes, kMaxPageBytes].
  static constexpr size_t kPageAlign = 4096;
  static constexpr size_t kMinPageBytes = 4096;
  static constexpr size_t kMaxPageBytes = (size_t)1 << 31;

  // budget_bytes 0: no budget (grow on demand without a bound); otherwise the pool never
  // holds more than floor(budget_bytes / page_bytes) pages. reserve: map and populate
  // all of them now (needs a budget). Throws Error (bad sizes, out of host memory).
  PagePool(size_t page_bytes, int64_t budget_bytes, bool reserve);
  ~PagePool();
  PagePool(const PagePool&) = delete;
  PagePool& operator=(const PagePool&) = delete;

  size_t page_bytes() const { return page_bytes_; }
  int64_t budget_pages() const { return budget_pages_; }  // -1: no budget

  // Takes n pages, each with one reference: all or nothing. Throws
  // Error(PACKKV_X_ERR_BUDGET_EXCEEDED) when the budget cannot hold n more pages (the
  // thread's last-bytes-needed record is set to n * page_bytes), or
  // Error(PACKKV_ERR_OUT_OF_HOST_MEMORY) when the system refuses a page; the pool is
  // then unchanged.
  void acquire(size_t n, std::vector<Page*>* out);
  // Adds / drops one reference. release() of the last reference returns the page.
  // Never throw.
  static void retain(Page* p) { p->refs.fetch_add(1, std::memory_order_relaxed); }
  void release(Page* p) noexcept;

  PoolCounters counters() const;
  // Free bytes under the budget (whole pages not in use), -1 without a budget.
  int64_t free_bytes() const;

  // Caches attached to the pool report the compressed bytes and tokens they have
  // written so far (lifetime totals) for tokens_fit(); at attach, their largest block
  // (bytes) and block_tokens. Never throw (attach may throw std::bad_alloc).
  void attach(const void* cache, size_t worst_blob_bytes, int block_tokens);
  void detach(const void* cache) noexcept;
  void note_compressed(const void* cache, int64_t bytes, int64_t tokens) noexcept;
  // Tokens that still fit in the free pages when each token is appended to every
  // attached cache (every layer of a model), each cache's blocks taking the size of its
  // mean block so far (before its first block: its largest) and packed whole into pages
  // as cpu/page_table.h places them (16-aligned, a block never split); -1 without a
  // budget. Ignores the room left in pages already in use and the residual windows.
  int64_t tokens_fit() const;

 private:
  struct CacheRate {
    size_t worst = 0;  // largest block, bytes
    int block_tokens = 1;
    int64_t bytes = 0, tokens = 0;
  };
  uint8_t* map_page(bool populate);  // nullptr on failure
  void unmap_page(uint8_t* p) noexcept;

  const size_t page_bytes_;
  int64_t budget_pages_ = -1;
  bool reserve_ = false;
  mutable std::mutex mu_;
  std::vector<Page*> free_;  // reserve mode: pages mapped but not in use
  int64_t held_ = 0, in_use_ = 0;
  std::map<const void*, CacheRate> caches_;
};

// Bytes of pool memory the last failed call on this thread needed beyond what the pool's
// budget allowed (0 after any other outcome). Set by PagePool::acquire; cleared by every
// C entry point on entry.
int64_t& last_bytes_needed();

}  // namespace packkv

#endif  // PACKKV_POOL_PAGE_POOL_H
