// A pool of fixed-size host pages for compressed blocks, shared by the caches of one
// device (every layer of a model) and bounded by an optional byte budget. A sequence's
// blobs are placed into pages (cpu/cpu_cache.h: BlockRef) and never move: growing a
// sequence takes another page instead of copying its store.
//
// Memory (PageMemory): host pages are each one anonymous mmap of page_bytes (a multiple
// of 4096), so that pages released to the system really leave the process (RSS shrinks)
// and untouched page ends cost no resident memory; device pages (a CUDA pool,
// cuda/device_pages.h) are carved from cudaMalloc slabs. In grow-on-demand mode a page
// whose last reference goes is unmapped at once; in reserve mode (engines that reserve
// memory once) the whole budget is mapped (and, on the host, populated) at creation and
// pages return to the pool's free list.
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
#include <memory>
#include <mutex>
#include <vector>

#include "packkv/packkv.h"

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
  int64_t bytes_held = 0;    // memory held from the system (device: whole slabs)
  int64_t n_caches = 0;
};

// Where a pool's pages come from: host mmaps (the default) or device slabs. map/unmap
// are called under the pool's lock.
class PageMemory {
 public:
  virtual ~PageMemory() = default;
  // Reserve mode, before n map(true) calls: room for all of them (device: one slab).
  // Throws Error when that memory is refused. Default: nothing.
  virtual void prepare(int64_t n) { (void)n; }
  // One page of page_bytes; nullptr when the system refuses it. Never throws.
  virtual uint8_t* map(bool populate) = 0;
  virtual void unmap(uint8_t* page) noexcept = 0;
  // Bytes this memory holds from the system (pages mapped, device: whole slabs).
  virtual int64_t bytes_held(int64_t pages_held) const = 0;
  // -1: host memory; else the CUDA device ordinal of the pages.
  virtual int device() const { return -1; }
  // The status and the words of a refusal (map returned nullptr).
  virtual packkv_status_t refused_status() const { return PACKKV_ERR_OUT_OF_HOST_MEMORY; }
  virtual const char* refused_what() const { return "mmap"; }
};

// Host pages: one anonymous mmap each.
std::unique_ptr<PageMemory> host_page_memory(size_t page_bytes);

class PagePool {
 public:
  // Page sizes: a multiple of kPageAlign in [kMinPageBytes, kMaxPageBytes].
  static constexpr size_t kPageAlign = 4096;
  static constexpr size_t kMinPageBytes = 4096;
  static constexpr size_t kMaxPageBytes = (size_t)1 << 31;

  // budget_bytes 0: no budget (grow on demand without a bound); otherwise the pool never
  // holds more than floor(budget_bytes / page_bytes) pages. reserve: map and populate
  // all of them now (needs a budget). mem: where pages come from (null: host mmaps).
  // Throws Error (bad sizes, out of host or device memory).
  PagePool(size_t page_bytes, int64_t budget_bytes, bool reserve, std::unique_ptr<PageMemory> mem = nullptr);
  ~PagePool();
  PagePool(const PagePool&) = delete;
  PagePool& operator=(const PagePool&) = delete;

  size_t page_bytes() const { return page_bytes_; }
  int device() const { return mem_->device(); }
  int64_t budget_pages() const { return budget_pages_; }  // -1: no budget

  // Takes n pages, each with one reference: all or nothing. Throws
  // Error(PACKKV_X_ERR_BUDGET_EXCEEDED) when the budget cannot hold n more pages (the
  // thread's last-bytes-needed record is set to n * page_bytes), or
  // Error(PACKKV_ERR_OUT_OF_HOST_MEMORY / OUT_OF_DEVICE_MEMORY) when the system refuses
  // a page; the pool is then unchanged.
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
  uint8_t* map_page(bool populate) { return mem_->map(populate); }  // nullptr on failure
  void unmap_page(uint8_t* p) noexcept { mem_->unmap(p); }

  const size_t page_bytes_;
  std::unique_ptr<PageMemory> mem_;
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
