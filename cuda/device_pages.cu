// Device pages of a CUDA pool (pool/page_pool.h PageMemory): pages carved from cudaMalloc
// slabs. Host only.
//
// Slabs: cudaMalloc hands out device memory in 2 MiB granules, so a slab is a multiple
// of 2 MiB holding k pages, k a multiple of k0, the smallest count (up to 16) whose slab
// wastes at most 1/16 of itself (else the k with the least waste; k0 = 1 for the pages of
// packkv_x_pool_page_bytes_for on a device, which tile the granules), and k grows with the
// pool: the slabs hold at most 1/32 more page slots than were taken when the last one was
// added (k = k0 rounded up from slots / 32), so that free slots stay under ~3% of the pool
// while the number of cudaMalloc calls grows only logarithmically after the first
// 32 slabs. A page never straddles slabs, and the number of page slots never passes the
// budget's pages. Reserve mode: one slab of exactly
// the budget's pages (prepare). Grow mode: a slab is allocated when every slot is taken,
// and a slab whose pages are all free is cudaFree'd unless it is the only empty slab
// (one is kept, so that a sequence opening and closing a page at a slab boundary does
// not call cudaMalloc / cudaFree, which synchronizes the device, on every append).
// The pool calls map/unmap under its lock; the caches release pages only once no work of
// theirs that reads them is pending (cuda_cache.h), so unmap never waits for kernels.
#include <cuda_runtime.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "cuda_check.h"
#include "pool/page_pool.h"

namespace packkv {
namespace {

constexpr size_t kGranule = size_t{2} << 20;  // cudaMalloc's allocation granule

size_t round_up(size_t x, size_t m) { return (x + m - 1) / m * m; }

class DevicePageMemory final : public PageMemory {
 public:
  DevicePageMemory(int device, size_t page_bytes, int64_t max_pages)
      : device_(device), page_(page_bytes), max_pages_(max_pages) {
    size_t best = 1, best_waste = round_up(page_, kGranule) - page_;
    for (size_t k = 1; k <= 16; ++k) {
      const size_t slab = round_up(k * page_, kGranule), waste = slab - k * page_;
      if (waste * 16 <= slab) { best = k; break; }
      if (waste * best * page_ < best_waste * k * page_) { best = k; best_waste = waste; }
    }
    slab_pages_ = best;
  }
  ~DevicePageMemory() override {
    int prev = 0;
    cudaGetDevice(&prev);
    cudaSetDevice(device_);
    for (Slab& s : slabs_) cudaFree(s.base);
    (void)cudaGetLastError();
    cudaSetDevice(prev);
  }

  void prepare(int64_t n) override {
    if (n <= 0) return;
    if (!add_slab((size_t)n))
      fail(PACKKV_ERR_OUT_OF_DEVICE_MEMORY, "cudaMalloc refused the pool's budget of " + std::to_string(n) +
                                                " pages of " + std::to_string(page_) + " bytes on device " +
                                                std::to_string(device_));
  }

  uint8_t* map(bool) override {
    for (Slab& s : slabs_)
      if (!s.free.empty()) {
        uint8_t* p = s.free.back();
        s.free.pop_back();
        return p;
      }
    const size_t k0 = slab_pages_;
    size_t k = std::max(k0, ((size_t)slots_ / 32 + k0 - 1) / k0 * k0);
    if (max_pages_ >= 0) k = std::min<size_t>(k, (size_t)std::max<int64_t>(0, max_pages_ - slots_));
    if (k == 0 || !add_slab(k)) return nullptr;
    uint8_t* p = slabs_.back().free.back();
    slabs_.back().free.pop_back();
    return p;
  }

  void unmap(uint8_t* p) noexcept override {
    for (size_t i = 0; i < slabs_.size(); ++i) {
      Slab& s = slabs_[i];
      if (p < s.base || p >= s.base + s.pages * page_) continue;
      s.free.push_back(p);  // capacity reserved at the slab's creation: no allocation
      if (s.free.size() < s.pages) return;
      for (size_t j = 0; j < slabs_.size(); ++j)
        if (j != i && slabs_[j].free.size() == slabs_[j].pages) {  // another empty slab: free this one
          int prev = 0;
          cudaGetDevice(&prev);
          cudaSetDevice(device_);
          cudaFree(s.base);
          (void)cudaGetLastError();
          cudaSetDevice(prev);
          slots_ -= (int64_t)s.pages;
          slabs_.erase(slabs_.begin() + (std::ptrdiff_t)i);
          return;
        }
      return;
    }
  }

  int64_t bytes_held(int64_t) const override {
    int64_t b = 0;
    for (const Slab& s : slabs_) b += (int64_t)round_up(s.pages * page_, kGranule);
    return b;
  }
  int device() const override { return device_; }
  packkv_status_t refused_status() const override { return PACKKV_ERR_OUT_OF_DEVICE_MEMORY; }
  const char* refused_what() const override { return "cudaMalloc"; }

 private:
  struct Slab {
    uint8_t* base;
    size_t pages;
    std::vector<uint8_t*> free;
  };
  bool add_slab(size_t k) {
    try {
      slabs_.reserve(slabs_.size() + 1);
      Slab s{nullptr, k, {}};
      s.free.reserve(k);
      int prev = 0;
      if (cudaGetDevice(&prev) != cudaSuccess || cudaSetDevice(device_) != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
      }
      void* base = nullptr;
      const cudaError_t e = cudaMalloc(&base, k * page_);
      cudaSetDevice(prev);
      if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
      }
      s.base = static_cast<uint8_t*>(base);
      for (size_t j = k; j-- > 0;) s.free.push_back(s.base + j * page_);
      slabs_.push_back(std::move(s));
      slots_ += (int64_t)k;
      return true;
    } catch (...) {
      return false;
    }
  }

  const int device_;
  const size_t page_;
  const int64_t max_pages_;  // -1: no budget
  size_t slab_pages_ = 1;  // k0: the smallest slab's pages
  int64_t slots_ = 0;
  std::vector<Slab> slabs_;
};

}  // namespace

std::shared_ptr<PagePool> make_device_pool(int device, size_t page_bytes, int64_t budget_bytes, bool reserve) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    fail(PACKKV_ERR_NOT_SUPPORTED, "device = " + std::to_string(device) + " but no CUDA device is visible");
  }
  if (device >= count)
    fail(PACKKV_ERR_INVALID_ARGUMENT,
         "device = " + std::to_string(device) + " but only " + std::to_string(count) + " CUDA device(s) exist");
  const int64_t max_pages =
      budget_bytes > 0 && page_bytes > 0 ? budget_bytes / (int64_t)page_bytes : -1;
  return std::make_shared<PagePool>(page_bytes, budget_bytes, reserve,
                                    std::unique_ptr<PageMemory>(new DevicePageMemory(device, page_bytes, max_pages)));
}

}  // namespace packkv
