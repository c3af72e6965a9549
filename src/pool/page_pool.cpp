// PagePool: pages from anonymous mmaps, a free list in reserve mode, the budget check,
// and the per-cache rates behind tokens_fit (the class: page_pool.h).
#include "pool/page_pool.h"

#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <new>
#include <string>

#include "common/error.h"
#define PACKKV_EXPERIMENTAL_API
#include "packkv/packkv_experimental.h"

namespace packkv {

int64_t& last_bytes_needed() {
  static thread_local int64_t bytes = 0;
  return bytes;
}

namespace {

class HostPageMemory final : public PageMemory {
 public:
  explicit HostPageMemory(size_t page_bytes) : page_bytes_(page_bytes) {}
  uint8_t* map(bool populate) override {
    int flags = MAP_PRIVATE | MAP_ANONYMOUS;
#ifdef MAP_POPULATE
    if (populate) flags |= MAP_POPULATE;
#else
    (void)populate;
#endif
    void* m = mmap(nullptr, page_bytes_, PROT_READ | PROT_WRITE, flags, -1, 0);
    return m == MAP_FAILED ? nullptr : static_cast<uint8_t*>(m);
  }
  void unmap(uint8_t* p) noexcept override { munmap(p, page_bytes_); }
  int64_t bytes_held(int64_t pages_held) const override { return pages_held * (int64_t)page_bytes_; }

 private:
  const size_t page_bytes_;
};

}  // namespace

std::unique_ptr<PageMemory> host_page_memory(size_t page_bytes) {
  return std::unique_ptr<PageMemory>(new HostPageMemory(page_bytes));
}

PagePool::PagePool(size_t page_bytes, int64_t budget_bytes, bool reserve, std::unique_ptr<PageMemory> mem)
    : page_bytes_(page_bytes), mem_(mem ? std::move(mem) : host_page_memory(page_bytes)), reserve_(reserve) {
  require(page_bytes >= kMinPageBytes && page_bytes <= kMaxPageBytes && page_bytes % kPageAlign == 0,
          "page_bytes must be a multiple of 4096 in [4096, 2^31], got " + std::to_string(page_bytes));
  require(budget_bytes >= 0, "budget_bytes is negative (" + std::to_string(budget_bytes) + ")");
  if (budget_bytes > 0) {
    budget_pages_ = budget_bytes / (int64_t)page_bytes;
    require(budget_pages_ >= 1, "budget_bytes " + std::to_string(budget_bytes) + " holds no page of " +
                                    std::to_string(page_bytes) + " bytes");
  }
  require(!reserve || budget_pages_ > 0, "reserve needs a budget (budget_bytes > 0)");
  if (reserve) {
    free_.reserve((size_t)budget_pages_);  // release() then never allocates
    mem_->prepare(budget_pages_);
    try {
      for (int64_t i = 0; i < budget_pages_; ++i) {
        uint8_t* d = map_page(true);
        if (!d)
          fail(mem_->refused_status(), "cannot reserve " + std::to_string(budget_pages_) + " pages of " +
                                           std::to_string(page_bytes) + " bytes (page " + std::to_string(i) +
                                           " refused by the system: " + mem_->refused_what() + ")");
        Page* p = new (std::nothrow) Page;
        if (!p) {
          unmap_page(d);
          throw std::bad_alloc();
        }
        p->data = d;
        free_.push_back(p);
        ++held_;
      }
    } catch (...) {
      for (Page* p : free_) {
        unmap_page(p->data);
        delete p;
      }
      throw;
    }
  }
}

PagePool::~PagePool() {
  // Caches hold the pool (shared ownership), so no page is in use here.
  for (Page* p : free_) {
    unmap_page(p->data);
    delete p;
  }
}

void PagePool::acquire(size_t n, std::vector<Page*>* out) {
  if (n == 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (budget_pages_ >= 0 && in_use_ + (int64_t)n > budget_pages_) {
    const int64_t need = (int64_t)(n * page_bytes_);
    const int64_t free = (budget_pages_ - in_use_) * (int64_t)page_bytes_;
    last_bytes_needed() = need;
    fail(PACKKV_X_ERR_BUDGET_EXCEEDED,
         "the pool's budget is exceeded: " + std::to_string(n) + " more page(s) of " + std::to_string(page_bytes_) +
             " bytes needed (" + std::to_string(need) + " bytes), " + std::to_string(free) + " bytes free of a budget of " +
             std::to_string(budget_pages_ * (int64_t)page_bytes_));
  }
  out->reserve(out->size() + n);  // may throw: nothing taken yet
  std::vector<Page*> fresh;
  fresh.reserve(n);
  const size_t from_free = std::min(n, free_.size());
  try {
    for (size_t i = from_free; i < n; ++i) {
      Page* p = new Page;
      p->data = map_page(false);
      if (!p->data) {
        delete p;
        fail(mem_->refused_status(), "the system refused a page of " + std::to_string(page_bytes_) + " bytes (" +
                                         mem_->refused_what() + ")");
      }
      fresh.push_back(p);
    }
  } catch (...) {
    for (Page* p : fresh) {
      unmap_page(p->data);
      delete p;
    }
    throw;
  }
  for (size_t i = 0; i < from_free; ++i) {
    fresh.push_back(free_.back());
    free_.pop_back();
  }
  held_ += (int64_t)(n - from_free);
  in_use_ += (int64_t)n;
  for (Page* p : fresh) {
    p->refs.store(1, std::memory_order_relaxed);
    out->push_back(p);
  }
}

void PagePool::release(Page* p) noexcept {
  if (p->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  std::lock_guard<std::mutex> lock(mu_);
  --in_use_;
  if (reserve_) {
    free_.push_back(p);  // capacity reserved at creation for every page: no allocation
    return;
  }
  --held_;
  unmap_page(p->data);
  delete p;
}

PoolCounters PagePool::counters() const {
  std::lock_guard<std::mutex> lock(mu_);
  PoolCounters c;
  c.page_bytes = (int64_t)page_bytes_;
  c.budget_bytes = budget_pages_ < 0 ? 0 : budget_pages_ * (int64_t)page_bytes_;
  c.pages_held = held_;
  c.pages_in_use = in_use_;
  c.bytes_held = mem_->bytes_held(held_);
  c.n_caches = (int64_t)caches_.size();
  return c;
}

int64_t PagePool::free_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return budget_pages_ < 0 ? -1 : (budget_pages_ - in_use_) * (int64_t)page_bytes_;
}

void PagePool::attach(const void* cache, size_t worst_blob_bytes, int block_tokens) {
  std::lock_guard<std::mutex> lock(mu_);
  CacheRate& r = caches_[cache];
  r.worst = worst_blob_bytes;
  r.block_tokens = block_tokens;
}

void PagePool::detach(const void* cache) noexcept {
  std::lock_guard<std::mutex> lock(mu_);
  caches_.erase(cache);
}

void PagePool::note_compressed(const void* cache, int64_t bytes, int64_t tokens) noexcept {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = caches_.find(cache);
  if (it == caches_.end()) return;
  it->second.bytes += bytes;
  it->second.tokens += tokens;
}

int64_t PagePool::tokens_fit() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (budget_pages_ < 0) return -1;
  // pages per token: blocks of the mean size b (rounded up to 16 bytes when another one
  // follows in the page) fit floor((page - b) / align16(b)) + 1 to a page
  double pages_per_token = 0.0;
  for (const auto& kv : caches_) {
    const CacheRate& r = kv.second;
    const int64_t blocks = r.tokens / r.block_tokens;
    const double b = blocks > 0 ? std::ceil((double)r.bytes / (double)blocks) : (double)r.worst;
    const double step = std::ceil(b / 16.0) * 16.0;
    const double per_page = b >= (double)page_bytes_ ? 1.0 : std::floor(((double)page_bytes_ - b) / step) + 1.0;
    pages_per_token += 1.0 / (per_page * r.block_tokens);
  }
  if (pages_per_token <= 0.0) return 0;
  return (int64_t)std::floor((double)(budget_pages_ - in_use_) / pages_per_token);
}

}  // namespace packkv
