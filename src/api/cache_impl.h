// The backend interface behind the opaque packkv_cache_t. api.cpp validates every
// argument that does not depend on the backend (NULL pointers, sequence ids, counts,
// capacity, strides, workspace size) before calling a backend, so backends receive
// only well-formed requests. A backend method either completes or throws Error
// leaving its state unchanged (strong guarantee).
#ifndef PACKKV_CACHE_IMPL_H
#define PACKKV_CACHE_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include <memory>
#include <vector>

#include "api/config.h"
#include "common/error.h"
#include "packkv/packkv.h"
#define PACKKV_EXPERIMENTAL_API
#include "packkv/packkv_experimental.h"

namespace packkv {

// Arguments shared by the attention calls (shapes as in packkv.h).
struct AttnArgs {
  int n_seqs = 0;
  const int32_t* seq_ids = nullptr;  // host
  int n_q_heads = 0;
  const void* q = nullptr;  // [n_seqs][n_q_heads][head_dim], backend memory
  packkv_dtype_t q_dtype = PACKKV_DTYPE_F32;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  packkv_stream_t stream = nullptr;
};

class CacheImpl {
 public:
  explicit CacheImpl(const Config& config) : config_(config) {}
  virtual ~CacheImpl() = default;
  CacheImpl(const CacheImpl&) = delete;
  CacheImpl& operator=(const CacheImpl&) = delete;

  const Config& config() const { return config_; }

  virtual int64_t seq_length(int seq) const = 0;
  virtual void append(int n_seqs, const int32_t* seq_ids, const int32_t* n_tokens,
                      const void* k_new, const void* v_new, packkv_dtype_t dtype,
                      packkv_stream_t stream) = 0;
  virtual void remove_seq(int seq) = 0;
  // Keeps the first n_tokens tokens (0 <= n_tokens <= seq_length; api.cpp checks) of a
  // sequence (cpu/seq_ops.cpp). Default: PACKKV_ERR_NOT_SUPPORTED.
  virtual void truncate(int, int64_t) {
    fail(PACKKV_ERR_NOT_SUPPORTED, "packkv_x_cache_truncate: not supported by this backend");
  }
  // Makes dst (empty; api.cpp checks) a copy of src that shares src's compressed blocks.
  // Default: PACKKV_ERR_NOT_SUPPORTED.
  virtual void fork(int, int) {
    fail(PACKKV_ERR_NOT_SUPPORTED, "packkv_x_cache_fork: not supported by this backend (CPU caches only)");
  }
  // Sets the sliding window (tokens; 0: none) of an empty cache (api checks).
  // Default: PACKKV_ERR_NOT_SUPPORTED.
  virtual void set_window(int64_t) {
    fail(PACKKV_ERR_NOT_SUPPORTED, "packkv_x_cache_set_window: not supported by this backend (CPU caches only)");
  }
  // Export / import of one sequence (format/seq_export.h). export_seq writes exactly
  // export_size(seq) bytes; import_seq needs an empty sequence (api checks) and validates
  // everything. Default: PACKKV_ERR_NOT_SUPPORTED.
  virtual size_t export_size(int) const {
    fail(PACKKV_ERR_NOT_SUPPORTED, "packkv_x_cache_export: not supported by this backend (CPU caches only)");
  }
  virtual void export_seq(int, uint8_t*, size_t) const {
    fail(PACKKV_ERR_NOT_SUPPORTED, "packkv_x_cache_export: not supported by this backend (CPU caches only)");
  }
  virtual void import_seq(int, const uint8_t*, size_t) {
    fail(PACKKV_ERR_NOT_SUPPORTED, "packkv_x_cache_import: not supported by this backend (CPU caches only)");
  }
  // Runs the parallel work of later calls through the caller's runner (fn non-null, at
  // most n_tasks tasks a call) or the library's workers (fn null). Default:
  // PACKKV_ERR_NOT_SUPPORTED.
  virtual void set_parallel(packkv_x_parallel_fn, void*, int) {
    fail(PACKKV_ERR_NOT_SUPPORTED, "packkv_x_cache_set_parallel: not supported by this backend (CPU caches only)");
  }
  // Leading tokens of a sequence outside the sliding window (0 without one).
  virtual int64_t expired(int) const { return 0; }
  virtual void reset() = 0;
  // Fills every field of a full-size stats struct (seq == -1: all sequences).
  virtual void stats(int seq, packkv_cache_stats_t* out) const = 0;
  virtual void decompress(int seq, float* k_out, float* v_out, packkv_stream_t stream) const = 0;
  virtual void sync() const = 0;
  // Number of compressed blocks of a sequence, and a host copy of one block's blob
  // (tests compare the CPU and CUDA encoders byte for byte with these).
  virtual int64_t n_blocks(int seq) const = 0;
  virtual std::vector<uint8_t> block_bytes(int seq, int64_t block) const = 0;
  virtual size_t workspace_size(int n_seqs, int n_q_heads) const = 0;
  virtual void scores(const AttnArgs& a, float* scores, int64_t ld_scores) const = 0;
  virtual void apply(const AttnArgs& a, const float* probs, int64_t ld_probs, float* out) const = 0;
  virtual void decode(const AttnArgs& a, float scale, float* out, float* lse) const = 0;

 private:
  Config config_;
};

class PagePool;
// pool: the page pool of the compressed blocks (shared, or private to this cache).
std::unique_ptr<CacheImpl> make_cpu_cache(const Config& config, std::shared_ptr<PagePool> pool);

// CUDA backend (cuda/). In a build without CUDA these throw PACKKV_ERR_NOT_SUPPORTED /
// report no device. (The CUDA part of packkv_build_info is a compile-time string set by
// CMakeLists.txt: PACKKV_BUILD_INFO_CUDA.)
// pool: a device pool (make_device_pool) on config.device, shared or private.
std::unique_ptr<CacheImpl> make_cuda_cache(const Config& config, std::shared_ptr<PagePool> pool);
bool cuda_device_present();
// A pool of device pages on `device` (cuda/device_pages.cu): as PagePool's constructor,
// pages from cudaMalloc slabs. Throws NOT_SUPPORTED (no CUDA backend or device),
// INVALID_ARGUMENT (bad ordinal or sizes), OUT_OF_DEVICE_MEMORY (reserve).
std::shared_ptr<PagePool> make_device_pool(int device, size_t page_bytes, int64_t budget_bytes, bool reserve);

}  // namespace packkv

#endif  // PACKKV_CACHE_IMPL_H
